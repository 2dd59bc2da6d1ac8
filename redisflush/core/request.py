"""The flush request a pipeline sends: every rule of docs/design.md "Flush request".

Parsing never raises on user input: any bytes give a `FlushRequest` or a `Rejection` naming
the field and the rule, because a request that raised would be retried into the dead-letter
queue instead of telling its sender what was wrong.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError
from .frozen import replace
from .selector import Selector, parse_selector
from .targets import (
    ENTERPRISE,
    Target,
    in_scopes,
    json_type,
    make_enterprise,
    make_target,
    parse_database_id,
    parse_resource_id,
    scope_overlaps,
)

MAX_BODY_BYTES = 64 * 1024
MIN_TIMEOUT, MAX_TIMEOUT = 30, 86400
MAX_TEXT = 256
MAX_LINKED = 50
# 80: the longest id the app derives from it (a repeat's reply copy of a RequestIdReused
# event, `{requestId}:reused:{12 hex}:completed:{12 hex}`, 43 more) stays within Service
# Bus's 128-character MessageId, with room for long step numbers.
MAX_REQUEST_ID = 80
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID}}}", re.ASCII)
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
    data = _document(delivery.body)
    if isinstance(data, ValidationError):
        return Rejection(_safe_origin(origin, reserved_queues), data.field, data.rule)
    problem = _first_problem(data)
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
        targets, selector = _targets(data, max_targets)
        if selector is not None:
            _check_selector_scope(selector, allowed_scopes)
        linked = _linked(data, targets, allowed_scopes)
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


def stand_in_message_id(sequence_number: object, enqueued_at: dt.datetime | None) -> str:
    """An id for a message sent without a MessageId (the .NET SDK's ServiceBusMessage sets
    none unless told to): its SequenceNumber and enqueue time, which the broker assigns once
    and every redelivery repeats, so such requests neither collapse into one requestId (each
    but the first answered as a repeat, unflushed) nor lose exactly-once across redeliveries
    (README, "The flush request"). "" when the worker gave no sequence number either."""
    if isinstance(sequence_number, bool) or not isinstance(sequence_number, int):
        return ""
    moment = "" if enqueued_at is None else \
        f"-{enqueued_at.astimezone(dt.UTC):%Y%m%dT%H%M%S%f}Z"
    return f"sb-seq-{sequence_number}{moment}"


def request_id_from_message_id(message_id: str) -> str:
    """The MessageId when it is a valid requestId, else a stable digest of it."""
    if _REQUEST_ID.fullmatch(message_id or ""):
        return message_id
    return "msg-" + hashlib.sha256((message_id or "").encode("utf-8", "replace")).hexdigest()[:32]


def is_request_id(value: object) -> bool:
    return isinstance(value, str) and _REQUEST_ID.fullmatch(value) is not None


# -- the body ---------------------------------------------------------------------------------

class _Duplicated(dict):  # type: ignore[type-arg]
    """An object in which `key` appeared twice (found, with its path, after parsing)."""

    key: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result and not isinstance(result, _Duplicated):
            result = _Duplicated(result)
            result.key = key
        result[key] = value
    return result


MAX_DEPTH = 32  # a request is a flat object; Python 3.12+ parses far deeper nesting


def _first_problem(data: Any) -> ValidationError | None:
    """The first duplicated key (named by its path, e.g. `reason.x`) or nesting past
    MAX_DEPTH, found without recursion so no depth can raise RecursionError."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return ValidationError("body", f"must not nest more than {MAX_DEPTH} levels "
                                           f"(at {path[:60]}...)")
        if isinstance(value, _Unreadable):
            return ValidationError(_utf8_safe(path or "body")[:128], value.rule)
        if isinstance(value, _Duplicated):
            where = f"{path}.{value.key}" if path else value.key
            return ValidationError(_utf8_safe(where)[:128], "must appear only once")
        if isinstance(value, str) and not _encodes(value):
            return ValidationError(_utf8_safe(path or "body")[:128], _SURROGATE_RULE)
        if isinstance(value, dict):
            bad_key = next((k for k in value if not _encodes(str(k))), None)
            if bad_key is not None:
                where = f"{path}.{bad_key}" if path else str(bad_key)
                return ValidationError(_utf8_safe(where)[:128], _SURROGATE_RULE)
            children = [(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(value)]
        else:
            continue
        stack.extend((v, p, depth + 1) for v, p in reversed(children))
    return None


# JSON may escape half of a UTF-16 pair (\ud800-\udfff) on its own; Python keeps it as a
# lone surrogate that no UTF-8 encoder takes, so every event and poll message built from the
# text would fail to send after the POST went out (docs/design.md, "Flush request").
_SURROGATE_RULE = "must not contain an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)"


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_safe(text: str) -> str:
    """`text` with any lone surrogate written as its escape, so a field path can be named."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class _Unreadable:
    """A number the request cannot hold, left where it was so its path names it: NaN or
    Infinity (Python's json reads them, JSON has no such literal) or an integer past Python's
    digit limit (int() refuses it). README, "The flush request": the rejection names the
    field, not just the body."""

    def __init__(self, rule: str) -> None:
        self.rule = rule


def _constant(name: str) -> _Unreadable:
    return _Unreadable(f"must not be {name}: JSON has no NaN or Infinity")


def _integer(text: str) -> int | _Unreadable:
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        return _Unreadable(f"must not be a number of more than {sys.get_int_max_str_digits()} "
                           "digits (too many digits)")


def _document(body: bytes) -> dict[str, Any] | ValidationError:
    if len(body) > MAX_BODY_BYTES:
        return ValidationError("body", f"must be at most {MAX_BODY_BYTES} bytes "
                                       f"(got {len(body)})")
    if body.startswith(b"\xef\xbb\xbf"):
        return ValidationError("body", "must be JSON without a byte order mark (BOM)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return ValidationError("body", "must be UTF-8 encoded JSON")
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant,
                          parse_int=_integer)
    except RecursionError:
        return ValidationError("body", "must be JSON nested at most a few hundred levels")
    except ValueError:
        return ValidationError("body", "must be valid JSON (a JSON object)")
    if isinstance(data, _Unreadable):
        return ValidationError("body", f"must be a JSON object, not a number ({data.rule})")
    if not isinstance(data, dict):
        return ValidationError("body", f"must be a JSON object, not {json_type(data)}")
    return data


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


_FORMS = ("resourceId", "resourceIds", "selector", "cacheName", "clusterName")


def _targets(data: Mapping[str, Any], max_targets: int
             ) -> tuple[tuple[Target, ...], Selector | None]:
    forms = [f for f in _FORMS if data.get(f) is not None]
    parts = [p for p in ("subscriptionId", "resourceGroup", "databaseName")
             if data.get(p) is not None]
    if len(forms) > 1:
        raise ValidationError(forms[1], f"must not be given together with {forms[0]} "
                                        "(use one form)")
    if not forms:
        if parts:
            raise ValidationError("cacheName", "is required with " + " and ".join(parts)
                                  + " (or clusterName for Managed Redis)")
        raise ValidationError("resourceId", "is required (or resourceIds, selector, or "
                                            "subscriptionId + resourceGroup + cacheName / "
                                            "clusterName)")
    form = forms[0]
    if form in ("resourceId", "resourceIds", "selector") and parts:
        raise ValidationError(parts[0], f"must not be given together with {form} "
                                        "(use one form)")
    if form == "resourceId":
        return (parse_resource_id(data["resourceId"]),), None
    if form == "selector":
        return (), parse_selector(data["selector"])
    if form == "resourceIds":
        return _resource_ids(data["resourceIds"], max_targets), None
    for needed in ("subscriptionId", "resourceGroup"):
        if needed not in parts:
            raise ValidationError(needed, f"is required with {form}")
    if form == "cacheName":
        if "databaseName" in parts:
            raise ValidationError("databaseName", "goes with clusterName, not cacheName")
        return (make_target(data["subscriptionId"], data["resourceGroup"],
                            data["cacheName"]),), None
    if "databaseName" in data and data["databaseName"] is None:
        raise ValidationError("databaseName", "must not be null (leave it out for the "
                                              "database named default)")
    return (make_enterprise(data["subscriptionId"], data["resourceGroup"], data["clusterName"],
                            data.get("databaseName")),), None


def _check_selector_scope(selector: Selector, scopes: tuple[str, ...]) -> None:
    """A selector none of whose caches could be flushed is refused before it is listed:
    the app's identity reads no scope REDISFLUSH_ALLOWED_SCOPES keeps it out of, and no
    rejection names a cache found there (docs/design.md, "Security rules")."""
    if scope_overlaps(selector.scope, scopes):
        return
    field = "selector.subscriptionId"
    if selector.resource_group and scope_overlaps(f"/subscriptions/{selector.subscription_id}",
                                                  scopes):
        field = "selector.resourceGroup"  # its subscription holds allowed scopes: not that group
    raise ValidationError(field, f"{selector.scope} lies outside the scopes this app may flush "
                                 "(REDISFLUSH_ALLOWED_SCOPES): no cache it matches could be "
                                 "flushed, so it is not listed")


def _resource_ids(value: Any, max_targets: int) -> tuple[Target, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= max_targets:
        raise ValidationError("resourceIds", f"must be a list of 1 to {max_targets} resource "
                              f"ids (REDISFLUSH_MAX_TARGETS)"
                              + (f", got {len(value)}" if isinstance(value, list) else ""))
    targets: dict[str, Target] = {}
    for index, item in enumerate(value):
        target = parse_resource_id(item, f"resourceIds[{index}]")
        if target.key in targets:
            raise ValidationError(f"resourceIds[{index}]", "repeats an earlier id (ids compare "
                                                           "without case)")
        targets[target.key] = target
    return tuple(sorted(targets.values(), key=lambda t: t.key))


def _linked(data: Mapping[str, Any], targets: tuple[Target, ...],
            scopes: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    value = data.get("linkedDatabaseIds")
    if value is None:
        if "linkedDatabaseIds" in data and len(targets) == 1 and \
                targets[0].kind == ENTERPRISE:
            # left out it means the whole group: a template's null must not pass for that
            raise ValidationError("linkedDatabaseIds", "must not be null (leave it out to "
                                                       "flush the whole geo-replication "
                                                       "group, [] for the database alone)")
        return None
    if len(targets) != 1 or targets[0].kind != ENTERPRISE:
        raise ValidationError("linkedDatabaseIds", "goes only with one Managed Redis database "
                                                   "(resourceId or clusterName)")
    if not isinstance(value, list) or len(value) > MAX_LINKED:
        raise ValidationError("linkedDatabaseIds", f"must be a list of at most {MAX_LINKED} "
                                                   "database ids ([] flushes the database alone)")
    ids: dict[str, str] = {}  # key -> the id as given
    for index, item in enumerate(value):
        field = f"linkedDatabaseIds[{index}]"
        text = parse_database_id(item, field)
        linked = parse_resource_id(text)
        if linked.key == targets[0].key:
            raise ValidationError(field, "is the database being flushed: list only the other "
                                         "databases of its geo-replication group")
        if linked.key in ids:
            raise ValidationError(field, "repeats an earlier id (ids compare without case)")
        if not in_scopes(linked, scopes):
            raise ValidationError(field, "is outside the scopes this app may flush "
                                         "(REDISFLUSH_ALLOWED_SCOPES); a linked database is "
                                         "flushed too")
        ids[linked.key] = text
    return tuple(ids.values())


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
