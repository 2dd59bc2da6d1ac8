"""Keeping the poll state under the message limit (docs/design.md, "Poll message"): with 50
targets and 2 KiB signed URLs it must stay under 192 KiB, whatever ARM put in its answers.

Targets already reported keep only what the request's event needs (status, time, a short
error; not their operation URL); then every target's ARM JSON is cut to a shrinking budget
until the state fits. Operation URLs of targets still followed are never cut: they are used
verbatim (core.next_message carries accepted ones by reference to the ledger, then ends a
target, when even this does not fit).
"""
from __future__ import annotations

from .events import Outcome
from .fit import fit
from .frozen import replace
from .state import RunState, TargetState


def _short(ts: TargetState, budget: int) -> TargetState:
    outcome = ts.outcome
    if outcome is not None:
        error = fit(dict(outcome.error), budget) if outcome.error else None
        operation = None if ts.reported else fit(dict(outcome.operation), budget) \
            if outcome.operation else None
        outcome = Outcome(outcome.status, outcome.completed_at, error, operation,
                          outcome.accepted_at, outcome.arm_requests, outcome.linked)
    operation = fit(dict(ts.last_operation), budget) if ts.last_operation else None
    if ts.phase == "done" and ts.reported:
        # nothing reads an ended target's operation URL again, and a signed one is KBs; nor
        # its linked ids (its outcome keeps those its flush carried, which others' shares read)
        return replace(ts, outcome=outcome, last_operation=operation, poll_url=None,
                       poll_kind=None, poll_ref=None, linked=())
    return replace(ts, outcome=outcome, last_operation=operation)


def compact(state: RunState, max_bytes: int) -> RunState:
    if len(state.to_json()) <= max_bytes:
        return state
    budget = 4096
    while budget >= 64:
        shorter = replace(state, targets=tuple(_short(t, budget) for t in state.targets))
        if len(shorter.to_json()) <= max_bytes:
            return shorter
        budget //= 2
    return replace(state, targets=tuple(replace(_short(t, 64), last_operation=None)
                                        for t in state.targets))
