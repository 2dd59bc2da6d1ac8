"""One target's step: the call it needs now, and what each answer means for it.

Per target (docs/design.md, "What ARM really does"): a Managed Redis database first reads its
resource to learn its geo-replication group; then its ledger row is claimed; then the flush
POST; then status reads until a terminal status, the deadline, or an unusable URL.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from . import cadence, lro
from .accepted_row import accepted_record, adopt_accepted
from .answers import UNTRUSTED_URL, ArmAnswer, ArmFailure, error_detail
from .arm_failures import MAX_BAD, http_error, transient, untrusted, unusable_answer
from .commands import CallArm, Claimed, ClaimTarget, Command, Deferred, Learn, RecordTarget, Result
from .decision import Context
from .events import Outcome
from .frozen import replace
from .ledger_rules import expiry
from .linked_databases import check_linked, linked_databases
from .state import TargetState
from .target_end import end_target, operation_summary, timed_out, timed_out_error
from .targets import ENTERPRISE


def call_for(ts: TargetState, *, request_id: str, step: int, endpoint: str,
             api_version: str, enterprise_api_version: str, deadline: dt.datetime
             ) -> Command | None:
    """The command this target needs now (it is due and not done)."""
    t = ts.target
    version = enterprise_api_version if t.kind == ENTERPRISE else api_version
    ref, client_id = f"t{ts.index}:{ts.phase}", f"{request_id}:{ts.index}.{step}"
    if ts.phase == "read":
        return CallArm(ref, "GET", t.resource_url(endpoint, version), t.subscription_id,
                       client_id, paced=ts.paced, max_inline_wait=cadence.MAX_INLINE_WAIT)
    if ts.phase == "claim":
        return ClaimTarget(ref, t.key, expiry(deadline))
    if ts.phase == "post":
        body = json.dumps({"ids": list(ts.linked or ())}).encode() \
            if t.kind == ENTERPRISE else None
        return CallArm(ref, "POST", t.flush_url(endpoint, version), t.subscription_id,
                       client_id, body, ts.paced, cadence.MAX_INLINE_WAIT)
    if ts.phase == "poll":
        return CallArm(ref, "GET", ts.poll_url or "", t.subscription_id, client_id,
                       paced=ts.paced, max_inline_wait=cadence.MAX_INLINE_WAIT)
    return None


def on_answer(ts: TargetState, result: Result, cx: Context) -> TargetState:
    """The target after one answer (its ledger writes go to `cx.records`)."""
    if isinstance(result, Deferred):
        wait = cadence.capped(result.wait)
        late = wait >= (cx.deadline - cx.now).total_seconds()
        if cx.now >= cx.deadline or (late and ts.phase != "poll"):
            return end_target(ts, cx, "TimedOut", timed_out_error(ts))
        return replace(ts, due=cx.at(wait), paced=True)
    if isinstance(result, Claimed):
        return _on_claim(ts, result, cx)
    if isinstance(result, (ArmAnswer, ArmFailure)):
        sent = not isinstance(result, ArmFailure) or result.sent
        ts = replace(ts, arm_requests=ts.arm_requests + int(sent), paced=False)
        handler = {"read": _on_read, "post": _on_post, "poll": _on_poll}[ts.phase]
        return handler(ts, result, cx)
    raise TypeError(f"no answer of type {type(result).__name__} for phase {ts.phase}")


# -- phases -------------------------------------------------------------------------------

def _on_read(ts: TargetState, r: ArmAnswer | ArmFailure, cx: Context) -> TargetState:
    if isinstance(r, ArmFailure) or lro.is_transient(r.status):
        return transient(ts, r, cx)
    if r.status != 200:
        return end_target(ts, cx, lro.FAILED, http_error(r))
    linked = linked_databases(r.body, ts.target.key)
    if linked is None:
        return unusable_answer(ts, cx, "DatabaseInvalidJson")
    return check_linked(replace(ts, linked=linked, phase="claim", due=cx.now, failures=0,
                                bad_polls=0), cx)


def _on_claim(ts: TargetState, c: Claimed, cx: Context) -> TargetState:
    ts = replace(ts, busy=False)
    if c.decision == "post":
        return replace(ts, phase="post", due=cx.now)
    if c.decision == "adopt-poll":
        return adopt_accepted(ts, c.data, cx.now)
    if c.decision == "adopt-done" and isinstance(c.data.get("outcome"), Mapping):
        return replace(ts, phase="done", outcome=Outcome.from_json(c.data["outcome"]))
    if c.decision == "busy" and c.until is not None:
        if cx.now >= cx.deadline:
            return timed_out(ts, cx)
        # at the deadline at the latest it claims once more (core.step): the other delivery
        # may have got the flush accepted, or ended it, in the meantime. The lease's time
        # left is counted from this step's now: judged on the shell's clock, which may be
        # behind the bus's, `until` may already have come by the bus's (docs/design.md,
        # "Clocks"), and a message scheduled for it would come back at once, claim after claim
        left = c.until - (c.judged_at or cx.now)
        return replace(ts, due=min(cx.now + left, cx.deadline), busy=True)
    # its linked databases went with each of those POSTs: they are in doubt too, and stay
    # its share of the group (no other member flushes them again)
    return end_target(ts, cx, lro.FAILED, {
        "code": "FlushInDoubt",
        "message": "this cache's flush request went out twice with no answer from ARM (the "
                   "app stopped while it was in flight, or its answer was lost), so it may "
                   "or may not have run; it is not sent again"}, accepted=True)


def _on_post(ts: TargetState, r: ArmAnswer | ArmFailure, cx: Context) -> TargetState:
    if isinstance(r, ArmFailure) or lro.is_transient(r.status):
        # a POST in doubt may have started the flush: every later end of it says so
        ts = transient(replace(ts, in_doubt=ts.in_doubt or _in_doubt(r)), r, cx)
        if ts.phase != "done":
            # The retry claims the row again: a redelivery of this request may have POSTed
            # in between (docs/design.md, "Request ledger"). A POST that may have reached ARM
            # keeps its claim (`posting`), as if this invocation had died with it in flight:
            # it is sent once more after the lease, never after a second one without an answer.
            if not _in_doubt(r):
                cx.records.append(RecordTarget(ts.target.key, "retry", {},
                                               expiry(cx.deadline)))
            ts = replace(ts, phase="claim")
        return ts
    if r.status == 202 or (200 <= r.status < 300 and _keeps_running(r)):
        return _accept(ts, r, cx)
    if 200 <= r.status < 300:
        if r.body.strip() and not isinstance(_json_or_none(r.body), dict):
            # not ARM's answer (ARM sends nothing or an OperationStatusResult): a proxy's or a
            # gateway's page says nothing of whether the cache was flushed
            return end_target(ts, cx, lro.FAILED, {
                "code": "FlushAnswerUnusable", "httpStatus": r.status,
                "message": f"ARM answered {r.status} to the flush with a body that is not a "
                           "JSON object, so whether the cache was flushed is unknown"})
        reading = lro.LocationPolling().read(200, r.body)
        status = reading.status if reading.state == "terminal" else lro.SUCCEEDED
        return end_target(ts, cx, status or lro.SUCCEEDED, None, reading.operation, accepted=True)
    return end_target(ts, cx, lro.FAILED, http_error(r))


def _in_doubt(r: ArmAnswer | ArmFailure) -> bool:
    """A POST that went out and got no answer of ARM's own (a timeout or a reset after it was
    sent, a gateway's 502 or 504): ARM may have accepted the flush."""
    if isinstance(r, ArmFailure):
        return r.sent
    return r.status in IN_DOUBT_STATUSES


IN_DOUBT_STATUSES = (502, 504)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _keeps_running(r: ArmAnswer) -> bool:
    return lro.AsyncOperationPolling().read(r.status, r.body).state == "running"


def _accept(ts: TargetState, r: ArmAnswer, cx: Context) -> TargetState:
    found = lro.poll_target(r.headers, r.url)
    if found is None:
        return end_target(ts, cx, lro.FAILED, {
            "code": "NoOperationUrl", "message": f"ARM answered {r.status} to the flush "
            "without an Azure-AsyncOperation or Location header, so it cannot be followed"},
            accepted=True)
    if not lro.is_trusted(found[1], cx.endpoint):
        return untrusted(ts, found[1], cx)
    ts = replace(ts, phase="poll", poll_kind=found[0], poll_url=found[1], accepted_at=cx.now,
                 last_status="Accepted", failures=0, stored=True,
                 due=cx.first_read_from(r, ts.target.kind))
    cx.records.append(accepted_record(ts, cx.deadline))
    return ts


def _on_poll(ts: TargetState, r: ArmAnswer | ArmFailure, cx: Context) -> TargetState:
    if isinstance(r, ArmFailure) and r.code == UNTRUSTED_URL:
        return untrusted(ts, ts.poll_url or "", cx)
    if isinstance(r, ArmAnswer) and ts.poll_kind == "location" and r.status >= 400 \
            and r.status not in (408, 429) and error_detail(r.body) is not None:
        return _operation_error(ts, r, cx)
    ts = replace(ts, location_error=None, location_errors=0)  # any other answer ends a run
    if isinstance(r, ArmFailure) or lro.is_transient(r.status):
        return transient(ts, r, cx)
    if not 200 <= r.status < 300:
        return unusable_answer(ts, cx, f"OperationStatusHttp{r.status}", http_error(r))
    reading = lro.strategy(ts.poll_kind or "").read(r.status, r.body)
    if reading.state == "bad":
        return unusable_answer(ts, cx, reading.problem or "OperationStatusInvalid")
    ts = replace(ts, bad_polls=0, failures=0, last_status=reading.status,
                 last_operation=operation_summary(reading.operation) or ts.last_operation)
    if reading.state == "terminal":
        if reading.status == lro.SUCCEEDED:
            _learn(ts, cx.sent(r), cx)
        return end_target(ts, cx, reading.status or lro.FAILED, None, reading.operation,
                          accepted=True)
    ts = replace(ts, running_at=cx.sent(r))
    if cx.now >= cx.deadline:
        return timed_out(ts, cx)
    moved = lro.poll_target(r.headers, r.url) if r.status == 202 else None
    if moved and moved != (ts.poll_kind, ts.poll_url):
        if not lro.is_trusted(moved[1], cx.endpoint):
            return untrusted(ts, moved[1], cx)
        # the ledger's accepted row still names the URL it moved from
        ts = replace(ts, poll_kind=moved[0], poll_url=moved[1], stored=False)
    gap = cadence.next_read_gap(cx.budget, ts.target.kind)
    ts = replace(ts, polls=ts.polls + 1)
    return _after_progress(ts, cx.read_gap_from(r, gap), cx.sent(r), gap, reading, cx)


def _after_progress(ts: TargetState, due: dt.datetime, sent: dt.datetime, gap: float,
                    reading: lro.Reading, cx: Context) -> TargetState:
    """The next read moved by the operation's percentComplete (cadence.after_progress);
    Retry-After and the deadline still bound it. A reading that says nothing (a 99 held until
    the end, none at all) keeps the end an earlier one projected, until that end has passed."""
    if ts.accepted_at is None:
        return replace(ts, due=due, projected_end=None)
    base = ts.accepted_at

    def age(moment: dt.datetime) -> float:
        return (moment - base).total_seconds()

    percent = reading.operation.get("percentComplete") \
        if isinstance(reading.operation, Mapping) else None
    end = cadence.progress_end(age(sent), percent)
    if end is None:
        end = cadence.still_ahead(ts.projected_end, age(sent))
    moved = cadence.after_progress(age(sent), age(due), end, gap, cx.budget)
    if moved > age(due):
        # capped as seconds first: a projection from a tampered state may pass datetime's range
        due = base + dt.timedelta(seconds=min(moved, age(cx.deadline)))
    return replace(ts, due=due, projected_end=end)


def _learn(ts: TargetState, ended_by: dt.datetime, cx: Context) -> None:
    """What this flush says of how long flushes of its kind take here (core/durations.py)."""
    if ts.accepted_at is None:
        return
    hi = (ended_by - ts.accepted_at).total_seconds()
    lo = None if ts.running_at is None else (ts.running_at - ts.accepted_at).total_seconds()
    cx.records.append(Learn(ts.target.subscription_id, ts.target.kind, lo, hi))


def _operation_error(ts: TargetState, r: ArmAnswer, cx: Context) -> TargetState:
    """An ARM ErrorResponse to a Location poll: how Location polling reports an operation
    that failed (docs/design.md, "What ARM really does"), and also how a status read that failed for
    now (409 busy, a 5xx) looks. Read again with backoff; the same answer MAX_BAD more times
    in a row ends the flush Failed with ARM's own error (a transient one would have passed;
    taken as transient, a failed operation would be read until the deadline and end TimedOut).
    Only the same status and code counts: a run of different errors is a status URL failing
    for now."""
    error = http_error(r)
    code = error["code"]
    if not isinstance(code, str) or len(code) > 128:
        # ARM's code may be any JSON of any size, and the key rides in every poll message
        code = "sha256:" + hashlib.sha256(repr(code).encode()).hexdigest()[:16]
    key = f"{r.status}:{code}"
    # a poll message of 65a10d8 or before keeps any code whole: the run it counted goes on
    # (docs/design.md, "Upgrades and rollbacks")
    seen = ts.location_errors + 1 if ts.location_error in (key, f"{r.status}:{error['code']}") \
        else 1
    if seen > MAX_BAD:
        canceled = str(error["code"]).lower() in ("operationcanceled", "canceled")
        return end_target(ts, cx, lro.CANCELED if canceled else lro.FAILED, error,
                          ts.last_operation, accepted=True)
    if cx.now >= cx.deadline:
        return timed_out(ts, cx)
    # read again as after any transient failure: the backoff grows with every failed read
    return replace(transient(ts, r, cx), location_error=key, location_errors=seen)
