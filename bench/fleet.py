"""Section 2: a fleet flush under ARM throttling, ours against a ThreadPoolExecutor of SDK calls.

Ours: one `serve --local` process, one ARM emulator process enforcing the per-subscription
token buckets, N requests dropped on the request queue at once, wall time to the last
completion event. The SDK way: ThreadPoolExecutor(16) running `begin_flush_cache().result()`
per cache against its own emulator with the same buckets; with the SDK's 30 s default polling
that takes ~30 min for 1,000 caches, so it runs for a fixed window (concurrently with ours)
and its total is projected from the calls it finished.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (Emulator, Section, Serve, drain_events, request_message, sdk_client,
                    sdk_flush, sub_id)
from redisflush.local.runtime import open_bus

EVENTS_SUB = "bench"


@dataclass(frozen=True)
class Fleet:
    caches: int
    duration: float
    writes: tuple[int, float]  # burst, per second
    reads: tuple[int, float]

    def emulator_config(self) -> dict[str, Any]:
        return {"throttling": {"enabled": True,
                               "writes": {"burst": self.writes[0], "perSecond": self.writes[1]},
                               "reads": {"burst": self.reads[0], "perSecond": self.reads[1]}},
                "caches": {"*": {"duration": self.duration}}}

    def lower_bound(self) -> tuple[float, list[str]]:
        """The earliest the last event can come, with an oracle that reads each operation
        exactly once, the instant it ends: k-th POST no sooner than (k - Bw)/rw; operation k
        ends D later; the k-th read no sooner than (k - Br)/rr."""
        (bw, rw), (br, rr), d, n = self.writes, self.reads, self.duration, self.caches
        post = [max(0.0, (k - bw) / rw) for k in range(1, n + 1)]
        bound = max(max(p + d, (k - br) / rr) for k, p in enumerate(post, start=1))
        last_post = post[-1]
        why = [f"last POST >= ({n} - {bw}) / {rw:g} = {last_post:.1f} s (write bucket)",
               f"+ {d:g} s flush = {last_post + d:.1f} s before the last operation can end",
               f"+ >= 1 status read after it ends; reads allow the {n}-th read at "
               f">= ({n} - {br}) / {rr:g} = {max(0.0, (n - br) / rr):.1f} s (not binding)"
               if (n - br) / rr < last_post + d else
               f"reads: the {n}-th read no sooner than {(n - br) / rr:.1f} s (binding)",
               f"lower bound = {bound:.1f} s"]
        return bound, why


def run_ours(workdir: Path, fleet: Fleet, *, name: str = "fleet",
             timeout: float = 600.0) -> dict[str, Any]:
    emulator = Emulator(workdir, fleet.emulator_config(), name)
    serve = None
    try:
        serve = Serve(workdir, emulator.url, name)
        bus = open_bus(serve.settings)
        topic = serve.settings.events_topic
        bus.ensure_subscription(topic, EVENTS_SUB)
        sub = sub_id(2)
        batch = [request_message(serve.settings, sub, f"fleet-{i:04d}", reply=False)
                 for i in range(fleet.caches)]
        started = time.monotonic()
        bus.send(serve.settings.request_queue, [m for _, m in batch])
        wanted = {rid for rid, _ in batch}
        done: dict[str, tuple[float, dict]] = {}
        deadline = started + timeout
        entity = f"{topic}/subscriptions/{EVENTS_SUB}"
        while len(done) < len(wanted) and time.monotonic() < deadline:
            for at, event in drain_events(bus, entity):
                rid = (event.get("data") or {}).get("requestId")
                if rid in wanted and rid not in done:
                    done[rid] = (at - started, event)
        stats = emulator.stats()
        bus.close()
    finally:
        if serve is not None:
            serve.stop()
        emulator.stop()
    outcomes = collections.Counter((e.get("data") or {}).get("status") for _, e in done.values())
    if len(done) < len(wanted):
        outcomes["(no event)"] = len(wanted) - len(done)
    times = sorted(t for t, _ in done.values())
    app_requests = sum((e.get("data") or {}).get("armRequests", 0) for _, e in done.values())
    return {"wall": times[-1] if times else float("nan"), "p50": times[len(times) // 2]
            if times else float("nan"), "outcomes": dict(outcomes),
            "requests": stats["requests"], "posts": stats["posts"], "polls": stats["polls"],
            "throttled": stats["throttled"], "app_requests": app_requests,
            "complete": len(done) == len(wanted)}


class SdkFleet:
    """The obvious alternative: 16 threads, each running begin_flush_cache().result() for the
    next cache (what ThreadPoolExecutor(16).map does), for a time window. Daemon threads, so
    the benchmark reads the figures when the window closes without waiting for the calls
    still asleep in the SDK's poller."""

    def __init__(self, workdir: Path, fleet: Fleet, threads: int = 16) -> None:
        self.fleet, self.threads = fleet, threads
        self.emulator = Emulator(workdir, fleet.emulator_config(), "fleet-sdk")
        self.stop_flag = threading.Event()
        self.results: list[tuple[str, float, str]] = []  # (cache, seconds, status)
        self._lock = threading.Lock()
        self._todo: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.started = 0.0
        self.window = 0.0

    def _worker(self, client: Any) -> None:
        while not self.stop_flag.is_set():
            try:
                cache = self._todo.get_nowait()
            except queue.Empty:
                return
            seconds, status = sdk_flush(client, cache)
            with self._lock:
                if not self.stop_flag.is_set():
                    self.results.append((cache, seconds, status))

    def start(self) -> None:
        client = sdk_client(self.emulator.url, sub_id(3))
        for i in range(self.fleet.caches):
            self._todo.put(f"fleet-{i:04d}")
        self.started = time.monotonic()
        for n in range(self.threads):
            threading.Thread(target=self._worker, args=(client,), name=f"sdk-fleet-{n}",
                             daemon=True).start()

    def stop(self) -> dict[str, Any]:
        """Close the window: count the calls that finished in it, stop the emulator."""
        with self._lock:
            self.window = time.monotonic() - self.started
            self.stop_flag.set()
            results = list(self.results)
        stats = self.emulator.stats()
        self.emulator.stop()
        done = len(results)
        outcomes = collections.Counter(s for _, _, s in results)
        mean_call = sum(s for _, s, _ in results) / done if done else float("nan")
        # `threads` calls at a time, each ~mean_call long (the buckets never bind at this pace).
        rounds = -(-self.fleet.caches // self.threads)
        per_cache = [stats["caches"].get(c, {}) for c, _, _ in results]
        requests = sum(int(c.get("posts", 0)) + int(c.get("polls", 0)) for c in per_cache)
        return {"done": done, "window": self.window, "outcomes": dict(outcomes),
                "mean_call": mean_call, "projected": rounds * mean_call,
                "requests": requests, "window_requests": stats["requests"],
                "throttled": stats["throttled"],
                "requests_per_cache": requests / done if done else float("nan")}


def _outcomes(o: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(o.items(), key=lambda kv: -kv[1])) or "none"


def render(fleet: Fleet, bound: float, why: list[str], ours: dict[str, Any],
           theirs: dict[str, Any], label: str) -> Section:
    n = fleet.caches
    pct = 100.0 * ours["throttled"] / max(1, ours["requests"])
    sdk_pct = 100.0 * theirs["throttled"] / max(1, theirs["window_requests"])
    ratio = ours["wall"] / bound
    ok_all = ours["outcomes"].get("Succeeded", 0) == n
    s = Section(f"2. Fleet flush under throttling ({label})")
    s.table = [
        ["", "redisflush (serve --local)", "SDK: ThreadPoolExecutor(16)"],
        ["caches / flush duration", f"{n} / {fleet.duration:g} s", f"{n} / {fleet.duration:g} s"],
        ["wall time to last event", f"{ours['wall']:.1f} s",
         f"~{theirs['projected']:.0f} s projected ({theirs['done']} caches measured in "
         f"{theirs['window']:.0f} s window, {theirs['mean_call']:.1f} s per call)"],
        ["lower bound (buckets)", f"{bound:.1f} s", f"{bound:.1f} s"],
        ["wall / bound", f"{ratio:.2f}x (target <= 1.25x)",
         f"{theirs['projected'] / bound:.1f}x"],
        ["median time to event", f"{ours['p50']:.1f} s", f"{theirs['mean_call']:.1f} s per call"],
        ["outcomes", _outcomes(ours["outcomes"]), _outcomes(theirs["outcomes"])],
        ["ARM requests (POST + GET)", f"{ours['requests']} ({ours['posts']} + {ours['polls']})"
         f" = {ours['requests'] / n:.2f} per cache",
         f"{theirs['requests']} for {theirs['done']} caches = "
         f"{theirs['requests_per_cache']:.2f} per cache"],
        ["429 answers", f"{ours['throttled']} ({pct:.2f}% of requests; target < 5%)",
         f"{theirs['throttled']} of {theirs['window_requests']} requests in the window "
         f"({sdk_pct:.2f}%)"],
    ]
    s.notes = ["Lower bound: " + "; ".join(why) + ".",
               f"Ours: {n:,} requests dropped on the request queue at once, one `serve --local` "
               "process, one emulator process enforcing the buckets; the clock stops at the "
               "last completion event on the topic. The app paces itself with the GCRA mirror "
               "of the buckets in redisflush/pacing.py, corrected by "
               "x-ms-ratelimit-remaining-subscription-* and Retry-After.",
               f"SDK way: 16 threads each running begin_flush_cache().result() for the next "
               f"cache, on their own emulator process with the same buckets, for the same "
               f"window as ours ({theirs['window']:.0f} s). Each call lasts the SDK's 30 s "
               f"default polling interval plus the final GETs; 16 calls at a time never meet "
               f"the buckets, so {n:,} caches take ceil({n:,} / 16) x "
               f"{theirs['mean_call']:.1f} s = {theirs['projected']:.0f} s (projected from the "
               f"{theirs['done']} calls finished in the window rather than run for "
               f"{theirs['projected'] / 60:.0f} min)."]
    s.headline = [f"Fleet ({label}, {fleet.duration:g} s flushes): last event after {ours['wall']:.1f} s = "
                  f"{ratio:.2f}x the {bound:.0f} s lower bound ARM's buckets allow; "
                  f"{ours['outcomes'].get('Succeeded', 0)}/{n} Succeeded; "
                  f"{ours['throttled']} 429s ({pct:.1f}% of {ours['requests']} requests). "
                  f"SDK + ThreadPoolExecutor(16): ~{theirs['projected']:.0f} s projected."]
    s.data = {"n": n, "ours": ours, "sdk": theirs, "bound": bound, "ratio": ratio, "ok_all": ok_all,
              "pct429": pct}
    return s
