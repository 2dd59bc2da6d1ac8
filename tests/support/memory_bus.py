"""An in-memory Service Bus for functional tests, and a pump that plays the Functions host.

`MemoryBus` implements the `Bus` port of redisflush.bus (send to a queue, publish to a topic)
with the broker behaviour the app relies on: scheduled messages stay invisible until their
time, and duplicate detection drops a second message with the same MessageId on the same
entity (the window is the whole test).

`MemoryBus.pump` plays the Functions host and the Python worker: it takes due messages from
the listened queues, builds the `azure.functions.ServiceBusMessage` exactly as the worker does
(`ServiceBusMessageInConverter.decode` over the trigger metadata the host sends), calls the
function's `main`, completes the message when it returns, abandons it when it raises (a
redelivery with DeliveryCount + 1) and dead-letters it after `max_delivery_count` attempts.
When nothing is due it moves the fake clock to the next scheduled message, so a follow of
thirty minutes runs in milliseconds.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import azure.functions as func
from azure.functions import meta
from azure.functions.servicebus import ServiceBusMessageInConverter

from redisflush.bus import BusError, OutboundMessage

UTC = dt.timezone.utc
START = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """The app's clock: moves only when the pump (or a test) moves it."""

    def __init__(self, start: dt.datetime = START) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def now(self) -> dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._now.timestamp()

    def advance(self, seconds: float) -> None:
        self._now += dt.timedelta(seconds=seconds)

    def advance_to(self, moment: dt.datetime) -> None:
        if moment > self._now:
            self._now = moment

    def sleep(self, seconds: float) -> None:
        """The app's sleep: recorded, returns at once (the clock does not move)."""
        self.sleeps.append(seconds)


@dataclass
class Envelope:
    """A message as the broker holds it."""

    entity: str
    message: OutboundMessage
    sequence_number: int
    sent_at: dt.datetime
    enqueued_at: dt.datetime
    visible_at: dt.datetime
    delivery_count: int = 0
    lock_token: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def message_id(self) -> str:
        return self.message.message_id

    @property
    def body_json(self) -> Any:
        return json.loads(self.message.body)

    @property
    def delay(self) -> float:
        """Seconds between sending and becoming visible (the scheduled wait)."""
        return (self.visible_at - self.sent_at).total_seconds()


@dataclass(frozen=True)
class Delivered:
    """One delivery by the pump and how it ended."""

    queue: str
    message_id: str
    delivery_count: int
    at: dt.datetime
    outcome: str  # completed | abandoned | dead-lettered
    error: BaseException | None = None


@dataclass
class _Fault:
    entity: str | None
    times: int
    error: str


class MemoryBus:
    """The Bus port in memory, with scheduling, duplicate detection and a delivery pump."""

    def __init__(self, clock: FakeClock, *, max_delivery_count: int = 10) -> None:
        self.clock = clock
        self.max_delivery_count = max_delivery_count
        self.accepted: dict[str, list[Envelope]] = {}  # every message an entity took in
        self.dropped: list[Envelope] = []  # duplicates the broker discarded
        self.active: dict[str, list[Envelope]] = {}  # waiting for delivery (listened queues)
        self.dead_letters: dict[str, list[Envelope]] = {}
        self.deliveries: list[Delivered] = []
        self.send_calls: list[tuple[str, str, list[str]]] = []  # (kind, entity, ids)
        self._seen: dict[str, set[str]] = {}
        self._sequence = itertools.count(1)
        self._faults: list[_Fault] = []
        self._twice: set[str] = set()

    # -- the Bus port ---------------------------------------------------------------------

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        self._accept("queue", queue, messages)

    def publish(self, topic: str, messages: Sequence[OutboundMessage]) -> None:
        self._accept("topic", topic, messages)

    def _accept(self, kind: str, entity: str, messages: Sequence[OutboundMessage]) -> None:
        self.send_calls.append((kind, entity, [m.message_id for m in messages]))
        if not entity:
            raise BusError(f"no {kind} name")
        for fault in self._faults:
            if fault.times > 0 and fault.entity in (None, entity):
                fault.times -= 1
                raise BusError(f"{fault.error} (sending to {entity!r})")
        for message in messages:
            self.inject(entity, message)

    # -- test controls --------------------------------------------------------------------

    def inject(self, entity: str, message: OutboundMessage) -> Envelope | None:
        """Put a message on an entity as a sender would (no fault injection)."""
        now = self.clock.now()
        visible = max(now, message.scheduled_at) if message.scheduled_at else now
        envelope = Envelope(entity, message, next(self._sequence), now, visible, visible)
        seen = self._seen.setdefault(entity, set())
        if message.message_id in seen:
            self.dropped.append(envelope)
            return None
        seen.add(message.message_id)
        self.accepted.setdefault(entity, []).append(envelope)
        self.active.setdefault(entity, []).append(envelope)
        return envelope

    def fail(self, entity: str | None = None, *, times: int = 1,
             error: str = "ServiceBusConnectionError: link detached") -> None:
        """Make the next `times` sends/publishes (to `entity`, or any) raise BusError."""
        self._faults.append(_Fault(entity, times, error))

    def deliver_twice(self, message_id: str) -> None:
        """Deliver this message once more after it completes (its lock was lost)."""
        self._twice.add(message_id)

    # -- what was sent --------------------------------------------------------------------

    def messages(self, entity: str) -> list[Envelope]:
        return list(self.accepted.get(entity, []))

    def bodies(self, entity: str) -> list[Any]:
        return [e.body_json for e in self.messages(entity)]

    # -- the host -------------------------------------------------------------------------

    def pump(self, app_or_mains: Any, clock: FakeClock | None = None, *,
             limit: int | None = None, max_steps: int = 2000) -> list[Delivered]:
        """Deliver due messages until the listened queues are empty (or `limit` deliveries).

        `app_or_mains` is a FlushApp (its request queue goes to FlushTrigger.main and its
        poll queue to PollOrchestrator.main) or a mapping queue name -> main.
        """
        clock = clock or self.clock
        mains = _mains(app_or_mains)
        done: list[Delivered] = []
        steps = 0
        while limit is None or len(done) < limit:
            pending = [e for q in mains for e in self.active.get(q, [])]
            if not pending:
                break
            steps += 1
            if steps > max_steps:
                raise AssertionError(f"pump: still busy after {max_steps} deliveries")
            due = [e for e in pending if e.visible_at <= clock.now()]
            if not due:
                clock.advance_to(min(e.visible_at for e in pending))
                continue
            envelope = min(due, key=lambda e: (e.visible_at, e.sequence_number))
            done.append(self._deliver(envelope, mains[envelope.entity], clock))
        return done

    def _deliver(self, envelope: Envelope, main: Callable[[func.ServiceBusMessage], Any],
                 clock: FakeClock) -> Delivered:
        queue = self.active[envelope.entity]
        queue.remove(envelope)
        envelope.delivery_count += 1
        envelope.lock_token = str(uuid.uuid4())
        message = trigger_message(envelope, clock.now())
        try:
            main(message)
        except Exception as exc:  # the host abandons: redelivered, or dead-lettered
            if envelope.delivery_count >= self.max_delivery_count:
                self.dead_letters.setdefault(envelope.entity, []).append(envelope)
                outcome = "dead-lettered"
            else:
                queue.append(envelope)
                outcome = "abandoned"
            record = Delivered(envelope.entity, envelope.message_id, envelope.delivery_count,
                               clock.now(), outcome, exc)
        else:
            record = Delivered(envelope.entity, envelope.message_id, envelope.delivery_count,
                               clock.now(), "completed")
            if envelope.message_id in self._twice:
                self._twice.discard(envelope.message_id)
                queue.append(envelope)  # the lock was lost before the completion landed
        self.deliveries.append(record)
        return record


def _mains(app_or_mains: Any) -> Mapping[str, Callable[[func.ServiceBusMessage], Any]]:
    if isinstance(app_or_mains, Mapping):
        return app_or_mains
    import FlushTrigger
    import PollOrchestrator

    settings = app_or_mains.settings
    return {settings.request_queue: FlushTrigger.main, settings.poll_queue: PollOrchestrator.main}


def dotnet_utc(moment: dt.datetime) -> str:
    """A UTC time the way the .NET host writes it: seven fractional digits and Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def trigger_metadata(envelope: Envelope, now: dt.datetime,
                     enqueued_time: str | None = None) -> dict[str, meta.Datum]:
    """The trigger metadata the Functions host sends the worker for one message."""
    m = envelope.message
    props = dict(m.application_properties)
    fields: dict[str, meta.Datum] = {
        "MessageId": meta.Datum(m.message_id, "string"),
        "DeliveryCount": meta.Datum(envelope.delivery_count, "int"),
        "SequenceNumber": meta.Datum(envelope.sequence_number, "int"),
        "EnqueuedSequenceNumber": meta.Datum(envelope.sequence_number, "int"),
        "EnqueuedTimeUtc": meta.Datum(enqueued_time or dotnet_utc(envelope.enqueued_at),
                                      "string"),
        "ExpiresAtUtc": meta.Datum(dotnet_utc(envelope.enqueued_at + dt.timedelta(days=14)),
                                   "string"),
        "LockedUntil": meta.Datum(dotnet_utc(now + dt.timedelta(minutes=1)), "string"),
        "LockToken": meta.Datum(envelope.lock_token, "string"),
        "ContentType": meta.Datum(m.content_type, "string"),
        "CorrelationId": meta.Datum(m.correlation_id, "string"),
        "ReplyTo": meta.Datum(m.reply_to, "string"),
        "ReplyToSessionId": meta.Datum(m.reply_to_session_id, "string"),
        "SessionId": meta.Datum(m.session_id, "string"),
        "Subject": meta.Datum(m.subject, "string"),
        "Label": meta.Datum(m.subject, "string"),
        "State": meta.Datum(0, "int"),
        "ApplicationProperties": meta.Datum(json.dumps(props), "json"),
        "UserProperties": meta.Datum(json.dumps(props), "json"),
        "sys": meta.Datum(json.dumps({"MethodName": envelope.entity,
                                      "UtcNow": dotnet_utc(now),
                                      "RandGuid": str(uuid.uuid4())}), "json"),
    }
    if m.scheduled_at is not None:
        fields["ScheduledEnqueueTimeUtc"] = meta.Datum(dotnet_utc(m.scheduled_at), "string")
    # The host leaves out what the message does not carry.
    return {k: v for k, v in fields.items() if v.value is not None}


def trigger_message(envelope: Envelope, now: dt.datetime, *, datum_type: str = "bytes",
                    enqueued_time: str | None = None) -> func.ServiceBusMessage:
    """Build the ServiceBusMessage the Python worker hands to `main`, as the worker does."""
    body: Any = envelope.message.body
    if datum_type in ("string", "json"):
        body = body.decode("utf-8")
    message = ServiceBusMessageInConverter.decode(
        meta.Datum(body, datum_type),
        trigger_metadata=trigger_metadata(envelope, now, enqueued_time))
    assert isinstance(message, func.ServiceBusMessage)
    return message
