"""Section 3: CPU per flush of the whole `serve --local` process, and where it goes.

`n` requests (10 s flushes, 10 per subscription, so every flush is polled once a second) go
on the request queue at once; the clock runs from the send to the last completion event. CPU
is user + system of the serve process (/proc/PID/stat: every thread, the host loop, the bus,
the ledger, the ARM calls) over that span, divided by `n`. Two runs:

- the app as it is, sampled by py-spy when it is installed (`record --nonblocking`, 250 Hz,
  active threads only; the samples are grouped by the library of the innermost Python
  frame: time in C code counts to the Python line that called it, a SQLite statement to
  the bus or ledger line);
- the ARM client as it was before it resolved proxies once (bench/serve_variant.py,
  REDISFLUSH_BENCH_ARM=before: requests' Session.request with trust_env on, everything else
  unchanged), to price that change.
"""
from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT, Emulator, EventWatcher, Section, Serve, request_message, sub_id

from redisflush.local.runtime import open_bus

PER_SUB = 10
_FRAME = re.compile(r"\((.*):\d+\)$")
_VARIANT = [str(ROOT / "bench" / "serve_variant.py")]


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def one_run(workdir: Path, n: int, name: str, *, before: bool = False,
            profile: bool = False) -> dict[str, Any]:
    emulator = Emulator(workdir, {"throttling": {"enabled": False},
                                  "caches": {"*": {"duration": 10.0}}}, name)
    serve = watcher = spy = None
    spy_out = workdir / f"{name}-py-spy.txt"
    try:
        serve = Serve(workdir, emulator.url, name, launcher=_VARIANT,
                      env={"REDISFLUSH_BENCH_ARM": "before" if before else ""})
        watcher = EventWatcher(serve.settings)
        batch = [request_message(serve.settings, sub_id(500 + i // PER_SUB), f"{name}-{i:04d}",
                                 reply=False) for i in range(n)]
        time.sleep(1.0)
        idle0, idle_t = serve.cpu_seconds(), time.monotonic()
        time.sleep(2.0)
        idle = (serve.cpu_seconds() - idle0) / (time.monotonic() - idle_t)
        tool = _py_spy() if profile else None
        if tool:
            spy = subprocess.Popen([tool, "record", "--pid", str(serve.proc.pid), "--rate",
                                    "250", "--nonblocking", "--format", "raw", "--output",
                                    str(spy_out)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        bus = open_bus(serve.settings)
        cpu0, t0 = serve.cpu_seconds(), time.monotonic()
        for lo in range(0, n, 200):
            bus.send(serve.settings.request_queue, [m for _, m in batch[lo:lo + 200]])
        bus.close()
        deadline = time.monotonic() + 120
        while watcher.count() < n and time.monotonic() < deadline:
            time.sleep(0.02)
        span = time.monotonic() - t0
        cpu = serve.cpu_seconds() - cpu0
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        stats = emulator.stats()
        log = serve.log
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        if watcher is not None:
            watcher.close()
        if serve is not None:
            serve.stop()
        emulator.stop()
    execs, ms = _executions(log)
    return {"n": n, "cpu": cpu, "span": span, "idle": idle, "events": watcher.count(),
            "posts": stats["posts"], "polls": stats["polls"], "executions": execs,
            "exec_ms": ms, "profile": _grouped(spy_out) if spy_out.exists() else None}


def _executions(log: Path) -> tuple[int, float]:
    """Function executions in the serve log and their mean wall time (ms, as logged)."""
    pattern = re.compile(r"(FlushTrigger|PollOrchestrator) request=.* (\d+) ms")
    times = [float(m.group(2)) for line in log.read_text(errors="replace").splitlines()
             for m in [pattern.search(line)] if m]
    return len(times), (sum(times) / len(times) if times else float("nan"))


_HTTP = "stdlib http.client / socket / email"
_LIBRARIES = (
    ("redisflush/local/bus", "redisflush local bus (SQLite)"),
    ("redisflush/local/ledger", "redisflush ledger (SQLite)"),
    ("redisflush/local/sqlite_file", "redisflush ledger (SQLite)"),
    ("redisflush/ledger", "redisflush ledger (SQLite)"),
    ("redisflush/local/host", "redisflush local host"),
    ("redisflush/local/worker_message", "redisflush local host"),
    ("redisflush/arm", "redisflush ARM client"),
    ("redisflush/core", "redisflush core (decisions, JSON state)"),
    ("redisflush/", "redisflush other (app shell, bus port, pacer, logtext)"),
    ("requests/", "requests"), ("urllib3/", "urllib3"),
    ("functions/", "azure.functions (binding types)"),
    ("azure/functions/", "azure.functions (binding types)"),
    ("http/client", _HTTP), ("socket.py", _HTTP), ("email/", _HTTP), ("ssl.py", _HTTP),
    ("json/", "stdlib json"), ("logging/", "stdlib logging"),
    ("sqlite3/", "redisflush ledger (SQLite)"),
    ("threading.py", "stdlib threading / queues"), ("concurrent/", "stdlib threading / queues"),
    ("queue.py", "stdlib threading / queues"), ("datetime.py", "stdlib datetime"),
    ("_strptime.py", "stdlib datetime"), ("uuid.py", "stdlib other"),
)


def _library(path: str) -> str:
    """py-spy names files relative to sys.path (`requests/sessions.py`, `threading.py`)."""
    p = path.replace("\\", "/")
    for key, label in _LIBRARIES:
        if p.startswith(key) or f"/{key}" in p:
            return label
    return "stdlib other"


def _grouped(path: Path) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks -> samples by library of the innermost frame, and the
    share of samples with requests/urllib3 anywhere on the stack."""
    self_by: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        k = int(count)
        frames = [f for f in stack.split(";") if _FRAME.search(f)]
        if not frames:
            continue
        total += k
        self_by[_library(_FRAME.search(frames[-1]).group(1))] += k  # type: ignore[union-attr]
        libs = {_library(_FRAME.search(f).group(1)) for f in frames}  # type: ignore[union-attr]
        if libs & {"requests", "urllib3"}:
            inclusive["requests + urllib3 (anywhere on the stack)"] += k
        if "redisflush ARM client" in libs or libs & {"requests", "urllib3"}:
            inclusive["an ARM call (ArmClient.call and below)"] += k
        if libs & {"redisflush local bus (SQLite)"}:
            inclusive["the local bus (SQLite)"] += k
        if libs & {"redisflush ledger (SQLite)"}:
            inclusive["the ledger (SQLite)"] += k
        if "stdlib logging" in libs:
            inclusive["logging"] += k
    return {"total": total, "self": dict(self_by), "inclusive": dict(inclusive)}


def run(workdir: Path, n: int, fleet_cpu: list[tuple[str, float]] | None = None) -> Section:
    after = prof = one_run(workdir, n, "cpu-after", profile=True)
    before = one_run(workdir, n, "cpu-before", before=True)

    def per(r: dict[str, Any]) -> float:
        return r["cpu"] / r["n"] * 1000

    def per_req(r: dict[str, Any]) -> float:
        return r["cpu"] / max(1, r["posts"] + r["polls"]) * 1000

    s = Section("3. CPU per flush of the whole `serve --local` process, and where it goes")
    s.table = [["", "CPU per flush", "per ARM request", "ARM requests per flush",
                "executions per flush", "span (s) / events", "idle CPU of the process"]]
    for label, r in (("app now (py-spy sampling from another core)", after),
                     ("ARM client as before (trust_env, Session.request)", before)):
        s.table.append([label, f"{per(r):.2f} ms", f"{per_req(r):.2f} ms",
                        f"{(r['posts'] + r['polls']) / r['n']:.1f}",
                        f"{r['executions'] / r['n']:.1f}", f"{r['span']:.1f} / {r['events']}",
                        f"{r['idle'] * 100:.1f}% of a core"])
    for label, ms in fleet_cpu or []:
        s.table.append([label, f"{ms:.2f} ms", "", "", "", "", ""])
    cut = 1 - per(after) / per(before) if per(before) else float("nan")
    s.notes = [
        f"{n} requests, 10 s flushes, {PER_SUB} per subscription (throttling off), sent at "
        "once; CPU = utime + stime of the serve process from the send to the last event, "
        "divided by the flushes. It includes the host's idle polling of the local bus "
        "(the last column) over the span: the idle share of each figure is idle x span / n.",
        f"The ARM client change (proxies resolved once, the adapter called directly) cuts "
        f"{cut * 100:.0f}% of the whole process's CPU per flush here "
        f"({per(before):.2f} -> {per(after):.2f} ms).",
    ]
    p = prof["profile"]
    if p and p["total"]:
        rows = sorted(p["self"].items(), key=lambda kv: -kv[1])
        s.extra = [["where the CPU goes (py-spy, innermost frame)", "share of samples"]] + [  # type: ignore[attr-defined]
            [k, f"{v / p['total'] * 100:.1f}%"] for k, v in rows] + [
            ["**inclusive**: " + k, f"{v / p['total'] * 100:.1f}%"]
            for k, v in sorted(p["inclusive"].items(), key=lambda kv: -kv[1])]
        s.notes.append(f"py-spy: {p['total']} samples of active threads; time in C code "
                       "(SQLite, socket calls, JSON) counts to the Python line that called "
                       "it. py-spy samples without stopping the process (--nonblocking), so "
                       "its own cost is on another core, not in the figure above.")
        top = rows[:3]
        where = ", ".join(f"{k} {v / p['total'] * 100:.0f}%" for k, v in top)
    else:
        where = "not profiled (py-spy not installed)"
        s.notes.append("py-spy is not installed in .venv: `pip install py-spy` for the "
                       "breakdown (optional, not in requirements-dev.txt).")
    s.headline = [f"CPU per flush of the whole serve process: {per(after):.2f} ms "
                  f"({per_req(after):.2f} ms per ARM request; {per(before):.2f} ms with the "
                  f"ARM client as before, so the change cuts {cut * 100:.0f}%); where it goes: "
                  f"{where}."]
    s.data = {"after": after, "before": before, "profile": prof, "per": per(after),
              "per_before": per(before), "cut": cut}
    return s
