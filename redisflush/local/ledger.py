"""SqliteLedger: the request ledger on one SQLite file, the local default (docs/design.md,
"Request ledger").

A CLI `send`, a `serve` host and its worker threads may all write the same request's rows, so
every conditional write is one BEGIN IMMEDIATE transaction (the write lock is taken before
the check, in every process) on a WAL-mode file. The etag is a version number drawn from one
counter for the whole file, never reused: a row purged and inserted again cannot be updated
through an etag read before the purge.
"""
from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from redisflush.ledger import LedgerError, LedgerRow, decode_data, encode_data, row_order

BUSY_TIMEOUT_SECONDS = 10.0
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS ledger_rows (
        request_id TEXT NOT NULL,
        key TEXT NOT NULL,
        state TEXT NOT NULL,
        data TEXT NOT NULL,
        posts INTEGER NOT NULL,
        updated_us INTEGER NOT NULL,
        expires_us INTEGER NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (request_id, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS ledger_rows_expiry ON ledger_rows (expires_us)",
    "CREATE TABLE IF NOT EXISTS ledger_version (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "last INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO ledger_version (id, last) VALUES (1, 0)",
)
_COLUMNS = "request_id, key, state, data, posts, updated_us, expires_us, version"


def to_micros(value: dt.datetime) -> int:
    """Integer microseconds since the epoch, UTC (a naive datetime counts as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=value)


class SqliteLedger:
    """The Ledger on a SQLite file; safe for threads (one connection behind a lock) and for
    processes (WAL, busy timeout, BEGIN IMMEDIATE). Every sqlite3 failure is LedgerError
    naming the file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    # -- the Ledger port ---------------------------------------------------------------

    def insert(self, row: LedgerRow) -> LedgerRow | None:
        text = encode_data(row.data)
        with self._transaction() as db:
            version = self._next_version(db)
            cursor = db.execute(
                f"INSERT INTO ledger_rows ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (request_id, key) DO NOTHING",
                (row.request_id, row.key, row.state, text, row.posts,
                 to_micros(row.updated_at), to_micros(row.expires_at), version))
            if cursor.rowcount != 1:
                db.execute("ROLLBACK")  # leave the counter as it was; nothing changed
                return None
        return replace(row, data=decode_data(text), etag=str(version))

    def update(self, row: LedgerRow) -> LedgerRow | None:
        text = encode_data(row.data)
        if not row.etag.isdigit():
            return None  # never stored by this adapter, so never current
        with self._transaction() as db:
            version = self._next_version(db)
            cursor = db.execute(
                "UPDATE ledger_rows SET state = ?, data = ?, posts = ?, updated_us = ?, "
                "expires_us = ?, version = ? WHERE request_id = ? AND key = ? AND version = ?",
                (row.state, text, row.posts, to_micros(row.updated_at),
                 to_micros(row.expires_at), version, row.request_id, row.key, int(row.etag)))
            if cursor.rowcount != 1:
                db.execute("ROLLBACK")
                return None
        return replace(row, data=decode_data(text), etag=str(version))

    def get(self, request_id: str, key: str) -> LedgerRow | None:
        with self._reading() as db:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM ledger_rows WHERE request_id = ? AND key = ?",
                (request_id, key)).fetchone()
        return None if found is None else _row(found)

    def rows(self, request_id: str) -> list[LedgerRow]:
        with self._reading() as db:
            found = db.execute(f"SELECT {_COLUMNS} FROM ledger_rows WHERE request_id = ?",
                               (request_id,)).fetchall()
        return sorted((_row(r) for r in found), key=row_order)

    def purge(self, now: dt.datetime) -> int:
        """The rows of every request whose rows have all expired, in one transaction."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM ledger_rows WHERE request_id IN (SELECT request_id FROM "
                "ledger_rows GROUP BY request_id HAVING MAX(expires_us) <= ?)",
                (to_micros(now),))
            return cursor.rowcount

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # -- connection discipline -----------------------------------------------------------

    def _fail(self, what: str, exc: BaseException) -> LedgerError:
        return LedgerError(f"local ledger file {self.path}: {what}: {exc}")

    def _connection(self) -> sqlite3.Connection:
        """The open connection; a new one after a fork (a SQLite connection must not cross
        into a child process) or on first use. Call with self._lock held."""
        if self._conn is None or self._pid != os.getpid():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._fail("cannot create its folder", exc) from exc
            try:
                self._conn = _open_when_free(self.path)
            except sqlite3.Error as exc:
                raise self._fail("cannot open", exc) from exc
            self._pid = os.getpid()
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the thread lock; rolled back on any error. The
        body may end the transaction itself (ROLLBACK) when it decides to change nothing."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._fail("cannot begin a transaction", exc) from exc
            try:
                yield conn
                if conn.in_transaction:
                    conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the original error says more
                if isinstance(exc, sqlite3.Error):
                    raise self._fail("write failed", exc) from exc
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One statement outside a transaction: a consistent snapshot in WAL mode."""
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.Error as exc:
                raise self._fail("read failed", exc) from exc

    @staticmethod
    def _next_version(db: sqlite3.Connection) -> int:
        db.execute("UPDATE ledger_version SET last = last + 1 WHERE id = 1")
        version: int = db.execute("SELECT last FROM ledger_version WHERE id = 1").fetchone()[0]
        return version


def _open_when_free(path: Path) -> sqlite3.Connection:
    """_open, retried while another process holds the file: switching a new file to WAL
    needs an exclusive lock, and SQLite answers "database is locked" at once (no busy
    handler) when two processes open a new file at the same instant."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            return _open(path)
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _open(path: Path) -> sqlite3.Connection:
    """A WAL-mode connection with the schema in place (created by whichever process is
    first; IF NOT EXISTS under BEGIN IMMEDIATE makes that race harmless)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                           check_same_thread=False)  # used by many threads, one at a time
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"WAL journal mode unavailable (got {mode!r})")
        # FULL, not the bus's NORMAL: a row lost to an OS crash would let a redelivered
        # request POST again, and the ledger writes a few rows per request, not per message.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def _row(found: tuple[Any, ...]) -> LedgerRow:
    request_id, key, state, data, posts, updated_us, expires_us, version = found
    return LedgerRow(request_id=request_id, key=key, state=state, data=decode_data(data),
                     posts=posts, updated_at=from_micros(updated_us),
                     expires_at=from_micros(expires_us), etag=str(version))
