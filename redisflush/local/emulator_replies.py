"""What ARM answers, shared by the classic (`emulator_arm`) and Managed Redis
(`emulator_enterprise`) flush routes: errors, the behaviour's answers before a POST is accepted
(throttled, failing, busy) and before a poll sees the operation (errors, unusable bodies).
"""
from __future__ import annotations

import datetime as dt
import http.server
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .emulator_behaviour import Behaviour
from .emulator_http import Reply, error_reply

if TYPE_CHECKING:
    from .emulator_config import EmulatorConfig
    from .emulator_operations import OperationBook

_CODES = {400: "BadRequest", 401: "Unauthorized", 403: "AuthorizationFailed", 404: "NotFound",
          408: "RequestTimeout", 409: "Conflict", 429: "TooManyRequests",
          500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable",
          504: "GatewayTimeout"}
NOT_JSON = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@dataclass
class ArmRequest:
    """One ARM request past the front door (token, api-version, throttling)."""

    cfg: EmulatorConfig
    base: str                         # the emulator's own URL, for the links it hands out
    groups: tuple[str | None, ...]    # the route's path segments, still percent-encoded
    params: dict[str, list[str]]
    body: bytes = b""

    @property
    def api(self) -> str:
        return self.params["api-version"][0]

    def seg(self, i: int) -> str:
        return unquote(self.groups[i] or "")


def invalid_signature() -> Reply:
    return error_reply(401, "InvalidSignature", "The operation URL's signature is missing or "
                       "invalid: use the Azure-AsyncOperation or Location URL exactly as given, "
                       "without re-encoding it.")


def operation_not_found(op_id: str) -> Reply:
    return error_reply(404, "OperationNotFound", f"The operation '{op_id}' was not found.")


def iso(ts: float) -> str:
    moment = dt.datetime.fromtimestamp(ts, dt.timezone.utc)  # noqa: UP017 - Python 3.10 too
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def not_found(kind: str, name: str, rg: str) -> Reply:
    return error_reply(404, "ResourceNotFound",
                       f"The Resource '{kind}/{name}' under resource group '{rg}' was not found. "
                       "For more details please go to https://aka.ms/ARMResourceNotFoundFix")


def status_error(status: int) -> Reply:
    phrase = http.server.BaseHTTPRequestHandler.responses.get(status, ("Error",))[0]
    code = _CODES.get(status) or phrase.replace(" ", "")
    extra = {"Retry-After": "1"} if status in (429, 503) else {}
    return error_reply(status, code, f"The service answered {status} {code} (emulated). "
                       "Please try again later.", **extra)


def post_gate(book: OperationBook, name: str, beh: Behaviour, now: float,
              resource_id: str) -> Reply | None:
    """Count a POST on cache or database `name` and play its behaviour's refusals, in order:
    `throttleFirst` 429s, `postErrors`, then 409 busy for `busySeconds` after the first POST.
    None means accepted (counted). Call with `book.lock` held."""
    counters = book.counters(name)
    k = counters["posts"]
    counters["posts"] += 1
    counters["firstSeen"] = counters["firstSeen"] or now
    if k < beh.throttle_first:
        return error_reply(429, "TooManyRequests",
                           "The request was throttled by Microsoft.Cache. Please retry later.",
                           **{"Retry-After": str(beh.throttle_retry_after)})
    if k - beh.throttle_first < len(beh.post_errors):
        return status_error(beh.post_errors[k - beh.throttle_first])
    if now - counters["firstSeen"] < beh.busy_seconds:
        return error_reply(409, "Conflict",
                           f"The resource '{resource_id}' is busy processing a previous update "
                           "request or is undergoing system maintenance.  As such, it is currently "
                           "unable to accept the update request.  Please try again later.")
    counters["accepted"] += 1
    return None


def poll_gate(beh: Behaviour, k: int) -> Reply | None:
    """The behaviour's unusable answers to poll number `k` (from 0): `pollErrors`, then
    `invalidJsonPolls` bodies that are not JSON, then `statuslessPolls` bodies without status."""
    if k < len(beh.poll_errors):
        return status_error(beh.poll_errors[k])
    k -= len(beh.poll_errors)
    if k < beh.invalid_json_polls:
        return Reply(200, NOT_JSON)
    if k - beh.invalid_json_polls < beh.statusless_polls:
        return Reply(200, {})
    return None


def percent(now: float, accepted_at: float, duration: float) -> float:
    """`percentComplete` of a running operation: rises with time, never 100 before the end."""
    return round(min(99.0, 100 * (now - accepted_at) / max(duration, 1e-9)), 1)


def terminal(result: dict[str, Any], beh: Behaviour, accepted_at: float, *,
             error_response: bool = False) -> dict[str, Any]:
    """The operation resource at its end: status, endTime, the error of a Failed one: a bare
    ErrorDetail (classic Redis' OperationStatusResult) or, with `error_response`, wrapped in
    an ErrorResponse `{"error": {...}}` as Managed Redis' OperationStatus declares it."""
    result.update(status=beh.outcome, endTime=iso(accepted_at + beh.duration))
    if beh.outcome == "Failed":
        result["error"] = {"error": beh.failure()} if error_response else beh.failure()
    if beh.percent_complete and beh.outcome == "Succeeded":
        result["percentComplete"] = 100.0
    return result
