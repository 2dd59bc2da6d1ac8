"""The sender's side: build a request, drop it on the queue, follow its reply session.

Used by `send` and `watch` over either bus. A `Channel` hides which one: the local SQLite bus
or Azure Service Bus (`redisflush.remote`). Events arrive as parsed CloudEvents dicts.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol

from .bus import OutboundMessage
from .events import EVENT_TYPE, PROGRESS_TYPE
from .messages import Delivery, Rejection, parse_request
from .settings import Settings

EXIT_CODES = {"Succeeded": 0, "Failed": 1, "Canceled": 1, "Rejected": 1, "TimedOut": 3}
WAIT_MARGIN = 60.0  # the app may finish a little after the request's own deadline


class Channel(Protocol):
    """Where requests go and where their events come back from."""

    def send_request(self, message: OutboundMessage) -> None: ...

    def replies(self, session_id: str, until: float) -> Iterator[dict[str, Any]]: ...

    def events(self, subscription: str, until: float | None) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Prepared:
    """A request ready to send: its body (as users would write it) and the bus message."""

    request_id: str
    body: dict[str, Any]
    message: OutboundMessage


def prepare(body: dict[str, Any], settings: Settings, *, request_id: str,
            reply: bool, now: dt.datetime) -> Prepared | Rejection:
    """Validate with the app's own parser first: a bad request never leaves the machine."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    parsed = parse_request(Delivery(raw, request_id), default_timeout=settings.timeout_seconds,
                           allowed_scopes=(), now=now)
    if isinstance(parsed, Rejection):
        return parsed
    rid = parsed.origin.request_id
    message = OutboundMessage(
        raw, message_id=rid, correlation_id=rid,
        reply_to=settings.reply_queue if reply else None,
        reply_to_session_id=rid if reply else None,
        application_properties={"requestId": rid, "cacheName": parsed.target.cache_name})
    return Prepared(rid, body, message)


def follow(channel: Channel, request_id: str, until: float,
           on_progress: Callable[[Mapping[str, Any]], None]) -> dict[str, Any] | None:
    """The completion event of `request_id` from its reply session, or None at `until`."""
    for event in channel.replies(request_id, until):
        data = event.get("data") or {}
        if data.get("requestId") != request_id:
            continue
        if event.get("type") == EVENT_TYPE:
            return event
        if event.get("type") == PROGRESS_TYPE:
            on_progress(data)
    return None


def describe(event: Mapping[str, Any]) -> str:
    """One human line for a completion event."""
    data = event.get("data") or {}
    status, cache = data.get("status"), event.get("subject") or "(unknown cache)"
    line = f"{status}: {cache} request={data.get('requestId')}"
    if data.get("durationSeconds") is not None:
        line += f" in {data['durationSeconds']:.1f} s"
    line += f", {data.get('armRequests', 0)} ARM requests"
    error = data.get("error")
    if error:
        line += f" - {error.get('code')}: {error.get('message')}"
    return line


def decode_event(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


class LocalChannel:
    """The local SQLite bus that `serve --local` reads."""

    def __init__(self, settings: Settings) -> None:
        from .local.runtime import open_bus
        self.settings = settings
        self.bus = open_bus(settings)

    def send_request(self, message: OutboundMessage) -> None:
        self.bus.send(self.settings.request_queue, [message])

    def replies(self, session_id: str, until: float) -> Iterator[dict[str, Any]]:
        yield from self._drain(self.settings.reply_queue, until, session_id)

    def events(self, subscription: str, until: float | None) -> Iterator[dict[str, Any]]:
        entity = f"{self.settings.events_topic}/subscriptions/{subscription}"
        self.bus.ensure_subscription(self.settings.events_topic, subscription)
        yield from self._drain(entity, until, None)

    def _drain(self, entity: str, until: float | None,
               session_id: str | None) -> Iterator[dict[str, Any]]:
        while until is None or time.monotonic() < until:
            wait = 1.0 if until is None else max(0.0, min(1.0, until - time.monotonic()))
            for message in self.bus.receive_wait(entity, wait, max_count=16,
                                                 session_id=session_id):
                self.bus.complete(message)
                event = decode_event(message.body)
                if event is not None:
                    yield event

    def close(self) -> None:
        self.bus.close()
