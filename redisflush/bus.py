"""The Bus port (what the functions send) and its Azure Service Bus adapter.

The functions only ever *send*: receiving and settling belong to whoever hosts them (the
Functions host in Azure, `redisflush.local.host` on one machine). Both adapters of this port,
Azure and the local SQLite bus, take the same `OutboundMessage`, so the functions cannot tell
them apart.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .core.outbound import OutboundMessage, PropertyValue

# Defined in the pure core (the step function builds them); re-exported for the adapters.
from .sender.azure_sdk import Stuck, service_bus_message, within

__all__ = ["AzureServiceBus", "Bus", "BusError", "OutboundMessage", "PropertyValue",
           "ReceivedMessage", "to_azure_message"]

log = logging.getLogger("redisflush.bus")


@dataclass(frozen=True)
class ReceivedMessage:
    """A message as a receiver sees it: what was sent plus the broker's bookkeeping."""

    body: bytes
    message_id: str
    sequence_number: int
    delivery_count: int
    enqueued_at: dt.datetime
    lock_token: str
    locked_until: dt.datetime
    content_type: str | None = None
    correlation_id: str | None = None
    subject: str | None = None
    session_id: str | None = None
    reply_to: str | None = None
    reply_to_session_id: str | None = None
    application_properties: Mapping[str, PropertyValue] = field(default_factory=dict)
    scheduled_at: dt.datetime | None = None
    entity: str = ""


class BusError(Exception):
    """The bus itself failed: the caller must not treat the message as handled. `refused`:
    the entity will refuse again (missing, disabled, no right to send, too large), so trying
    the step again cannot help; else the failure may pass (busy, a dropped link, no answer)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


# azure.servicebus.exceptions whose cause a retry does not remove
REFUSALS = frozenset({"MessagingEntityNotFoundError", "MessagingEntityDisabledError",
                      "ServiceBusAuthorizationError", "ServiceBusAuthenticationError",
                      "MessageSizeExceededError"})
# One send (its retries included) answers within this or is given up, so an invocation ends
# inside its one-minute lock (docs/design.md, "Reliability rules"): 20 s of call window, an ARM
# call of at most 25 s, then the sends.
SEND_WITHIN = 12.0
# Service Bus detaches a sender's link after 10 idle minutes (then closes the connection), so a
# sender idle this long holds nothing worth keeping: it is closed, and a send builds a new one
# rather than fail on the dead link and wait out the SDK's retry backoff. Senders are also kept
# for at most KEPT_SENDERS entities: ReplyTo names come from the requests.
SENDER_IDLE = 540.0
KEPT_SENDERS = 16


class Bus(Protocol):
    """Send messages to a queue or publish them to a topic: all of them, or raise BusError."""

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None: ...

    def publish(self, topic: str, messages: Sequence[OutboundMessage]) -> None: ...


def to_azure_message(message: OutboundMessage) -> Any:
    """The azure-servicebus message for one OutboundMessage: the sender's own builder, so
    the app and a pipeline put the same properties on the wire."""
    return service_bus_message(message)


class _Slot:
    """One entity's sender and the lock that keeps two threads off it mid-send."""

    def __init__(self, now: float) -> None:
        self.lock = threading.Lock()
        self.sender: Any = None
        self.used = now  # when a send last took it (the bus's monotonic clock)
        # set when the slot is dropped (close(), or not used for a while): a send that waited
        # on the lock starts over
        self.retired = False


class AzureServiceBus:
    """Bus port on azure-servicebus: one client per process, created on first use.

    `client_factory` returns a `ServiceBusClient`; `from_settings` builds the identity-based
    or connection-string one. A sender per entity is kept and reused (an AMQP link per send
    would cost a round trip each time). Each entity has its own lock, so a slow send to one
    queue never holds up sends to another; a sender whose send failed is closed (its link
    released) before a fresh one replaces it. Each open sender holds an AMQP connection and the
    SDK's keep-alive thread, so one not used for SENDER_IDLE, or past the KEPT_SENDERS most
    recently used, is closed (the ReplyTo queues a long-lived worker answers are not bounded).
    """

    def __init__(self, client_factory: Callable[[], Any], *,
                 send_within: float = SEND_WITHIN, idle: float = SENDER_IDLE,
                 kept: int = KEPT_SENDERS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client_factory = client_factory
        self._send_within = send_within
        self._idle = idle
        self._kept = kept
        self._monotonic = monotonic
        self._client: Any = None
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._lock = threading.Lock()  # guards _client and _slots, never held over the network

    @classmethod
    def from_settings(cls, connection: str | None, namespace: str | None,
                      credential_factory: Callable[[], Any]) -> AzureServiceBus:
        # Refuse at start-up, not after the first ARM POST: a flush whose result cannot be
        # recorded would be redelivered and repeated.
        if not connection and not namespace:
            raise BusError("no Service Bus connection: set ServiceBusConnection or "
                           "ServiceBusConnection__fullyQualifiedNamespace")

        def factory() -> Any:
            from azure.servicebus import ServiceBusClient

            if connection:
                return ServiceBusClient.from_connection_string(connection)
            return ServiceBusClient(str(namespace), credential_factory())
        return cls(factory)

    def _slot(self, kind: str, entity: str) -> _Slot:
        """The entity's slot, marked used now. Slots not used for `idle` (this one included:
        its link is gone) and the least recently used past `kept` are dropped, their senders
        closed off this thread."""
        key, now = (kind, entity), self._monotonic()
        with self._lock:
            dropped = self._drop_unused(key, now)
            slot = self._slots.pop(key, None) or _Slot(now)
            slot.used = now
            self._slots[key] = slot  # (re)inserted last: the dict stays in order of use
        for name, sender in dropped:
            _close_later(sender, name)
        return slot

    def _drop_unused(self, key: tuple[str, str], now: float) -> list[tuple[str, Any]]:
        """Under self._lock: retire the slots idle past `idle`, and the least recently used
        past `kept` (`key`, about to be used, is never one of those), skipping any whose send
        is running. Returns their senders to close."""
        excess = len(self._slots) + (key not in self._slots) - self._kept
        dropped: list[tuple[str, Any]] = []
        for other, slot in list(self._slots.items()):  # least recently used first
            if now - slot.used <= self._idle:  # not idle: dropped only as an excess one
                if excess <= 0:
                    break  # the rest were used later still
                if other == key:
                    continue
            if not slot.lock.acquire(blocking=False):
                continue  # a send holds it: in use, and a later take can drop it
            try:
                slot.retired = True
                sender, slot.sender = slot.sender, None
            finally:
                slot.lock.release()
            del self._slots[other]
            excess -= other != key  # the key's own stale slot is replaced, not gone
            if sender is not None:
                dropped.append((other[1], sender))
        return dropped

    def _new_sender(self, kind: str, entity: str) -> Any:
        # Building the client and a sender does not connect: the link opens on first send.
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            client = self._client
        return client.get_queue_sender(entity) if kind == "queue" \
            else client.get_topic_sender(entity)

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        self._send("queue", queue, messages)

    def publish(self, topic: str, messages: Sequence[OutboundMessage]) -> None:
        self._send("topic", topic, messages)

    def _send(self, kind: str, entity: str, messages: Sequence[OutboundMessage]) -> None:
        if not messages:
            return
        now_or_past = [m for m in messages if m.scheduled_at is None]
        scheduled = [m for m in messages if m.scheduled_at is not None]
        while True:
            slot = self._slot(kind, entity)
            with slot.lock:
                if slot.retired:
                    continue  # close() ran while we waited: take the new slot
                try:
                    if slot.sender is None:
                        slot.sender = self._new_sender(kind, entity)
                    sender = slot.sender

                    def send_all(sender: Any = sender) -> None:
                        if now_or_past:
                            sender.send_messages([to_azure_message(m) for m in now_or_past])
                        for m in scheduled:
                            # schedule_messages returns sequence numbers we do not need: a
                            # duplicate MessageId is dropped by the broker, not by us.
                            sender.schedule_messages(to_azure_message(m), m.scheduled_at)
                    within(self._send_within, send_all, f"bus-send-{entity}")
                except Stuck as exc:
                    # the sender (its own AMQP connection: the client shares none) is left
                    # to its blocked thread and closed once that returns; the next send
                    # builds a new one
                    abandoned, slot.sender = slot.sender, None
                    threading.Thread(target=_close_after, args=(exc.thread, abandoned, entity),
                                     name=f"bus-reap-{entity}", daemon=True).start()
                    raise BusError(f"sending to {entity!r} failed: Service Bus gave no "
                                   f"answer ({exc})") from exc
                except Exception as exc:  # azure.servicebus.exceptions.*, AMQP, auth errors
                    failed, slot.sender = slot.sender, None
                    _close_quietly(failed, entity)
                    raise BusError(f"sending to {entity!r} failed: "
                                   f"{type(exc).__name__}: {exc}",
                                   refused=type(exc).__name__ in REFUSALS) from exc
                return

    def close(self) -> None:
        """Close every sender (each once its in-flight send is over), then the client."""
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
            client, self._client = self._client, None
        for slot in slots:
            with slot.lock:
                slot.retired = True
                sender, slot.sender = slot.sender, None
                if sender is not None:
                    sender.close()
        if client is not None:
            client.close()


def _close_later(sender: Any, entity: str) -> None:
    """Close a sender no send holds, on a thread of its own: closing sends AMQP frames, and a
    send must not wait on another entity's link."""
    threading.Thread(target=_close_quietly, args=(sender, entity), name=f"bus-close-{entity}",
                     daemon=True).start()


def _close_after(thread: threading.Thread, sender: Any, entity: str) -> None:
    """Close an abandoned sender once the send it is blocked in returns (or fails)."""
    thread.join()
    _close_quietly(sender, entity)


def _close_quietly(sender: Any, entity: str) -> None:
    """Release a failed sender's AMQP link; a second error here must not hide the first."""
    if sender is None:
        return
    try:
        sender.close()
    except Exception as exc:  # the link may already be gone
        log.debug("closing the failed sender of %r: %s", entity, type(exc).__name__)
