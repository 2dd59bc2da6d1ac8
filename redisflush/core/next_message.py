"""The chain's next message: what a step schedules once it has no call left, its progress
note, and what is shed when the poll state would not fit one Service Bus message."""
from __future__ import annotations

import datetime as dt

from .accepted_row import by_reference
from .commands import Command, Note, Publish, RecordRequest, RecordTarget, Reply, Schedule
from .compact import compact
from .decision import Config, Decision, View, target_context
from .events import progress_note
from .fit import MAX_MESSAGE_BYTES
from .frozen import replace
from .ledger_rules import expiry
from .outbound import OutboundMessage
from .request_events import is_single, report_ended, request_scope
from .state import RunState
from .target_end import too_large


def settle(state: RunState, view: View, config: Config, effects: list[Command]) -> Decision:
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
        carried, recorded = by_reference(longest, state.deadline)
        return settle(state.with_target(carried), view, config, effects + recorded)
    unfinished = [t for t in state.targets if t.phase != "done"]
    heaviest = max(unfinished, key=lambda t: (len(t.poll_url or "")
                                               + sum(len(i) for i in t.linked or ())))
    cx = target_context(state, view, config, heaviest.target)
    state = state.with_target(too_large(heaviest, cx, MAX_MESSAGE_BYTES))
    state, reports = report_ended(state, view.now)
    first_event = next((i for i, c in enumerate(effects) if isinstance(c, (Publish, Reply))),
                       len(effects))
    records: list[Command] = [c for c in reports if isinstance(c, (RecordTarget, RecordRequest))]
    events: list[Command] = [c for c in reports
                             if not isinstance(c, (RecordTarget, RecordRequest))]
    effects = effects[:first_event] + records + effects[first_event:] + events
    return settle(state, view, config, effects)


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
    if is_single(state):
        ts = state.targets[0]
        status = ts.last_status or ("Accepted" if ts.phase == "poll" else None)
        percent = (ts.last_operation or {}).get("percentComplete")
    else:
        status = "Running" if any(t.accepted_at or t.phase == "done" for t in state.targets) \
            else None
        percent = None
    finished = [t for t in state.targets if t.phase == "done" and not t.noted]
    if status is None or (status == state.note_status and percent == state.note_percent
                          and (not finished or is_single(state))):
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
                         step=state.step, now=now, source=request_scope(state))
    for t in finished:
        state = state.with_target(replace(t, noted=True))
    return replace(state, note_status=status, note_percent=percent), note
