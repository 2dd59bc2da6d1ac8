"""What a send or publish writes to the local bus file: one row per message and receiving
entity (a topic fans out to the subscriptions it has now), the MessageIds seen in the
duplicate-detection window, and a scheduled message's time as when it becomes visible.

Kept apart from `redisflush.local.bus` so its send methods read as the port; this runs inside
the one transaction a send holds, so a batch is written whole or not at all."""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from redisflush.bus import BusError, OutboundMessage
from redisflush.local.bus_entities import ensure_entity
from redisflush.local.bus_schema import to_us

# How often a send sweeps the expired duplicate-detection rows (LocalBus keeps the time)
PURGE_EVERY_US = 1_000_000


def enqueue(db: sqlite3.Connection, name: str, kind: str,
            prepared: Sequence[tuple[OutboundMessage, str]], now: int, *,
            purge_expired: bool = True) -> None:
    """Write each (message, its properties' JSON) to the queue, or to every subscription of
    the topic; BusError (the caller's transaction rolls back) if one breaks the entity's rules.
    `purge_expired` also deletes expired duplicate-detection rows (the check ignores them)."""
    entity = ensure_entity(db, name, kind)
    if kind == "queue":
        targets = [name]
    else:
        targets = [r[0] for r in db.execute(
            "SELECT name FROM entities WHERE topic = ? AND kind = 'subscription'", (name,))]
    window = entity["duplicate_window_us"]
    if purge_expired:
        db.execute("DELETE FROM duplicates WHERE expires_at <= ?", (now,))
    for message, properties in prepared:
        if entity["requires_session"] and message.session_id is None:
            raise BusError(f"queue {name!r} requires sessions: message "
                           f"{message.message_id!r} has no session_id", refused=True)
        # Service Bus keeps the first MessageId for the window and silently accepts (and
        # drops) repeats; the window is not extended by a repeat. One statement: a new id is
        # inserted, an expired one starts a new window, a live one changes nothing (no row
        # changed: a duplicate).
        if window > 0 and not db.execute(
                "INSERT INTO duplicates VALUES (?, ?, ?) ON CONFLICT (entity, message_id) "
                "DO UPDATE SET expires_at = excluded.expires_at "
                "WHERE duplicates.expires_at <= ?",
                (name, message.message_id, now + window, now)).rowcount:
            continue
        scheduled = None if message.scheduled_at is None else to_us(message.scheduled_at)
        visible = now if scheduled is None else max(now, scheduled)
        db.executemany(
            "INSERT INTO messages (entity, visible_at, enqueued_at, scheduled_at, "
            "message_id, body, content_type, correlation_id, subject, session_id, "
            "reply_to, reply_to_session_id, properties) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(target, visible, visible, scheduled, message.message_id,
              bytes(message.body), message.content_type, message.correlation_id,
              message.subject, message.session_id, message.reply_to,
              message.reply_to_session_id, properties) for target in targets])
