"""The ARM routes the emulator plays: the front door (token, api-version, throttling), the route
table, and the classic Redis flush POST with the polls of its operation.

By default the classic replies match the recorded real traffic (202, empty body, identical
Azure-AsyncOperation/Location URLs with signed query parameters, 202 InProgress polls, 200
Succeeded); per-cache behaviours (`emulator_config`) add everything else ARM may do. Managed
Redis is `emulator_enterprise`, the list APIs `emulator_lists`. Keys are deleted when an
operation succeeds, exactly once (`emulator_operations`).
"""
from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from .emulator_behaviour import Behaviour
from .emulator_config import EmulatorConfig
from .emulator_enterprise import EnterpriseRoutes
from .emulator_http import Reply, error_reply
from .emulator_lists import ListRoutes
from .emulator_operations import CLASSIC, Operation, OperationBook
from .emulator_replies import (
    ArmRequest,
    invalid_signature,
    iso,
    not_found,
    operation_not_found,
    percent,
    poll_gate,
    post_gate,
    terminal,
)
from .emulator_throttle import Throttle
from .keystore import KeyStore

_SUB = r"^/subscriptions/([^/]+)"
_RG = _SUB + r"/resourceGroups/([^/]+)/providers/Microsoft\.Cache"
_DB = _RG + r"/redisEnterprise/([^/]+)/databases/([^/]+)"
_SCOPE = _SUB + r"(?:/resourceGroups/([^/]+))?/providers/Microsoft\.Cache"
_LOC = _SUB + r"/providers/Microsoft\.Cache/locations/([^/]+)"


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    method: str
    family: str           # "redis" or "redisEnterprise": which api-versions apply
    counter: str          # the total it counts into
    handler: Callable[[ArmRequest], Reply]

    @property
    def kind(self) -> str:
        """The throttling bucket: ARM counts every GET as a read, every POST as a write."""
        return "reads" if self.method == "GET" else "writes"


class ArmRoutes:
    """Answers ARM requests from the operations in `book`; counts into `totals` (`posts`,
    `polls`, `lists`, `databaseGets`) and keeps the throttling buckets (`reset_throttling` when
    the config changes). Every method that reads or changes shared state holds `book.lock`."""

    def __init__(self, book: OperationBook, keystore: KeyStore, totals: dict[str, int]) -> None:
        self._book, self._lock, self._clock = book, book.lock, book.clock
        self.keystore = keystore
        self._totals = totals
        self.throttle = Throttle(book.clock)
        ent, lists, amr = EnterpriseRoutes(book), ListRoutes(book), "redisEnterprise"
        table: list[tuple[str, str, str, str, Callable[[ArmRequest], Reply]]] = [
            (_RG + r"/redis/([^/]+)/flush/?$", "POST", CLASSIC, "posts", self._post),
            (_LOC + r"/operationresults/([^/]+)/?$", "GET", CLASSIC, "polls", self._poll),
            (_SCOPE + r"/redis/?$", "GET", CLASSIC, "lists", lists.caches),
            (_SCOPE + r"/redisEnterprise/?$", "GET", amr, "lists", lists.clusters),
            (_RG + r"/redisEnterprise/([^/]+)/databases/?$", "GET", amr, "lists", lists.databases),
            (_DB + r"/?$", "GET", amr, "databaseGets", ent.database),
            (_DB + r"/flush/?$", "POST", amr, "posts", ent.flush),
            (_DB + r"/operationresults/([^/]+)/?$", "GET", amr, "polls", ent.location_poll),
            (_LOC + r"/operationsStatus/([^/]+)/?$", "GET", amr, "polls", ent.status_poll),
        ]
        self._routes = [Route(re.compile(p, re.I), m, f, c, h) for p, m, f, c, h in table]

    def reset_throttling(self) -> None:
        """New buckets (call with `book.lock` held, together with the config change)."""
        self.throttle.reset()

    def route(self, cfg: EmulatorConfig, url: str, method: str, path: str, query: str,
              headers: Any, body: bytes = b"") -> Reply:
        """One request under `cfg`; `url` is the emulator's own base URL (operation links)."""
        found = next(((r, m) for r in self._routes for m in [r.pattern.match(path)] if m), None)
        if found is None:
            return error_reply(404, "NotFound", f"The requested path '{path}' is not an ARM "
                               "route this emulator knows.")
        route, match = found
        if method != route.method:
            return error_reply(405, "MethodNotAllowed",
                               f"The method '{method}' is not allowed here.")
        params = parse_qs(query, keep_blank_values=True)
        versions = cfg.api_versions if route.family == CLASSIC else cfg.enterprise_api_versions
        denied = self._denied(headers.get("Authorization"), params, cfg, versions)
        if denied:
            return denied
        kind, sub = route.kind, unquote(match.group(1))
        with self._lock:
            self._totals[route.counter] += 1
            allowed, n, early = self.throttle.take(cfg.throttling, cfg.read_load, sub, kind)
            if early:
                self._totals["throttledEarly"] += 1
        limit = {f"x-ms-ratelimit-remaining-subscription-{kind}": str(n if allowed else 0)}
        if not allowed:
            reply = error_reply(429, "TooManyRequests",
                                f"The request was throttled: the subscription's {kind} limit was "
                                f"exceeded. Please retry after {n} seconds.",
                                **{"Retry-After": str(n)})
        else:
            reply = route.handler(ArmRequest(cfg, url, match.groups(), params, body))
        reply.headers.update(limit)
        return reply

    @staticmethod
    def _denied(auth: str | None, params: dict[str, list[str]], cfg: EmulatorConfig,
                versions: tuple[str, ...]) -> Reply | None:
        """ARM's front door: bearer token, then api-version."""
        if not auth:
            return error_reply(401, "AuthenticationFailed",
                               "Authentication failed. The 'Authorization' header is missing.")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 cfg.token.encode()):
            return error_reply(401, "InvalidAuthenticationToken", "The access token is invalid.")
        version = (params.get("api-version") or [""])[0]
        if not version:
            return error_reply(400, "MissingApiVersionParameter", "The api-version query "
                               "parameter (?api-version=) is required for all requests.")
        if version not in versions:
            return error_reply(400, "InvalidApiVersionParameter",
                               f"The api-version '{version}' is invalid. "
                               f"The supported versions are '{','.join(versions)}'.")
        return None

    # ---- operation URLs --------------------------------------------------------------------
    def _op_url(self, base: str, op: Operation, op_id: str) -> str:
        loc = quote(op.location, safe="")
        return (f"{op.beh.foreign_host or base}/subscriptions/{op.sub}/providers/"
                f"Microsoft.Cache/locations/{loc}/operationresults/{op_id}"
                f"?{self._book.query(op_id, loc)}")

    @staticmethod
    def _monitor_headers(mode: str, url: str, beh: Behaviour) -> dict[str, str]:
        out = {"Azure-AsyncOperation": url} if mode in ("both", "async") else {}
        if mode in ("both", "location"):
            out["Location"] = url
        if beh.retry_after is not None:
            out["Retry-After"] = str(beh.retry_after)
        return out

    # ---- the flush action ------------------------------------------------------------------
    def _post(self, req: ArmRequest) -> Reply:
        sub, rg, cache = req.seg(0), req.seg(1), req.seg(2)
        beh = req.cfg.behaviour_for(cache)
        if beh is None or not beh.placed_in(sub, rg):
            return not_found("Microsoft.Cache/Redis", cache, rg)
        now = self._clock.time()
        resource = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/Redis/"
        resource += cache
        with self._lock:
            reply = post_gate(self._book, cache, beh, now, resource)
            if reply is None and not beh.immediate:
                op = Operation(str(uuid.uuid4()), sub, rg, cache, req.api, now, beh,
                               location=beh.location or req.cfg.location)
                op_id = self._book.add_url(op, req.cfg.signed_url_bytes)
                op_url = self._op_url(req.base, op, op_id)
                headers = self._monitor_headers(beh.poll_mode, op_url, beh)
                self._book.save(op, cache)
                return Reply(202, None, headers, beh.latency)
            self._book.save(None, cache)
        if reply is not None:
            reply.delay = beh.latency
            return reply
        self._book.flush_now([(cache, beh.redis_db)])   # immediate: 200, flushed at once
        body = b"" if beh.immediate_empty_body else {"status": "Succeeded"}
        return Reply(200, body, {}, beh.latency)

    # ---- the operation status --------------------------------------------------------------
    def _poll(self, req: ArmRequest) -> Reply:
        loc, op_id = req.groups[1] or "", req.seg(2)
        if not self._book.verify(op_id, loc, req.params):
            return invalid_signature()
        with self._lock:
            op = self._book.ops.get(op_id)
            if op is None or op.kind != CLASSIC:
                return operation_not_found(op_id)
            k = op.polls
            op.polls += 1
            self._book.counters(op.cache)["polls"] += 1
            self._book.save(op, op.cache)
        reply = self._poll_reply(req, op, op_id, k)
        reply.delay = op.beh.latency
        return reply

    def _poll_reply(self, req: ArmRequest, op: Operation, op_id: str, k: int) -> Reply:
        beh, nth = op.beh, k + 1
        done = self._book.settle(op)
        unusable = poll_gate(beh, k)
        if unusable is not None:
            return unusable
        mode = beh.poll_mode if beh.poll_mode != "none" else "both"
        result: dict[str, Any] = {
            "id": f"/subscriptions/{op.sub}/providers/Microsoft.Cache/locations/{op.location}"
                  f"/operationresults/{op.id}",
            "name": op.id, "status": "InProgress", "startTime": iso(op.accepted_at)}
        new_id = None
        if beh.move_after_polls and nth >= beh.move_after_polls:
            with self._lock:
                if not op.moved:
                    op.moved, new_id = True, self._book.add_url(op, req.cfg.signed_url_bytes)
                    self._book.save(op)
        if not done and not new_id and beh.percent_complete:
            result["percentComplete"] = percent(self._clock.time(), op.accepted_at, beh.duration)
        if new_id or not done:
            headers = self._monitor_headers(mode, self._op_url(req.base, op, new_id or op_id), beh)
            return Reply(202, None if mode == "location" else result, headers)
        if mode == "location" and beh.outcome == "Failed":
            # Location-only polling answers a failed operation with its error (docs/design.md)
            return Reply(beh.failure_status, {"error": beh.failure()})
        if mode == "location" and beh.location_done_no_content:
            return Reply(204)
        return Reply(200, terminal(result, beh, op.accepted_at))
