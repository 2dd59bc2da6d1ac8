"""The Bus port (what the functions send) and its Azure Service Bus adapter.

The functions only ever *send*: receiving and settling belong to whoever hosts them (the
Functions host in Azure, `redisflush.local.host` on one machine). Both adapters of this port,
Azure and the local SQLite bus, take the same `OutboundMessage`, so the functions cannot tell
them apart.
"""
from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

PropertyValue = str | int | float | bool


@dataclass(frozen=True)
class OutboundMessage:
    """One message to send; `scheduled_at` (UTC) makes it invisible until then."""

    body: bytes
    message_id: str
    content_type: str = "application/json"
    correlation_id: str | None = None
    subject: str | None = None
    session_id: str | None = None
    reply_to: str | None = None
    reply_to_session_id: str | None = None
    application_properties: Mapping[str, PropertyValue] = field(default_factory=dict)
    scheduled_at: dt.datetime | None = None


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
    """The bus itself failed: the caller must not treat the message as handled."""


class Bus(Protocol):
    """Send messages to a queue or publish them to a topic: all of them, or raise BusError."""

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None: ...

    def publish(self, topic: str, messages: Sequence[OutboundMessage]) -> None: ...


def to_azure_message(message: OutboundMessage) -> Any:
    """Build the azure-servicebus message for one OutboundMessage (ids, session, schedule)."""
    from azure.servicebus import ServiceBusMessage

    return ServiceBusMessage(
        message.body,
        message_id=message.message_id,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        subject=message.subject,
        session_id=message.session_id,
        reply_to=message.reply_to,
        reply_to_session_id=message.reply_to_session_id,
        application_properties=dict(message.application_properties) or None,
        scheduled_enqueue_time_utc=message.scheduled_at,
    )


class AzureServiceBus:
    """Bus port on azure-servicebus: one client per process, created on first use.

    `client_factory` returns a `ServiceBusClient`; `from_settings` builds the identity-based
    or connection-string one. A sender per entity is kept and reused (an AMQP link per send
    would cost a round trip each time); a lock keeps the worker's threads from sharing one
    sender mid-send.
    """

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._senders: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, connection: str | None, namespace: str | None,
                      credential_factory: Callable[[], Any]) -> "AzureServiceBus":
        # Refuse at start-up, not after the first ARM POST: a flush whose result cannot be
        # recorded would be redelivered and repeated.
        if not connection and not namespace:
            raise BusError("no Service Bus connection: set ServiceBusConnection or "
                           "ServiceBusConnection__fullyQualifiedNamespace")

        def factory() -> Any:
            from azure.servicebus import ServiceBusClient

            if connection:
                return ServiceBusClient.from_connection_string(connection)
            return ServiceBusClient(namespace, credential_factory())
        return cls(factory)

    def _sender(self, kind: str, entity: str) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        sender = self._senders.get(kind + entity)
        if sender is None:
            sender = self._client.get_queue_sender(entity) if kind == "queue" \
                else self._client.get_topic_sender(entity)
            self._senders[kind + entity] = sender
        return sender

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        self._send("queue", queue, messages)

    def publish(self, topic: str, messages: Sequence[OutboundMessage]) -> None:
        self._send("topic", topic, messages)

    def _send(self, kind: str, entity: str, messages: Sequence[OutboundMessage]) -> None:
        if not messages:
            return
        now_or_past = [m for m in messages if m.scheduled_at is None]
        scheduled = [m for m in messages if m.scheduled_at is not None]
        try:
            with self._lock:
                sender = self._sender(kind, entity)
                if now_or_past:
                    sender.send_messages([to_azure_message(m) for m in now_or_past])
                for m in scheduled:
                    # schedule_messages returns sequence numbers we do not need: a duplicate
                    # MessageId is dropped by the broker's duplicate detection, not by us.
                    sender.schedule_messages(to_azure_message(m), m.scheduled_at)
        except BusError:
            raise
        except Exception as exc:  # azure.servicebus.exceptions.*, AMQP errors, auth errors
            with self._lock:
                self._senders.pop(kind + entity, None)
            raise BusError(f"sending to {entity!r} failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            for sender in self._senders.values():
                sender.close()
            self._senders.clear()
            if self._client is not None:
                self._client.close()
                self._client = None
