"""The ARM emulator's operations: each accepted flush, the signed URLs it is polled through, and
the per-cache and per-database counters, optionally in a SQLite `StateFile` so that an emulator
restarted with the same file continues the same operations.

An operation is over `duration` seconds after it was accepted (wall clock, so it survives a
restart); a Succeeded one then deletes its keys exactly once, polled or not: the classic cache's,
or the Managed Redis database's and those of the linked databases its POST named (`also`).
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
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ..logtext import printable
from .emulator_behaviour import Behaviour, behaviour_from_dict
from .emulator_clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from .keystore import KeyStore

log = logging.getLogger("redisflush.emulator")
CLASSIC, ENTERPRISE = "redis", "redisEnterprise"
_CACHE_COUNTERS = ("posts", "accepted", "flushes", "polls")
_DATABASE_COUNTERS = ("posts", "accepted", "flushes", "polls", "gets")


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
        """The HMAC key for operation URLs and skiptokens, created once and kept in the file."""
        row = self._cx.execute("SELECT v FROM meta WHERE k='hmac'").fetchone()
        if row:
            return bytes.fromhex(row[0])
        key = secrets.token_bytes(32)
        self._cx.execute("INSERT OR IGNORE INTO meta VALUES('hmac', ?)", (key.hex(),))
        return bytes.fromhex(self._cx.execute("SELECT v FROM meta WHERE k='hmac'").fetchone()[0])

    def save_op(self, op_id: str, data: dict[str, Any]) -> None:
        self._cx.execute("INSERT OR REPLACE INTO ops VALUES(?, ?)", (op_id, json.dumps(data)))

    def save_cache(self, name: str, data: dict[str, Any]) -> None:
        """A cache's or (name `cluster/db`) a database's counters."""
        self._cx.execute("INSERT OR REPLACE INTO caches VALUES(?, ?)", (name, json.dumps(data)))

    def ops(self) -> list[tuple[str, dict[str, Any]]]:
        return [(i, json.loads(d)) for i, d in self._cx.execute("SELECT id, data FROM ops")]

    def caches(self) -> list[tuple[str, dict[str, Any]]]:
        return [(n, json.loads(d)) for n, d in self._cx.execute("SELECT name, data FROM caches")]

    def close(self) -> None:
        self._cx.close()


@dataclass(eq=False)
class Operation:
    """One accepted flush. `cache` is the classic cache's name, or `cluster/db` for a Managed
    Redis database (`kind` ENTERPRISE), as the POST named it. `accepted_at` is wall-clock time."""

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
    kind: str = CLASSIC
    location: str = ""                               # the region in its URLs
    # the linked databases a success flushes too: (key namespace, redisDb)
    also: list[tuple[str, int | None]] = field(default_factory=list)

    def targets(self) -> list[tuple[str, int | None]]:
        """Whose keys a success deletes, each once: its own, then the linked databases'."""
        out: dict[str, int | None] = {self.cache.lower(): self.beh.redis_db}
        for key, db in self.also:
            out.setdefault(key.lower(), db)
        return list(out.items())

    def record(self) -> dict[str, Any]:
        return {"sub": self.sub, "rg": self.rg, "cache": self.cache, "api": self.api,
                "acceptedAt": self.accepted_at, "behaviour": self.beh.to_dict(),
                "polls": self.polls, "flushed": self.flushed, "moved": self.moved,
                "main": self.id, "kind": self.kind, "location": self.location,
                "also": [list(t) for t in self.also]}


def _signed_params(rec: dict[str, Any]) -> tuple[str, str, str, str]:
    if "params" in rec:
        api, t, c, s = rec["params"]
    else:   # state files written before `params`
        q = parse_qs(rec["query"])
        api, t, c, s = (q[k][0] for k in ("api-version", "t", "c", "s"))
    return str(api), str(t), str(c), str(s)


def _random(n: int) -> str:
    return secrets.token_urlsafe(n)[:n]


class OperationBook:
    """Operations, the signed parameters of their URLs and the counters. Hold `lock` to read or
    change them (never while sleeping or flushing)."""

    def __init__(self, keystore: KeyStore, state_path: str | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.keystore, self.clock = keystore, clock
        self.lock = threading.Lock()
        self.ops: dict[str, Operation] = {}        # URL id (moves too) -> operation
        self.params: dict[str, tuple[str, str, str, str]] = {}   # URL id -> api-version, t, c, s
        self.caches: dict[str, dict[str, Any]] = {}
        self.databases: dict[str, dict[str, Any]] = {}
        self._failing = False                      # the last sweep's flush failed
        self._file = StateFile(state_path) if state_path else None
        self._secret = self._file.secret() if self._file else secrets.token_bytes(32)
        if self._file:
            for name, data in self._file.caches():
                self.counters(name).update(data)
            for op_id, rec in sorted(self._file.ops(), key=lambda r: r[0] != r[1]["main"]):
                op = self.ops.get(rec["main"]) or Operation(
                    rec["main"], rec["sub"], rec["rg"], rec["cache"], rec["api"],
                    rec["acceptedAt"], behaviour_from_dict(rec["behaviour"]), rec["polls"],
                    rec["flushed"], rec["moved"],
                    kind=rec.get("kind", CLASSIC), location=rec.get("location", ""),
                    also=[(k, d) for k, d in rec.get("also", [])])
                self.ops[op_id], self.params[op_id] = op, _signed_params(rec)
                op.ids.append(op_id)

    def counters(self, name: str) -> dict[str, Any]:
        """A classic cache's counters, or a database's when `name` is `cluster/db`."""
        book, names = ((self.databases, _DATABASE_COUNTERS) if "/" in name
                       else (self.caches, _CACHE_COUNTERS))
        return book.setdefault(name.lower(), {**dict.fromkeys(names, 0), "firstSeen": None})

    def save(self, op: Operation | None = None, cache: str | None = None) -> None:
        """Persist an operation and/or a cache's or database's counters (no-op without a file)."""
        if self._file is None:
            return
        for op_id in op.ids if op else ():
            self._file.save_op(op_id, {**op.record(), "params": list(self.params[op_id])})  # type: ignore[union-attr]
        if cache is not None:
            self._file.save_cache(cache.lower(), self.counters(cache))

    # ---- signed URLs -----------------------------------------------------------------------
    def mac(self, op_id: str, scope: str, api: str, t: str, c: str, s: str) -> str:
        """HMAC of a URL: `scope` is what the path says besides the id (for a classic URL, its
        location segment as sent), so a URL only verifies on the path it was made for."""
        msg = "\n".join((op_id.lower(), scope, api, t, c, s)).encode()
        digest = hmac.new(self._secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, text: str) -> str:
        """An HMAC of `text` with the URL key (list skiptokens)."""
        digest = hmac.new(self._secret, b"skiptoken\n" + text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def verify(self, op_id: str, scope: str, params: dict[str, list[str]]) -> bool:
        """The URL's signed parameters are all there and sign this id + scope."""
        got = {k: (params.get(k) or [""])[0] for k in ("api-version", "t", "c", "s", "h")}
        expected = self.mac(op_id, scope, got["api-version"], got["t"], got["c"], got["s"])
        return all(got.values()) and hmac.compare_digest(got["h"].encode(), expected.encode())

    def add_url(self, op: Operation, signed_bytes: int) -> str:
        """Register a new URL id for `op` (its own id first) with fresh signed parameters sized
        like ARM's (`signedUrlBytes`); call under `lock`."""
        op_id = op.id if op.id not in self.ops else str(uuid.uuid4())
        room = max(24, signed_bytes - 43 - 12)   # t, c, s + h (43) + '&t=&c=&s=&h=' ~ signed_bytes
        t = str(int(self.clock.time() * 1000)) + _random(max(0, room // 8 - 13))
        c = _random(room * 5 // 8)
        s = _random(room - len(t) - len(c))
        self.params[op_id] = (op.api, t, c, s)
        self.ops[op_id] = op
        op.ids.append(op_id)
        return op_id

    def query(self, op_id: str, scope: str) -> str:
        """The signed query string of URL id `op_id` on the path `scope` names."""
        api, t, c, s = self.params[op_id]
        return f"api-version={api}&t={t}&c={c}&s={s}&h={self.mac(op_id, scope, api, t, c, s)}"

    # ---- flushing --------------------------------------------------------------------------
    def flush_now(self, targets: list[tuple[str, int | None]]) -> None:
        """Delete the keys of each (name, redisDb) and count a flush for each (without `lock`)."""
        for name, db in targets:
            self.keystore.flush(name, db=db)
        with self.lock:
            for name, _ in targets:
                self.counters(name)["flushes"] += 1
                self.save(None, name)

    def settle(self, op: Operation) -> bool:
        """True when the operation is over; a Succeeded one flushes its targets exactly once."""
        if self.clock.time() - op.accepted_at < op.beh.duration:
            return False
        if op.beh.outcome == "Succeeded" and not op.flushed:
            with op.lock:
                if not op.flushed:
                    for name, db in op.targets():
                        self.keystore.flush(name, db=db)
                    with self.lock:
                        op.flushed = True
                        for name, _ in op.targets():
                            self.counters(name)["flushes"] += 1
                            self.save(None, name)
                        self.save(op)
        return True

    def sweep(self) -> bool:
        """Settle every due operation (keys vanish when the operation succeeds, polled or not);
        False when a flush failed (the key store, e.g. a `--redis-url` Redis that went away).

        The sweep runs every 50 ms: a failing store is logged in one line when flushes start
        failing and once when they work again, never a traceback per sweep (README, "Local
        mode": the ARM emulator deletes a cache's keys in a real Redis with `--redis-url`)."""
        with self.lock:
            pending = {o for o in self.ops.values()
                       if not o.flushed and o.beh.outcome == "Succeeded"}
        failed = False
        for op in pending:
            try:
                self.settle(op)
            except Exception as exc:  # noqa: BLE001 - keep sweeping; a poll will surface it
                failed = True
                self._flush_failed(op.cache, exc)
        if pending and not failed:
            self._flush_worked()
        return not failed

    def _flush_failed(self, cache: str, exc: Exception) -> None:
        with self.lock:
            first, self._failing = not self._failing, True
        text = printable(f"{type(exc).__name__}: {exc}", 300)
        if first:
            log.error("flush of %s failed: %s (retrying with back-off; logged again when a "
                      "flush works)", cache, text)
        else:
            log.debug("flush of %s failed again: %s", cache, text)

    def _flush_worked(self) -> None:
        with self.lock:
            recovered, self._failing = self._failing, False
        if recovered:
            log.warning("flushes work again")

    def close(self) -> None:
        if self._file is not None:
            with self.lock:
                self._file.close()
                self._file = None
