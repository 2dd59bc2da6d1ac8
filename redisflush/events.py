"""Wire shapes out: the completion event (CloudEvents 1.0, structured JSON) and progress notes.

The event id and the Service Bus MessageId are both `{requestId}:completed`, so a step that
runs twice (a redelivery) publishes a duplicate that the topic's duplicate detection drops.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Mapping

from .bus import OutboundMessage
from .messages import Origin, iso
from .target import CacheTarget

EVENT_TYPE = "RedisFlush.FlushCompleted"
PROGRESS_TYPE = "RedisFlush.FlushProgress"
CONTENT_TYPE = "application/cloudevents+json"
STATUSES = ("Succeeded", "Failed", "Canceled", "TimedOut", "Rejected")
REJECTED_SOURCE = "/redisflush/requests"


def completion_event(origin: Origin, target: CacheTarget | None, status: str, *,
                     operation: Mapping[str, Any] | None, error: Mapping[str, Any] | None,
                     accepted_at: dt.datetime | None, completed_at: dt.datetime,
                     arm_requests: int) -> dict[str, Any]:
    """The CloudEvents document; `target` is None only for a request too broken to name one."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    resource_id = target.resource_id if target else None
    event: dict[str, Any] = {
        "specversion": "1.0",
        "type": EVENT_TYPE,
        "source": resource_id or REJECTED_SOURCE,
        "id": f"{origin.request_id}:completed",
        "time": iso(completed_at),
        "datacontenttype": "application/json",
    }
    if target:
        event["subject"] = target.cache_name
    event["data"] = {
        "requestId": origin.request_id,
        "status": status,
        "resourceId": resource_id,
        "operation": dict(operation) if operation else None,
        "error": dict(error) if error else None,
        "requestedAt": iso(origin.requested_at),
        "acceptedAt": iso(accepted_at),
        "completedAt": iso(completed_at),
        "durationSeconds": round(max(0.0, (completed_at - origin.requested_at)
                                     .total_seconds()), 3),
        "armRequests": arm_requests,
        "reason": origin.reason,
        "requestedBy": origin.requested_by,
    }
    return event


def event_properties(event: Mapping[str, Any], target: CacheTarget | None,
                     correlation_id: str | None = None) -> dict[str, str]:
    """Application properties that topic subscriptions filter on with SQL; `correlationId`
    is the request's own CorrelationId, for pipelines that track their runs by it."""
    props = {"status": event["data"]["status"], "requestId": event["data"]["requestId"]}
    if correlation_id:
        props["correlationId"] = correlation_id
    if target:
        props.update(cacheName=target.cache_name, resourceGroup=target.resource_group,
                     subscriptionId=target.subscription_id)
    return props


def event_messages(event: Mapping[str, Any], origin: Origin, target: CacheTarget | None
                   ) -> tuple[OutboundMessage, OutboundMessage | None]:
    """(the topic message, the reply-session copy when the request set ReplyTo)."""
    body = json.dumps(event, separators=(",", ":")).encode()
    common = dict(body=body, message_id=event["id"], content_type=CONTENT_TYPE,
                  correlation_id=origin.request_id, subject=EVENT_TYPE,
                  application_properties=event_properties(event, target, origin.correlation_id))
    topic_message = OutboundMessage(**common)  # type: ignore[arg-type]
    reply = None
    if origin.reply_to:
        reply = OutboundMessage(**common,  # type: ignore[arg-type]
                                session_id=origin.reply_to_session_id or origin.request_id)
    return topic_message, reply


def progress_message(origin: Origin, target: CacheTarget, status: str,
                     operation: Mapping[str, Any] | None, step: int, now: dt.datetime
                     ) -> OutboundMessage | None:
    """A progress note for the waiting CLI's session (status, percent), or None if no one waits."""
    if not origin.reply_to:
        return None
    percent = operation.get("percentComplete") if operation else None
    body = {"specversion": "1.0", "type": PROGRESS_TYPE, "id": f"{origin.request_id}:progress:"
            f"{step}", "source": target.resource_id, "subject": target.cache_name, "time": iso(now),
            "data": {"requestId": origin.request_id, "status": status,
                     "percentComplete": percent}}
    return OutboundMessage(json.dumps(body, separators=(",", ":")).encode(), body["id"],
                           content_type=CONTENT_TYPE, correlation_id=origin.request_id,
                           subject=PROGRESS_TYPE,
                           session_id=origin.reply_to_session_id or origin.request_id)
