"""The functional harness: the app wired to the fake clock, the memory bus, a ledger and
scripted ARM, plus the checks every completion event must pass (CloudEvents shape, properties,
counts; docs/design.md, "Completion events").
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redisflush import __version__
from redisflush.app import FlushApp
from redisflush.arm import ArmClient
from redisflush.arm_tokens import StaticToken, TokenSource
from redisflush.bus import OutboundMessage
from redisflush.functions import install
from redisflush.ledger import Ledger, MemoryLedger
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
REQUEST_EVENT_TYPE = "RedisFlush.RequestCompleted"
DATA_FIELDS = {"requestId", "status", "resourceId", "kind", "linkedDatabaseIds", "operation",
               "error", "requestedAt", "acceptedAt", "completedAt", "durationSeconds",
               "armRequests", "reason", "requestedBy"}
OPERATION_FIELDS = {"id", "name", "status", "percentComplete", "startTime", "endTime", "error"}
REQUEST_DATA_FIELDS = {"requestId", "status", "counts", "results", "error", "requestedAt",
                       "completedAt", "durationSeconds", "armRequests", "reason", "requestedBy"}
# how long a check waits for the scripted servers to record what the app already counted
SETTLE_SECONDS = 10.0
STATUSES = ("Succeeded", "Failed", "Canceled", "TimedOut", "Rejected")


def resource_id(sub: str = SUB, rg: str = RG, cache: str = CACHE) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/Redis/{cache}"


def database_id(cluster: str, database: str = "default", *, sub: str = SUB, rg: str = RG
                ) -> str:
    """A Managed Redis database id, as the events and the poll state write it."""
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/"
            f"redisEnterprise/{cluster}/databases/{database}")


def target_of(envelope: Envelope, index: int = 0) -> dict[str, Any]:
    """One target's entry in a poll message (state v2: one message per request)."""
    state = envelope.body_json
    assert state["v"] == 2, state.get("v")
    target: dict[str, Any] = state["targets"][index]
    return target


def rejected_id(request_id: str, message_id: str | None = None) -> str:
    """The event id of a request rejected before anything was recorded (docs/design.md,
    "Completion events"): `{requestId}:rejected:{12 hex of sha256(MessageId)}:completed`."""
    digest = hashlib.sha256((message_id or request_id).encode()).hexdigest()[:12]
    return f"{request_id}:rejected:{digest}:completed"


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def build_app(settings: Settings, bus: MemoryBus, clock: FakeClock, *,
              tokens: TokenSource | None = None,
              timeouts: tuple[float, float] = (2.0, 5.0),
              ledger: Ledger | None = None) -> FlushApp:
    """The app as redisflush.functions builds it, with the test's clock, bus, ledger, token."""
    arm = ArmClient(settings.arm_endpoint, "2023-08-01", tokens or StaticToken(TOKEN),
                    pacer=Pacer(clock=clock.monotonic), timeouts=timeouts)
    return FlushApp(settings, arm, bus, ledger if ledger is not None else MemoryLedger(),
                    clock=clock.now, sleep=clock.sleep, monotonic=clock.monotonic)


@dataclass
class Harness:
    clock: FakeClock
    bus: MemoryBus
    arm: ScriptedArm
    app: FlushApp
    others: list[ScriptedArm] = field(default_factory=list)
    token: str = TOKEN
    tokens: TokenSource | None = None
    timeouts: tuple[float, float] = (2.0, 5.0)
    _counter: int = 0

    @classmethod
    def create(cls, clock: FakeClock, bus: MemoryBus, arm: ScriptedArm, *,
               tokens: TokenSource | None = None, token: str = TOKEN,
               timeouts: tuple[float, float] = (2.0, 5.0), endpoint: str | None = None,
               ledger: Ledger | None = None, **settings: Any) -> Harness:
        settings.setdefault("allowed_scopes", (SCOPE,))
        config = Settings(arm_endpoint=endpoint or arm.endpoint, **settings)
        tokens = tokens or StaticToken(token)
        app = build_app(config, bus, clock, tokens=tokens, timeouts=timeouts, ledger=ledger)
        install(app)
        arm.clock = clock
        return cls(clock, bus, arm, app, token=token, tokens=tokens, timeouts=timeouts)

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def ledger(self) -> Ledger:
        return self.app.ledger

    def restart(self, ledger: Ledger | None = None) -> FlushApp:
        """A new host process: a fresh app (ARM client, pacer, pollers) over the same bus and
        ledger storage (or `ledger`, e.g. the same SQLite file opened again)."""
        app = build_app(self.settings, self.bus, self.clock, tokens=self.tokens,
                        timeouts=self.timeouts,
                        ledger=ledger if ledger is not None else self.app.ledger)
        self.app = app
        install(app)
        return app

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

    def event_messages(self, request_id: str) -> dict[str, OutboundMessage]:
        """The request's events on the topic by id (duplicates were dropped by the broker;
        a second accepted copy of one id fails here)."""
        found: dict[str, OutboundMessage] = {}
        for envelope in self.events():
            if envelope.message.correlation_id == request_id:
                assert envelope.message_id not in found, f"{envelope.message_id} twice"
                found[envelope.message_id] = envelope.message
        return found

    def arm_requests(self, request_id: str, at_least: int = 0,
                     timeout: float = SETTLE_SECONDS) -> list[Recorded]:
        """What the servers recorded of `request_id`; with `at_least`, once they recorded that
        many (or `timeout` passed): the app counts a request it gave up on (read timeout) when
        it gives up, the server when its handler thread reads it, which on a loaded machine
        can be after the app's run ended."""
        servers = [self.arm, *self.others]
        deadline = time.monotonic() + timeout
        while True:
            seen = [r for server in servers for r in server.requests_for(request_id)]
            left = deadline - time.monotonic()
            if len(seen) >= at_least or left <= 0:
                return seen
            self.arm.wait_requests(request_id, len(self.arm.requests_for(request_id)) + 1,
                                   min(left, 0.05) if self.others else left)

    def event(self, request_id: str, status: str, *, rid: str | None = resource_id(),
              arm_requests: int | None = None, event_id: str | None = None
              ) -> dict[str, Any]:
        """The one completion event of a one-target `request_id`, checked field by field;
        returns data."""
        mine = [e for e in self.events() if e.message.correlation_id == request_id]
        assert len(mine) == 1, f"expected one event for {request_id}, got {len(mine)}"
        envelope = mine[0]
        doc = check_event(envelope.message, request_id, status, rid, event_id=event_id)
        seen = self.arm_requests(request_id, at_least=doc["data"]["armRequests"])
        expected = len(seen) if arm_requests is None else arm_requests
        assert doc["data"]["armRequests"] == expected, (
            f"armRequests {doc['data']['armRequests']} but the server saw {len(seen)}")
        check_requests(seen, request_id, self.token)
        return doc["data"]

    def batch(self, request_id: str, statuses: Mapping[str, str], status: str, *,
              scope: str = SCOPE, arm_requests: int | None = None
              ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """The events of a several-target (or selector) request: one per cache, keyed by
        resource id, each `statuses[rid]`, indexed in sorted order, and the request's, whose
        status is `status`. Returns (cache data by resource id, request data)."""
        found = self.event_messages(request_id)
        ids = sorted(statuses, key=str.lower)
        wanted = {f"{request_id}:completed:{i}" for i in range(len(ids))} | \
            {f"{request_id}:completed"}
        assert set(found) == wanted, sorted(set(found) ^ wanted)
        caches = {}
        for i, rid in enumerate(ids):
            doc = check_event(found[f"{request_id}:completed:{i}"], request_id, statuses[rid],
                              rid, index=i, count=len(ids), batch=True)
            caches[rid] = doc["data"]
        request = check_request_event(found[f"{request_id}:completed"], request_id, status,
                                      scope, results=statuses)
        seen = self.arm_requests(request_id, at_least=request["data"]["armRequests"])
        expected = len(seen) if arm_requests is None else arm_requests
        assert request["data"]["armRequests"] == expected, (
            f"armRequests {request['data']['armRequests']} but the server saw {len(seen)}")
        check_requests(seen, request_id, self.token)
        return caches, request["data"]


def check_event(message: OutboundMessage, request_id: str, status: str,
                rid: str | None, *, index: int = 0, count: int = 1, batch: bool | None = None,
                event_id: str | None = None) -> dict[str, Any]:
    """CloudEvents 1.0 structured JSON and the Service Bus properties docs/design.md promises
    for a per-cache event (`index` of `count` targets; `batch`, default count > 1: the
    request has its own RequestCompleted, as several targets or a selector do)."""
    batch = count > 1 if batch is None else batch
    event_id = event_id or (f"{request_id}:completed:{index}" if batch else
                            f"{request_id}:completed")
    assert message.content_type == "application/cloudevents+json"
    assert message.message_id == event_id
    assert message.subject == EVENT_TYPE
    assert message.correlation_id == request_id
    props = dict(message.application_properties)
    doc = json.loads(message.body)
    assert props["status"] == status, (props["status"], doc["data"]["error"])
    assert props["requestId"] == request_id
    assert props["type"] == EVENT_TYPE
    assert doc["specversion"] == "1.0"
    assert doc["type"] == EVENT_TYPE
    assert doc["id"] == event_id
    assert doc["datacontenttype"] == "application/json"
    data = doc["data"]
    fields = DATA_FIELDS | ({"batch"} if batch else set())
    assert set(data) == fields, set(data) ^ fields
    if batch:
        assert data["batch"] == {"index": index, "count": count}
    assert data["requestId"] == request_id and data["status"] == status
    assert data["resourceId"] == rid
    assert isinstance(data["linkedDatabaseIds"], list)
    if rid is not None:
        parts = rid.split("/")
        enterprise = parts[7] == "redisEnterprise"
        assert doc["source"] == rid
        assert doc["subject"] == (f"{parts[8]}/{parts[10]}" if enterprise else parts[8])
        assert data["kind"] == props["kind"] == ("redisEnterprise" if enterprise else "redis")
        assert (props["subscriptionId"], props["resourceGroup"], props["cacheName"]) == \
            (parts[2], parts[4], parts[8])
        if not enterprise:
            assert data["linkedDatabaseIds"] == []
    else:
        assert doc["source"] and "subject" not in doc
        assert data["kind"] is None and "kind" not in props
    completed = parse_time(data["completedAt"])
    assert parse_time(doc["time"]) == completed
    requested = parse_time(data["requestedAt"])
    # the times are written to the millisecond, the duration from the exact clock
    assert abs(data["durationSeconds"] - (completed - requested).total_seconds()) <= 0.002
    if data["acceptedAt"] is not None:
        assert requested <= parse_time(data["acceptedAt"]) <= completed
    if status == "Succeeded":
        assert data["error"] is None
    else:  # README: null only when Succeeded, else code and message always
        assert data["error"]["code"] and data["error"]["message"], data["error"]
    if data["operation"] is not None:
        assert set(data["operation"]) <= OPERATION_FIELDS
    return doc


def check_request_event(message: OutboundMessage, request_id: str, status: str, scope: str,
                        *, results: Mapping[str, str] | None = None,
                        event_id: str | None = None) -> dict[str, Any]:
    """The per-request `RedisFlush.RequestCompleted`: shape, properties, counts and results
    (`results`: resource id -> status, in any order; None for a request without targets)."""
    event_id = event_id or f"{request_id}:completed"
    assert message.content_type == "application/cloudevents+json"
    assert message.message_id == event_id and message.correlation_id == request_id
    assert message.subject == REQUEST_EVENT_TYPE
    props = dict(message.application_properties)
    doc = json.loads(message.body)
    data = doc["data"]
    assert (doc["specversion"], doc["type"], doc["id"]) == ("1.0", REQUEST_EVENT_TYPE,
                                                            event_id)
    assert doc["source"] == doc["subject"] == scope
    assert set(data) == REQUEST_DATA_FIELDS, set(data) ^ REQUEST_DATA_FIELDS
    assert data["requestId"] == request_id and data["status"] == status == props["status"]
    assert props["type"] == REQUEST_EVENT_TYPE and props["requestId"] == request_id
    assert "cacheName" not in props and "kind" not in props
    parts = scope.split("/")
    if len(parts) >= 3 and parts[1] == "subscriptions":
        assert props["subscriptionId"] == parts[2]
    if len(parts) >= 5:
        assert props["resourceGroup"] == parts[4]
    got = {r["resourceId"]: r["status"] for r in data["results"]}
    assert got == dict(results or {}), got
    counts = {s: list(got.values()).count(s) for s in STATUSES if s in got.values()}
    assert data["counts"] == counts
    if status == "Succeeded":
        assert data["error"] is None and set(got.values()) == {"Succeeded"}
    completed = parse_time(data["completedAt"])
    assert parse_time(doc["time"]) == completed
    assert abs(data["durationSeconds"] - (completed - parse_time(data["requestedAt"]))
               .total_seconds()) <= 0.002
    return doc


USER_AGENT = re.compile(r"(^|\s)redisflush/" + re.escape(__version__) + r"(\s|$)")


def check_requests(requests: Iterable[Recorded], request_id: str, token: str) -> None:
    """Every ARM request carries the bearer token, our User-Agent and a client request id."""
    for r in requests:
        assert r.header("Authorization") == f"Bearer {token}", r.header("Authorization")
        assert USER_AGENT.search(r.header("User-Agent") or ""), r.header("User-Agent")
        assert re.fullmatch(re.escape(request_id) + r":(\d+|list\.\d+)\.\d+",
                            r.client_request_id or ""), r.client_request_id


def scheduled_delays(envelopes: Iterable[Envelope]) -> list[float]:
    return [e.delay for e in envelopes]


def backoff(failures: int, seed: str) -> float:
    """The retry rule of docs/design.md, written out independently: 2, 4, 8 ... 60 s after
    `failures` transient errors, spread by +-25% from a hash of `seed` (the target's key and
    how many requests it had sent), so the expected gap of each retry is exact."""
    base = min(60.0, 2.0 ** min(max(1, failures), 16))
    spread = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:2], "big") / 65535.0
    return base * (0.75 + 0.5 * spread)


def no_secrets(text: str, secrets: Mapping[str, str]) -> list[str]:
    """The names of the secrets that occur in `text`."""
    return [name for name, value in secrets.items() if value and value in text]
