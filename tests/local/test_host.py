"""The local host reads the app the way the Functions host does and invokes like the worker."""
from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pytest
from azure.functions.servicebus import ServiceBusMessage as WorkerMessage

from redisflush.bus import OutboundMessage
from redisflush.errors import ConfigurationError
from redisflush.local.bus import LocalBus
from redisflush.local.host import (FunctionSpec, LocalHost, binding_message, load_functions,
                                   read_values, resolve)

REPO = Path(__file__).resolve().parents[2]


def test_read_values_prefers_local_settings_then_sample_and_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "local.settings.sample.json").write_text(json.dumps(
        {"Values": {"REDISFLUSH_POLL_QUEUE": "from-sample"}}))
    assert read_values(tmp_path, {})["REDISFLUSH_POLL_QUEUE"] == "from-sample"
    (tmp_path / "local.settings.json").write_text(json.dumps(
        {"Values": {"REDISFLUSH_POLL_QUEUE": "from-local", "OTHER": "x"}}))
    assert read_values(tmp_path, {})["REDISFLUSH_POLL_QUEUE"] == "from-local"
    values = read_values(tmp_path, {"REDISFLUSH_POLL_QUEUE": "from-env", "PATH": "/bin"})
    assert values["REDISFLUSH_POLL_QUEUE"] == "from-env"
    assert "PATH" not in values  # unrelated environment does not leak into app settings


def test_read_values_reports_broken_json_by_file(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text("{nope")
    with pytest.raises(ConfigurationError, match="local.settings.json"):
        read_values(tmp_path, {})


def test_resolve_percent_settings() -> None:
    assert resolve("%Q%", {"Q": "queue-a"}, "f") == "queue-a"
    assert resolve("literal", {}, "f") == "literal"
    with pytest.raises(ConfigurationError, match="app setting Q is not set"):
        resolve("%Q%", {}, "FlushTrigger/function.json")


def test_load_functions_reads_this_app() -> None:
    values = read_values(REPO, {})
    specs = {s.name: s for s in load_functions(REPO, values)}
    assert set(specs) == {"FlushTrigger", "PollOrchestrator"}
    assert specs["FlushTrigger"].queue == "redis-flush-requests"
    assert specs["PollOrchestrator"].queue == "redis-flush-polls"
    assert specs["FlushTrigger"].connection == "ServiceBusConnection"


def test_load_functions_needs_a_trigger(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no function.json"):
        load_functions(tmp_path, {})


def test_binding_message_carries_what_the_worker_gives_main() -> None:
    now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)
    from redisflush.bus import ReceivedMessage
    received = ReceivedMessage(body=b"{}", message_id="m-1", sequence_number=7, delivery_count=2,
                               enqueued_at=now, lock_token="tok", locked_until=now,
                               content_type="application/json", correlation_id="c",
                               reply_to="replies", reply_to_session_id="s",
                               application_properties={"requestId": "r"})
    msg = binding_message(received)
    assert isinstance(msg, WorkerMessage)
    assert (msg.get_body(), msg.message_id, msg.delivery_count, msg.enqueued_time_utc,
            msg.reply_to, msg.reply_to_session_id, msg.correlation_id, msg.sequence_number) == \
        (b"{}", "m-1", 2, now, "replies", "s", "c", 7)
    assert msg.application_properties == {"requestId": "r"}


def test_host_completes_on_return_abandons_on_exception_and_bounds_concurrency(
        tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus.sqlite")
    bus.ensure_queue("q", max_delivery_count=2)
    active, peak, seen = [0], [0], []
    lock = threading.Lock()
    done = threading.Event()

    def main(msg: WorkerMessage) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            seen.append((msg.message_id, msg.delivery_count))
        try:
            threading.Event().wait(0.05)
            if msg.message_id == "bad":
                raise RuntimeError("boom")
        finally:
            with lock:
                active[0] -= 1
                if len(seen) >= 11:
                    done.set()

    bus.send("q", [OutboundMessage(b"x", f"m{i}") for i in range(9)] +
             [OutboundMessage(b"x", "bad")])
    host = LocalHost(bus, [FunctionSpec("F", "q", "c", main)], concurrency=3)
    thread = threading.Thread(target=host.run)
    thread.start()
    assert done.wait(10)
    host.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert peak[0] <= 3
    assert sorted(d for m, d in seen if m == "bad") == [1, 2]  # abandoned, then redelivered
    assert bus.counts("q")["active"] == 0
    # abandoning the last allowed delivery dead-letters it, as Service Bus does
    dead = bus.peek("q/$deadletterqueue")
    assert [m.message_id for m in dead] == ["bad"]
    assert dead[0].application_properties["DeadLetterReason"] == "MaxDeliveryCountExceeded"
