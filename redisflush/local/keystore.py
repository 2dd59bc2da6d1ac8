"""The ARM emulator's state: the caches' keys, its operations and their signed URLs.

`KeyStore` is what a flush deletes. `MemoryKeyStore` keeps only counts; `RedisKeyStore` backs
every cache with real keys in a Redis database (`redisflush:{cache}:*`, or a whole dedicated
database when a cache's behaviour sets `redisDb`). `OperationBook` holds the operations, the
HMAC key of their URLs and per-cache counters, optionally in a SQLite `StateFile` so that an
emulator restarted with the same file continues the same operations.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol
from urllib.parse import quote

from .emulator_config import Behaviour, behaviour_from_dict

log = logging.getLogger("redisflush.emulator")

KEY_PREFIX = "redisflush:{cache}:"
_SEED_CHUNK = 1000


class KeyStore(Protocol):
    """The keys of each emulated cache. Cache names are compared case-insensitively."""

    def seed(self, cache: str, n: int, *, db: int | None = None) -> None:
        """Replace the cache's keys with `n` fresh ones."""

    def count(self, cache: str, *, db: int | None = None) -> int:
        """How many keys the cache holds."""

    def flush(self, cache: str, *, db: int | None = None) -> int:
        """Delete all of the cache's keys; returns how many were deleted (best effort)."""


class MemoryKeyStore:
    """Thread-safe in-memory key counts (the default: no Redis needed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def seed(self, cache: str, n: int, *, db: int | None = None) -> None:
        if n < 0:
            raise ValueError("count: must be an integer >= 0")
        with self._lock:
            self._counts[cache.lower()] = n

    def count(self, cache: str, *, db: int | None = None) -> int:
        with self._lock:
            return self._counts.get(cache.lower(), 0)

    def flush(self, cache: str, *, db: int | None = None) -> int:
        with self._lock:
            return self._counts.pop(cache.lower(), 0)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisKeyStore:
    """Keys in a real Redis: `redisflush:{cache}:{i}` in the URL's database, or all of
    database `db` when the cache's behaviour dedicates one to it (flush = FLUSHDB)."""

    def __init__(self, url: str) -> None:
        import redis  # only needed when a Redis URL is configured

        self.url = url
        self._redis = redis
        self._lock = threading.Lock()
        self._clients: dict[int | None, Any] = {None: redis.Redis.from_url(url)}

    def _client(self, db: int | None) -> Any:
        with self._lock:
            if db not in self._clients:
                self._clients[db] = self._redis.Redis.from_url(self.url, db=db)
            return self._clients[db]

    @staticmethod
    def prefix(cache: str) -> str:
        return KEY_PREFIX.format(cache=cache.lower())

    def _keys(self, cache: str, db: int | None) -> Iterator[bytes]:
        match = _glob_escape(self.prefix(cache)) + "*"
        return self._client(db).scan_iter(match=match, count=1000)

    def seed(self, cache: str, n: int, *, db: int | None = None) -> None:
        if n < 0:
            raise ValueError("count: must be an integer >= 0")
        self.flush(cache, db=db)
        client, prefix = self._client(db), self.prefix(cache)
        for start in range(0, n, _SEED_CHUNK):
            stop = min(n, start + _SEED_CHUNK)
            client.mset({f"{prefix}{i}": b"1" for i in range(start, stop)})

    def count(self, cache: str, *, db: int | None = None) -> int:
        if db is not None:
            return int(self._client(db).dbsize())
        return sum(1 for _ in self._keys(cache, None))

    def flush(self, cache: str, *, db: int | None = None) -> int:
        client = self._client(db)
        if db is not None:
            n = int(client.dbsize())
            client.flushdb()
            return n
        deleted, batch = 0, []
        for key in self._keys(cache, None):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(client.unlink(*batch))
        return deleted

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()


def make_keystore(redis_url: str | None) -> KeyStore:
    """A `RedisKeyStore` for a Redis URL, else a `MemoryKeyStore`."""
    return RedisKeyStore(redis_url) if redis_url else MemoryKeyStore()


class StateFile:
    """The emulator's SQLite state file. Callers serialize access (the emulator's lock)."""

    def __init__(self, path: str) -> None:
        self._cx = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._cx.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
            "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS ops(id TEXT PRIMARY KEY, data TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS caches(name TEXT PRIMARY KEY, data TEXT NOT NULL);"
        )

    def secret(self) -> bytes:
        """The HMAC key for operation URLs, created once and kept in the file."""
        row = self._cx.execute("SELECT v FROM meta WHERE k='hmac'").fetchone()
        if row:
            return bytes.fromhex(row[0])
        key = secrets.token_bytes(32)
        self._cx.execute("INSERT OR IGNORE INTO meta VALUES('hmac', ?)", (key.hex(),))
        return bytes.fromhex(self._cx.execute("SELECT v FROM meta WHERE k='hmac'").fetchone()[0])

    def save_op(self, op_id: str, data: dict[str, Any]) -> None:
        self._cx.execute("INSERT OR REPLACE INTO ops VALUES(?, ?)", (op_id, json.dumps(data)))

    def save_cache(self, name: str, data: dict[str, Any]) -> None:
        self._cx.execute("INSERT OR REPLACE INTO caches VALUES(?, ?)", (name, json.dumps(data)))

    def ops(self) -> list[tuple[str, dict[str, Any]]]:
        return [(i, json.loads(d)) for i, d in self._cx.execute("SELECT id, data FROM ops")]

    def caches(self) -> list[tuple[str, dict[str, Any]]]:
        return [(n, json.loads(d)) for n, d in self._cx.execute("SELECT name, data FROM caches")]

    def close(self) -> None:
        self._cx.close()


@dataclass(eq=False)
class Operation:
    """One accepted flush. `accepted_at` is wall-clock time, so it survives a restart."""

    id: str
    sub: str
    rg: str
    cache: str
    api: str
    accepted_at: float
    beh: Behaviour
    polls: int = 0
    flushed: bool = False
    moved: bool = False
    ids: list[str] = field(default_factory=list)   # its operation URL ids: the first, then moves
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self) -> dict[str, Any]:
        return {"sub": self.sub, "rg": self.rg, "cache": self.cache, "api": self.api,
                "acceptedAt": self.accepted_at, "behaviour": self.beh.to_dict(), "polls": self.polls,
                "flushed": self.flushed, "moved": self.moved, "main": self.id}


class OperationBook:
    """Operations, their signed URL queries and per-cache counters. Hold `lock` to read or
    change them (never while sleeping or flushing)."""

    def __init__(self, keystore: KeyStore, state_path: str | None = None) -> None:
        self.keystore = keystore
        self.lock = threading.Lock()
        self.ops: dict[str, Operation] = {}        # URL id (moves too) -> operation
        self.queries: dict[str, str] = {}          # URL id -> its query string
        self.caches: dict[str, dict[str, Any]] = {}
        self._file = StateFile(state_path) if state_path else None
        self._secret = self._file.secret() if self._file else secrets.token_bytes(32)
        if self._file:
            for name, data in self._file.caches():
                self.counters(name).update(data)
            for op_id, rec in sorted(self._file.ops(), key=lambda r: r[0] != r[1]["main"]):
                op = self.ops.get(rec["main"]) or Operation(
                    rec["main"], rec["sub"], rec["rg"], rec["cache"], rec["api"], rec["acceptedAt"],
                    behaviour_from_dict(rec["behaviour"]), rec["polls"], rec["flushed"], rec["moved"])
                self.ops[op_id], self.queries[op_id] = op, rec["query"]
                op.ids.append(op_id)

    def counters(self, cache: str) -> dict[str, Any]:
        return self.caches.setdefault(cache.lower(), {"posts": 0, "accepted": 0, "flushes": 0, "polls": 0,
                                                      "firstSeen": None})

    def save(self, op: Operation | None = None, cache: str | None = None) -> None:
        """Persist an operation and/or a cache's counters (no-op without a state file)."""
        if self._file is None:
            return
        for op_id in op.ids if op else ():
            self._file.save_op(op_id, {**op.record(), "query": self.queries[op_id]})  # type: ignore[union-attr]
        if cache is not None:
            self._file.save_cache(cache.lower(), self.counters(cache))

    def mac(self, op_id: str, loc: str, api: str, t: str, c: str, s: str) -> str:
        msg = "\n".join((op_id.lower(), loc, api, t, c, s)).encode()
        return base64.urlsafe_b64encode(hmac.new(self._secret, msg, hashlib.sha256).digest()).rstrip(b"=").decode()

    def verify(self, op_id: str, loc: str, params: dict[str, list[str]]) -> bool:
        """The URL's signed parameters are all there and sign this id + raw location segment."""
        got = {k: (params.get(k) or [""])[0] for k in ("api-version", "t", "c", "s", "h")}
        expected = self.mac(op_id, loc, got["api-version"], got["t"], got["c"], got["s"])
        return all(got.values()) and hmac.compare_digest(got["h"].encode(), expected.encode())

    def add_url(self, op: Operation, location: str, signed_bytes: int) -> str:
        """Register a new signed URL id for `op` (its own id first); call under `lock`."""
        op_id = op.id if op.id not in self.ops else str(uuid.uuid4())
        room = max(24, signed_bytes - 43 - 12)   # t, c, s + h (43) + '&t=&c=&s=&h=' ~ signed_bytes
        rnd = lambda n: secrets.token_urlsafe(n)[:n]  # noqa: E731
        t = str(int(time.time() * 1000)) + rnd(max(0, room // 8 - 13))
        c = rnd(room * 5 // 8)
        s = rnd(room - len(t) - len(c))
        h = self.mac(op_id, quote(location, safe=""), op.api, t, c, s)
        self.queries[op_id] = f"api-version={op.api}&t={t}&c={c}&s={s}&h={h}"
        self.ops[op_id] = op
        op.ids.append(op_id)
        return op_id

    def settle(self, op: Operation) -> bool:
        """True when the operation is over; a Succeeded one flushes its cache exactly once."""
        if time.time() - op.accepted_at < op.beh.duration:
            return False
        if op.beh.outcome == "Succeeded" and not op.flushed:
            with op.lock:
                if not op.flushed:
                    self.keystore.flush(op.cache, db=op.beh.redis_db)
                    with self.lock:
                        op.flushed = True
                        self.counters(op.cache)["flushes"] += 1
                        self.save(op, op.cache)
        return True

    def sweep(self) -> None:
        """Settle every due operation (keys vanish when the operation succeeds, polled or not)."""
        with self.lock:
            pending = {o for o in self.ops.values() if not o.flushed and o.beh.outcome == "Succeeded"}
        for op in pending:
            try:
                self.settle(op)
            except Exception:  # noqa: BLE001 - keep sweeping; a poll will surface the error
                log.exception("flush of cache %s failed", op.cache)

    def close(self) -> None:
        if self._file is not None:
            with self.lock:
                self._file.close()
                self._file = None
