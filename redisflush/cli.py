"""`redisflush ...` / `python -m redisflush ...`: demo, send, watch, serve --local, emulator.

Exit codes (docs/design.md, "CLI"): 0 Succeeded, 1 Failed/Canceled/Rejected, 2 usage or
configuration error, 3 TimedOut (also a --wait that gave up), 130 interrupted; `serve --local`
drains and exits 0 on Ctrl-C or SIGTERM, `emulator` exits 0 on SIGTERM. A usage or
configuration problem is one line on stderr, never a traceback. `send` and `watch` live in
`redisflush.sender` and load nothing of the app; the other commands load the local stack
when they run.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigurationError
from .sender.argtypes import folder, given, port, seconds, whole
from .sender.commands import add_send_parser, add_watch_parser, cmd_send, cmd_watch
from .sender.errors import ChannelError, UsageError

__all__ = ["UsageError", "build_parser", "main"]
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
EPILOG = ("exit codes: 0 Succeeded, 1 Failed/Canceled/Rejected, 2 usage or configuration "
          "error, 3 TimedOut (also a --wait that gave up), 130 interrupted (Ctrl-C)")
# serve drains on Ctrl-C/SIGTERM and exits 0 (README, "Local mode": the local host)
SERVE_EPILOG = ("exit codes: 0 stopped (Ctrl-C or SIGTERM: in-flight calls finish first, "
                "at most 30 s), 2 usage or configuration error (also an unreachable "
                "--redis-url)")
EMULATOR_EPILOG = ("exit codes: 0 stopped by SIGTERM, 2 usage or configuration error (also "
                   "an unreachable --redis-url), 130 interrupted (Ctrl-C)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own errors: same one-line shape
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="redisflush", epilog=EPILOG, description=(
        "Flush Azure Cache for Redis and Azure Managed Redis through ARM from a Service Bus "
        "message, follow each operation to its end, and publish the completion events."))
    parser.add_argument("--version", action="version", version=f"redisflush {__version__}")
    parser.add_argument("--app-root", type=folder, help="folder holding host.json (default: "
                        "the current folder; serve and demo also try this checkout)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser("demo", help="the whole flow on this machine, no Azure",
                          epilog=EPILOG, description="Start the ARM emulator and the local "
                          "host, seed keys in a cache, flush it, print the event and the key "
                          "counts.")
    demo.add_argument("--duration", type=seconds(0, 600), default=3.0,
                      help="seconds the emulated flush takes (default 3)")
    demo.add_argument("--keys", type=whole(0, 1_000_000), default=1000,
                      help="keys to seed (default 1000)")
    demo.add_argument("--json", action="store_true", help="print the event as one JSON line")

    add_send_parser(sub)
    add_watch_parser(sub)

    serve = sub.add_parser("serve", help="run the functions on the local bus",
                           epilog=SERVE_EPILOG,
                           description="Run FlushTrigger, PollOrchestrator and the LedgerPurge "
                           "timer as the Functions host would, on the local bus, with the ARM "
                           "emulator unless --arm-endpoint is given. Ctrl-C drains in-flight "
                           "calls.")
    serve.add_argument("--local", action="store_true", required=True,
                       help="use the local bus (required: in Azure the Functions host runs "
                       "the app)")
    serve.add_argument("--arm-endpoint", type=given, help="ARM endpoint instead of the emulator")
    serve.add_argument("--concurrency", type=whole(1, 256), default=8,
                       help="invocations at once per function, like maxConcurrentCalls "
                       "(default 8)")
    _emulator_options(serve, "--emulator-port")

    emulator = sub.add_parser("emulator", help="the ARM emulator alone",
                              epilog=EMULATOR_EPILOG,
                              description="Serve the Microsoft.Cache flush, list and "
                              "operation URLs on loopback, for rehearsing failures.")
    _emulator_options(emulator, "--port")
    return parser


def _emulator_options(parser: argparse.ArgumentParser, port_flag: str) -> None:
    group = parser.add_argument_group("ARM emulator")
    group.add_argument(port_flag, dest="port", type=port, default=0,
                       help="port (default: the last one this local dir used, else a free one)"
                       if port_flag == "--emulator-port" else "port (default: a free one)")
    group.add_argument("--config", type=given, help="behaviours per cache, JSON or TOML file")
    group.add_argument("--redis-url", type=given,
                       help="back caches with this Redis (redis://host:port/db; refused at "
                       "start when it does not answer within 3 s)")
    group.add_argument("--duration", type=seconds(0, 86400), help="seconds each flush takes")
    group.add_argument("--outcome", choices=("Succeeded", "Failed", "Canceled"))
    group.add_argument("--poll-mode", choices=("both", "async", "location", "none"))
    group.add_argument("--retry-after", type=whole(0, 86400),
                       help="Retry-After seconds on 202 answers")
    group.add_argument("--busy-seconds", type=seconds(0, 86400),
                       help="answer 409 busy this long")
    group.add_argument("--immediate", action="store_true", help="answer 200 at once")


def _escape_what_the_console_cannot_print() -> None:
    """An event may carry text the console's encoding lacks (a resource group `rg-日本` on a
    cp1252 pipeline agent): it is printed escaped rather than ending the command with a
    traceback and the wrong exit code."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a stream that cannot change: leave it as it is
                pass


def main(argv: Sequence[str] | None = None) -> int:
    args = argparse.Namespace(command=None)
    _escape_what_the_console_cannot_print()
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
        if args.command is None:
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        if sys.stdout is None and args.command in ("send", "watch"):
            # started with stdout closed (`>&-`): every print would vanish, and `watch`
            # completes each event it prints, so nothing may be taken off the bus
            print(f"error: {args.command} needs stdout, which is closed", file=sys.stderr)
            return EXIT_USAGE
        return int(COMMANDS[args.command](args))
    except (UsageError, ConfigurationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of stdout stopped (`watch --json | head -1`): not a failure of ours for
        # `watch`; for `send` the final event could not be written, so its status is unsaid
        _quiet_stdout()
        if args.command == "watch":
            return 0
        print("error: stdout was closed before the final event was written", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as exc:
        if (exc.name or "redisflush").split(".")[0] == "redisflush":
            raise
        # The sender alone was installed: the local stack needs the app's packages.
        local = args.command in ("demo", "serve", "emulator") or getattr(args, "local", False)
        print(f"error: {args.command} needs {exc.name!r}, which is not installed here: "
              f"pip install 'redisflush[{'local' if local else 'app'}]'", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if not _bus_error(exc):
            raise
        print(f"error: the bus failed: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit does not fail
    on the closed pipe again (and print a traceback of its own)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _bus_error(exc: Exception) -> bool:
    """A ChannelError, or the local bus's BusError (only possible once it was loaded)."""
    bus = sys.modules.get("redisflush.bus")
    return isinstance(exc, ChannelError) or (
        bus is not None and isinstance(exc, getattr(bus, "BusError", ())))


# -- the local commands ----------------------------------------------------------------------

def _app_root(args: argparse.Namespace) -> Path:
    """--app-root must hold host.json (no silent fallback); else the current folder or
    this checkout."""
    from .local.runtime import find_app_root
    from .sender.settings import app_root_of

    return find_app_root(app_root_of(args.app_root))


def cmd_serve(args: argparse.Namespace) -> int:
    from .local.runtime import build_runtime

    try:
        runtime = build_runtime(_app_root(args), arm_endpoint=args.arm_endpoint,
                                concurrency=args.concurrency, emulator_port=args.port,
                                emulator_config_obj=_emulator_config(args),
                                redis_url=args.redis_url)
    except OSError as exc:
        raise ConfigurationError(f"cannot start: {exc}") from None
    except ConfigurationError as exc:
        if args.arm_endpoint is not None and "REDISFLUSH_ARM_ENDPOINT" in str(exc):
            raise ConfigurationError(f"--arm-endpoint: {exc}") from None
        raise
    logging.getLogger("redisflush.host").setLevel(logging.INFO)  # one line per invocation
    _stop_on_signals(runtime.host.stop)
    endpoint = runtime.emulator.url if runtime.emulator else runtime.settings.arm_endpoint
    print(f"serving {', '.join(f.name for f in runtime.host.functions)} on the local bus "
          f"{runtime.bus.path}; ARM at {endpoint}", file=sys.stderr, flush=True)
    runtime.start()
    try:
        while not runtime.host.stopping.wait(0.5):  # the main thread keeps the signals
            pass
    finally:
        drained = runtime.stop()  # at most its drain limit, whatever ARM does
    print(f"stopped after {runtime.host.invocations} invocations"
          + ("" if drained else " (calls still running were left to be redelivered)"),
          file=sys.stderr)
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    from .local.emulator import ArmEmulator
    from .local.keystore import make_keystore

    emulator = ArmEmulator(_emulator_config(args), port=args.port or 0,
                           keystore=make_keystore(args.redis_url))
    try:
        emulator.start()
    except OSError as exc:
        raise ConfigurationError(f"--port {args.port}: cannot listen on it "
                                 f"({exc.strerror or exc}); pick another or 0 for a free one") \
            from None
    print(f"ARM emulator on {emulator.url} (token: {emulator.config.token})", flush=True)
    # SIGTERM is a clean stop (exit 0); Ctrl-C leaves serve_forever as KeyboardInterrupt,
    # exit 130 (README, "CLI": exit codes)
    signal.signal(signal.SIGTERM, lambda signum, frame: emulator.request_stop())
    emulator.serve_forever()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .local.demo import run_demo

    args.app_root = _app_root(args)
    try:
        return run_demo(args)
    except OSError as exc:  # e.g. REDISFLUSH_LOCAL_DIR names a file: one line, not a traceback
        raise ConfigurationError(f"demo: {exc}") from None


COMMANDS = {"send": cmd_send, "watch": cmd_watch, "serve": cmd_serve,
            "emulator": cmd_emulator, "demo": cmd_demo}


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


def _stop_on_signals(stop: Any) -> None:
    def handler(signum: int, frame: Any) -> None:
        print(f"received {signal.Signals(signum).name}: finishing in-flight work",
              file=sys.stderr, flush=True)
        stop()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
