"""Section 6: memory, ours against the SDK way, in three places.

1. A fleet: VmRSS of the whole `serve --local` process sampled every 0.1 s while it flushes
   the fleet of section 2 (bench/fleet.py `run_ours` samples it), its VmHWM, its RSS at rest
   before the first request and 2 s after the last event; against the SDK's fleet process:
   `ThreadPoolExecutor(T)` x `begin_flush_cache().result()` (fleet.SdkFleet, as section 2
   runs it) alone in a child process (`python bench/sdk_side.py --fleet ...`, which imports
   no redisflush), sampled the same way from here, at rest after its imports and client,
   then during its fleet. Pools: a
   thread per cache at polling_interval=10 (section 2's fastest threaded fleet), 256
   threads at polling_interval=10 (as fast with a quarter of the threads, run alone in
   section 2 since a review found it) and the asyncio client
   (azure.mgmt.redis.aio, every call a coroutine in one event loop) at its fastest setting
   (AIO_MEMORY_INTERVAL, sdk_side.AIO_LIMIT connections).
2. One invocation as the Functions worker sees it: VmRSS after each phase of section 4's
   cold-start interpreters (import, build, first token + ARM call) and their VmHWM.
3. One request of 50 caches (REDISFLUSH_MAX_TARGETS, the most a request may name), in a fresh
   interpreter each (`python bench/memory.py --fifty ours|sdk`): ours runs FlushTrigger and
   then each PollOrchestrator step of the chain as the local host would (messages from the
   local bus), with tracemalloc's peak per invocation and what stays allocated after it;
   the SDK way holds 50 `begin_flush_cache` pollers (an LROPoller each, with its thread) for
   the flush's length: tracemalloc's figure for creating them and holding them through two
   polling rounds. Each side first serves a one-cache warm-up (lazy imports, first token).
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RG,
    ROOT,
    Emulator,
    RssSampler,
    Section,
    median,
    proc_status,
    sdk_client,
    settled_rss,
    sub_id,
)

FIFTY_SUB = sub_id(60)
SDK_FLEET_SUB = sub_id(61)
FIFTY = 50           # REDISFLUSH_MAX_TARGETS: the largest request the rules allow (README)
FIFTY_DURATION = 4.0  # the 50 caches' flushes: a few poll steps, each reading the 50
KB = 1024
# the asyncio SDK fleet's fastest setting on section 2's fleet (bench/fleet.py AIO_INTERVALS,
# each alone): section 6 runs before section 2's sweep, so the setting is fixed here
AIO_MEMORY_INTERVAL = 10.0


# -- 1. the fleet: the SDK's process ------------------------------------------------------

def sdk_fleet(workdir: Path, fleet: Any, threads: int, interval: float | None,
              window: float, name: str, aio_limit: int | None = None) -> dict[str, Any]:
    """One SDK pool alone on its own emulator, in a child process sampled from here; with
    `aio_limit`, the asyncio client's fleet (every call a coroutine) instead of threads."""
    emulator = Emulator(workdir, fleet.emulator_config(), name)
    log = open(workdir / f"{name}-child.log", "wb")
    # bench/sdk_side.py imports no redisflush: the child holds what an SDK process would
    args = [sys.executable, str(Path(__file__).resolve().with_name("sdk_side.py")), "--fleet",
            emulator.url, "--sub", SDK_FLEET_SUB, "--caches", str(fleet.caches),
            "--threads", str(threads), "--window", str(window)]
    if aio_limit is not None:
        args += ["--aio", str(aio_limit)]
    if interval:
        args += ["--interval", str(interval)]
    proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"SDK fleet child failed: {_tail(workdir / f'{name}-child.log')}")
        idle = settled_rss(proc.pid)
        sampler = RssSampler(proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        rss = sampler.stop()
        if not line.startswith("{"):
            raise RuntimeError(f"SDK fleet child failed: {_tail(workdir / f'{name}-child.log')}")
        figures = json.loads(line)
        rss.update(idle=idle, after=settled_rss(proc.pid, 2.0))
        proc.stdin.close()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        emulator.stop()
    return {**figures, "rss": rss}


def _leanest_of_fastest(threaded: list[dict[str, Any]], slack: float = 1.02
                        ) -> dict[str, Any]:
    """The threaded pool the headline compares with: the lowest peak among the pools that
    finished within `slack` of the fastest's time, so a pool as fast with fewer threads is
    not hidden behind a thread per cache (the first pool when none finished)."""
    done = [p for p in threaded if p.get("finished") and not p.get("failures")]
    if not done:
        return threaded[0]
    fastest = min(p["total"] for p in done)
    return min((p for p in done if p["total"] <= slack * fastest),
               key=lambda p: p["rss"]["hwm"])


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-1500:] if path.exists() else "(no log)"


# -- 3. one request of 50 caches -----------------------------------------------------------

def fifty(workdir: Path) -> dict[str, Any]:
    """Ours and the SDK way for one request of 50 caches, each in a fresh interpreter."""
    emulator = Emulator(workdir, {"throttling": {"enabled": False},
                                  "caches": {"*": {"duration": FIFTY_DURATION}}}, "fifty")
    out: dict[str, Any] = {}
    try:
        for kind in ("ours", "sdk"):
            local_dir = Path(tempfile.mkdtemp(prefix=f"fifty-{kind}-", dir=workdir))
            env = {**os.environ, "REDISFLUSH_LOCAL_DIR": str(local_dir),
                   "REDISFLUSH_ARM_ENDPOINT": emulator.url}
            from redisflush.local.function_folders import read_values
            env.update(read_values(ROOT, env))
            run = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--fifty",
                                  kind, "--arm", emulator.url], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=300)
            lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
            if run.returncode != 0 or not lines:
                raise RuntimeError(f"50-cache {kind} case failed: {run.stderr[-1500:]}")
            out[kind] = json.loads(lines[-1])
    finally:
        emulator.stop()
    return out


class _Trace:
    """tracemalloc over one whole request, from just before its first invocation: each
    invocation's peak and what is still allocated after it (and a collection), both above
    what was allocated before the request. Held is cumulative, as the SDK side's is: what the
    trigger and every step so far left behind, not only the last step's share."""

    def __init__(self, measure: bool) -> None:
        self.measure = measure
        self.base = 0

    def start(self) -> None:
        if self.measure:
            gc.collect()
            tracemalloc.start()
            self.base = tracemalloc.get_traced_memory()[0]

    def invoke(self, fn: Any, arg: Any) -> int:
        """Run fn(arg); its peak above the request's base (bytes)."""
        if not self.measure:
            fn(arg)
            return 0
        tracemalloc.reset_peak()
        fn(arg)
        return tracemalloc.get_traced_memory()[1] - self.base

    def held(self) -> int:
        """Still allocated above the request's base after a collection (bytes)."""
        if not self.measure:
            return 0
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - self.base

    def stop(self) -> None:
        if self.measure:
            tracemalloc.stop()


def _ids(prefix: str, n: int) -> list[str]:
    return [f"/subscriptions/{FIFTY_SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/redis/"
            f"{prefix}-{i:02d}" for i in range(n)]


def _fifty_ours() -> dict[str, Any]:
    import FlushTrigger
    import PollOrchestrator
    from redisflush import functions
    from redisflush.client import decode_event, prepare
    from redisflush.local.app import local_app
    from redisflush.local.host import binding_message
    from redisflush.local.runtime import open_bus
    from redisflush.settings import Settings

    settings = Settings.from_env()
    functions.install(local_app(settings))
    bus = open_bus(settings)
    topic = settings.events_topic
    bus.ensure_subscription(topic, "mem")
    events = f"{topic}/subscriptions/mem"

    def drain_events() -> int:
        """Per-cache outcome events read off the topic (by the bench, not the app)."""
        outcomes = 0
        for m in bus.receive_wait(events, 0.05, max_count=200, poll_interval=0.01):
            bus.complete(m)
            data = (decode_event(m.body) or {}).get("data") or {}
            if data.get("status") and data.get("resourceId"):
                outcomes += 1
        return outcomes

    def one_request(prefix: str, n: int, measure: bool) -> dict[str, Any]:
        body = {"resourceIds": _ids(prefix, n), "reason": "benchmark",
                "requestedBy": "bench/memory.py"}
        prepared: Any = prepare(body, settings, request_id=str(uuid.uuid4()), reply=False,
                                now=dt.datetime.now(dt.UTC))
        bus.send(settings.request_queue, [prepared.message])
        [received] = bus.receive(settings.request_queue)
        msg = binding_message(received)
        trace = _Trace(measure)
        trace.start()
        peak = trace.invoke(FlushTrigger.main, msg)
        bus.complete(received)
        del received, msg                      # the host lets go of a message once done
        first = (peak, trace.held())
        steps: list[tuple[int, int]] = []
        bodies: list[int] = []
        done = 0
        while done < n:
            got = bus.receive_wait(settings.poll_queue, 30.0, poll_interval=0.02)
            if not got:
                break
            poll = got[0]
            bodies.append(len(poll.body))
            peak = trace.invoke(PollOrchestrator.main, binding_message(poll))
            bus.complete(poll)
            del got, poll
            done += drain_events()             # its locals go: the bench's, not the app's
            steps.append((peak, trace.held()))
        trace.stop()
        return {"trigger": first, "steps": steps, "bodies": bodies, "events": done}

    one_request("warm", 1, measure=False)
    rss0 = proc_status(os.getpid()).get("VmRSS", 0)
    result = one_request("m50", FIFTY, measure=True)
    result["rss_delta"] = proc_status(os.getpid()).get("VmRSS", 0) - rss0
    result["threads"] = threading.active_count()
    return result


def _fifty_sdk(arm: str) -> dict[str, Any]:
    client = sdk_client(arm, FIFTY_SUB)
    warm = client.redis.begin_flush_cache(RG, "sdkwarm-00", enforce_https=False,
                                          polling_interval=1)
    warm.result()
    rss0 = proc_status(os.getpid()).get("VmRSS", 0)
    threads0 = threading.active_count()
    pollers: list[Any] = []

    def create() -> None:
        pollers.extend(client.redis.begin_flush_cache(RG, f"sdk50-{i:02d}", enforce_https=False,
                                                      polling_interval=1)
                       for i in range(FIFTY))

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    create()
    created_peak = tracemalloc.get_traced_memory()[1] - base
    created = tracemalloc.get_traced_memory()[0] - base
    threads = threading.active_count() - threads0
    tracemalloc.reset_peak()
    time.sleep(2.5)                        # two polling rounds in the pollers' threads
    polling_peak = tracemalloc.get_traced_memory()[1] - base
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    rss_held = proc_status(os.getpid()).get("VmRSS", 0) - rss0
    statuses = [p.status() for p in pollers]
    for p in pollers:
        p.wait(FIFTY_DURATION + 10)
    return {"created_peak": created_peak, "created": created, "polling_peak": polling_peak,
            "held": held, "threads": threads, "rss_delta": rss_held,
            "statuses": sorted(set(statuses)),
            "succeeded": sum(1 for p in pollers if p.status().lower() == "succeeded")}


# -- the section ------------------------------------------------------------------------------

def _span(lo: float, hi: float) -> str:
    return f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}"


def _mib(kb: float) -> str:
    return f"{kb / KB:.1f} MiB"


def _kib(b: float) -> str:
    return f"{b / KB:.0f} KiB"


def render(ours: dict[str, Any], pools: list[dict[str, Any]], cold: dict[str, Any],
           fifty_data: dict[str, Any], n: int, label: str) -> Section:
    s = Section("6. Memory: the serve process in a fleet, one invocation, a request of 50 "
                "caches")
    o = ours["rss"]
    ours_rise = o["hwm"] - o["idle"]

    def pool_name(p: dict[str, Any]) -> str:
        iv = p.get("interval")
        who = (f"SDK asyncio client: {p.get('limit') or 'unlimited'} connections, "
               if p.get("kind") == "asyncio" else f"SDK: {p['threads']} threads, ")
        return who + (f"polling_interval={iv:g}" if iv else "default polling")

    threaded = [p for p in pools if p.get("kind") != "asyncio"]
    aio = next((p for p in pools if p.get("kind") == "asyncio"), None)

    head = ["", "redisflush `serve --local`", *(pool_name(p) for p in pools)]
    rows = [head]

    def row(title: str, fn: Any, ratio: Any = None) -> None:
        cells = [fn(ours)]
        for p in pools:
            text = fn(p)
            if ratio is not None and ratio(ours):
                text += f" ({ratio(p) / ratio(ours):.2f}x ours)"
            cells.append(text)
        rows.append([title, *cells])

    row("at rest before the first request (VmRSS)", lambda r: _mib(r["rss"]["idle"]),
        lambda r: r["rss"]["idle"])
    row("peak (VmHWM)", lambda r: f"**{_mib(r['rss']['hwm'])}**", lambda r: r["rss"]["hwm"])
    row("median while flushing (VmRSS every 0.1 s)", lambda r: _mib(r["rss"]["median"]),
        lambda r: r["rss"]["median"])
    row("2 s after the last outcome", lambda r: _mib(r["rss"]["after"]),
        lambda r: r["rss"]["after"])
    row("peak - at rest", lambda r: _mib(r["rss"]["hwm"] - r["rss"]["idle"]),
        lambda r: r["rss"]["hwm"] - r["rss"]["idle"])
    row(f"per cache: (peak - at rest) / {n:,}",
        lambda r: f"{(r['rss']['hwm'] - r['rss']['idle']) / n:.1f} KiB",
        lambda r: r["rss"]["hwm"] - r["rss"]["idle"])
    row("threads (most seen)", lambda r: str(r["rss"]["threads"]))
    row("last outcome after", lambda r: f"{r['wall']:.1f} s" if "wall" in r else
        (f"{r['total']:.1f} s" if r.get("finished") else
         f"not done ({r['done']} of {n:,} in the window)"))
    s.table = rows

    # 2. one invocation
    label_of = {"bare": "bare interpreter (+ json, to report)",
                "ours": "redisflush (local token)",
                "ours_mi": "redisflush, managed identity + Azure SDK imports",
                "sdk": "SDK: azure.functions + azure.identity + azure.mgmt.redis"}
    rss = cold["rss"]
    bare = rss["bare"]["peak (VmHWM)"]
    sdk_end = rss["sdk"]["peak (VmHWM)"]
    phases = ["import", "Azure adapters' SDK imports", "build app",
              "first request (token + POST + schedule)"]
    extra = [["one cold invocation (VmRSS after each phase)", *phases, "peak (VmHWM)",
              "peak above the bare interpreter", "vs SDK"]]
    for c in ("bare", "ours", "ours_mi", "sdk"):
        m = rss[c]
        peak = m["peak (VmHWM)"]
        vs = "-" if c in ("bare", "ours") else f"{(peak - bare) / (sdk_end - bare):.2f}x " \
            f"above bare ({peak / sdk_end:.2f}x whole)"
        extra.append([label_of[c], *(_mib(m[p]) if p in m else "-" for p in phases),
                      f"**{_mib(peak)}**", "-" if c == "bare" else _mib(peak - bare), vs])
    s.extra = extra

    # 3. fifty caches
    fo, fs = fifty_data["ours"], fifty_data["sdk"]
    step_peaks = [p for p, _ in fo["steps"]]
    held_all = [fo["trigger"][1], *(k for _, k in fo["steps"])]
    ours_held = max(held_all)
    ours_peak = max([fo["trigger"][0], *step_peaks])
    extra2 = [[f"one request of {FIFTY} caches (tracemalloc, Python allocations)",
               "redisflush", f"SDK: {FIFTY} begin_flush_cache pollers", "SDK / ours"],
              ["FlushTrigger (validate, ledger, 50 POSTs, the poll message): peak",
               _kib(fo["trigger"][0]), "", ""],
              [f"PollOrchestrator steps ({len(step_peaks)}, each reading the operations "
               "due): peak, median / max",
               f"{_kib(median(step_peaks))} / {_kib(max(step_peaks, default=0))}", "", ""],
              ["creating the 50 operations (POSTs): peak",
               _kib(fo["trigger"][0]), _kib(fs["created_peak"]),
               f"{fs['created_peak'] / fo['trigger'][0]:.2f}x"],
              ["peak of any one invocation / of two SDK polling rounds",
               _kib(ours_peak), _kib(fs["polling_peak"]),
               f"{fs['polling_peak'] / ours_peak:.2f}x"],
              ["held in the process while the flushes run (after a collection, above "
               "before the request)",
               f"{_kib(ours_held)} at most, after the trigger or any step (after the last: "
               f"{_kib(held_all[-1])}); the request's state travels in the "
               f"poll message ({median(fo['bodies']) / KB:.1f} KiB, on the bus)",
               f"{_kib(fs['held'])} = {fs['held'] / FIFTY / KB:.1f} KiB per poller, "
               f"+ {fs['threads']} threads", f"{fs['held'] / ours_held:.0f}x"
               if ours_held > 0 else "-"],
              ["VmRSS rise of the process over the request (RSS; tracemalloc's own "
               "records included)",
               _mib(fo["rss_delta"]), _mib(fs["rss_delta"]) + " (while held)", ""]]
    s.extra2 = extra2

    best = _leanest_of_fastest(threaded)
    b = best["rss"]
    s.headline = [
        f"Memory ({label}): the whole serve process peaks at {_mib(o['hwm'])} "
        f"({_mib(ours_rise)} over its {_mib(o['idle'])} at rest = "
        f"{ours_rise / n:.1f} KiB per cache), against {_mib(b['hwm'])} for the SDK fleet "
        f"process ({pool_name(best)[5:]}; {_mib(b['hwm'] - b['idle'])} over rest = "
        f"{(b['hwm'] - b['idle']) / n:.1f} KiB per cache): {b['hwm'] / o['hwm']:.2f}x ours "
        f"whole, {(b['hwm'] - b['idle']) / max(1, ours_rise):.2f}x over rest"
        + ("" if aio is None else
           f"; the SDK's asyncio client ({pool_name(aio)[len('SDK asyncio client: '):]}) "
           f"peaks at {_mib(aio['rss']['hwm'])} = {aio['rss']['hwm'] / o['hwm']:.2f}x ours "
           f"whole, {(aio['rss']['hwm'] - aio['rss']['idle']) / max(1, ours_rise):.2f}x "
           "over rest")
        + ". One cold "
        f"invocation peaks at {_mib(rss['ours_mi']['peak (VmHWM)'])} (managed identity + "
        f"Azure SDK imports) against the SDK's {_mib(sdk_end)} "
        f"({rss['ours_mi']['peak (VmHWM)'] / sdk_end:.2f}x). A request of {FIFTY} caches: "
        f"one invocation's Python peak {_kib(ours_peak)}, at most {_kib(ours_held)} held "
        f"between invocations, against {_kib(fs['held'])} held by {FIFTY} SDK pollers for "
        "the flushes' length."]
    adapters = rss["ours_mi"].get("Azure adapters' SDK imports", 0) - \
        rss["ours_mi"].get("import", 0)
    s.notes = [
        "Fleet: VmRSS of each process from /proc every 0.1 s and its VmHWM (the kernel's "
        "peak, so no spike between samples is missed), from the moment the first request is "
        "sent (ours) or the pool starts (the SDK) to the last outcome; 'at rest' is the median "
        "over 1 s after start-up (ours: the serve ready, its host polling an empty bus, the "
        "Azure adapters' SDKs imported; the "
        "SDK: azure.mgmt.redis imported and the pool's client built, in a process that imports no "
        "redisflush or bench code). Ours is the fleet run of "
        "section 2 (alone, no second client); each SDK pool runs alone in its own process "
        "against its own emulator afterwards, with the same buckets. Per cache = (peak - at "
        "rest) / N: what the fleet adds, not what one cache would cost alone.",
        "What the fleet figures count: the whole process's resident pages (Python heap, "
        "interpreter, shared libraries as far as mapped in, every thread's touched stack). "
        "What they leave out: the emulator (ARM) runs in another process and is not counted "
        "on either side; ours keeps its queued and scheduled messages in the local bus's "
        "SQLite file (the page cache, not the process; in Azure they are in Service Bus) and "
        "its ledger likewise, while the SDK keeps each operation in its threads; "
        + (f"ours' serve imports the Azure adapters' SDKs before serving "
           f"({', '.join(ours['adapters'])}: the app holds them in Azure, serve --local "
           "alone would not load them; in the one-invocation table above azure.servicebus "
           f"and azure.data.tables alone take about {_mib(adapters)}, azure.identity comes "
           "with the first token; all of them about 20 MiB, measured apart), so its "
           "whole-process rows carry them, though not their clients' buffers and "
           "connections (serve --local opens none); the SDK's fleet processes import "
           "azure.identity too (an SDK function in Azure takes its token from it), "
           if ours.get("adapters") else
           "ours' serve --local loads none of the Azure adapters (azure-servicebus, "
           "azure-data-tables, azure-identity and their clients' buffers), which the app "
           "holds in Azure: the one-invocation table above puts their imports alone at about "
           f"{_mib(adapters)}, so ours' whole-process rows are low by at least that much "
           "there (its rise less so), ")
        + "while its local host's bus polling and dispatch, the .NET "
        "host's work in Azure, count against it here; thread "
        "stacks are reserved virtually (8 MiB each by default) and count only as touched; "
        "memory freed inside the process but kept by the allocator still counts, so the "
        "'after' row is an upper bound on what is kept. Only the serve process exists "
        "locally: in Azure the Functions host (.NET) and the Python worker's own gRPC "
        "machinery are other processes or added on top, the same for an SDK-based function.",
        "Ours' '2 s after' row stays at its peak: besides what the allocator keeps, the "
        "process holds two caches of at most 4096 entries each, the ARM client's request "
        "targets (redisflush/arm.py, cleared when full) and is_trusted's checked poll URLs "
        "(redisflush/core/trust.py, least recently used out). Checked apart (50-cache "
        "requests back to back in one process, tracemalloc after each): they grow by 2-3.3 "
        "KiB per operation until full (at most about 7 MiB of Python allocations) and no "
        "further: bounded, nothing kept per request for good.",
        "One invocation: section 4's cold-start interpreters (median of its rounds), VmRSS "
        "read from /proc/self/status after each phase and VmHWM at the end. The Functions "
        "worker already holds the interpreter and azure.functions before it imports a "
        "function, so the figure the app adds is the one above the bare interpreter; ours' "
        "'first request' also holds the test harness's message building (a few imports, "
        "left out of the timing).",
        f"A request of {FIFTY} caches (REDISFLUSH_MAX_TARGETS, the most a request may name): "
        "each side in a fresh interpreter after a one-cache warm-up, against an emulator "
        f"with {FIFTY_DURATION:g} s flushes and no throttling. tracemalloc counts Python "
        "allocations only (not the interpreter, C libraries' own buffers, or thread "
        "stacks); 'peak' is the most allocated at once during the invocation above what "
        "was allocated before it, 'held' what is still allocated after it and a collection, "
        "above what was allocated before the request (for ours the most over the trigger and "
        "every step, cumulative like the SDK's figure; the bench's own bus reading is let go "
        "first) (ours: the in-flight table and read budget per subscription, the two bounded "
        "caches of the note above filling, sockets kept open; the SDK: the pollers with "
        "their responses, their threads' frames). Ours "
        "keeps no request in the process between steps: each step starts from the poll "
        "message's state; the SDK's pollers live as long as the flush, each with a thread.",
    ]
    per_thread = [(p["rss"]["hwm"] - p["rss"]["idle"]) / max(1, p["threads"])
                  for p in threaded]
    s.notes.insert(1, (
        "The SDK's memory grows with its pool, not with the fleet: each worker thread plus an "
        "LROPoller thread per call in flight, so a pool of T threads runs up to 2T (" +
        ", ".join(f"{pt:.0f} KiB of rise per pool thread with {p['threads']} "
                  f"({p['rss']['threads']} threads seen)"
                  for pt, p in zip(per_thread, threaded, strict=True)) +
        "). A pool small enough to stay within ours' rise "
        f"({_mib(ours_rise)}) has about "
        f"{_span(ours_rise / max(per_thread), ours_rise / min(per_thread))} threads: "
        "section 2's 16- and 32-thread pools are the nearest measured, and they take many "
        "times the bound (a call lasts the flush plus its polling, so 1,000 caches take "
        "about 1,000 / T calls' length); the pools "
        "here are a thread per cache and 256 threads, both at polling_interval=10 (section "
        "2 runs each alone too); the headline sets ours against the one with the lower peak "
        "among those that finished within 2% of the fastest's time: on the SDK's side a "
        "smaller pool saves memory and, past some size, costs time."
        + ("" if aio is None else _aio_memory_note(aio, threaded, o, n))))
    s.data = {"n": n, "ours": ours["rss"], "pools": [{**p["rss"], "threads_pool": p["threads"],
                                                       "kind": p.get("kind", "threads"),
                                                       "interval": p.get("interval")}
                                                      for p in pools],
              "cold": rss, "fifty": fifty_data}
    return s


def _aio_memory_note(aio: dict[str, Any], threaded: list[dict[str, Any]],
                     ours: dict[str, Any], n: int) -> str:
    """The asyncio client's fleet process against ours and the threaded pools."""
    a = aio["rss"]
    rise = a["hwm"] - a["idle"]
    done = (f"its last outcome after {aio['total']:.1f} s" if aio.get("finished") else
            f"{aio['done']} of {n:,} done in the window")
    failed = f", {aio['failures']} calls failed" if aio.get("failures") else ""
    return (
        " The SDK's asyncio client (azure.mgmt.redis.aio on aiohttp, bench/sdk_side.py "
        f"AioSdkFleet: all {n:,} calls as coroutines in one event loop on one client, "
        f"polling_interval={aio['interval']:g}, its connector keeping at most "
        f"{aio.get('limit') or 'unlimited'} connections; section 2's fastest asyncio "
        f"setting, {done}{failed}) holds a call in flight as a coroutine and its poller, "
        f"not two threads ({a['threads']} threads seen): it peaks at {_mib(a['hwm'])} "
        f"({_mib(rise)} over its {_mib(a['idle'])} at rest = {rise / n:.1f} KiB per cache), "
        f"{a['hwm'] / ours['hwm']:.2f}x ours whole, "
        f"{rise / max(1, ours['hwm'] - ours['idle']):.2f}x ours over rest, against "
        + ", ".join(f"{_mib(p['rss']['hwm'])} for {p['threads']} threads"
                    for p in threaded)
        + " (the asyncio process's peak is "
        + ", ".join(f"{a['hwm'] / p['rss']['hwm']:.2f}x" for p in threaded)
        + " theirs). Most of its rise is azure-core's retry history, not the harness "
        "(tests/infra/test_bench_aio_fleet.py checks nothing of a finished call is kept): "
        "its RetryPolicy keeps every 429 it retries, a copy of the request and the whole "
        "aiohttp response, on the poller's initial response until the flush ends, and all "
        "its calls are in flight at once, each gathering 429s while the write bucket "
        "refills (measured apart at 200 caches: without those responses the rise fell from "
        "197 to 49 KiB per cache; azure-core's default retries fail most flushes instead).")


def _main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fifty", choices=("ours", "sdk"))
    parser.add_argument("--arm")
    a = parser.parse_args()
    result = _fifty_ours() if a.fifty == "ours" else _fifty_sdk(a.arm)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
