"""The local host reads the app the way the Functions host does and hands `main` what the
worker hands it in Azure (one builder with the test fixtures: redisflush.local.worker_message)."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

import pytest
from azure.functions.servicebus import ServiceBusMessage as WorkerMessage

from redisflush.bus import OutboundMessage, ReceivedMessage
from redisflush.errors import ConfigurationError
from redisflush.local.bus import LocalBus
from redisflush.local.function_folders import (
    FunctionSpec,
    TimerSpec,
    load_functions,
    load_timers,
    read_values,
    resolve,
)
from redisflush.local.host import LocalHost, binding_message
from tests.support.worker_messages import dotnet_text, function_data_type, outbound_worker_message

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def test_read_values_prefers_local_settings_then_sample_and_environment_wins(
        tmp_path: Path) -> None:
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


def test_a_non_utf8_function_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "FlushTrigger").mkdir()
    (tmp_path / "FlushTrigger" / "function.json").write_bytes(b'{"bindings": "\xff"}')
    with pytest.raises(ConfigurationError, match=r"FlushTrigger/function\.json: must be UTF-8 "
                       r"JSON \(byte 0xff at offset 14 is not UTF-8\)"):
        load_functions(tmp_path, {})


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


def test_load_timers_reads_this_apps_hourly_ledger_purge() -> None:
    (timer,) = load_timers(REPO, read_values(REPO, {}))
    assert (timer.name, timer.schedule) == ("LedgerPurge", "0 17 * * * *")
    assert timer.next_after(NOW) == NOW.replace(minute=17)
    assert timer.next_after(NOW.replace(minute=17)) == NOW.replace(hour=13, minute=17)


def test_a_timer_needs_both_its_day_of_month_and_day_of_week_as_ncrontab_does() -> None:
    """`0 0 0 13 * 5`: Fridays the 13th only (cron's OR rule would add every Friday)."""
    timer = TimerSpec("T", "0 0 0 13 * 5", lambda t: None)
    first = timer.next_after(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    assert first == dt.datetime(2025, 6, 13, tzinfo=dt.UTC)
    assert timer.next_after(first) == dt.datetime(2026, 2, 13, tzinfo=dt.UTC)


def test_a_folder_without_timers_needs_no_croniter(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "croniter", None)  # importing it now fails
    assert load_timers(tmp_path, {}) == []


def _timer_folder(tmp_path: Path, **binding: object) -> None:
    (tmp_path / "T").mkdir(exist_ok=True)
    (tmp_path / "T" / "function.json").write_text(json.dumps({"bindings": [
        {"name": "timer", "type": "timerTrigger", "direction": "in", **binding}]}))


@pytest.mark.parametrize(("binding", "says"), [
    ({"schedule": "0 17 * * *"}, "not an NCRONTAB expression of six fields"),
    ({"schedule": "0 61 * * * *"}, "not an NCRONTAB expression of six fields"),
    ({}, "not an NCRONTAB expression of six fields"),
    ({"schedule": "%PURGE_AT%"}, "app setting PURGE_AT is not set"),
    ({"schedule": "0 0 0 L * *"}, "not an NCRONTAB expression"),
    ({"schedule": "0 0 0 * * 5#3"}, "not an NCRONTAB expression"),
    ({"schedule": "0 17 * * * *", "runOnStartup": True}, "runOnStartup is not supported"),
])
def test_load_timers_refuses_a_bad_timer_naming_its_file(
        tmp_path: Path, binding: dict[str, object], says: str) -> None:
    _timer_folder(tmp_path, **binding)
    with pytest.raises(ConfigurationError, match="T/function.json: .*" + says):
        load_timers(tmp_path, {})


def test_host_runs_a_timer_at_its_schedule_one_run_at_a_time(tmp_path: Path) -> None:
    """Every second, with a run that takes 2.5 s: the times that come while it runs pass."""
    from azure.functions.timer import TimerRequest

    bus = LocalBus(tmp_path / "bus.sqlite")
    bus.ensure_queue("q")
    runs: list[tuple[float, float]] = []
    seen: list[object] = []
    two = threading.Event()

    def main(timer: TimerRequest) -> None:
        started = time.monotonic()
        seen.append(timer)
        threading.Event().wait(2.5 if not runs else 0.0)
        runs.append((started, time.monotonic()))
        if len(runs) == 2:
            two.set()

    host = LocalHost(bus, [FunctionSpec("F", "q", "c", lambda m: None)],
                     timers=[TimerSpec("T", "* * * * * *", main)])
    thread = threading.Thread(target=host.run)
    began = time.monotonic()
    thread.start()
    try:
        assert two.wait(10)
    finally:
        host.stop()
        thread.join(10)
    (first_start, first_end), (second_start, _) = runs[:2]
    assert first_start - began <= 1.2  # the first whole second after start
    assert second_start >= first_end  # never two at once
    assert all(isinstance(t, TimerRequest) and not t.past_due for t in seen)


def test_this_app_takes_its_bodies_as_bytes() -> None:
    """Both triggers say "dataType": "binary" (why: tests/support/worker_messages.py)."""
    for folder in ("FlushTrigger", "PollOrchestrator"):
        doc = json.loads((REPO / folder / "function.json").read_text())
        (binding,) = doc["bindings"]
        assert function_data_type(binding) == "binary", folder
    specs = load_functions(REPO, read_values(REPO, {}))
    assert {s.data_type for s in specs} == {"binary"}


def test_data_type_defaults_to_string_and_refuses_what_a_trigger_cannot_take() -> None:
    assert function_data_type({"type": "serviceBusTrigger"}) == "string"
    with pytest.raises(ValueError, match="stream"):
        function_data_type({"dataType": "stream"})


def test_load_functions_reports_a_bad_data_type_by_file(tmp_path: Path) -> None:
    (tmp_path / "F").mkdir()
    (tmp_path / "F" / "function.json").write_text(json.dumps({"bindings": [
        {"name": "msg", "type": "serviceBusTrigger", "direction": "in", "dataType": "json",
         "queueName": "q"}]}))
    with pytest.raises(ConfigurationError, match="function.json: dataType 'json'"):
        load_functions(tmp_path, {})


@pytest.mark.parametrize("doc, says", [
    ({"bindings": [1]}, "a list of objects"), ({"bindings": {}}, "a list of objects"),
    ([{"type": "serviceBusTrigger"}], "a list of objects"),
    ({"bindings": [{"type": "serviceBusTrigger", "queueName": 5}]},
     "queueName: must be a string, not int"),
    ({"bindings": [{"type": "serviceBusTrigger"}]}, "only queue triggers are supported"),
])
def test_a_function_json_the_host_could_not_read_names_its_file(
        tmp_path: Path, doc: object, says: str) -> None:
    """One line naming the file, never an AttributeError, and never a serve that starts
    without the trigger and leaves its queue unread."""
    (tmp_path / "F").mkdir()
    (tmp_path / "F" / "function.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigurationError, match="F/function.json: .*" + says):
        load_functions(tmp_path, {})


def received(body: bytes = b"{}", **overrides: object) -> ReceivedMessage:
    fields: dict[str, object] = dict(
        body=body, message_id="m-1", sequence_number=7, delivery_count=2, enqueued_at=NOW,
        lock_token="tok", locked_until=NOW + dt.timedelta(minutes=1),
        content_type="application/json", correlation_id="c", reply_to="replies",
        reply_to_session_id="s", subject="subj", application_properties={"requestId": "r"},
        scheduled_at=NOW - dt.timedelta(seconds=5), entity="q")
    fields.update(overrides)
    return ReceivedMessage(**fields)  # type: ignore[arg-type]


def test_binding_message_is_what_azure_hands_main() -> None:
    msg = binding_message(received())
    assert isinstance(msg, WorkerMessage)
    assert (msg.get_body(), msg.message_id, msg.delivery_count, msg.reply_to,
            msg.reply_to_session_id, msg.correlation_id, msg.sequence_number, msg.lock_token,
            msg.content_type, msg.subject, msg.label) == \
        (b"{}", "m-1", 2, "replies", "s", "c", 7, "tok", "application/json", "subj", "subj")
    # EnqueuedTimeUtc has no offset: the worker returns a naive datetime (UTC)
    assert msg.enqueued_time_utc == NOW.replace(tzinfo=None)
    assert msg.enqueued_time_utc.tzinfo is None
    assert msg.application_properties == msg.user_properties == {"requestId": "r"}
    assert msg.expires_at_utc is not None  # no TTL on the local bus: DateTimeOffset.MaxValue
    # never sent by the extension, whatever the broker knows
    assert (msg.locked_until, msg.scheduled_enqueue_time_utc, msg.state,
            msg.enqueued_sequence_number, msg.time_to_live) == (None, None, None, None, None)
    metadata = msg.metadata
    assert isinstance(metadata, dict)
    assert {"MessageId", "DeliveryCount", "EnqueuedTimeUtc", "EnqueuedTime", "ExpiresAtUtc",
            "ApplicationProperties", "UserProperties", "LockToken", "MessageActions"
            } <= set(metadata)
    assert not {"LockedUntil", "ScheduledEnqueueTimeUtc", "State",
                "EnqueuedSequenceNumber", "sys"} & set(metadata)
    assert metadata["EnqueuedTime"] == "2026-11-28T12:00:00+00:00"
    assert "SessionId" not in metadata  # nulls are left out


def test_binding_message_leaves_out_what_the_message_does_not_carry() -> None:
    msg = binding_message(received(reply_to=None, reply_to_session_id=None, correlation_id=None,
                                   content_type=None, subject=None,
                                   application_properties={}))
    assert (msg.reply_to, msg.correlation_id, msg.content_type, msg.subject) == (None,) * 4
    assert msg.application_properties == msg.user_properties == {}


def test_binary_keeps_the_exact_bytes_and_string_does_not() -> None:
    body = b'{"resourceId": "\xff"}'
    assert binding_message(received(body), data_type="binary").get_body() == body
    text = binding_message(received(body), data_type="string").get_body()
    assert text == '{"resourceId": "\ufffd"}'.encode()  # U+FFFD: UTF-8 checks cannot fire


def test_a_string_body_writes_its_json_properties_over_the_metadata() -> None:
    """What the Functions host does with a JSON string trigger value (and binary avoids)."""
    body = b'{"replyTo": "elsewhere", "deliveryCount": 9, "requestId": "x", "ids": [1]}'
    as_string = binding_message(received(body), data_type="string")
    assert (as_string.reply_to, as_string.delivery_count) == ("elsewhere", 9)
    assert as_string.metadata["requestId"] == "x" and "ids" not in as_string.metadata
    as_bytes = binding_message(received(body), data_type="binary")
    assert (as_bytes.reply_to, as_bytes.delivery_count) == ("replies", 2)


def test_dotnet_text_is_json_net_iso() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=dt.UTC)
    assert dotnet_text(moment, offset=False) == "2026-01-02T03:04:05.12"
    assert dotnet_text(moment.replace(microsecond=0), offset=True) == \
        "2026-01-02T03:04:05+00:00"
    # another zone is given in UTC; fields are zero-padded as strftime pads them
    east = dt.datetime(2030, 12, 31, 23, 59, 59, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert dotnet_text(east, offset=False) == "2030-12-31T21:59:59.000001"
    assert dotnet_text(east, offset=False)[:19] == \
        east.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_local_host_and_fixtures_build_the_same_message() -> None:
    """One builder: the memory bus pump and the local host hand `main` the same thing."""
    out = OutboundMessage(b'{"a": 1}', "m-1", correlation_id="c", reply_to="replies",
                          application_properties={"requestId": "r"})
    from_fixture = outbound_worker_message(out, enqueued_at=NOW, delivery_count=2,
                                           sequence_number=7)
    from_host = binding_message(received(b'{"a": 1}', content_type="application/json",
                                         reply_to_session_id=None, subject=None))
    volatile = {"LockToken", "Client"}
    assert {k: v for k, v in from_fixture.metadata.items() if k not in volatile} == \
        {k: v for k, v in from_host.metadata.items() if k not in volatile}


def test_host_hands_main_the_bytes_and_no_sys_entry(tmp_path: Path) -> None:
    """The host drops the `sys` binding data (not RPC friendly), so the worker never sees it."""
    bus = LocalBus(tmp_path / "bus.sqlite")
    seen: list[WorkerMessage] = []
    done = threading.Event()

    def main(msg: WorkerMessage) -> None:
        seen.append(msg)
        done.set()

    bus.send("q", [OutboundMessage(b"\xff not text", "m-1")])
    host = LocalHost(bus, [FunctionSpec("F", "q", "c", main, "binary")])
    thread = threading.Thread(target=host.run)
    thread.start()
    assert done.wait(10)
    host.stop()
    thread.join(10)
    (msg,) = seen
    assert msg.get_body() == b"\xff not text"
    assert "sys" not in msg.metadata
    assert msg.enqueued_time_utc is not None and msg.enqueued_time_utc.tzinfo is None


def test_a_host_with_every_slot_taken_waits_without_receiving_and_wakes_on_a_free_slot(
        tmp_path: Path) -> None:
    """Saturated, the loop must not spin (it would starve the invocations of the GIL) nor
    receive; a call that returns hands its slot to the next message at once."""
    bus = LocalBus(tmp_path / "bus.sqlite")
    release, started = threading.Event(), []

    def main(msg: WorkerMessage) -> None:
        started.append((msg.message_id, time.monotonic()))
        if msg.message_id == "m0":
            release.wait(10)

    bus.send("q", [OutboundMessage(b"x", "m0"), OutboundMessage(b"x", "m1")])
    host = LocalHost(bus, [FunctionSpec("F", "q", "c", main)], concurrency=1)
    passes, receives = [0], [0]
    dispatch, receive = host._dispatch_once, bus.receive

    def counted_dispatch() -> bool:
        passes[0] += 1
        return dispatch()

    def counted_receive(*args: object, **kwargs: object) -> list[ReceivedMessage]:
        receives[0] += 1
        return receive(*args, **kwargs)  # type: ignore[arg-type]

    host._dispatch_once = counted_dispatch  # type: ignore[method-assign]
    bus.receive = counted_receive  # type: ignore[method-assign]
    thread = threading.Thread(target=host.run)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not started and time.monotonic() < deadline:
            time.sleep(0.01)
        passes[0] = receives[0] = 0
        time.sleep(0.4)  # m0 holds the one slot
        assert receives[0] == 0 and passes[0] <= 40  # a wait per pass, no spinning
        freed = time.monotonic()
        release.set()
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [m for m, _ in started] == ["m0", "m1"]
        assert started[1][1] - freed < 0.5
    finally:
        release.set()
        host.stop()
        thread.join(10)
        bus.close()


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


def test_the_invocation_line_escapes_what_the_sender_wrote(tmp_path, caplog):
    """A newline in a MessageId or a requestId property must not forge a second log line."""
    import datetime as dt
    import logging

    from redisflush.bus import ReceivedMessage
    from redisflush.local.bus import LocalBus
    from redisflush.local.function_folders import FunctionSpec
    from redisflush.local.host import LocalHost

    bus = LocalBus(tmp_path / "bus.sqlite")
    spec = FunctionSpec("FlushTrigger", "q", "ServiceBusConnection", lambda msg: None)
    host = LocalHost(bus, [spec], concurrency=1)
    now = dt.datetime.now(dt.UTC)
    message = ReceivedMessage(b"{}", "m1\nFORGED level=ERROR", 1, 1, now, "tok", now,
                              application_properties={"requestId": "r\r\nFORGED"}, entity="q")
    assert host._take_slots("FlushTrigger", 1) == 1
    with caplog.at_level(logging.INFO, logger="redisflush.host"):
        host._invoke(spec, message)
    lines = [r.getMessage() for r in caplog.records if r.name == "redisflush.host"]
    assert len(lines) == 1 and "\n" not in lines[0] and "\r" not in lines[0]
    assert "m1\\nFORGED" in lines[0] and "r\\r\\nFORGED" in lines[0]


def test_the_host_lets_strptime_keep_every_format_azure_functions_tries(
        tmp_path: Path) -> None:
    import _strptime

    from redisflush.local.host import STRPTIME_FORMATS_KEPT

    with LocalBus(tmp_path / "bus.sqlite") as local_bus:
        LocalHost(local_bus, [FunctionSpec("F", "q", "c", lambda m: None)])
    assert _strptime._CACHE_MAX_SIZE >= STRPTIME_FORMATS_KEPT  # type: ignore[attr-defined]


def test_importing_the_functions_glue_lets_strptime_keep_every_format() -> None:
    """The Azure worker imports redisflush.functions from a function folder: the same room
    for azure-functions' date formats as the local host gives them."""
    import subprocess
    import sys

    from redisflush.functions import STRPTIME_FORMATS_KEPT

    out = subprocess.run([sys.executable, "-c", "import _strptime, redisflush.functions; "
                          "print(_strptime._CACHE_MAX_SIZE)"], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2]).stdout
    assert int(out) >= STRPTIME_FORMATS_KEPT


def test_trigger_metadata_json_is_what_json_dumps_writes() -> None:
    """The builder writes the Json.NET text by hand (no json.dumps per field): the same text
    json.dumps gives for the same values, non-ASCII and escapes included."""
    import re

    from redisflush.local.worker_message import NO_EXPIRY, trigger_metadata

    props = {"requestId": "r\u00e9\"1", "n": 3, "f": 1.5, "b": True}
    md = trigger_metadata(message_id="m", delivery_count=2, sequence_number=10**12,
                          enqueued_at=dt.datetime(2026, 1, 2, 3, 4, 5, 120000),
                          lock_token="t", application_properties=props,
                          time_to_live=dt.timedelta(minutes=5), namespace="ns\u00e9")

    def dumps(value: object) -> str:
        return json.dumps(value, separators=(",", ":"))

    assert md["DeliveryCount"].value == "2" and md["SequenceNumber"].value == dumps(10**12)
    assert md["EnqueuedTimeUtc"].value == dumps("2026-01-02T03:04:05.12")
    assert md["EnqueuedTime"].value == dumps("2026-01-02T03:04:05.12+00:00")
    assert md["ExpiresAtUtc"].value == dumps("2026-01-02T03:09:05.12")
    assert md["ExpiresAt"].value == dumps("2026-01-02T03:09:05.12+00:00")
    assert md["ApplicationProperties"].value == md["UserProperties"].value == dumps(props)
    uuid_text = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    client = json.loads(md["Client"].value)
    assert md["Client"].value == dumps(client) and re.fullmatch(
        "ns\u00e9-" + uuid_text, client["Identifier"])
    assert list(client) == ["FullyQualifiedNamespace", "IsClosed", "TransportType",
                            "Identifier"] and client["FullyQualifiedNamespace"] == "ns\u00e9"
    assert "sys" not in md
    # one ServiceBusClient for the host's life, so one Identifier on every message
    again = trigger_metadata(message_id="m2", delivery_count=1, sequence_number=11,
                             enqueued_at=dt.datetime(2026, 1, 2), lock_token="t2",
                             namespace="ns\u00e9")
    assert json.loads(again["Client"].value)["Identifier"] == client["Identifier"]
    no_ttl = trigger_metadata(message_id="m", delivery_count=1, sequence_number=1,
                              enqueued_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
                              lock_token="t")
    assert no_ttl["ExpiresAt"].value == dumps(NO_EXPIRY + "+00:00")
    assert no_ttl["ApplicationProperties"].value == "{}"
