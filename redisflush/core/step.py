"""The step function: (state, answers, readings, now) -> (state, commands).

Like a Durable Functions orchestrator replayed by the shell: the shell calls `step`, carries
out the commands it returns, and calls again with the answers of the calls (ARM, ledger)
until a decision has no call left; that decision ends with the chain's next message (or the
request's completion). Every policy lives here or in the modules it calls: which targets are
due, inline wait vs defer, when a progress note goes out, what each event says.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from . import flush_steps, resolve
from .accepted_row import from_ledger
from .answers import ArmFailure
from .commands import Command, Opened, OpenRequest, ReadRows, Result, StoreTargets
from .decision import Config, Decision, View, target_context
from .events import exact
from .frozen import replace
from .ledger_answer import on_open, on_rows
from .ledger_rules import expiry
from .linked_databases import refused
from .next_message import settle
from .request import FlushRequest, Rejection, earlier_fingerprints
from .request_events import (
    end_record,
    end_unresolved,
    rejection_error,
    report_ended,
    request_failed,
    selector_outside,
)
from .state import RunState, TargetState, initial, with_targets
from .target_end import timed_out
from .targets import in_scopes, parse_resource_id


def begin(request: FlushRequest, now: dt.datetime) -> RunState:
    return initial(request, now)


def step(state: RunState, answers: Mapping[str, Result], view: View, config: Config
         ) -> Decision:
    view = replace(view, now=delivered_now(state, view.now))
    now, effects = view.now, []  # type: dt.datetime, list[Command]
    if "rows" in answers:
        state, done = on_rows(state, answers["rows"], now)  # type: ignore[arg-type]
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
            state, done = on_open(state, answers[ref], now, config)  # type: ignore[arg-type]
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
            return request_failed(state, now, "Failed", exc.code, exc.message)
    for ref, result in answers.items():
        if ref.startswith("t"):
            ts = state.targets[int(ref[1:].split(":")[0])]
            cx = target_context(state, view, config, ts.target)
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
        outside = selector_outside(state, now, config)
        if outside is not None:
            return outside
        if now >= state.deadline and view.can_call:
            return request_failed(state, now, "TimedOut", "TimedOut",
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
    state, reports = report_ended(state, now)
    effects.extend(reports)
    if calls:
        return state, effects + calls
    return settle(state, view, config, effects)


def delivered_now(state: RunState, now: dt.datetime) -> dt.datetime:
    """Now for a step of a poll message: never before the time the bus was asked to deliver
    it (capped at the deadline). The bus delivers at or after that time by its own clock; an
    instance whose clock is behind would find nothing due yet and send the message back for
    that same time, again and again until its clock caught up (docs/design.md, "Clocks")."""
    at = state.scheduled_at
    return now if at is None else max(now, min(at, state.deadline))


def _target_calls(state: RunState, view: View, config: Config
                  ) -> tuple[RunState, list[Command]]:
    calls: list[Command] = []
    for ts in state.targets:
        if ts.phase == "done" or _by_reference(ts):  # (its URL is read back first)
            continue
        if view.now >= state.deadline and ts.phase != "poll" and not (
                ts.phase == "claim" and ts.busy):
            cx = target_context(state, view, config, ts.target)
            state = state.with_target(timed_out(ts, cx))
            continue
        # never later than the deadline: a due past it (only a forged poll message has one)
        # would send the chain back for the deadline, at once, until that due came
        if min(ts.due, state.deadline) <= view.now and view.can_call:
            ended = refused(ts, target_context(state, view, config, ts.target))
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
    its end (accepted_row.from_ledger; docs/design.md, "Poll message"). A read the ledger
    failed counts only for the targets that were due: one not due yet did not need it, and
    keeps its next read (a Retry-After, a projected end) and its tries."""
    for ts in state.targets:
        if _by_reference(ts):
            if read.status == "unknown" and min(ts.due, state.deadline) > view.now:
                continue
            cx = target_context(state, view, config, ts.target)
            row = read.targets.get(ts.target.key)
            state = state.with_target(from_ledger(ts, read.status, row, cx))
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
        ended = end_record(now, state.arm_requests, status="Rejected", scope=scope,
                           error=rejection_error(rejected))
        return state, (state, end_unresolved(state, ended))
    return replace(with_targets(state, targets, now), phase="run"), None
