"""The request ledger port: what makes "one flush per target per request" hold when Service
Bus redelivers (docs/design.md, "Request ledger").

One row per (requestId, key): key "" is the request itself (which targets it names, whether
it ended); any other key is one target (its lower-cased resource id) with the state of its
POST. Every write is conditional, so two invocations racing on one request cannot both POST:
`insert` fails when the row exists, `update` fails when the row changed since it was read.

Adapters: `MemoryLedger` (unit tests), `SqliteLedger` (the local default,
`redisflush.local.ledger`), `TableLedger` (Azure Table storage, `redisflush.ledger_tables`).
All of them pass tests/contract/test_ledger_contract.py.
"""
from __future__ import annotations

import datetime as dt
import itertools
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Protocol

from .errors import RedisFlushError

REQUEST_KEY = ""
MAX_DATA_CHARS = 30_000  # Table storage: a string property holds at most 32 K characters


class LedgerError(RedisFlushError):
    """The ledger's storage failed: the step must not go on (raise, so the host redelivers)."""


@dataclass(frozen=True)
class LedgerRow:
    """One row. `data` is small JSON-able state (at most MAX_DATA_CHARS once serialised);
    `etag` is the adapter's version stamp, '' on a row not yet stored."""

    request_id: str
    key: str
    state: str
    data: Mapping[str, Any] = field(default_factory=dict)
    posts: int = 0
    updated_at: dt.datetime = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    expires_at: dt.datetime = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    etag: str = ""


class Ledger(Protocol):
    """Conditional writes on (request_id, key) rows; every storage failure is LedgerError."""

    def insert(self, row: LedgerRow) -> LedgerRow | None:
        """Store a new row; the stored row (with its etag), or None when the key exists."""

    def update(self, row: LedgerRow) -> LedgerRow | None:
        """Replace the row if its etag is still current; the stored row, or None when another
        writer changed (or removed) it since `row` was read."""

    def get(self, request_id: str, key: str) -> LedgerRow | None:
        """The row, or None."""

    def rows(self, request_id: str) -> list[LedgerRow]:
        """Every row of one request, the request row first, then by key."""

    def purge(self, now: dt.datetime) -> int:
        """Delete rows whose expires_at has passed; how many went."""


class MemoryLedger:
    """The in-memory Ledger: for unit tests and replay tests (same rules as the real ones)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], LedgerRow] = {}
        self._lock = threading.Lock()
        self._etags = itertools.count(1)

    def _stamp(self, row: LedgerRow) -> LedgerRow:
        stored = replace(row, data=dict(row.data), etag=str(next(self._etags)))
        self._rows[(row.request_id, row.key)] = stored
        return stored

    def insert(self, row: LedgerRow) -> LedgerRow | None:
        with self._lock:
            if (row.request_id, row.key) in self._rows:
                return None
            return self._stamp(row)

    def update(self, row: LedgerRow) -> LedgerRow | None:
        with self._lock:
            current = self._rows.get((row.request_id, row.key))
            if current is None or current.etag != row.etag:
                return None
            return self._stamp(row)

    def get(self, request_id: str, key: str) -> LedgerRow | None:
        with self._lock:
            return self._rows.get((request_id, key))

    def rows(self, request_id: str) -> list[LedgerRow]:
        with self._lock:
            found = [r for (rid, _), r in self._rows.items() if rid == request_id]
        return sorted(found, key=lambda r: (r.key != REQUEST_KEY, r.key))

    def purge(self, now: dt.datetime) -> int:
        with self._lock:
            gone = [k for k, r in self._rows.items() if r.expires_at <= now]
            for k in gone:
                del self._rows[k]
            return len(gone)
