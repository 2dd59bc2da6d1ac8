"""The Azure SDK way, apart from redisflush: a client on the emulator, one flush call, a pool
of them (section 2's SdkFleet), the asyncio client's fleet (AioSdkFleet: every call a
coroutine in one event loop), and the SDK fleet process section 6 measures
(`python bench/sdk_side.py --fleet URL ...`, `--aio` for the asyncio one).

This module imports only the standard library, the Azure SDK and aiohttp (the asyncio
client's transport), never redisflush or the rest of bench/ (common.py pulls in redisflush,
its local bus and SQLite: about 9 MiB of RSS that an SDK-only process would not hold, and
section 6 reads the SDK process's whole RSS)."""
from __future__ import annotations

import argparse
import asyncio
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
# Memory: azure-core's RetryPolicy keeps every retried 429 as a RequestHistory (a deep copy of
# the request and the whole aiohttp response) and hangs the list on the final response's
# context["history"]; the POST's final response is the poller's _initial_response, so a call
# holds each 429 it got until its poller is let go. The cost follows the 429s received, not
# this cap (any cap above them is the same); azure-core's default (retry_status=3) fails most
# calls of a throttled fleet instead (tests/infra/test_bench_aio_fleet.py checks the harness
# itself keeps nothing of a finished call).
# The asyncio fleet's aiohttp connector: at most this many connections open at once (aiohttp's
# default is 100 per session; 0 = no limit). On section 2's 1,000-cache fleet (one-off runs,
# each alone on a fresh emulator, 2026-12-05, the machine shared with other work) 10 was the
# fastest, by little: AIO_LIMIT_NOTE; bench/fleet.py's full run measures 100 and no limit again.
AIO_LIMIT = 10
AIO_LIMIT_NOTE = ("the fastest of the limits tried in one-off runs of the 1,000-cache fleet, "
                  "each alone: at polling_interval=5, 10 connections 112.7 s, 100 (aiohttp's "
                  "default) 114.4 s, no limit 115.5 s; at polling_interval=10, 10 connections "
                  "102.2 s, 100 104.0 s; the 429s, not the connections, set the pace "
                  "(polling_interval=15 took 118.5 s); the full run of 2026-12-05 12:53 UTC "
                  "found no limit fastest at polling_interval=10 (94.3 s against 100 s), so "
                  "each full run measures 100 and no limit on both fleets and compares the "
                  "fastest")


def _token() -> Any:
    from azure.core.credentials import AccessToken
    return AccessToken(TOKEN, int(time.time()) + 10 * 365 * 86400)


class StubCredential:
    """azure-core TokenCredential that hands out the emulator's token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return _token()


class AsyncStubCredential:
    """azure-core AsyncTokenCredential that hands out the emulator's token."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return _token()

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> AsyncStubCredential:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None


def sdk_client(arm_url: str, sub: str, **config: Any) -> Any:
    """`config`: azure-core pipeline settings (e.g. retry_total) for a tuned client."""
    from azure.mgmt.redis import RedisManagementClient
    return RedisManagementClient(StubCredential(), sub, base_url=arm_url,
                                 api_version=API_VERSION, **config)


def aio_client(arm_url: str, sub: str, limit: int = AIO_LIMIT, **config: Any) -> Any:
    """The asyncio client (azure.mgmt.redis.aio) on an aiohttp session of its own whose
    connector keeps at most `limit` connections (0 = no limit); closing the client closes
    the session. Call it inside a running event loop (aiohttp's session wants one)."""
    import aiohttp
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.mgmt.redis.aio import RedisManagementClient

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))
    return RedisManagementClient(AsyncStubCredential(), sub, base_url=arm_url,
                                 api_version=API_VERSION,
                                 transport=AioHttpTransport(session=session), **config)


def _flush_kwargs(polling_interval: float | None) -> dict[str, Any]:
    """begin_flush_cache's options: plain HTTP to the emulator, the interval when given."""
    kwargs: dict[str, Any] = {"enforce_https": False}
    if polling_interval is not None:
        kwargs["polling_interval"] = polling_interval
    return kwargs


def _status(result: Any) -> str:
    return getattr(result, "status", None) or "Succeeded"


async def aio_flush(client: Any, cache: str, polling_interval: float | None = None
                    ) -> tuple[float, str]:
    """sdk_flush's asyncio twin: `await begin_flush_cache(...)`, `await poller.result()`."""
    started = time.monotonic()
    try:
        poller = await client.redis.begin_flush_cache(RG, cache,
                                                      **_flush_kwargs(polling_interval))
        status = _status(await poller.result())
    except Exception as exc:  # noqa: BLE001 - an SDK failure is an outcome to count
        status = f"error:{type(exc).__name__}"
    return time.monotonic() - started, status


def sdk_flush(client: Any, cache: str, polling_interval: float | None = None
              ) -> tuple[float, str]:
    """begin_flush_cache(...).result() with the SDK's default polling (30 s without
    Retry-After) or `polling_interval`; (seconds, status). time.time() at return is the
    moment the caller learns the outcome."""
    started = time.monotonic()
    try:
        status = _status(client.redis.begin_flush_cache(
            RG, cache, **_flush_kwargs(polling_interval)).result())
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
            self._record(*sdk_flush(client, cache, self.interval))

    def _record(self, seconds: float, status: str) -> None:
        """One call's outcome, from any of the pool's threads (or the event loop)."""
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
        # a pool with a thread per cache or more has every call in flight at once: no rounds
        # to project, and the calls done so far are the fastest, so the window is a lower bound
        lower_bound = not finished and self.threads >= self.caches
        if finished:
            total, how = max(e for e, _, _ in results), "measured"
        elif lower_bound:
            total = window
            how = (f"not finished in the {window:.0f} s window ({done} calls done): the "
                   "total is more")
        else:
            total = math.ceil(self.caches / self.threads) * mean_call
            how = f"projected from {done} calls in a {window:.0f} s window"
        return {"kind": "threads", "threads": self.threads, "interval": self.interval,
                "name": self.name,
                "done": done, "outcomes": dict(outcomes),
                "failures": failures, "mean_call": mean_call, "total": total, "how": how,
                "finished": finished, "lower_bound": lower_bound}


class AioSdkFleet(SdkFleet):
    """The asyncio client (azure.mgmt.redis.aio): every cache's `await begin_flush_cache()`
    then `await poller.result()` as a coroutine, all `caches` of them at once in one event
    loop (on a thread of its own, so it runs beside the threaded pools), on one client whose
    aiohttp connector keeps at most `limit` connections open (0 = no limit). Same retry
    tuning as the threaded pools (SDK_RETRIES). Every call is in flight at once, as in a
    thread-per-cache pool: one that has not finished in the window is not projected, its total
    is the window, a lower bound (figures' "lower_bound")."""

    def __init__(self, arm_url: str, sub: str, caches: int, interval: float | None = None,
                 limit: int = AIO_LIMIT) -> None:
        super().__init__(arm_url, sub, caches, caches, interval)
        self.limit = limit
        self.name = f"aio{limit}" + (f"i{interval:g}" if interval else "")
        self.ready = threading.Event()
        self._go = threading.Event()
        self.error: BaseException | None = None

    def prepare(self) -> None:
        """Start the loop's thread: it imports the asyncio client, builds it and its aiohttp
        session, sets `ready`, and waits for go() to send the calls."""
        threading.Thread(target=self._thread, daemon=True, name=f"{self.name}-loop").start()
        self.ready.wait(60)
        if self.error is not None:
            raise RuntimeError(f"asyncio SDK fleet failed to start: {self.error!r}")

    def go(self) -> None:
        self.started = time.monotonic()
        self._go.set()

    def start(self, client: Any = None) -> None:
        self.prepare()
        self.go()

    def _thread(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - reported through figures' outcomes
            self.error = exc
            self.ready.set()

    async def _run(self) -> None:
        client = aio_client(self.arm_url, self.sub, self.limit, retry_total=SDK_RETRIES,
                            retry_status=SDK_RETRIES)
        async with client:
            self.ready.set()
            while not self._go.is_set():
                await asyncio.sleep(0.01)
            await asyncio.gather(*(self._flush(client, f"{self.name}-{i:04d}")
                                   for i in range(self.caches)))

    async def _flush(self, client: Any, cache: str) -> None:
        self._record(*await aio_flush(client, cache, self.interval))

    def figures(self, window: float) -> dict[str, Any]:
        fig = super().figures(window)
        fig.update(kind="asyncio", limit=self.limit)
        if self.error is not None:
            fig["outcomes"][f"error:{type(self.error).__name__}"] = self.caches - fig["done"]
            fig["failures"] += self.caches - fig["done"]
        return fig


def fleet_child(url: str, sub: str, caches: int, threads: int, interval: float | None,
                window: float, aio_limit: int | None = None) -> int:
    """Section 6's SDK fleet process: says "ready" at rest (azure.mgmt.redis imported, the
    pool's own client built; with `aio_limit`, the asyncio client and its aiohttp session on
    the loop's thread), runs the pool on "go", prints its figures, then waits for the parent
    to read its RSS and close stdin. It imports azure.identity first: an SDK function in
    Azure gets its token from it, as ours does (ours' measured serve imports it too)."""
    import azure.identity  # noqa: F401 - held as in Azure, not used against the emulator
    if aio_limit is not None:
        aio = AioSdkFleet(url, sub, caches, interval, aio_limit)
        aio.prepare()
        pool: SdkFleet = aio
        print("ready", flush=True)
        sys.stdin.readline()
        aio.go()
    else:
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
    parser.add_argument("--threads", type=int, default=0, help="the threaded pool's size")
    parser.add_argument("--aio", type=int, metavar="LIMIT",
                        help="the asyncio client instead, its connector keeping at most LIMIT "
                        "connections (0 = no limit)")
    parser.add_argument("--interval", type=float)
    parser.add_argument("--window", type=float, required=True)
    a = parser.parse_args()
    if a.aio is None and a.threads <= 0:
        parser.error("--threads T or --aio LIMIT")
    return fleet_child(a.fleet, a.sub, a.caches, a.threads, a.interval, a.window, a.aio)


if __name__ == "__main__":
    sys.exit(_main())
