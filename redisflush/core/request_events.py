"""What a request announces: each target's event, the request's end (recorded before its
events), and the Rejected event of a request refused."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from .commands import Command, Publish, RecordRequest, RecordTarget, Reply, StoreTargets
from .decision import Config, Decision
from .events import (
    REJECTED_SOURCE,
    Outcome,
    event_message,
    exact,
    flush_completed,
    parse_iso,
    rejected_event_id,
    request_completed,
)
from .fit import fit
from .frozen import replace
from .ledger_rules import expiry
from .request import Origin, Rejection, earlier_fingerprints
from .state import RunState
from .target_end import ERROR_BYTES
from .targets import Target, scope_overlaps


def end_record(completed_at: dt.datetime, arm_requests: int, **outcome: Any) -> dict[str, Any]:
    """What the request row keeps of the request's end, so a repeat's events say the same
    (docs/design.md, "Request ledger"); `outcome` for a request that ended as a whole."""
    return {"completedAt": exact(completed_at), "armRequests": arm_requests, **outcome}


def request_end(state: RunState, ended: Mapping[str, Any]) -> list[Command]:
    """The event of a request that ended as a whole (rejected selector, failed listing),
    from what its row recorded."""
    origin = state.origin
    error = ended.get("error")
    event = request_completed(origin, str(ended.get("scope") or request_scope(state)), [],
                              completed_at=parse_iso(str(ended["completedAt"])),
                              arm_requests=int(ended.get("armRequests") or 0),
                              status=str(ended["status"]),
                              error=error if isinstance(error, Mapping) else None)
    return _announce(event, origin, None, state.reply_tag)


def _announce(event: Mapping[str, Any], origin: Origin, target: Target | None,
              tag: str | None = None) -> list[Command]:
    """An event on the topic, and its copy to the request's ReplyTo when it has one."""
    commands: list[Command] = [Publish(event_message(event, origin, target))]
    if origin.reply_to:
        commands.append(Reply(origin.reply_to, event_message(event, origin, target,
                                                             session=True, tag=tag)))
    return commands


def request_scope(state: RunState) -> str:
    if state.selector is not None:
        return state.selector.scope
    return scope_of([t.target for t in state.targets])


def scope_of(targets: Sequence[Target]) -> str:
    """A request's scope: the one resource group its caches share, else their one
    subscription, else /subscriptions (docs/design.md, "Completion events")."""
    subs = {t.subscription_id for t in targets}
    groups = {t.scope for t in targets}
    if len(groups) == 1:
        return groups.pop()
    return f"/subscriptions/{subs.pop()}" if len(subs) == 1 else "/subscriptions"


def is_single(state: RunState) -> bool:
    return state.selector is None and len(state.targets) == 1


def report_ended(state: RunState, now: dt.datetime, ended: Mapping[str, Any] | None = None
                 ) -> Decision:
    """Each target's event as soon as it is over; the request's when the last one is (a
    repeat's with the end its row recorded: `ended`). Every target's record comes before the
    first event: a publish that fails (or a stop after it) leaves each ended target recorded,
    so the redelivery re-announces what the rows keep instead of POSTing again or reading
    ARM anew (docs/design.md, "Request ledger"); the request's own end likewise."""
    records: list[Command] = []
    events: list[Command] = []
    count, origin = len(state.targets), state.origin
    for ts in state.targets:
        if ts.outcome is None or ts.reported:
            continue
        event = flush_completed(origin, ts.target, ts.outcome, index=ts.index, count=count,
                                batch=not is_single(state))
        records.append(RecordTarget(ts.target.key, "done", {"outcome": ts.outcome.to_json()},
                                    expiry(state.deadline)))
        events.append(Publish(event_message(event, origin, ts.target)))
        if is_single(state) and origin.reply_to:
            events.append(Reply(origin.reply_to,
                                event_message(event, origin, ts.target, session=True,
                                              tag=state.reply_tag)))
        state = state.with_target(replace(ts, reported=True))
    if state.phase == "run" and state.targets and \
            all(t.phase == "done" for t in state.targets) and not state.reported:
        completed_at, arm_requests = now, state.total_arm_requests
        if ended is not None:
            completed_at = parse_iso(str(ended["completedAt"]))
            arm_requests = int(ended.get("armRequests") or 0)
        if not is_single(state):
            results = [(t.target, t.outcome) for t in state.targets if t.outcome]
            event = request_completed(origin, request_scope(state), results,
                                      completed_at=completed_at, arm_requests=arm_requests)
            events.extend(_announce(event, origin, None, state.reply_tag))
        # recorded before its events too: a redelivery reads it back (`on_rows`) and
        # announces the same end
        records.append(RecordRequest("done", {"fingerprint": state.fingerprint,
                                              "ended": end_record(completed_at, arm_requests)},
                                     expiry(state.deadline)))
        state = replace(state, reported=True, phase="done")
    return state, records + events


def rejected_on_arrival(rejection: Rejection, now: dt.datetime) -> list[Command]:
    """The Rejected event of a request refused before the ledger saw it, under an id its
    corrected resend cannot need (core.events.rejected_event_id)."""
    return rejection_commands(rejection, now, event_id=rejected_event_id(rejection.origin))


def rejection_commands(rejection: Rejection, now: dt.datetime, *, selector_scope: str | None
                       = None, event_id: str | None = None, arm_requests: int = 0,
                       reply_tag: str | None = None) -> list[Command]:
    """The Rejected event of a request (no ledger row: a rejected request claims nothing)."""
    origin, targets = rejection.origin, rejection.targets
    error = rejection_error(rejection)
    selector_scope = selector_scope or rejection.scope
    if selector_scope is None and len(targets) <= 1 and not rejection.batch:
        target = targets[0] if targets else None
        event = flush_completed(origin, target, Outcome("Rejected", now, error),
                                event_id=event_id)
    else:
        scope = selector_scope or (scope_of(targets) if targets else REJECTED_SOURCE)
        event = request_completed(origin, scope, [], completed_at=now, arm_requests=arm_requests,
                                  status="Rejected", error=error, event_id=event_id)
        target = None
    return _announce(event, origin, target, reply_tag)


def rejection_error(rejection: Rejection) -> dict[str, str]:
    return {"code": rejection.code, "message": rejection.message, "target": rejection.field}


def request_failed(state: RunState, now: dt.datetime, status: str, code: str, message: str
                   ) -> Decision:
    """The request ends before it had targets (a selector that could not be resolved)."""
    # ARM's words, cut by bytes as a target's are: the request row holds this end
    # (docs/design.md, "Request ledger"), and a row over the store's limit would raise
    ended = end_record(now, state.total_arm_requests, status=status, scope=request_scope(state),
                       error=fit({"code": code, "message": message}, ERROR_BYTES))
    return state, end_unresolved(state, ended)


def selector_outside(state: RunState, now: dt.datetime, config: Config) -> Decision | None:
    """A selector wholly outside REDISFLUSH_ALLOWED_SCOPES is not listed (docs/design.md,
    "Security rules"): arrival refuses one, and a poll message is input too (another sender
    on the poll queue, or the setting narrowed since the request came). None: it may be."""
    selector = state.selector
    if selector is None or scope_overlaps(selector.scope, config.allowed_scopes):
        return None
    rejected = Rejection(state.origin, "selector", f"{selector.scope} lies outside the scopes "
                         "this app may flush (REDISFLUSH_ALLOWED_SCOPES, which may have changed "
                         "since the request came): it is not listed", code="OutsideAllowedScopes")
    ended = end_record(now, state.total_arm_requests, status="Rejected", scope=selector.scope,
                       error=rejection_error(rejected))
    return state, end_unresolved(state, ended)


def end_unresolved(state: RunState, ended: Mapping[str, Any]) -> list[Command]:
    """A selector's request that ends as a whole (rejected, its listing failed or timed out)
    ends only if the request row holds no list yet: another delivery of the requestId may
    have stored one and flushed it. The answer (`on_open`) announces the end the row keeps,
    or adopts the stored list."""
    return [StoreTargets("stored", state.fingerprint, (), state.total_arm_requests,
                         expiry(state.deadline), earlier_fingerprints(state.selector), ended)]
