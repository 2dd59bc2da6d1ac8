"""`send` and `watch`: their flags and what they do (docs/design.md, "CLI").

Nothing here imports the app, azure-functions or the local host: `--local` loads the local
bus on demand, the Azure path loads azure-servicebus (and azure-identity for --namespace)
only once a request is really sent or a subscription read.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .argtypes import STATUSES, given, seconds, statuses, subscription_name, whole
from .channel import Channel
from .errors import UsageError
from .follow import EXIT_TIMED_OUT, exit_code, follow
from .prepare import Invalid, prepare
from .report import Progress, clean, describe
from .settings import MAX_TIMEOUT, SenderSettings, app_root_of, read_values
from .targets import add_target_options, target_body

WAIT_MARGIN = 60.0  # the app may finish a little after the request's own deadline
SELECTOR_NOTE = "what a selector resolves to needs ARM: the app resolves it when it runs"


def add_send_parser(sub: Any) -> None:
    send = sub.add_parser(
        "send", help="drop a flush request on the request queue",
        description="Drop a flush request; with --wait, follow it to its final event and "
        "exit with its status (progress on stderr).")
    add_target_options(send)
    send.add_argument("--wait", action="store_true", help="wait for the final event")
    send.add_argument("--timeout", type=int, metavar="S",
                      help="the request's timeoutSeconds (30-86400); --wait waits that long "
                      f"plus {WAIT_MARGIN:.0f} s (without it, --wait writes "
                      "REDISFLUSH_TIMEOUT_SECONDS into the request)")
    send.add_argument("--json", action="store_true",
                      help="print the final event as one JSON line on stdout")
    send.add_argument("--request-id", type=given, help="requestId (default: a new UUID)")
    # free text: an empty value names nothing, so it is taken as given (an optional
    # `--reason "$REASON"` with REASON unset)
    send.add_argument("--reason", help="free text copied into the events")
    send.add_argument("--requested-by", help="free text copied into the events")
    send.add_argument("--dry-run", action="store_true",
                      help="validate and print the request without sending it")
    _bus_options(send)


def add_watch_parser(sub: Any) -> None:
    watch = sub.add_parser("watch", help="stream completion events from the topic")
    watch.add_argument("--subscription-name", default="all", type=subscription_name,
                       help="topic subscription to read (default: all)")
    watch.add_argument("--status", type=statuses,
                       help="only events with this status (comma list of " +
                       ", ".join(STATUSES) + ")")
    watch.add_argument("--json", action="store_true", help="one JSON line per event")
    watch.add_argument("--count", type=whole(1, 10**9), help="stop after this many events")
    watch.add_argument("--timeout", type=seconds(0, MAX_TIMEOUT * 365), metavar="S",
                       help="stop after S seconds (0: at once)")
    _bus_options(watch)


def _bus_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("which bus")
    group.add_argument("--local", action="store_true", help="the local bus of serve --local")
    group.add_argument("--namespace", metavar="NS", type=given, help="Azure Service Bus namespace "
                       "(NAME or NAME.servicebus.windows.net), Entra ID via azure-identity")
    group.add_argument("--connection-string", type=given, help="Service Bus connection string "
                       "(default: the ServiceBusConnection setting)")


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The body as a user would write it: the target, then the optional fields given."""
    body = target_body(args)
    for key, value in (("requestId", args.request_id), ("reason", args.reason),
                       ("requestedBy", args.requested_by), ("timeoutSeconds", args.timeout)):
        if value is not None:
            body[key] = value
    return body


# The request field each flag writes (redisflush/sender/targets.py), so an invalid value
# is named by the flag the pipeline gave, as argparse names its own (README, "CLI").
_FLAGS = (("resourceId", "--resource-id"), ("subscriptionId", "--subscription"),
          ("selector.subscriptionId", "--subscription"), ("resourceGroup", "--resource-group"),
          ("selector.resourceGroup", "--resource-group"), ("cacheName", "--cache"),
          ("clusterName", "--cluster"), ("databaseName", "--database"),
          ("selector.tags", "--tag"), ("selector.kinds", "--kind"), ("selector.all", "--all"),
          ("requestId", "--request-id"), ("reason", "--reason"),
          ("requestedBy", "--requested-by"), ("timeoutSeconds", "--timeout"))


def flag_of(field: str, args: argparse.Namespace) -> str | None:
    """The flag that wrote `field` (`resourceIds[1]`, `selector.tags.app`...), if one did."""
    if field.startswith("linkedDatabaseIds"):
        return "--no-linked" if getattr(args, "no_linked", False) else "--linked-id"
    base = field.split("[", 1)[0]
    for name, flag in _FLAGS:
        if base == name or base.startswith(name + ".") or base == name + "s":
            return flag
    return None


def cmd_send(args: argparse.Namespace) -> int:
    _one_bus(args)
    body = request_body(args)
    settings, root = load_settings(args)
    if args.wait and args.timeout is None:
        # The app must give up when the waiter does, whatever its own default
        body["timeoutSeconds"] = settings.timeout_seconds
    request_id = str(uuid.uuid4()) if args.request_id is None else args.request_id
    prepared = prepare(body, settings, request_id=request_id, reply=args.wait,
                       now=dt.datetime.now(dt.UTC))
    if isinstance(prepared, Invalid):
        flag = flag_of(prepared.field, args)
        raise UsageError((f"argument {flag}: " if flag else "")
                         + f"invalid request: {clean(prepared.reason, 300)}")
    if args.dry_run:
        print(json.dumps(prepared.body, separators=(",", ":")))
        if prepared.selector:
            print(SELECTOR_NOTE, file=sys.stderr)
        return 0
    channel = open_channel(args, settings, root)
    try:
        channel.send_request(prepared.message)
        if not args.wait:
            print(prepared.request_id)
            return 0
        wait = int(body["timeoutSeconds"]) + WAIT_MARGIN
        progress = Progress(sys.stderr)
        try:
            event = follow(channel, prepared.request_id, time.monotonic() + wait,
                           progress.note, prepared.final_type, progress.cache_event,
                           session_id=prepared.message.reply_to_session_id)
        except KeyboardInterrupt:
            print(f"interrupted: request {prepared.request_id} was sent and goes on; "
                  "`watch` shows its events", file=sys.stderr)
            raise
    finally:
        channel.close()
    if event is None:
        print(f"TimedOut: no completion event for request {prepared.request_id} within "
              f"{wait:.0f} s", file=sys.stderr)
        return EXIT_TIMED_OUT
    progress.final(event)
    print_event(event, args.json)
    return exit_code(event)


def cmd_watch(args: argparse.Namespace) -> int:
    _one_bus(args)
    settings, root = load_settings(args)
    wanted: frozenset[str] = args.status or frozenset()
    channel = open_channel(args, settings, root)
    seen = 0
    try:
        # --timeout counts from when the subscription is open (Channel.events), not from start
        for delivered in channel.events(args.subscription_name, args.timeout):
            data = delivered.event.get("data")
            status = str(data.get("status", "")).lower() if isinstance(data, Mapping) else ""
            if not wanted or status in wanted:
                print_event(delivered.event, args.json)
                seen += 1
            delivered.complete()   # printed (or filtered out): handled
            if args.count and seen >= args.count:
                break
    finally:
        channel.close()
    if args.count and seen < args.count:
        # a pipeline waiting for its N events must not read a success (README, "CLI")
        print(f"watch: {seen} of the {args.count} events (--count) before --timeout "
              f"{args.timeout:g} s", file=sys.stderr)
        return EXIT_TIMED_OUT
    return 0


def _one_bus(args: argparse.Namespace) -> None:
    if args.local and (args.namespace or args.connection_string):
        raise UsageError("--local cannot be combined with --namespace or --connection-string")


def load_settings(args: argparse.Namespace) -> tuple[SenderSettings, Path | None]:
    """The environment, plus local.settings.json where there is an app root (or --local,
    which uses this checkout's when the current folder is none)."""
    root = app_root_of(args.app_root)
    if root is None and args.local:
        from ..local.runtime import find_app_root
        root = find_app_root(None)
    return SenderSettings.from_values(read_values(root)), root


def open_channel(args: argparse.Namespace, settings: SenderSettings,
                 root: Path | None) -> Channel:
    if args.local:
        from ..local.runtime import local_settings
        from .local import LocalChannel

        assert root is not None  # load_settings found one (or raised)
        return LocalChannel(local_settings(root)[0])
    from .azure import AzureChannel
    return AzureChannel.open(settings, namespace=args.namespace,
                             connection_string=args.connection_string)


def print_event(event: Mapping[str, Any], as_json: bool) -> None:
    print(json.dumps(event, separators=(",", ":")) if as_json else describe(event), flush=True)
