"""local/runtime.py: one `serve --local` per local dir (an OS lock), the emulator's port never
moved silently, and `stop()` back within its drain limit whatever ARM does."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redisflush.arm import TOTAL_TIMEOUT
from redisflush.bus import OutboundMessage
from redisflush.errors import ConfigurationError
from redisflush.local.runtime import (
    DRAIN_SECONDS,
    LOCK_FILE,
    PORT_FILE,
    LocalRuntime,
    ServeLock,
    build_runtime,
    find_app_root,
    start_emulator,
)
from redisflush.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SUB = "00000000-1111-2222-3333-444444444444"
LOCK_SECONDS = 60  # Service Bus lock: an invocation must end within it


class SilentArm:
    """An ARM that accepts connections, reads the request and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = threading.Semaphore(0)
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()

    def _swallow(self, conn: socket.socket) -> None:
        try:
            if conn.recv(65536):
                self.requests.release()
            while conn.recv(65536):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent_arm() -> Iterator[SilentArm]:
    arm = SilentArm()
    yield arm
    arm.close()


def runtime_on(local_dir: Path, arm_endpoint: str, **kwargs: Any) -> LocalRuntime:
    return build_runtime(find_app_root(REPO), arm_endpoint=arm_endpoint, env={},
                         overrides={"REDISFLUSH_LOCAL_DIR": str(local_dir)}, **kwargs)


def send_flush(runtime: LocalRuntime) -> None:
    body = {"subscriptionId": SUB, "resourceGroup": "rg", "cacheName": "cache-1"}
    runtime.bus.send(runtime.settings.request_queue,
                     [OutboundMessage(json.dumps(body).encode(), "msg-1")])


# --- one runtime per local dir -----------------------------------------------------------------

def test_a_second_runtime_on_the_same_local_dir_is_refused_in_one_line(tmp_path: Path,
                                                                       silent_arm: SilentArm):
    first = runtime_on(tmp_path, silent_arm.url)
    try:
        with pytest.raises(ConfigurationError) as info:
            runtime_on(tmp_path, silent_arm.url)
        message = str(info.value)
        assert message.startswith(f"another serve --local is running on {tmp_path} "
                                  f"(pid {os.getpid()})")
        assert "\n" not in message
    finally:
        first.stop()
    runtime_on(tmp_path, silent_arm.url).stop()  # released by stop()


def test_another_local_dir_is_another_lock(tmp_path: Path, silent_arm: SilentArm) -> None:
    first = runtime_on(tmp_path / "a", silent_arm.url)
    second = runtime_on(tmp_path / "b", silent_arm.url)
    first.stop()
    second.stop()


HOLDER = """
import sys, time
from pathlib import Path
from redisflush.local.runtime import ServeLock
ServeLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_the_lock_is_the_os_s_and_dies_with_its_process(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigurationError, match=rf"\(pid {holder.pid}\)"):
            ServeLock(tmp_path).acquire()
        os.kill(holder.pid, signal.SIGKILL)  # no cleanup code runs: the OS drops the lock
        holder.wait(10)
        lock = ServeLock(tmp_path).acquire()
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def test_a_failed_build_releases_the_lock(tmp_path: Path, silent_arm: SilentArm) -> None:
    with pytest.raises(ConfigurationError, match="REDISFLUSH_MAX_TARGETS"):
        build_runtime(find_app_root(REPO), arm_endpoint=silent_arm.url, env={},
                      overrides={"REDISFLUSH_LOCAL_DIR": str(tmp_path),
                                 "REDISFLUSH_MAX_TARGETS": "0"})
    runtime_on(tmp_path, silent_arm.url).stop()


# --- the emulator's port -------------------------------------------------------------------------

def test_a_busy_remembered_port_is_an_error_not_a_move(tmp_path: Path) -> None:
    squatter = socket.create_server(("127.0.0.1", 0))
    port = squatter.getsockname()[1]
    (tmp_path / PORT_FILE).write_text(str(port))
    try:
        with pytest.raises(ConfigurationError) as info:
            start_emulator(Settings(local_dir=tmp_path))
    finally:
        squatter.close()
    message = str(info.value)
    assert f"port {port}" in message and str(tmp_path / PORT_FILE) in message
    assert "delete" in message and "\n" not in message
    assert (tmp_path / PORT_FILE).read_text() == str(port)  # not moved


def test_a_busy_explicit_port_is_an_error(tmp_path: Path) -> None:
    squatter = socket.create_server(("127.0.0.1", 0))
    port = squatter.getsockname()[1]
    try:
        with pytest.raises(ConfigurationError, match=rf"--emulator-port {port} is busy"):
            start_emulator(Settings(local_dir=tmp_path), port=port)
    finally:
        squatter.close()
    assert not (tmp_path / PORT_FILE).exists()


def test_the_remembered_port_is_reused(tmp_path: Path) -> None:
    first = start_emulator(Settings(local_dir=tmp_path))
    url = first.url
    first.close()
    second = start_emulator(Settings(local_dir=tmp_path))
    try:
        assert second.url == url
    finally:
        second.close()


def test_a_busy_remembered_port_fails_the_build_and_frees_the_lock(tmp_path: Path) -> None:
    squatter = socket.create_server(("127.0.0.1", 0))
    (tmp_path / PORT_FILE).write_text(str(squatter.getsockname()[1]))
    try:
        with pytest.raises(ConfigurationError, match="busy"):
            build_runtime(find_app_root(REPO), env={},
                          overrides={"REDISFLUSH_LOCAL_DIR": str(tmp_path)})
    finally:
        squatter.close()
    ServeLock(tmp_path).acquire().release()


# --- stop within the drain limit -----------------------------------------------------------------

def test_the_limits_fit_inside_each_other() -> None:
    assert TOTAL_TIMEOUT < DRAIN_SECONDS < LOCK_SECONDS


def test_stop_returns_in_time_with_an_arm_that_never_answers(tmp_path: Path,
                                                            silent_arm: SilentArm) -> None:
    runtime = runtime_on(tmp_path, silent_arm.url, arm_total_timeout=1.0, drain_seconds=5.0)
    runtime.start()
    send_flush(runtime)
    assert silent_arm.requests.acquire(timeout=10), "the flush POST never reached ARM"
    started = time.monotonic()
    drained = runtime.stop()
    took = time.monotonic() - started
    assert drained is True  # the ARM call was cut at its limit, so the invocation ended
    assert took < 5.0


def test_stop_returns_at_the_drain_limit_even_if_arm_outlasts_it(tmp_path: Path,
                                                                 silent_arm: SilentArm) -> None:
    runtime = runtime_on(tmp_path, silent_arm.url, arm_total_timeout=30.0, drain_seconds=1.0)
    runtime.start()
    send_flush(runtime)
    assert silent_arm.requests.acquire(timeout=10)
    started = time.monotonic()
    drained = runtime.stop()
    assert drained is False and time.monotonic() - started < 2.0
    silent_arm.close()  # lets the leftover call end now
