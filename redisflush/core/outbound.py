"""A message the app wants sent: the one shape both Bus adapters take (`redisflush.bus`)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

PropertyValue = str | int | float | bool


@dataclass(frozen=True)
class OutboundMessage:
    """One message to send; `scheduled_at` (UTC) makes it invisible until then."""

    body: bytes
    message_id: str
    content_type: str = "application/json"
    correlation_id: str | None = None
    subject: str | None = None
    session_id: str | None = None
    reply_to: str | None = None
    reply_to_session_id: str | None = None
    application_properties: Mapping[str, PropertyValue] = field(default_factory=dict)
    scheduled_at: dt.datetime | None = None
