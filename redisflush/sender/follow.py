"""Following a request on its reply session to the one event that ends it.

docs/design.md ("Completion events"): the final event has id `{requestId}:completed`. It is
the per-cache `RedisFlush.FlushCompleted` for a one-target request and the per-request
`RedisFlush.RequestCompleted` for several targets or a selector; per-cache events of a
multi-target request (ids `{requestId}:completed:{i}`) and `RedisFlush.FlushProgress` notes
only report progress. Anything else in the session (another request's events, garbage) is
skipped, so a wrong message cannot end the wait.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .channel import Channel
from .report import FLUSH_COMPLETED, REQUEST_COMPLETED

PROGRESS = "RedisFlush.FlushProgress"
EXIT_CODES = {"Succeeded": 0, "Failed": 1, "Canceled": 1, "Rejected": 1, "TimedOut": 3}
EXIT_TIMED_OUT = 3


def exit_code(event: Mapping[str, Any]) -> int:
    """0 Succeeded, 1 Failed/Canceled/Rejected (or anything unknown), 3 TimedOut."""
    data = event.get("data")
    status = data.get("status") if isinstance(data, Mapping) else None
    return EXIT_CODES.get(status, 1) if isinstance(status, str) else 1


def is_final(event: Mapping[str, Any], request_id: str, final_type: str) -> bool:
    """The event that ends `request_id`: its id says so (`{requestId}:completed`; an event
    without an id counts when it has the type this request ends with). Waiting for a
    RequestCompleted, a FlushCompleted with that id ends the wait only when it is a
    rejection (the app could not read the request's targets): a selector that resolved to
    one cache may carry that id on its per-cache event too."""
    kind = event.get("type")
    if kind not in (FLUSH_COMPLETED, REQUEST_COMPLETED):
        return False
    event_id = event.get("id")
    if isinstance(event_id, str) and event_id:
        rejected = event_id.startswith((f"{request_id}:reused:", f"{request_id}:rejected:")) \
            and event_id.endswith(":completed")
        if rejected:  # Rejected: RequestIdReused, or the request itself (core.events ids)
            return True
        if event_id != f"{request_id}:completed":
            return False
        if kind == final_type or final_type == FLUSH_COMPLETED:
            return True
        data = event.get("data")
        return isinstance(data, Mapping) and data.get("status") == "Rejected"
    return bool(kind == final_type)


def follow(channel: Channel, request_id: str, until: float,
           on_progress: Callable[[Mapping[str, Any]], None],
           final_type: str = FLUSH_COMPLETED,
           on_cache: Callable[[Mapping[str, Any]], None] | None = None, *,
           session_id: str | None) -> dict[str, Any] | None:
    """The final event of `request_id` from its reply session (`session_id`: the send's own,
    its ReplyToSessionId; None: the requestId, the app's default), or None at `until`.
    Progress notes go to `on_progress`, per-cache events of a multi-target request to
    `on_cache`."""
    for event in channel.replies(session_id or request_id, until):
        data = event.get("data")
        if not isinstance(data, Mapping) or data.get("requestId") != request_id:
            continue
        if is_final(event, request_id, final_type):
            return event
        if event.get("type") == PROGRESS:
            on_progress(data)
        elif event.get("type") == FLUSH_COMPLETED and on_cache is not None:
            on_cache(event)
    return None
