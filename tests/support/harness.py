"""The functional harness: the app wired to the fake clock, the memory bus and scripted ARM,
plus the checks every completion event must pass (CloudEvents shape, properties, counts).
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from redisflush import __version__
from redisflush.app import FlushApp
from redisflush.arm import ArmClient, StaticToken, TokenSource
from redisflush.bus import OutboundMessage
from redisflush.functions import install
from redisflush.pacing import Pacer
from redisflush.settings import Settings

from .memory_bus import Delivered, Envelope, FakeClock, MemoryBus
from .scripted_arm import Recorded, ScriptedArm

SUB = "6f1b1a3e-0c47-4a8e-9d56-2d2f8c1f0a11"
RG = "rg-caches"
CACHE = "cache-01"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/{RG}"
TOKEN = "t"
EVENT_TYPE = "RedisFlush.FlushCompleted"
DATA_FIELDS = {"requestId", "status", "resourceId", "operation", "error", "requestedAt",
               "acceptedAt", "completedAt", "durationSeconds", "armRequests", "reason",
               "requestedBy"}
OPERATION_FIELDS = {"id", "name", "status", "percentComplete", "startTime", "endTime", "error"}


def resource_id(sub: str = SUB, rg: str = RG, cache: str = CACHE) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/Redis/{cache}"


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def build_app(settings: Settings, bus: MemoryBus, clock: FakeClock, *,
              tokens: TokenSource | None = None,
              timeouts: tuple[float, float] = (2.0, 5.0)) -> FlushApp:
    """The app as redisflush.functions builds it, with the test's clock, bus and token."""
    arm = ArmClient(settings.arm_endpoint, "2023-08-01", tokens or StaticToken(TOKEN),
                    pacer=Pacer(clock=clock.monotonic), timeouts=timeouts)
    return FlushApp(settings, arm, bus, clock=clock.now, sleep=clock.sleep)


@dataclass
class Harness:
    clock: FakeClock
    bus: MemoryBus
    arm: ScriptedArm
    app: FlushApp
    others: list[ScriptedArm] = field(default_factory=list)
    token: str = TOKEN
    _counter: int = 0

    @classmethod
    def create(cls, clock: FakeClock, bus: MemoryBus, arm: ScriptedArm, *,
               tokens: TokenSource | None = None, token: str = TOKEN,
               timeouts: tuple[float, float] = (2.0, 5.0), endpoint: str | None = None,
               **settings: Any) -> "Harness":
        settings.setdefault("allowed_scopes", (SCOPE,))
        config = Settings(arm_endpoint=endpoint or arm.endpoint, **settings)
        app = build_app(config, bus, clock, tokens=tokens or StaticToken(token),
                        timeouts=timeouts)
        install(app)
        arm.clock = clock
        return cls(clock, bus, arm, app, token=token)

    @property
    def settings(self) -> Settings:
        return self.app.settings

    # -- driving ----------------------------------------------------------------------------

    def send_request(self, body: Any = None, *, message_id: str | None = None,
                     reply_to: str | None = None, reply_to_session_id: str | None = None,
                     correlation_id: str | None = None, **fields: Any) -> str:
        """Drop a flush request on the request queue as a pipeline would; returns MessageId."""
        self._counter += 1
        message_id = message_id or f"req-{self._counter:04d}"
        if body is None:
            body = {"subscriptionId": SUB, "resourceGroup": RG, "cacheName": CACHE, **fields}
        data = body if isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        envelope = self.bus.inject(self.settings.request_queue, OutboundMessage(
            data, message_id, correlation_id=correlation_id, reply_to=reply_to,
            reply_to_session_id=reply_to_session_id))
        assert envelope is not None, "test sent a duplicate request MessageId"
        return message_id

    def run(self, *, allow_errors: bool = False, **kwargs: Any) -> list[Delivered]:
        done = self.bus.pump(self.app, self.clock, **kwargs)
        if not allow_errors:
            failed = [d for d in done if d.error is not None]
            assert not failed, f"a function raised: {failed[0].error!r}"
        return done

    # -- reading the results ----------------------------------------------------------------

    def events(self) -> list[Envelope]:
        return self.bus.messages(self.settings.events_topic)

    def polls(self, request_id: str | None = None) -> list[Envelope]:
        return [e for e in self.bus.messages(self.settings.poll_queue)
                if request_id is None or e.body_json["requestId"] == request_id]

    def arm_requests(self, request_id: str) -> list[Recorded]:
        seen: list[Recorded] = []
        for server in [self.arm, *self.others]:
            seen.extend(server.requests_for(request_id))
        return seen

    def event(self, request_id: str, status: str, *, rid: str | None = resource_id(),
              arm_requests: int | None = None) -> dict[str, Any]:
        """The one completion event of `request_id`, checked field by field; returns data."""
        mine = [e for e in self.events() if e.message.correlation_id == request_id]
        assert len(mine) == 1, f"expected one event for {request_id}, got {len(mine)}"
        envelope = mine[0]
        doc = check_event(envelope.message, request_id, status, rid)
        seen = self.arm_requests(request_id)
        expected = len(seen) if arm_requests is None else arm_requests
        assert doc["data"]["armRequests"] == expected, (
            f"armRequests {doc['data']['armRequests']} but the server saw {len(seen)}")
        check_requests(seen, request_id, self.token)
        return doc["data"]


def check_event(message: OutboundMessage, request_id: str, status: str,
                rid: str | None) -> dict[str, Any]:
    """CloudEvents 1.0 structured JSON and the Service Bus properties DESIGN promises."""
    assert message.content_type == "application/cloudevents+json"
    assert message.message_id == f"{request_id}:completed"
    assert message.subject == EVENT_TYPE
    assert message.correlation_id == request_id
    props = dict(message.application_properties)
    doc = json.loads(message.body)
    assert props["status"] == status, (props["status"], doc["data"]["error"])
    assert props["requestId"] == request_id
    assert doc["specversion"] == "1.0"
    assert doc["type"] == EVENT_TYPE
    assert doc["id"] == f"{request_id}:completed"
    assert doc["datacontenttype"] == "application/json"
    data = doc["data"]
    assert set(data) == DATA_FIELDS, set(data) ^ DATA_FIELDS
    assert data["requestId"] == request_id and data["status"] == status
    assert data["resourceId"] == rid
    if rid is not None:
        assert doc["source"] == rid
        assert doc["subject"] == rid.rsplit("/", 1)[1]
        parts = rid.split("/")
        assert (props["subscriptionId"], props["resourceGroup"], props["cacheName"]) == \
            (parts[2], parts[4], parts[8])
    else:
        assert doc["source"] and "subject" not in doc
    completed = parse_time(data["completedAt"])
    assert parse_time(doc["time"]) == completed
    requested = parse_time(data["requestedAt"])
    # the times are written to the millisecond, the duration from the exact clock
    assert abs(data["durationSeconds"] - (completed - requested).total_seconds()) <= 0.002
    if data["acceptedAt"] is not None:
        assert requested <= parse_time(data["acceptedAt"]) <= completed
    if status == "Succeeded":
        assert data["error"] is None
    elif status != "Canceled":  # a cancellation may come without an error
        assert data["error"]["code"] and data["error"]["message"], data["error"]
    if data["operation"] is not None:
        assert set(data["operation"]) <= OPERATION_FIELDS
    return doc


USER_AGENT = re.compile(r"(^|\s)redisflush/" + re.escape(__version__) + r"(\s|$)")


def check_requests(requests: Iterable[Recorded], request_id: str, token: str) -> None:
    """Every ARM request carries the bearer token, our User-Agent and a client request id."""
    for r in requests:
        assert r.header("Authorization") == f"Bearer {token}", r.header("Authorization")
        assert USER_AGENT.search(r.header("User-Agent") or ""), r.header("User-Agent")
        assert re.fullmatch(re.escape(request_id) + r":\d+", r.client_request_id or "")


def scheduled_delays(envelopes: Iterable[Envelope]) -> list[float]:
    return [e.delay for e in envelopes]


def no_secrets(text: str, secrets: Mapping[str, str]) -> list[str]:
    """The names of the secrets that occur in `text`."""
    return [name for name, value in secrets.items() if value and value in text]
