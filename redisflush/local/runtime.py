"""The embedded default put together: local bus + ARM emulator + local host, on one machine.

`serve --local`, `demo` and the end-to-end tests all start it the same way, so what the
tests exercise is what a user runs. One runtime per local dir: a second one would share the
bus but not the emulator, and its polls would reach the wrong emulator (`ServeLock`); the
emulator keeps its port across restarts because poll messages carry URLs with that port.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import functions
from ..arm import TOTAL_TIMEOUT
from ..errors import ConfigurationError
from ..logtext import printable
from ..settings import Settings
from .app import local_app
from .bus import LocalBus
from .function_folders import load_functions, load_timers, read_values
from .host import LocalHost

log = logging.getLogger("redisflush.local")
EVENTS_SUBSCRIPTION = "all"
BUS_FILE, EMULATOR_FILE, PORT_FILE = "bus.sqlite", "emulator.sqlite", "emulator.port"
LOCK_FILE = "serve.lock"
# How long stop() waits for in-flight invocations: above one ARM call's whole limit, so a
# call that hangs is cut by the ARM client before the drain gives up on it.
DRAIN_SECONDS = 30.0


class ServeLock:
    """An OS lock on LOCAL_DIR/serve.lock, held while a runtime lives on that local dir.

    flock (LockFileEx on Windows) is released by the OS when the process dies, so a crash
    never leaves a stale lock behind; the file only says which pid holds it.
    """

    def __init__(self, local_dir: Path) -> None:
        self.path = local_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> ServeLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _try_lock(fd)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            raise ConfigurationError(
                f"another serve --local is running on {self.path.parent} (pid {holder}): "
                "stop it, or set REDISFLUSH_LOCAL_DIR to another folder") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the lock


def _try_lock(fd: int) -> None:
    """Take an exclusive lock without waiting; OSError when another process holds it."""
    if sys.platform == "win32":
        import msvcrt
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def find_app_root(start: Path | None = None) -> Path:
    """The folder holding host.json: the given one, the current one, or this checkout's."""
    for candidate in ([start] if start else []) + [Path.cwd(), Path(__file__).parents[2]]:
        if (candidate / "host.json").is_file():
            return candidate.resolve()
    if start:
        raise ConfigurationError(f"--app-root: {start} has no host.json")
    raise ConfigurationError("no host.json here: run from the app root or pass --app-root")


def local_settings(app_root: Path, env: Mapping[str, str] | None = None,
                   overrides: Mapping[str, str] | None = None) -> tuple[Settings, dict[str, str]]:
    values = read_values(app_root, env)
    values.update(overrides or {})
    settings = Settings.from_env(values, app_root)
    if not settings.local_dir.is_absolute():
        settings = Settings.from_env({**values, "REDISFLUSH_LOCAL_DIR":
                                      str(app_root / settings.local_dir)}, app_root)
    _usable_local_dir(settings.local_dir)
    return settings, values


def _usable_local_dir(path: Path) -> None:
    """REDISFLUSH_LOCAL_DIR must be a folder (made when missing). Checked here, where every
    local command (send, watch, serve, demo) reads its settings, so a file in its place is one
    line naming the setting and the rule (README, "Settings"), not a bare OSError such as
    `File exists` from whichever part first touched it."""
    shown = printable(str(path), 400)  # one line even when the value holds a newline
    try:
        if path.exists() and not path.is_dir():
            raise ConfigurationError(f"REDISFLUSH_LOCAL_DIR: '{shown}' must be a folder "
                                     "(it names a file); set it to a folder or leave it unset")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"REDISFLUSH_LOCAL_DIR: '{shown}' must be a folder this user "
                                 f"can create ({exc.strerror or exc})") from None


def open_bus(settings: Settings) -> LocalBus:
    """The local bus file with this app's entities, set up as the README asks of Azure."""
    bus = LocalBus(settings.local_dir / BUS_FILE)
    bus.ensure_queue(settings.request_queue, max_delivery_count=10)
    bus.ensure_queue(settings.poll_queue, max_delivery_count=10)
    bus.ensure_topic(settings.events_topic)
    bus.ensure_subscription(settings.events_topic, EVENTS_SUBSCRIPTION)
    bus.ensure_queue(settings.reply_queue, requires_session=True)
    return bus


@dataclass
class LocalRuntime:
    """A running local stack; `stop()` drains in-flight invocations for at most
    `drain_seconds`, then returns whatever they are doing."""

    settings: Settings
    bus: LocalBus
    host: LocalHost
    emulator: Any = None
    lock: ServeLock | None = None
    drain_seconds: float = DRAIN_SECONDS
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> LocalRuntime:
        self._thread = threading.Thread(target=self.host.run, name="local-host", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> bool:
        """Stop receiving, wait for in-flight calls up to the drain limit, then close.
        True when everything drained; False when calls were left running (their messages
        are redelivered once their locks expire)."""
        deadline = time.monotonic() + self.drain_seconds
        self.host.stop()
        drained = True
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
            drained = not self._thread.is_alive()
            if not drained:
                log.warning("stopped with invocations still running after %.0f s: their "
                            "messages will be redelivered", self.drain_seconds)
        if self.emulator is not None:
            self.emulator.close()
        functions.install(None)
        if self.lock is not None:
            self.lock.release()
        return drained

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_emulator(settings: Settings, *, port: int = 0, config_path: str | None = None,
                   config: Any = None, redis_url: str | None = None) -> Any:
    """The ARM emulator, on the port it used last time for this local dir (so poll URLs in
    messages stay valid across a restart) and with its operations kept in the local dir."""
    from .emulator import ArmEmulator, load_config
    from .keystore import make_keystore

    port_file = settings.local_dir / PORT_FILE
    remembered = False
    if not port and port_file.is_file():
        text = port_file.read_text().strip()
        if text.isdigit() and 0 < int(text) < 65536:
            port, remembered = int(text), True
    cfg = config if config is not None else (load_config(config_path) if config_path else None)
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    try:
        emulator = ArmEmulator(cfg, port=port, keystore=make_keystore(redis_url),
                               state_path=str(settings.local_dir / EMULATOR_FILE)).start()
    except OSError as exc:
        if not port:
            raise
        # Never move the port silently: queued poll messages carry URLs with this port.
        if remembered:
            raise ConfigurationError(
                f"the ARM emulator's port {port} (remembered in {port_file}, which queued "
                f"polls point at) is busy ({exc.strerror or exc}): stop what uses it, or "
                f"delete {port_file} to start on a new port (polls queued for the old port "
                "then fail)") from None
        raise ConfigurationError(f"--emulator-port {port} is busy "
                                 f"({exc.strerror or exc}): choose another port") from None
    port_file.write_text(emulator.url.rsplit(":", 1)[1])
    return emulator


def build_runtime(app_root: Path, *, arm_endpoint: str | None = None, concurrency: int = 8,
                  emulator_port: int = 0, emulator_config: str | None = None,
                  emulator_config_obj: Any = None, redis_url: str | None = None,
                  env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, str] | None = None,
                  arm_total_timeout: float = TOTAL_TIMEOUT,
                  drain_seconds: float = DRAIN_SECONDS) -> LocalRuntime:
    """Everything `serve --local` runs, not yet started; holds the local dir's serve lock
    (ConfigurationError when another runtime holds it) until `LocalRuntime.stop()`."""
    settings, values = local_settings(app_root, env, overrides)
    lock = ServeLock(settings.local_dir).acquire()
    emulator = None
    try:
        if arm_endpoint is None:
            emulator = start_emulator(settings, port=emulator_port, config_path=emulator_config,
                                      config=emulator_config_obj, redis_url=redis_url)
            arm_endpoint = emulator.url
        values["REDISFLUSH_ARM_ENDPOINT"] = arm_endpoint
        settings = Settings.from_env({**values, "REDISFLUSH_LOCAL_DIR":
                                      str(settings.local_dir)}, app_root)
        bus = open_bus(settings)
        app = local_app(settings, bus, arm_total_timeout=arm_total_timeout)
        functions.install(app)
        host = LocalHost(bus, load_functions(app_root, values), concurrency=concurrency,
                         timers=load_timers(app_root, values))
    except BaseException:
        if emulator is not None:
            emulator.close()
        lock.release()
        raise
    return LocalRuntime(settings, bus, host, emulator, lock, drain_seconds)
