"""One SQLite file shared by many processes and threads: connections, transactions, errors.

The local bus needs what Service Bus guarantees across processes (a CLI `send` and a `serve`
host at once, either killed at any instant): atomic read-modify-write and no lost commits.
SQLite in WAL mode gives both; this module holds the connection discipline so that the bus
module only states Service Bus semantics.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redisflush.bus import BusError

BUSY_TIMEOUT_SECONDS = 10.0


class _ThreadConnection:
    """Holds one thread's connection; weak-referenceable (sqlite3.Connection is not), so a
    finished thread's connection is dropped with its thread-local instead of piling up."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


class SqliteFile:
    """One connection per thread to a WAL-mode SQLite file, with BEGIN IMMEDIATE transactions.

    Every sqlite3 failure (locked beyond the busy timeout, disk full, not a database) comes
    out as BusError naming the file, because to the caller it is the bus that failed.
    """

    def __init__(self, path: str | os.PathLike[str], schema: str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._holders: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._holders_lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BusError(f"local bus file {self.path}: cannot create its folder: {exc}") from exc
        with self.transaction() as db:
            for statement in schema.split(";"):
                if statement.strip():
                    db.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                               check_same_thread=False)  # close() may run on another thread
        try:
            conn.row_factory = sqlite3.Row
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"WAL journal mode unavailable (got {mode!r})")
            # NORMAL in WAL: a commit is in the WAL (OS page cache) before execute returns, so a
            # killed *process* loses nothing; only an OS crash or power cut could drop the last
            # transactions. The local bus accepts that for a send that costs no fsync.
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        if self._closed:
            raise BusError(f"local bus file {self.path}: closed")
        holder: _ThreadConnection | None = getattr(self._local, "holder", None)
        if holder is None:
            try:
                holder = _ThreadConnection(self._connect())
            except sqlite3.Error as exc:
                raise BusError(f"local bus file {self.path}: cannot open: {exc}") from exc
            self._local.holder = holder
            with self._holders_lock:
                self._holders.add(holder)
        return holder.conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front, so a read followed by a
        write (receive) is atomic against every other process; rolled back on any error."""
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise BusError(f"local bus file {self.path}: cannot begin: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error says more
            if isinstance(exc, sqlite3.Error):
                raise BusError(f"local bus file {self.path}: {exc}") from exc
            raise

    def write(self, statement: str, parameters: tuple[object, ...]) -> int:
        """One write statement on its own (atomic by itself, so no BEGIN ... COMMIT around
        it): the number of rows it changed."""
        conn = self.connection()
        try:
            return conn.execute(statement, parameters).rowcount
        except sqlite3.Error as exc:
            raise BusError(f"local bus file {self.path}: {exc}") from exc

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read outside a transaction (one statement is one consistent snapshot)."""
        try:
            yield self.connection()
        except sqlite3.Error as exc:
            raise BusError(f"local bus file {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close every thread's connection; later use raises BusError."""
        self._closed = True
        with self._holders_lock:
            holders = list(self._holders)
            self._holders.clear()
        for holder in holders:
            holder.conn.close()
