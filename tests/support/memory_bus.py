"""An in-memory Service Bus for functional tests, and a pump that plays the Functions host.

`MemoryBus` implements the `Bus` port of redisflush.bus (send to a queue, publish to a topic)
and the receiving side of the local bus (receive, complete, abandon, dead-letter, renew, peek)
on a fake clock, with the broker behaviour the app relies on, held to the same contract as the
local SQLite bus and the Azure adapter (tests/contract/test_bus_contract.py): scheduled
messages stay invisible until their time; duplicate detection drops a second message with the
same MessageId on the same entity within the ten-minute window; peek-lock for one minute,
delivery counts and dead-lettering after MaxDeliveryCount; sessions; topics fanning out to
their subscriptions; 256 KiB per message and per batch, all or nothing.

`MemoryBus.pump` plays the Functions host and the Python worker: it takes due messages from
the listened queues, builds the `azure.functions.ServiceBusMessage` exactly as Azure does (the
shared builder in redisflush.local.worker_message: extension 5.x trigger metadata through
`ServiceBusMessageInConverter.decode`), calls the function's `main`, completes the message when
it returns, abandons it when it raises (a redelivery with DeliveryCount + 1) and dead-letters it
after `max_delivery_count` attempts. When nothing is due it moves the fake clock to the next
scheduled message, so a follow of thirty minutes runs in milliseconds.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions import meta
from azure.functions.servicebus import ServiceBusMessageInConverter

from redisflush.bus import REFUSALS, BusError, OutboundMessage, ReceivedMessage
from redisflush.local.bus import LockLostError
from redisflush.local.bus_schema import (
    DEADLETTER_SUFFIX,
    DEFAULT_DUPLICATE_WINDOW_SECONDS,
    DEFAULT_LOCK_SECONDS,
    DEFAULT_MAX_DELIVERY_COUNT,
    EPOCH,
    MAX_DELIVERY_COUNT_EXCEEDED,
    SUBSCRIPTIONS,
    check_sizes,
    message_size,
    properties_json,
)
from redisflush.local.worker_message import decode, trigger_metadata

UTC = dt.UTC
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
    visible_at: dt.datetime  # when it may next be received: sent, scheduled or lock end
    delivery_count: int = 0
    lock_token: str = field(default_factory=lambda: str(uuid.uuid4()))
    locked_until: dt.datetime | None = None
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None

    @property
    def message_id(self) -> str:
        return self.message.message_id

    @property
    def body_json(self) -> Any:
        return json.loads(self.message.body)

    @property
    def delay(self) -> float:
        """Seconds between sending and becoming visible (the scheduled wait)."""
        return (self.enqueued_at - self.sent_at).total_seconds()

    def received(self, entity: str, *, lock_token: str, now: dt.datetime) -> ReceivedMessage:
        """The receiver's view; a message not locked now shows the epoch as locked_until."""
        m = self.message
        properties: dict[str, Any] = dict(m.application_properties)
        if self.dead_letter_reason is not None:
            properties.update(DeadLetterReason=self.dead_letter_reason,
                              DeadLetterErrorDescription=self.dead_letter_description or "")
        return ReceivedMessage(
            body=m.body, message_id=m.message_id, sequence_number=self.sequence_number,
            delivery_count=self.delivery_count, enqueued_at=self.enqueued_at,
            lock_token=lock_token,
            locked_until=self.locked_until if self.locked_until and self.locked_until > now
            else EPOCH,
            content_type=m.content_type, correlation_id=m.correlation_id, subject=m.subject,
            session_id=m.session_id, reply_to=m.reply_to,
            reply_to_session_id=m.reply_to_session_id, application_properties=properties,
            scheduled_at=m.scheduled_at, entity=entity)


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


@dataclass
class _Entity:
    """An entity's kind and the options Service Bus gives it (README set-up by default)."""

    kind: str  # queue | topic | subscription
    topic: str | None = None
    max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT
    lock_seconds: float = DEFAULT_LOCK_SECONDS
    duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW_SECONDS
    requires_session: bool = False


class MemoryBus:
    """The Bus port in memory, with the receiving side, scheduling, duplicate detection and a
    delivery pump. Entities are created on first use, as the local bus does."""

    def __init__(self, clock: FakeClock, *,
                 max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT) -> None:
        self.clock = clock
        self.max_delivery_count = max_delivery_count
        self.accepted: dict[str, list[Envelope]] = {}  # every message an entity took in
        self.dropped: list[Envelope] = []  # duplicates the broker discarded
        self.active: dict[str, list[Envelope]] = {}  # waiting for delivery (or locked)
        self.dead_letters: dict[str, list[Envelope]] = {}  # entity -> its dead-letter queue
        self.deliveries: list[Delivered] = []
        self.send_calls: list[tuple[str, str, list[str]]] = []  # (kind, entity, ids)
        self.entities: dict[str, _Entity] = {}
        self._seen: dict[str, dict[str, dt.datetime]] = {}  # entity -> MessageId -> expiry
        self._sequence = itertools.count(1)
        self._faults: list[_Fault] = []
        self._twice: set[str] = set()

    # -- entities -------------------------------------------------------------------------

    def _entity(self, name: str, kind: str = "queue", topic: str | None = None) -> _Entity:
        if not name or name.endswith(DEADLETTER_SUFFIX):
            raise BusError(f"not an entity name: {name!r}")
        if kind == "queue" and SUBSCRIPTIONS in name:
            topic, _ = name.split(SUBSCRIPTIONS, 1)
            kind = "subscription"
        entity = self.entities.get(name)
        if entity is None:
            entity = self.entities[name] = _Entity(kind, topic,
                                                   max_delivery_count=self.max_delivery_count)
            if kind == "subscription" and topic:
                self._entity(topic, "topic")
        if entity.kind != kind:
            raise BusError(f"{name!r} is a {entity.kind}, not a {kind}", refused=True)
        return entity

    def ensure_queue(self, name: str, *, max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT,
                     lock_seconds: float = DEFAULT_LOCK_SECONDS,
                     duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW_SECONDS,
                     requires_session: bool = False) -> None:
        entity = self._entity(name, "queue")
        entity.max_delivery_count, entity.lock_seconds = max_delivery_count, lock_seconds
        entity.duplicate_window_seconds = duplicate_window_seconds
        entity.requires_session = requires_session

    def ensure_topic(self, name: str, *,
                     duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW_SECONDS) -> None:
        self._entity(name, "topic").duplicate_window_seconds = duplicate_window_seconds

    def ensure_subscription(self, topic: str, name: str, *,
                            max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT,
                            lock_seconds: float = DEFAULT_LOCK_SECONDS) -> None:
        self._entity(topic, "topic")
        entity = self._entity(f"{topic}{SUBSCRIPTIONS}{name}", "subscription", topic)
        entity.max_delivery_count, entity.lock_seconds = max_delivery_count, lock_seconds

    # -- the Bus port ---------------------------------------------------------------------

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        self._accept("queue", queue, messages)

    def publish(self, topic: str, messages: Sequence[OutboundMessage]) -> None:
        self._accept("topic", topic, messages)

    def _accept(self, kind: str, name: str, messages: Sequence[OutboundMessage]) -> None:
        self.send_calls.append((kind, name, [m.message_id for m in messages]))
        if not name:
            raise BusError(f"no {kind} name")
        for fault in self._faults:
            if fault.times > 0 and fault.entity in (None, name):
                fault.times -= 1
                raise BusError(f"{fault.error} (sending to {name!r})",
                               refused=fault.error.split(":")[0] in REFUSALS)
        entity = self._entity(name, kind)
        # all or nothing, as one Service Bus send: check every message before taking any
        check_sizes(name, [(m, message_size(m, properties_json(m.application_properties)))
                           for m in messages])
        for message in messages:
            if entity.requires_session and message.session_id is None:
                raise BusError(f"queue {name!r} requires sessions: message "
                               f"{message.message_id!r} has no session_id", refused=True)
        for message in messages:
            self.inject(name, message)

    # -- test controls --------------------------------------------------------------------

    def inject(self, entity: str, message: OutboundMessage) -> Envelope | None:
        """Put a message on an entity as a sender would (no fault injection); a topic copies it
        to each of its subscriptions. None when duplicate detection dropped it."""
        options = self.entities.get(entity) or self._entity(entity)
        now = self.clock.now()
        visible = max(now, message.scheduled_at) if message.scheduled_at else now
        envelope = Envelope(entity, message, next(self._sequence), now, visible, visible)
        if options.duplicate_window_seconds > 0:
            seen = self._seen.setdefault(entity, {})
            for message_id in [k for k, until in seen.items() if until <= now]:
                del seen[message_id]
            if message.message_id in seen:  # kept for the window; a repeat does not extend it
                self.dropped.append(envelope)
                return None
            seen[message.message_id] = now + dt.timedelta(
                seconds=options.duplicate_window_seconds)
        self.accepted.setdefault(entity, []).append(envelope)
        if options.kind != "topic":
            self.active.setdefault(entity, []).append(envelope)
            return envelope
        for name, sub in self.entities.items():
            if sub.kind == "subscription" and sub.topic == entity:
                copy = dataclasses.replace(envelope, entity=name,
                                           sequence_number=next(self._sequence))
                self.accepted.setdefault(name, []).append(copy)
                self.active.setdefault(name, []).append(copy)
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

    # -- receiving and settling, as the local bus offers them ----------------------------

    def _held(self, entity: str) -> tuple[list[Envelope], _Entity | None]:
        """The list holding an entity's messages, and its options (None: a dead-letter queue,
        which never dead-letters again)."""
        if entity.endswith(DEADLETTER_SUFFIX):
            base = entity.removesuffix(DEADLETTER_SUFFIX)
            self._entity(base)
            return self.dead_letters.setdefault(base, []), None
        options = self._entity(entity)
        if options.kind == "topic":
            raise BusError(f"{entity!r} is a topic: receive from one of its subscriptions")
        return self.active.setdefault(entity, []), options

    def _to_dead_letters(self, entity: str, envelope: Envelope, reason: str,
                         description: str) -> None:
        self.active[entity].remove(envelope)
        envelope.locked_until, envelope.visible_at = None, self.clock.now()
        envelope.dead_letter_reason, envelope.dead_letter_description = reason, description
        self.dead_letters.setdefault(entity, []).append(envelope)

    def _exhausted(self, entity: str, envelope: Envelope, options: _Entity | None) -> bool:
        """Dead-letter instead of delivering more than MaxDeliveryCount times."""
        if options is None or envelope.delivery_count < options.max_delivery_count:
            return False
        self._to_dead_letters(entity, envelope, MAX_DELIVERY_COUNT_EXCEEDED,
                              f"Message could not be consumed after "
                              f"{options.max_delivery_count} delivery attempts.")
        return True

    def receive(self, entity: str, *, max_count: int = 1,
                session_id: str | None = None) -> list[ReceivedMessage]:
        """Lock and return up to max_count ready messages, oldest first; [] if none is ready."""
        if max_count < 1:
            raise ValueError("max_count must be >= 1")
        held, options = self._held(entity)
        if options is not None and options.requires_session and session_id is None:
            raise ValueError(f"{entity!r} requires sessions: pass session_id")
        now = self.clock.now()
        ready = sorted((e for e in held if e.visible_at <= now and
                        (session_id is None or e.message.session_id == session_id)),
                       key=lambda e: e.sequence_number)
        received: list[ReceivedMessage] = []
        for envelope in ready:
            if len(received) >= max_count:
                break
            if self._exhausted(entity, envelope, options):
                continue
            lock = options.lock_seconds if options else DEFAULT_LOCK_SECONDS
            envelope.delivery_count += 1
            envelope.lock_token = str(uuid.uuid4())
            envelope.locked_until = envelope.visible_at = now + dt.timedelta(seconds=lock)
            received.append(envelope.received(entity, lock_token=envelope.lock_token, now=now))
        return received

    def _locked(self, message: ReceivedMessage) -> tuple[Envelope, _Entity | None]:
        held, options = self._held(message.entity)
        now = self.clock.now()
        for envelope in held:
            if (envelope.sequence_number == message.sequence_number
                    and envelope.lock_token == message.lock_token
                    and envelope.locked_until is not None and envelope.locked_until > now):
                return envelope, options
        raise LockLostError(f"lock on message {message.message_id!r} (sequence "
                            f"{message.sequence_number}) in {message.entity!r} expired or was "
                            "lost: it is, or will be, delivered again")

    def complete(self, message: ReceivedMessage) -> None:
        """Remove the message: it was handled. LockLostError if the lock is gone."""
        envelope, _ = self._locked(message)
        self._held(message.entity)[0].remove(envelope)

    def abandon(self, message: ReceivedMessage) -> None:
        """Unlock at once for redelivery; dead-letter if that was the last delivery allowed."""
        envelope, options = self._locked(message)
        if not self._exhausted(message.entity, envelope, options):
            envelope.locked_until, envelope.visible_at = None, self.clock.now()

    def dead_letter(self, message: ReceivedMessage, reason: str = "",
                    description: str = "") -> None:
        """Move the message to `{entity}/$deadletterqueue` with the reason in its properties."""
        if message.entity.endswith(DEADLETTER_SUFFIX):
            raise ValueError("a dead-lettered message cannot be dead-lettered again")
        envelope, _ = self._locked(message)
        self._to_dead_letters(message.entity, envelope, reason, description)

    def renew_lock(self, message: ReceivedMessage) -> dt.datetime:
        """Extend the lock by the entity's lock duration from now; returns the new expiry."""
        envelope, options = self._locked(message)
        lock = options.lock_seconds if options else DEFAULT_LOCK_SECONDS
        envelope.locked_until = envelope.visible_at = (self.clock.now()
                                                       + dt.timedelta(seconds=lock))
        return envelope.locked_until

    def peek(self, entity: str, max_count: int = 100) -> list[ReceivedMessage]:
        """Look without locking, scheduled and locked messages included (lock_token '')."""
        held, _ = self._held(entity)
        now = self.clock.now()
        return [e.received(entity, lock_token="", now=now)
                for e in sorted(held, key=lambda e: e.sequence_number)[:max_count]]

    def counts(self, entity: str) -> dict[str, int]:
        """active: receivable now; scheduled: not yet visible; locked; deadletter."""
        held, _ = self._held(entity)
        now = self.clock.now()
        locked = sum(1 for e in held if e.locked_until is not None and e.locked_until > now)
        active = sum(1 for e in held if e.visible_at <= now)
        return {"active": active, "scheduled": len(held) - active - locked, "locked": locked,
                "deadletter": len(self.dead_letters.get(entity, []))}

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
        limit = self._entity(envelope.entity).max_delivery_count
        try:
            main(message)
        except Exception as exc:  # the host abandons: redelivered, or dead-lettered
            if envelope.delivery_count >= limit:
                envelope.dead_letter_reason = MAX_DELIVERY_COUNT_EXCEEDED
                envelope.dead_letter_description = (
                    f"Message could not be consumed after {limit} delivery attempts.")
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


def envelope_fields(envelope: Envelope) -> dict[str, Any]:
    """`trigger_metadata` arguments for one delivery of an envelope."""
    m = envelope.message
    return dict(message_id=m.message_id, delivery_count=envelope.delivery_count,
                sequence_number=envelope.sequence_number, enqueued_at=envelope.enqueued_at,
                lock_token=envelope.lock_token, content_type=m.content_type,
                correlation_id=m.correlation_id, subject=m.subject, session_id=m.session_id,
                reply_to=m.reply_to, reply_to_session_id=m.reply_to_session_id,
                application_properties=dict(m.application_properties))


_DATUM_TO_DATA_TYPE = {"bytes": "binary", "string": "string"}


def trigger_message(envelope: Envelope, now: dt.datetime, *, datum_type: str = "bytes",
                    enqueued_time: str | None = None) -> func.ServiceBusMessage:
    """The ServiceBusMessage the Python worker hands to `main` in Azure, for this delivery.

    `datum_type` "bytes" is function.json's `"dataType": "binary"` (ours), "string" the host's
    default; "json" hands the text over as a JSON datum, which the Service Bus extension never
    does, for a test that the app does not care. `enqueued_time` replaces EnqueuedTimeUtc's
    text (to try every form the worker parses)."""
    metadata = trigger_metadata(**envelope_fields(envelope))
    if enqueued_time is not None:
        metadata["EnqueuedTimeUtc"] = meta.Datum(json.dumps(enqueued_time), "json")
    body = envelope.message.body
    if datum_type == "json":
        message = ServiceBusMessageInConverter.decode(meta.Datum(body.decode("utf-8"), "json"),
                                                      trigger_metadata=metadata)
        assert isinstance(message, func.ServiceBusMessage)
        return message
    return decode(body, metadata, data_type=_DATUM_TO_DATA_TYPE[datum_type])
