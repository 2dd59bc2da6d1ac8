"""Wire shapes out (docs/design.md, "Completion events"): the per-cache
`RedisFlush.FlushCompleted`, the per-request `RedisFlush.RequestCompleted`, and the
`RedisFlush.FlushProgress` notes for a waiting pipeline. CloudEvents 1.0, structured JSON.

Ids are deterministic (`{requestId}:completed`, `{requestId}:completed:{i}`) and are the
Service Bus MessageIds too, so a step that runs twice publishes duplicates that the topic's
duplicate detection drops.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .fit import MAX_MESSAGE_BYTES, fit, size
from .outbound import OutboundMessage
from .request import Origin
from .targets import Target

FLUSH_COMPLETED = "RedisFlush.FlushCompleted"
REQUEST_COMPLETED = "RedisFlush.RequestCompleted"
PROGRESS = "RedisFlush.FlushProgress"
EVENT_TYPE = FLUSH_COMPLETED  # the one-target event, as before
CONTENT_TYPE = "application/cloudevents+json"
STATUSES = ("Succeeded", "Failed", "Canceled", "TimedOut", "Rejected")
REJECTED_SOURCE = "/redisflush/requests"
# Room left for the envelope (CloudEvents attributes, properties) inside a message.
_DATA_BYTES = MAX_MESSAGE_BYTES - 8 * 1024


@dataclass(frozen=True)
class Outcome:
    """How one target ended: what its event and the request's `results` say."""

    status: str
    completed_at: dt.datetime
    error: Mapping[str, Any] | None = None
    operation: Mapping[str, Any] | None = None
    accepted_at: dt.datetime | None = None
    arm_requests: int = 0
    linked: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Times to the microsecond: a repeat re-publishes the same durationSeconds."""
        return {"status": self.status, "completedAt": exact(self.completed_at),
                "error": self.error, "operation": self.operation,
                "acceptedAt": exact(self.accepted_at), "armRequests": self.arm_requests,
                "linked": list(self.linked)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Outcome:
        """An outcome the app wrote (a poll message or ledger row); ValueError for any field
        of another type, so a forged one is unreadable rather than failing its event."""
        if doc.get("status") not in STATUSES:
            raise ValueError(f"unknown outcome status {doc.get('status')!r}")
        error, operation = doc.get("error"), doc.get("operation")
        requests, linked = doc.get("armRequests") or 0, doc.get("linked") or []
        if not all(v is None or isinstance(v, dict) for v in (error, operation)):
            raise ValueError("an outcome's error and operation must be objects or null")
        if isinstance(requests, bool) or not isinstance(requests, int) or requests < 0:
            raise ValueError("an outcome's armRequests must be a whole number >= 0")
        if not isinstance(linked, list) or not all(isinstance(x, str) for x in linked):
            raise ValueError("an outcome's linked must be a list of strings")
        return cls(str(doc["status"]), parse_iso(str(doc["completedAt"])), error, operation,
                   parse_iso_or_none(doc.get("acceptedAt")), requests, tuple(linked))


def iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def exact(moment: dt.datetime | None) -> str | None:
    """ISO 8601 to the microsecond, for state and ledger rows (events show milliseconds)."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


# Every moment the app writes (poll messages, ledger rows) lies well inside these; one
# outside (a forged message) would overflow the first sum or time zone change made with it.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


def parse_iso(text: str) -> dt.datetime:
    """A moment the app wrote; ValueError for text that is not one, or one out of range."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    try:
        in_range = EARLIEST <= moment.astimezone(dt.UTC) <= LATEST
    except OverflowError:
        in_range = False
    if not in_range:
        raise ValueError(f"{text[:40]!r} is not a moment between 1970 and 9000")
    return moment


def parse_iso_or_none(text: Any) -> dt.datetime | None:
    return parse_iso(text) if isinstance(text, str) and text else None


def _seconds(start: dt.datetime, end: dt.datetime) -> float:
    return round(max(0.0, (end - start).total_seconds()), 3)


def rejected_event_id(origin: Origin) -> str:
    """The id of the event of a request rejected before anything was recorded:
    `{requestId}:rejected:{12 hex of its MessageId's SHA-256}:completed`. Not
    `{requestId}:completed`, which the corrected request sent again under the same requestId
    needs: the topic's and the reply queue's duplicate detection would drop its event for
    ten minutes. A redelivery of the same message keeps the id, so it is still dropped."""
    digest = hashlib.sha256((origin.message_id or "").encode("utf-8", "replace")).hexdigest()
    return f"{origin.request_id}:rejected:{digest[:12]}:completed"


def cache_event_id(origin: Origin, index: int, batch: bool) -> str:
    """`{requestId}:completed` alone; `{requestId}:completed:{i}` inside a batch (several
    targets or a selector, whose RequestCompleted takes `{requestId}:completed`). The index
    comes last so no other request's id can spell it: with `{requestId}:{i}:completed`, the
    one-cache request `x:0` and cache 0 of request `x` shared an id, and the topic's duplicate
    detection dropped one of the two events."""
    return f"{origin.request_id}:completed:{index}" if batch else \
        f"{origin.request_id}:completed"


def flush_completed(origin: Origin, target: Target | None, outcome: Outcome, *,
                    index: int = 0, count: int = 1, batch: bool | None = None,
                    event_id: str | None = None) -> dict[str, Any]:
    """One cache's event; `target` is None only for a request too broken to name one.
    `batch` (default: count > 1) marks a target of a multi-target or selector request."""
    if outcome.status not in STATUSES:
        raise ValueError(f"unknown status {outcome.status!r}")
    event: dict[str, Any] = {
        "specversion": "1.0", "type": FLUSH_COMPLETED,
        "source": target.resource_id if target else REJECTED_SOURCE,
        "id": event_id or cache_event_id(origin, index, count > 1 if batch is None else batch),
        "time": iso(outcome.completed_at), "datacontenttype": "application/json"}
    if target:
        event["subject"] = target.display_name
    data: dict[str, Any] = {
        "requestId": origin.request_id, "status": outcome.status,
        "resourceId": target.resource_id if target else None,
        "kind": target.kind if target else None,
        "linkedDatabaseIds": list(outcome.linked),
        "operation": dict(outcome.operation) if outcome.operation else None,
        "error": dict(outcome.error) if outcome.error else None,
        "requestedAt": iso(origin.requested_at), "acceptedAt": iso(outcome.accepted_at),
        "completedAt": iso(outcome.completed_at),
        "durationSeconds": _seconds(origin.requested_at, outcome.completed_at),
        "armRequests": outcome.arm_requests, "reason": origin.reason,
        "requestedBy": origin.requested_by}
    if (count > 1 if batch is None else batch):
        data["batch"] = {"index": index, "count": count}
    event["data"] = fit(data, _DATA_BYTES)
    return event


def aggregate_status(statuses: Sequence[str]) -> str:
    """Succeeded when every target did; else the first of Failed, TimedOut, Canceled seen.
    A target refused on its own (a linked database outside the allowed scopes) makes the
    request Failed: Rejected is for a request refused as a whole."""
    if statuses and all(s == "Succeeded" for s in statuses):
        return "Succeeded"
    for status in ("Failed", "TimedOut", "Canceled"):
        if status in statuses:
            return status
    return "Failed"


def request_completed(origin: Origin, scope: str, results: Sequence[tuple[Target, Outcome]], *,
                      completed_at: dt.datetime, arm_requests: int,
                      status: str | None = None, error: Mapping[str, Any] | None = None,
                      event_id: str | None = None) -> dict[str, Any]:
    """The request's event: status by `aggregate_status` (or given, e.g. Rejected)."""
    statuses = [o.status for _, o in results]
    final = status or aggregate_status(statuses)
    counts = {s: statuses.count(s) for s in STATUSES if s in statuses}
    data: dict[str, Any] = {
        "requestId": origin.request_id, "status": final, "counts": counts,
        "results": [{"resourceId": t.resource_id, "status": o.status,
                     "error": _short_error(o.error),
                     "durationSeconds": _seconds(origin.requested_at, o.completed_at)}
                    for t, o in results],
        "error": dict(error) if error else None,
        "requestedAt": iso(origin.requested_at), "completedAt": iso(completed_at),
        "durationSeconds": _seconds(origin.requested_at, completed_at),
        "armRequests": arm_requests, "reason": origin.reason,
        "requestedBy": origin.requested_by}
    _cut_result_errors(data)
    event = {"specversion": "1.0", "type": REQUEST_COMPLETED, "source": scope,
             "subject": scope, "id": event_id or f"{origin.request_id}:completed",
             "time": iso(completed_at), "datacontenttype": "application/json",
             "data": fit(data, _DATA_BYTES)}
    if scope == REJECTED_SOURCE:  # a request too broken to name a scope has no subject
        del event["subject"]
    return event


def _cut_result_errors(data: dict[str, Any]) -> None:
    """`results` keeps one entry per cache: when their errors together pass the event's room
    (50 caches with 4 KiB errors), each error is cut to a shrinking share instead (a cut
    string ends in `…`). `fit` alone cut the largest node, the list itself, so half the
    caches went missing from the request's event (README, "The completion events")."""
    budget = 2048
    while size(data) > _DATA_BYTES and budget >= 64:
        data["results"] = [{**r, "error": fit(r["error"], budget)} if r.get("error") else r
                           for r in data["results"]]
        budget //= 2


def _short_error(error: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not error:
        return None
    return {k: error[k] for k in ("code", "message") if k in error}


def properties(event: Mapping[str, Any], origin: Origin, target: Target | None
               ) -> dict[str, str]:
    """Application properties for SQL filters on topic subscriptions."""
    data = event["data"]
    props = {"type": str(event["type"]), "status": str(data["status"]),
             "requestId": origin.request_id}
    if origin.correlation_id:
        props["correlationId"] = origin.correlation_id
    if target:
        props.update(cacheName=target.name, kind=target.kind,
                     resourceGroup=target.resource_group,
                     subscriptionId=target.subscription_id)
    else:
        scope = str(event.get("source") or "").split("/")
        if len(scope) >= 3 and scope[1] == "subscriptions":
            props["subscriptionId"] = scope[2]
        if len(scope) >= 5 and scope[3].lower() == "resourcegroups":
            props["resourceGroup"] = scope[4]
    return props


def event_message(event: Mapping[str, Any], origin: Origin, target: Target | None, *,
                  session: bool = False, tag: str | None = None) -> OutboundMessage:
    """The Service Bus message for an event: the topic's, or (session) the reply's copy.
    `tag` gives a repeat's reply its own MessageId, so the reply queue's duplicate detection
    does not drop the answer a second sender waits for."""
    return OutboundMessage(
        _wire(event), message_id=str(event["id"]) + (f":{tag}" if tag else ""),
        content_type=CONTENT_TYPE, correlation_id=origin.request_id,
        subject=str(event["type"]), application_properties=properties(event, origin, target),
        session_id=origin.session_id if session else None)


def _wire(doc: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the bytes `fit` measured."""
    # backslashreplace: a lone surrogate that got past validation must not stop the event
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "backslashreplace")


def progress_note(origin: Origin, *, status: str, percent: Any, targets: int,
                  counts: Mapping[str, int], finished: Sequence[Mapping[str, Any]], step: int,
                  now: dt.datetime, source: str) -> OutboundMessage:
    """A note for the waiting CLI's session: overall status, and the caches that just ended."""
    body = {"specversion": "1.0", "type": PROGRESS, "id": f"{origin.request_id}:progress:{step}",
            "source": source, "time": iso(now), "datacontenttype": "application/json",
            "data": fit({"requestId": origin.request_id, "status": status,
                         "percentComplete": percent, "targets": targets,
                         "counts": dict(counts), "finished": list(finished)}, _DATA_BYTES)}
    return OutboundMessage(_wire(body), str(body["id"]),
                           content_type=CONTENT_TYPE, correlation_id=origin.request_id,
                           subject=PROGRESS, session_id=origin.session_id)
