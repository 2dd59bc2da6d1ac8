"""The local bus keeps the Service Bus promises the app relies on, on a real SQLite file."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from redisflush.bus import BusError, OutboundMessage
from redisflush.local.bus import LocalBus, LockLostError

REPO = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


class FakeClock:
    """Time that only moves when a test says so."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def bus(tmp_path: Path, clock: FakeClock):
    with LocalBus(tmp_path / "bus.sqlite", clock=clock) as local_bus:
        yield local_bus


def msg(message_id: str, body: bytes = b"{}", **kwargs) -> OutboundMessage:
    return OutboundMessage(body=body, message_id=message_id, **kwargs)


def ids(messages) -> list[str]:
    return [m.message_id for m in messages]


def test_send_receive_complete_keeps_every_field(bus: LocalBus, clock: FakeClock) -> None:
    props = {"status": "Succeeded", "attempt": 3, "ratio": 0.5, "final": True, "whole": 2.0}
    bus.send("q", [msg("m1", b'{"a": 1}', content_type="application/cloudevents+json",
                       correlation_id="req-1", subject="RedisFlush.FlushCompleted",
                       reply_to="replies", reply_to_session_id="s-1",
                       application_properties=props)])
    [got] = bus.receive("q")
    assert (got.body, got.message_id, got.entity) == (b'{"a": 1}', "m1", "q")
    assert (got.content_type, got.correlation_id, got.subject) == (
        "application/cloudevents+json", "req-1", "RedisFlush.FlushCompleted")
    assert (got.reply_to, got.reply_to_session_id, got.session_id) == ("replies", "s-1", None)
    assert got.application_properties == props
    assert [type(v) for v in got.application_properties.values()] == [str, int, float, bool, float]
    assert got.delivery_count == 1
    assert got.enqueued_at == T0 and got.enqueued_at.tzinfo is not None
    assert got.locked_until == T0 + dt.timedelta(seconds=60)  # the default lock: one minute
    assert str(uuid.UUID(got.lock_token)) == got.lock_token
    assert got.scheduled_at is None
    assert bus.counts("q") == {"active": 0, "scheduled": 0, "locked": 1, "deadletter": 0}
    assert bus.receive("q") == []  # locked: nobody else gets it
    bus.complete(got)
    assert bus.counts("q") == {"active": 0, "scheduled": 0, "locked": 0, "deadletter": 0}
    clock.advance(3600)
    assert bus.receive("q") == [] and bus.peek("q") == []


def test_fifo_by_sequence_number(bus: LocalBus) -> None:
    for i in range(5):
        bus.send("q", [msg(f"m{i}")])
    bus.send("q", [msg("m5"), msg("m6")])
    first = bus.receive("q", max_count=3)
    rest = bus.receive("q", max_count=10)
    assert ids(first) + ids(rest) == [f"m{i}" for i in range(7)]
    seqs = [m.sequence_number for m in first + rest]
    assert seqs == sorted(seqs) and len(set(seqs)) == 7


def test_topic_fans_out_to_existing_subscriptions_and_drops_without_any(bus: LocalBus) -> None:
    bus.publish("events", [msg("lost")])  # no subscription yet: dropped
    bus.ensure_subscription("events", "audit")
    bus.ensure_subscription("events", "pipeline")
    bus.publish("events", [msg("e1", application_properties={"status": "Failed"})])
    bus.ensure_subscription("events", "late")
    audit = bus.receive("events/subscriptions/audit", max_count=10)
    pipeline = bus.receive("events/subscriptions/pipeline", max_count=10)
    assert ids(audit) == ["e1"] and ids(pipeline) == ["e1"]
    assert audit[0].sequence_number != pipeline[0].sequence_number
    assert audit[0].entity == "events/subscriptions/audit"
    assert pipeline[0].application_properties == {"status": "Failed"}
    assert bus.peek("events/subscriptions/late") == []
    bus.complete(audit[0])
    assert ids(bus.peek("events/subscriptions/pipeline")) == ["e1"]  # each copy settles alone


def test_scheduled_message_is_invisible_until_its_time(bus: LocalBus, clock: FakeClock) -> None:
    at = T0 + dt.timedelta(seconds=60)
    yesterday = T0 - dt.timedelta(days=1)
    bus.send("polls", [msg("later", scheduled_at=at), msg("past", scheduled_at=yesterday)])
    [past] = bus.receive("polls", max_count=5)
    assert past.message_id == "past" and past.enqueued_at == T0  # visible from the send on
    assert bus.counts("polls") == {"active": 0, "scheduled": 1, "locked": 1, "deadletter": 0}
    assert [(m.message_id, m.scheduled_at) for m in bus.peek("polls")] == [
        ("later", at), ("past", yesterday)]  # peek shows scheduled ones too, by sequence
    bus.complete(past)
    clock.advance(59.999)
    assert bus.receive("polls") == []
    clock.advance(0.001)
    [got] = bus.receive("polls")
    assert (got.message_id, got.enqueued_at, got.scheduled_at) == ("later", at, at)


def test_scheduled_flood_does_not_slow_receive(bus: LocalBus) -> None:
    later = T0 + dt.timedelta(hours=1)
    bus.send("polls", [msg(f"s{i}", scheduled_at=later) for i in range(10_000)])
    bus.send("polls", [msg("now")])
    started = time.perf_counter()
    assert ids(bus.receive("polls")) == ["now"]
    assert time.perf_counter() - started < 0.5
    assert bus.counts("polls") == {"active": 0, "scheduled": 10_000, "locked": 1, "deadletter": 0}


def test_duplicate_detection_per_entity_within_window_from_first_send(
        bus: LocalBus, clock: FakeClock) -> None:
    bus.send("q", [msg("dup", b"first")])
    bus.send("q", [msg("dup", b"second"), msg("dup", b"third")])  # silently dropped
    bus.send("other", [msg("dup", b"other queue")])  # the window is per entity
    assert [m.body for m in bus.peek("q")] == [b"first"]
    assert [m.body for m in bus.peek("other")] == [b"other queue"]
    clock.advance(500)
    bus.send("q", [msg("dup", b"inside window")])  # dropped, and does not extend the window
    assert len(bus.peek("q")) == 1
    clock.advance(101)  # 601 s after the first send
    bus.send("q", [msg("dup", b"after window")])
    assert [m.body for m in bus.peek("q")] == [b"first", b"after window"]


def test_an_expired_message_id_is_accepted_before_the_expired_rows_are_swept(
        bus: LocalBus, clock: FakeClock) -> None:
    """Expired duplicate-detection rows are swept at most once a second; until then the
    check itself must read them as gone (a short window ends between two sweeps)."""
    bus.ensure_queue("short", duplicate_window_seconds=0.2)
    bus.send("short", [msg("dup", b"first")])
    clock.advance(0.1)
    bus.send("short", [msg("dup", b"inside window")])
    clock.advance(0.15)  # 0.25 s after the first: expired, and no sweep since the first send
    bus.send("short", [msg("dup", b"after window"), msg("dup", b"repeat of it")])
    clock.advance(0.1)  # inside the new window the second send opened
    bus.send("short", [msg("dup", b"inside the new window")])
    assert [m.body for m in bus.peek("short")] == [b"first", b"after window"]


def test_a_receive_past_dead_lettered_rows_still_fills_its_count(
        bus: LocalBus, clock: FakeClock) -> None:
    bus.ensure_queue("dl", max_delivery_count=1, lock_seconds=1)
    bus.send("dl", [msg("a"), msg("b")])
    assert ids(bus.receive("dl", max_count=2)) == ["a", "b"]
    clock.advance(2)  # both locks expired: each has used its one delivery
    bus.send("dl", [msg("c"), msg("d"), msg("e")])
    assert ids(bus.receive("dl", max_count=3)) == ["c", "d", "e"]
    assert ids(bus.peek("dl/$deadletterqueue")) == ["a", "b"]


def test_duplicate_detection_on_topic_and_configurable_window(bus: LocalBus,
                                                                clock: FakeClock) -> None:
    bus.ensure_topic("events", duplicate_window_seconds=30)
    bus.ensure_subscription("events", "all")
    bus.publish("events", [msg("e:completed")])
    bus.publish("events", [msg("e:completed")])
    assert len(bus.peek("events/subscriptions/all")) == 1
    clock.advance(31)
    bus.publish("events", [msg("e:completed")])
    assert len(bus.peek("events/subscriptions/all")) == 2


def test_lock_expiry_redelivers_and_old_lock_is_lost(bus: LocalBus, clock: FakeClock) -> None:
    bus.send("q", [msg("m")])
    [first] = bus.receive("q")
    clock.advance(60)
    [second] = bus.receive("q")
    assert second.message_id == "m" and second.delivery_count == 2
    assert second.lock_token != first.lock_token
    with pytest.raises(LockLostError):
        bus.complete(first)
    with pytest.raises(LockLostError):
        bus.abandon(first)
    bus.complete(second)
    assert bus.peek("q") == []


def test_expired_lock_cannot_settle_even_if_nobody_took_it(bus: LocalBus,
                                                           clock: FakeClock) -> None:
    bus.send("q", [msg("m")])
    [got] = bus.receive("q")
    clock.advance(61)
    with pytest.raises(LockLostError):
        bus.complete(got)
    assert ids(bus.peek("q")) == ["m"]


def test_renew_lock_keeps_the_message(bus: LocalBus, clock: FakeClock) -> None:
    bus.ensure_queue("q", lock_seconds=10)
    bus.send("q", [msg("m")])
    [got] = bus.receive("q")
    clock.advance(8)
    assert bus.renew_lock(got) == T0 + dt.timedelta(seconds=18)
    clock.advance(8)
    assert bus.receive("q") == []
    bus.complete(got)
    assert bus.peek("q") == []


def test_abandon_makes_it_receivable_at_once(bus: LocalBus) -> None:
    bus.send("q", [msg("m")])
    [got] = bus.receive("q")
    bus.abandon(got)
    [again] = bus.receive("q")
    assert again.delivery_count == 2
    with pytest.raises(LockLostError):
        bus.complete(got)


def test_max_delivery_count_dead_letters_on_abandon(bus: LocalBus) -> None:
    bus.ensure_queue("q", max_delivery_count=3)
    bus.send("q", [msg("poison", application_properties={"k": "v"})])
    for expected in (1, 2, 3):
        [got] = bus.receive("q")
        assert got.delivery_count == expected
        bus.abandon(got)
    assert bus.receive("q") == []
    assert bus.counts("q") == {"active": 0, "scheduled": 0, "locked": 0, "deadletter": 1}
    [dead] = bus.receive("q/$deadletterqueue")
    assert dead.message_id == "poison" and dead.entity == "q/$deadletterqueue"
    assert dead.application_properties["DeadLetterReason"] == "MaxDeliveryCountExceeded"
    assert "3" in dead.application_properties["DeadLetterErrorDescription"]
    assert dead.application_properties["k"] == "v"


def test_max_delivery_count_dead_letters_after_lock_expiry(bus: LocalBus,
                                                           clock: FakeClock) -> None:
    bus.ensure_subscription("events", "slow", max_delivery_count=2, lock_seconds=5)
    bus.publish("events", [msg("e")])
    for _ in range(2):
        assert ids(bus.receive("events/subscriptions/slow")) == ["e"]
        clock.advance(5)
    assert bus.receive("events/subscriptions/slow") == []
    [dead] = bus.peek("events/subscriptions/slow/$deadletterqueue")
    assert dead.application_properties["DeadLetterReason"] == "MaxDeliveryCountExceeded"
    assert dead.delivery_count == 2


def test_explicit_dead_letter_carries_reason_and_description(bus: LocalBus) -> None:
    bus.send("requests", [msg("bad", b"not json")])
    [got] = bus.receive("requests")
    bus.dead_letter(got, "InvalidBody", "body is not JSON")
    assert bus.peek("requests") == []
    assert bus.counts("requests")["deadletter"] == 1
    [peeked] = bus.peek("requests/$deadletterqueue")
    assert peeked.lock_token == ""
    [dead] = bus.receive("requests/$deadletterqueue")
    assert dead.body == b"not json"
    assert dead.application_properties == {"DeadLetterReason": "InvalidBody",
                                           "DeadLetterErrorDescription": "body is not JSON"}
    bus.complete(dead)
    assert bus.counts("requests")["deadletter"] == 0
    with pytest.raises(LockLostError):
        bus.dead_letter(got, "again", "")


def test_sessions_filter_and_requires_session(bus: LocalBus) -> None:
    bus.ensure_queue("replies", requires_session=True)
    bus.send("replies", [msg("a1", session_id="a"), msg("b1", session_id="b"),
                         msg("a2", session_id="a")])
    got = bus.receive("replies", max_count=10, session_id="a")
    assert ids(got) == ["a1", "a2"] and {m.session_id for m in got} == {"a"}
    assert bus.receive("replies", session_id="c") == []
    with pytest.raises(ValueError):
        bus.receive("replies")
    with pytest.raises(BusError):
        bus.send("replies", [msg("no-session")])
    assert ids(bus.receive("replies", session_id="b")) == ["b1"]


def test_receive_wait_returns_once_a_message_arrives(tmp_path: Path) -> None:
    with LocalBus(tmp_path / "bus.sqlite") as bus:
        started = time.monotonic()
        assert bus.receive_wait("q", 0.2) == []
        assert time.monotonic() - started >= 0.2
        timer = threading.Timer(0.1, bus.send, ("q", [msg("late")]))
        timer.start()
        try:
            assert ids(bus.receive_wait("q", 5, poll_interval=0.01)) == ["late"]
        finally:
            timer.join()


def test_threads_never_share_a_message(tmp_path: Path) -> None:
    with LocalBus(tmp_path / "bus.sqlite") as bus:
        bus.send("q", [msg(f"m{i}") for i in range(300)])
        seen: list[str] = []

        def worker() -> None:
            while got := bus.receive("q", max_count=2):
                for m in got:
                    bus.complete(m)
                    seen.append(m.message_id)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(seen) == sorted(f"m{i}" for i in range(300))


def _child(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], env=env,
                            stdout=subprocess.PIPE, text=True)


CONSUMER = """
    import os, sys, time
    from redisflush.local.bus import LocalBus
    bus = LocalBus(sys.argv[1])
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.005)
    idle = 0
    while idle < 20:
        got = bus.receive("work", max_count=3)
        if not got:
            idle += 1
            time.sleep(0.01)
        for m in got:
            idle = 0
            bus.complete(m)
            print(m.message_id, flush=True)
"""


def test_two_processes_receive_every_message_exactly_once(tmp_path: Path) -> None:
    path, go = tmp_path / "bus.sqlite", tmp_path / "go"
    with LocalBus(path) as bus:
        bus.send("work", [msg(f"w{i}") for i in range(200)])
        children = [_child(CONSUMER, str(path), str(go)) for _ in range(2)]
        go.touch()
        outputs = [child.communicate(timeout=30)[0].split() for child in children]
        assert [child.returncode for child in children] == [0, 0]
        delivered = outputs[0] + outputs[1]
        assert len(delivered) == 200 and set(delivered) == {f"w{i}" for i in range(200)}
        assert bus.counts("work") == {"active": 0, "scheduled": 0, "locked": 0, "deadletter": 0}


HOLD_THEN_SEND = """
    import sys
    from redisflush.bus import OutboundMessage
    from redisflush.local.bus import LocalBus
    bus = LocalBus(sys.argv[1])
    held = bus.receive("held", max_count=5)
    print("held", len(held), flush=True)
    i = 0
    while True:
        bus.send("flood", [OutboundMessage(b"x" * 200, f"f{i}")])
        print(f"f{i}", flush=True)
        i += 1
"""


@pytest.mark.parametrize("kill_after", [1, 50, 400])
def test_sigkill_loses_no_acknowledged_or_locked_message(tmp_path: Path, kill_after: int) -> None:
    path = tmp_path / "bus.sqlite"
    with LocalBus(path) as bus:
        bus.send("held", [msg(f"h{i}") for i in range(8)])
    child = _child(HOLD_THEN_SEND, str(path))
    assert child.stdout is not None
    assert child.stdout.readline().split() == ["held", "5"]
    acknowledged = [child.stdout.readline().strip() for _ in range(kill_after)]
    child.send_signal(signal.SIGKILL)
    acknowledged += child.stdout.read().split()
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    # Read the file as a minute later: the dead child's 30 s locks have expired.
    later = FakeClock(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60))
    with LocalBus(path, clock=later) as bus:
        held = bus.receive("held", max_count=20)
        assert sorted(ids(held)) == sorted(f"h{i}" for i in range(8))
        assert sum(m.delivery_count == 2 for m in held) == 5
        flood = set(ids(bus.receive("flood", max_count=len(acknowledged) + 10)))
        assert set(acknowledged) <= flood and len(flood) <= len(acknowledged) + 1
        quick_check = bus._file.connection().execute("PRAGMA quick_check").fetchone()[0]
        assert quick_check == "ok"


def test_unusable_path_raises_bus_error(tmp_path: Path) -> None:
    with pytest.raises(BusError, match="local bus file"):
        LocalBus(tmp_path)  # a directory
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BusError):
        LocalBus(blocker / "bus.sqlite")  # its folder is a file
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BusError, match="not a database"):
        LocalBus(garbage)


def test_closed_bus_raises_bus_error(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus.sqlite")
    bus.send("q", [msg("m")])
    bus.close()
    with pytest.raises(BusError, match="closed"):
        bus.send("q", [msg("n")])
    with LocalBus(tmp_path / "bus.sqlite") as reopened:  # and what was sent is still there
        assert ids(reopened.peek("q")) == ["m"]


def test_entity_kinds_do_not_mix(bus: LocalBus) -> None:
    bus.ensure_topic("events")
    with pytest.raises(BusError, match="topic"):
        bus.send("events", [msg("m")])
    with pytest.raises(BusError):
        bus.receive("events")
    with pytest.raises(ValueError):
        bus.send("q", [msg("m", application_properties={"bad": [1, 2]})])


def test_an_idle_receive_does_not_wait_for_the_write_lock(tmp_path: Path) -> None:
    """A host polls its queues many times a second: once it has received from a queue, a
    receive that finds nothing ready is a read, so it neither takes nor waits for the lock."""
    import sqlite3

    with LocalBus(tmp_path / "bus.sqlite") as local_bus:
        local_bus.send("q", [msg("m1")])
        (got,) = local_bus.receive("q")
        local_bus.complete(got)
        other = sqlite3.connect(tmp_path / "bus.sqlite", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process in the middle of a send
        try:
            started = time.monotonic()
            assert local_bus.receive("q", max_count=8) == []
            assert time.monotonic() - started < 1.0  # not the 10 s busy timeout
        finally:
            other.execute("ROLLBACK")
            other.close()
        local_bus.send("q", [msg("m2")])
        assert ids(local_bus.receive("q")) == ["m2"]


def test_complete_after_another_receiver_took_the_message_fails(bus: LocalBus,
                                                                clock: FakeClock) -> None:
    bus.send("q", [msg("m1")])
    (first,) = bus.receive("q")
    clock.advance(61)
    (second,) = bus.receive("q")
    with pytest.raises(LockLostError):
        bus.complete(first)
    bus.complete(second)
    assert bus.counts("q")["active"] + bus.counts("q")["locked"] == 0
