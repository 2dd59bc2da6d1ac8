"""The step function: (state, answers, readings, now) -> (state, commands).

Like a Durable Functions orchestrator replayed by the shell: the shell calls `step`, carries
out the commands it returns, and calls again with the answers of the calls (ARM, ledger)
until a decision has no call left; that decision ends with the chain's next message (or the
request's completion). Every policy lives here or in the modules it calls: which targets are
due, inline wait vs defer, when a progress note goes out, what each event says.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import flush_steps, resolve
from .answers import ArmFailure
from .cadence import ReadBudget
from .commands import (
    Command,
    Note,
    Opened,
    OpenRequest,
    Publish,
    ReadRows,
    RecordRequest,
    RecordTarget,
    Reply,
    Result,
    Schedule,
    StoreTargets,
)
from .compact import compact
from .events import (
    REJECTED_SOURCE,
    Outcome,
    event_message,
    exact,
    flush_completed,
    parse_iso,
    parse_iso_or_none,
    progress_note,
    rejected_event_id,
    request_completed,
)
from .fit import MAX_MESSAGE_BYTES, fit
from .frozen import replace
from .ledger_rules import expiry
from .outbound import OutboundMessage
from .request import FlushRequest, Origin, Rejection, earlier_fingerprints
from .state import RunState, TargetState, initial, with_targets
from .targets import Target, in_scopes, parse_resource_id, scope_overlaps


@dataclass(frozen=True)
class Config:
    """The settings the decisions need (a pure copy of `Settings`)."""

    arm_endpoint: str
    api_version: str
    enterprise_api_version: str
    max_targets: int
    allowed_scopes: tuple[str, ...]
    poll_queue: str


@dataclass(frozen=True)
class View:
    """What the shell reads for a decision: now, whether this invocation has time for another
    round of calls, and each subscription's read budget."""

    now: dt.datetime
    can_call: bool = True
    budgets: Mapping[str, ReadBudget] = field(default_factory=dict)


Decision = tuple[RunState, list[Command]]


def begin(request: FlushRequest, now: dt.datetime) -> RunState:
    return initial(request, now)


def step(state: RunState, answers: Mapping[str, Result], view: View, config: Config
         ) -> Decision:
    view = replace(view, now=delivered_now(state, view.now))
    now, effects = view.now, []  # type: dt.datetime, list[Command]
    if "rows" in answers:
        state, done = _on_rows(state, answers["rows"], now)  # type: ignore[arg-type]
        if done is not None:
            return state, done
    # targets carried by reference take their operation URL back from the rows (a
    # redelivered step's read serves them too)
    read = answers.get("refs", answers.get("rows"))
    if isinstance(read, Opened):
        state = _from_ledger(state, read, view, config)
    elif state.recheck and state.phase in ("resolve", "run"):
        return replace(state, recheck=False), [
            ReadRows("rows", state.fingerprint, earlier_fingerprints(state.selector))]
    # the request's row: on arrival ("open"), or once a selector's list or end was stored
    # ("stored": ours, or what an earlier delivery stored first)
    for ref in ("open", "stored"):
        if ref in answers:
            state, done = _on_open(state, answers[ref], now, config)  # type: ignore[arg-type]
            if done is not None:
                return state, done
    if "list" in answers:
        try:
            state = resolve.on_list_answer(state, answers["list"],  # type: ignore[arg-type]
                                           now, config.arm_endpoint,
                                           config.enterprise_api_version, config.max_targets)
        except resolve.ResolveFailed as exc:
            page = answers["list"]
            sent = not isinstance(page, ArmFailure) or page.sent
            state = replace(state, arm_requests=state.arm_requests + int(sent))
            return _request_failed(state, now, "Failed", exc.code, exc.message)
    for ref, result in answers.items():
        if ref.startswith("t"):
            ts = state.targets[int(ref[1:].split(":")[0])]
            cx = _context(state, view, config, ts.target)
            state = state.with_target(flush_steps.on_answer(ts, result, cx))
            effects.extend(cx.records)
    if state.phase == "resolve" and not state.pending_lists and view.can_call:
        # (in an invocation's last round the list goes to the next message: storing it is a
        # call, and its answer must come back to a step)
        state, rejected = _resolved(state, now, config)
        if rejected is not None:
            return rejected
        # no claim before the row says which list this requestId names (another delivery of
        # it may have resolved the selector first, to other caches if tags changed since)
        return state, effects + [StoreTargets("stored", state.fingerprint, state.found,
                                              state.arm_requests, expiry(state.deadline),
                                              earlier_fingerprints(state.selector))]
    calls: list[Command] = []
    if state.phase == "open":
        calls.append(OpenRequest("open", state.fingerprint, expiry(state.deadline),
                                 {"requestedAt": exact(state.origin.requested_at),
                                  "deadline": exact(state.deadline),
                                  "messageId": state.origin.message_id},
                                 earlier_fingerprints(state.selector)))
    elif state.phase == "resolve" and state.pending_lists:
        outside = _selector_outside(state, now, config)
        if outside is not None:
            return outside
        if now >= state.deadline and view.can_call:
            return _request_failed(state, now, "TimedOut", "TimedOut",
                                   "the deadline passed while the selector was being resolved")
        if view.can_call and (state.due is None or state.due <= now):
            calls.append(resolve.list_call(state, state.step))
    elif state.phase == "run":
        state, calls = _target_calls(state, view, config)
        if view.can_call and read is None and any(
                _by_reference(t) and min(t.due, state.deadline) <= now for t in state.targets):
            # the operation URL of a target due now is in its ledger row only: the shell
            # reads the request's rows (as for a redelivered step) and the step goes on
            calls.insert(0, ReadRows("refs", state.fingerprint,
                                     earlier_fingerprints(state.selector)))
    state, reports = _reports(state, now)
    effects.extend(reports)
    if calls:
        return state, effects + calls
    return _settle(state, view, config, effects)


def delivered_now(state: RunState, now: dt.datetime) -> dt.datetime:
    """Now for a step of a poll message: never before the time the bus was asked to deliver
    it (capped at the deadline). The bus delivers at or after that time by its own clock; an
    instance whose clock is behind would find nothing due yet and send the message back for
    that same time, again and again until its clock caught up (docs/design.md, "Clocks")."""
    at = state.scheduled_at
    return now if at is None else max(now, min(at, state.deadline))


def _context(state: RunState, view: View, config: Config, target: Target
             ) -> flush_steps.Context:
    return flush_steps.Context(view.now, state.deadline, config.arm_endpoint,
                               config.allowed_scopes, view.budgets.get(target.subscription_id))


def _target_calls(state: RunState, view: View, config: Config
                  ) -> tuple[RunState, list[Command]]:
    calls: list[Command] = []
    for ts in state.targets:
        if ts.phase == "done" or _by_reference(ts):  # (its URL is read back first)
            continue
        if view.now >= state.deadline and ts.phase != "poll" and not (
                ts.phase == "claim" and ts.busy):
            cx = _context(state, view, config, ts.target)
            state = state.with_target(flush_steps.timed_out(ts, cx))
            continue
        # never later than the deadline: a due past it (only a forged poll message has one)
        # would send the chain back for the deadline, at once, until that due came
        if min(ts.due, state.deadline) <= view.now and view.can_call:
            ended = flush_steps.refused(ts, _context(state, view, config, ts.target))
            if ended is not None:
                state = state.with_target(ended)
                continue
            if ts.phase in ("claim", "post") and len(state.targets) > 1 and ts.linked:
                share = _own_share(state, ts)
                if isinstance(share, dt.datetime):  # an earlier member of its group has not
                    # been answered: wait before claiming (a claim held would be given back
                    # every second) until that member next acts, not waking the chain every
                    # second while the pacer holds its POST
                    state = state.with_target(replace(ts, due=max(view.now + HOLD, share)))
                    continue
                # its share from its claim on: a claim found in doubt keeps it (the POSTs
                # that went out carried it)
                ts = replace(ts, linked=share)
                state = state.with_target(ts)
            call = flush_steps.call_for(
                ts, request_id=state.origin.request_id, step=state.step,
                endpoint=config.arm_endpoint, api_version=config.api_version,
                enterprise_api_version=config.enterprise_api_version, deadline=state.deadline)
            if call is not None:
                calls.append(call)
    return state, calls


HOLD = dt.timedelta(seconds=1)


def _by_reference(ts: TargetState) -> bool:
    return ts.phase == "poll" and ts.poll_ref is not None


def _from_ledger(state: RunState, read: Opened, view: View, config: Config) -> RunState:
    """Each target carried by reference after the ledger's rows were read: its URL back, or
    its end (flush_steps.from_ledger; docs/design.md, "Poll message")."""
    for ts in state.targets:
        if _by_reference(ts):
            cx = _context(state, view, config, ts.target)
            row = read.targets.get(ts.target.key)
            state = state.with_target(flush_steps.from_ledger(ts, read.status, row, cx))
    return state


def _own_share(state: RunState, ts: TargetState) -> tuple[str, ...] | dt.datetime:
    """The linked databases this target flushes when one request names several members of a
    geo-replication group, so each database is flushed once: none that is a target itself,
    none an earlier target's accepted flush took. While an earlier target that may share them
    has not had its group read or its POST answered: when the first such target is next due
    (it changes only then), to wait for."""
    mine = {i.lower() for i in ts.linked or ()}
    taken: set[str] = set()
    waits = []
    for t in state.targets[:ts.index]:
        if t.target.kind != ts.target.kind:
            continue
        theirs = {i.lower() for i in (t.outcome.linked if t.outcome else t.linked) or ()}
        if t.phase == "read" or (t.phase in ("claim", "post") and theirs & mine):
            waits.append(t.due)
        elif t.accepted_at is not None or (t.outcome and t.outcome.linked):
            taken |= theirs
    if waits:
        return min(waits)
    targets = {t.target.key for t in state.targets}
    return tuple(i for i in ts.linked or () if i.lower() not in targets | taken)


# -- the ledger's answer to the request ---------------------------------------------------

def _on_open(state: RunState, opened: Opened, now: dt.datetime, config: Config
             ) -> tuple[RunState, list[Command] | None]:
    if opened.status == "reused":
        digest = hashlib.sha256(state.fingerprint.encode()).hexdigest()[:12]
        rejected = Rejection(state.origin, "requestId", "was already used for other caches: "
                             "a requestId names one set of caches for good",
                             tuple(t.target for t in state.targets), code="RequestIdReused")
        # each send's reply copy an id of its own: the reply queue's duplicate detection
        # would drop a second waiter's (the topic keeps one event, as it should)
        return replace(state, phase="done", reported=True), rejection_commands(
            rejected, now, selector_scope=_scope(state) if not _single(state) else None,
            event_id=f"{state.origin.request_id}:reused:{digest}:completed",
            reply_tag=_reply_tag(state.origin.message_id))
    ended = _recorded_end(opened)  # None for a row written before ends were recorded
    if opened.status == "same":
        state = _as_repeat(state, opened)
        if ended is not None and isinstance(ended.get("status"), str):
            return replace(state, phase="done", reported=True), _request_end(state, ended)
    selector = state.selector
    if selector is not None:
        stored = opened.data.get("targets") if opened.status == "same" else None
        if stored is None and opened.status == "same" and opened.done and opened.targets:
            # a request that ended before its row kept a selector's list (versions before
            # 2026-12): its target rows name the caches (their keys, in lower case)
            stored = sorted(opened.targets)
        if isinstance(stored, list):
            ids = tuple(str(i) for i in stored)
            targets = tuple(parse_resource_id(i) for i in ids)
            state = replace(with_targets(state, targets, now), found=ids, phase="run",
                            arm_requests=int(opened.data.get("armRequests") or 0))
        else:
            calls = resolve.first_calls(selector, config.arm_endpoint,
                                        config.api_version, config.enterprise_api_version)
            state = replace(state, phase="resolve", pending_lists=calls, due=now)
    else:
        state = replace(state, phase="run")
    if opened.status == "same":
        # A repeat of a request that ended: its events again, with what they said then.
        return _with_recorded(state, opened, now, ended)
    return state, None


def _on_rows(state: RunState, opened: Opened, now: dt.datetime
             ) -> tuple[RunState, list[Command] | None]:
    """A redelivered step: each target the rows record as done takes the recorded outcome,
    and a request the rows record as ended is announced with that end, so every copy of an
    event says what the ledger keeps (README, "Reliability")."""
    if opened.status != "same":
        return state, None
    ended = _recorded_end(opened)
    if ended is not None and isinstance(ended.get("status"), str):
        return replace(state, phase="done", reported=True), _request_end(state, ended)
    return _with_recorded(state, opened, now, ended)


def _recorded_end(opened: Opened) -> Mapping[str, Any] | None:
    """The request's end as its row keeps it (None: not ended, or a row from before ends
    were kept whole)."""
    ended = opened.data.get("ended") if opened.status == "same" and opened.done else None
    if not isinstance(ended, Mapping) or parse_iso_or_none(ended.get("completedAt")) is None:
        return None
    return ended


def _with_recorded(state: RunState, opened: Opened, now: dt.datetime,
                   ended: Mapping[str, Any] | None) -> tuple[RunState, list[Command] | None]:
    """Each unreported target the rows keep as done takes its recorded outcome (its
    requests count in the request's armRequests, as when it ended); once all are done and
    the request's end is kept, the events again with what they said then."""
    for ts in state.targets:
        row = opened.targets.get(ts.target.key)
        # not claimed yet in this chain: at its claim, or (a Managed Redis database) at the
        # read of its geo group that comes first
        unclaimed = ts.phase in ("read", "claim")
        if row and row[0] == "accepted" and unclaimed and now >= state.deadline \
                and row[1].get("pollUrl"):
            # past the deadline a target is not claimed, it ends TimedOut: one that ARM
            # accepted (a request re-sent after it was dead-lettered, docs/azure.md) is read
            # once, never said NotStarted
            state = state.with_target(flush_steps.adopt_accepted(ts, row[1], now))
            continue
        if row and row[0] == "posting" and unclaimed and now >= state.deadline:
            # claimed, and its acceptance never recorded: the POST may have reached ARM (the
            # ledger's own view of a claim past its lease), so its TimedOut says so
            state = state.with_target(replace(ts, in_doubt=True))
            continue
        if ts.reported or not row or row[0] != "done" or \
                not isinstance(row[1].get("outcome"), Mapping):
            continue
        outcome = Outcome.from_json(row[1]["outcome"])
        state = state.with_target(replace(ts, phase="done", outcome=outcome,
                                          arm_requests=outcome.arm_requests))
    if ended is not None and state.phase == "run" and state.targets and \
            all(t.phase == "done" for t in state.targets):
        return _reports(state, now, ended)
    return state, None


def _reply_tag(message_id: str | None) -> str | None:
    """What a send's reply copies add to their MessageIds (a digest of the send's own), so
    the reply queue's duplicate detection keeps each waiter's."""
    return hashlib.sha256(message_id.encode()).hexdigest()[:12] if message_id else None


def _as_repeat(state: RunState, opened: Opened) -> RunState:
    """A redelivery or a repeat: a repeat under a new MessageId gets reply ids of its own,
    and the request began when the first one was sent."""
    recorded = opened.data.get("messageId")
    if state.origin.message_id and recorded and recorded != state.origin.message_id:
        state = replace(state, reply_tag=_reply_tag(state.origin.message_id))
    first = parse_iso_or_none(opened.data.get("requestedAt"))
    if first is not None and first != state.origin.requested_at:
        timeout = state.deadline - state.origin.requested_at
        state = replace(state, origin=replace(state.origin, requested_at=first),
                        deadline=first + timeout)
    # The first send's deadline holds for every delivery of the request: a repeat with
    # another timeoutSeconds (a `send --wait` with its own) follows the same flush, and its
    # chain must not end it TimedOut sooner, or read on past its end
    deadline = parse_iso_or_none(opened.data.get("deadline"))
    if deadline is not None:
        state = replace(state, deadline=deadline)
    return state


def _ended(completed_at: dt.datetime, arm_requests: int, **outcome: Any) -> dict[str, Any]:
    """What the request row keeps of the request's end, so a repeat's events say the same
    (docs/design.md, "Request ledger"); `outcome` for a request that ended as a whole."""
    return {"completedAt": exact(completed_at), "armRequests": arm_requests, **outcome}


def _request_end(state: RunState, ended: Mapping[str, Any]) -> list[Command]:
    """The event of a request that ended as a whole (rejected selector, failed listing),
    from what its row recorded."""
    origin = state.origin
    error = ended.get("error")
    event = request_completed(origin, str(ended.get("scope") or _scope(state)), [],
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


def _resolved(state: RunState, now: dt.datetime, config: Config
              ) -> tuple[RunState, Decision | None]:
    selector = state.selector
    assert selector is not None
    targets = tuple(parse_resource_id(i) for i in state.found)
    n, scope = len(targets), selector.scope
    rule = None
    if n == 0:
        rule = (f"matched 0 caches of kinds {', '.join(selector.kinds)} in {scope}"
                + (f" ({state.ignored} listed items were outside it or unreadable)"
                   if state.ignored else ""))
    elif n > config.max_targets:
        # listing stopped at the first cache over the limit (resolve.on_list_answer)
        rule = (f"matched more than REDISFLUSH_MAX_TARGETS ({config.max_targets}) caches "
                f"(listing stopped once {n} had matched)")
    else:
        outside = [t for t in targets if not in_scopes(t, config.allowed_scopes)]
        if outside:
            rule = (f"matched {len(outside)} caches outside REDISFLUSH_ALLOWED_SCOPES (first: "
                    f"{outside[0].resource_id})")
    if rule is not None:
        rejected = Rejection(state.origin, "selector", rule, code="SelectorRejected")
        ended = _ended(now, state.arm_requests, status="Rejected", scope=scope,
                       error=rejection_error(rejected))
        return state, (state, _end_unresolved(state, ended))
    return replace(with_targets(state, targets, now), phase="run"), None


# -- events --------------------------------------------------------------------------------

def _scope(state: RunState) -> str:
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


def _single(state: RunState) -> bool:
    return state.selector is None and len(state.targets) == 1


def _reports(state: RunState, now: dt.datetime, ended: Mapping[str, Any] | None = None
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
                                batch=not _single(state))
        records.append(RecordTarget(ts.target.key, "done", {"outcome": ts.outcome.to_json()},
                                    expiry(state.deadline)))
        events.append(Publish(event_message(event, origin, ts.target)))
        if _single(state) and origin.reply_to:
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
        if not _single(state):
            results = [(t.target, t.outcome) for t in state.targets if t.outcome]
            event = request_completed(origin, _scope(state), results, completed_at=completed_at,
                                      arm_requests=arm_requests)
            events.extend(_announce(event, origin, None, state.reply_tag))
        # recorded before its events too: a redelivery reads it back (`_on_rows`) and
        # announces the same end
        records.append(RecordRequest("done", {"fingerprint": state.fingerprint,
                                              "ended": _ended(completed_at, arm_requests)},
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


def _request_failed(state: RunState, now: dt.datetime, status: str, code: str, message: str
                    ) -> Decision:
    """The request ends before it had targets (a selector that could not be resolved)."""
    # ARM's words, cut by bytes as a target's are: the request row holds this end
    # (docs/design.md, "Request ledger"), and a row over the store's limit would raise
    ended = _ended(now, state.total_arm_requests, status=status, scope=_scope(state),
                   error=fit({"code": code, "message": message}, flush_steps.ERROR_BYTES))
    return state, _end_unresolved(state, ended)


def _selector_outside(state: RunState, now: dt.datetime, config: Config) -> Decision | None:
    """A selector wholly outside REDISFLUSH_ALLOWED_SCOPES is not listed (docs/design.md,
    "Security rules"): arrival refuses one, and a poll message is input too (another sender
    on the poll queue, or the setting narrowed since the request came). None: it may be."""
    selector = state.selector
    if selector is None or scope_overlaps(selector.scope, config.allowed_scopes):
        return None
    rejected = Rejection(state.origin, "selector", f"{selector.scope} lies outside the scopes "
                         "this app may flush (REDISFLUSH_ALLOWED_SCOPES, which may have changed "
                         "since the request came): it is not listed", code="OutsideAllowedScopes")
    ended = _ended(now, state.total_arm_requests, status="Rejected", scope=selector.scope,
                   error=rejection_error(rejected))
    return state, _end_unresolved(state, ended)


def _end_unresolved(state: RunState, ended: Mapping[str, Any]) -> list[Command]:
    """A selector's request that ends as a whole (rejected, its listing failed or timed out)
    ends only if the request row holds no list yet: another delivery of the requestId may
    have stored one and flushed it. The answer (`_on_open`) announces the end the row keeps,
    or adopts the stored list."""
    return [StoreTargets("stored", state.fingerprint, (), state.total_arm_requests,
                         expiry(state.deadline), earlier_fingerprints(state.selector), ended)]


# -- the chain's next message -------------------------------------------------------------

def _settle(state: RunState, view: View, config: Config, effects: list[Command]) -> Decision:
    if state.phase == "done":
        return state, effects
    # `given` stays as it came: a shed step settles again from it, and would otherwise
    # carry this pass's retry records twice
    before, now, given, effects = state, view.now, effects, list(effects)
    for ts in state.targets:
        if ts.phase == "post":
            # Claimed but not sent in this invocation (the pacer deferred it, its group is
            # not settled, the call window closed): the claim goes back and the POST claims
            # again when it is due, so a claim never outlives its lease unsent.
            effects.append(RecordTarget(ts.target.key, "retry", {}, expiry(state.deadline)))
            state = state.with_target(replace(ts, phase="claim"))
    if state.phase == "resolve":
        at = state.due or now
    else:
        pending = [t.due for t in state.targets if t.phase != "done"]
        if not pending:
            # nothing left to follow: the app's own chains never get here (their last end
            # is reported above, phase done), but a forged or corrupt poll message (every
            # target done, already reported, or none) would re-queue itself at once, forever
            return replace(state, phase="done"), effects
        at = min(pending)
    at = min(max(at, now), max(state.deadline, now))
    state = replace(state, step=state.step + 1, scheduled_at=at)
    state, note = _note(state, now)
    message = poll_message(state, at)
    if len(message.body) > MAX_MESSAGE_BYTES and before.phase == "run" and \
            any(t.phase != "done" for t in before.targets):
        return _settle_shed(before, view, config, given)
    commands = effects + [Schedule(message, at)]
    if note is not None and state.origin.reply_to:
        commands.append(Note(state.origin.reply_to, note))
    return state, commands


def _settle_shed(state: RunState, view: View, config: Config, effects: list[Command]
                 ) -> Decision:
    """The chain's next message would pass what Service Bus takes even cut (`compact`):
    operation URLs and linked ids are kept verbatim, and 50 signed Location URLs of 5 KB
    are more than 192 KiB. Refused, it was sent again on every redelivery until the message
    was dead-lettered with no event. Instead the heaviest unfinished target ends Failed
    `PollStateTooLarge` (its event says whether its flush went out), one at a time until the
    rest fits; its `done` record goes before the step's first event (docs/design.md,
    "Request ledger").

    First, though, a target ARM accepted is carried by reference (its URL left in the
    ledger's accepted row, the longest first): it is followed to its end all the same. Only
    what is left after that ends (a target not accepted, or linked ids that alone do not
    fit)."""
    accepted = [t for t in state.targets if t.phase == "poll" and t.poll_url]
    if accepted:
        longest = max(accepted, key=lambda t: len(t.poll_url or ""))
        carried, recorded = flush_steps.by_reference(longest, state.deadline)
        return _settle(state.with_target(carried), view, config, effects + recorded)
    unfinished = [t for t in state.targets if t.phase != "done"]
    heaviest = max(unfinished, key=lambda t: (len(t.poll_url or "")
                                               + sum(len(i) for i in t.linked or ())))
    cx = _context(state, view, config, heaviest.target)
    state = state.with_target(flush_steps.too_large(heaviest, cx, MAX_MESSAGE_BYTES))
    state, reports = _reports(state, view.now)
    first_event = next((i for i, c in enumerate(effects) if isinstance(c, (Publish, Reply))),
                       len(effects))
    records: list[Command] = [c for c in reports if isinstance(c, (RecordTarget, RecordRequest))]
    events: list[Command] = [c for c in reports
                             if not isinstance(c, (RecordTarget, RecordRequest))]
    effects = effects[:first_event] + records + effects[first_event:] + events
    return _settle(state, view, config, effects)


def poll_message(state: RunState, at: dt.datetime) -> OutboundMessage:
    body = state.to_json()  # encoded once when it fits, as it nearly always does
    if len(body) > MAX_MESSAGE_BYTES:
        body = compact(state, MAX_MESSAGE_BYTES).to_json()
    return OutboundMessage(body, state.message_id, correlation_id=state.origin.request_id,
                           scheduled_at=at,
                           application_properties={"requestId": state.origin.request_id})


def _note(state: RunState, now: dt.datetime) -> tuple[RunState, OutboundMessage | None]:
    """A note when the status or percent changed, or caches finished since the last one."""
    if not state.origin.reply_to or state.phase != "run":
        return state, None
    if _single(state):
        ts = state.targets[0]
        status = ts.last_status or ("Accepted" if ts.phase == "poll" else None)
        percent = (ts.last_operation or {}).get("percentComplete")
    else:
        status = "Running" if any(t.accepted_at or t.phase == "done" for t in state.targets) \
            else None
        percent = None
    finished = [t for t in state.targets if t.phase == "done" and not t.noted]
    if status is None or (status == state.note_status and percent == state.note_percent
                          and (not finished or _single(state))):
        return state, None
    counts: dict[str, int] = {}
    for t in state.targets:
        if t.outcome:
            counts[t.outcome.status] = counts.get(t.outcome.status, 0) + 1
    items = [{"index": t.index, "resourceId": t.target.resource_id,
              "name": t.target.display_name, "status": t.outcome.status if t.outcome else None,
              "error": (t.outcome.error or {}).get("code") if t.outcome else None,
              "durationSeconds": round((t.outcome.completed_at - state.origin.requested_at)
                                       .total_seconds(), 3) if t.outcome else None}
             for t in finished]
    note = progress_note(state.origin, status=status, percent=percent,
                         targets=len(state.targets), counts=counts, finished=items,
                         step=state.step, now=now, source=_scope(state))
    for t in finished:
        state = state.with_target(replace(t, noted=True))
    return replace(state, note_status=status, note_percent=percent), note
