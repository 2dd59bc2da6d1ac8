"""A durable local stand-in for Azure Service Bus, in one SQLite file.

Why: `demo`, `serve --local`, `send --local` and the functional tests run the whole flow on one
machine with no Azure, across processes (a CLI `send` next to a `serve` host), any of which may
be killed. It implements the same Bus port as the Azure adapter plus the receiving side the
local host needs, with exactly the Service Bus behaviour this app relies on: queues, topics
fanning out to subscriptions, scheduled messages, duplicate detection by MessageId, peek-lock
(one minute by default, as the README sets the queues up) with delivery counts and
dead-lettering, sessions (as a receive filter), and the 256 KiB limit per message and per
batch. tests/contract/test_bus_contract.py holds it, the in-memory double and the Azure
adapter to the same behaviour.

Where it knowingly differs: an entity is created on first use (Service Bus answers
MessagingEntityNotFound), a session is a filter rather than an exclusive session lock, and a
message that used up its deliveries moves to the dead-letter queue at the next receive rather
than when its last lock expires.

One row per message. `visible_at` is the single time that says when a row may next be
received: its send time, its scheduled time, or the end of its current lock. So a receive is
one indexed range scan inside BEGIN IMMEDIATE, which also makes it atomic between processes:
two receivers never lock the same row. A lock that expires needs no sweeper: the row is simply
visible again. The schema and row mapping live in `redisflush.local.bus_schema`; what a
send writes in `bus_enqueue`, the entities and their options in `bus_entities`, the locks a
settle checks and dead-lettering in `bus_locks` (LockLostError is re-exported here, where
callers of `complete` and the other settles have always imported it).
"""
from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from redisflush.bus import OutboundMessage, ReceivedMessage
from redisflush.local.bus_enqueue import PURGE_EVERY_US, enqueue
from redisflush.local.bus_entities import ReceiveOptions, ensure_entity, receivable
from redisflush.local.bus_locks import (
    LockLostError,
    dead_letter_if_exhausted,
    dead_letter_row,
    lock_lost,
    locked_row,
)
from redisflush.local.bus_schema import (
    DEADLETTER_SUFFIX,
    DEFAULT_DUPLICATE_WINDOW_SECONDS,
    DEFAULT_LOCK_SECONDS,
    DEFAULT_MAX_DELIVERY_COUNT,
    SCHEMA,
    SUBSCRIPTIONS,
    check_sizes,
    message_size,
    properties_json,
    received_message,
    to_dt,
    to_us,
    utc_now,
)
from redisflush.local.sqlite_file import SqliteFile

__all__ = ["LocalBus", "LockLostError"]


class LocalBus:
    """Bus port plus receive/settle on one SQLite file; safe across threads and processes.

    `clock` returns aware UTC now; tests pass a fake one to drive schedules, locks and the
    duplicate window without sleeping.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self._clock = clock or utc_now
        self._file = SqliteFile(path, SCHEMA)
        self.path = self._file.path
        # Entities this bus has received from, with their options as last read: an idle
        # receive from one of them is a read, not a write transaction (see `receive`).
        self._received_from: dict[str, ReceiveOptions] = {}
        self._next_purge = 0  # when a send next sweeps expired duplicate-detection rows

    def _now(self) -> int:
        return to_us(self._clock())

    # -- entities -----------------------------------------------------------------------

    def ensure_queue(self, name: str, *, max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT,
                     lock_seconds: float = DEFAULT_LOCK_SECONDS,
                     duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW_SECONDS,
                     requires_session: bool = False) -> None:
        """Create or reconfigure a queue (idempotent)."""
        if max_delivery_count < 1 or lock_seconds <= 0:
            raise ValueError("max_delivery_count must be >= 1 and lock_seconds > 0")
        with self._file.transaction() as db:
            ensure_entity(db, name, "queue", max_delivery_count=max_delivery_count,
                          lock_us=round(lock_seconds * 1e6),
                          requires_session=int(requires_session),
                          duplicate_window_us=round(duplicate_window_seconds * 1e6))

    def ensure_topic(self, name: str, *,
                     duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW_SECONDS) -> None:
        """Create or reconfigure a topic (idempotent)."""
        with self._file.transaction() as db:
            ensure_entity(db, name, "topic",
                          duplicate_window_us=round(duplicate_window_seconds * 1e6))

    def ensure_subscription(self, topic: str, name: str, *,
                            max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT,
                            lock_seconds: float = DEFAULT_LOCK_SECONDS) -> None:
        """Create or reconfigure a subscription; only later publishes reach it."""
        if max_delivery_count < 1 or lock_seconds <= 0:
            raise ValueError("max_delivery_count must be >= 1 and lock_seconds > 0")
        with self._file.transaction() as db:
            ensure_entity(db, topic, "topic")
            ensure_entity(db, f"{topic}{SUBSCRIPTIONS}{name}", "subscription", topic,
                          max_delivery_count=max_delivery_count,
                          lock_us=round(lock_seconds * 1e6))

    # -- sending ------------------------------------------------------------------------

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        """Enqueue all messages, or none (one transaction) and raise BusError."""
        self._send(queue, "queue", messages)

    def publish(self, topic: str, messages: Sequence[OutboundMessage]) -> None:
        """Copy each message to every subscription the topic has now; none: dropped."""
        self._send(topic, "topic", messages)

    def _send(self, name: str, kind: str, messages: Sequence[OutboundMessage]) -> None:
        if not messages:
            return
        prepared = [(m, properties_json(m.application_properties)) for m in messages]
        check_sizes(name, [(m, message_size(m, props)) for m, props in prepared])
        now = self._now()
        with self._file.transaction() as db:
            # expired duplicate-detection rows only take room (the check ignores them):
            # swept at most once a second rather than in every send's transaction
            purge = now >= self._next_purge
            enqueue(db, name, kind, prepared, now, purge_expired=purge)
            if purge:
                self._next_purge = now + PURGE_EVERY_US

    # -- receiving and settling ---------------------------------------------------------

    def receive(self, entity: str, *, max_count: int = 1,
                session_id: str | None = None) -> list[ReceivedMessage]:
        """Lock and return up to max_count ready messages, oldest first; [] if none is ready.

        A message already delivered max_delivery_count times is dead-lettered instead, as
        Service Bus does when its lock would be handed out once more.
        """
        if max_count < 1:
            raise ValueError("max_count must be >= 1")
        now = self._now()
        known = self._received_from.get(entity)
        if known is not None and not (known.requires_session and session_id is None) \
                and not self._any_ready(entity, now, session_id):
            # Nothing is ready: the answer of the transaction below, without taking the
            # file's write lock (a host polls its queues fifty times a second).
            return []
        received: list[ReceivedMessage] = []
        with self._file.transaction() as db:
            options = receivable(db, entity)
            self._received_from[entity] = options
            if options.requires_session and session_id is None:
                raise ValueError(f"{entity!r} requires sessions: pass session_id")
            query = "SELECT * FROM messages WHERE entity = ? AND visible_at <= ?"
            params: tuple[Any, ...] = (entity, now)
            if session_id is not None:
                query, params = query + " AND session_id = ?", params + (session_id,)
            while len(received) < max_count:
                wanted = max_count - len(received)
                rows = db.execute(query + " ORDER BY seq LIMIT ?", params + (wanted,)).fetchall()
                dead_lettered = False
                for row in rows:
                    if dead_letter_if_exhausted(db, row, now, options):
                        dead_lettered = True
                        continue
                    token, until = str(uuid.uuid4()), now + options.lock_us
                    db.execute("UPDATE messages SET lock_token = ?, visible_at = ?, "
                               "delivery_count = delivery_count + 1 WHERE seq = ?",
                               (token, until, row["seq"]))
                    received.append(received_message(row, lock_token=token, locked_until=until,
                                                     delivery_count=row["delivery_count"] + 1))
                if len(rows) < wanted or not dead_lettered:
                    # fewer rows than asked: no more are ready; all locked: as many as asked.
                    # Only rows dead-lettered instead of delivered leave room to look again.
                    break
        return received

    def _any_ready(self, entity: str, now: int, session_id: str | None) -> bool:
        """Whether a receive now could find a row (one indexed read, no lock taken)."""
        query = "SELECT 1 FROM messages WHERE entity = ? AND visible_at <= ?"
        params: tuple[Any, ...] = (entity, now)
        if session_id is not None:
            query, params = query + " AND session_id = ?", params + (session_id,)
        with self._file.reading() as db:
            return db.execute(query + " LIMIT 1", params).fetchone() is not None

    def receive_wait(self, entity: str, timeout: float, *, max_count: int = 1,
                     session_id: str | None = None,
                     poll_interval: float = 0.05) -> list[ReceivedMessage]:
        """Like receive, but polls for up to `timeout` real seconds before returning []."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.receive(entity, max_count=max_count, session_id=session_id)
            remaining = deadline - time.monotonic()
            if received or remaining <= 0:
                return received
            time.sleep(min(poll_interval, remaining))

    def complete(self, message: ReceivedMessage) -> None:
        """Delete the message: it was handled. LockLostError if the lock is gone."""
        now = self._now()
        deleted = self._file.write(
            "DELETE FROM messages WHERE seq = ? AND lock_token = ? AND visible_at > ?",
            (message.sequence_number, message.lock_token, now))
        if not deleted:  # the same check as bus_locks.locked_row, in the one statement
            raise lock_lost(message)

    def abandon(self, message: ReceivedMessage) -> None:
        """Unlock at once for redelivery; dead-letter if that was the last delivery allowed."""
        now = self._now()
        with self._file.transaction() as db:
            row = locked_row(db, message, now)
            options = receivable(db, row["entity"])
            if not dead_letter_if_exhausted(db, row, now, options):
                db.execute("UPDATE messages SET lock_token = NULL, visible_at = ? WHERE seq = ?",
                           (now, row["seq"]))

    def dead_letter(self, message: ReceivedMessage, reason: str = "",
                    description: str = "") -> None:
        """Move the message to `{entity}/$deadletterqueue` with the reason in its properties."""
        if message.entity.endswith(DEADLETTER_SUFFIX):
            raise ValueError("a dead-lettered message cannot be dead-lettered again")
        now = self._now()
        with self._file.transaction() as db:
            dead_letter_row(db, locked_row(db, message, now), now, reason, description)

    def renew_lock(self, message: ReceivedMessage) -> dt.datetime:
        """Extend the lock by the entity's lock duration from now; returns the new expiry."""
        now = self._now()
        with self._file.transaction() as db:
            row = locked_row(db, message, now)
            until = now + receivable(db, row["entity"]).lock_us
            db.execute("UPDATE messages SET visible_at = ? WHERE seq = ?", (until, row["seq"]))
        return to_dt(until)

    # -- inspection ---------------------------------------------------------------------

    def peek(self, entity: str, max_count: int = 100) -> list[ReceivedMessage]:
        """Look without locking, scheduled and locked messages included (lock_token '')."""
        now = self._now()
        with self._file.reading() as db:
            rows = db.execute("SELECT * FROM messages WHERE entity = ? ORDER BY seq LIMIT ?",
                              (entity, max_count)).fetchall()
        return [received_message(row, lock_token="", locked_until=row["visible_at"]
                                 if row["lock_token"] is not None and row["visible_at"] > now
                                 else None)
                for row in rows]

    def counts(self, entity: str) -> dict[str, int]:
        """active: receivable now; scheduled: not yet visible; locked; deadletter."""
        now = self._now()
        with self._file.reading() as db:
            row = db.execute(
                "SELECT COALESCE(SUM(visible_at <= :now), 0), "
                "COALESCE(SUM(visible_at > :now AND lock_token IS NULL), 0), "
                "COALESCE(SUM(visible_at > :now AND lock_token IS NOT NULL), 0), "
                "(SELECT COUNT(*) FROM messages WHERE entity = :dlq) "
                "FROM messages WHERE entity = :entity",
                {"now": now, "entity": entity, "dlq": entity + DEADLETTER_SUFFIX}).fetchone()
        return dict(zip(("active", "scheduled", "locked", "deadletter"), row, strict=True))

    def close(self) -> None:
        """Close every thread's connection to the file."""
        self._file.close()

    def __enter__(self) -> LocalBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

