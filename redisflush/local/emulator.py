"""ARM emulator: a loopback HTTP server playing Azure Resource Manager for the flush of Azure
Cache for Redis and Azure Managed Redis databases, and the list APIs selectors read.

This module holds the server's lifecycle, its request accounting and the admin routes under
`/_emulator/` (no token, not throttled):

- `GET /_emulator/health`, `GET /_emulator/stats`, `GET|PUT /_emulator/config`
- `GET|PUT /_emulator/keys/{cache}` and, for a Managed Redis database,
  `/_emulator/keys/{cluster}/{db}` (or `{cluster}%2F{db}`): `{"count": n}`
- `GET|PUT /_emulator/load`: `PUT {"subscriptionId": ..., "readsPerSecond": 12.5}` makes a
  second client spend that subscription's read budget (0 stops it); answers
  `{"loads": {sub: {"readsPerSecond": ..., "readsTaken": ...}}}`

What the ARM routes answer is `emulator_arm` (front door, classic Redis), `emulator_enterprise`
and `emulator_lists`; the HTTP plumbing is `emulator_http`; the config is `emulator_config`;
keys are `keystore`, operations `emulator_operations`. Time comes from a `Clock`
(`emulator_clock`), so tests can move it with a `FakeClock`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from .emulator_arm import ArmRoutes
from .emulator_clock import SYSTEM_CLOCK, Clock
from .emulator_clusters import database_key
from .emulator_config import EmulatorConfig, load_config
from .emulator_http import (
    EmulatorHandler,
    EmulatorServer,
    Reply,
    error_reply,
    read_body,
    write_reply,
)
from .emulator_operations import OperationBook
from .keystore import KeyStore, MemoryKeyStore

__all__ = ["ArmEmulator", "EmulatorConfig", "load_config"]
log = logging.getLogger("redisflush.emulator")

_SWEEP_SECONDS, _SWEEP_MAX_SECONDS = 0.05, 2.0
_KEYS = re.compile(r"^/_emulator/keys/([^/]+)(?:/([^/]+))?$")


class ArmEmulator:
    """`with ArmEmulator(cfg).start() as arm: ... arm.url ...`"""

    def __init__(self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, keystore: KeyStore | None = None, state_path: str | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if host != "localhost" and not host.startswith("127."):
            raise ValueError("host: the emulator listens on loopback only (127.x.x.x or localhost)")
        self.config = config or EmulatorConfig()
        self.keystore: KeyStore = keystore if keystore is not None else MemoryKeyStore()
        self._host, self._port = host, port
        self.clock = clock
        self._book = OperationBook(self.keystore, state_path, clock)
        self._lock = self._book.lock
        self._totals = dict.fromkeys(("requests", "posts", "polls", "lists", "databaseGets",
                                      "throttled", "throttledEarly", "maxConcurrent"), 0)
        self._inflight = 0
        self._arm = ArmRoutes(self._book, self.keystore, self._totals)
        self._server: EmulatorServer | None = None
        self._stop = threading.Event()
        self._stop_requested = False

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> ArmEmulator:
        if self._server is None:
            self._server = EmulatorServer((self._host, self._port), self._serve)
            self._port = self._server.server_address[1]
            self._stop.clear()
            server = self._server
            for target in (lambda: server.serve_forever(poll_interval=0.05), self._sweep_loop):
                threading.Thread(target=target, name="arm-emulator", daemon=True).start()
            log.info("ARM emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving (the operations stay; `start()` again to continue them)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            for conn in list(self._server.connections):   # kept-alive connections end too
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._server = None

    def close(self) -> None:
        """Stop and release the state file."""
        self.stop()
        self._book.close()

    def _sweep_loop(self) -> None:
        """Settle due operations every 50 ms; while flushes fail (a Redis that went away),
        back off up to 2 s between tries instead of hammering it."""
        wait = _SWEEP_SECONDS
        while not self._stop.wait(wait):
            try:
                ok = self._book.sweep()
            except Exception:  # noqa: BLE001 - the sweep thread must outlive any one error
                log.exception("emulator sweep failed")
                ok = False
            wait = _SWEEP_SECONDS if ok else min(_SWEEP_MAX_SECONDS, wait * 2)

    def __enter__(self) -> ArmEmulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def serve_forever(self) -> None:
        """Serve until `request_stop()` (returns) or Ctrl-C (KeyboardInterrupt propagates, so
        `emulator` exits 130 as its --help says); either way the server shuts down first."""
        self.start()
        try:
            while not (self._stop_requested or self._stop.wait(0.2)):
                pass
        finally:
            self.stop()

    def request_stop(self) -> None:
        """Make `serve_forever` stop and return. Safe from a signal handler: it only sets a
        flag (`Event.set` there could wait on the lock the interrupted `wait` holds)."""
        self._stop_requested = True

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def set_config(self, config: EmulatorConfig) -> None:
        with self._lock:
            self.config = config
            self._arm.reset_throttling()

    def stats(self) -> dict[str, Any]:
        self._book.sweep()
        with self._lock:
            caches = {n: {k: c[k] for k in ("posts", "accepted", "flushes", "polls")}
                      for n, c in self._book.caches.items()}
            databases = {n: {k: c[k] for k in ("posts", "accepted", "flushes", "polls", "gets")}
                         for n, c in self._book.databases.items()}
            return {**self._totals, "caches": caches, "databases": databases,
                    "loads": self._arm.throttle.loads(self.config.read_load)}

    # ---- HTTP ------------------------------------------------------------------------------
    def _serve(self, h: EmulatorHandler, method: str) -> None:
        parts = urlsplit(h.path)
        body = read_body(h)
        with self._lock:
            self._totals["requests"] += 1
            self._inflight += 1
            self._totals["maxConcurrent"] = max(self._totals["maxConcurrent"], self._inflight)
        try:
            try:
                reply = self._route(method, parts.path, parts.query, h.headers, body)
            except Exception as exc:  # noqa: BLE001 - answer like ARM would, log the rest
                log.exception("emulator error on %s %s", method, parts.path)
                reply = error_reply(500, "InternalServerError",
                                    f"Emulator error: {type(exc).__name__}")
            if reply.status == 429:
                with self._lock:
                    self._totals["throttled"] += 1
            if reply.delay > 0:
                time.sleep(reply.delay)   # `latency`: no lock held
            write_reply(h, reply)
            log.info("%s %s -> %d", method, parts.path, reply.status)
        finally:
            with self._lock:
                self._inflight -= 1

    def _route(self, method: str, path: str, query: str, headers: Any, body: bytes) -> Reply:
        if path.startswith("/_emulator/"):
            return self._admin(method, path, body)
        return self._arm.route(self.config, self.url, method, path, query, headers, body)

    # ---- admin -----------------------------------------------------------------------------
    def _admin(self, method: str, path: str, body: bytes) -> Reply:
        keys = _KEYS.match(path)
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return error_reply(400, "InvalidJson", "The request body must be JSON.")
        if path == "/_emulator/health" and method == "GET":
            return Reply(200, {"status": "ok", "url": self.url})
        if path == "/_emulator/stats" and method == "GET":
            return Reply(200, self.stats())
        if path == "/_emulator/config" and method in ("GET", "PUT"):
            if method == "PUT":
                try:
                    self.set_config(EmulatorConfig.from_dict(data))
                except ValueError as exc:
                    return error_reply(400, "InvalidConfig", str(exc))
            return Reply(200, self.config.to_dict())
        if path == "/_emulator/load" and method in ("GET", "PUT"):
            return self._load(method, data)
        if keys and method in ("GET", "PUT"):
            cache, db = keys.groups()
            return self._keys(method, unquote(cache) + (f"/{unquote(db)}" if db else ""), data)
        return error_reply(404, "NotFound", f"No emulator admin route {method} {path}.")

    def _keys(self, method: str, name: str, data: Any) -> Reply:
        """A cache's keys, or a database's when `name` is `cluster/db`."""
        if "/" in name:
            cluster, _, db = name.partition("/")
            if not cluster or not db or "/" in db:
                return error_reply(400, "InvalidName",
                                   "name: must be a cache name or 'cluster/database'")
            beh, key = self.config.database_behaviour(cluster, db), database_key(cluster, db)
        else:
            beh, key = self.config.behaviour_for(name), name
        db_index = beh.redis_db if beh else None
        if method == "PUT":
            n = data.get("count") if isinstance(data, dict) else None
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 10_000_000:
                return error_reply(400, "InvalidCount",
                                   "count: must be an integer from 0 to 10000000")
            self.keystore.seed(key, n, db=db_index)
        else:
            self._book.sweep()
        return Reply(200, {"count": self.keystore.count(key, db=db_index)})

    def set_load(self, subscription_id: str, reads_per_second: float) -> None:
        """A second client spending `reads_per_second` of the subscription's read budget
        (0: none); it wins over the config's `readLoad` and outlives config changes."""
        with self._lock:
            self._arm.throttle.set_load(self.config.read_load, subscription_id,
                                        float(reads_per_second))

    def _load(self, method: str, data: Any) -> Reply:
        if method == "PUT":
            sub = data.get("subscriptionId") if isinstance(data, dict) else None
            rate = data.get("readsPerSecond") if isinstance(data, dict) else None
            if not isinstance(sub, str) or not sub or "/" in sub:
                return error_reply(400, "InvalidLoad", "subscriptionId: must be a subscription id")
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1e6:
                return error_reply(400, "InvalidLoad",
                                   "readsPerSecond: must be a number from 0 to 1000000")
            self.set_load(sub, rate)
        with self._lock:
            return Reply(200, {"loads": self._arm.throttle.loads(self.config.read_load)})
