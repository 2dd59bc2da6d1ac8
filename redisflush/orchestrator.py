"""Pure decisions: (poll state, ARM answer, now) -> the next action.

Like a Durable Functions monitor: an absolute deadline computed once, then poll, decide,
schedule the next wake-up. Nothing here reads the clock, makes ids or does IO, so every
rule is a table test (tests/unit/test_orchestrator.py).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any, Mapping

from .core import lro
from .arm import UNTRUSTED_URL, ArmAnswer, ArmFailure, error_detail
from .messages import FlushRequest, PollState

MAX_BAD_POLLS = 3  # DESIGN: unusable status answers are retried at most 3 times


@dataclass(frozen=True)
class Schedule:
    """Send `state` as the next step's message, visible at `at`."""

    state: PollState
    at: dt.datetime


@dataclass(frozen=True)
class Complete:
    """The request is over: publish one completion event with this outcome."""

    state: PollState
    status: str
    operation: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None


Action = Schedule | Complete


def begin(request: FlushRequest, now: dt.datetime) -> PollState:
    """The first state of a valid request; the deadline is fixed here, once."""
    return PollState(request.origin, request.target,
                     deadline=now + dt.timedelta(seconds=request.timeout_seconds))


def before_call(state: PollState, now: dt.datetime) -> Complete | None:
    """A POST is not started past the deadline (a last poll at the deadline still is)."""
    if state.phase == "flush" and now >= state.deadline:
        return _timed_out(state)
    return None


def deferred(state: PollState, wait: float, now: dt.datetime) -> Action:
    """The pacer gave this step a slot `wait` seconds away: come back then, slot in hand."""
    return _schedule(replace(state, paced=True), now, wait, None)


def after_post(state: PollState, result: ArmAnswer | ArmFailure, now: dt.datetime,
               arm_endpoint: str) -> Action:
    state = _counted(state, result)
    if isinstance(result, ArmFailure) or lro.is_transient(result.status):
        return _transient(state, result, now)
    if result.status == 202 or (200 <= result.status < 300 and _keeps_running(result)):
        return _accept(state, result, now, arm_endpoint)
    if 200 <= result.status < 300:
        reading = lro.LocationPolling().read(200, result.body)  # 200 with the result itself
        status = reading.status if reading.state == "terminal" else lro.SUCCEEDED
        return _complete(state, status, reading.operation)
    return Complete(state, lro.FAILED, None, _http_error(result))


def after_poll(state: PollState, result: ArmAnswer | ArmFailure, now: dt.datetime,
               arm_endpoint: str) -> Action:
    state = _counted(state, result)
    if isinstance(result, ArmFailure) and result.code == UNTRUSTED_URL:
        return _untrusted(state, state.poll_url or "")  # e.g. a poll message's own URL
    if isinstance(result, ArmFailure) or lro.is_transient(result.status):
        return _transient(state, result, now)
    if not 200 <= result.status < 300:
        return _bad_poll(state, now, f"OperationStatusHttp{result.status}", _http_error(result))
    reading = lro.strategy(state.poll_kind or "").read(result.status, result.body)
    if reading.state == "bad":
        return _bad_poll(state, now, reading.problem or "OperationStatusInvalid", None)
    state = replace(state, bad_polls=0, failures=0, last_status=reading.status,
                    last_operation=_operation_summary(reading.operation) or
                    state.last_operation)
    if reading.state == "terminal":
        return _complete(state, reading.status or lro.FAILED, reading.operation)
    if now >= state.deadline:
        return _timed_out(state)
    moved = lro.poll_target(result.headers, result.url) if result.status == 202 else None
    if moved and moved != (state.poll_kind, state.poll_url):
        if not lro.is_trusted(moved[1], arm_endpoint):
            return _untrusted(state, moved[1])
        state = replace(state, poll_kind=moved[0], poll_url=moved[1])
    gap = lro.poll_gap(state.polls + 1)  # gap 0 followed the acceptance
    return _schedule(replace(state, polls=state.polls + 1), now, gap,
                     lro.retry_after(result.headers, now))


def _counted(state: PollState, result: ArmAnswer | ArmFailure) -> PollState:
    """Count the request when it left this process (not a token error or refused connect)."""
    sent = not isinstance(result, ArmFailure) or result.sent
    return replace(state, arm_requests=state.arm_requests + int(sent), paced=False)


def _transient(state: PollState, result: ArmAnswer | ArmFailure, now: dt.datetime) -> Action:
    """No answer, or 408/409/429/5xx: the same step again later, never before Retry-After."""
    if isinstance(result, ArmFailure):
        return _retry(state, now, result.retry_after, {"code": result.code,
                                                       "message": result.message})
    return _retry(state, now, lro.retry_after(result.headers, now), _http_error(result))


def _accept(state: PollState, answer: ArmAnswer, now: dt.datetime, endpoint: str) -> Action:
    target = lro.poll_target(answer.headers, answer.url)
    if target is None:
        return Complete(state, lro.FAILED, None, {
            "code": "NoOperationUrl",
            "message": f"ARM answered {answer.status} to the flush without an "
                       "Azure-AsyncOperation or Location header, so it cannot be followed"})
    if not lro.is_trusted(target[1], endpoint):
        return _untrusted(state, target[1])
    state = replace(state, phase="poll", poll_kind=target[0], poll_url=target[1],
                    accepted_at=now, last_status="Accepted", failures=0)
    return _schedule(state, now, lro.poll_gap(0), lro.retry_after(answer.headers, now))


def _keeps_running(answer: ArmAnswer) -> bool:
    """A 200/201 whose body says still running: followed, or Failed without a URL to poll."""
    return lro.AsyncOperationPolling().read(answer.status, answer.body).state == "running"


def _schedule(state: PollState, now: dt.datetime, delay: float,
              retry_after: float | None) -> Action:
    """Next step after max(delay, Retry-After), never past the deadline (one last look)."""
    left = max(0.0, (state.deadline - now).total_seconds())  # compare in seconds: a huge
    if retry_after is not None and retry_after > left:       # Retry-After overflows datetime
        return _timed_out(state)  # ARM will not talk to us again before the deadline
    wait = max(delay, retry_after or 0.0)
    at = now + dt.timedelta(seconds=wait) if wait < left else max(now, state.deadline)
    return Schedule(replace(state, attempt=state.attempt + 1), at)


def _retry(state: PollState, now: dt.datetime, retry_after: float | None,
           error: Mapping[str, Any]) -> Action:
    failures = state.failures + 1
    state = replace(state, failures=failures)
    if now >= state.deadline:
        return _timed_out(state, error)
    delay = lro.retry_delay(failures, f"{state.origin.request_id}:{state.attempt}")
    if state.phase == "flush" and max(delay, retry_after or 0) \
            >= (state.deadline - now).total_seconds():
        return _timed_out(state, error)
    return _schedule(state, now, delay, retry_after)


def _bad_poll(state: PollState, now: dt.datetime, code: str,
              arm_error: Mapping[str, Any] | None) -> Action:
    state = replace(state, bad_polls=state.bad_polls + 1)
    if state.bad_polls > MAX_BAD_POLLS:
        error: dict[str, Any] = {
            "code": code, "message": f"the operation status URL gave {state.bad_polls} "
                                     f"unusable answers in a row ({code})"}
        if arm_error:
            error["details"] = [dict(arm_error)]
        return Complete(state, lro.FAILED, state.last_operation, error)
    if now >= state.deadline:
        return _timed_out(state)
    return _schedule(state, now, lro.retry_delay(state.bad_polls, state.message_id), None)


def _complete(state: PollState, status: str, operation: Mapping[str, Any] | None) -> Complete:
    summary = _operation_summary(operation)
    error = summary.get("error") if summary and status == lro.FAILED else None
    if status == lro.FAILED and not (isinstance(error, Mapping) and error):
        # No error, or one that is not an ErrorDetail object ("error": "boom"): the event's
        # error is always an object (the raw value stays in `operation.error`).
        text = error.strip()[:1024] if isinstance(error, str) else ""
        error = {"code": "OperationFailed", "message": text or "ARM reported the flush as "
                                                               "Failed without an error"}
    return Complete(replace(state, last_status=status), status, summary, error)


def _timed_out(state: PollState, error: Mapping[str, Any] | None = None) -> Complete:
    last = state.last_status or "NotStarted"
    detail = {"code": "TimedOut",
              "message": f"the deadline passed while the flush was {last}"}
    if error:
        detail["details"] = [dict(error)]
    return Complete(state, "TimedOut", state.last_operation, detail)


def _untrusted(state: PollState, url: str) -> Complete:
    return Complete(state, lro.FAILED, None, {
        "code": "UntrustedOperationUrl",
        "message": f"ARM pointed the operation at {lro.redact_url(url)}, which is not the "
                   "configured ARM endpoint's scheme, host and port; no token was sent there"})


def _http_error(answer: ArmAnswer) -> dict[str, Any]:
    detail = bounded(error_detail(answer.body) or {})
    return {"code": detail.get("code") or f"Http{answer.status}",
            "message": detail.get("message") or f"ARM answered HTTP {answer.status}",
            **{k: v for k, v in detail.items() if k not in ("code", "message")},
            "httpStatus": answer.status}


_OPERATION_FIELDS = ("id", "name", "status", "percentComplete", "startTime", "endTime", "error")


def _operation_summary(operation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The OperationStatusResult fields the event carries (never a URL with signatures)."""
    if not operation:
        return None
    return bounded({k: operation[k] for k in _OPERATION_FIELDS if k in operation})


MAX_TEXT, MAX_ITEMS, MAX_DEPTH = 2048, 20, 6


def bounded(value: Any, depth: int = 0) -> Any:
    """ARM's own JSON, cut to a size that always fits a Service Bus message (256 KB on
    Standard): a huge error body must not make every later send fail into a dead letter."""
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"
    if depth >= MAX_DEPTH and isinstance(value, (dict, list)):
        return "…"
    if isinstance(value, dict):
        return {str(k)[:MAX_TEXT]: bounded(v, depth + 1)
                for k, v in list(value.items())[:MAX_ITEMS]}
    if isinstance(value, list):
        return [bounded(v, depth + 1) for v in value[:MAX_ITEMS]]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None  # NaN / Infinity are not JSON
    return value
