"""Section 3: CPU per invocation (warm) and the memory of `serve --local` with N in flight.

CPU: the function folders' own `main` is called in this process with the message the
Python worker would pass, against an ARM emulator in another process, and timed with
`time.thread_time()` (CPU of the invoking thread only: waiting for the emulator's answer and
other threads are excluded). Two variants: the bus stubbed (the app's own cost: parse,
decide, HTTP client, JSON) and the local SQLite bus (plus what sending costs locally).

Memory: a `serve --local` process against an emulator process (throttling off, flushes of
600 s so nothing finishes); VmHWM/VmRSS from /proc/PID/status at 100 and at N operations in
flight. The state of every operation lives in its scheduled poll message, so it should stay flat.
"""
from __future__ import annotations

import datetime as dt
import importlib
import statistics
import time
from pathlib import Path
from typing import Any

from common import (TOKEN, Emulator, Section, Serve, bench_settings, proc_status,
                    request_message, sub_id)
from redisflush import functions
from redisflush.app import FlushApp
from redisflush.arm import ArmClient, StaticToken
from redisflush.bus import OutboundMessage, ReceivedMessage
from redisflush.local.host import binding_message
from redisflush.local.runtime import open_bus


class CaptureBus:
    """The Bus port: keeps what the app sends (and passes it on to `inner`, if any)."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.sent: list[tuple[str, OutboundMessage]] = []

    def send(self, queue: str, messages: list[OutboundMessage]) -> None:
        if self.inner is not None:
            self.inner.send(queue, messages)
        self.sent.extend((queue, m) for m in messages)

    def publish(self, topic: str, messages: list[OutboundMessage]) -> None:
        if self.inner is not None:
            self.inner.publish(topic, messages)
        self.sent.extend((topic, m) for m in messages)


def _delivered(m: OutboundMessage, seq: int) -> Any:
    now = dt.datetime.now(dt.timezone.utc)
    received = ReceivedMessage(
        body=m.body, message_id=m.message_id, sequence_number=seq, delivery_count=1,
        enqueued_at=now, lock_token="bench", locked_until=now + dt.timedelta(seconds=30),
        content_type=m.content_type, correlation_id=m.correlation_id,
        reply_to=m.reply_to, reply_to_session_id=m.reply_to_session_id,
        application_properties=dict(m.application_properties), scheduled_at=m.scheduled_at)
    return binding_message(received)


def _timed(main: Any, messages: list[Any]) -> tuple[list[float], list[float]]:
    cpu, wall = [], []
    for msg in messages:
        c0, w0 = time.thread_time(), time.perf_counter()
        main(msg)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return cpu, wall


def cpu_per_invocation(workdir: Path, n: int, warm: int = 40) -> dict[str, Any]:
    emulator = Emulator(workdir, {"throttling": {"enabled": False},
                                  "caches": {"*": {"duration": 3600}}}, "cpu")
    flush = importlib.import_module("FlushTrigger")
    poll = importlib.import_module("PollOrchestrator")
    out: dict[str, Any] = {}
    try:
        for variant in ("stub", "local"):
            local_dir = workdir / f"cpu-{variant}"
            settings = bench_settings(local_dir, arm_endpoint=emulator.url)
            inner = open_bus(settings) if variant == "local" else None
            bus = CaptureBus(inner)
            app = FlushApp(settings, ArmClient(settings.arm_endpoint, settings.api_version,
                                               StaticToken(TOKEN)), bus)
            functions.install(app)
            # 10 subscriptions, so the pacer's mirror of ARM's buckets never defers a step here.
            requests = [_delivered(request_message(settings, sub_id(100 + i % 10),
                                                   f"cpu-{variant}-{i:05d}", reply=False)[1], i)
                        for i in range(warm + n)]
            _timed(flush.main, requests[:warm])
            f_cpu, f_wall = _timed(flush.main, requests[warm:])
            polls = [_delivered(m, i) for i, (q, m) in enumerate(bus.sent)
                     if q == settings.poll_queue]
            accepted = len(polls)
            bus.sent.clear()
            _timed(poll.main, polls[:warm])
            p_cpu, p_wall = _timed(poll.main, polls[warm:])
            requeued = sum(1 for q, _ in bus.sent if q == settings.poll_queue)
            functions.install(None)
            if inner is not None:
                inner.close()
            out[variant] = {"flush_cpu": f_cpu, "flush_wall": f_wall, "poll_cpu": p_cpu,
                            "poll_wall": p_wall, "accepted": accepted, "requeued": requeued}
    finally:
        functions.install(None)
        emulator.stop()
    return out


def _wait_posts(emulator: Emulator, target: int, timeout: float, pid: int,
                peak: dict[str, int]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        _sample(pid, peak)
        if emulator.stats()["posts"] >= target:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"only {emulator.stats()['posts']} of {target} flushes accepted "
                       f"after {timeout:.0f} s")


def _sample(pid: int, peak: dict[str, int]) -> None:
    st = proc_status(pid)
    peak["rss"] = max(peak.get("rss", 0), st.get("VmRSS", 0))
    peak["hwm"] = max(peak.get("hwm", 0), st.get("VmHWM", 0))
    peak["threads"] = max(peak.get("threads", 0), st.get("Threads", 0))


def _hold(pid: int, seconds: float, peak: dict[str, int]) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        _sample(pid, peak)
        time.sleep(0.25)


def memory_in_flight(workdir: Path, small: int, large: int, hold: float) -> dict[str, Any]:
    emulator = Emulator(workdir, {"throttling": {"enabled": False},
                                  "caches": {"*": {"duration": 600}}}, "rss")
    serve = None
    try:
        serve = Serve(workdir, emulator.url, "rss")
        settings = serve.settings
        bus = open_bus(settings)
        pid = serve.proc.pid
        idle: dict[str, int] = {}
        _sample(pid, idle)

        def send(start: int, count: int) -> None:
            for lo in range(start, start + count, 1000):
                bus.send(settings.request_queue, [
                    request_message(settings, sub_id(1000 + i % 100), f"rss-{i:05d}",
                                    reply=False)[1] for i in range(lo, min(lo + 1000,
                                                                           start + count))])

        at_small: dict[str, int] = {}
        send(0, small)
        _wait_posts(emulator, small, 120, pid, at_small)
        _hold(pid, hold, at_small)
        counts_small = bus.counts(settings.poll_queue)
        at_large = dict(at_small)
        began = time.monotonic()
        send(small, large - small)
        ramp = _wait_posts(emulator, large, 600, pid, at_large)
        ramp_total = time.monotonic() - began
        _hold(pid, hold, at_large)
        counts_large = bus.counts(settings.poll_queue)
        stats = emulator.stats()
        bus.close()
    finally:
        if serve is not None:
            serve.stop()
        emulator.stop()
    return {"idle": idle, "small": at_small, "large": at_large, "ramp": ramp_total,
            "ramp_rate": (large - small) / max(ramp, 1e-9), "n_small": small, "n_large": large,
            "in_flight_small": sum(counts_small.values()) - counts_small["deadletter"],
            "in_flight_large": sum(counts_large.values()) - counts_large["deadletter"],
            "polls": stats["polls"], "posts": stats["posts"]}


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.2f} ms"


def run(workdir: Path, n_cpu: int, small: int, large: int, hold: float) -> Section:
    cpu = cpu_per_invocation(workdir, n_cpu)
    mem = memory_in_flight(workdir, small, large, hold)
    s = Section("3. Cost per invocation and memory with operations in flight")
    stub, local = cpu["stub"], cpu["local"]
    s.table = [
        ["", "FlushTrigger (POST -> 202, schedule poll)",
         "PollOrchestrator (GET -> InProgress, reschedule)"],
        ["CPU per invocation, app only (bus stubbed), median",
         _ms(stub["flush_cpu"]), _ms(stub["poll_cpu"])],
        ["CPU per invocation, app + local SQLite bus, median",
         _ms(local["flush_cpu"]), _ms(local["poll_cpu"])],
        ["CPU p90, app + local bus", _p(local["flush_cpu"], 0.9), _p(local["poll_cpu"], 0.9)],
        ["wall per invocation (incl. emulator round trip), median, app + local bus",
         _ms(local["flush_wall"]), _ms(local["poll_wall"])],
    ]
    kb = lambda v: f"{v / 1024:.1f} MiB"  # noqa: E731
    growth = mem["large"]["hwm"] - mem["small"]["hwm"]
    s.table += [
        ["", "", ""],
        ["`serve --local` memory", f"{mem['n_small']:,} in flight",
         f"{mem['n_large']:,} in flight"],
        ["peak RSS (VmHWM)", kb(mem["small"]["hwm"]), kb(mem["large"]["hwm"])],
        ["RSS (VmRSS, max sampled)", kb(mem["small"]["rss"]), kb(mem["large"]["rss"])],
        ["messages in the poll queue (state in flight)", f"{mem['in_flight_small']:,}",
         f"{mem['in_flight_large']:,}"],
    ]
    ratio = mem["large"]["hwm"] / max(1, mem["small"]["hwm"])
    s.notes = [
        f"CPU: {n_cpu} warm invocations of each function's own `main` after 40 warm-up calls, "
        "timed with time.thread_time() in the invoking thread, so waiting for ARM's answer "
        "is excluded; the emulator runs in another process (throttling off, flushes of 1 h so "
        f"every poll answers InProgress). Checks: {local['accepted']} flushes accepted, "
        f"{local['requeued']} polls re-queued.",
        f"Memory: `serve --local --arm-endpoint` against an emulator process (throttling off, "
        f"flushes of 600 s, requests over 100 subscriptions so the pacer's per-subscription "
        f"mirror does not hold the POSTs back); sampled every 0.25 s while "
        f"{mem['n_small']:,} and then {mem['n_large']:,} operations were accepted by ARM and "
        f"being polled ({hold:.0f} s each). Peak grows {growth / 1024:+.1f} MiB "
        f"({ratio:.2f}x) for {mem['n_large'] / mem['n_small']:.0f}x the operations. "
        f"Ramp: {mem['n_large'] - mem['n_small']:,} requests accepted in {mem['ramp']:.1f} s "
        f"({mem['ramp_rate']:.0f}/s through one serve process, default concurrency); ARM "
        f"answered {mem['polls']:,} status GETs meanwhile.",
    ]
    s.headline = [f"Cost: {_ms(stub['flush_cpu'])} CPU per FlushTrigger and "
                  f"{_ms(stub['poll_cpu'])} per PollOrchestrator invocation (app only; "
                  f"{_ms(local['flush_cpu'])} / {_ms(local['poll_cpu'])} with the local bus); "
                  f"`serve --local` peak RSS {kb(mem['small']['hwm'])} at "
                  f"{mem['n_small']:,} in flight, {kb(mem['large']['hwm'])} at "
                  f"{mem['n_large']:,} ({ratio:.2f}x)."]
    s.data = {"cpu": {k: {m: statistics.median(v) for m, v in d.items() if isinstance(v, list)}
                      for k, d in cpu.items()}, "mem": mem}
    return s


def _p(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.2f} ms"
