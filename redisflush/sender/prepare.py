"""A request ready to send: validated by the app's own parser, so a bad one never leaves the
machine, and shaped as docs/design.md ("Flush request") says: MessageId and CorrelationId the
requestId, application properties requestId (and cacheName for one target), ReplyTo the
reply queue with a session of this send's own (its MessageId) when the sender waits, so an
event left in the queue by an earlier send of the same requestId is never taken for this one's.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.outbound import OutboundMessage
from .report import FLUSH_COMPLETED, REQUEST_COMPLETED

DEFAULT_MAX_TARGETS = 50


class QueueSettings(Protocol):
    """What `prepare` reads: the sender's settings or the app's own (the demo's)."""

    @property
    def request_queue(self) -> str: ...

    @property
    def poll_queue(self) -> str: ...

    @property
    def reply_queue(self) -> str: ...

    @property
    def events_topic(self) -> str: ...

    @property
    def timeout_seconds(self) -> int: ...


@dataclass(frozen=True)
class Prepared:
    """The body (as users would write it), the bus message, and what ends the request."""

    request_id: str
    body: dict[str, Any]
    message: OutboundMessage
    targets: int                 # 0 for a selector: the app resolves it
    selector: bool = False

    @property
    def final_type(self) -> str:
        """FlushCompleted for one target; RequestCompleted for several or a selector."""
        return FLUSH_COMPLETED if self.targets == 1 and not self.selector \
            else REQUEST_COMPLETED


@dataclass(frozen=True)
class Invalid:
    """The app's parser said no: `reason` reads "field: rule"."""

    field: str
    reason: str


def prepare(body: dict[str, Any], settings: QueueSettings, *, request_id: str, reply: bool,
            now: dt.datetime) -> Prepared | Invalid:
    """Validate `body` as the app will, then build its message (never raises on bad input)."""
    from ..core.request import Delivery, Rejection, parse_request

    # The requestId travels in the body and the MessageId is new on every send: a repeated
    # `send --request-id X` reaches the app (the queue's duplicate detection would drop a
    # repeated MessageId), whose ledger answers it with the recorded outcome, flushing nothing
    # again (docs/design.md, "Request ledger").
    if isinstance(body, dict) and "requestId" not in body:
        body = {**body, "requestId": request_id}
    try:
        raw = json.dumps(body, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        return Invalid("body", f"body: cannot be encoded as JSON ({exc})")
    reply_queue = settings.reply_queue if reply else None
    try:
        parsed = parse_request(
            Delivery(body=raw, message_id=request_id, correlation_id=None,
                     reply_to=reply_queue, reply_to_session_id=request_id if reply else None,
                     enqueued_at=now, delivery_count=1),
            default_timeout=settings.timeout_seconds, allowed_scopes=(),
            max_targets=int(getattr(settings, "max_targets", DEFAULT_MAX_TARGETS)),
            reserved_queues=(settings.request_queue, settings.poll_queue,
                             settings.events_topic), now=now)
    except (ValueError, TypeError, RecursionError) as exc:  # the parser promises not to
        return Invalid("body", f"body: could not be checked ({type(exc).__name__}: {exc})")
    if isinstance(parsed, Rejection):
        return Invalid(str(parsed.field), str(parsed.message))
    rid = parsed.origin.request_id
    targets = tuple(parsed.targets)
    properties: dict[str, str] = {"requestId": rid}
    if len(targets) == 1 and parsed.selector is None:
        properties["cacheName"] = cache_name(targets[0].resource_id)
    message_id = f"{rid[:100]}:{uuid.uuid4().hex[:16]}"
    message = OutboundMessage(raw, message_id=message_id, correlation_id=rid,
                              reply_to=reply_queue,
                              reply_to_session_id=message_id if reply else None,
                              application_properties=properties)
    return Prepared(rid, body, message, len(targets), parsed.selector is not None)


def cache_name(resource_id: str) -> str:
    """The cache, or the Managed Redis cluster, a resource id names (the SQL filter's
    cacheName property)."""
    parts = resource_id.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    for kind in ("redisenterprise", "redis"):
        if kind in lowered:
            at = lowered.index(kind)
            if at + 1 < len(parts):
                return parts[at + 1]
    return parts[-1]
