"""The flush request a pipeline sends: every rule of docs/design.md "Flush request" (the
body's JSON read in request_body.py, the caches it names in request_targets.py, its id in
request_id.py).

Parsing never raises on user input: any bytes give a `FlushRequest` or a `Rejection` naming
the field and the rule, because a request that raised would be retried into the dead-letter
queue instead of telling its sender what was wrong.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError
from .frozen import replace
from .request_body import document, first_problem
from .request_id import is_request_id, request_id_from_message_id
from .request_targets import check_selector_scope, parse_linked, parse_targets
from .selector import Selector
from .targets import Target, in_scopes, json_type, parse_resource_id

MIN_TIMEOUT, MAX_TIMEOUT = 30, 86400
MAX_TEXT = 256
_QUEUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,259}", re.ASCII)
REQUEST_FIELDS = ("resourceId", "resourceIds", "selector", "subscriptionId", "resourceGroup",
                  "cacheName", "clusterName", "databaseName", "linkedDatabaseIds", "requestId",
                  "reason", "requestedBy", "timeoutSeconds")


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
    message_id: str | None = None

    @property
    def session_id(self) -> str:
        return self.reply_to_session_id or self.request_id


@dataclass(frozen=True)
class FlushRequest:
    """A valid request: explicit targets (sorted) or a selector, and its absolute deadline."""

    origin: Origin
    targets: tuple[Target, ...]
    selector: Selector | None
    linked_ids: tuple[str, ...] | None
    timeout_seconds: int
    deadline: dt.datetime

    @property
    def fingerprint(self) -> str:
        """What the request names, canonically: the same requestId must always name this."""
        doc: dict[str, Any] = ({"selector": self.selector.identity()} if self.selector else
                               {"targets": [t.key for t in self.targets]})
        if self.linked_ids is not None:
            doc["linked"] = list(self.linked_ids)
        return _canonical(doc)


def _canonical(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def earlier_fingerprints(selector: Selector | None) -> tuple[str, ...]:
    """The fingerprint versions before 2026-12 stored for a selector (its resource group and
    tag names as given), so a repeat across the upgrade is still the same request."""
    if selector is None:
        return ()
    before = _canonical({"selector": selector.to_json()})
    return () if before == _canonical({"selector": selector.identity()}) else (before,)


@dataclass(frozen=True)
class Rejection:
    """An invalid request: `field` broke `rule`; `targets` are set when they could be read.
    `batch`: the body asked for a selector or several caches, so its one event is a
    RequestCompleted; `scope`: the selector's, when it could be read."""

    origin: Origin
    field: str
    rule: str
    targets: tuple[Target, ...] = ()
    code: str = "InvalidRequest"
    batch: bool = False
    scope: str | None = None

    @property
    def message(self) -> str:
        return f"{self.field}: {self.rule}"


def parse_request(delivery: Delivery, *, default_timeout: int, allowed_scopes: tuple[str, ...],
                  max_targets: int, reserved_queues: tuple[str, ...] = (),
                  now: dt.datetime) -> FlushRequest | Rejection:
    """Validate a request message against every rule of the request table."""
    origin = Origin(request_id_from_message_id(delivery.message_id),
                    requested_at=delivery.enqueued_at or now,
                    correlation_id=delivery.correlation_id, reply_to=delivery.reply_to or None,
                    reply_to_session_id=delivery.reply_to_session_id,
                    message_id=delivery.message_id or None)
    data = document(delivery.body)
    if isinstance(data, ValidationError):
        return Rejection(_safe_origin(origin, reserved_queues), data.field, data.rule)
    problem = first_problem(data)
    if problem is not None:
        # parsed, so the body's requestId (unless that is the problem) and its form still
        # name the rejection and choose its event, as for any later field
        if problem.field != "requestId" and is_request_id(data.get("requestId")):
            origin = replace(origin, request_id=data["requestId"])
        return Rejection(_safe_origin(origin, reserved_queues), problem.field, problem.rule,
                         batch=_asks_batch(data))
    try:
        origin = _request_id(data, origin)
        origin = _origin_fields(data, origin)
    except ValidationError as exc:
        return Rejection(_safe_origin(origin, reserved_queues), exc.field, exc.rule,
                         batch=_asks_batch(data))
    targets: tuple[Target, ...] = ()
    selector: Selector | None = None
    try:
        _check_reply_to(origin.reply_to, reserved_queues)
        unknown = sorted(k for k in data if k not in REQUEST_FIELDS)
        if unknown:
            raise ValidationError(unknown[0][:64] or '""', "is not a known field (known: "
                                  + ", ".join(REQUEST_FIELDS) + ")")
        targets, selector = parse_targets(data, max_targets)
        if selector is not None:
            check_selector_scope(selector, allowed_scopes)
        linked = parse_linked(data, targets, allowed_scopes)
        timeout = _timeout(data.get("timeoutSeconds"), default_timeout)
        given = [str(i).lower() for i in data.get("resourceIds") or []] \
            if isinstance(data.get("resourceIds"), list) else []
        for target in targets:
            if not in_scopes(target, allowed_scopes):
                where = next((i for i, text in enumerate(given)
                              if isinstance(text, str) and _same_id(text, target)), None)
                named = "resourceId" if data.get("resourceId") is not None else \
                    "resourceGroup"  # the by-parts forms: the part the scopes are about
                raise ValidationError(f"resourceIds[{where}]" if where is not None else named,
                                      f"{target.resource_id} is outside the scopes this app "
                                      "may flush (REDISFLUSH_ALLOWED_SCOPES)")
    except ValidationError as exc:
        if exc.field == "ReplyTo":
            origin = _safe_origin(origin, reserved_queues)
        return Rejection(origin, exc.field, exc.rule, targets, batch=_asks_batch(data),
                         scope=selector.scope if selector is not None else None)
    deadline = origin.requested_at + dt.timedelta(seconds=timeout)
    return FlushRequest(origin, targets, selector, linked, timeout, deadline)


def _asks_batch(data: Mapping[str, Any]) -> bool:
    """Whether the body asked for a selector or for more than one cache (docs/design.md,
    "Events": such a request's events end with a RequestCompleted, a rejected one's too)."""
    ids = data.get("resourceIds")
    return data.get("selector") is not None or (isinstance(ids, list) and len(ids) > 1)


def _same_id(text: str, target: Target) -> bool:
    try:
        return parse_resource_id(text).key == target.key
    except ValidationError:
        return False


def _safe_origin(origin: Origin, reserved: tuple[str, ...]) -> Origin:
    """An origin whose ReplyTo may be used for the Rejected event (else it is dropped)."""
    try:
        _check_reply_to(origin.reply_to, reserved)
        return origin
    except ValidationError:
        return Origin(origin.request_id, origin.requested_at, origin.correlation_id, None, None,
                      origin.reason, origin.requested_by, origin.message_id)


def _check_reply_to(reply_to: str | None, reserved: tuple[str, ...]) -> None:
    """A plain queue of someone's, never a subqueue, a topic path or one of the app's own."""
    if reply_to is None:
        return
    if not _QUEUE.fullmatch(reply_to):
        raise ValidationError("ReplyTo", "must be a plain queue name (letters, digits, '.', "
                                         "'-', '_'; no '/' or '$' subqueue)")
    if reply_to.lower() in {q.lower() for q in reserved}:
        # the events topic too: a queue sender would put the reply copies on it as events
        raise ValidationError("ReplyTo", "must not be the app's own request queue, poll "
                                         "queue or events topic")


def _request_id(data: Mapping[str, Any], origin: Origin) -> Origin:
    """The body's requestId first, so a rejection for any later field carries it (the id a
    waiter and the subscribers filter on; the rejected event's own id stays apart from the
    corrected request's, core.events.rejected_event_id)."""
    request_id = data.get("requestId")
    if request_id is not None and not is_request_id(request_id):
        raise ValidationError("requestId", "must be 1-80 characters of A-Z a-z 0-9 . _ : -")
    return replace(origin, request_id=request_id) if request_id else origin


def _origin_fields(data: Mapping[str, Any], origin: Origin) -> Origin:
    values = {name: _optional_text(data, name) for name in ("reason", "requestedBy")}
    return replace(origin, reason=values["reason"], requested_by=values["requestedBy"])


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
        raise ValidationError(name, f"must be a string, not {json_type(value)}")
    if len(value) > MAX_TEXT:
        raise ValidationError(name, f"must be at most {MAX_TEXT} characters")
    return value
