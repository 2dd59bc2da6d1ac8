"""The Azure SDK way, apart from redisflush: a client on the emulator, one flush call, a pool
of them (section 2's SdkFleet), and the SDK fleet process section 6 measures
(`python bench/sdk_side.py --fleet URL ...`).

This module imports only the standard library and the Azure SDK, never redisflush or the rest
of bench/ (common.py pulls in redisflush, its local bus and SQLite: about 9 MiB of RSS that an
SDK-only process would not hold, and section 6 reads the SDK process's whole RSS)."""
from __future__ import annotations

import argparse
import collections
import json
import math
import queue
import sys
import threading
import time
from typing import Any

API_VERSION = "2023-08-01"
TOKEN = "local-emulator-token"
RG = "rg-bench"
# The best-tuned SDK pools raise azure-core's retries of a 429 (3 by default), so throttling
# costs time rather than a failed call (bench/fleet.py, section 2).
SDK_RETRIES = 100


class StubCredential:
    """azure-core TokenCredential that hands out the emulator's token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken
        return AccessToken(TOKEN, int(time.time()) + 10 * 365 * 86400)


def sdk_client(arm_url: str, sub: str, **config: Any) -> Any:
    """`config`: azure-core pipeline settings (e.g. retry_total) for a tuned client."""
    from azure.mgmt.redis import RedisManagementClient
    return RedisManagementClient(StubCredential(), sub, base_url=arm_url,
                                 api_version=API_VERSION, **config)


def sdk_flush(client: Any, cache: str, polling_interval: float | None = None
              ) -> tuple[float, str]:
    """begin_flush_cache(...).result() with the SDK's default polling (30 s without
    Retry-After) or `polling_interval`; (seconds, status). time.time() at return is the
    moment the caller learns the outcome."""
    started = time.monotonic()
    kwargs: dict[str, Any] = {"enforce_https": False}
    if polling_interval is not None:
        kwargs["polling_interval"] = polling_interval
    try:
        result = client.redis.begin_flush_cache(RG, cache, **kwargs).result()
        status = getattr(result, "status", None) or "Succeeded"
    except Exception as exc:  # noqa: BLE001 - an SDK failure is an outcome to count
        status = f"error:{type(exc).__name__}"
    return time.monotonic() - started, status


class SdkFleet:
    """ThreadPoolExecutor(threads) x begin_flush_cache().result() over `caches` caches, for a
    window at most. Daemon threads: when the window closes the figures are read without
    waiting for the calls still asleep in the SDK's poller."""

    def __init__(self, arm_url: str, sub: str, caches: int, threads: int,
                 interval: float | None = None) -> None:
        self.arm_url, self.sub, self.caches, self.threads = arm_url, sub, caches, threads
        self.interval = interval
        self.name = f"sdk{threads}" + (f"i{interval:g}" if interval else "")
        self.results: list[tuple[float, float, str]] = []  # (end since start, seconds, status)
        self._lock = threading.Lock()
        self._todo: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.started = 0.0
        self.all_done = threading.Event()

    def _worker(self, client: Any) -> None:
        while True:
            try:
                cache = self._todo.get_nowait()
            except queue.Empty:
                return
            seconds, status = sdk_flush(client, cache, self.interval)
            with self._lock:
                self.results.append((time.monotonic() - self.started, seconds, status))
                if len(self.results) == self.caches:
                    self.all_done.set()

    def client(self) -> Any:
        """The pool's client: every thread shares it, as section 2 runs it."""
        return sdk_client(self.arm_url, self.sub, retry_total=SDK_RETRIES,
                          retry_status=SDK_RETRIES)

    def start(self, client: Any = None) -> None:
        client = client if client is not None else self.client()
        for i in range(self.caches):
            self._todo.put(f"{self.name}-{i:04d}")
        self.started = time.monotonic()
        for n in range(self.threads):
            threading.Thread(target=self._worker, args=(client,), daemon=True,
                             name=f"{self.name}-{n}").start()

    def figures(self, window: float) -> dict[str, Any]:
        with self._lock:
            results = list(self.results)
        done = len(results)
        outcomes = collections.Counter(s for _, _, s in results)
        failures = sum(v for k, v in outcomes.items() if k != "Succeeded")
        mean_call = sum(s for _, s, _ in results) / done if done else float("nan")
        finished = done == self.caches
        if finished:
            total, how = max(e for e, _, _ in results), "measured"
        else:
            total = math.ceil(self.caches / self.threads) * mean_call
            how = f"projected from {done} calls in a {window:.0f} s window"
        return {"threads": self.threads, "interval": self.interval, "name": self.name,
                "done": done, "outcomes": dict(outcomes),
                "failures": failures, "mean_call": mean_call, "total": total, "how": how,
                "finished": finished}


def fleet_child(url: str, sub: str, caches: int, threads: int, interval: float | None,
                window: float) -> int:
    """Section 6's SDK fleet process: says "ready" at rest (azure.mgmt.redis imported, the
    pool's own client built), runs the pool on "go", prints its figures, then waits for the
    parent to read its RSS and close stdin."""
    pool = SdkFleet(url, sub, caches, threads, interval)
    client = pool.client()
    print("ready", flush=True)
    sys.stdin.readline()
    pool.start(client)
    pool.all_done.wait(window)
    print(json.dumps(pool.figures(time.monotonic() - pool.started)), flush=True)
    sys.stdin.read()
    return 0


def _main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fleet", required=True, help="the emulator's URL")
    parser.add_argument("--sub", required=True)
    parser.add_argument("--caches", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--interval", type=float)
    parser.add_argument("--window", type=float, required=True)
    a = parser.parse_args()
    return fleet_child(a.fleet, a.sub, a.caches, a.threads, a.interval, a.window)


if __name__ == "__main__":
    sys.exit(_main())
