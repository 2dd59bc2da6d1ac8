"""The local bus's SQLite tables, and the mapping between their rows and messages.

Kept apart from `redisflush.local.bus` so that module reads as Service Bus semantics only.
Times are integer microseconds since the epoch: exact round trip, cheap comparisons.
"""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Mapping, Sequence

from redisflush.bus import BusError, OutboundMessage, PropertyValue, ReceivedMessage

DEADLETTER_SUFFIX = "/$deadletterqueue"
SUBSCRIPTIONS = "/subscriptions/"
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
# Service Bus defaults as the README asks the entities to be set up: lock one minute,
# MaxDeliveryCount 10, duplicate detection window ten minutes.
DEFAULT_LOCK_SECONDS = 60.0
DEFAULT_MAX_DELIVERY_COUNT = 10
DEFAULT_DUPLICATE_WINDOW_SECONDS = 600.0
# Standard tier: 256 KiB per message, and per batch (azure-servicebus sends a list as one batch).
MAX_MESSAGE_BYTES = 256 * 1024
_UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_US = dt.timedelta(microseconds=1)

# visible_at: when the row may next be received (send, schedule or lock end).
SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('queue', 'topic', 'subscription')),
    topic TEXT,
    max_delivery_count INTEGER NOT NULL DEFAULT 10,
    lock_us INTEGER NOT NULL DEFAULT 60000000,
    duplicate_window_us INTEGER NOT NULL DEFAULT 600000000,
    requires_session INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entities_by_topic ON entities (topic);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entity TEXT NOT NULL,
    visible_at INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    scheduled_at INTEGER,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT,
    correlation_id TEXT,
    subject TEXT,
    session_id TEXT,
    reply_to TEXT,
    reply_to_session_id TEXT,
    properties TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (entity, visible_at, seq);
CREATE TABLE IF NOT EXISTS duplicates (
    entity TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (entity, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS duplicates_by_expiry ON duplicates (expires_at)
"""


def to_us(moment: dt.datetime) -> int:
    """Microseconds since the epoch, exactly (a float timestamp would round)."""
    if moment.tzinfo is None:  # OutboundMessage promises UTC; a naive one is read as UTC
        moment = moment.replace(tzinfo=_UTC)
    return (moment - EPOCH) // _US


def to_dt(us: int) -> dt.datetime:
    """Aware UTC datetime from stored microseconds."""
    return EPOCH + dt.timedelta(microseconds=us)


def utc_now() -> dt.datetime:
    """The default clock of LocalBus."""
    return dt.datetime.now(_UTC)


def properties_json(properties: Mapping[str, PropertyValue]) -> str:
    """JSON keeps str/int/float/bool apart, as Service Bus application properties do."""
    for key, value in properties.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"application property {key!r}: only str/int/float/bool values")
    return json.dumps(dict(properties), separators=(",", ":"))


def message_size(message: OutboundMessage, properties: str) -> int:
    """What a message weighs against the 256 KiB limit: body, properties and the string headers
    (the SDK measures the AMQP encoding; this is within a few dozen bytes of it)."""
    headers = (message.message_id, message.content_type, message.correlation_id,
               message.subject, message.session_id, message.reply_to,
               message.reply_to_session_id)
    return len(message.body) + len(properties.encode()) + sum(
        len(h.encode()) for h in headers if h)


def check_sizes(entity: str, sized: Sequence[tuple[OutboundMessage, int]]) -> None:
    """BusError (nothing sent) for a message, or the batch of unscheduled ones, over 256 KiB:
    what Service Bus (MessageSizeExceededError) does with the same send."""
    for message, size in sized:
        if size > MAX_MESSAGE_BYTES:
            raise BusError(f"MessageSizeExceeded: message {message.message_id!r} to {entity!r} "
                           f"is {size} bytes; Service Bus takes at most {MAX_MESSAGE_BYTES}",
                           refused=True)
    batch = sum(size for message, size in sized if message.scheduled_at is None)
    if batch > MAX_MESSAGE_BYTES:
        raise BusError(f"MessageSizeExceeded: a batch of {len(sized)} messages to {entity!r} is "
                       f"{batch} bytes; one send takes at most {MAX_MESSAGE_BYTES}",
                       refused=True)


def received_message(row: sqlite3.Row, *, lock_token: str, locked_until: int | None,
                     delivery_count: int | None = None) -> ReceivedMessage:
    """The receiver's view of a row; no lock (peek) shows lock_token '' and the epoch."""
    return ReceivedMessage(
        body=bytes(row["body"]), message_id=row["message_id"], sequence_number=row["seq"],
        delivery_count=row["delivery_count"] if delivery_count is None else delivery_count,
        enqueued_at=to_dt(row["enqueued_at"]), lock_token=lock_token,
        locked_until=EPOCH if locked_until is None else to_dt(locked_until),
        content_type=row["content_type"], correlation_id=row["correlation_id"],
        subject=row["subject"], session_id=row["session_id"], reply_to=row["reply_to"],
        reply_to_session_id=row["reply_to_session_id"],
        application_properties=json.loads(row["properties"]),
        scheduled_at=None if row["scheduled_at"] is None else to_dt(row["scheduled_at"]),
        entity=row["entity"])
