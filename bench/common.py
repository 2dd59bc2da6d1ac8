"""Shared plumbing for the benchmarks: processes, the local bus, the Azure SDK client, stats.

Everything here starts real processes the way a user would (`python -m redisflush emulator`,
`python -m redisflush serve --local --arm-endpoint ...`) and talks to them only through the
local bus file and the emulator's HTTP admin routes.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redisflush.bus import OutboundMessage  # noqa: E402
from redisflush.client import decode_event, prepare  # noqa: E402
from redisflush.local.runtime import local_settings, open_bus  # noqa: E402
from redisflush.settings import Settings  # noqa: E402

API_VERSION = "2023-08-01"
TOKEN = "local-emulator-token"
RG = "rg-bench"


def sub_id(n: int) -> str:
    """A deterministic subscription GUID per benchmark group."""
    return f"00000000-0000-0000-0000-{n:012d}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


# -- processes ---------------------------------------------------------------------------

@dataclass
class Proc:
    """A child process whose stderr goes to a file (never a pipe nobody reads)."""

    popen: subprocess.Popen
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


def _started(proc: Proc, needle: str) -> None:
    """Wait for the process's ready line; stop it if it never comes."""
    try:
        proc.wait_for_line(needle)
    except BaseException:
        proc.stop()
        raise


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "redisflush", *args], cwd=ROOT,
                                 stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, **(env or {})})
    return Proc(popen, log)


class Emulator:
    """`python -m redisflush emulator` in its own process (ARM is elsewhere in real life)."""

    def __init__(self, workdir: Path, config: dict[str, Any], name: str) -> None:
        self.port = free_port()
        cfg = workdir / f"{name}-emulator.json"
        cfg.write_text(json.dumps(config))
        self.proc = spawn(["emulator", "--port", str(self.port), "--config", str(cfg)],
                          workdir / f"{name}-emulator.log")
        self.url = f"http://127.0.0.1:{self.port}"
        _started(self.proc, "ARM emulator on")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_emulator/stats", timeout=30) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.stop()


class Serve:
    """`python -m redisflush serve --local --arm-endpoint URL` with its own local bus dir."""

    def __init__(self, workdir: Path, arm_url: str, name: str, concurrency: int | None = None
                 ) -> None:
        self.local_dir = workdir / name
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.env = {"REDISFLUSH_LOCAL_DIR": str(self.local_dir)}
        # The bus file and its entities exist before the host starts, like Azure entities.
        self.settings = bench_settings(self.local_dir)
        open_bus(self.settings).close()
        args = ["serve", "--local", "--arm-endpoint", arm_url]
        if concurrency:
            args += ["--concurrency", str(concurrency)]
        self.proc = spawn(args, workdir / f"{name}-serve.log", self.env)
        _started(self.proc, "serving ")

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
                       now=dt.datetime.now(dt.timezone.utc))
    if not hasattr(prepared, "message"):
        raise ValueError(f"bench built an invalid request: {prepared}")
    return prepared.request_id, prepared.message  # type: ignore[union-attr]


def drain_events(bus: Any, entity: str, *, session_id: str | None = None,
                 wait: float = 0.2, max_count: int = 200) -> Iterator[tuple[float, dict]]:
    """(monotonic receive time, event) for what is on `entity` now (completes each)."""
    for message in bus.receive_wait(entity, wait, max_count=max_count, session_id=session_id,
                                    poll_interval=0.02):
        at = time.monotonic()
        bus.complete(message)
        event = decode_event(message.body)
        if event is not None:
            yield at, event


# -- the Azure SDK way ----------------------------------------------------------------------

class StubCredential:
    """azure-core TokenCredential that hands out the emulator's token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken
        return AccessToken(TOKEN, int(time.time()) + 10 * 365 * 86400)


def sdk_client(arm_url: str, sub: str) -> Any:
    from azure.mgmt.redis import RedisManagementClient
    return RedisManagementClient(StubCredential(), sub, base_url=arm_url,
                                 api_version=API_VERSION)


def sdk_flush(client: Any, cache: str) -> tuple[float, str]:
    """begin_flush_cache(...).result() with the SDK's default polling; (seconds, status)."""
    started = time.monotonic()
    try:
        result = client.redis.begin_flush_cache(RG, cache, enforce_https=False).result()
        status = getattr(result, "status", None) or "Succeeded"
    except Exception as exc:  # noqa: BLE001 - an SDK failure is an outcome to count
        status = f"error:{type(exc).__name__}"
    return time.monotonic() - started, status


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


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (kB) of a live process."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


@dataclass
class Section:
    """One benchmark's rendered output: a title, a markdown table, notes, headline lines."""

    title: str
    table: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
