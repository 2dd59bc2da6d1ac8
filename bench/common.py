"""Shared plumbing for the benchmarks: processes, the local bus, the Azure SDK client, stats.

Everything here starts real processes the way a user would (the emulator through
bench/armemu.py, which is `python -m redisflush emulator` plus a request trace;
`python -m redisflush serve --local --arm-endpoint ...`) and talks to them only through the
local bus file and the emulator's HTTP admin routes.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the SDK side lives apart from redisflush (bench/sdk_side.py); these names stay importable here
from sdk_side import API_VERSION as API_VERSION  # noqa: E402
from sdk_side import RG as RG  # noqa: E402
from sdk_side import TOKEN as TOKEN  # noqa: E402
from sdk_side import StubCredential as StubCredential  # noqa: E402
from sdk_side import sdk_client as sdk_client  # noqa: E402
from sdk_side import sdk_flush as sdk_flush  # noqa: E402

from redisflush.bus import OutboundMessage  # noqa: E402
from redisflush.client import decode_event, prepare  # noqa: E402
from redisflush.local.runtime import local_settings, open_bus  # noqa: E402
from redisflush.settings import Settings  # noqa: E402


def sub_id(n: int) -> str:
    """A deterministic subscription GUID per benchmark group."""
    return f"00000000-0000-0000-0000-{n:012d}"


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


# -- processes ---------------------------------------------------------------------------

@dataclass
class Proc:
    """A child process whose stderr goes to a file (never a pipe nobody reads)."""

    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for_line(self, needle: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            for line in text.splitlines():
                if needle in line:
                    return line
            if self.popen.poll() is not None:
                raise RuntimeError(f"process {self.pid} exited ({self.popen.returncode}): "
                                   f"{text[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"process {self.pid}: no line with {needle!r} in {timeout} s")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def _started(proc: Proc, needle: str) -> str:
    """Wait for the process's ready line (returned); stop it if it never comes."""
    try:
        return proc.wait_for_line(needle)
    except BaseException:
        proc.stop()
        raise


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None,
          launcher: list[str] | None = None) -> Proc:
    """`python -m redisflush ARGS` (or `python LAUNCHER... ARGS`), output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        popen = subprocess.Popen([sys.executable, *(launcher or ["-m", "redisflush"]), *args],
                                 cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, **(env or {})})
    return Proc(popen, log)


class Emulator:
    """The ARM emulator in its own process (ARM is elsewhere in real life): bench/armemu.py,
    the CLI's emulator plus `/_bench/trace` (when each operation ended, each request)."""

    def __init__(self, workdir: Path, config: dict[str, Any], name: str) -> None:
        cfg = workdir / f"{name}-emulator.json"
        cfg.write_text(json.dumps(config))
        # port 0: the emulator binds a free port itself and says which (a port picked here
        # and passed on could be taken by a side-by-side section in between)
        self.proc = spawn(["--port", "0", "--config", str(cfg)],
                          workdir / f"{name}-emulator.log",
                          launcher=[str(ROOT / "bench" / "armemu.py")])
        ready = _started(self.proc, "ARM emulator on")
        found = re.search(r"ARM emulator on (http://127\.0\.0\.1:(\d+))", ready)
        if found is None:
            self.proc.stop()
            raise RuntimeError(f"the emulator's ready line names no loopback URL: {ready!r}")
        self.url, self.port = found.group(1), int(found.group(2))

    def _get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            answer: dict[str, Any] = json.loads(r.read())  # the admin routes answer an object
        return answer

    def stats(self) -> dict[str, Any]:
        return self._get("/_emulator/stats")

    def trace(self) -> dict[str, Any]:
        """{cache: {acceptedAt, duration, end, requests: [[t, method, status]]}} (wall clock)."""
        caches: dict[str, Any] = self._get("/_bench/trace")["caches"]
        return caches

    def set_load(self, subscription: str, reads_per_second: float) -> None:
        """The emulator's second client: spend `reads_per_second` of the sub's read budget."""
        body = json.dumps({"subscriptionId": subscription,
                           "readsPerSecond": reads_per_second}).encode()
        req = urllib.request.Request(self.url + "/_emulator/load", data=body, method="PUT",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()

    def stop(self) -> None:
        self.proc.stop()


class Serve:
    """`python -m redisflush serve --local --arm-endpoint URL` with its own local bus dir."""

    def __init__(self, workdir: Path, arm_url: str, name: str, concurrency: int | None = None,
                 launcher: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.local_dir = workdir / name
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.env = {"REDISFLUSH_LOCAL_DIR": str(self.local_dir), **(env or {})}
        # The bus file and its entities exist before the host starts, like Azure entities.
        self.settings = bench_settings(self.local_dir)
        open_bus(self.settings).close()
        args = ["serve", "--local", "--arm-endpoint", arm_url]
        if concurrency:
            args += ["--concurrency", str(concurrency)]
        self.log = workdir / f"{name}-serve.log"
        self.proc = spawn(args, self.log, self.env, launcher=launcher)
        _started(self.proc, "serving ")

    def cpu_seconds(self) -> float:
        """user + system CPU of the whole serve process so far (every thread)."""
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        self.proc.stop()


def bench_settings(local_dir: Path, arm_endpoint: str | None = None) -> Settings:
    env = {"REDISFLUSH_LOCAL_DIR": str(local_dir)}
    if arm_endpoint:
        env["REDISFLUSH_ARM_ENDPOINT"] = arm_endpoint
    settings, _ = local_settings(ROOT, env=env)
    return settings


# -- requests and events on the local bus ---------------------------------------------------

def request_message(settings: Settings, sub: str, cache: str, *, reply: bool,
                    request_id: str | None = None) -> tuple[str, OutboundMessage]:
    body = {"subscriptionId": sub, "resourceGroup": RG, "cacheName": cache,
            "reason": "benchmark", "requestedBy": "bench/run.py"}
    prepared = prepare(body, settings, request_id=request_id or str(uuid.uuid4()), reply=reply,
                       now=dt.datetime.now(dt.UTC))
    if not hasattr(prepared, "message"):
        raise ValueError(f"bench built an invalid request: {prepared}")
    return prepared.request_id, prepared.message  # type: ignore[union-attr]


def drain_events(bus: Any, entity: str, *, session_id: str | None = None,
                 wait: float = 0.2, max_count: int = 200) -> Iterator[tuple[float, dict[str, Any]]]:
    """(monotonic receive time, event) for what is on `entity` now (completes each)."""
    for message in bus.receive_wait(entity, wait, max_count=max_count, session_id=session_id,
                                    poll_interval=0.02):
        at = time.monotonic()
        bus.complete(message)
        event = decode_event(message.body)
        if event is not None:
            yield at, event


# -- machine ---------------------------------------------------------------------------------

def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.release()})"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "os": os_name}


def proc_cpu(pid: int) -> float:
    """utime + stime of a live process, in seconds (/proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median (binomial order statistics): the widest
    pair of order statistics x_(k), x_(n-k+1) with P(Binomial(n, 1/2) < k) <= (1 - level)/2.
    Too few values for the level gives the full range (min, max)."""
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return float("nan"), float("nan")
    tail, k = (1 - level) / 2, 0
    below = 0.0                                  # P(Binomial(n, 1/2) < k + 1)
    while k < n // 2:
        below += math.comb(n, k) / 2 ** n
        if below > tail:
            break
        k += 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM / VmSize (kB) and Threads of a live process ({} once it is gone)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize", "Threads"):
                out[key] = int(value.split()[0])
    return out


class RssSampler:
    """VmRSS and Threads of a process every `interval` s in a background thread, from
    /proc/PID/status (resident pages only: a thread's stack counts as far as it was touched,
    memory the process freed but the allocator kept still counts)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import threading

        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, VmRSS kB, Threads)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            st = proc_status(self.pid)
            if "VmRSS" in st:
                self.samples.append((time.monotonic(), st["VmRSS"], st.get("Threads", 0)))
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, float]:
        """kB: the median and max sampled RSS, VmHWM now, the most threads seen."""
        self._stop.set()
        self._thread.join(5)
        hwm = proc_status(self.pid).get("VmHWM", 0)
        rss = [r for _, r, _ in self.samples]
        return {"median": median(rss), "max": max(rss, default=0), "hwm": hwm,
                "threads": max((t for _, _, t in self.samples), default=0),
                "samples": len(rss)}


def settled_rss(pid: int, seconds: float = 1.0) -> int:
    """The median VmRSS (kB) over `seconds`: a process at rest."""
    values = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        values.append(proc_status(pid).get("VmRSS", 0))
        time.sleep(0.1)
    return int(median(values))


@dataclass
class Section:
    """One benchmark's rendered output: a title, a markdown table, notes, headline lines."""

    title: str
    table: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    # further tables under the main one (report.py renders each when non-empty)
    extra: list[list[str]] = field(default_factory=list)
    extra2: list[list[str]] = field(default_factory=list)
    # section 2's spread-fleet figures, for its headline and data (fleet.py)
    data_spread: dict[str, Any] | None = None


class EventWatcher:
    """Reads the events topic through its own subscription in a background thread and notes
    when each request's completion event arrived (time.time(), the moment a subscriber has
    it), so many flushes can wait on one reader."""

    def __init__(self, settings: Settings, subscription: str = "bench",
                 poll_interval: float = 0.01) -> None:
        import threading

        self.bus = open_bus(settings)
        topic = settings.events_topic
        self.bus.ensure_subscription(topic, subscription)
        self.entity = f"{topic}/subscriptions/{subscription}"
        self.poll_interval = poll_interval
        self.arrived: dict[str, tuple[float, dict[str, Any]]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self.bus.receive_wait(self.entity, 0.2, max_count=200,
                                                 poll_interval=self.poll_interval):
                at = time.time()
                self.bus.complete(message)
                event = decode_event(message.body)
                rid = ((event or {}).get("data") or {}).get("requestId")
                if rid is None:
                    continue
                with self._cond:
                    self.arrived.setdefault(rid, (at, event or {}))
                    self._cond.notify_all()

    def wait(self, request_id: str, timeout: float) -> tuple[float, dict[str, Any]] | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while request_id not in self.arrived:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))
            return self.arrived[request_id]

    def count(self) -> int:
        with self._cond:
            return len(self.arrived)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.bus.close()
