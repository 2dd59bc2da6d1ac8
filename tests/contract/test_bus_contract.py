"""One contract for the Bus port: what Service Bus does, held against every implementation.

Three subjects: the in-memory double (tests/support/memory_bus.py), the local SQLite bus
(redisflush/local/bus.py) and the Azure adapter (redisflush/bus.py `AzureServiceBus`) over a
fake `ServiceBusClient` whose senders behave as azure-servicebus does at its network edge (a
list is one batch of at most 256 KiB, `schedule_messages` one message at a time) and hand what
they would put on the wire to an in-memory broker. The adapter only sends (receiving and
settling belong to the Functions host), so the receive-side tests run on the two doubles only.

The Service Bus behaviour is the README's set-up: duplicate detection with a ten-minute
window, lock one minute, MaxDeliveryCount 10, sessions on the reply queue, Standard tier's
256 KiB per message. All on a fake clock.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import MessageSizeExceededError

from redisflush.bus import AzureServiceBus, BusError, OutboundMessage
from redisflush.local.bus import LocalBus, LockLostError
from redisflush.local.bus_schema import MAX_MESSAGE_BYTES
from tests.support.memory_bus import FakeClock, MemoryBus

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
DLQ = "/$deadletterqueue"


# -- the Azure adapter's fake client ---------------------------------------------------------

def outbound(message: ServiceBusMessage, scheduled_at: dt.datetime | None = None
             ) -> OutboundMessage:
    """What an azure-servicebus message carries onto the wire, read back."""
    body = message.body
    props = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                                                           else v)
             for k, v in (message.application_properties or {}).items()}
    return OutboundMessage(
        body=body if isinstance(body, bytes) else b"".join(body),
        message_id=message.message_id, content_type=message.content_type,
        correlation_id=message.correlation_id, subject=message.subject,
        session_id=message.session_id, reply_to=message.reply_to,
        reply_to_session_id=message.reply_to_session_id, application_properties=props,
        scheduled_at=scheduled_at or message.scheduled_enqueue_time_utc)


class BrokerSender:
    """A `ServiceBusSender` at the network edge: a list is one batch (the SDK raises
    MessageSizeExceededError past 256 KiB before sending anything)."""

    def __init__(self, broker: MemoryBus, kind: str, entity: str) -> None:
        self.broker, self.kind, self.entity = broker, kind, entity

    def _deliver(self, messages: Sequence[OutboundMessage]) -> None:
        (self.broker.send if self.kind == "queue" else self.broker.publish)(self.entity,
                                                                            messages)

    def send_messages(self, message: Any, *, timeout: float | None = None) -> None:
        batch = [outbound(m) for m in (message if isinstance(message, list) else [message])]
        size = sum(len(m.body) for m in batch)
        if size > MAX_MESSAGE_BYTES:
            raise MessageSizeExceededError(
                message=f"ServiceBusMessageBatch has reached its size limit: {MAX_MESSAGE_BYTES}")
        self._deliver(batch)

    def schedule_messages(self, messages: Any, schedule_time_utc: dt.datetime, *,
                          timeout: float | None = None) -> list[int]:
        batch = [outbound(m, schedule_time_utc)
                 for m in (messages if isinstance(messages, list) else [messages])]
        self._deliver(batch)
        return [0] * len(batch)

    def close(self) -> None:
        pass


class BrokerClient:
    def __init__(self, broker: MemoryBus) -> None:
        self.broker = broker

    def get_queue_sender(self, queue_name: str) -> BrokerSender:
        return BrokerSender(self.broker, "queue", queue_name)

    def get_topic_sender(self, topic_name: str) -> BrokerSender:
        return BrokerSender(self.broker, "topic", topic_name)

    def close(self) -> None:
        pass


# -- the subjects ------------------------------------------------------------------------------

@dataclass
class Subject:
    """A Bus port (`sender`) and the broker behind it (`broker`: entities, receiving)."""

    name: str
    clock: FakeClock
    sender: Any
    broker: Any

    @property
    def receives(self) -> bool:
        return self.name != "azure-adapter"

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        self.sender.send(queue, messages)

    def publish(self, topic: str, messages: Sequence[OutboundMessage]) -> None:
        self.sender.publish(topic, messages)

    def ids(self, entity: str) -> list[str]:
        return [m.message_id for m in self.broker.peek(entity)]


def subject(name: str, tmp_path: Path) -> Iterator[Subject]:
    clock = FakeClock(T0)
    if name == "sqlite":
        local = LocalBus(tmp_path / "bus.sqlite", clock=clock.now)
        yield Subject(name, clock, local, local)
        local.close()
        return
    memory = MemoryBus(clock)
    sender = AzureServiceBus(lambda: BrokerClient(memory)) if name == "azure-adapter" \
        else memory
    yield Subject(name, clock, sender, memory)


@pytest.fixture(params=["memory", "sqlite", "azure-adapter"])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    """Every Bus port: what is sent, and what the broker then holds."""
    yield from subject(request.param, tmp_path)


@pytest.fixture(params=["memory", "sqlite"])
def receiving(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    """The implementations that also receive and settle (in Azure the Functions host does;
    the adapter only sends)."""
    yield from subject(request.param, tmp_path)


def msg(message_id: str, body: bytes = b"{}", **fields: Any) -> OutboundMessage:
    return OutboundMessage(body, message_id, **fields)


# -- sending ----------------------------------------------------------------------------------

def test_what_is_sent_is_what_is_received(bus: Subject) -> None:
    props = {"status": "Succeeded", "attempt": 3, "ratio": 0.5, "final": True}
    bus.send("q", [msg("m1", b'{"a": 1}', content_type="application/cloudevents+json",
                       correlation_id="req-1", subject="RedisFlush.FlushCompleted",
                       reply_to="replies", reply_to_session_id="s-1",
                       application_properties=props), msg("m2")])
    first, second = bus.broker.peek("q")
    assert (first.body, first.message_id, first.content_type, first.correlation_id,
            first.subject, first.reply_to, first.reply_to_session_id, first.session_id) == (
        b'{"a": 1}', "m1", "application/cloudevents+json", "req-1",
        "RedisFlush.FlushCompleted", "replies", "s-1", None)
    assert first.application_properties == props
    assert [type(v) for v in first.application_properties.values()] == [str, int, float, bool]
    assert first.enqueued_at == T0 and first.scheduled_at is None
    assert second.sequence_number > first.sequence_number


def test_a_scheduled_message_waits_for_its_time(bus: Subject) -> None:
    at = T0 + dt.timedelta(seconds=30)
    bus.send("polls", [msg("later", scheduled_at=at)])
    (waiting,) = bus.broker.peek("polls")  # peek shows scheduled messages
    assert waiting.scheduled_at == at and waiting.enqueued_at == at
    assert bus.broker.counts("polls")["scheduled"] == 1
    if bus.receives:
        assert bus.broker.receive("polls") == []
        bus.clock.advance(29.999)
        assert bus.broker.receive("polls") == []
        bus.clock.advance(0.001)
        (due,) = bus.broker.receive("polls")
        assert (due.message_id, due.delivery_count) == ("later", 1)


def test_a_schedule_in_the_past_is_due_at_once(bus: Subject) -> None:
    bus.send("polls", [msg("past", scheduled_at=T0 - dt.timedelta(days=1))])
    assert bus.broker.counts("polls")["active"] == 1


def test_a_repeated_message_id_is_dropped_for_ten_minutes(bus: Subject) -> None:
    bus.send("q", [msg("m", b"first")])
    bus.clock.advance(599)
    bus.send("q", [msg("m", b"repeat")])  # accepted by the send, dropped by the broker
    bus.clock.advance(2)  # 601 s after the first: the window (not extended by the repeat) ended
    bus.send("q", [msg("m", b"again")])
    assert [m.body for m in bus.broker.peek("q")] == [b"first", b"again"]


def test_duplicates_within_one_send_and_per_entity(bus: Subject) -> None:
    bus.send("q", [msg("m", b"1"), msg("m", b"2")])
    bus.send("other", [msg("m", b"3")])
    assert [m.body for m in bus.broker.peek("q")] == [b"1"]
    assert [m.body for m in bus.broker.peek("other")] == [b"3"]


def test_a_scheduled_repeat_is_a_duplicate_too(bus: Subject) -> None:
    """The app's poll chain: a redelivered step schedules the same `{requestId}:poll:{n}`."""
    later = T0 + dt.timedelta(seconds=20)
    bus.send("polls", [msg("r:poll:1", scheduled_at=later)])
    bus.send("polls", [msg("r:poll:1", scheduled_at=later + dt.timedelta(seconds=5))])
    assert bus.ids("polls") == ["r:poll:1"]


def test_a_topic_copies_to_each_subscription_it_has_now(bus: Subject) -> None:
    bus.publish("events", [msg("lost")])  # no subscription yet: dropped
    bus.broker.ensure_subscription("events", "a")
    bus.broker.ensure_subscription("events", "b")
    bus.publish("events", [msg("e1", application_properties={"status": "Failed"})])
    for sub in ("events/subscriptions/a", "events/subscriptions/b"):
        (event,) = bus.broker.peek(sub)
        assert (event.message_id, event.application_properties) == ("e1", {"status": "Failed"})


def test_a_session_queue_refuses_a_message_without_a_session(bus: Subject) -> None:
    bus.broker.ensure_queue("replies", requires_session=True)
    with pytest.raises(BusError):
        bus.send("replies", [msg("ok", session_id="s"), msg("no-session")])
    assert bus.ids("replies") == []  # one send: all of it, or none
    bus.send("replies", [msg("ok", session_id="s")])
    assert bus.ids("replies") == ["ok"]


def test_a_message_over_256_kib_is_refused(bus: Subject) -> None:
    with pytest.raises(BusError):
        bus.send("q", [msg("big", b"x" * (MAX_MESSAGE_BYTES + 1))])
    assert bus.ids("q") == []
    bus.send("q", [msg("fits", b"x" * (MAX_MESSAGE_BYTES - 1024))])
    assert bus.ids("q") == ["fits"]


def test_a_list_is_one_batch_of_at_most_256_kib(bus: Subject) -> None:
    """azure-servicebus sends a list as one batch: over 256 KiB it sends nothing. Scheduled
    messages are sent one by one, so they do not add up."""
    half = b"x" * (MAX_MESSAGE_BYTES // 2)
    with pytest.raises(BusError):
        bus.send("q", [msg("a", half), msg("b", half), msg("c", b"x")])
    assert bus.ids("q") == []
    later = T0 + dt.timedelta(minutes=1)
    bus.send("q", [msg(f"s{i}", half, scheduled_at=later) for i in range(3)])
    assert bus.ids("q") == ["s0", "s1", "s2"]


# -- receiving and settling (the doubles; in Azure, the Functions host) ----------------------

def test_the_lock_lasts_one_minute_by_default(receiving: Subject) -> None:
    receiving.send("q", [msg("m")])
    (first,) = receiving.broker.receive("q")
    assert first.locked_until == T0 + dt.timedelta(seconds=60)
    assert receiving.broker.receive("q") == []  # locked: nobody else gets it
    assert receiving.broker.counts("q")["locked"] == 1
    receiving.clock.advance(59.999)
    assert receiving.broker.receive("q") == []
    receiving.clock.advance(0.001)
    (second,) = receiving.broker.receive("q")
    assert (second.message_id, second.delivery_count) == ("m", 2)
    assert second.lock_token != first.lock_token


def test_completing_after_the_lock_expired_fails_and_the_message_comes_back(
        receiving: Subject) -> None:
    receiving.send("q", [msg("m")])
    (got,) = receiving.broker.receive("q")
    receiving.clock.advance(61)
    with pytest.raises(LockLostError):
        receiving.broker.complete(got)
    with pytest.raises(BusError):  # LockLostError is a BusError: the caller must not ack
        receiving.broker.abandon(got)
    (again,) = receiving.broker.receive("q")
    assert again.delivery_count == 2
    receiving.broker.complete(again)
    assert receiving.ids("q") == []
    receiving.clock.advance(3600)
    assert receiving.broker.receive("q") == []


def test_an_old_lock_cannot_settle_a_redelivery(receiving: Subject) -> None:
    receiving.send("q", [msg("m")])
    (first,) = receiving.broker.receive("q")
    receiving.clock.advance(60)
    (second,) = receiving.broker.receive("q")
    with pytest.raises(LockLostError):
        receiving.broker.complete(first)
    receiving.broker.complete(second)


def test_abandon_redelivers_at_once_with_a_higher_count(receiving: Subject) -> None:
    receiving.send("q", [msg("m")])
    (got,) = receiving.broker.receive("q")
    receiving.broker.abandon(got)
    (again,) = receiving.broker.receive("q")
    assert (again.message_id, again.delivery_count) == ("m", 2)


def test_dead_lettered_after_max_delivery_count(receiving: Subject) -> None:
    receiving.broker.ensure_queue("q", max_delivery_count=3)
    receiving.send("q", [msg("m")])
    counts = []
    for _ in range(3):
        (got,) = receiving.broker.receive("q")
        counts.append(got.delivery_count)
        receiving.broker.abandon(got)
    assert counts == [1, 2, 3]
    assert receiving.broker.receive("q") == []
    (dead,) = receiving.broker.peek("q" + DLQ)
    assert dead.message_id == "m"
    assert dead.application_properties["DeadLetterReason"] == "MaxDeliveryCountExceeded"
    assert receiving.broker.counts("q") == {"active": 0, "scheduled": 0, "locked": 0,
                                            "deadletter": 1}


def test_an_expired_lock_counts_as_a_delivery(receiving: Subject) -> None:
    receiving.broker.ensure_queue("q", max_delivery_count=2, lock_seconds=5)
    receiving.send("q", [msg("m")])
    for expected in (1, 2):
        (got,) = receiving.broker.receive("q")
        assert got.delivery_count == expected
        receiving.clock.advance(5)
    assert receiving.broker.receive("q") == []
    assert receiving.ids("q" + DLQ) == ["m"]


def test_the_default_max_delivery_count_is_ten(receiving: Subject) -> None:
    receiving.send("q", [msg("m")])
    for _ in range(10):
        (got,) = receiving.broker.receive("q")
        receiving.broker.abandon(got)
    assert got.delivery_count == 10
    assert receiving.ids("q" + DLQ) == ["m"]


def test_dead_letter_by_hand_keeps_the_reason(receiving: Subject) -> None:
    receiving.send("q", [msg("m")])
    (got,) = receiving.broker.receive("q")
    receiving.broker.dead_letter(got, "Unreadable", "not JSON")
    (dead,) = receiving.broker.receive("q" + DLQ)
    assert (dead.application_properties["DeadLetterReason"],
            dead.application_properties["DeadLetterErrorDescription"]) == ("Unreadable",
                                                                            "not JSON")
    with pytest.raises(ValueError):
        receiving.broker.dead_letter(dead, "again")


def test_renewing_the_lock_keeps_the_message(receiving: Subject) -> None:
    receiving.broker.ensure_queue("q", lock_seconds=10)
    receiving.send("q", [msg("m")])
    (got,) = receiving.broker.receive("q")
    receiving.clock.advance(8)
    assert receiving.broker.renew_lock(got) == T0 + dt.timedelta(seconds=18)
    receiving.clock.advance(8)
    assert receiving.broker.receive("q") == []
    receiving.broker.complete(got)


def test_peek_neither_locks_nor_counts(receiving: Subject) -> None:
    receiving.send("q", [msg("m")])
    (peeked,) = receiving.broker.peek("q")
    assert peeked.lock_token == "" and peeked.delivery_count == 0
    (got,) = receiving.broker.receive("q")
    assert got.delivery_count == 1


def test_sessions_deliver_each_session_alone_and_in_order(receiving: Subject) -> None:
    receiving.broker.ensure_queue("replies", requires_session=True)
    receiving.send("replies", [msg("a1", session_id="s1"), msg("b1", session_id="s2"),
                               msg("a2", session_id="s1")])
    with pytest.raises(ValueError):
        receiving.broker.receive("replies")  # a session queue needs a session receiver
    first = receiving.broker.receive("replies", session_id="s1", max_count=10)
    assert [m.message_id for m in first] == ["a1", "a2"]
    receiving.broker.abandon(first[0])
    again = receiving.broker.receive("replies", session_id="s1", max_count=10)
    assert [m.message_id for m in again] == ["a1"]  # FIFO: the abandoned one comes first
    assert [m.message_id for m in receiving.broker.receive("replies", session_id="s2")] == [
        "b1"]


def test_receiving_takes_the_oldest_first_up_to_max_count(receiving: Subject) -> None:
    receiving.send("q", [msg(f"m{i}") for i in range(5)])
    assert [m.message_id for m in receiving.broker.receive("q", max_count=3)] == [
        "m0", "m1", "m2"]
    assert [m.message_id for m in receiving.broker.receive("q", max_count=3)] == ["m3", "m4"]
