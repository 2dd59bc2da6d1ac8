"""Fakes at the azure-servicebus network edge.

The real `ServiceBusClient` is built (from a connection string, or a namespace and a
credential) with the options redisflush passes, so the SDK itself checks them; only the
methods that would open AMQP links (`get_queue_sender`, `get_queue_receiver`,
`get_subscription_receiver`) are replaced by recorders. Messages sent are the real
`azure.servicebus.ServiceBusMessage` objects built by redisflush.
"""
from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient

from tests.support.silent_peer import silent_listener

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
GROUP = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-app"
RESOURCE_ID = f"{GROUP}/providers/Microsoft.Cache/redis/cache-one"
CONNECTION = ("Endpoint=sb://unit-test-ns.servicebus.windows.net/;SharedAccessKeyName=k;"
              "SharedAccessKey=dmFsdWU=")
SETTINGS = {
    "REDISFLUSH_REQUEST_QUEUE": "req-q",
    "REDISFLUSH_POLL_QUEUE": "poll-q",
    "REDISFLUSH_EVENTS_TOPIC": "events-t",
    "REDISFLUSH_REPLY_QUEUE": "reply-q",
}
AT = "2024-05-01T12:00:00Z"
# The events below are literal CloudEvents in the shapes of docs/design.md ("Completion
# events"): the sender is checked against the contract, not against the app's own code.


def cache_rid(name: str) -> str:
    return f"{GROUP}/providers/Microsoft.Cache/redis/{name}"


def _body(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def completion_event(request_id: str, status: str = "Succeeded", *,
                     error: dict[str, Any] | None = None, cache: str = "cache-one",
                     index: int | None = None, count: int = 1) -> dict[str, Any]:
    """One cache's RedisFlush.FlushCompleted; `index` of `count` for a multi-target request."""
    data: dict[str, Any] = {
        "requestId": request_id, "status": status, "resourceId": cache_rid(cache),
        "kind": "redis", "linkedDatabaseIds": [], "operation": {"status": status},
        "error": error, "requestedAt": AT, "acceptedAt": AT,
        "completedAt": "2024-05-01T12:00:04Z", "durationSeconds": 4.0, "armRequests": 3,
        "reason": None, "requestedBy": None}
    event_id = f"{request_id}:completed"
    if count > 1:
        data["batch"] = {"index": index or 0, "count": count}
        event_id = f"{request_id}:{index or 0}:completed"
    return {"specversion": "1.0", "type": "RedisFlush.FlushCompleted",
            "source": cache_rid(cache), "subject": cache, "id": event_id, "time": AT,
            "datacontenttype": "application/json", "data": data}


def completion_body(request_id: str, status: str = "Succeeded", *,
                    error: dict[str, Any] | None = None, cache: str = "cache-one",
                    index: int | None = None, count: int = 1) -> bytes:
    return _body(completion_event(request_id, status, error=error, cache=cache, index=index,
                                  count=count))


def request_body(request_id: str, status: str, results: list[tuple[str, str]]) -> bytes:
    """A RedisFlush.RequestCompleted for caches [(name, status), ...]."""
    counts: dict[str, int] = {}
    for _, each in results:
        counts[each] = counts.get(each, 0) + 1
    data = {"requestId": request_id, "status": status, "counts": counts,
            "results": [{"resourceId": cache_rid(name), "status": each,
                         "error": None if each == "Succeeded" else
                         {"code": "Boom", "message": f"{name} broke"},
                         "durationSeconds": 4.0} for name, each in results],
            "requestedAt": AT, "completedAt": "2024-05-01T12:00:09Z", "durationSeconds": 9.0,
            "armRequests": 7, "reason": None, "requestedBy": None}
    return _body({"specversion": "1.0", "type": "RedisFlush.RequestCompleted",
                  "source": GROUP, "subject": GROUP, "id": f"{request_id}:completed",
                  "time": AT, "datacontenttype": "application/json", "data": data})


def progress_body(request_id: str, percent: float | None = 50.0, *,
                  status: str = "InProgress", targets: int = 1,
                  counts: dict[str, int] | None = None,
                  finished: list[dict[str, Any]] | None = None, step: int = 1) -> bytes:
    """A RedisFlush.FlushProgress note for the reply session."""
    return _body({"specversion": "1.0", "type": "RedisFlush.FlushProgress",
                  "id": f"{request_id}:progress:{step}", "source": RESOURCE_ID, "time": AT,
                  "datacontenttype": "application/json",
                  "data": {"requestId": request_id, "status": status,
                           "percentComplete": percent, "targets": targets,
                           "counts": counts or {}, "finished": finished or []}})


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
    def __init__(self, bus: FakeBus, kind: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self.bus, self.kind, self.args, self.kwargs = bus, kind, args, kwargs
        self.pending = list(bus.inbox)
        self.session = FakeSession()
        self.opened = self.closed = False
        self.completed: list[bytes] = []
        self.dead_lettered: list[tuple[bytes, str]] = []
        self.receive_calls: list[dict[str, Any]] = []

    def __enter__(self) -> FakeReceiver:
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
    def __init__(self, bus: FakeBus, queue: str) -> None:
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
def closed_port() -> Iterator[int]:
    """A loopback port nobody listens on: kept bound without listen() for the whole test, so
    connecting is refused and no other process on a busy machine can start listening there
    (a port bound, then released, could be taken meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word (a stuck frontend or
    a middlebox): the SDK's login over it never completes on its own."""
    with silent_listener() as (port, _):
        yield port
