"""`python -m redisflush demo`: the whole job on this machine in a few seconds.

It starts what a newcomer would otherwise start by hand (a throwaway redis-server when one
is installed, the ARM emulator, the local host), seeds keys in a cache, sends a request with
--wait semantics and prints the event with the key counts before and after.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

from ..sender.follow import exit_code, follow
from ..sender.local import LocalChannel
from ..sender.prepare import Invalid, prepare
from ..sender.report import Progress, describe
from .emulator_config import EmulatorConfig
from .runtime import build_runtime, find_app_root, local_settings

DEMO_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEMO_GROUP, DEMO_CACHE = "rg-demo", "demo-cache"
DEMO_SCOPE = f"/subscriptions/{DEMO_SUBSCRIPTION}/resourceGroups/{DEMO_GROUP}"


def free_loopback_port() -> int:
    """A loopback port free at this instant (released again: another process can take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_pid(port: int) -> int | None:
    """The process_id of the Redis answering on `port` (INFO server), None if none answers:
    a listener there that is not Redis, or not yet, or not the one we started, is told apart."""
    with contextlib.suppress(OSError, ValueError), \
            socket.create_connection(("127.0.0.1", port), 0.5) as conn:
        conn.settimeout(0.5)
        conn.sendall(b"INFO server\r\n")
        reply = b""
        while len(reply) < 1 << 16:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            reply += chunk
            _, found, rest = reply.partition(b"\r\nprocess_id:")
            if found and b"\r\n" in rest:
                return int(rest.split(b"\r\n", 1)[0])
    return None


@contextlib.contextmanager
def throwaway_redis(timeout: float = 5.0, *, tries: int = 3,
                    pick_port: Callable[[], int] = free_loopback_port) -> Iterator[str | None]:
    """A redis-server on a free loopback port with no persistence, or None if not installed
    or it did not start. The port is free when picked but can be taken before redis-server
    binds it (another process on a busy machine): redis-server then exits, and what answers
    there is someone else's, so it is ready only when the Redis on the port reports its own
    pid; else a new port is tried."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    for _ in range(tries):
        port = pick_port()
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save",
                                 "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if _redis_pid(port) == proc.pid:
                    yield f"redis://127.0.0.1:{port}/0"
                    return
                time.sleep(0.05)
            if proc.poll() is None:
                break  # alive but never answered within `timeout`: no other port would help
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    yield None


def run_demo(args: argparse.Namespace) -> int:
    app_root = find_app_root(args.app_root)
    # its own clean corner of REDISFLUSH_LOCAL_DIR (default: .redisflush/ in the app root)
    demo_dir = local_settings(app_root)[0].local_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    config = EmulatorConfig.from_dict({"defaults": {"duration": args.duration}})
    out = sys.stderr
    with throwaway_redis() as redis_url:
        runtime = build_runtime(app_root, emulator_config_obj=config, redis_url=redis_url,
                                overrides={"REDISFLUSH_LOCAL_DIR": str(demo_dir),
                                           "REDISFLUSH_ALLOWED_SCOPES": DEMO_SCOPE})
        with runtime:
            store = runtime.emulator.keystore
            store.seed(DEMO_CACHE, args.keys)
            before = store.count(DEMO_CACHE)
            backing = f"redis-server at {redis_url}" if redis_url else "an in-memory key store"
            print(f"ARM emulator at {runtime.emulator.url}, caches backed by {backing}", file=out)
            print(f"cache {DEMO_CACHE}: {before} keys before the flush", file=out)
            body = {"subscriptionId": DEMO_SUBSCRIPTION, "resourceGroup": DEMO_GROUP,
                    "cacheName": DEMO_CACHE, "reason": "redisflush demo",
                    "requestedBy": "demo"}
            prepared = prepare(body, runtime.settings, request_id=str(uuid.uuid4()), reply=True,
                               now=dt.datetime.now(dt.UTC))
            if isinstance(prepared, Invalid):  # the demo's own request: a bug, said in one line
                print(f"the demo built an invalid request: {prepared.reason}", file=out)
                return 1
            channel = LocalChannel(runtime.settings)
            try:
                channel.send_request(prepared.message)
                print(f"sent request {prepared.request_id}; following the operation...",
                      file=out)
                event = follow(channel, prepared.request_id,
                               time.monotonic() + 60 + args.duration, Progress(out).note,
                               prepared.final_type,
                               session_id=prepared.message.reply_to_session_id)
            finally:
                channel.close()
            after = store.count(DEMO_CACHE)
            stats = runtime.emulator.stats()
    if event is None:
        print("TimedOut: no completion event within the demo's time", file=out)
        return 3
    print(f"cache {DEMO_CACHE}: {after} keys after the flush", file=out)
    print(json.dumps(event, separators=(",", ":")) if args.json
          else json.dumps(event, indent=2))
    print(describe(event), file=out)
    print(f"ARM emulator saw {stats['posts']} POST and {stats['polls']} status GETs", file=out)
    code = exit_code(event)
    if code == 0 and after != 0:
        print(f"but the cache still holds {after} keys", file=out)
        return 1
    return code
