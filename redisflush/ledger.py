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
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

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
    updated_at: dt.datetime = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    expires_at: dt.datetime = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
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
        """Delete the rows of every request whose rows have all expired (expires_at <= now),
        a whole request or none of it; how many rows went."""


def fits(data: Mapping[str, Any]) -> bool:
    """Whether encode_data takes `data`: JSON, at most MAX_DATA_CHARS once encoded."""
    try:
        encode_data(data)
    except ValueError:
        return False
    return True


def encode_data(data: Mapping[str, Any]) -> str:
    """`data` as the compact JSON every adapter stores. ValueError when it is not JSON-able or
    longer than MAX_DATA_CHARS: a caller's bug, which every adapter (MemoryLedger too)
    refuses alike, so unit tests catch what Table storage would reject. Half a surrogate pair
    (ARM's JSON may escape one) is no UTF-16 (nor UTF-8) text a store takes: it alone is
    stored escaped (6 characters), and decode_data gives the same text back. Escaping all of
    the row would count every other non-ASCII character 6 times too, and a row within the
    limit could pass it."""
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ledger row data is not JSON: {exc}") from exc
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    size = len(text.encode("utf-16-le")) // 2  # Table storage counts UTF-16 code units
    if size > MAX_DATA_CHARS:
        raise ValueError(f"ledger row data is {size} characters as JSON, "
                         f"over MAX_DATA_CHARS ({MAX_DATA_CHARS})")
    return text


# a surrogate code point: json.dumps leaves it as it is, only ever inside a JSON string
_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_data(text: str) -> dict[str, Any]:
    """The inverse of encode_data (a fresh dict, so no caller shares a stored row's state)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("ledger row data is not a JSON object")
    return value


def row_order(row: LedgerRow) -> tuple[bool, str]:
    """The order rows() returns: the request row first, then by key (code point order)."""
    return (row.key != REQUEST_KEY, row.key)


class MemoryLedger:
    """The in-memory Ledger: for unit tests and replay tests (same rules as the real ones).

    `data` goes through encode_data/decode_data like in the stored adapters, so a row that is
    not JSON-able or too long fails here too, and no caller can change a stored row by
    mutating a dict it passed in or got back.
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[LedgerRow, str]] = {}
        self._lock = threading.Lock()
        self._etags = itertools.count(1)

    def _stamp(self, row: LedgerRow, text: str) -> LedgerRow:
        stored = replace(row, data=decode_data(text), etag=str(next(self._etags)))
        self._rows[(row.request_id, row.key)] = (stored, text)
        return stored

    @staticmethod
    def _copy(entry: tuple[LedgerRow, str]) -> LedgerRow:
        return replace(entry[0], data=decode_data(entry[1]))

    def insert(self, row: LedgerRow) -> LedgerRow | None:
        text = encode_data(row.data)
        with self._lock:
            if (row.request_id, row.key) in self._rows:
                return None
            return self._stamp(row, text)

    def update(self, row: LedgerRow) -> LedgerRow | None:
        text = encode_data(row.data)
        with self._lock:
            current = self._rows.get((row.request_id, row.key))
            if current is None or current[0].etag != row.etag:
                return None
            return self._stamp(row, text)

    def get(self, request_id: str, key: str) -> LedgerRow | None:
        with self._lock:
            entry = self._rows.get((request_id, key))
        return None if entry is None else self._copy(entry)

    def rows(self, request_id: str) -> list[LedgerRow]:
        with self._lock:
            found = [self._copy(e) for (rid, _), e in self._rows.items() if rid == request_id]
        return sorted(found, key=row_order)

    def purge(self, now: dt.datetime) -> int:
        with self._lock:
            live = {r.request_id for r, _ in self._rows.values() if r.expires_at > now}
            gone = [k for k, (r, _) in self._rows.items() if r.request_id not in live]
            for k in gone:
                del self._rows[k]
            return len(gone)
