"""bus.py AzureServiceBus, checked at the SDK's network edge: real ServiceBusMessage objects
handed to fake senders; real ServiceBusClient objects built (constructing one does not connect).
"""
from __future__ import annotations

import ast
import datetime as dt
import socket
import threading
import time
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus import exceptions as sbx

from redisflush import bus as bus_module
from redisflush.bus import AzureServiceBus, BusError, OutboundMessage, to_azure_message
from redisflush.core import outbound
from tests.support.silent_peer import silent_listener

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)

CONNECTION = ("Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k;"
              "SharedAccessKey=dmFsdWU=")


class FakeSender:
    def __init__(self, name: str, fail: Exception | None = None,
                 gate: threading.Event | None = None) -> None:
        self.name = name
        self.fail = fail
        self.gate = gate  # when set: each send waits for it (a slow or hung network)
        self.entered = threading.Event()
        self.sent: list[list[ServiceBusMessage]] = []
        self.scheduled: list[tuple[ServiceBusMessage, dt.datetime]] = []
        self.closed = False
        self.close_error: Exception | None = None
        self.active = 0
        self.misused: list[str] = []  # a send that overlapped another, or ran on a closed one

    def send_messages(self, messages):
        self.active += 1
        if self.active > 1 or self.closed:
            self.misused.append(f"active={self.active} closed={self.closed}")
        try:
            self.entered.set()
            if self.gate is not None:
                self.gate.wait(10)
            if self.closed:
                self.misused.append("closed while its send was in flight")
            if self.fail:
                raise self.fail
            self.sent.append(list(messages))
        finally:
            self.active -= 1

    def schedule_messages(self, message, when):
        if self.fail:
            raise self.fail
        self.scheduled.append((message, when))
        return [1]

    def close(self):
        self.closed = True
        if self.close_error:
            raise self.close_error


class FakeClient:
    def __init__(self) -> None:
        self.senders: list[FakeSender] = []
        self.fail_next: Exception | None = None
        self.gates: dict[str, threading.Event] = {}  # entity name -> gate for its sends
        self.closed = False

    def _new(self, kind: str, name: str) -> FakeSender:
        sender = FakeSender(f"{kind}:{name}", self.fail_next, self.gates.get(name))
        self.fail_next = None
        self.senders.append(sender)
        return sender

    def get_queue_sender(self, queue_name):
        return self._new("queue", queue_name)

    def get_topic_sender(self, topic_name):
        return self._new("topic", topic_name)

    def close(self):
        self.closed = True


class Factory:
    def __init__(self) -> None:
        self.calls = 0
        self.client = FakeClient()

    def __call__(self) -> FakeClient:
        self.calls += 1
        return self.client


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def bus(factory: Factory) -> AzureServiceBus:
    return AzureServiceBus(factory)


def body_of(message: ServiceBusMessage) -> bytes:
    return b"".join(message.body)


FULL = OutboundMessage(
    body=b'{"specversion":"1.0"}', message_id="req-1:completed",
    content_type="application/cloudevents+json", correlation_id="req-1",
    subject="RedisFlush.FlushCompleted", session_id="sess-1", reply_to="replies",
    reply_to_session_id="sess-2",
    application_properties={"status": "Succeeded", "cacheName": "c", "attempt": 3,
                            "ratio": 0.5, "final": True})


def test_send_hands_real_service_bus_messages_to_the_sender(bus, factory):
    bus.send("redis-flush-replies", [FULL])
    (sender,) = factory.client.senders
    assert sender.name == "queue:redis-flush-replies"
    ((message,),) = sender.sent
    assert isinstance(message, ServiceBusMessage)
    assert body_of(message) == FULL.body
    assert message.message_id == "req-1:completed"
    assert message.content_type == "application/cloudevents+json"
    assert message.correlation_id == "req-1"
    assert message.subject == "RedisFlush.FlushCompleted"
    assert message.session_id == "sess-1"
    assert message.reply_to == "replies"
    assert message.reply_to_session_id == "sess-2"
    assert message.application_properties == {"status": "Succeeded", "cacheName": "c",
                                              "attempt": 3, "ratio": 0.5, "final": True}
    assert message.scheduled_enqueue_time_utc is None
    assert sender.scheduled == []


def test_minimal_message_leaves_optional_fields_unset(bus, factory):
    bus.publish("redis-flush-events", [OutboundMessage(b"{}", "m-1")])
    ((message,),) = factory.client.senders[0].sent
    assert factory.client.senders[0].name == "topic:redis-flush-events"
    assert message.message_id == "m-1" and message.content_type == "application/json"
    for name in ("correlation_id", "subject", "session_id", "reply_to", "reply_to_session_id"):
        assert getattr(message, name) is None
    assert not message.application_properties


def test_scheduled_message_goes_through_schedule_messages(bus, factory):
    when = T0 + dt.timedelta(seconds=2)
    poll = OutboundMessage(b'{"v":1}', "req-1:poll:1", correlation_id="req-1",
                           application_properties={"requestId": "req-1"}, scheduled_at=when)
    bus.send("redis-flush-polls", [poll])
    sender = factory.client.senders[0]
    assert sender.sent == []
    ((message, at),) = sender.scheduled
    assert at == when
    assert message.scheduled_enqueue_time_utc == when
    assert message.message_id == "req-1:poll:1"
    assert message.application_properties == {"requestId": "req-1"}
    assert body_of(message) == b'{"v":1}'


def test_mixed_batch_sends_now_and_schedules_the_rest(bus, factory):
    later = T0 + dt.timedelta(minutes=1)
    bus.send("q", [OutboundMessage(b"a", "a"), OutboundMessage(b"b", "b", scheduled_at=later),
                   OutboundMessage(b"c", "c")])
    sender = factory.client.senders[0]
    assert [[m.message_id for m in batch] for batch in sender.sent] == [["a", "c"]]
    assert [(m.message_id, when) for m, when in sender.scheduled] == [("b", later)]


def test_client_is_created_once_and_lazily(bus, factory):
    assert factory.calls == 0
    bus.send("q", [])
    assert factory.calls == 0  # nothing to send, nothing to connect
    bus.send("q", [OutboundMessage(b"1", "1")])
    bus.send("q", [OutboundMessage(b"2", "2")])
    bus.publish("t", [OutboundMessage(b"3", "3")])
    bus.send("other", [OutboundMessage(b"4", "4")])
    assert factory.calls == 1
    assert [s.name for s in factory.client.senders] == ["queue:q", "topic:t", "queue:other"]
    assert len(factory.client.senders[0].sent) == 2  # the sender is reused


def test_queue_and_topic_of_the_same_name_get_their_own_senders(bus, factory):
    bus.send("same", [OutboundMessage(b"1", "1")])
    bus.publish("same", [OutboundMessage(b"2", "2")])
    assert [s.name for s in factory.client.senders] == ["queue:same", "topic:same"]


@pytest.mark.parametrize("error", [RuntimeError("link detached"), ValueError("bad"),
                                   OSError("socket closed")])
def test_sender_exception_becomes_bus_error_and_the_sender_is_replaced(bus, factory, error):
    factory.client.fail_next = error
    with pytest.raises(BusError) as info:
        bus.send("q", [OutboundMessage(b"1", "1")])
    assert info.value.__cause__ is error
    assert "'q'" in str(info.value)
    assert factory.client.senders[0].closed  # its AMQP link is released, not leaked
    bus.send("q", [OutboundMessage(b"2", "2")])  # a fresh sender, same client
    assert factory.calls == 1
    assert len(factory.client.senders) == 2
    assert [m.message_id for m in factory.client.senders[1].sent[0]] == ["2"]
    assert not factory.client.senders[1].closed


def test_close_error_of_a_failed_sender_does_not_hide_the_send_error(bus, factory):
    bus.send("q", [OutboundMessage(b"1", "1")])
    sender = factory.client.senders[0]
    sender.fail = OSError("socket closed")
    sender.close_error = RuntimeError("already detached")
    with pytest.raises(BusError) as info:
        bus.send("q", [OutboundMessage(b"2", "2")])
    assert isinstance(info.value.__cause__, OSError) and sender.closed


def test_a_blocked_send_on_one_entity_does_not_hold_up_another(bus, factory):
    gate = threading.Event()
    factory.client.gates["slow"] = gate
    blocked = threading.Thread(target=bus.send, args=("slow", [OutboundMessage(b"1", "1")]))
    blocked.start()
    try:
        assert _sender_named(factory, "queue:slow").entered.wait(5)
        started = time.monotonic()
        bus.send("fast", [OutboundMessage(b"2", "2")])  # must not wait for "slow"
        bus.publish("events", [OutboundMessage(b"3", "3")])
        assert time.monotonic() - started < 1.0
        assert _sender_named(factory, "queue:fast").sent
        assert _sender_named(factory, "topic:events").sent
        assert blocked.is_alive()
    finally:
        gate.set()
        blocked.join(5)
    assert _sender_named(factory, "queue:slow").sent


def test_two_sends_to_one_entity_never_share_its_sender_mid_send(bus, factory):
    gate = threading.Event()
    factory.client.gates["q"] = gate
    first = threading.Thread(target=bus.send, args=("q", [OutboundMessage(b"1", "1")]))
    first.start()
    sender = _sender_named(factory, "queue:q")
    assert sender.entered.wait(5)
    sender.entered.clear()
    second = threading.Thread(target=bus.send, args=("q", [OutboundMessage(b"2", "2")]))
    second.start()
    assert not sender.entered.wait(0.3)  # the second waits for the first
    gate.set()
    first.join(5)
    second.join(5)
    assert [[m.message_id for m in batch] for batch in sender.sent] == [["1"], ["2"]]


def test_close_waits_for_an_in_flight_send_then_closes_its_sender(bus, factory):
    gate = threading.Event()
    factory.client.gates["q"] = gate
    sending = threading.Thread(target=bus.send, args=("q", [OutboundMessage(b"1", "1")]))
    sending.start()
    sender = _sender_named(factory, "queue:q")
    assert sender.entered.wait(5)
    closing = threading.Thread(target=bus.close)
    closing.start()
    time.sleep(0.1)
    assert not sender.closed  # not closed under a running send
    gate.set()
    sending.join(5)
    closing.join(5)
    assert sender.sent and sender.closed and factory.client.closed


def _sender_named(factory: Factory, name: str) -> FakeSender:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for sender in list(factory.client.senders):
            if sender.name == name:
                return sender
        time.sleep(0.005)
    raise AssertionError(f"no sender {name}")


def test_outbound_message_is_defined_once_in_the_core():
    assert bus_module.OutboundMessage is outbound.OutboundMessage
    assert bus_module.PropertyValue is outbound.PropertyValue
    tree = ast.parse(Path(bus_module.__file__).read_text(encoding="utf-8"))
    defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    assigned = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)}
    assert "OutboundMessage" not in defined and "PropertyValue" not in assigned


def test_schedule_exception_becomes_bus_error(bus, factory):
    factory.client.fail_next = TimeoutError("no answer")
    with pytest.raises(BusError):
        bus.send("q", [OutboundMessage(b"1", "1", scheduled_at=T0)])


def test_client_factory_exception_becomes_bus_error():
    def broken():
        raise PermissionError("no identity")
    with pytest.raises(BusError) as info:
        AzureServiceBus(broken).publish("t", [OutboundMessage(b"1", "1")])
    assert isinstance(info.value.__cause__, PermissionError)


def test_close_closes_senders_and_client(bus, factory):
    bus.send("q", [OutboundMessage(b"1", "1")])
    bus.close()
    assert factory.client.senders[0].closed and factory.client.closed
    bus.send("q", [OutboundMessage(b"2", "2")])  # usable again: a new client
    assert factory.calls == 2


def test_to_azure_message_is_a_real_sdk_message():
    message = to_azure_message(FULL)
    assert isinstance(message, ServiceBusMessage)
    assert str(message) == FULL.body.decode()


# --- from_settings builds real clients ------------------------------------------------------------

class FakeCredential:
    def get_token(self, *scopes, **kwargs):  # never called: constructing does not connect
        raise AssertionError("no token should be requested")


def test_from_settings_connection_string_builds_a_real_client():
    bus = AzureServiceBus.from_settings(CONNECTION, None, lambda: pytest.fail("no credential"))
    client = bus._client_factory()
    try:
        assert isinstance(client, ServiceBusClient)
        assert client.fully_qualified_namespace == "x.servicebus.windows.net"
    finally:
        client.close()


def test_from_settings_prefers_the_connection_string():
    bus = AzureServiceBus.from_settings(CONNECTION, "other.servicebus.windows.net",
                                        lambda: pytest.fail("no credential"))
    client = bus._client_factory()
    try:
        assert client.fully_qualified_namespace == "x.servicebus.windows.net"
    finally:
        client.close()


def test_from_settings_namespace_and_credential_builds_a_real_client():
    made = []

    def credential_factory():
        made.append(FakeCredential())
        return made[-1]

    bus = AzureServiceBus.from_settings(None, "ns1.servicebus.windows.net", credential_factory)
    assert made == []  # the credential is made on first use, not at start-up
    client = bus._client_factory()
    try:
        assert isinstance(client, ServiceBusClient)
        assert client.fully_qualified_namespace == "ns1.servicebus.windows.net"
        assert len(made) == 1
    finally:
        client.close()


@pytest.mark.parametrize("connection, namespace", [(None, None), ("", ""), (None, "")])
def test_from_settings_without_connection_raises_bus_error(connection, namespace):
    with pytest.raises(BusError) as info:
        AzureServiceBus.from_settings(connection, namespace, FakeCredential)
    assert "ServiceBusConnection" in str(info.value)


@pytest.mark.parametrize("error, refused", [
    (sbx.MessagingEntityNotFoundError(message="the queue does not exist"), True),
    (sbx.ServiceBusAuthorizationError(message="Unauthorized. 'Send' claim(s) are required"),
     True),
    (sbx.MessageSizeExceededError(message="too large"), True),
    (sbx.ServiceBusServerBusyError(message="the server is busy"), False),
    (sbx.ServiceBusConnectionError(message="link detached"), False),
    (OSError("socket closed"), False),
])
def test_a_failure_says_whether_the_entity_will_refuse_again(bus, factory, error, refused):
    """The app skips a final reply only when its queue refuses for good; a failure that may
    pass makes the step run again, so a waiting pipeline still gets its event."""
    factory.client.fail_next = error
    with pytest.raises(BusError) as info:
        bus.send("replies", [OutboundMessage(b"1", "1")])
    assert info.value.refused is refused


def test_a_send_that_gets_no_answer_is_given_up_and_the_next_starts_afresh(factory):
    """A hung send (the peer took the connection and says nothing) ends as BusError within
    its bound, so the invocation ends and Service Bus redelivers; the next send builds a new
    sender instead of queueing behind the hung one, and the hung one is closed (its AMQP
    connection released) once its send returns."""
    gate = threading.Event()
    factory.client.gates["q"] = gate
    bus = AzureServiceBus(factory, send_within=0.3)
    started = time.monotonic()
    with pytest.raises(BusError) as info:
        bus.send("q", [OutboundMessage(b"1", "1")])
    assert time.monotonic() - started < 2.0
    assert "no answer" in str(info.value) and not info.value.refused
    factory.client.gates.pop("q")
    bus.send("q", [OutboundMessage(b"2", "2")])
    # a new sender (its own AMQP connection; azure-servicebus shares none between handlers)
    assert factory.calls == 1
    assert [m.message_id for m in factory.client.senders[1].sent[0]] == ["2"]
    stuck = factory.client.senders[0]
    assert not stuck.closed  # still blocked in its send
    gate.set()  # the abandoned send answers after all (a slow namespace, not a dead one)
    deadline = time.monotonic() + 5
    while not stuck.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stuck.closed, "the sender of a send given up on was never closed"


@pytest.fixture
def silent_namespace(monkeypatch: pytest.MonkeyPatch):
    """*.servicebus.windows.net resolves to a loopback socket that accepts connections and
    never says a word (a TLS handshake to it never completes)."""
    with silent_listener() as (port, accepted):
        real = socket.getaddrinfo

        def resolve(host, port_, *args, **kwargs):
            if isinstance(host, str) and host.endswith(".servicebus.windows.net"):
                return real("127.0.0.1", port, *args, **kwargs)
            return real(host, port_, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        yield accepted


def test_the_real_sdk_against_a_silent_namespace_fails_within_the_bound(silent_namespace):
    """The SDK's own retries never start here: without the bound the send blocked in
    ssl.do_handshake for minutes, past the invocation's one-minute lock."""
    bus = AzureServiceBus.from_settings(CONNECTION, None, lambda: None)
    bus._send_within = 2.0
    started = time.monotonic()
    with pytest.raises(BusError) as info:
        bus.send("redis-flush-polls", [OutboundMessage(b"{}", "r-1:poll:1")])
    assert silent_namespace, "the SDK never connected: nothing was exercised"
    assert time.monotonic() - started < 5.0
    assert "no answer" in str(info.value)


def _closed_soon(sender: FakeSender) -> bool:
    deadline = time.monotonic() + 5
    while not sender.closed and time.monotonic() < deadline:
        time.sleep(0.005)
    return sender.closed


def test_kept_senders_is_what_the_bound_test_assumes():
    assert bus_module.KEPT_SENDERS == 16


def test_senders_kept_for_reply_queues_are_bounded(factory):
    """ReplyTo names come from the requests: a worker kept an open sender (its own AMQP
    connection and the SDK's keep-alive thread) and a slot for every queue it ever replied
    to, for as long as the process lived."""
    bus = AzureServiceBus(factory)
    for n in range(200):
        bus.send(f"reply-{n}", [OutboundMessage(b"r", f"r-{n}")])
    kept_count = 16  # bus.KEPT_SENDERS
    assert len(bus._slots) <= kept_count
    kept = factory.client.senders[-kept_count:]
    assert all(_closed_soon(s) for s in factory.client.senders if s not in kept)
    assert not any(s.closed for s in kept)
    # every message went out, each on the sender of its own queue
    assert all(len(s.sent) == 1 for s in factory.client.senders)


def test_a_sender_idle_past_service_bus_link_timeout_is_closed_and_replaced(factory):
    """Service Bus detaches a link idle for 10 minutes: the next send on the kept sender fails
    and waits out the SDK's retry backoff, and an idle sender of another entity held its
    connection and keep-alive thread until then. Now both are closed and a send builds anew."""
    now = [0.0]
    bus = AzureServiceBus(factory, monotonic=lambda: now[0])
    bus.send("polls", [OutboundMessage(b"1", "1")])
    bus.publish("events", [OutboundMessage(b"2", "2")])
    first_polls, first_events = factory.client.senders
    now[0] += bus_module.SENDER_IDLE / 2
    bus.send("polls", [OutboundMessage(b"3", "3")])  # in use: kept
    assert len(factory.client.senders) == 2 and not first_polls.closed
    now[0] += bus_module.SENDER_IDLE / 2 + 1
    bus.send("polls", [OutboundMessage(b"4", "4")])
    assert _closed_soon(first_events)  # idle past the timeout, dropped
    assert not first_polls.closed
    now[0] += bus_module.SENDER_IDLE + 1
    bus.send("polls", [OutboundMessage(b"5", "5")])
    assert _closed_soon(first_polls)
    assert [[m.message_id for m in b] for b in factory.client.senders[-1].sent] == [["5"]]
    assert factory.calls == 1  # one client: only its senders come and go


def test_concurrent_sends_to_many_entities_each_go_out_once_on_a_live_sender(factory):
    """Invocations send side by side while senders are dropped: no sender is closed under a
    send or shared by two at once, and every message goes out once."""
    bus = AzureServiceBus(factory, kept=4)
    names = [f"q{n}" for n in range(12)]

    def sends(worker: int) -> None:
        for n in range(60):
            bus.send(names[(worker + n) % len(names)], [OutboundMessage(b"x", f"{worker}-{n}")])

    threads = [threading.Thread(target=sends, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    senders = list(factory.client.senders)
    assert not [s.misused for s in senders if s.misused]
    ids = sorted(m.message_id for s in senders for batch in s.sent for m in batch)
    assert ids == sorted(f"{w}-{n}" for w in range(16) for n in range(60))
    assert len(bus._slots) <= 4 + 16  # the kept, plus any a running send held


@pytest.mark.parametrize("answer", ["sent", "failed"])
def test_a_sender_whose_send_is_in_flight_is_never_dropped_under_it(factory, answer):
    """The crash point of the sender cache: a send still in flight (its sender idle past the
    link timeout by its last take, and the least recently used) while other sends drop
    senders. It is passed over, its send ends on a live sender (its message out once, or its
    failure raised to the step), and only a later take drops and replaces it."""
    now = [0.0]
    bus = AzureServiceBus(factory, kept=2, monotonic=lambda: now[0])
    gate = threading.Event()
    factory.client.gates["polls"] = gate
    if answer == "failed":
        factory.client.fail_next = sbx.ServiceBusConnectionError(message="link detached")
    raised: list[Exception] = []

    def slow() -> None:
        try:
            bus.send("polls", [OutboundMessage(b"p", "p-1")])
        except BusError as exc:
            raised.append(exc)

    thread = threading.Thread(target=slow)
    thread.start()
    (polls,) = factory.client.senders
    assert polls.entered.wait(5)
    now[0] += bus_module.SENDER_IDLE + 1
    for n in range(6):
        bus.send(f"reply-{n}", [OutboundMessage(b"r", f"r-{n}")])
    assert all(_closed_soon(s) for s in factory.client.senders[1:5])  # the others dropped
    assert not polls.closed
    gate.set()
    thread.join(5)
    assert not polls.misused
    if answer == "sent":
        assert raised == [] and [[m.message_id for m in b] for b in polls.sent] == [["p-1"]]
    else:
        assert len(raised) == 1 and polls.sent == [] and polls.closed
    factory.client.gates.pop("polls")
    now[0] += 1
    bus.send("polls", [OutboundMessage(b"q", "p-2")])
    assert _closed_soon(polls)
    fresh = factory.client.senders[-1]
    assert fresh is not polls and fresh.name == "queue:polls"
    assert [[m.message_id for m in b] for b in fresh.sent] == [["p-2"]]
