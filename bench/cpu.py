"""Section 3: CPU per flush of the whole `serve --local` process, against the serves of
commits 6332ebb and d200612 on the same workload in the same run, and where "now" spends it.

`n` requests (10 s flushes, 10 per subscription) go on the request queue at once; the clock
runs from the send to the last completion event. CPU is user + system of the serve process
(/proc/PID/stat: every thread, the host loop, the bus, the ledger, the ARM calls) over that
span, divided by `n`, by the ARM requests the emulator answered, and by the function
executions the serve log shows. Rows:

- now: this checkout's serve;
- 6332ebb: the serve when issue 11 was filed (the "today" of its CPU figures, 5.7-7.3 ms per
  flush), whose fixed read gaps read a 10 s flush 4 times, where now reads it once a second;
- d200612: the serve at the start of the work on issue 11's CPU item (an earlier version of
  the one-a-second reading plan, the ARM client and local host before their CPU changes);

- the SDK way, best tuned for detection: `begin_flush_cache(...).result()` at
  `polling_interval=1`, a thread per flush in one process (`python bench/cpu.py --sdk ...`),
  CPU of that process from the first call to the last result (its imports and clients made
  before); and the same flushes through the SDK's asyncio client (azure.mgmt.redis.aio on
  aiohttp, `--sdk ... --aio`): every flush a coroutine in one event loop, a client per
  subscription as the threaded row has;

the baselines each exported with `git archive` and run by bench/serve_variant.py with its own
package and function folders, on the same workload in the same run,
each run `ROUNDS` times, alternating, the table giving the median of each; then one more run
of "now" sampled by py-spy when it is installed (`record --nonblocking --gil`, 250 Hz: only
the thread holding the GIL, so a thread waiting on a lock, a queue or a socket is not counted;
samples grouped by the library of the innermost Python frame, sqlite3's Python wrappers to
their caller; C code that holds the GIL counts to the Python line that called it, and C code
that releases it (a SQLite statement, a socket send or receive) is not seen at all).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures as cf
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    Emulator,
    EventWatcher,
    Section,
    Serve,
    request_message,
    sdk_client,
    sdk_flush,
    sub_id,
)
from sdk_side import AIO_LIMIT, aio_client, aio_flush

from redisflush.local.runtime import open_bus

PER_SUB = 10
DURATION = 10.0  # each flush's length (the quick run's shorter, to stay under a minute)
ROUNDS = 2
BASELINES = (("6332ebb", "the serve when issue 11 was filed"),
             ("d200612", "the serve at the start of the CPU work"))
_FRAME = re.compile(r"\((.*):\d+\)$")
_VARIANT = [str(ROOT / "bench" / "serve_variant.py")]


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def workload(duration: float = DURATION) -> dict[str, Any]:
    """The emulator's config: throttling off, every flush `duration` s long."""
    return {"throttling": {"enabled": False}, "caches": {"*": {"duration": duration}}}


def export(commit: str, workdir: Path) -> Path:
    """`git archive COMMIT` unpacked under workdir: that commit's tree, to serve from."""
    tree = workdir / f"tree-{commit}"
    if not (tree / "redisflush").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def one_run(workdir: Path, n: int, name: str, *, tree: Path | None = None,
            profile: bool = False, duration: float = DURATION) -> dict[str, Any]:
    emulator = Emulator(workdir, workload(duration), name)
    serve = watcher = spy = None
    spy_out = workdir / f"{name}-py-spy.txt"
    try:
        serve = Serve(workdir, emulator.url, name, launcher=_VARIANT,
                      env={"REDISFLUSH_BENCH_TREE": str(tree) if tree else ""})
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
                                    "250", "--nonblocking", "--gil", "--format", "raw", "--output",
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
            "ledger_writes": _ledger_writes(serve.local_dir / "ledger.sqlite"),
            "posts": stats["posts"], "polls": stats["polls"], "executions": execs,
            "exec_ms": ms, "profile": _grouped(spy_out) if spy_out.exists() else None}


def _ledger_writes(path: Path) -> int | None:
    """Rows the local ledger stored over the run (its version counter counts every insert
    and update that took; one that lost its condition rolls back), or None without one."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            found = db.execute("SELECT last FROM ledger_version WHERE id = 1").fetchone()
    except sqlite3.Error:
        return None
    return int(found[0]) if found else None


def sdk_run(workdir: Path, n: int, name: str, aio: bool = False,
            duration: float = DURATION) -> dict[str, Any]:
    """The same flushes through the SDK at polling_interval=1 in a child process (with
    `aio`, through its asyncio client)."""
    emulator = Emulator(workdir, workload(duration), name)
    try:
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--sdk",
                              emulator.url, str(n), name] + (["--aio"] if aio else []),
                             cwd=ROOT, capture_output=True, text=True, timeout=300,
                             check=True).stdout
        stats = emulator.stats()
    finally:
        emulator.stop()
    r = json.loads(out.strip().splitlines()[-1])
    return {"n": n, "cpu": r["cpu"], "span": r["span"], "idle": 0.0, "events": r["done"],
            "posts": stats["posts"], "polls": stats["polls"], "executions": n,
            "exec_ms": float("nan"), "profile": None}


def _sdk_child(url: str, n: int, name: str) -> dict[str, Any]:
    subs = sorted({sub_id(500 + i // PER_SUB) for i in range(n)})
    clients = {s: sdk_client(url, s) for s in subs}
    with cf.ThreadPoolExecutor(n) as pool:
        t0, c0 = time.monotonic(), os.times()
        futures = [pool.submit(sdk_flush, clients[sub_id(500 + i // PER_SUB)],
                               f"{name}-{i:04d}", 1.0) for i in range(n)]
        done = sum(1 for f in futures if f.result()[1] == "Succeeded")
        c1, span = os.times(), time.monotonic() - t0
    return {"cpu": (c1.user - c0.user) + (c1.system - c0.system), "span": span, "done": done}


async def _sdk_aio_child(url: str, n: int, name: str) -> dict[str, Any]:
    subs = sorted({sub_id(500 + i // PER_SUB) for i in range(n)})
    clients = {s: aio_client(url, s, AIO_LIMIT) for s in subs}
    try:
        t0, c0 = time.monotonic(), os.times()
        results = await asyncio.gather(*(aio_flush(clients[sub_id(500 + i // PER_SUB)],
                                                   f"{name}-{i:04d}", 1.0) for i in range(n)))
        c1, span = os.times(), time.monotonic() - t0
    finally:
        for client in clients.values():
            await client.close()
    done = sum(1 for _, status in results if status == "Succeeded")
    return {"cpu": (c1.user - c0.user) + (c1.system - c0.system), "span": span, "done": done}


def _executions(log: Path) -> tuple[int, float]:
    """Function executions in the serve log and their mean wall time (ms, as logged)."""
    pattern = re.compile(r"(FlushTrigger|PollOrchestrator) request=.* (\d+) ms")
    times = [float(m.group(2)) for line in log.read_text(errors="replace").splitlines()
             for m in [pattern.search(line)] if m]
    return len(times), (sum(times) / len(times) if times else float("nan"))
_HTTP = "stdlib http.client / socket / email"
# sqlite3's own Python code serves the bus and the ledger alike: counted to its caller
_SQLITE = "sqlite3 (counted to its caller)"
_LIBRARIES = (
    ("redisflush/local/bus", "redisflush local bus (SQLite)"),
    ("redisflush/local/ledger", "redisflush ledger (SQLite)"),
    ("redisflush/local/sqlite_file", "redisflush local bus (SQLite)"),
    ("redisflush/ledger", "redisflush ledger (SQLite)"),
    ("redisflush/local/host", "redisflush local host"),
    ("redisflush/local/function_folders", "redisflush local host"),
    ("redisflush/local/worker_message", "redisflush local host"),
    ("redisflush/arm", "redisflush ARM client"),
    ("redisflush/core", "redisflush core (decisions, JSON state)"),
    ("redisflush/", "redisflush other (app shell, bus port, pacer, logtext)"),
    ("requests/", "requests"), ("urllib3/", "urllib3"),
    ("functions/", "azure.functions (binding types)"),
    ("azure/functions/", "azure.functions (binding types)"),
    ("http/client", _HTTP), ("socket.py", _HTTP), ("email/", _HTTP), ("ssl.py", _HTTP),
    ("json/", "stdlib json"), ("logging/", "stdlib logging"),
    ("sqlite3/", _SQLITE),
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


def _innermost(names: list[str]) -> str:
    """The innermost frame's library; sqlite3's Python wrappers go to the redisflush module
    that called them (the bus or the ledger)."""
    for name in reversed(names):
        if name != _SQLITE:
            return name
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
        names = [_library(_FRAME.search(f).group(1)) for f in frames]  # type: ignore[union-attr]
        self_by[_innermost(names)] += k
        libs = set(names)
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


def _per(r: dict[str, Any]) -> float:
    return float(r["cpu"] / r["n"] * 1000)


def _per_req(r: dict[str, Any]) -> float:
    return float(r["cpu"] / max(1, r["posts"] + r["polls"]) * 1000)


def _per_exec(r: dict[str, Any]) -> float:
    return float(r["cpu"] / max(1, r["executions"]) * 1000)


def _median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the runs, taken column by column (with two runs, the
    mean; a row's figures need not come from one run)."""
    def med(f: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(f(r) for r in runs)
    return {"per": med(_per), "per_req": med(_per_req), "per_exec": med(_per_exec),
            "reqs": med(lambda r: (r["posts"] + r["polls"]) / r["n"]),
            "execs": med(lambda r: r["executions"] / r["n"]), "span": med(lambda r: r["span"]),
            "events": min(r["events"] for r in runs), "idle": med(lambda r: r["idle"]),
            "runs": [_per(r) for r in runs]}


def run(workdir: Path, n: int, fleet_cpu: list[tuple[str, float]] | None = None,
        rounds: int = ROUNDS, profile: bool = True, duration: float = DURATION) -> Section:
    trees = {commit: export(commit, workdir) for commit, _ in BASELINES}
    now_runs: list[dict[str, Any]] = []
    sdk_runs: list[dict[str, Any]] = []
    aio_runs: list[dict[str, Any]] = []
    base_runs: dict[str, list[dict[str, Any]]] = {commit: [] for commit, _ in BASELINES}
    for i in range(rounds):  # alternating, so load from elsewhere falls on every row alike
        for commit, _ in BASELINES:
            base_runs[commit].append(one_run(workdir, n, f"cpu-{commit}-{i}",
                                             tree=trees[commit], duration=duration))
        now_runs.append(one_run(workdir, n, f"cpu-now-{i}", duration=duration))
        sdk_runs.append(sdk_run(workdir, n, f"cpu-sdk-{i}", duration=duration))
        aio_runs.append(sdk_run(workdir, n, f"cpu-aio-{i}", aio=True, duration=duration))
    prof = (one_run(workdir, n, "cpu-now-py-spy", profile=True, duration=duration)
            if profile else None)
    now = _median_row(now_runs)
    bases = {commit: _median_row(runs) for commit, runs in base_runs.items()}
    issue, start = BASELINES[0][0], BASELINES[1][0]
    ratio = {c: now["per"] / b["per"] if b["per"] else float("nan") for c, b in bases.items()}
    ratio_req = {c: now["per_req"] / b["per_req"] for c, b in bases.items()}
    pairs = {c: [a["cpu"] / b["cpu"] for a, b in zip(now_runs, runs, strict=True)]
             for c, runs in base_runs.items()}

    s = Section("3. CPU per flush of the whole `serve --local` process, and where it goes")
    s.table = [["", "CPU per flush", "per ARM request", "per execution",
                "ARM requests / executions per flush", "span (s) / events",
                "idle CPU of the process"]]
    sdk = _median_row(sdk_runs)
    aio = _median_row(aio_runs)
    labelled = [("now", now)] + [(f"{what} ({commit})", bases[commit])
                                 for commit, what in BASELINES] + [
        ("SDK, polling_interval=1, a thread per flush (ARM calls only)", sdk),
        ("SDK asyncio client, polling_interval=1, a coroutine per flush (ARM calls only)",
         aio)]
    for label, r in labelled:
        s.table.append([f"{label}: median of {rounds} ({', '.join(f'{x:.1f}' for x in r['runs'])})",
                        f"{r['per']:.2f} ms", f"{r['per_req']:.2f} ms", f"{r['per_exec']:.2f} ms",
                        f"{r['reqs']:.1f} / {r['execs']:.1f}", f"{r['span']:.1f} / {r['events']}",
                        f"{r['idle'] * 100:.1f}% of a core"])
    for commit, _ in BASELINES:
        b = bases[commit]
        s.table.append([f"now / {commit}", f"{ratio[commit]:.2f}x", f"{ratio_req[commit]:.2f}x",
                        f"{now['per_exec'] / b['per_exec']:.2f}x",
                        f"{now['reqs'] / b['reqs']:.2f}x / {now['execs'] / b['execs']:.2f}x",
                        "", ""])
    s.table.append(["now / SDK", f"{now['per'] / sdk['per']:.2f}x",
                    f"{now['per_req'] / sdk['per_req']:.2f}x", "", "", "", ""])
    s.table.append(["now / SDK asyncio client", f"{now['per'] / aio['per']:.2f}x",
                    f"{now['per_req'] / aio['per_req']:.2f}x", "", "", "", ""])
    for label, ms in fleet_cpu or []:
        s.table.append([label, f"{ms:.2f} ms", "", "", "", "", ""])
    s.notes = [
        f"{n} requests, {duration:g} s flushes, {PER_SUB} per subscription (throttling off), "
        f"sent at once, each row run {rounds} times alternating with the others (the median shown, "
        "every run in brackets). CPU = utime + stime of the serve process from the send to "
        "the last event; per flush, per ARM request the emulator answered, per function "
        "execution in the serve log. It includes the host's polling of the local bus over "
        "the span (the idle share of a figure is idle x span / n).",
        "Same-run ratios per flush (per round): "
        + "; ".join(f"now / {c} {ratio[c]:.2f}x ({', '.join(f'{x:.2f}' for x in pairs[c])})"
                    for c, _ in BASELINES) + ". "
        f"{issue} reads a {duration:g} s flush at fixed gaps ({bases[issue]['reqs']:.0f} ARM "
        f"requests per flush, the last event {bases[issue]['span']:.1f} s after the send, against "
        f"{now['span']:.1f} s now); now "
        f"reads it once a second ({now['reqs']:.0f} requests) to detect the end within a "
        "second (section 1): the per-request and per-execution columns compare the work done "
        "for the same thing, the per-flush column what the lag target costs on top. Since "
        f"{issue} every flush is also recorded in the ledger (three SQLite transactions per "
        "cache, exactly once), and every execution's message is built through "
        "azure-functions' own converter as the Azure worker does (26 date parses).",
        "Left out: the ARM emulator's CPU (ARM's side, its own process), the sender's and "
        "the event watcher's, py-spy's; the serve process's start-up (imports, schema) and "
        "what it does after the last event (the last completes and log lines); the fsync "
        "*waits* of the ledger's synchronous=FULL commits (waiting is not CPU; the kernel "
        "work of the fsync is in stime). On this 2-core machine shared with other work the "
        "runs spread by about +-15%, hence the alternation.",
        "The SDK row is the alternative best tuned for detection (section 1: polling_interval=1 "
        "detects as fast as ours), one thread per flush, 10 connections per subscription's "
        "client, in a process that does nothing else: it leaves out what a function built "
        "on it would also do (the trigger's message, the event's publish, a held execution "
        "per flush in the worker) and the exactly-once ledger, so it is the floor of that "
        "way, and ours carries all of those. Its executions column is one per flush. The "
        "asyncio row is the same flushes through azure.mgmt.redis.aio on aiohttp: every "
        "flush a coroutine in one event loop (no threads), a client per subscription with "
        f"its own aiohttp session (at most {AIO_LIMIT or 'unlimited'} connections), the "
        "same floor of the SDK way without threads.",
    ]
    p = prof["profile"] if prof else None
    if prof and p and p["total"]:  # p is set only from a profile
        rows = sorted(p["self"].items(), key=lambda kv: -kv[1])
        s.extra = [["where the Python CPU of \"now\" goes (py-spy --gil, innermost frame)",
                    "share of samples"]] + [
            [k, f"{v / p['total'] * 100:.1f}%"] for k, v in rows] + [
            ["**inclusive**: " + k, f"{v / p['total'] * 100:.1f}%"]
            for k, v in sorted(p["inclusive"].items(), key=lambda kv: -kv[1])]
        sampled = p["total"] / 250
        s.notes.append(f"py-spy: {p['total']} samples of the thread holding the GIL in a "
                       f"separate run of \"now\" ({_per(prof):.2f} ms per flush): the GIL was "
                       f"held {sampled:.1f} s against {prof['cpu']:.1f} s of CPU in that run. "
                       "The shares are of the Python work (and C code that keeps the GIL, "
                       "counted to the Python line that called it); C code that lets the GIL "
                       "go (a SQLite statement, a socket send or receive, the kernel's side "
                       "of each) is the rest of the CPU and is not in the table. sqlite3's "
                       "own Python wrappers count to the bus or ledger line that called them.")
        where = "py-spy samples of the thread holding the GIL: " + ", ".join(
            f"{k} {v / p['total'] * 100:.0f}%" for k, v in rows[:3])
    else:
        where = "not profiled (" + ("py-spy not installed)" if prof else "--quick)")
        if prof:
            s.notes.append("py-spy is not installed in .venv: `pip install py-spy` for the "
                           "breakdown (optional, not in requirements-dev.txt).")
    s.headline = [f"CPU per flush of the whole serve process: {now['per']:.2f} ms "
                  f"({now['per_req']:.2f} ms per ARM request, {now['reqs']:.0f} requests) "
                  f"against {bases[issue]['per']:.2f} ms ({bases[issue]['per_req']:.2f} ms, "
                  f"{bases[issue]['reqs']:.0f} requests) for the serve when issue 11 was filed "
                  f"({issue}): {ratio[issue]:.2f}x per flush, {ratio_req[issue]:.2f}x per "
                  f"request; {ratio[start]:.2f}x / {ratio_req[start]:.2f}x against {start}; "
                  f"the SDK at polling_interval=1 (ARM calls only, a thread per flush): "
                  f"{sdk['per']:.2f} ms ({sdk['per_req']:.2f} ms per request, "
                  f"{sdk['reqs']:.0f} requests), ours {now['per'] / sdk['per']:.2f}x; its "
                  f"asyncio client (a coroutine per flush): {aio['per']:.2f} ms "
                  f"({aio['per_req']:.2f} ms per request), ours {now['per'] / aio['per']:.2f}x; "
                  f"where it goes: {where}."]
    writes = [r["ledger_writes"] for r in now_runs if r.get("ledger_writes") is not None]
    s.data = {"duration": duration,
              "ledger_writes": statistics.median(writes) / n if writes else None,
              "after": now_runs, "before": base_runs, "profile": prof, "per": now["per"],
              "per_req": now["per_req"], "reqs": now["reqs"],
              "baselines": {c: {"per": bases[c]["per"], "per_req": bases[c]["per_req"],
                                "reqs": bases[c]["reqs"], "ratio": ratio[c],
                                "ratio_req": ratio_req[c], "what": what}
                            for c, what in BASELINES},
              "issue_baseline": issue, "sdk": {"per": sdk["per"], "per_req": sdk["per_req"],
                                               "reqs": sdk["reqs"], "runs": sdk_runs},
              "sdk_aio": {"per": aio["per"], "per_req": aio["per_req"], "reqs": aio["reqs"],
                          "runs": aio_runs}}
    return s


def _main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sdk", nargs=3, metavar=("URL", "N", "NAME"), required=True)
    parser.add_argument("--aio", action="store_true", help="the SDK's asyncio client")
    a = parser.parse_args()
    url, n, name = a.sdk[0], int(a.sdk[1]), a.sdk[2]
    result = asyncio.run(_sdk_aio_child(url, n, name)) if a.aio else _sdk_child(url, n, name)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
