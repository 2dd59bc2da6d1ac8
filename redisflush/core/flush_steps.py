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

from ..errors import ValidationError
from . import cadence, lro
from .answers import UNTRUSTED_URL, ArmAnswer, ArmFailure, error_detail, text_or_none
from .commands import (
    CallArm,
    Claimed,
    ClaimTarget,
    Command,
    Deferred,
    Learn,
    RecordTarget,
    Result,
)
from .events import Outcome, exact, parse_iso_or_none
from .fit import fit
from .frozen import replace
from .ledger_rules import expiry
from .state import TargetState
from .targets import ENTERPRISE, in_scopes, parse_database_id, parse_resource_id

MAX_BAD = 3  # unusable status answers are retried at most 3 times
OPERATION_BYTES, ERROR_BYTES = 2048, 4096
_OPERATION_FIELDS = ("id", "name", "status", "percentComplete", "startTime", "endTime", "error")


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


class Context:
    """What a target's answer is judged with: now, the deadline, settings, the read budget."""

    def __init__(self, now: dt.datetime, deadline: dt.datetime, endpoint: str,
                 scopes: tuple[str, ...], budget: cadence.ReadBudget | None) -> None:
        self.now, self.deadline, self.endpoint = now, deadline, endpoint
        self.scopes, self.budget = scopes, budget
        self.records: list[Command] = []

    def at(self, delay: float, retry_after: float | None = None) -> dt.datetime:
        return cadence.next_time(self.now, delay, retry_after, self.deadline)

    def sent(self, answer: ArmAnswer) -> dt.datetime:
        """When the request behind `answer` left (its answer came back now)."""
        return self.now - dt.timedelta(seconds=max(0.0, min(answer.elapsed, 60.0)))

    def read_gap_from(self, answer: ArmAnswer, gap: float | None = None) -> dt.datetime:
        """The next status read one gap after this one was *sent* (not after its answer came
        back), so reads keep their cadence whatever ARM's latency, never sooner than
        Retry-After (counted from the answer)."""
        wait = cadence.poll_gap(self.budget) if gap is None else gap
        due = cadence.next_time(self.sent(answer), wait, None, self.deadline)
        after = lro.retry_after(answer.headers, self.now)
        return max(due, self.at(0.0, after)) if after is not None else max(due, self.now)

    def first_read_from(self, answer: ArmAnswer, kind: str) -> dt.datetime:
        """A new operation's first status read (cadence.first_read_gap), counted like every
        other read from when the POST was sent, never sooner than Retry-After."""
        return self.read_gap_from(answer, cadence.first_read_gap(self.budget, kind))


def on_answer(ts: TargetState, result: Result, cx: Context) -> TargetState:
    """The target after one answer (its ledger writes go to `cx.records`)."""
    if isinstance(result, Deferred):
        wait = cadence.capped(result.wait)
        late = wait >= (cx.deadline - cx.now).total_seconds()
        if cx.now >= cx.deadline or (late and ts.phase != "poll"):
            return _end(ts, cx, "TimedOut", _timed_out_error(ts))
        return replace(ts, due=cx.at(wait), paced=True)
    if isinstance(result, Claimed):
        return _on_claim(ts, result, cx)
    if isinstance(result, (ArmAnswer, ArmFailure)):
        sent = not isinstance(result, ArmFailure) or result.sent
        ts = replace(ts, arm_requests=ts.arm_requests + int(sent), paced=False)
        handler = {"read": _on_read, "post": _on_post, "poll": _on_poll}[ts.phase]
        return handler(ts, result, cx)
    raise TypeError(f"no answer of type {type(result).__name__} for phase {ts.phase}")


def timed_out(ts: TargetState, cx: Context) -> TargetState:
    return _end(ts, cx, "TimedOut", _timed_out_error(ts))


# -- phases -------------------------------------------------------------------------------

def _on_read(ts: TargetState, r: ArmAnswer | ArmFailure, cx: Context) -> TargetState:
    if isinstance(r, ArmFailure) or lro.is_transient(r.status):
        return _transient(ts, r, cx)
    if r.status != 200:
        return _end(ts, cx, lro.FAILED, _http_error(r))
    linked = linked_databases(r.body, ts.target.key)
    if linked is None:
        return _bad(ts, cx, "DatabaseInvalidJson")
    return _check_linked(replace(ts, linked=linked, phase="claim", due=cx.now, failures=0,
                                 bad_polls=0), cx)


def linked_databases(body: bytes, own_key: str) -> tuple[str, ...] | None:
    """`properties.geoReplication.linkedDatabases[].id` minus the database itself, as given
    (Azure compares these ids with case); None when the body is not a database resource."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("properties", {}), dict):
        return None
    geo = doc.get("properties", {}).get("geoReplication") or {}
    if not isinstance(geo, dict):
        return None
    items = geo.get("linkedDatabases")
    if not isinstance(items, (list, type(None))):
        return None
    ids = [i.get("id") for i in items or [] if isinstance(i, dict)]
    return tuple(dict.fromkeys(i for i in ids if isinstance(i, str) and i.lower() != own_key))


def _check_linked(ts: TargetState, cx: Context, then: str = "; nothing was flushed"
                  ) -> TargetState:
    """A linked database is flushed too: it must be a database id inside the allowed scopes."""
    for linked in ts.linked or ():
        try:
            target = parse_resource_id(parse_database_id(linked, "linkedDatabaseIds"))
        except ValidationError:  # ARM gave something other than a database id
            target = None
        if target is None or not in_scopes(target, cx.scopes):
            return _end(ts, cx, "Rejected", {
                "code": "LinkedDatabaseNotAllowed", "target": "linkedDatabaseIds",
                "message": f"linked database {linked[:300]} is not a Managed Redis database "
                           f"inside REDISFLUSH_ALLOWED_SCOPES{then}"})
    return ts


def refused(ts: TargetState, cx: Context) -> TargetState | None:
    """A target about to be POSTed (its claim held), ended Rejected when it or a linked
    database is outside the allowed scopes: a poll message is input too (another sender on
    the poll queue, or the setting narrowed since the request came), and arrival checked only
    the request's own ids. Only here: a claim still to be answered may adopt a flush another
    delivery got accepted, which is followed to its end. None when it may go on."""
    if ts.phase != "post":
        return None
    again = ("; an earlier attempt of it failed and, if that one reached ARM, may have run"
             if ts.failures else "; nothing was flushed")
    if not in_scopes(ts.target, cx.scopes):
        return _end(ts, cx, "Rejected", {
            "code": "OutsideAllowedScopes", "target": "resourceId",
            "message": f"{ts.target.resource_id} is outside the scopes this app may flush "
                       "(REDISFLUSH_ALLOWED_SCOPES, which may have changed since the request "
                       f"came): its flush request was not sent{again}"})
    checked = _check_linked(ts, cx, again)
    return checked if checked.phase == "done" else None


def adopt_accepted(ts: TargetState, d: Mapping[str, Any], now: dt.datetime) -> TargetState:
    """Follow the operation a ledger row records as accepted by ARM (its POST is not sent
    again): read from `now`."""
    return replace(ts, phase="poll", due=now, poll_url=str(d.get("pollUrl")),
                   poll_kind=str(d.get("pollKind")),
                   accepted_at=parse_iso_or_none(d.get("acceptedAt")),
                   # what that POST carried, [] included (a share of a group); a row
                   # without it: this delivery's reading of the group
                   linked=tuple(d["linked"]) if isinstance(d.get("linked"), list)
                   else tuple(ts.linked or ()), last_status="Accepted",
                   arm_requests=max(ts.arm_requests, int(d.get("armRequests") or 0)),
                   stored=True)


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
    return _end(ts, cx, lro.FAILED, {
        "code": "FlushInDoubt",
        "message": "this cache's flush request went out twice with no answer from ARM (the "
                   "app stopped while it was in flight, or its answer was lost), so it may "
                   "or may not have run; it is not sent again"}, accepted=True)


def _on_post(ts: TargetState, r: ArmAnswer | ArmFailure, cx: Context) -> TargetState:
    if isinstance(r, ArmFailure) or lro.is_transient(r.status):
        # a POST in doubt may have started the flush: every later end of it says so
        ts = _transient(replace(ts, in_doubt=ts.in_doubt or _in_doubt(r)), r, cx)
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
            return _end(ts, cx, lro.FAILED, {
                "code": "FlushAnswerUnusable", "httpStatus": r.status,
                "message": f"ARM answered {r.status} to the flush with a body that is not a "
                           "JSON object, so whether the cache was flushed is unknown"})
        reading = lro.LocationPolling().read(200, r.body)
        status = reading.status if reading.state == "terminal" else lro.SUCCEEDED
        return _end(ts, cx, status or lro.SUCCEEDED, None, reading.operation, accepted=True)
    return _end(ts, cx, lro.FAILED, _http_error(r))


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
        return _end(ts, cx, lro.FAILED, {
            "code": "NoOperationUrl", "message": f"ARM answered {r.status} to the flush "
            "without an Azure-AsyncOperation or Location header, so it cannot be followed"},
            accepted=True)
    if not lro.is_trusted(found[1], cx.endpoint):
        return _untrusted(ts, found[1], cx)
    ts = replace(ts, phase="poll", poll_kind=found[0], poll_url=found[1], accepted_at=cx.now,
                 last_status="Accepted", failures=0, stored=True,
                 due=cx.first_read_from(r, ts.target.kind))
    cx.records.append(_accepted_record(ts, cx.deadline))
    return ts


def _accepted_record(ts: TargetState, deadline: dt.datetime) -> RecordTarget:
    """The `accepted` row of a target ARM took: its operation, followed by a redelivery or
    read back for a target carried by reference (docs/design.md, "Request ledger")."""
    return RecordTarget(ts.target.key, "accepted", {
        "pollUrl": ts.poll_url, "pollKind": ts.poll_kind, "acceptedAt": exact(ts.accepted_at),
        "linked": list(ts.linked or ()), "armRequests": ts.arm_requests}, expiry(deadline))


def _on_poll(ts: TargetState, r: ArmAnswer | ArmFailure, cx: Context) -> TargetState:
    if isinstance(r, ArmFailure) and r.code == UNTRUSTED_URL:
        return _untrusted(ts, ts.poll_url or "", cx)
    if isinstance(r, ArmAnswer) and ts.poll_kind == "location" and r.status >= 400 \
            and r.status not in (408, 429) and error_detail(r.body) is not None:
        return _operation_error(ts, r, cx)
    ts = replace(ts, location_error=None, location_errors=0)  # any other answer ends a run
    if isinstance(r, ArmFailure) or lro.is_transient(r.status):
        return _transient(ts, r, cx)
    if not 200 <= r.status < 300:
        return _bad(ts, cx, f"OperationStatusHttp{r.status}", _http_error(r))
    reading = lro.strategy(ts.poll_kind or "").read(r.status, r.body)
    if reading.state == "bad":
        return _bad(ts, cx, reading.problem or "OperationStatusInvalid")
    ts = replace(ts, bad_polls=0, failures=0, last_status=reading.status,
                 last_operation=_summary(reading.operation) or ts.last_operation)
    if reading.state == "terminal":
        if reading.status == lro.SUCCEEDED:
            _learn(ts, cx.sent(r), cx)
        return _end(ts, cx, reading.status or lro.FAILED, None, reading.operation, accepted=True)
    ts = replace(ts, running_at=cx.sent(r))
    if cx.now >= cx.deadline:
        return timed_out(ts, cx)
    moved = lro.poll_target(r.headers, r.url) if r.status == 202 else None
    if moved and moved != (ts.poll_kind, ts.poll_url):
        if not lro.is_trusted(moved[1], cx.endpoint):
            return _untrusted(ts, moved[1], cx)
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


# -- shared rules -------------------------------------------------------------------------

def _transient(ts: TargetState, r: ArmAnswer | ArmFailure, cx: Context) -> TargetState:
    """No answer, or 408/409/429/5xx: the same call again later, never before Retry-After."""
    if isinstance(r, ArmFailure):
        error, after = {"code": r.code, "message": r.message}, r.retry_after
    else:
        error, after = _http_error(r), lro.retry_after(r.headers, cx.now)
    failures = ts.failures + 1
    delay = cadence.retry_delay(failures, f"{ts.target.key}:{ts.arm_requests}")
    wait = max(cadence.capped(delay), cadence.capped(after))
    if ts.phase != "poll" and cx.now + dt.timedelta(seconds=wait) >= cx.deadline:
        return _end(ts, cx, "TimedOut", _timed_out_error(ts, error))
    if cx.now >= cx.deadline:
        return _end(ts, cx, "TimedOut", _timed_out_error(ts, error))
    return replace(ts, failures=failures, due=cx.at(delay, after))


def _operation_error(ts: TargetState, r: ArmAnswer, cx: Context) -> TargetState:
    """An ARM ErrorResponse to a Location poll: how Location polling reports an operation
    that failed (docs/design.md, "What ARM really does"), and also how a status read that failed for
    now (409 busy, a 5xx) looks. Read again with backoff; the same answer MAX_BAD more times
    in a row ends the flush Failed with ARM's own error (a transient one would have passed;
    taken as transient, a failed operation would be read until the deadline and end TimedOut).
    Only the same status and code counts: a run of different errors is a status URL failing
    for now."""
    error = _http_error(r)
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
        return _end(ts, cx, lro.CANCELED if canceled else lro.FAILED, error, ts.last_operation,
                    accepted=True)
    if cx.now >= cx.deadline:
        return timed_out(ts, cx)
    # read again as after any transient failure: the backoff grows with every failed read
    return replace(_transient(ts, r, cx), location_error=key, location_errors=seen)


def _bad(ts: TargetState, cx: Context, code: str,
         arm_error: Mapping[str, Any] | None = None) -> TargetState:
    bad = ts.bad_polls + 1
    if bad > MAX_BAD:
        error: dict[str, Any] = {"code": code, "message": f"ARM gave {bad} unusable answers "
                                 f"in a row ({code})"}
        if arm_error:
            error["details"] = [dict(arm_error)]
        return _end(ts, cx, lro.FAILED, error, ts.last_operation,
                    accepted=ts.accepted_at is not None)
    if cx.now >= cx.deadline:
        return timed_out(ts, cx)
    return replace(ts, bad_polls=bad, due=cx.at(cadence.retry_delay(bad, f"{ts.target.key}:b")))


def _end(ts: TargetState, cx: Context, status: str, error: Mapping[str, Any] | None,
         operation: Mapping[str, Any] | None = None, *, accepted: bool = False) -> TargetState:
    summary = _summary(operation) or ts.last_operation
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


def _timed_out_error(ts: TargetState, cause: Mapping[str, Any] | None = None
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
    return _end(ts, cx, lro.FAILED, {
        "code": "PollStateTooLarge",
        "message": f"the request's poll state did not fit the {limit} bytes one Service Bus "
                   f"message carries (this cache's operation URL is {url}, with "
                   f"{len(ts.linked or ())} linked databases); {what}"},
        accepted=sent)


def url_digest(url: str) -> str:
    """What a poll message carries of an operation URL kept in the ledger (`poll_ref`)."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def by_reference(ts: TargetState, deadline: dt.datetime) -> tuple[TargetState, list[Command]]:
    """A target ARM accepted, its operation URL left out of the poll message: the ledger's
    accepted row keeps it, and the step that next reads the target reads it back
    (`from_ledger`; docs/design.md, "Poll message"). A URL this invocation does not know
    the row holds (ARM moved the operation since, or the row was read by no one yet) is
    recorded first; the record goes before the message that leaves it out."""
    assert ts.phase == "poll" and ts.poll_url is not None
    records: list[Command] = [] if ts.stored else [_accepted_record(ts, deadline)]
    return replace(ts, poll_url=None, poll_ref=url_digest(ts.poll_url), stored=False), records


LEDGER_TRIES = 3  # a ledger that cannot be read back is tried this many times in a row


def from_ledger(ts: TargetState, status: str, row: tuple[str, Mapping[str, Any]] | None,
                cx: Context) -> TargetState:
    """A target carried by reference (`by_reference`) after the ledger's rows were read
    (`status` as `Opened` gives it; `row`, its own row). Its URL back when the accepted row
    holds the URL the message names; its recorded outcome when the row is done (another
    delivery or a repeat ended it); read again later when the ledger could not be read;
    else it ends Failed `PollStateTooLarge`, saying why and that its flush may still run.
    Never POSTed again (docs/design.md, "Poll message")."""
    if status == "unknown":  # the ledger failed the read: no row to judge
        failures = ts.failures + 1
        if cx.now >= cx.deadline:
            return timed_out(ts, cx)
        if failures < LEDGER_TRIES:
            return replace(ts, failures=failures,
                           due=cx.at(cadence.retry_delay(failures, f"{ts.target.key}:ref")))
        why = f"the ledger could not be read {failures} times in a row"
    elif row is not None and row[0] == "done" and isinstance(row[1].get("outcome"), Mapping):
        outcome = Outcome.from_json(row[1]["outcome"])
        return replace(ts, phase="done", outcome=outcome, arm_requests=outcome.arm_requests,
                       poll_ref=None)
    elif row is None or status != "same" or row[0] != "accepted":
        why = "the ledger holds no accepted row for it"
    elif not isinstance(row[1].get("pollUrl"), str) or \
            url_digest(row[1]["pollUrl"]) != ts.poll_ref or \
            row[1].get("pollKind") not in ("azure-asyncoperation", "location"):
        why = "the ledger's accepted row holds another operation URL"
    else:
        return replace(ts, poll_url=row[1]["pollUrl"], poll_kind=row[1]["pollKind"],
                       poll_ref=None, stored=True)
    return _end(replace(ts, poll_ref=None), cx, lro.FAILED, {
        "code": "PollStateTooLarge",
        "message": "the request's poll state did not fit one Service Bus message, so this "
                   "cache's operation URL was kept in the ledger only, and "
                   f"{why}: ARM accepted its flush, which may still run (or has run); it was "
                   "not followed further"}, accepted=True)


def _untrusted(ts: TargetState, url: str, cx: Context) -> TargetState:
    return _end(ts, cx, lro.FAILED, {
        "code": "UntrustedOperationUrl",
        "message": f"ARM pointed the operation at {lro.redact_url(url)}, which is not the "
                   "configured ARM endpoint's scheme, host and port; no token was sent there"},
        accepted=ts.accepted_at is not None or ts.phase == "post")


def _http_error(r: ArmAnswer) -> dict[str, Any]:
    """ARM's ErrorDetail with `httpStatus`; a code or message that is not text (ARM's JSON
    may hold any value) gives way to ours, as an operation's error does (README, "Events")."""
    detail = error_detail(r.body) or {}
    return {"code": text_or_none(detail.get("code")) or f"Http{r.status}",
            "message": text_or_none(detail.get("message")) or f"ARM answered HTTP {r.status}",
            **{k: v for k, v in detail.items() if k not in ("code", "message")},
            "httpStatus": r.status}


def _summary(operation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The OperationStatusResult fields the event carries (never a URL with signatures)."""
    if not isinstance(operation, Mapping) or not operation:
        return None
    summary = fit({k: operation[k] for k in _OPERATION_FIELDS if k in operation},
                  OPERATION_BYTES)
    return summary if isinstance(summary, dict) else None
