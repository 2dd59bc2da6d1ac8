"""The ARM emulator as the benchmarks run it: `python -m redisflush emulator`, plus a trace.

`python bench/armemu.py --port 0 --config cfg.json` starts the same `ArmEmulator` the CLI
starts (same config, same routes, same throttling) and records, for every classic flush POST
and status GET, when it arrived (wall clock) and what it answered. `GET /_bench/trace` returns

    {"caches": {name: {"acceptedAt": t, "duration": d, "end": t + d,
                        "requests": [[t, "POST"|"GET", status], ...]}}, "now": t}

so a benchmark can tell when each operation ended (the emulator knows: accepted_at +
duration), when it was read, and how many reads each flush cost, without touching the app.
It lives in bench/ because only the benchmarks need it; the emulator itself is unchanged.
"""
from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redisflush.local.emulator import ArmEmulator  # noqa: E402
from redisflush.local.emulator_config import load_config  # noqa: E402
from redisflush.local.emulator_http import Reply  # noqa: E402

_POST = re.compile(r"/redis/([^/]+)/flush/?$", re.I)
_POLL = re.compile(r"/operationresults/([^/?]+)/?$", re.I)


class TracingEmulator(ArmEmulator):
    """ArmEmulator that remembers each classic POST and status GET per cache."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trace: dict[str, list[list[Any]]] = {}
        self._trace_lock = threading.Lock()

    def _route(self, method: str, path: str, query: str, headers: Any, body: bytes) -> Reply:
        if path == "/_bench/trace" and method == "GET":
            return Reply(200, self.trace())
        at = time.time()
        reply = super()._route(method, path, query, headers, body)
        cache = None
        post = _POST.search(path) if method == "POST" else None
        if post:
            cache = post.group(1)
        elif method == "GET":
            poll = _POLL.search(path)
            if poll:
                with self._lock:
                    op = self._book.ops.get(poll.group(1))
                cache = op.cache if op is not None else None
        if cache is not None:
            with self._trace_lock:
                self._trace.setdefault(cache.lower(), []).append([at, method, reply.status])
        return reply

    def trace(self) -> dict[str, Any]:
        with self._lock:
            ops = {id(o): o for o in self._book.ops.values()}.values()
            accepted = {o.cache.lower(): (o.accepted_at, o.beh.duration) for o in ops}
        with self._trace_lock:
            requests = {k: list(v) for k, v in self._trace.items()}
        caches: dict[str, Any] = {}
        for name in set(accepted) | set(requests):
            at: float | None = None
            duration: float | None = None
            end: float | None = None
            if name in accepted:
                at, duration = accepted[name]
                end = at + duration
            caches[name] = {"acceptedAt": at, "duration": duration, "end": end,
                            "requests": requests.get(name, [])}
        return {"caches": caches, "now": time.time()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    emulator = TracingEmulator(load_config(args.config), port=args.port)
    emulator.start()
    print(f"ARM emulator on {emulator.url} (token: {emulator.config.token})", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    emulator.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
