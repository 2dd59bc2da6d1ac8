"""The three functions on the real worker code: Python 3.13 and `azure-functions-runtime-v1`.

On 3.13 Azure runs the v1 model through that library. tests/worker/drive_worker.py calls its
handlers as the host does (worker init, functions metadata, function load for each folder,
invocation with a Service Bus trigger payload shaped as extension 5.x sends it, built by the
same code as every fixture: redisflush.local.worker_message) in a separate 3.13 process with
its own venv (.ci/worker-venv: the wheel brings a top-level `tests` package of its own). The
app runs there against the ARM emulator on loopback (started here) and the local bus in a
temporary directory, which the app picks from the worker's environment (WORKER_SETTINGS).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from redisflush.ledger import LedgerRow
from redisflush.local.app import LEDGER_FILE
from redisflush.local.bus import LocalBus
from redisflush.local.emulator import ArmEmulator
from redisflush.local.ledger import SqliteLedger
from redisflush.local.worker_message import received_fields, trigger_metadata

REPO = Path(__file__).resolve().parents[2]
VENV_SCRIPT = REPO / ".ci" / "worker-venv"
DRIVER = Path(__file__).with_name("drive_worker.py")
SUB = "00000000-1111-2222-3333-444444444444"
POLL_QUEUE = "redis-flush-polls"
EVENTS = "redis-flush-events/subscriptions/all"
FOLDERS = ("FlushTrigger", "PollOrchestrator", "LedgerPurge")
BUS_FILE = "bus.sqlite"  # in REDISFLUSH_LOCAL_DIR, as the embedded default keeps it
# The app in a worker runs on the embedded default (local bus and ledger in
# REDISFLUSH_LOCAL_DIR) when its ARM endpoint is the emulator on loopback and no Service Bus
# is configured (redisflush.functions.app_for_environment); Worker drops any ServiceBus*.
# TZ: a zone off UTC (WEBSITE_TIME_ZONE/TZ on a Linux plan), so a naive EnqueuedTimeUtc read as
# local time would show.
# The queue names are set as in Azure, where the host resolves function.json's %...% from them.
WORKER_SETTINGS = {"REDISFLUSH_ALLOWED_SCOPES": f"/subscriptions/{SUB}", "TZ": "Asia/Kolkata",
                   "REDISFLUSH_REQUEST_QUEUE": "redis-flush-requests",
                   "REDISFLUSH_POLL_QUEUE": POLL_QUEUE}
REPLY_QUEUE = "redis-flush-replies"
ANSWER_TIMEOUT = 60.0
pytestmark = pytest.mark.worker


@pytest.fixture(scope="session")
def worker_python() -> str:
    """.venv-worker313's python, built (or reused) by .ci/worker-venv; skip without 3.13."""
    run = subprocess.run(["bash", str(VENV_SCRIPT)], capture_output=True, text=True,
                         timeout=900)
    if run.returncode == 3:
        pytest.skip(f"real-worker test needs Python 3.13: {run.stderr.strip()}")
    assert run.returncode == 0, f".ci/worker-venv failed:\n{run.stderr[-3000:]}"
    return run.stdout.strip().splitlines()[-1]


class Worker:
    """One worker process, driven line by line; its stderr (app and library logs) kept."""

    def __init__(self, python: str, settings: Mapping[str, str], log: Path) -> None:
        # only the settings given: nothing of this shell's REDISFLUSH_*/Service Bus/PYTHON*
        env = {k: v for k, v in os.environ.items() if not k.startswith(
            ("REDISFLUSH_", "ServiceBusConnection", "AZURE_", "PYTHON", "VIRTUAL_ENV"))}
        env.update({"FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsScriptRoot": str(REPO),
                    **settings})
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen([python, str(DRIVER)], cwd=REPO, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log)

    def ask(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"worker exited ({self.proc.poll()}):\n{self.log()}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-4000:]

    def close(self) -> None:
        try:
            self.ask_exit()
        finally:
            try:
                self.proc.wait(timeout=ANSWER_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log.close()

    def ask_exit(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write('{"op": "exit"}\n')
            self.proc.stdin.flush()
            self.proc.stdin.close()

    def invoke_timer(self, name: str, *, past_due: bool = False) -> dict[str, Any]:
        """A timerTrigger invocation: the host's TimerInfo as JSON, no trigger metadata."""
        info = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": None,
                "IsPastDue": past_due}
        return self.ask("invoke", name=name, data={"json": json.dumps(info)},
                        trigger_metadata={})

    def invoke(self, name: str, body: bytes, **fields: Any) -> dict[str, Any]:
        """An invocation as the host sends it for "dataType": "binary" (the body as bytes)."""
        metadata = trigger_metadata(**fields)
        return self.ask("invoke", name=name, data={"bytes": base64.b64encode(body).decode()},
                        trigger_metadata={k: {d.type: d.value} for k, d in metadata.items()})


def settings_for(emulator: ArmEmulator, local_dir: Path, **extra: str) -> dict[str, str]:
    return {"REDISFLUSH_ARM_ENDPOINT": emulator.url, "REDISFLUSH_LOCAL_DIR": str(local_dir),
            **WORKER_SETTINGS, **extra}


@pytest.fixture(scope="module")
def emulator() -> Iterator[ArmEmulator]:
    arm = ArmEmulator().start()
    yield arm
    arm.close()


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local")


@pytest.fixture(scope="module")
def worker(worker_python: str, emulator: ArmEmulator, local_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Worker, dict[str, Any]]]:
    """A worker that went through init, metadata and the load of every folder."""
    w = Worker(worker_python, settings_for(emulator, local_dir),
               tmp_path_factory.mktemp("worker") / "stderr.log")
    try:
        steps = {"init": w.ask("init", app_root=str(REPO)), "metadata": w.ask("metadata")}
        for name in FOLDERS:
            steps[name] = w.ask("load", name=name)
        yield w, steps
    finally:
        w.close()


def request(cache: str) -> bytes:
    rid = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Cache/Redis/{cache}"
    return json.dumps({"resourceId": rid}).encode()


def delivered(message_id: str, sequence_number: int) -> dict[str, Any]:
    """Broker fields of a first delivery that was just enqueued."""
    return dict(message_id=message_id, delivery_count=1, sequence_number=sequence_number,
                enqueued_at=dt.datetime.now(dt.UTC), lock_token=str(uuid.uuid4()),
                content_type="application/json", time_to_live=dt.timedelta(days=1))


def test_every_function_loads_on_the_v1_worker_library(
        worker: tuple[Worker, dict[str, Any]]) -> None:
    w, steps = worker
    assert steps["init"]["status"] == "Success", w.log()
    assert steps["init"]["runtime_version"] == "3.13"
    assert steps["metadata"] == {"status": "Success", "exception": None,
                                 "use_default_metadata_indexing": True}
    for name in FOLDERS:
        assert steps[name] == {"status": "Success", "exception": None}, (name, w.log())


def test_the_timer_purges_expired_ledger_rows_and_keeps_live_ones(
        worker: tuple[Worker, dict[str, Any]], local_dir: Path) -> None:
    w, _ = worker
    now = dt.datetime.now(dt.UTC)
    ledger = SqliteLedger(local_dir / LEDGER_FILE)
    try:
        for rid, expires in (("req-old", now - dt.timedelta(minutes=1)),
                             ("req-live", now + dt.timedelta(hours=1))):
            for key in ("", "/subscriptions/x/resourcegroups/rg/providers/microsoft.cache/"
                            "redis/c"):
                assert ledger.insert(LedgerRow(rid, key, "done", {}, 1, now, expires))
        answer = w.invoke_timer("LedgerPurge")
        assert answer == {"status": "Success", "exception": None}, w.log()
        assert ledger.rows("req-old") == []
        assert len(ledger.rows("req-live")) == 2
    finally:
        ledger.close()


def test_a_request_posts_once_and_schedules_its_poll(
        worker: tuple[Worker, dict[str, Any]], emulator: ArmEmulator, local_dir: Path) -> None:
    w, _ = worker
    posts = emulator.stats()["posts"]
    answer = w.invoke("FlushTrigger", request("cache-worker"), **delivered("req-w1", 1))
    assert answer == {"status": "Success", "exception": None}, w.log()
    assert emulator.stats()["posts"] == posts + 1
    with LocalBus(local_dir / BUS_FILE) as bus:
        (poll,) = bus.peek(POLL_QUEUE)
    assert poll.message_id.startswith("req-w1:") and poll.scheduled_at is not None
    # the scheduled step runs on the same worker, when Service Bus would deliver it
    time.sleep(max(0.0, (poll.scheduled_at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)
    polls = emulator.stats()["polls"]
    fields = {**received_fields(poll), "delivery_count": 1, "lock_token": str(uuid.uuid4())}
    answer = w.invoke("PollOrchestrator", poll.body, **fields)
    assert answer == {"status": "Success", "exception": None}, w.log()
    assert emulator.stats()["polls"] > polls


def test_a_body_that_is_not_utf8_reaches_the_app_as_bytes_and_is_rejected(
        worker: tuple[Worker, dict[str, Any]], emulator: ArmEmulator, local_dir: Path) -> None:
    """With "dataType": "binary" the app sees the bytes sent, so its UTF-8 rule can fire."""
    w, _ = worker
    posts = emulator.stats()["posts"]
    answer = w.invoke("FlushTrigger", b'{"resourceId": "\xff"}', **delivered("req-w2", 2))
    assert answer == {"status": "Success", "exception": None}, w.log()
    assert emulator.stats()["posts"] == posts
    with LocalBus(local_dir / BUS_FILE) as bus:
        events = [m for m in bus.peek(EVENTS) if m.correlation_id == "req-w2"]
    assert [e.application_properties.get("status") for e in events] == ["Rejected"]


def test_the_broker_fields_reach_the_app_as_the_worker_decodes_them(
        worker: tuple[Worker, dict[str, Any]], local_dir: Path) -> None:
    """EnqueuedTimeUtc comes without an offset, so the worker hands a naive datetime; in a
    worker whose zone is not UTC it must still be read as UTC. ReplyTo, ReplyToSessionId and
    CorrelationId come as strings: the reply goes to that session with that correlationId."""
    w, _ = worker
    enqueued = dt.datetime(2026, 11, 28, 12, 0, 5, 123000, tzinfo=dt.UTC)
    fields = {**delivered("req-w4", 4), "enqueued_at": enqueued, "reply_to": REPLY_QUEUE,
              "reply_to_session_id": "wait-w4", "correlation_id": "corr-w4"}
    answer = w.invoke("FlushTrigger", request("not a cache name!"), **fields)
    assert answer == {"status": "Success", "exception": None}, w.log()
    with LocalBus(local_dir / BUS_FILE) as bus:
        (reply,) = [m for m in bus.peek(REPLY_QUEUE) if m.session_id == "wait-w4"]
    event = json.loads(reply.body)
    assert (event["data"]["requestId"], event["data"]["status"]) == ("req-w4", "Rejected")
    assert event["data"]["requestedAt"] == "2026-11-28T12:00:05.123Z"
    assert reply.application_properties["correlationId"] == "corr-w4"


@pytest.mark.parametrize("setting, value", [
    ("REDISFLUSH_TIMEOUT_SECONDS", "5"),
    # the host leaves PollOrchestrator in error without it (its %...% does not resolve) and
    # runs FlushTrigger, which would POST flushes no step follows: every load fails instead
    ("REDISFLUSH_POLL_QUEUE", None),
    ("REDISFLUSH_REQUEST_QUEUE", " "),
])
def test_an_invalid_setting_fails_the_load_not_the_invocation(
        worker_python: str, emulator: ArmEmulator, tmp_path: Path, setting: str,
        value: str | None) -> None:
    settings = settings_for(emulator, tmp_path / "local")
    if value is None:
        del settings[setting]
    else:
        settings[setting] = value
    w = Worker(worker_python, settings, tmp_path / "stderr.log")
    try:
        assert w.ask("init", app_root=str(REPO))["status"] == "Success", w.log()
        for name in FOLDERS:
            answer = w.ask("load", name=name)
            assert answer["status"] == "Failure", (name, answer, w.log())
            assert setting in (answer["exception"] or ""), answer
    finally:
        w.close()
