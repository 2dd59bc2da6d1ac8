"""Fakes at the azure-servicebus network edge.

The real `ServiceBusClient` is built (from a connection string, or a namespace and a
credential) with the options redisflush passes, so the SDK itself checks them; only the
methods that would open AMQP links (`get_queue_sender`, `get_queue_receiver`,
`get_subscription_receiver`) are replaced by recorders. Messages sent are the real
`azure.servicebus.ServiceBusMessage` objects built by redisflush.
"""
from __future__ import annotations

import datetime as dt
import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient

from redisflush.events import completion_event, event_messages, progress_message
from redisflush.messages import Origin
from redisflush.target import CacheTarget

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
TARGET = CacheTarget(SUBSCRIPTION, "rg-app", "cache-one")
RESOURCE_ID = TARGET.resource_id
CONNECTION = ("Endpoint=sb://unit-test-ns.servicebus.windows.net/;SharedAccessKeyName=k;"
              "SharedAccessKey=dmFsdWU=")
SETTINGS = {
    "REDISFLUSH_REQUEST_QUEUE": "req-q",
    "REDISFLUSH_POLL_QUEUE": "poll-q",
    "REDISFLUSH_EVENTS_TOPIC": "events-t",
    "REDISFLUSH_REPLY_QUEUE": "reply-q",
}


def completion_body(request_id: str, status: str = "Succeeded", *,
                    error: dict[str, Any] | None = None) -> bytes:
    """A completion event exactly as the app publishes it (redisflush.events)."""
    now = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    origin = Origin(request_id, now, reply_to="reply-q", reply_to_session_id=request_id)
    event = completion_event(origin, TARGET, status, operation={"status": status},
                             error=error, accepted_at=now,
                             completed_at=now + dt.timedelta(seconds=4), arm_requests=3)
    return event_messages(event, origin, TARGET)[0].body


def progress_body(request_id: str, percent: float = 50.0) -> bytes:
    now = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    origin = Origin(request_id, now, reply_to="reply-q", reply_to_session_id=request_id)
    message = progress_message(origin, TARGET, "InProgress", {"percentComplete": percent},
                               1, now)
    assert message is not None
    return message.body


class FakeReceived:
    """What a receiver hands out: `body` is a generator of data sections, as in the SDK."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    @property
    def body(self) -> Any:
        return iter([self.raw])


class FakeSession:
    def __init__(self) -> None:
        self.renewals = 0

    def renew_lock(self) -> None:
        self.renewals += 1


class FakeReceiver:
    def __init__(self, bus: "FakeBus", kind: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self.bus, self.kind, self.args, self.kwargs = bus, kind, args, kwargs
        self.pending = list(bus.inbox)
        self.session = FakeSession()
        self.opened = self.closed = False
        self.completed: list[bytes] = []
        self.dead_lettered: list[tuple[bytes, str]] = []
        self.receive_calls: list[dict[str, Any]] = []

    def __enter__(self) -> "FakeReceiver":
        if self.bus.open_error is not None:
            raise self.bus.open_error
        self.opened = True
        self.bus.log.append(f"open {self.kind} receiver")
        return self

    def receive_messages(self, max_message_count: int = 1,
                         max_wait_time: float | None = None) -> list[FakeReceived]:
        self.receive_calls.append({"max_message_count": max_message_count,
                                   "max_wait_time": max_wait_time})
        if self.pending:
            batch, self.pending = (self.pending[:max_message_count],
                                   self.pending[max_message_count:])
            return batch
        time.sleep(min(max_wait_time or 0.0, 0.02))
        return []

    def complete_message(self, message: FakeReceived) -> None:
        self.completed.append(message.raw)

    def dead_letter_message(self, message: FakeReceived, reason: str | None = None,
                            error_description: str | None = None) -> None:
        self.dead_lettered.append((message.raw, reason or ""))

    def close(self) -> None:
        self.closed = True


class FakeSender:
    def __init__(self, bus: "FakeBus", queue: str) -> None:
        self.bus, self.queue, self.closed = bus, queue, False

    def send_messages(self, message: Any, timeout: float | None = None) -> None:
        if self.bus.send_error is not None:
            raise self.bus.send_error
        self.bus.sent.append((self.queue, message, timeout))
        self.bus.log.append(f"send to {self.queue}")

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeBus:
    """Records what redisflush asked of the SDK; `inbox` is what receivers will deliver."""

    inbox: list[FakeReceived] = field(default_factory=list)
    sent: list[tuple[str, Any, float | None]] = field(default_factory=list)
    senders: list[FakeSender] = field(default_factory=list)
    receivers: list[FakeReceiver] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    send_error: BaseException | None = None
    open_error: BaseException | None = None

    def deliver(self, *bodies: bytes) -> None:
        self.inbox.extend(FakeReceived(b) for b in bodies)


@pytest.fixture(autouse=True)
def restore_sdk_log_levels() -> Any:
    """AzureChannel quiets the SDK loggers for the CLI's one-line errors: undo it after each
    test so other tests' log capture is unaffected."""
    import logging

    names = ("azure", "azure.servicebus", "azure.identity", "uamqp")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def fake_bus(monkeypatch: pytest.MonkeyPatch) -> FakeBus:
    bus = FakeBus()
    real_init = ServiceBusClient.__init__

    def init(self: Any, fully_qualified_namespace: str, credential: Any, **kwargs: Any) -> None:
        bus.clients.append({"namespace": fully_qualified_namespace, "credential": credential,
                            **kwargs})
        real_init(self, fully_qualified_namespace, credential, **kwargs)

    def get_queue_sender(self: Any, queue_name: str, **kwargs: Any) -> FakeSender:
        sender = FakeSender(bus, queue_name)
        bus.senders.append(sender)
        return sender

    def get_queue_receiver(self: Any, *args: Any, **kwargs: Any) -> FakeReceiver:
        receiver = FakeReceiver(bus, "queue", args, kwargs)
        bus.receivers.append(receiver)
        return receiver

    def get_subscription_receiver(self: Any, *args: Any, **kwargs: Any) -> FakeReceiver:
        receiver = FakeReceiver(bus, "subscription", args, kwargs)
        bus.receivers.append(receiver)
        return receiver

    monkeypatch.setattr(ServiceBusClient, "__init__", init)
    monkeypatch.setattr(ServiceBusClient, "get_queue_sender", get_queue_sender)
    monkeypatch.setattr(ServiceBusClient, "get_queue_receiver", get_queue_receiver)
    monkeypatch.setattr(ServiceBusClient, "get_subscription_receiver",
                        get_subscription_receiver)
    return bus


@pytest.fixture
def app_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An app root of its own (host.json + local.settings.json): no checkout settings, no
    environment leaking in."""
    for name in ("ServiceBusConnection", "ServiceBusConnection__fullyQualifiedNamespace",
                 "AZURE_CLIENT_ID", *SETTINGS, "REDISFLUSH_TIMEOUT_SECONDS",
                 "REDISFLUSH_LOCAL_DIR", "REDISFLUSH_ALLOWED_SCOPES"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    (tmp_path / "local.settings.json").write_text(json.dumps(
        {"IsEncrypted": False, "Values": {**SETTINGS, "REDISFLUSH_LOCAL_DIR":
                                          str(tmp_path / ".redisflush")}}))
    return tmp_path


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
