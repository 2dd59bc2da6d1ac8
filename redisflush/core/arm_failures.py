"""What a target does with an ARM answer it cannot use: a transient failure retried with
backoff (never before Retry-After), unusable answers counted to a limit, an operation URL
off the endpoint refused."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from . import cadence, lro
from .answers import ArmAnswer, ArmFailure, error_detail, text_or_none
from .decision import Context
from .frozen import replace
from .state import TargetState
from .target_end import end_target, timed_out, timed_out_error

MAX_BAD = 3  # unusable status answers are retried at most 3 times


def transient(ts: TargetState, r: ArmAnswer | ArmFailure, cx: Context) -> TargetState:
    """No answer, or 408/409/429/5xx: the same call again later, never before Retry-After."""
    if isinstance(r, ArmFailure):
        error, after = {"code": r.code, "message": r.message}, r.retry_after
    else:
        error, after = http_error(r), lro.retry_after(r.headers, cx.now)
    failures = ts.failures + 1
    delay = cadence.retry_delay(failures, f"{ts.target.key}:{ts.arm_requests}")
    wait = max(cadence.capped(delay), cadence.capped(after))
    if ts.phase != "poll" and cx.now + dt.timedelta(seconds=wait) >= cx.deadline:
        return end_target(ts, cx, "TimedOut", timed_out_error(ts, error))
    if cx.now >= cx.deadline:
        return end_target(ts, cx, "TimedOut", timed_out_error(ts, error))
    return replace(ts, failures=failures, due=cx.at(delay, after))


def unusable_answer(ts: TargetState, cx: Context, code: str,
                    arm_error: Mapping[str, Any] | None = None) -> TargetState:
    bad = ts.bad_polls + 1
    if bad > MAX_BAD:
        error: dict[str, Any] = {"code": code, "message": f"ARM gave {bad} unusable answers "
                                 f"in a row ({code})"}
        if arm_error:
            error["details"] = [dict(arm_error)]
        return end_target(ts, cx, lro.FAILED, error, ts.last_operation,
                          accepted=ts.accepted_at is not None)
    if cx.now >= cx.deadline:
        return timed_out(ts, cx)
    return replace(ts, bad_polls=bad, due=cx.at(cadence.retry_delay(bad, f"{ts.target.key}:b")))


def untrusted(ts: TargetState, url: str, cx: Context) -> TargetState:
    return end_target(ts, cx, lro.FAILED, {
        "code": "UntrustedOperationUrl",
        "message": f"ARM pointed the operation at {lro.redact_url(url)}, which is not the "
                   "configured ARM endpoint's scheme, host and port; no token was sent there"},
        accepted=ts.accepted_at is not None or ts.phase == "post")


def http_error(r: ArmAnswer) -> dict[str, Any]:
    """ARM's ErrorDetail with `httpStatus`; a code or message that is not text (ARM's JSON
    may hold any value) gives way to ours, as an operation's error does (README, "Events")."""
    detail = error_detail(r.body) or {}
    return {"code": text_or_none(detail.get("code")) or f"Http{r.status}",
            "message": text_or_none(detail.get("message")) or f"ARM answered HTTP {r.status}",
            **{k: v for k, v in detail.items() if k not in ("code", "message")},
            "httpStatus": r.status}
