"""The local bus's peek-locks: the locked row a settle acts on, the error when its lock is
gone, and dead-lettering (asked for, or after MaxDeliveryCount deliveries).

Kept apart from `redisflush.local.bus` so its receive and settle methods read as Service Bus's
rules; these run inside a transaction the caller holds on the bus file."""
from __future__ import annotations

import sqlite3

from redisflush.bus import BusError, ReceivedMessage
from redisflush.local.bus_entities import ReceiveOptions
from redisflush.local.bus_schema import DEADLETTER_SUFFIX, MAX_DELIVERY_COUNT_EXCEEDED


class LockLostError(BusError):
    """The message's lock expired or passed to another receiver: it will be delivered again."""


def lock_lost(message: ReceivedMessage) -> LockLostError:
    """The error a settle raises on a lost lock: a BusError, so the caller does not take the
    message as handled."""
    return LockLostError(f"lock on message {message.message_id!r} (sequence "
                         f"{message.sequence_number}) in {message.entity!r} expired or "
                         "was lost: it is, or will be, delivered again")


def locked_row(db: sqlite3.Connection, message: ReceivedMessage, now: int) -> sqlite3.Row:
    """The message's row while this receiver's lock on it holds: a lock that expired, or
    passed to another receiver with a new token, is lost (LockLostError)."""
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM messages WHERE seq = ? AND lock_token = ? AND visible_at > ?",
        (message.sequence_number, message.lock_token, now)).fetchone()
    if row is None:
        raise lock_lost(message)
    return row


def dead_letter_row(db: sqlite3.Connection, row: sqlite3.Row, now: int, reason: str,
                    description: str) -> None:
    """Move the row, unlocked, to its entity's dead-letter queue with Service Bus's two
    reason properties, for whoever reads that queue."""
    db.execute("UPDATE messages SET entity = ?, visible_at = ?, lock_token = NULL, "
               "properties = json_set(properties, '$.DeadLetterReason', ?, "
               "'$.DeadLetterErrorDescription', ?) WHERE seq = ?",
               (row["entity"] + DEADLETTER_SUFFIX, now, reason, description, row["seq"]))


def dead_letter_if_exhausted(db: sqlite3.Connection, row: sqlite3.Row, now: int,
                             options: ReceiveOptions) -> bool:
    """Service Bus dead-letters a message instead of delivering it more than
    MaxDeliveryCount times (and at once when such a last delivery is abandoned)."""
    limit = options.max_delivery_count
    if limit is None or row["delivery_count"] < limit:
        return False
    dead_letter_row(db, row, now, MAX_DELIVERY_COUNT_EXCEEDED,
                    f"Message could not be consumed after {limit} delivery attempts.")
    return True
