"""Wire shapes in: the flush request a pipeline sends, and the poll state the app sends itself.

Parsing never raises on user input: any bytes give a `FlushRequest` or a `Rejection` naming
the field and the rule, because a request that raised would be retried into the dead-letter
queue instead of telling its sender what was wrong.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ValidationError
from .target import CacheTarget, in_scopes, make_target, parse_resource_id

MAX_BODY_BYTES = 64 * 1024
MIN_TIMEOUT, MAX_TIMEOUT = 30, 86400
MAX_TEXT = 256
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)
REQUEST_FIELDS = ("resourceId", "subscriptionId", "resourceGroup", "cacheName", "requestId",
                  "reason", "requestedBy", "timeoutSeconds")
POLL_STATE_VERSION = 1


@dataclass(frozen=True)
class Delivery:
    """A received Service Bus message, reduced to what the app reads from it."""

    body: bytes
    message_id: str
    correlation_id: str | None = None
    reply_to: str | None = None
    reply_to_session_id: str | None = None
    enqueued_at: dt.datetime | None = None
    delivery_count: int = 1


@dataclass(frozen=True)
class Origin:
    """Who asked and where the answer goes: copied from the request into every later step."""

    request_id: str
    requested_at: dt.datetime
    correlation_id: str | None = None
    reply_to: str | None = None
    reply_to_session_id: str | None = None
    reason: str | None = None
    requested_by: str | None = None


@dataclass(frozen=True)
class FlushRequest:
    """A valid request: a cache that may be flushed, and how long to follow the operation."""

    origin: Origin
    target: CacheTarget
    timeout_seconds: int


@dataclass(frozen=True)
class Rejection:
    """An invalid request: `field` broke `rule`; `target` is set when it could be read."""

    origin: Origin
    field: str
    rule: str
    target: CacheTarget | None = None

    @property
    def message(self) -> str:
        return f"{self.field}: {self.rule}"


def parse_request(delivery: Delivery, *, default_timeout: int, allowed_scopes: tuple[str, ...],
                  now: dt.datetime) -> FlushRequest | Rejection:
    """Validate a request message against every rule of the request table."""
    origin = Origin(
        request_id=request_id_from_message_id(delivery.message_id),
        requested_at=delivery.enqueued_at or now, correlation_id=delivery.correlation_id,
        reply_to=delivery.reply_to or None, reply_to_session_id=delivery.reply_to_session_id)
    if len(delivery.body) > MAX_BODY_BYTES:
        return Rejection(origin, "body", f"must be at most {MAX_BODY_BYTES} bytes "
                                         f"(got {len(delivery.body)})")
    try:
        data = json.loads(delivery.body.decode("utf-8"), object_pairs_hook=_no_duplicate_keys,
                          parse_constant=_no_constant)
    except UnicodeDecodeError:
        return Rejection(origin, "body", "must be UTF-8 encoded JSON")
    except ValidationError as exc:
        return Rejection(origin, exc.field, exc.rule)
    except (ValueError, RecursionError):
        return Rejection(origin, "body", "must be a JSON object")
    if not isinstance(data, dict):
        return Rejection(origin, "body", "must be a JSON object")
    try:
        origin = _origin_fields(data, origin)
    except ValidationError as exc:
        return Rejection(origin, exc.field, exc.rule)
    target = None
    try:
        unknown = sorted(k for k in data if k not in REQUEST_FIELDS)
        if unknown:
            raise ValidationError(unknown[0], "is not a known field (known: "
                                  + ", ".join(REQUEST_FIELDS) + ")")
        target = _target(data)
        timeout = _timeout(data.get("timeoutSeconds"), default_timeout)
        if not in_scopes(target, allowed_scopes):
            raise ValidationError("resourceId", "is outside the scopes this app may flush "
                                  "(REDISFLUSH_ALLOWED_SCOPES)")
    except ValidationError as exc:
        return Rejection(origin, exc.field, exc.rule, target)
    return FlushRequest(origin, target, timeout)


def request_id_from_message_id(message_id: str) -> str:
    """The MessageId when it is a valid requestId, else a stable digest of it."""
    if _REQUEST_ID.fullmatch(message_id or ""):
        return message_id
    return "msg-" + hashlib.sha256((message_id or "").encode("utf-8", "replace")).hexdigest()[:32]


def _origin_fields(data: Mapping[str, Any], origin: Origin) -> Origin:
    request_id = data.get("requestId")
    if request_id is not None and not (isinstance(request_id, str)
                                       and _REQUEST_ID.fullmatch(request_id)):
        raise ValidationError("requestId", "must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    values = {name: _optional_text(data, name) for name in ("reason", "requestedBy")}
    return Origin(request_id or origin.request_id, origin.requested_at, origin.correlation_id,
                  origin.reply_to, origin.reply_to_session_id, values["reason"],
                  values["requestedBy"])


def _target(data: Mapping[str, Any]) -> CacheTarget:
    parts = ("subscriptionId", "resourceGroup", "cacheName")
    given = [p for p in parts if data.get(p) is not None]
    if data.get("resourceId") is not None:
        if given:
            raise ValidationError(given[0], "must not be given together with resourceId "
                                            "(use one form)")
        return parse_resource_id(data["resourceId"])
    if not given:
        raise ValidationError("resourceId", "is required (or subscriptionId, resourceGroup "
                                            "and cacheName)")
    missing = [p for p in parts if p not in given]
    if missing:
        raise ValidationError(missing[0], "is required with " + " and ".join(given))
    return make_target(data["subscriptionId"], data["resourceGroup"], data["cacheName"])


def _timeout(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise ValidationError("timeoutSeconds", "must be a whole number of seconds")
    if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise ValidationError("timeoutSeconds", f"must be between {MIN_TIMEOUT} and "
                                                f"{MAX_TIMEOUT}")
    return int(value)


def _optional_text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(name, "must be a string")
    if len(value) > MAX_TEXT:
        raise ValidationError(name, f"must be at most {MAX_TEXT} characters")
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValidationError(key, "must appear only once")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# --- poll state: the whole continuation, carried in the poll message -----------------------

@dataclass(frozen=True)
class PollState:
    """Everything needed to take the next step; no other storage exists.

    `phase` is "flush" while the POST has not been accepted (a re-queued POST), "poll" after.
    `attempt` numbers the steps (it makes each MessageId); `polls` counts running answers
    (it picks the next gap); `failures` counts consecutive transient errors (backoff);
    `bad_polls` consecutive unusable status answers (4xx, bad JSON, no status); `paced`
    means this step already holds a slot in the pacer and goes straight to ARM.
    """

    origin: Origin
    target: CacheTarget
    deadline: dt.datetime
    phase: str = "flush"
    attempt: int = 0
    poll_url: str | None = None
    poll_kind: str | None = None
    accepted_at: dt.datetime | None = None
    last_status: str | None = None
    last_operation: Mapping[str, Any] | None = None
    polls: int = 0
    failures: int = 0
    bad_polls: int = 0
    arm_requests: int = 0
    paced: bool = False

    @property
    def message_id(self) -> str:
        # One id per step whatever the phase (DESIGN: `{requestId}:poll:{attempt}`): a
        # redelivered step whose POST now gets 409 busy instead of 202 must produce the
        # same MessageId as before, or the broker cannot drop it and a second POST chain
        # (a second flush) starts.
        return f"{self.origin.request_id}:poll:{self.attempt}"

    def to_json(self) -> bytes:
        o = self.origin
        doc = {"v": POLL_STATE_VERSION, "requestId": o.request_id, "phase": self.phase,
               "target": self.target.to_json(), "pollUrl": self.poll_url,
               "pollKind": self.poll_kind, "attempt": self.attempt,
               "requestedAt": iso(o.requested_at), "acceptedAt": iso(self.accepted_at),
               "deadline": iso(self.deadline), "lastStatus": self.last_status,
               "lastOperation": self.last_operation, "polls": self.polls,
               "failures": self.failures, "badPolls": self.bad_polls, "paced": self.paced,
               "armRequests": self.arm_requests, "correlationId": o.correlation_id,
               "replyTo": o.reply_to, "replyToSessionId": o.reply_to_session_id,
               "reason": o.reason, "requestedBy": o.requested_by}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> "PollState":
        """Parse our own poll message; raises ValueError for anything we did not write."""
        try:
            d = json.loads(body)
            if not isinstance(d, dict) or d.get("v") != POLL_STATE_VERSION:
                raise ValueError(f"unsupported poll state version {d.get('v')!r}"
                                 if isinstance(d, dict) else "poll state is not an object")
            t = d["target"]
            origin = Origin(d["requestId"], parse_iso(d["requestedAt"]), d.get("correlationId"),
                            d.get("replyTo"), d.get("replyToSessionId"), d.get("reason"),
                            d.get("requestedBy"))
            if d["phase"] not in ("flush", "poll"):
                raise ValueError(f"unknown phase {d['phase']!r}")
            if d["phase"] == "poll" and not (isinstance(d.get("pollUrl"), str) and d.get(
                    "pollKind") in ("azure-asyncoperation", "location")):
                raise ValueError("a poll step needs pollUrl and a known pollKind")
            return cls(origin, make_target(t["subscriptionId"], t["resourceGroup"],
                                           t["cacheName"]),
                       parse_iso(d["deadline"]), d["phase"], int(d["attempt"]), d.get("pollUrl"),
                       d.get("pollKind"), parse_iso_or_none(d.get("acceptedAt")),
                       d.get("lastStatus"), d.get("lastOperation"), int(d.get("polls", 0)),
                       int(d.get("failures", 0)), int(d.get("badPolls", 0)),
                       int(d.get("armRequests", 0)), bool(d.get("paced", False)))
        except (KeyError, TypeError, AttributeError, ValidationError, json.JSONDecodeError,
                UnicodeDecodeError) as exc:
            raise ValueError(f"invalid poll state: {exc}") from None


def iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def parse_iso_or_none(text: str | None) -> dt.datetime | None:
    return parse_iso(text) if text else None
