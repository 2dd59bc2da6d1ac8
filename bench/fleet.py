"""Section 2: a fleet flush under ARM throttling, ours against a thread pool of SDK calls.

Ours: one `serve --local` process, one ARM emulator process enforcing the per-subscription
token buckets, N requests dropped on the request queue at once, wall time to the last
completion event; then the same with a second client spending half of the subscription's read
refill (the emulator's `PUT /_emulator/load`, 12.5 reads/s) for the whole run.

The SDK way: `ThreadPoolExecutor(T)` running `begin_flush_cache().result()` per cache, for T
in a sweep (16 .. 256) at the SDK's default polling and for the larger T at
`polling_interval=2` (the SDK's own knob for a shorter wait), each (T, interval) on its own
subscription of one emulator process with the same buckets, all side by side in a child
process (`python bench/fleet.py --sdk-sweep ...`); then, in the full run, a thread per cache
(T = N) and 256 threads at intervals near the flush's length (5 and 10 s), each alone on a
fresh emulator: the best-tuned pool is there, past the sweep's edge. One that finishes its N
caches inside the window is measured; one of T < N threads that does not is projected from
the calls it finished (rounds of T calls, each as long as the measured mean call); one with
every call in flight at once (T >= N, the asyncio fleet) is not projected: the window is a
lower bound of its total.

The SDK's asyncio client (azure.mgmt.redis.aio on aiohttp, sdk_side.AioSdkFleet): all N
`begin_flush_cache()` + `result()` as coroutines in one event loop, the same retry tuning, at
polling_interval 2, 5 and 10 s (AIO_INTERVALS); in the full run each alone on a fresh emulator
after the threaded pools, with --quick side by side with each other after the threaded sweep.

A fleet whose flushes all last exactly the same is the easy case for reading an operation when
it is expected to end (ours learns durations as they succeed), so the full run also flushes a
fleet whose durations spread over d .. d + SPREAD s (by the cache's last digit), ours against
the thread-per-cache pools.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    Emulator,
    EventWatcher,
    RssSampler,
    Section,
    Serve,
    median,
    request_message,
    settled_rss,
    sub_id,
)
from sdk_side import AIO_LIMIT, AIO_LIMIT_NOTE, SDK_RETRIES, AioSdkFleet, SdkFleet

from redisflush.local.runtime import open_bus

FLEET_SUB = sub_id(2)
LOAD_SUB = sub_id(4)
# azure-core retries a 429 after its Retry-After 3 times by default (retry_status; at most
# retry_total = 10 retries of any kind), then raises: under a fleet's throttling that fails
# calls, so the sweep's client waits throttling out instead (sdk_side.SDK_RETRIES).
# (threads, polling_interval; None = the SDK default, 30 s without Retry-After)
SWEEP: tuple[tuple[int, float | None], ...] = (
    (16, None), (32, None), (64, None), (128, None), (192, None), (256, None),
    (64, 2.0), (128, 2.0), (256, 2.0))
# a thread per cache (T = N, filled in), each alone: intervals near a 10 s flush's length
ALONE_INTERVALS: tuple[float, ...] = (5.0, 10.0)
# the sweep's largest pool at those intervals, each alone (full run): a review found 256
# threads at polling_interval=10 as fast as a thread per cache, with a quarter of the threads
ALONE_POOLS: tuple[tuple[int, float], ...] = ((256, 5.0), (256, 10.0))
# the asyncio client's fleet (every call a coroutine), at its connector's tuned limit
AIO_INTERVALS: tuple[float, ...] = (2.0, 5.0, 10.0)
# the full run also measures the connector's other limits, each alone and on both fleets,
# so the tuning of sdk_side.AIO_LIMIT is checked in every full run (0 = no limit; the run
# at 12:53 UTC on 2026-12-05 found no limit fastest at polling_interval=10, which the
# spread fleet had not tried)
AIO_LIMIT_CHECK: tuple[tuple[float, int], ...] = ((10.0, 100), (10.0, 0), (5.0, 0))
# What the app in Azure imports and `serve --local` does not (its bus, ledger and identity
# adapters' SDKs): ours' fleet serve imports them first (bench/serve_variant.py), so the RSS
# section 6 reads from this run carries them as the app's process does
AZURE_ADAPTERS = ("azure.servicebus", "azure.data.tables", "azure.identity",
                  "redisflush.ledger_tables")
SPREAD = 5.0  # the spread fleet's durations: d + SPREAD * (last digit of the cache) / 10


@dataclass(frozen=True)
class Fleet:
    caches: int
    duration: float
    writes: tuple[int, float]  # burst, per second
    reads: tuple[int, float]
    spread: float = 0.0        # durations d .. d + spread, by a cache name's last digit

    def durations(self) -> list[float]:
        """Cache i's flush (its name ends in i's digits)."""
        return [self.duration + self.spread * (i % 10) / 10 for i in range(self.caches)]

    def emulator_config(self) -> dict[str, Any]:
        caches = ({f"*{j}": {"duration": self.duration + self.spread * j / 10}
                   for j in range(10)} if self.spread else {"*": {"duration": self.duration}})
        return {"throttling": {"enabled": True,
                               "writes": {"burst": self.writes[0], "perSecond": self.writes[1]},
                               "reads": {"burst": self.reads[0], "perSecond": self.reads[1]}},
                "caches": caches}

    def lower_bound(self, load: float = 0.0) -> tuple[float, list[str]]:
        """The earliest the last event can come, with an oracle that reads each operation
        exactly once, the instant it ends: k-th POST no sooner than (k - Bw)/rw; operation k
        ends its duration later (an oracle knowing the durations POSTs the longest first);
        the k-th read no sooner than (k - Br)/(rr - load)."""
        (bw, rw), (br, rr), d, n = self.writes, self.reads, self.duration, self.caches
        r_eff = rr - load
        post = self._posts()
        longest_first = sorted(self.durations(), reverse=True)
        ends = max(p + dk for p, dk in zip(post, longest_first, strict=True))
        bound = max(ends, max((k - br) / r_eff for k in range(1, n + 1)))
        last_post = post[-1]
        read_n = max(0.0, (n - br) / r_eff)
        arrival = self.in_order_bound()
        flush = (f"+ {d:g} s flush = {last_post + d:.1f} s before the last operation can end"
                 if not self.spread else
                 f"+ the flushes, {d:g}-{d + self.spread * 0.9:g} s, longest POSTed first "
                 f"(an oracle that knows them): the last operation ends >= {ends:.1f} s "
                 f"({arrival:.1f} s when POSTed in the order sent: a scheduler that does not "
                 "know the durations beats that only by luck)")
        why = [f"last POST >= ({n} - {bw}) / {rw:g} = {last_post:.1f} s (write bucket)", flush,
               f"+ >= 1 status read after it ends; reads allow the {n}-th read at "
               f">= ({n} - {br}) / {r_eff:g} = {read_n:.1f} s "
               + ("(not binding)" if read_n < ends else "(binding)"),
               f"lower bound = {bound:.1f} s"]
        return bound, why

    def in_order_bound(self) -> float:
        """The last operation's end when the POSTs go in the order sent (durations unknown)."""
        return max(p + dk for p, dk in zip(self._posts(), self.durations(), strict=True))

    def _posts(self) -> list[float]:
        """The earliest the k-th POST can go: the write bucket's burst, then its refill."""
        (bw, rw), n = self.writes, self.caches
        return [max(0.0, (k - bw) / rw) for k in range(1, n + 1)]


def run_ours(workdir: Path, fleet: Fleet, *, name: str = "fleet", load: float = 0.0,
             timeout: float = 600.0, launcher: list[str] | None = None,
             env: dict[str, str] | None = None, adapters: bool = True) -> dict[str, Any]:
    """Ours on `fleet`; with `adapters` (and no `launcher` of the caller's) the serve imports
    AZURE_ADAPTERS before serving, as the app in Azure holds them."""
    imported = list(AZURE_ADAPTERS) if adapters and launcher is None else []
    if imported:
        launcher = [str(ROOT / "bench" / "serve_variant.py")]
        env = {**(env or {}), "REDISFLUSH_BENCH_IMPORTS": ",".join(AZURE_ADAPTERS)}
    emulator = Emulator(workdir, fleet.emulator_config(), name)
    serve = watcher = None
    try:
        serve = Serve(workdir, emulator.url, name, launcher=launcher, env=env)
        watcher = EventWatcher(serve.settings)
        if load:
            emulator.set_load(FLEET_SUB, load)
        bus = open_bus(serve.settings)
        batch = [request_message(serve.settings, FLEET_SUB, f"fleet-{i:04d}", reply=False)
                 for i in range(fleet.caches)]
        # memory (section 6): the serve at rest before the first request, then sampled
        idle = settled_rss(serve.proc.pid)
        sampler = RssSampler(serve.proc.pid)
        cpu0 = serve.cpu_seconds()
        started = time.time()
        for lo in range(0, len(batch), 200):   # a send takes 256 KiB at most, as in Azure
            bus.send(serve.settings.request_queue, [m for _, m in batch[lo:lo + 200]])
        bus.close()
        wanted = [rid for rid, _ in batch]
        deadline = time.monotonic() + timeout
        while watcher.count() < len(wanted) and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu = serve.cpu_seconds() - cpu0
        rss = sampler.stop()
        rss.update(idle=idle, after=settled_rss(serve.proc.pid, 2.0))
        stats = emulator.stats()
        trace = emulator.trace()
        (workdir / f"{name}-trace.json").write_text(json.dumps(trace))
        invocations = _invocations(serve.log)
    finally:
        if watcher is not None:
            watcher.close()
        if serve is not None:
            serve.stop()
        emulator.stop()
    done = {rid: watcher.arrived[rid] for rid in wanted if rid in watcher.arrived}
    outcomes = collections.Counter((e.get("data") or {}).get("status")
                                   for _, e in done.values())
    if len(done) < len(wanted):
        outcomes["(no event)"] = len(wanted) - len(done)
    times = sorted(at - started for at, _ in done.values())
    if len(done) < len(wanted):
        times.append(timeout)
    lags = []
    for _rid, (at, event) in done.items():
        cache = ((event.get("data") or {}).get("resourceId") or "").rsplit("/", 1)[-1]
        end = (trace.get(cache.lower()) or {}).get("end")
        if end:
            lags.append(at - end)
    loads = stats.get("loads", {}).get(FLEET_SUB, {})
    return {"wall": times[-1] if times else float("nan"),
            "p50": times[len(times) // 2] if times else float("nan"),
            "lag_p50": median(lags), "lag_max": max(lags) if lags else float("nan"),
            "outcomes": dict(outcomes), "requests": stats["requests"], "posts": stats["posts"],
            "polls": stats["polls"], "throttled": stats["throttled"],
            "complete": len(done) == len(wanted), "cpu": cpu, "load": load,
            "load_taken": loads.get("readsTaken", 0.0), "invocations": invocations,
            "rss": rss, "adapters": imported}


def _invocations(log: Path) -> dict[str, int]:
    """Function executions from the serve log (one line per invocation)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in log.read_text(errors="replace").splitlines():
        for fn in ("FlushTrigger", "PollOrchestrator"):
            if f"{fn} request=" in line:
                counts[fn] += 1
    return dict(counts)


# -- the SDK way -----------------------------------------------------------------------------

def sdk_sweep(workdir: Path, fleet: Fleet, window: float,
              sweep: tuple[tuple[int, float | None], ...] = SWEEP, *, alone: bool = False
              ) -> dict[str, Any]:
    """Every (T, interval) of the sweep side by side, one subscription each, for `window` s
    at most; then the asyncio client's fleets (AIO_INTERVALS): with `alone`, each
    thread-per-cache pool and each asyncio fleet alone on a fresh emulator, for the fleet as
    given and for its spread-duration twin; without (the quick run), the asyncio fleets side
    by side with each other on one emulator, beside the threaded sweep on another."""
    if not alone:  # the quick run: the asyncio fleets beside the threaded sweep, to save time
        with cf.ThreadPoolExecutor(2) as pool:
            threaded = pool.submit(_side_by_side, workdir, fleet, window, sweep, "fleet-sdk")
            aio_fleets = pool.submit(_side_by_side, workdir, fleet, window, (), "fleet-aio",
                                     aio=tuple((i, AIO_LIMIT) for i in AIO_INTERVALS))
            result, aio_result = threaded.result(), aio_fleets.result()
        for fig in aio_result["runs"]:
            fig["how"] += (", side by side with the other asyncio fleets and the threaded "
                           "sweep")
        result["runs"] += aio_result["runs"]
        return result
    result = _side_by_side(workdir, fleet, window, sweep, "fleet-sdk")
    spread = Fleet(fleet.caches, fleet.duration, fleet.writes, fleet.reads, SPREAD)
    for which, f in (("same", fleet), ("spread", spread)):
        runs: list[tuple[str, tuple[tuple[int, float | None], ...],
                         tuple[tuple[float, int], ...]]] = [
            (f"fleet-sdk-{which}-{interval:g}", ((f.caches, interval),), ())
            for interval in ALONE_INTERVALS]
        runs += [(f"fleet-aio-{which}-{interval:g}", (), ((interval, AIO_LIMIT),))
                 for interval in AIO_INTERVALS]
        runs += [(f"fleet-sdk-{which}-t{t}-{interval:g}", ((t, interval),), ())
                 for t, interval in ALONE_POOLS]
        runs += [(f"fleet-aio-{which}-{interval:g}-c{limit}", (), ((interval, limit),))
                 for interval, limit in AIO_LIMIT_CHECK]
        for name, pools, aio in runs:
            one = _side_by_side(workdir, f, window, pools, name, aio=aio)
            for fig in one["runs"]:
                fig["alone"] = True
                fig["how"] += ", alone"
                (result["runs"] if which == "same" else
                 result.setdefault("spread", [])).append(fig)
    return result


def _side_by_side(workdir: Path, fleet: Fleet, window: float,
                  sweep: tuple[tuple[int, float | None], ...], name: str, *,
                  aio: tuple[tuple[float, int], ...] = ()) -> dict[str, Any]:
    """The threaded pools of `sweep` and an asyncio fleet per (polling interval, connector
    limit) of `aio`, one subscription each, on one emulator process."""
    emulator = Emulator(workdir, fleet.emulator_config(), name)
    try:
        runs = [SdkFleet(emulator.url, sub_id(300 + k), fleet.caches, t, interval)
                for k, (t, interval) in enumerate(sweep)]
        runs += [AioSdkFleet(emulator.url, sub_id(400 + k), fleet.caches, interval, limit)
                 for k, (interval, limit) in enumerate(aio)]
        for r in runs:
            r.start()
        began = time.monotonic()
        while time.monotonic() - began < window and not all(r.all_done.is_set()
                                                             for r in runs):
            time.sleep(0.5)
        elapsed = time.monotonic() - began
        out = [r.figures(elapsed) for r in runs]
        stats = emulator.stats()
        trace = emulator.trace()
    finally:
        emulator.stop()
    for fig in out:
        prefix = f"{fig['name']}-"
        reqs = [q for c, v in trace.items() if c.startswith(prefix) for q in v["requests"]]
        fig["requests"] = len(reqs)
        fig["throttled"] = sum(1 for _, _, s in reqs if s == 429)
    return {"runs": out, "window": elapsed, "throttled": stats["throttled"]}


def sdk_sweep_child(workdir: Path, fleet: Fleet, window: float, *, alone: bool = False
                    ) -> subprocess.Popen[bytes]:
    """The sweep in its own process (its threads stay off this process's GIL)."""
    out = workdir / "sdk-sweep.json"
    args = [sys.executable, str(Path(__file__).resolve()), "--sdk-sweep", str(workdir),
            "--caches", str(fleet.caches), "--duration", str(fleet.duration),
            "--writes", f"{fleet.writes[0]},{fleet.writes[1]}",
            "--reads", f"{fleet.reads[0]},{fleet.reads[1]}", "--window", str(window),
            "--out", str(out)] + (["--alone"] if alone else [])
    log = open(workdir / "sdk-sweep.log", "wb")
    return subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def sweep_result(proc: subprocess.Popen[bytes], workdir: Path) -> dict[str, Any]:
    proc.wait()
    path = workdir / "sdk-sweep.json"
    if proc.returncode != 0 or not path.exists():
        text = (workdir / "sdk-sweep.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"SDK sweep failed ({proc.returncode}): {text}")
    result: dict[str, Any] = json.loads(path.read_text())  # written by _main
    return result


# -- report ----------------------------------------------------------------------------------

def _outcomes(o: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(o.items(), key=lambda kv: -kv[1])) or "none"


def render(fleet: Fleet, runs: list[dict[str, Any]], sweep: dict[str, Any], label: str,
           spread_run: dict[str, Any] | None = None) -> Section:
    n = fleet.caches
    s = Section(f"2. Fleet flush under throttling ({label})")
    head = ["", *(("redisflush, second client at "
                   f"{r['load']:g} reads/s" if r["load"] else "redisflush") for r in runs)]
    rows: list[list[str]] = [head]
    bounds = [fleet.lower_bound(r["load"]) for r in runs]

    def row(title: str, fn: Any) -> None:
        rows.append([title, *(fn(r, b) for r, b in zip(runs, bounds, strict=False))])

    row("wall time to last event", lambda r, b: f"{r['wall']:.1f} s" if r["complete"] else
        f"> {r['wall']:.1f} s ({r['outcomes'].get('(no event)', 0)} events missing at the "
        "time limit)")
    row("lower bound (buckets)", lambda r, b: f"{b[0]:.1f} s")
    row("wall / bound (target <= 1.02x)",
        lambda r, b: f"{r['wall'] / b[0]:.3f}x {'met' if r['wall'] / b[0] <= 1.02 else 'MISSED'}")
    row("median time to event", lambda r, b: f"{r['p50']:.1f} s")
    row("lag after the operation's end, median / max",
        lambda r, b: f"{r['lag_p50']:.2f} / {r['lag_max']:.2f} s")
    row("outcomes", lambda r, b: _outcomes(r["outcomes"]))
    row("ARM requests (POST + GET)", lambda r, b: f"{r['requests']} ({r['posts']} + "
        f"{r['polls']}) = {r['requests'] / n:.2f} per cache")
    row("429 answers (target 0)",
        lambda r, b: f"{r['throttled']} {'met' if r['throttled'] == 0 else 'MISSED'}")
    row("second client's reads taken", lambda r, b: f"{r['load_taken']:.0f}" if r["load"]
        else "-")
    row("function executions (FlushTrigger + PollOrchestrator)",
        lambda r, b: f"{sum(r['invocations'].values())} ({r['invocations'].get('FlushTrigger', 0)}"
        f" + {r['invocations'].get('PollOrchestrator', 0)}) = "
        f"{sum(r['invocations'].values()) / n:.2f} per cache")
    row("CPU of the serve process", lambda r, b: f"{r['cpu']:.1f} s = "
        f"{r['cpu'] / n * 1000:.1f} ms per flush")
    s.table = rows
    best = _best(sweep)
    sweep_rows = [["SDK way (polling)", "caches done / outcomes", "mean call", "total for "
                   f"{n:,} caches", "vs bound", "429s seen", "how"]]
    for fig in sweep["runs"]:
        failed = fig["failures"] > 0
        more = "> " if fig.get("lower_bound") else ""
        sweep_rows.append([
            _pool_label(fig), f"{fig['done']} / {_outcomes(fig['outcomes'])}",
            f"{fig['mean_call']:.1f} s",
            "fails" if failed else f"{more}{fig['total']:.0f} s",
            "-" if failed else f"{more}{fig['total'] / bounds[0][0]:.1f}x", str(fig["throttled"]),
            f"calls failed ({SDK_RETRIES} retries of 429s ran out)" if failed
            else fig["how"]])
    s.extra = sweep_rows
    spread_note = _spread(s, fleet, spread_run, sweep.get("spread") or [])
    ours = runs[0]
    s.notes = [
        "Lower bound: " + "; ".join(bounds[0][1]) + ". With the second client the reads left "
        f"to us refill at {fleet.reads[1] - runs[-1]['load']:g}/s: "
        + "; ".join(bounds[-1][1][2:]) + ".",
        f"Ours: {n:,} requests dropped on the request queue at once, one `serve --local` "
        "process (default concurrency"
        + (f"; it imports {', '.join(ours['adapters'])} before serving, as the app in Azure "
           "holds them and serve --local would not: section 6 reads this run's memory"
           if ours.get("adapters") else "")
        + "), one emulator process enforcing the buckets; the "
        "clock stops at the last completion event on the topic. The second client is the "
        "emulator's read load on the same subscription for the whole run (it drains the "
        "read bucket at that rate; on an empty bucket it takes the refill first, as a client "
        "hammering at that rate would).",
        f"SDK sweep: each thread count on its own subscription of one emulator process with "
        f"the same buckets, all side by side in a child process for at most "
        f"{sweep['window']:.0f} s; a count T < {n:,} that did not finish is projected as "
        f"ceil({n:,} / T) rounds x its mean call (the buckets do not bind at those rates); "
        "a pool with every call in flight at once (T >= N, the asyncio client) that did not "
        "finish shows '> window' (its fastest calls alone would project below the bound) "
        "and is no candidate for the best. "
        "azure-core retries a 429 after its Retry-After (status reads included) 3 times by "
        "default (retry_status), then raises: the sweep's clients set retry_status and "
        f"retry_total to {SDK_RETRIES} so throttling costs time, not a failure; a count "
        "whose calls still failed is not a candidate for the best. In the full run the sweep "
        "runs alone after the other sections (with --quick, beside them).",
        f"CPU: user + system of the whole serve process from the first request to the last "
        f"event, divided by {n:,} (every thread: host loop, bus, ledger, ARM calls).",
        "Each SDK pool's client is azure-core's default transport (10 kept connections; a "
        "thread past them opens one per request): a run with a client keeping one connection "
        "per thread starved the side-by-side sweep here (mean calls doubled, the emulator "
        "serving each kept connection on a thread of its own) and took 112 s at 1000 threads, "
        "polling_interval=10, so the default stays. The thread-per-cache pools and 256 "
        "threads at intervals near the flush's length ran after the side-by-side sweep, "
        "each alone on a fresh emulator: the sweep's shorter intervals only buy 429s, and "
        "larger pools than one per cache are not possible (one call per cache); which "
        "threaded pool was fastest is said below.",
        _aio_note(sweep, bounds[0][0], ours),
        "What this leaves out: the emulator's buckets are the model of ARM's that the app's "
        "pacer also assumes (redisflush/pacing.py: writes 200 + 10/s, reads 250 + 25/s per "
        "subscription and principal); real ARM's buckets, its latency (tens of ms, not ~1 ms "
        "on loopback) and its own jitter are not here, so the 0 429s and the ratio hold for "
        "the model. Ours ran before the SDK pools, not beside them, each against its own "
        "emulator process.",
        "The emulator's throttling against ARM's (docs/design.md, \"What ARM really does\"): "
        "as ARM documents, a request sent before the Retry-After of the 429 its subscription "
        "was last given has elapsed is refused again (429, nothing taken); the 429s above "
        "count those too. Simpler than ARM: Retry-After is the whole seconds until a token "
        "is back (1 s for a write at 10/s, where the token may come back after 0.1 s), the "
        "x-ms-ratelimit-remaining-subscription-* headers are the bucket's exact count, "
        "there is no subscription-global bucket or per-region split, and the "
        "emulator knows one principal, so the SDK pools and ours are told apart only by "
        "their subscriptions.",
    ]
    if spread_note:
        s.notes.append(spread_note)
    starved = _starved(sweep, fleet.duration)
    if starved:
        print(f"WARNING: {starved}", file=sys.stderr)
        s.notes.insert(0, f"**{starved}.**")
    if best is not None:
        s.headline = [
            f"Fleet ({label}): last event {ours['wall']:.1f} s = "
            f"{ours['wall'] / bounds[0][0]:.3f}x the {bounds[0][0]:.0f} s lower bound, "
            f"{ours['throttled']} 429s; with a second client at {runs[-1]['load']:g} reads/s "
            f"{runs[-1]['wall']:.1f} s = {runs[-1]['wall'] / bounds[-1][0]:.3f}x, "
            f"{runs[-1]['throttled']} 429s. Best SDK way: {_pool_label(best)}, "
            f"{best['total']:.0f} s ({best['how'].split(',')[0].split(' ')[0]}) = "
            f"{best['total'] / bounds[0][0]:.2f}x the bound, "
            f"{best['total'] / ours['wall']:.2f}x ours, {best['throttled']} 429s."
            + _spread_headline(s.data_spread, fleet)
            + (f" **{starved}.**" if starved else "")]
    s.data = {"n": n, "runs": runs, "bounds": [b[0] for b in bounds], "sweep": sweep,
              "best": best, "spread": s.data_spread}
    return s


def _spread_headline(data: dict[str, Any] | None, fleet: Fleet) -> str:
    if not data:
        return ""
    ours, best = data["ours"], data["best"]
    text = (f" Flushes spread over {fleet.duration:g}-{fleet.duration + SPREAD * 0.9:g} s: "
            f"ours {ours['wall']:.1f} s = {ours['wall'] / data['bound']:.3f}x the bound "
            f"(an oracle knowing every duration), {ours['wall'] / data['in_order']:.3f}x the "
            f"last end when POSTed in the order sent, {ours['throttled']} 429s")
    if best is not None:
        text += (f"; best SDK way {_pool_label(best)}, {best['total']:.1f} s = "
                 f"{best['total'] / ours['wall']:.2f}x ours, {best['throttled']} 429s")
    return text + "."


def _spread(s: Section, fleet: Fleet, ours: dict[str, Any] | None,
            pools: list[dict[str, Any]]) -> str | None:
    """The spread-duration fleet: ours against the SDK ways run alone, its own bounds."""
    if ours is None:
        return None
    spread = Fleet(fleet.caches, fleet.duration, fleet.writes, fleet.reads, SPREAD)
    bound, why = spread.lower_bound()
    in_order = spread.in_order_bound()
    rows = [["flushes of " f"{fleet.duration:g}-{fleet.duration + SPREAD * 0.9:g} s",
             "last event", "vs bound (oracle) / vs POSTs in the order sent", "429s",
             "ARM requests per cache", "outcomes"]]
    rows.append(["redisflush", f"{ours['wall']:.1f} s" if ours["complete"] else
                 f"> {ours['wall']:.1f} s", f"{ours['wall'] / bound:.3f}x / "
                 f"{ours['wall'] / in_order:.3f}x", str(ours["throttled"]),
                 f"{ours['requests'] / fleet.caches:.2f}", _outcomes(ours["outcomes"])])
    for fig in pools:
        failed = fig["failures"] > 0
        more = "> " if fig.get("lower_bound") else ""
        rows.append([f"SDK {_pool_label(fig)}",
                     "fails" if failed else f"{more}{fig['total']:.1f} s",
                     "-" if failed else f"{more}{fig['total'] / bound:.3f}x / "
                     f"{fig['total'] / in_order:.3f}x", str(fig["throttled"]),
                     f"{fig['requests'] / fleet.caches:.2f}", _outcomes(fig["outcomes"])])
    s.extra2 = rows
    best = _best({"runs": pools})
    s.data_spread = {"ours": ours, "bound": bound, "in_order": in_order,
                     "best": best}
    return ("Spread fleet (the table above): the same buckets, each cache's flush "
            f"{fleet.duration:g} s + {SPREAD:g} x its last digit / 10, so the end of an "
            "operation cannot be told from the others'. " + "; ".join(why) + f". Sent in "
            f"order, the last operation ends at {in_order:.1f} s at the earliest; neither side "
            "knows the durations.")


def _pool_label(fig: dict[str, Any]) -> str:
    interval = fig.get("interval")
    who = (f"asyncio client ({fig['limit'] or 'unlimited'} connections)"
           if fig.get("kind") == "asyncio" else f"{fig['threads']} threads")
    return who + (f", polling_interval={interval:g}" if interval else ", default polling")


def _aio_note(sweep: dict[str, Any], bound: float, ours: dict[str, Any]) -> str:
    """Which SDK way is best in this run: the asyncio client's fastest fleet without
    failures against the threaded pools' fastest, each against the bound and ours."""
    aio = _best({"runs": [f for f in sweep["runs"] if f.get("kind") == "asyncio"]})
    threaded = _best({"runs": [f for f in sweep["runs"] if f.get("kind") != "asyncio"]})
    text = ("The asyncio client (azure.mgmt.redis.aio on aiohttp, sdk_side.AioSdkFleet): "
            "all N begin_flush_cache() + result() as coroutines in one event loop on one "
            f"client, the same retry tuning ({SDK_RETRIES}), its aiohttp connector keeping at "
            f"most {AIO_LIMIT or 'unlimited'} connections ({AIO_LIMIT_NOTE}), at "
            f"polling_interval {', '.join(f'{i:g}' for i in AIO_INTERVALS)} s. ")
    if aio is None:
        return text + "No asyncio fleet finished without failures in this run."
    text += (f"Its fastest without failures: polling_interval={aio['interval']:g}, "
             f"{aio['total']:.1f} s ({aio['how'].split(',')[0]}) = {aio['total'] / bound:.2f}x "
             f"the bound, {aio['total'] / ours['wall']:.2f}x ours, {aio['throttled']} 429s"
             + ("." if threaded is None else ""))
    if threaded is not None:
        text += (f"; the fastest threaded pool: {_pool_label(threaded)}, "
                 f"{threaded['total']:.1f} s ({threaded['how'].split(',')[0]}) = "
                 f"{threaded['total'] / bound:.2f}x the bound. ")
        best = _best(sweep)  # as the headline picks it: a measured total before a projection
        winner = ("the asyncio client" if best is not None and best.get("kind") == "asyncio"
                  else f"the threaded client ({_pool_label(threaded)})")
        text += f"The best SDK way in this run is {winner}."
    by_interval = collections.defaultdict(list)
    for f in sweep["runs"]:
        if f.get("kind") == "asyncio":
            by_interval[f["interval"]].append(f)
    for interval, figs in sorted(by_interval.items()):
        if len(figs) > 1:
            text += (f" The connector's limit at polling_interval={interval:g}: " + ", ".join(
                f"{f['limit'] or 'unlimited'}"
                + (" (aiohttp's default)" if f["limit"] == 100 else "") + ": "
                + ("fails" if f["failures"] else
                   f"{'> ' if f.get('lower_bound') else ''}{f['total']:.1f} s")
                for f in sorted(figs, key=lambda f: f["limit"] or 10**9)) + ".")
    return text


SDK_DEFAULT_POLL = 30.0  # azure-core's wait after each answer without Retry-After
STARVED = 1.5           # a mean call this many times what the polling alone makes it


def _starved(sweep: dict[str, Any], duration: float) -> str | None:
    """A check of the run itself: at the default polling and with no 429s a call is its
    30 s waits and little else (ceil(d / 30) of them), so a mean call far above that means the
    sweep's threads or the emulator were starved of CPU, and its totals would flatter ours."""
    expected = math.ceil(duration / SDK_DEFAULT_POLL) * SDK_DEFAULT_POLL
    calm = [f for f in sweep["runs"] if not f.get("interval") and f["throttled"] == 0
            and f["done"] and f.get("kind") != "asyncio"]
    if not calm:
        return None
    smallest = min(calm, key=lambda f: f["threads"])
    if smallest["mean_call"] <= STARVED * expected:
        return None
    return (f"the SDK sweep ran starved: {smallest['threads']} threads at the default polling "
            f"took {smallest['mean_call']:.0f} s a call with no 429s, where the polling alone "
            f"makes it about {expected:.0f} s; its totals are slower than a quiet machine "
            "gives and flatter ours: do not compare them, rerun")


def _best(sweep: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest pool without failures: a measured one when any finished. A pool with every
    call in flight at once (T >= N threads, the asyncio fleet) that did not finish is no
    candidate: its total is only known to be more than the window."""
    ok = [f for f in sweep["runs"] if f["failures"] == 0 and f["done"]
          and not f.get("lower_bound")]  # no total known, only that it is more
    finished = [f for f in ok if f["finished"]]
    return min(finished or ok, key=lambda f: f["total"]) if ok else None


def _main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sdk-sweep", type=Path, required=True)
    parser.add_argument("--caches", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--writes", required=True)
    parser.add_argument("--reads", required=True)
    parser.add_argument("--window", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--alone", action="store_true")
    a = parser.parse_args()
    w, r = a.writes.split(","), a.reads.split(",")
    fleet = Fleet(a.caches, a.duration, (int(w[0]), float(w[1])), (int(r[0]), float(r[1])))
    result = sdk_sweep(a.sdk_sweep, fleet, a.window, alone=a.alone)
    a.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
