"""A target's `accepted` ledger row: written when ARM takes its flush, adopted by a later
delivery instead of a second POST, and read back for a target carried by reference
(docs/design.md, "Request ledger", "Poll message")."""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from . import cadence, lro
from .commands import Command, RecordTarget
from .decision import Context
from .events import Outcome, exact, parse_iso_or_none
from .frozen import replace
from .ledger_rules import expiry
from .state import TargetState
from .target_end import end_target, timed_out


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


def accepted_record(ts: TargetState, deadline: dt.datetime) -> RecordTarget:
    """The `accepted` row of a target ARM took: its operation, followed by a redelivery or
    read back for a target carried by reference (docs/design.md, "Request ledger")."""
    return RecordTarget(ts.target.key, "accepted", {
        "pollUrl": ts.poll_url, "pollKind": ts.poll_kind, "acceptedAt": exact(ts.accepted_at),
        "linked": list(ts.linked or ()), "armRequests": ts.arm_requests}, expiry(deadline))


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
    records: list[Command] = [] if ts.stored else [accepted_record(ts, deadline)]
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
        failures = ts.ref_failures + 1
        if cx.now >= cx.deadline:
            return timed_out(ts, cx)
        if failures < LEDGER_TRIES:
            return replace(ts, ref_failures=failures,
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
                       poll_ref=None, ref_failures=0, stored=True)
    return end_target(replace(ts, poll_ref=None, ref_failures=0), cx, lro.FAILED, {
        "code": "PollStateTooLarge",
        "message": "the request's poll state did not fit one Service Bus message, so this "
                   "cache's operation URL was kept in the ledger only, and "
                   f"{why}: ARM accepted its flush, which may still run (or has run); it was "
                   "not followed further"}, accepted=True)
