"""The local bus's entities (queues, topics, subscriptions): created on first use with Service
Bus's defaults, and the options a receive from one of them, or its dead-letter queue, reads.

Kept apart from `redisflush.local.bus` because first-use creation is where the local bus
knowingly differs from Service Bus (which answers MessagingEntityNotFound); these run inside
a transaction the caller holds on the bus file."""
from __future__ import annotations

import sqlite3
from typing import Any, NamedTuple

from redisflush.bus import BusError
from redisflush.local.bus_schema import (
    DEADLETTER_SUFFIX,
    DEFAULT_DUPLICATE_WINDOW_SECONDS,
    DEFAULT_LOCK_SECONDS,
    DEFAULT_MAX_DELIVERY_COUNT,
    SUBSCRIPTIONS,
)


class ReceiveOptions(NamedTuple):
    """What receiving from one entity needs; a dead-letter queue never dead-letters again."""

    max_delivery_count: int | None
    lock_us: int
    requires_session: bool


def ensure_entity(db: sqlite3.Connection, name: str, kind: str, topic: str | None = None,
                  **options: Any) -> sqlite3.Row:
    """Create the entity with defaults if new (Service Bus entities exist before use;
    here first use creates them), apply `options`, and check it is of the right kind."""
    if not name or name.endswith(DEADLETTER_SUFFIX):
        raise ValueError(f"not an entity name: {name!r}")
    row: sqlite3.Row | None = None if options else db.execute(
        "SELECT * FROM entities WHERE name = ?", (name,)).fetchone()
    if row is None:  # new, or being reconfigured (a send or receive only reads it)
        # The defaults are written out so a file made by an older version gets today's.
        db.execute("INSERT OR IGNORE INTO entities (name, kind, topic, max_delivery_count, "
                   "lock_us, duplicate_window_us) VALUES (?, ?, ?, ?, ?, ?)",
                   (name, kind, topic, DEFAULT_MAX_DELIVERY_COUNT,
                    round(DEFAULT_LOCK_SECONDS * 1e6),
                    round(DEFAULT_DUPLICATE_WINDOW_SECONDS * 1e6)))
        if options:
            assignments = ", ".join(f"{column} = ?" for column in options)
            db.execute(f"UPDATE entities SET {assignments} WHERE name = ?",
                       (*options.values(), name))
        row = db.execute("SELECT * FROM entities WHERE name = ?", (name,)).fetchone()
    assert row is not None
    if row["kind"] != kind:
        raise BusError(f"{name!r} is a {row['kind']}, not a {kind}", refused=True)
    return row


def receivable(db: sqlite3.Connection, entity: str) -> ReceiveOptions:
    """Options of a queue, subscription (`{topic}/subscriptions/{name}`) or either's
    dead-letter queue (`{entity}/$deadletterqueue`), creating the entity on first use."""
    base = entity.removesuffix(DEADLETTER_SUFFIX)
    if SUBSCRIPTIONS in base:
        topic = base.split(SUBSCRIPTIONS, 1)[0]
        ensure_entity(db, topic, "topic")
        row = ensure_entity(db, base, "subscription", topic)
    else:
        row = ensure_entity(db, base, "queue")
    if base != entity:
        return ReceiveOptions(None, row["lock_us"], False)
    return ReceiveOptions(row["max_delivery_count"], row["lock_us"],
                          bool(row["requires_session"]))
