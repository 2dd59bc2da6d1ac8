"""`python -m redisflush ...`: demo, send, watch, serve --local, emulator.

Exit codes (DESIGN): 0 Succeeded, 1 Failed/Canceled/Rejected, 2 usage or configuration
error, 3 TimedOut (also a --wait that gave up). A usage or configuration problem is one
line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import __version__
from .bus import BusError
from .client import EXIT_CODES, WAIT_MARGIN, Channel, LocalChannel, describe, follow, prepare
from .errors import ConfigurationError
from .messages import Rejection

EXIT_USAGE, EXIT_TIMEOUT = 2, 3


class UsageError(Exception):
    """A problem with how the command was called: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own errors: same one-line shape
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m redisflush", description=(
        "Flush Azure Cache for Redis through ARM from a Service Bus message, follow the "
        "operation to its end, and publish one completion event."))
    parser.add_argument("--version", action="version", version=f"redisflush {__version__}")
    parser.add_argument("--app-root", type=Path, help="folder holding host.json "
                        "(default: the current folder, else this checkout)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser("demo", help="the whole flow on this machine, no Azure",
                          description="Start the ARM emulator and the local host, seed keys "
                          "in a cache, flush it, print the event and the key counts.")
    demo.add_argument("--duration", type=float, default=3.0,
                      help="seconds the emulated flush takes (default 3)")
    demo.add_argument("--keys", type=int, default=1000, help="keys to seed (default 1000)")
    demo.add_argument("--json", action="store_true", help="print the event as one JSON line")

    send = sub.add_parser("send", help="drop a flush request on the request queue",
                          description="Drop a flush request; with --wait, follow it to its "
                          "completion event and exit with its status.")
    target = send.add_argument_group("the cache (one form)")
    target.add_argument("--resource-id", help="/subscriptions/.../providers/"
                        "Microsoft.Cache/redis/NAME")
    target.add_argument("--subscription", help="subscription id (GUID)")
    target.add_argument("--resource-group", help="resource group name")
    target.add_argument("--cache", help="cache name")
    send.add_argument("--wait", action="store_true", help="wait for the completion event")
    send.add_argument("--timeout", type=int, metavar="S",
                      help="the request's timeoutSeconds (30-86400); --wait waits that long "
                      "plus a margin")
    send.add_argument("--json", action="store_true",
                      help="print the event as one JSON line on stdout (progress on stderr)")
    send.add_argument("--request-id", help="requestId (default: a new UUID)")
    send.add_argument("--reason", help="free text copied into the event")
    send.add_argument("--requested-by", help="free text copied into the event")
    send.add_argument("--dry-run", action="store_true",
                      help="validate and print the request without sending it")
    _bus_options(send)

    watch = sub.add_parser("watch", help="stream completion events from the topic")
    watch.add_argument("--subscription-name", default="all",
                       help="topic subscription to read (default: all)")
    watch.add_argument("--status", help="only events with this status (comma list)")
    watch.add_argument("--json", action="store_true", help="one JSON line per event")
    watch.add_argument("--count", type=int, help="stop after this many events")
    watch.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    _bus_options(watch)

    serve = sub.add_parser("serve", help="run both functions on the local bus",
                           description="Run FlushTrigger and PollOrchestrator as the Functions "
                           "host would, on the local bus, with the ARM emulator unless "
                           "--arm-endpoint is given. Ctrl-C drains in-flight calls.")
    serve.add_argument("--local", action="store_true", required=True,
                       help="use the local bus (required: in Azure the Functions host runs "
                       "the app)")
    serve.add_argument("--arm-endpoint", help="ARM endpoint instead of the emulator")
    serve.add_argument("--concurrency", type=int, default=8,
                       help="invocations at once per function, like maxConcurrentCalls "
                       "(default 8)")
    _emulator_options(serve, "--emulator-port")

    emulator = sub.add_parser("emulator", help="the ARM emulator alone",
                              description="Serve the Microsoft.Cache/redis flush and its "
                              "operation URLs on loopback, for rehearsing failures.")
    _emulator_options(emulator, "--port")
    return parser


def _bus_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("which bus")
    group.add_argument("--local", action="store_true", help="the local bus of serve --local")
    group.add_argument("--namespace", metavar="NS", help="Azure Service Bus namespace "
                       "(NAME or NAME.servicebus.windows.net), Entra ID via azure-identity")
    group.add_argument("--connection-string", help="Service Bus connection string "
                       "(default: the ServiceBusConnection setting)")


def _emulator_options(parser: argparse.ArgumentParser, port_flag: str) -> None:
    group = parser.add_argument_group("ARM emulator")
    group.add_argument(port_flag, dest="port", type=int, default=0,
                       help="port (default: the last one used, else a free one)")
    group.add_argument("--config", help="behaviours per cache, JSON or TOML file")
    group.add_argument("--redis-url", help="back caches with this Redis (redis://host:port/db)")
    group.add_argument("--duration", type=float, help="seconds each flush takes")
    group.add_argument("--outcome", choices=("Succeeded", "Failed", "Canceled"))
    group.add_argument("--poll-mode", choices=("both", "async", "location", "none"))
    group.add_argument("--retry-after", type=int, help="Retry-After seconds on 202 answers")
    group.add_argument("--busy-seconds", type=float, help="answer 409 busy this long")
    group.add_argument("--immediate", action="store_true", help="answer 200 at once")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
        if args.command is None:
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        return int(COMMANDS[args.command](args))
    except (UsageError, ConfigurationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BusError as exc:
        print(f"error: the bus failed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


# -- commands ------------------------------------------------------------------------------

def cmd_send(args: argparse.Namespace) -> int:
    from .local.runtime import find_app_root, local_settings

    body = _request_body(args)
    settings, _ = local_settings(find_app_root(args.app_root))
    request_id = args.request_id or str(uuid.uuid4())
    prepared = prepare(body, settings, request_id=request_id, reply=args.wait,
                       now=dt.datetime.now(dt.timezone.utc))
    if isinstance(prepared, Rejection):
        raise UsageError(f"invalid request: {prepared.message}")
    if args.dry_run:
        print(json.dumps(prepared.body, separators=(",", ":")))
        return 0
    channel = open_channel(args, settings)
    try:
        channel.send_request(prepared.message)
        if not args.wait:
            print(prepared.request_id)
            return 0
        wait = (args.timeout or settings.timeout_seconds) + WAIT_MARGIN
        progress = Progress(sys.stderr)
        event = follow(channel, prepared.request_id, time.monotonic() + wait, progress.show)
        progress.done()
    finally:
        channel.close()
    if event is None:
        print(f"TimedOut: no completion event for request {prepared.request_id} within "
              f"{wait:.0f} s", file=sys.stderr)
        return EXIT_TIMEOUT
    _print_event(event, args.json)
    return EXIT_CODES.get((event.get("data") or {}).get("status"), 1)


def cmd_watch(args: argparse.Namespace) -> int:
    from .local.runtime import find_app_root, local_settings

    settings, _ = local_settings(find_app_root(args.app_root))
    wanted = {s.strip().lower() for s in (args.status or "").split(",") if s.strip()}
    until = time.monotonic() + args.timeout if args.timeout else None
    channel = open_channel(args, settings)
    seen = 0
    try:
        for event in channel.events(args.subscription_name, until):
            status = str((event.get("data") or {}).get("status", "")).lower()
            if wanted and status not in wanted:
                continue
            _print_event(event, args.json)
            sys.stdout.flush()
            seen += 1
            if args.count and seen >= args.count:
                break
    finally:
        channel.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .local.runtime import build_runtime, find_app_root

    runtime = build_runtime(find_app_root(args.app_root), arm_endpoint=args.arm_endpoint,
                            concurrency=args.concurrency, emulator_port=args.port,
                            emulator_config_obj=_emulator_config(args),
                            redis_url=args.redis_url)
    logging.getLogger("redisflush.host").setLevel(logging.INFO)  # one line per invocation
    _stop_on_signals(runtime.host.stop)
    endpoint = runtime.emulator.url if runtime.emulator else runtime.settings.arm_endpoint
    print(f"serving {', '.join(f.name for f in runtime.host.functions)} on the local bus "
          f"{runtime.bus.path}; ARM at {endpoint}", file=sys.stderr, flush=True)
    try:
        runtime.host.run()  # in this thread, so signals reach it; returns once drained
    finally:
        runtime.stop()
    print(f"stopped after {runtime.host.invocations} invocations", file=sys.stderr)
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    from .local.emulator import ArmEmulator
    from .local.keystore import make_keystore

    emulator = ArmEmulator(_emulator_config(args), port=args.port or 0,
                           keystore=make_keystore(args.redis_url))
    emulator.start()
    print(f"ARM emulator on {emulator.url} (token: {emulator.config.token})", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # serve_forever stops on it
    emulator.serve_forever()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .local.demo import run_demo
    return run_demo(args)


COMMANDS = {"send": cmd_send, "watch": cmd_watch, "serve": cmd_serve,
            "emulator": cmd_emulator, "demo": cmd_demo}


# -- helpers -------------------------------------------------------------------------------

def _request_body(args: argparse.Namespace) -> dict[str, Any]:
    parts = (args.subscription, args.resource_group, args.cache)
    if args.resource_id and any(parts):
        raise UsageError("give --resource-id or --subscription/--resource-group/--cache, "
                         "not both")
    if not args.resource_id and not all(parts):
        raise UsageError("the cache is required: --resource-id, or all of --subscription, "
                         "--resource-group and --cache")
    body: dict[str, Any] = {"resourceId": args.resource_id} if args.resource_id else {
        "subscriptionId": args.subscription, "resourceGroup": args.resource_group,
        "cacheName": args.cache}
    for key, value in (("requestId", args.request_id), ("reason", args.reason),
                       ("requestedBy", args.requested_by), ("timeoutSeconds", args.timeout)):
        if value is not None:
            body[key] = value
    return body


def open_channel(args: argparse.Namespace, settings: Any) -> Channel:
    if args.local:
        if args.namespace or args.connection_string:
            raise UsageError("--local cannot be combined with --namespace or "
                             "--connection-string")
        return LocalChannel(settings)
    from .remote import AzureChannel
    return AzureChannel.open(settings, namespace=args.namespace,
                             connection_string=args.connection_string)


def _emulator_config(args: argparse.Namespace) -> Any:
    from .local.emulator_config import EmulatorConfig, load_config

    flags = {"duration": args.duration, "outcome": args.outcome, "pollMode": args.poll_mode,
             "retryAfter": args.retry_after, "busySeconds": args.busy_seconds,
             "immediate": True if args.immediate else None}
    overrides = {k: v for k, v in flags.items() if v is not None}
    if not args.config and not overrides:
        return None
    try:
        base = load_config(args.config).to_dict() if args.config else {}
        if overrides:
            base["defaults"] = {**base.get("defaults", {}), **overrides}
        return EmulatorConfig.from_dict(base)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"emulator config: {exc}") from None


def _print_event(event: Mapping[str, Any], as_json: bool) -> None:
    print(json.dumps(event, separators=(",", ":")) if as_json else describe(event), flush=True)


def _stop_on_signals(stop: Any) -> None:
    def handler(signum: int, frame: Any) -> None:
        print(f"received {signal.Signals(signum).name}: finishing in-flight work",
              file=sys.stderr, flush=True)
        stop()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class Progress:
    """One live line on stderr: status, percent when known, elapsed."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.started, self.shown = stream, time.monotonic(), False

    def show(self, data: Mapping[str, Any]) -> None:
        percent = data.get("percentComplete")
        text = f"{data.get('status')}" + (f" {percent:.0f}%" if isinstance(percent, (int, float))
                                           else "")
        elapsed = time.monotonic() - self.started
        end = "\r" if self.stream.isatty() else "\n"
        print(f"  {text}  {elapsed:5.1f}s ".ljust(40), end=end, file=self.stream, flush=True)
        self.shown = True

    def done(self) -> None:
        if self.shown and self.stream.isatty():
            print(file=self.stream)
