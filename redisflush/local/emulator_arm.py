"""The ARM routes the emulator plays: the front door (token, api-version, throttling), the
Redis flush POST and the polls of its operation.

By default the replies match the recorded real traffic (202, empty body, identical
Azure-AsyncOperation/Location URLs with signed query parameters, 202 InProgress polls, 200
Succeeded); per-cache behaviours (`emulator_config`) add everything else ARM may do. Keys are
deleted when an operation succeeds, exactly once (`keystore`).
"""
from __future__ import annotations

import datetime as dt
import hmac
import http.server
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from .emulator_config import Behaviour, EmulatorConfig, TokenBucket
from .emulator_http import Reply, error_reply
from .keystore import KeyStore, Operation, OperationBook

_FLUSH = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Cache/redis/([^/]+)/flush/?$", re.I)
_OPERATION = re.compile(r"^/subscriptions/([^/]+)/providers/Microsoft\.Cache/locations/([^/]+)/operationresults/([^/]+)/?$", re.I)
_CODES = {400: "BadRequest", 401: "Unauthorized", 403: "AuthorizationFailed", 404: "NotFound",
          408: "RequestTimeout", 409: "Conflict", 429: "TooManyRequests", 500: "InternalServerError",
          502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
_NOT_JSON = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class ArmRoutes:
    """Answers ARM requests from the operations in `book`; counts `posts` and `polls` into
    `totals` and keeps the throttling buckets (`reset_throttling` when the config changes).
    Every method that reads or changes shared state holds `book.lock`."""

    def __init__(self, book: OperationBook, keystore: KeyStore, totals: dict[str, int]) -> None:
        self._book, self._lock = book, book.lock
        self.keystore = keystore
        self._totals = totals
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def reset_throttling(self) -> None:
        """New buckets (call with `book.lock` held, together with the config change)."""
        self._buckets = {}

    def route(self, cfg: EmulatorConfig, url: str, method: str, path: str, query: str,
              headers: Any) -> Reply:
        """One request under `cfg`; `url` is the emulator's own base URL (operation links)."""
        flush, operation = _FLUSH.match(path), _OPERATION.match(path)
        if not (flush or operation):
            return error_reply(404, "NotFound", f"The requested path '{path}' is not an ARM route this emulator knows.")
        if (flush and method != "POST") or (operation and method != "GET"):
            return error_reply(405, "MethodNotAllowed", f"The method '{method}' is not allowed here.")
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
            reply = error_reply(429, "TooManyRequests", f"The request was throttled: the subscription's {kind} limit "
                                f"was exceeded. Please retry after {n} seconds.", **{"Retry-After": str(n)})
        elif flush:
            reply = self._post(cfg, url, *flush.groups(), params["api-version"][0])
        else:
            reply = self._poll(cfg, url, params, *operation.groups())  # type: ignore[union-attr]
        reply.headers.update(limit)
        return reply

    @staticmethod
    def _denied(auth: str | None, params: dict[str, list[str]], cfg: EmulatorConfig) -> Reply | None:
        """ARM's front door: bearer token, then api-version."""
        if not auth:
            return error_reply(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), cfg.token.encode()):
            return error_reply(401, "InvalidAuthenticationToken", "The access token is invalid.")
        version = (params.get("api-version") or [""])[0]
        if not version:
            return error_reply(400, "MissingApiVersionParameter",
                               "The api-version query parameter (?api-version=) is required for all requests.")
        if version not in cfg.api_versions:
            return error_reply(400, "InvalidApiVersionParameter", f"The api-version '{version}' is invalid. "
                               f"The supported versions are '{','.join(cfg.api_versions)}'.")
        return None

    # ---- operation URLs --------------------------------------------------------------------
    def _op_url(self, cfg: EmulatorConfig, url: str, op: Operation, op_id: str) -> str:
        base = op.beh.foreign_host or url
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
    def _post(self, cfg: EmulatorConfig, url: str, sub: str, rg: str, cache: str, api: str) -> Reply:
        rg, cache = unquote(rg), unquote(cache)
        beh = cfg.behaviour_for(cache)
        if beh is None:
            return error_reply(404, "ResourceNotFound", f"The Resource 'Microsoft.Cache/Redis/{cache}' under resource "
                               f"group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
        now = time.time()
        with self._lock:
            counters = self._book.counters(cache)
            k = counters["posts"]
            counters["posts"] += 1
            counters["firstSeen"] = counters["firstSeen"] or now
            reply: Reply | None = None
            if k < beh.throttle_first:
                reply = error_reply(429, "TooManyRequests", "The request was throttled by Microsoft.Cache. Please retry later.",
                                    **{"Retry-After": str(beh.throttle_retry_after)})
            elif k - beh.throttle_first < len(beh.post_errors):
                reply = self._status_error(beh.post_errors[k - beh.throttle_first])
            elif now - counters["firstSeen"] < beh.busy_seconds:
                reply = error_reply(409, "Conflict", f"The resource '/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                                    f"Microsoft.Cache/Redis/{cache}' is busy processing a previous update request or is "
                                    "undergoing system maintenance.  As such, it is currently unable to accept the update "
                                    "request.  Please try again later.")
            else:
                counters["accepted"] += 1
                if not beh.immediate:
                    op = Operation(str(uuid.uuid4()), sub, rg, cache, api, now, beh)
                    op_url = self._op_url(cfg, url, op, self._book.add_url(op, cfg.location, cfg.signed_url_bytes))
                    self._book.save(op, cache)
                    return Reply(202, None, self._monitor_headers(beh.poll_mode, op_url, beh), beh.latency)
            self._book.save(None, cache)
        if reply is not None:
            reply.delay = beh.latency
            return reply
        self.keystore.flush(cache, db=beh.redis_db)   # immediate: 200, flushed at once
        with self._lock:
            self._book.counters(cache)["flushes"] += 1
            self._book.save(None, cache)
        return Reply(200, b"" if beh.immediate_empty_body else {"status": "Succeeded"}, {}, beh.latency)

    @staticmethod
    def _status_error(status: int) -> Reply:
        code = _CODES.get(status) or http.server.BaseHTTPRequestHandler.responses.get(status, ("Error",))[0].replace(" ", "")
        extra = {"Retry-After": "1"} if status in (429, 503) else {}
        return error_reply(status, code, f"The service answered {status} {code} (emulated). Please try again later.", **extra)

    # ---- the operation status --------------------------------------------------------------
    def _poll(self, cfg: EmulatorConfig, url: str, params: dict[str, list[str]], sub: str, loc: str,
              op_id: str) -> Reply:
        if not self._book.verify(op_id, loc, params):
            return error_reply(401, "InvalidSignature", "The operation URL's signature is missing or invalid: use the "
                               "Azure-AsyncOperation or Location URL exactly as given, without re-encoding it.")
        with self._lock:
            op = self._book.ops.get(op_id)
            if op is None:
                return error_reply(404, "OperationNotFound", f"The operation '{op_id}' was not found.")
            k = op.polls
            op.polls += 1
            self._book.counters(op.cache)["polls"] += 1
            self._book.save(op, op.cache)
        beh, reply = op.beh, self._poll_reply(cfg, url, op, op_id, k)
        reply.delay = beh.latency
        return reply

    def _poll_reply(self, cfg: EmulatorConfig, url: str, op: Operation, op_id: str, k: int) -> Reply:
        beh, nth = op.beh, k + 1
        done = self._book.settle(op)
        if k < len(beh.poll_errors):
            return self._status_error(beh.poll_errors[k])
        k -= len(beh.poll_errors)
        if k < beh.invalid_json_polls:
            return Reply(200, _NOT_JSON)
        if k - beh.invalid_json_polls < beh.statusless_polls:
            return Reply(200, {})
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
            op_url = self._op_url(cfg, url, op, new_id)
            return Reply(202, None if mode == "location" else result, self._monitor_headers(mode, op_url, beh))
        if not done:
            if beh.percent_complete:
                result["percentComplete"] = round(min(99.0, 100 * (time.time() - op.accepted_at) / max(beh.duration, 1e-9)), 1)
            op_url = self._op_url(cfg, url, op, op_id)
            return Reply(202, None if mode == "location" else result, self._monitor_headers(mode, op_url, beh))
        if mode == "location" and beh.location_done_no_content:
            return Reply(204)
        result.update(status=beh.outcome, endTime=_iso(op.accepted_at + beh.duration))
        if beh.outcome == "Failed":
            result["error"] = beh.failure()
        if beh.percent_complete and beh.outcome == "Succeeded":
            result["percentComplete"] = 100.0
        return Reply(200, result)
