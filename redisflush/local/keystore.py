"""The keys of the emulated caches and databases: what a flush deletes.

`MemoryKeyStore` keeps only counts; `RedisKeyStore` backs every cache with real keys in a Redis
database (`redisflush:{cache}:*`, or a whole dedicated database when a cache's behaviour sets
`redisDb`). A Managed Redis database is addressed by its key namespace `cluster/db` (lower-cased,
`database_key`); classic cache names never hold a `/`. The operations, their signed URLs and
the counters are `emulator_operations` (`OperationBook`, importable from here as before).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ..logtext import printable
from .emulator_clusters import database_key

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
                # from_url(url, db=n) keeps a database the URL names (`redis://h/0`): set it after
                pool = self._redis.ConnectionPool.from_url(self.url)
                kwargs = {**pool.connection_kwargs, "db": db}
                pool.disconnect()
                self._clients[db] = self._redis.Redis(connection_pool=self._redis.ConnectionPool(
                    connection_class=pool.connection_class, **kwargs))
            return self._clients[db]

    @staticmethod
    def prefix(cache: str) -> str:
        return KEY_PREFIX.format(cache=cache.lower())

    def _keys(self, cache: str, db: int | None) -> Iterator[bytes]:
        match = _glob_escape(self.prefix(cache)) + "*"
        keys: Iterator[bytes] = self._client(db).scan_iter(match=match, count=1000)
        return keys

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


PING_SECONDS = 3.0


def _where(url: str) -> str:
    """The URL without its credentials (`redis://:secret@host` must not reach stderr)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    with contextlib.suppress(ValueError):
        netloc += f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{netloc}{parts.path}"


def make_keystore(redis_url: str | None, *, ping_seconds: float = PING_SECONDS) -> KeyStore:
    """A `RedisKeyStore` for a Redis URL, else a `MemoryKeyStore`.

    The server is pinged once, within `ping_seconds`: an unreachable Redis is a bad
    `--redis-url`, refused at start with one line and exit 2 (README, "CLI": exit codes),
    not a server that starts and then fails every flush."""
    if not redis_url:
        return MemoryKeyStore()
    try:
        store = RedisKeyStore(redis_url)
    except ValueError as exc:  # redis-py's URL parser: a usage error, not a traceback
        raise ConfigurationError(f"--redis-url: {printable(str(exc), 200)}") from None
    probe = store._redis.Redis.from_url(redis_url, socket_connect_timeout=ping_seconds,
                                        socket_timeout=ping_seconds)
    try:
        probe.ping()
    except store._redis.RedisError as exc:   # refused, timed out, auth, not Redis at all
        store.close()
        raise ConfigurationError(
            f"--redis-url {printable(_where(redis_url), 200)}: no answer from Redis "
            f"({printable(str(exc) or type(exc).__name__, 200)})") from None
    finally:
        probe.close()
    return store


# The operations moved to their own module; `from .keystore import OperationBook` keeps working.
# Imported last: emulator_operations needs nothing from here at import time.
from .emulator_operations import Operation, OperationBook, StateFile  # noqa: E402

__all__ = ["KEY_PREFIX", "KeyStore", "MemoryKeyStore", "RedisKeyStore", "make_keystore",
           "database_key", "Operation", "OperationBook", "StateFile"]
