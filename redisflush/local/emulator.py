"""ARM emulator: a loopback HTTP server playing Azure Resource Manager for the Redis flush action.

By default it answers exactly like the recorded real traffic (202, empty body, identical
Azure-AsyncOperation/Location URLs with signed query parameters, 202 InProgress polls, 200
Succeeded); per-cache behaviours (`emulator_config`) add everything else ARM may do. Keys
are deleted when an operation succeeds, exactly once (`keystore`). Admin routes live
under `/_emulator/` (no token, not throttled).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import http.server
import json
import logging
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .emulator_config import Behaviour, EmulatorConfig, TokenBucket, load_config
from .keystore import KeyStore, MemoryKeyStore, Operation, OperationBook

__all__ = ["ArmEmulator", "EmulatorConfig", "load_config"]
log = logging.getLogger("redisflush.emulator")

_FLUSH = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Cache/redis/([^/]+)/flush/?$", re.I)
_OPERATION = re.compile(r"^/subscriptions/([^/]+)/providers/Microsoft\.Cache/locations/([^/]+)/operationresults/([^/]+)/?$", re.I)
_KEYS = re.compile(r"^/_emulator/keys/([^/]+)$")
_CODES = {400: "BadRequest", 401: "Unauthorized", 403: "AuthorizationFailed", 404: "NotFound",
          408: "RequestTimeout", 409: "Conflict", 429: "TooManyRequests", 500: "InternalServerError",
          502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
_NOT_JSON = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@dataclass
class _Reply:
    status: int
    body: Any = None                      # dict -> JSON; bytes verbatim; None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def _error(status: int, code: str, message: str, **headers: str) -> _Reply:
    return _Reply(status, {"error": {"code": code, "message": message}}, dict(headers))


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms per answer with a body, which real ARM does not add).
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return "ArmEmulator/1.0"

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.connections.discard(self.connection)  # type: ignore[attr-defined]
        super().finish()

    def do_GET(self) -> None:
        self.server.emulator._serve(self, self.command)  # type: ignore[attr-defined]

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # one line per request is ours
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    connections: set[socket.socket]

    def handle_error(self, request: Any, client_address: Any) -> None:  # e.g. client went away
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


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
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._server: _Server | None = None
        self._stop = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "ArmEmulator":
        if self._server is None:
            self._server = _Server((self._host, self._port), _Handler)
            self._server.connections = set()
            self._server.emulator = self  # type: ignore[attr-defined]
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
            self.config, self._buckets = config, {}

    def stats(self) -> dict[str, Any]:
        self._book.sweep()
        with self._lock:
            caches = {n: {k: c[k] for k in ("posts", "accepted", "flushes", "polls")}
                      for n, c in self._book.caches.items()}
            return {**self._totals, "caches": caches}

    # ---- HTTP ------------------------------------------------------------------------------
    def _serve(self, h: _Handler, method: str) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length > 0 else b""
        with self._lock:
            self._totals["requests"] += 1
            self._inflight += 1
            self._totals["maxConcurrent"] = max(self._totals["maxConcurrent"], self._inflight)
        try:
            try:
                reply = self._route(method, parts.path, parts.query, h.headers, body)
            except Exception as exc:  # noqa: BLE001 - answer like ARM would, log the rest
                log.exception("emulator error on %s %s", method, parts.path)
                reply = _error(500, "InternalServerError", f"Emulator error: {type(exc).__name__}")
            if reply.status == 429:
                with self._lock:
                    self._totals["throttled"] += 1
            if reply.delay > 0:
                time.sleep(reply.delay)   # `latency`: no lock held
            payload = reply.body if isinstance(reply.body, bytes) else (
                b"" if reply.body is None else json.dumps(reply.body).encode())
            rid, client_rid = str(uuid.uuid4()), h.headers.get("x-ms-client-request-id")
            headers = {"x-ms-request-id": rid,
                       "x-ms-correlation-request-id": h.headers.get("x-ms-correlation-request-id") or rid,
                       **({"x-ms-client-request-id": client_rid} if client_rid else {}),
                       **({"Content-Type": "application/json; charset=utf-8"} if payload else {}),
                       **reply.headers, "Content-Length": str(len(payload))}
            h.send_response(reply.status)
            for name, value in headers.items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(payload)
            log.info("%s %s -> %d", method, parts.path, reply.status)
        finally:
            with self._lock:
                self._inflight -= 1

    def _route(self, method: str, path: str, query: str, headers: Any, body: bytes) -> _Reply:
        if path.startswith("/_emulator/"):
            return self._admin(method, path, body)
        flush, operation = _FLUSH.match(path), _OPERATION.match(path)
        if not (flush or operation):
            return _error(404, "NotFound", f"The requested path '{path}' is not an ARM route this emulator knows.")
        if (flush and method != "POST") or (operation and method != "GET"):
            return _error(405, "MethodNotAllowed", f"The method '{method}' is not allowed here.")
        cfg = self.config
        params = parse_qs(query, keep_blank_values=True)
        denied = self._denied(headers.get("Authorization"), params, cfg)
        if denied:
            return denied
        kind = "writes" if flush else "reads"
        sub = unquote((flush or operation).group(1))  # type: ignore[union-attr]
        with self._lock:
            self._totals["posts" if flush else "polls"] += 1
            if cfg.throttling.enabled:
                b = getattr(cfg.throttling, kind)
                bucket = self._buckets.setdefault((sub.lower(), kind), TokenBucket(b.burst, b.per_second))
                allowed, n = bucket.take()
            else:
                allowed, n = True, getattr(cfg.throttling, kind).burst
        limit = {f"x-ms-ratelimit-remaining-subscription-{kind}": str(n if allowed else 0)}
        if not allowed:
            reply = _error(429, "TooManyRequests", f"The request was throttled: the subscription's {kind} limit "
                           f"was exceeded. Please retry after {n} seconds.", **{"Retry-After": str(n)})
        elif flush:
            reply = self._post(cfg, *flush.groups(), params["api-version"][0])
        else:
            reply = self._poll(cfg, params, *operation.groups())  # type: ignore[union-attr]
        reply.headers.update(limit)
        return reply

    @staticmethod
    def _denied(auth: str | None, params: dict[str, list[str]], cfg: EmulatorConfig) -> _Reply | None:
        """ARM's front door: bearer token, then api-version."""
        if not auth:
            return _error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), cfg.token.encode()):
            return _error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        version = (params.get("api-version") or [""])[0]
        if not version:
            return _error(400, "MissingApiVersionParameter",
                          "The api-version query parameter (?api-version=) is required for all requests.")
        if version not in cfg.api_versions:
            return _error(400, "InvalidApiVersionParameter", f"The api-version '{version}' is invalid. "
                          f"The supported versions are '{','.join(cfg.api_versions)}'.")
        return None

    # ---- operation URLs --------------------------------------------------------------------
    def _op_url(self, cfg: EmulatorConfig, op: Operation, op_id: str) -> str:
        base = op.beh.foreign_host or self.url
        return (f"{base}/subscriptions/{op.sub}/providers/Microsoft.Cache/locations/"
                f"{quote(cfg.location, safe='')}/operationresults/{op_id}?{self._book.queries[op_id]}")

    @staticmethod
    def _monitor_headers(mode: str, url: str, beh: Behaviour) -> dict[str, str]:
        out = {"Azure-AsyncOperation": url} if mode in ("both", "async") else {}
        if mode in ("both", "location"):
            out["Location"] = url
        if beh.retry_after is not None:
            out["Retry-After"] = str(beh.retry_after)
        return out

    # ---- the flush action ------------------------------------------------------------------
    def _post(self, cfg: EmulatorConfig, sub: str, rg: str, cache: str, api: str) -> _Reply:
        rg, cache = unquote(rg), unquote(cache)
        beh = cfg.behaviour_for(cache)
        if beh is None:
            return _error(404, "ResourceNotFound", f"The Resource 'Microsoft.Cache/Redis/{cache}' under resource "
                          f"group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
        now = time.time()
        with self._lock:
            counters = self._book.counters(cache)
            k = counters["posts"]
            counters["posts"] += 1
            counters["firstSeen"] = counters["firstSeen"] or now
            reply: _Reply | None = None
            if k < beh.throttle_first:
                reply = _error(429, "TooManyRequests", "The request was throttled by Microsoft.Cache. Please retry later.",
                               **{"Retry-After": str(beh.throttle_retry_after)})
            elif k - beh.throttle_first < len(beh.post_errors):
                reply = self._status_error(beh.post_errors[k - beh.throttle_first])
            elif now - counters["firstSeen"] < beh.busy_seconds:
                reply = _error(409, "Conflict", f"The resource '/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                               f"Microsoft.Cache/Redis/{cache}' is busy processing a previous update request or is "
                               "undergoing system maintenance.  As such, it is currently unable to accept the update "
                               "request.  Please try again later.")
            else:
                counters["accepted"] += 1
                if not beh.immediate:
                    op = Operation(str(uuid.uuid4()), sub, rg, cache, api, now, beh)
                    url = self._op_url(cfg, op, self._book.add_url(op, cfg.location, cfg.signed_url_bytes))
                    self._book.save(op, cache)
                    return _Reply(202, None, self._monitor_headers(beh.poll_mode, url, beh), beh.latency)
            self._book.save(None, cache)
        if reply is not None:
            reply.delay = beh.latency
            return reply
        self.keystore.flush(cache, db=beh.redis_db)   # immediate: 200, flushed at once
        with self._lock:
            self._book.counters(cache)["flushes"] += 1
            self._book.save(None, cache)
        return _Reply(200, b"" if beh.immediate_empty_body else {"status": "Succeeded"}, {}, beh.latency)

    @staticmethod
    def _status_error(status: int) -> _Reply:
        code = _CODES.get(status) or http.server.BaseHTTPRequestHandler.responses.get(status, ("Error",))[0].replace(" ", "")
        extra = {"Retry-After": "1"} if status in (429, 503) else {}
        return _error(status, code, f"The service answered {status} {code} (emulated). Please try again later.", **extra)

    # ---- the operation status --------------------------------------------------------------
    def _poll(self, cfg: EmulatorConfig, params: dict[str, list[str]], sub: str, loc: str, op_id: str) -> _Reply:
        if not self._book.verify(op_id, loc, params):
            return _error(401, "InvalidSignature", "The operation URL's signature is missing or invalid: use the "
                          "Azure-AsyncOperation or Location URL exactly as given, without re-encoding it.")
        with self._lock:
            op = self._book.ops.get(op_id)
            if op is None:
                return _error(404, "OperationNotFound", f"The operation '{op_id}' was not found.")
            k = op.polls
            op.polls += 1
            self._book.counters(op.cache)["polls"] += 1
            self._book.save(op, op.cache)
        beh, reply = op.beh, self._poll_reply(cfg, op, op_id, k)
        reply.delay = beh.latency
        return reply

    def _poll_reply(self, cfg: EmulatorConfig, op: Operation, op_id: str, k: int) -> _Reply:
        beh, nth = op.beh, k + 1
        done = self._book.settle(op)
        if k < len(beh.poll_errors):
            return self._status_error(beh.poll_errors[k])
        k -= len(beh.poll_errors)
        if k < beh.invalid_json_polls:
            return _Reply(200, _NOT_JSON)
        if k - beh.invalid_json_polls < beh.statusless_polls:
            return _Reply(200, {})
        mode = beh.poll_mode if beh.poll_mode != "none" else "both"
        result = {"id": f"/subscriptions/{op.sub}/providers/Microsoft.Cache/locations/{cfg.location}/operationresults/{op.id}",
                  "name": op.id, "status": "InProgress", "startTime": _iso(op.accepted_at)}
        new_id = None
        if beh.move_after_polls and nth >= beh.move_after_polls:
            with self._lock:
                if not op.moved:
                    op.moved, new_id = True, self._book.add_url(op, cfg.location, cfg.signed_url_bytes)
                    self._book.save(op)
        if new_id:
            url = self._op_url(cfg, op, new_id)
            return _Reply(202, None if mode == "location" else result, self._monitor_headers(mode, url, beh))
        if not done:
            if beh.percent_complete:
                result["percentComplete"] = round(min(99.0, 100 * (time.time() - op.accepted_at) / max(beh.duration, 1e-9)), 1)
            url = self._op_url(cfg, op, op_id)
            return _Reply(202, None if mode == "location" else result, self._monitor_headers(mode, url, beh))
        if mode == "location" and beh.location_done_no_content:
            return _Reply(204)
        result.update(status=beh.outcome, endTime=_iso(op.accepted_at + beh.duration))
        if beh.outcome == "Failed":
            result["error"] = beh.failure()
        if beh.percent_complete and beh.outcome == "Succeeded":
            result["percentComplete"] = 100.0
        return _Reply(200, result)

    # ---- admin -----------------------------------------------------------------------------
    def _admin(self, method: str, path: str, body: bytes) -> _Reply:
        keys = _KEYS.match(path)
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return _error(400, "InvalidJson", "The request body must be JSON.")
        if path == "/_emulator/health" and method == "GET":
            return _Reply(200, {"status": "ok", "url": self.url})
        if path == "/_emulator/stats" and method == "GET":
            return _Reply(200, self.stats())
        if path == "/_emulator/config" and method in ("GET", "PUT"):
            if method == "PUT":
                try:
                    self.set_config(EmulatorConfig.from_dict(data))
                except ValueError as exc:
                    return _error(400, "InvalidConfig", str(exc))
            return _Reply(200, self.config.to_dict())
        if keys and method in ("GET", "PUT"):
            cache = unquote(keys.group(1))
            beh = self.config.behaviour_for(cache)
            db = beh.redis_db if beh else None
            if method == "PUT":
                n = data.get("count") if isinstance(data, dict) else None
                if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 10_000_000:
                    return _error(400, "InvalidCount", "count: must be an integer from 0 to 10000000")
                self.keystore.seed(cache, n, db=db)
            else:
                self._book.sweep()
            return _Reply(200, {"count": self.keystore.count(cache, db=db)})
        return _error(404, "NotFound", f"No emulator admin route {method} {path}.")
