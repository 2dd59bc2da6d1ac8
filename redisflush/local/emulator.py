"""ARM emulator: a loopback HTTP server playing Azure Resource Manager for the Redis flush action.

This module holds the server's lifecycle, its request accounting and the admin routes under
`/_emulator/` (no token, not throttled). What the ARM routes answer is `emulator_arm`; the
HTTP plumbing is `emulator_http`; per-cache behaviours are `emulator_config`; keys and
operations are `keystore`.
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
from .emulator_config import EmulatorConfig, load_config
from .emulator_http import EmulatorHandler, EmulatorServer, Reply, error_reply, read_body, write_reply
from .keystore import KeyStore, MemoryKeyStore, OperationBook

__all__ = ["ArmEmulator", "EmulatorConfig", "load_config"]
log = logging.getLogger("redisflush.emulator")

_KEYS = re.compile(r"^/_emulator/keys/([^/]+)$")


class ArmEmulator:
    """`with ArmEmulator(cfg).start() as arm: ... arm.url ...`"""

    def __init__(self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 keystore: KeyStore | None = None, state_path: str | None = None) -> None:
        if host != "localhost" and not host.startswith("127."):
            raise ValueError("host: the emulator listens on loopback only (127.x.x.x or localhost)")
        self.config = config or EmulatorConfig()
        self.keystore: KeyStore = keystore if keystore is not None else MemoryKeyStore()
        self._host, self._port = host, port
        self._book = OperationBook(self.keystore, state_path)
        self._lock = self._book.lock
        self._totals = dict.fromkeys(("requests", "posts", "polls", "throttled", "maxConcurrent"), 0)
        self._inflight = 0
        self._arm = ArmRoutes(self._book, self.keystore, self._totals)
        self._server: EmulatorServer | None = None
        self._stop = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "ArmEmulator":
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
        while not self._stop.wait(0.05):
            self._book.sweep()

    def __enter__(self) -> "ArmEmulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

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
            return {**self._totals, "caches": caches}

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
                reply = error_reply(500, "InternalServerError", f"Emulator error: {type(exc).__name__}")
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
        return self._arm.route(self.config, self.url, method, path, query, headers)

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
        if keys and method in ("GET", "PUT"):
            cache = unquote(keys.group(1))
            beh = self.config.behaviour_for(cache)
            db = beh.redis_db if beh else None
            if method == "PUT":
                n = data.get("count") if isinstance(data, dict) else None
                if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 10_000_000:
                    return error_reply(400, "InvalidCount", "count: must be an integer from 0 to 10000000")
                self.keystore.seed(cache, n, db=db)
            else:
                self._book.sweep()
            return Reply(200, {"count": self.keystore.count(cache, db=db)})
        return error_reply(404, "NotFound", f"No emulator admin route {method} {path}.")
