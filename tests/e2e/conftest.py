"""End-to-end fixtures: every command runs as a real `python -m redisflush ...` subprocess.

Each test gets its own REDISFLUSH_LOCAL_DIR under tmp_path (bus file, emulator state and
port), so tests share nothing but the machine. Every process a test starts is registered
in a `Processes` group and killed (its whole process group) at teardown, whatever happened.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from redisflush.local.demo import throwaway_redis

APP_ROOT = Path(__file__).resolve().parents[2]
SUB = "00000000-0000-0000-0000-0000000000e2"
RG = "rg-e2e"
REQUEST_QUEUE = "redis-flush-requests"
EVENTS = "redis-flush-events/subscriptions/all"
INVOCATION_LINE = re.compile(
    r"(?P<function>FlushTrigger|PollOrchestrator) request=(?P<request>\S+) message=\S+ "
    r"delivery=\d+ (?P<outcome>.+?) (?P<ms>\d+) ms(?:: (?P<decision>.+))?$")


def cli_env(local_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any app setting, plus this test's local dir."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDISFLUSH_", "ServiceBusConnection", "AZURE_"))}
    env.update(REDISFLUSH_LOCAL_DIR=str(local_dir), PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def cache_args(cache: str) -> list[str]:
    return ["--subscription", SUB, "--resource-group", RG, "--cache", cache]


def resource_id(cache: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/redis/{cache}"


def run_cli(args: Sequence[str], local_dir: Path, *, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One CLI command to its end (killed if it outlives `timeout`)."""
    return subprocess.run([sys.executable, "-m", "redisflush", *args], cwd=APP_ROOT,
                          env=cli_env(local_dir, env), capture_output=True, text=True,
                          timeout=timeout)


def one_event(stdout: str) -> dict[str, Any]:
    """`--json` prints the completion event as exactly one JSON line on stdout."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got {stdout!r}"
    return json.loads(lines[0])


def topic_events(local_dir: Path, count: int) -> list[dict[str, Any]]:
    """Exactly `count` events on the local topic: read with `watch --count` (it ends once it
    has them, however slow the machine), then a second `watch` must find nothing more. A
    `watch --timeout S` alone could end before reading all on a loaded machine."""
    watch = run_cli(["watch", "--local", "--json", "--count", str(count), "--timeout", "60"],
                    local_dir, timeout=90)
    assert watch.returncode == 0, watch.stderr
    events = [json.loads(line) for line in watch.stdout.splitlines() if line.strip()]
    more = run_cli(["watch", "--local", "--json", "--timeout", "2"], local_dir, timeout=30)
    assert more.returncode == 0 and more.stdout.strip() == "", (more.stdout, more.stderr)
    return events


def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 5) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    """A started CLI process whose stdout/stderr go to files (readable while it runs)."""

    name: str
    popen: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far (Linux /proc), None where unavailable."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill9(self) -> None:
        """SIGKILL the whole process group (the command and anything it started)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def wait_stderr(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of `pattern` (multiline) in stderr; fails if the process dies."""
        rx = re.compile(pattern, re.M)

        def found() -> re.Match[str] | None:
            match = rx.search(self.stderr())
            if match is None and not self.alive():
                match = rx.search(self.stderr())
                if match is None:
                    raise AssertionError(f"{self.name} exited ({self.popen.returncode}) before "
                                         f"{pattern!r} appeared; stderr:\n{self.stderr()}")
            return match
        return wait_for(found, timeout, f"{pattern!r} in {self.name}'s stderr")


class Serve(Proc):
    """`serve --local`: ready once it printed where it serves; knows its emulator's URL."""

    arm_url: str = ""

    def ready(self, timeout: float = 30) -> Serve:
        match = self.wait_stderr(r"^serving .* ARM at (\S+)$", timeout)
        self.arm_url = match.group(1)
        return self

    def stats(self) -> dict[str, Any]:
        return http_json(f"{self.arm_url}/_emulator/stats")

    def cache_stats(self, cache: str) -> dict[str, int]:
        return self.stats()["caches"].get(cache.lower(), {})

    def invocation_lines(self) -> list[re.Match[str]]:
        return [m for m in map(INVOCATION_LINE.search, self.stderr().splitlines()) if m]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Processes:
    """Every process a test starts; `close()` kills what is still running."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        self._lock = threading.Lock()
        self._n = 0
        self.closed = False

    def spawn(self, args: Sequence[str], local_dir: Path, *, name: str | None = None,
              env: dict[str, str] | None = None, kind: type[Proc] = Proc,
              ctrl_c: bool = False) -> Proc:
        """`ctrl_c`: the child takes SIGINT as a terminal's foreground job does, even when this
        run inherited it ignored (a shell's background job: `.ci/run &`), where Python would
        leave it ignored and no KeyboardInterrupt could reach the command."""
        with self._lock:
            if self.closed:
                raise RuntimeError("the test is over: no new processes")
            self._n += 1
            stem = f"{self._n:02d}-{name or args[0]}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out_path, err_path = self.log_dir / f"{stem}.out", self.log_dir / f"{stem}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            popen = subprocess.Popen([sys.executable, "-m", "redisflush", *args], cwd=APP_ROOT,
                                     env=cli_env(local_dir, env), stdout=out, stderr=err,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_default_sigint if ctrl_c else None)
        proc = kind(stem, popen, out_path, err_path)
        with self._lock:
            self.procs.append(proc)
        return proc

    def serve(self, local_dir: Path, *args: str, env: dict[str, str] | None = None,
              ready: bool = True, verbose: bool = False) -> Serve:
        """`serve --local ARGS`; `verbose` adds -v (the app's and emulator's own log lines)."""
        proc = self.spawn([*(["-v"] if verbose else []), "serve", "--local", *args], local_dir,
                          name="serve", env=env, kind=Serve)
        assert isinstance(proc, Serve)
        return proc.ready() if ready else proc

    def close(self) -> None:
        with self._lock:
            self.closed = True
            procs = list(self.procs)
        for proc in procs:
            if proc.alive():
                proc.kill9()


@pytest.fixture
def local_dir(tmp_path: Path) -> Path:
    path = tmp_path / "local"
    path.mkdir()
    return path


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    group = Processes(tmp_path / "logs")
    try:
        yield group
    finally:
        group.close()


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.fixture
def redis_url() -> Iterator[str | None]:
    """A throwaway redis-server (no persistence) on a free loopback port; None when
    redis-server is not installed (the emulator then keeps key counts in memory)."""
    installed = shutil.which("redis-server") is not None
    with throwaway_redis(timeout=10) as url:
        if installed and url is None:
            pytest.fail("redis-server did not start")
        yield url


# -- the behaviour matrix: scenarios run concurrently, each asserted by its own test ---------

@dataclass(frozen=True)
class Scenario:
    """One `send --local --wait --json` against its own `serve --local --config FILE`."""

    id: str
    config: dict[str, Any] | None
    cache: str
    exit_code: int
    status: str
    error_code: str | None = None
    send_args: tuple[str, ...] = ()
    serve_args: tuple[str, ...] = ()
    serve_env: dict[str, str] = field(default_factory=dict)
    verbose: bool = False
    check: Callable[[ScenarioRun], None] | None = None
    slow: bool = False


@dataclass
class ScenarioRun:
    scenario: Scenario
    send: subprocess.CompletedProcess[str]
    elapsed: float
    stats: dict[str, int]
    serve_exit: int | None
    serve_log: str

    @property
    def event(self) -> dict[str, Any]:
        return one_event(self.send.stdout)

    @property
    def data(self) -> dict[str, Any]:
        return self.event["data"]


def _run_scenario(sc: Scenario, base: Path, group: Processes) -> ScenarioRun:
    local = base / sc.id / "local"
    local.mkdir(parents=True)
    serve_args = list(sc.serve_args)
    if sc.config is not None:
        serve_args += ["--config", str(write_config(base / sc.id / "emulator.json", sc.config))]
    serve = group.serve(local, *serve_args, env=sc.serve_env, verbose=sc.verbose)
    try:
        started = time.monotonic()
        sender = group.spawn(["send", "--local", "--wait", "--json", *cache_args(sc.cache),
                              *sc.send_args], local, name=f"send-{sc.id}")
        rc = sender.wait(150)
        elapsed = time.monotonic() - started
        send = subprocess.CompletedProcess(sender.popen.args, rc, sender.stdout(),
                                           sender.stderr())
        stats = serve.cache_stats(sc.cache)
    finally:
        serve.popen.send_signal(signal.SIGTERM)
        try:
            serve_exit: int | None = serve.wait(15)
        except subprocess.TimeoutExpired:
            serve.kill9()
            serve_exit = None
    return ScenarioRun(sc, send, elapsed, stats, serve_exit, serve.stderr())


@pytest.fixture(scope="module")
def scenario_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[dict[str, cf.Future[ScenarioRun]]]:
    """Start every scenario of the module's SCENARIOS at once (slow ones first, a few at a
    time: they mostly wait on poll intervals) and hand each test its own future."""
    selected = {item.callspec.params["sc"].id for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")}
    scenarios = [sc for sc in request.module.SCENARIOS if sc.id in selected]
    base = tmp_path_factory.mktemp("scenarios")
    group = Processes(base / "logs")
    pool = cf.ThreadPoolExecutor(max_workers=6, thread_name_prefix="scenario")
    futures = {sc.id: pool.submit(_run_scenario, sc, base, group)
               for sc in sorted(scenarios, key=lambda s: not s.slow)}
    try:
        yield futures
    finally:
        for future in futures.values():
            future.cancel()
        group.close()      # running scenarios fail fast: their processes are gone
        pool.shutdown(wait=True, cancel_futures=True)
