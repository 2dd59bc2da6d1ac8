"""The ledger's answer to a step: the request's row on arrival (new, a repeat, a reused
requestId) and the rows a redelivered step reads back, so every copy of an event says what
the ledger keeps."""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from . import resolve
from .accepted_row import adopt_accepted
from .commands import Command, Opened
from .decision import Config
from .events import Outcome, parse_iso_or_none
from .frozen import replace
from .request import Rejection
from .request_events import is_single, rejection_commands, report_ended, request_end, request_scope
from .state import RunState, with_targets
from .targets import parse_resource_id


def on_open(state: RunState, opened: Opened, now: dt.datetime, config: Config
            ) -> tuple[RunState, list[Command] | None]:
    if opened.status == "reused":
        digest = hashlib.sha256(state.fingerprint.encode()).hexdigest()[:12]
        rejected = Rejection(state.origin, "requestId", "was already used for other caches: "
                             "a requestId names one set of caches for good",
                             tuple(t.target for t in state.targets), code="RequestIdReused")
        # each send's reply copy an id of its own: the reply queue's duplicate detection
        # would drop a second waiter's (the topic keeps one event, as it should)
        return replace(state, phase="done", reported=True), rejection_commands(
            rejected, now, selector_scope=request_scope(state) if not is_single(state) else None,
            event_id=f"{state.origin.request_id}:reused:{digest}:completed",
            reply_tag=_reply_tag(state.origin.message_id))
    ended = _recorded_end(opened)  # None for a row written before ends were recorded
    if opened.status == "same":
        state = _as_repeat(state, opened)
        if ended is not None and isinstance(ended.get("status"), str):
            return replace(state, phase="done", reported=True), request_end(state, ended)
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


def on_rows(state: RunState, opened: Opened, now: dt.datetime
            ) -> tuple[RunState, list[Command] | None]:
    """A redelivered step: each target the rows record as done takes the recorded outcome,
    and a request the rows record as ended is announced with that end, so every copy of an
    event says what the ledger keeps (README, "Reliability")."""
    if opened.status != "same":
        return state, None
    ended = _recorded_end(opened)
    if ended is not None and isinstance(ended.get("status"), str):
        return replace(state, phase="done", reported=True), request_end(state, ended)
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
            state = state.with_target(adopt_accepted(ts, row[1], now))
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
        return report_ended(state, now, ended)
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
