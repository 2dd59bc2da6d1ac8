"""How a target ends: its outcome, and the error and operation summary its event carries,
cut to size (README, "Events"; docs/design.md, "Completion events")."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import lro
from .answers import text_or_none
from .decision import Context
from .events import Outcome
from .fit import fit
from .frozen import replace
from .state import TargetState

OPERATION_BYTES, ERROR_BYTES = 2048, 4096


_OPERATION_FIELDS = ("id", "name", "status", "percentComplete", "startTime", "endTime", "error")


def timed_out(ts: TargetState, cx: Context) -> TargetState:
    return end_target(ts, cx, "TimedOut", timed_out_error(ts))


def end_target(ts: TargetState, cx: Context, status: str, error: Mapping[str, Any] | None,
               operation: Mapping[str, Any] | None = None, *, accepted: bool = False
               ) -> TargetState:
    summary = operation_summary(operation) or ts.last_operation
    if status in (lro.FAILED, lro.CANCELED) and not error:
        error = operation_error((summary or {}).get("error"), status)
    if status not in ("Succeeded", "Failed", "Canceled", "TimedOut", "Rejected"):
        status = lro.FAILED
    outcome = Outcome(status, cx.now, fit(dict(error), ERROR_BYTES) if error else None, summary,
                      ts.accepted_at, ts.arm_requests,
                      tuple(ts.linked or ()) if (accepted or ts.accepted_at or ts.in_doubt)
                      else ())
    return replace(ts, phase="done", outcome=outcome, last_status=status)


_ERROR_FIELDS = ("target", "details", "additionalInfo")


def operation_error(raw: object, status: str = lro.FAILED) -> dict[str, Any]:
    """The error of an operation ARM reported Failed or Canceled, with a string `code` and
    `message` at its top level as every event's error but a success has (README, "Events";
    docs/design.md, "Completion events"). Classic Redis' OperationStatusResult gives a bare
    ErrorDetail; Managed Redis' OperationStatus declares an ErrorResponse, `{"error": {code,
    message}}`: both are read. A cancellation often comes without one."""
    fallback = "OperationCanceled" if status == lro.CANCELED else "OperationFailed"
    none = f"ARM reported the flush as {status} without an error"
    if isinstance(raw, str):
        return {"code": fallback, "message": raw.strip()[:1024] or none}
    if not isinstance(raw, Mapping):
        return {"code": fallback, "message": none}
    nested = raw.get("error")
    if isinstance(nested, Mapping) and not text_or_none(raw.get("code")):
        raw = nested
    code, message = text_or_none(raw.get("code")), text_or_none(raw.get("message"))
    error = {k: raw[k] for k in _ERROR_FIELDS if raw.get(k) is not None}
    return {"code": code or fallback,
            "message": message or (none + " message" if code else none), **error}


def timed_out_error(ts: TargetState, cause: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    if ts.last_status is None and ts.in_doubt:
        message = ("the deadline passed while the flush request's answer was unknown: ARM may "
                   "or may not have run it")
    else:
        message = f"the deadline passed while the flush was {ts.last_status or 'NotStarted'}"
    error: dict[str, Any] = {"code": "TimedOut", "message": message}
    if cause:
        error["details"] = [dict(cause)]
    return error


def too_large(ts: TargetState, cx: Context, limit: int) -> TargetState:
    """The target ended because the request's poll state, with it, passed what one Service
    Bus message carries (`limit` bytes: its operation URL or linked databases are kept
    verbatim and cannot be cut); the event says whether its flush went out and may still run
    (docs/design.md, "Poll message")."""
    sent = ts.accepted_at is not None or ts.in_doubt or ts.phase == "poll"
    what = ("ARM accepted its flush, which may still run (or has run): it was not followed "
            "further" if sent else "its flush request was not sent")
    url = "kept in the ledger" if ts.poll_ref else f"{len(ts.poll_url or '')} characters"
    return end_target(ts, cx, lro.FAILED, {
        "code": "PollStateTooLarge",
        "message": f"the request's poll state did not fit the {limit} bytes one Service Bus "
                   f"message carries (this cache's operation URL is {url}, with "
                   f"{len(ts.linked or ())} linked databases); {what}"},
        accepted=sent)


def operation_summary(operation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The OperationStatusResult fields the event carries (never a URL with signatures)."""
    if not isinstance(operation, Mapping) or not operation:
        return None
    summary = fit({k: operation[k] for k in _OPERATION_FIELDS if k in operation},
                  OPERATION_BYTES)
    return summary if isinstance(summary, dict) else None
