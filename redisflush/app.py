"""The two handlers the function folders call, wiring pure decisions to ARM and the bus.

Reliability contract (the Python worker cannot settle messages by hand): returning
completes the message, raising abandons it. So a handler returns for every outcome that
was recorded on the bus (a scheduled next step or a completion event) and raises only
`BusError`, when recording itself failed and a redelivery must try again.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import orchestrator
from .arm import ArmClient
from .bus import Bus, BusError, OutboundMessage
from .events import completion_event, event_messages, progress_message
from .messages import Delivery, Origin, PollState, Rejection, parse_request
from .settings import Settings
from .target import CacheTarget

log = logging.getLogger("redisflush")
# A pacer slot this close is waited for in-process; a later one is re-queued holding the slot.
# Kept short: a sleeping invocation holds one of the worker's threads, which both functions
# share, so under a saturated write bucket long sleeps in FlushTrigger starve the polls
# (bench/: 1,000-cache fleet 1.22x -> 1.01x its lower bound when cut from 1 s to 0.2 s).
MAX_INLINE_WAIT = 0.2


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class FlushApp:
    """One per process: settings, the ARM client and the bus, shared by all invocations."""

    settings: Settings
    arm: ArmClient
    bus: Bus
    clock: Callable[[], dt.datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep

    def on_request(self, delivery: Delivery) -> str:
        """FlushTrigger: validate, then take the first step (the POST)."""
        now = self.clock()
        parsed = parse_request(delivery, default_timeout=self.settings.timeout_seconds,
                               allowed_scopes=self.settings.allowed_scopes, now=now)
        if isinstance(parsed, Rejection):
            return self._reject(parsed)
        return self._step(orchestrator.begin(parsed, now))

    def on_poll(self, delivery: Delivery) -> str:
        """PollOrchestrator: continue the chain from the state carried in the message."""
        try:
            state = PollState.from_json(delivery.body)
        except ValueError as exc:
            # Not ours or from an unknown version: raising sends it, after the delivery
            # limit, to the dead-letter queue, where it is kept for a person to look at.
            log.error("poll message %s is unreadable: %s", delivery.message_id, exc)
            raise
        return self._step(state)

    # -- steps ------------------------------------------------------------------------------

    def _step(self, state: PollState) -> str:
        now = self.clock()
        action = orchestrator.before_call(state, now)
        if action is None and not state.paced:
            wait = self.arm.pacer.reserve(state.target.subscription_id,
                                          "POST" if state.phase == "flush" else "GET")
            if wait > MAX_INLINE_WAIT:
                action = orchestrator.deferred(state, wait, now)
            elif wait > 0:
                self.sleep(wait)
        if action is None:
            client_id = f"{state.origin.request_id}:{state.attempt}"
            if state.phase == "flush":
                url = state.target.flush_url(self.settings.arm_endpoint,
                                             self.settings.api_version)
                result = self.arm.post(url, state.target.subscription_id, client_id)
                action = orchestrator.after_post(state, result, self.clock(),
                                                 self.settings.arm_endpoint)
            else:
                result = self.arm.get(state.poll_url or "", state.target.subscription_id,
                                      client_id)
                action = orchestrator.after_poll(state, result, self.clock(),
                                                 self.settings.arm_endpoint)
        return self._record(action, state)

    def _record(self, action: orchestrator.Action, before: PollState) -> str:
        if isinstance(action, orchestrator.Schedule):
            nxt = action.state
            self.bus.send(self.settings.poll_queue, [_poll_message(nxt, action.at)])
            if nxt.phase == "poll" and (before.phase == "flush" or
                                        nxt.last_status != before.last_status or
                                        _percent(nxt) != _percent(before)):
                note = progress_message(nxt.origin, nxt.target, nxt.last_status or "Accepted",
                                        nxt.last_operation, nxt.attempt, self.clock())
                if note is not None:
                    self._send_progress(nxt.origin.reply_to or "", note)
            outcome = f"scheduled {nxt.message_id} at {action.at:%H:%M:%S}"
        else:
            outcome = self._publish(action.state.origin, action.state.target, action.status,
                                    operation=action.operation, error=action.error,
                                    accepted_at=action.state.accepted_at,
                                    arm_requests=action.state.arm_requests)
        log.info("request %s: %s", before.origin.request_id, outcome)
        return outcome

    def _send_progress(self, queue: str, note: OutboundMessage) -> None:
        """Progress is a courtesy to a waiting CLI: the next step is already recorded, so a
        failed note must not make the host redeliver this step (extra GETs, a dead letter)."""
        try:
            self.bus.send(queue, [note])
        except BusError as exc:
            log.warning("progress note %s to %r not sent: %s", note.message_id, queue, exc)

    def _reject(self, rejection: Rejection) -> str:
        log.warning("request %s rejected: %s", rejection.origin.request_id, rejection.message)
        return self._publish(rejection.origin, rejection.target, "Rejected", operation=None,
                             error={"code": "InvalidRequest", "message": rejection.message,
                                    "target": rejection.field}, accepted_at=None,
                             arm_requests=0)

    def _publish(self, origin: Origin, target: CacheTarget | None, status: str, *,
                 operation: Mapping[str, Any] | None, error: Mapping[str, Any] | None,
                 accepted_at: dt.datetime | None, arm_requests: int) -> str:
        event = completion_event(origin, target, status, operation=operation, error=error,
                                 accepted_at=accepted_at, completed_at=self.clock(),
                                 arm_requests=arm_requests)
        topic_message, reply = event_messages(event, origin, target)
        self.bus.publish(self.settings.events_topic, [topic_message])
        if reply is not None:
            self.bus.send(origin.reply_to or "", [reply])
        return f"completed {status}" + (f" ({error.get('code')})" if error else "")


def _poll_message(state: PollState, at: dt.datetime) -> OutboundMessage:
    return OutboundMessage(state.to_json(), state.message_id,
                           correlation_id=state.origin.request_id, scheduled_at=at,
                           application_properties={"requestId": state.origin.request_id})


def _percent(state: PollState) -> object:
    return (state.last_operation or {}).get("percentComplete")
