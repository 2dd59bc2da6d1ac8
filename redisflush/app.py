"""The shell: carries out what the core decides (docs/design.md, "Layout").

For each message it calls `core.step.step`, sends the commands' effects (ledger writes,
events, the next poll message) and makes the calls (ARM through the pacer, the ledger), then
feeds the answers back, until a decision has no call left.

Reliability contract (the Python worker cannot settle messages by hand): returning completes
the message, raising abandons it. A handler raises only when the bus failed, or the ledger
failed before a POST could go (opening the request, storing a selector's list or its end,
claiming a target), so a redelivery must try again; everything else ends in a recorded
outcome. A ledger record that still fails after
its tries, or that the ledger refuses (too long), is logged and skipped, never raised: its
redelivery would find the target's claim unanswered and POST it again (README,
"Reliability"; those records are `app_ledger.py`'s, the invocation's bookkeeping and log
lines `app_invocation.py`'s)."""
from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .app_invocation import Invocation, describe, raising_logged
from .app_ledger import read_rows_or_unknown, record_or_skip
from .arm import MAX_BODY, MAX_LIST_BODY, ArmClient
from .bus import Bus, BusError
from .core.answers import ArmAnswer
from .core.cadence import ReadBudget
from .core.commands import (
    CallArm,
    ClaimTarget,
    Command,
    Deferred,
    Learn,
    Log,
    Note,
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
from .core.decision import Config, View
from .core.frozen import replace
from .core.request import Delivery, Rejection, parse_request
from .core.request_events import rejected_on_arrival
from .core.state import RunState
from .core.step import begin, step
from .ledger import Ledger
from .ledger_ops import claim_target, open_request, store_targets
from .logtext import printable
from .readings import Readings, polled_operation
from .settings import Settings

log = logging.getLogger("redisflush")
# An invocation stops starting ARM calls this long after it began: one call may last up to
# its whole-duration limit, and the lock (one minute) must outlive the invocation.
CALL_WINDOW = 20.0
MAX_ROUNDS = 64
ARM_THREADS = 8


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class FlushApp:
    """One per process: settings, ARM client, bus and ledger, shared by all invocations."""

    settings: Settings
    arm: ArmClient
    bus: Bus
    ledger: Ledger
    clock: Callable[[], dt.datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    _pool: cf.ThreadPoolExecutor = field(default_factory=lambda: cf.ThreadPoolExecutor(
        ARM_THREADS, thread_name_prefix="arm"), repr=False)
    _readings: Readings = field(default_factory=Readings, repr=False)

    @property
    def config(self) -> Config:
        s = self.settings
        return Config(s.arm_endpoint, s.api_version, s.enterprise_api_version, s.max_targets,
                      s.allowed_scopes, s.poll_queue)

    def on_request(self, delivery: Delivery) -> str:
        """FlushTrigger: validate, then drive the request's first step."""
        s, now = self.settings, self.clock()
        parsed = parse_request(delivery, default_timeout=s.timeout_seconds,
                               allowed_scopes=s.allowed_scopes, max_targets=s.max_targets,
                               reserved_queues=(s.request_queue, s.poll_queue, s.events_topic),
                               now=now)
        if isinstance(parsed, Rejection):
            # the line every invocation logs (`request <requestId>: <outcome>`, docs/azure.md)
            log.warning("request %s: completed Rejected (%s): %s",
                        printable(parsed.origin.request_id), printable(parsed.field, 80),
                        printable(parsed.message, 300))
            with raising_logged(parsed.origin.request_id):
                self._carry_out(rejected_on_arrival(parsed, now), parsed.origin.request_id,
                                Invocation(self.monotonic()))
            return f"completed Rejected ({printable(parsed.field, 80)})"
        return self._drive(begin(parsed, now))

    def on_poll(self, delivery: Delivery) -> str:
        """PollOrchestrator: continue the chain from the state carried in the message."""
        try:
            state = RunState.from_json(delivery.body)
        except ValueError as exc:
            # Not ours or from an unknown version: raising sends it, after the delivery
            # limit, to the dead-letter queue, where it is kept for a person to look at.
            log.error("poll message %s is unreadable: %s", printable(delivery.message_id),
                      printable(exc, 300))
            raise
        # an earlier try of this step may have recorded ends it did not announce (a refusal,
        # a stop): the step reads the rows first and announces what they keep
        return self._drive(replace(state, recheck=delivery.delivery_count > 1))

    def purge_ledger(self) -> int:
        """LedgerPurge: delete the ledger rows of requests a day past their deadline, when no
        message of theirs can still arrive (docs/design.md, "Request ledger")."""
        gone = self.ledger.purge(self.clock())
        log.info("ledger purge: %d rows past their expiry deleted", gone)
        return gone

    # -- the loop ----------------------------------------------------------------------------

    def _drive(self, state: RunState) -> str:
        with raising_logged(state.origin.request_id):
            return self._drive_rounds(state)

    def _drive_rounds(self, state: RunState) -> str:
        answers: dict[str, Result] = {}
        outcome, run = "no change", Invocation(self.monotonic())
        for round_ in range(MAX_ROUNDS):
            # no ARM call in the last two rounds: a ledger call a step makes on an ARM
            # answer (storing a selector's list or end) still has a round for its answer
            can_call = round_ < MAX_ROUNDS - 2 and self.monotonic() - run.started < CALL_WINDOW
            view = View(self.clock(), can_call, self._budgets(state))
            state, commands = step(state, answers, view, self.config)
            self._track(state)
            outcome = describe(commands) or outcome
            answers = self._carry_out(commands, state.origin.request_id, run)
            if not answers:
                break
        log.info("request %s: %s", printable(state.origin.request_id), outcome)
        return outcome

    def _carry_out(self, commands: list[Command], request_id: str, run: Invocation
                   ) -> dict[str, Result]:
        """Effects in order; then the calls (ARM calls side by side), answered by ref."""
        answers: dict[str, Result] = {}
        arm_calls: list[CallArm] = []
        for command in commands:
            if isinstance(command, CallArm):
                arm_calls.append(command)
            elif isinstance(command, OpenRequest):
                answers[command.ref] = open_request(self.ledger, request_id, command,
                                                    self.clock())
            elif isinstance(command, ReadRows):
                answers[command.ref] = read_rows_or_unknown(self.ledger, command, request_id, run)
            elif isinstance(command, StoreTargets):
                answers[command.ref] = store_targets(self.ledger, request_id, command,
                                                     self.clock())
            elif isinstance(command, ClaimTarget):
                answers[command.ref] = claim_target(self.ledger, request_id, command,
                                                    self.clock())
            elif isinstance(command, (RecordTarget, RecordRequest)):
                record_or_skip(self.ledger, command, request_id, run, clock=self.clock,
                               monotonic=self.monotonic, sleep=self.sleep)
            else:
                self._effect(command, request_id)
        if len(arm_calls) == 1:
            answers[arm_calls[0].ref] = self._call(arm_calls[0], run.started, request_id)
        elif arm_calls:
            results = self._pool.map(lambda call: self._call(call, run.started, request_id),
                                     arm_calls)
            for call, result in zip(arm_calls, results, strict=True):
                answers[call.ref] = result
        return answers

    def _effect(self, command: Command, request_id: str) -> None:
        s = self.settings
        if isinstance(command, Publish):
            self.bus.publish(s.events_topic, [command.message])
        elif isinstance(command, Schedule):
            self.bus.send(s.poll_queue, [command.message])
        elif isinstance(command, (Reply, Note)):
            # The topic event is out already: a reply that cannot be sent (after the SDK's
            # own retries) never makes this step run again (docs/design.md, "Completion
            # events"): the step's later effects (the request's end in the ledger) would not
            # happen, and a step run again reads ARM again and could reply with another
            # outcome than the topic's.
            try:
                self.bus.send(command.queue, [command.message])
            except BusError as exc:
                log.warning("request %s: %s %s to ReplyTo %s not sent (%s): %s",
                            printable(request_id), type(command).__name__.lower(),
                            printable(command.message.message_id), printable(command.queue),
                            "the queue refuses" if exc.refused else "may pass; not retried",
                            printable(exc, 300))
        elif isinstance(command, Learn):
            self._readings.learn(command.subscription_id, command.kind, command.lo, command.hi)
        elif isinstance(command, Log):
            getattr(log, command.level, log.info)("%s", printable(command.text, 500))

    def _call(self, call: CallArm, invocation_started: float, request_id: str) -> Result:
        """One ARM call through the pacer. A call that would start after the invocation's
        CALL_WINDOW (queued behind others on the shared threads) is handed to the next
        message instead, its slot held: the invocation must end inside its lock. A slot held
        from before a 429 whose Retry-After is still running is given up for a new one."""
        method = call.method
        if not call.paced or self.arm.pacer.paused(call.subscription_id, method):
            wait = self.arm.pacer.reserve(call.subscription_id, method)
            if wait > call.max_inline_wait:
                return Deferred(wait)
            if wait > 0:
                self.sleep(wait)
        if self.monotonic() - invocation_started >= CALL_WINDOW:
            return Deferred(0.0)
        polled = polled_operation(request_id, call)
        if polled is not None:
            self._seen_poller(call.subscription_id, polled)
        started = self.monotonic()
        result = self.arm.call(method, call.url, call.subscription_id, call.client_request_id,
                               call.body, max_body=MAX_LIST_BODY if call.large else MAX_BODY)
        if isinstance(result, ArmAnswer):
            # on the app's own clock, which the core's times are on (see read_gap_from)
            result = replace(result, elapsed=max(0.0, self.monotonic() - started))
        return result

    # -- readings (redisflush/readings.py) ---------------------------------------------------

    def _track(self, state: RunState) -> None:
        self._readings.track(state, self.clock())

    def _seen_poller(self, subscription: str, operation: str) -> None:
        self._readings.polled(subscription, operation, self.monotonic())

    def _budgets(self, state: RunState) -> Mapping[str, ReadBudget]:
        """Per subscription of this request: ARM's last remaining-reads count, how many
        operations this process has polled there lately and has in flight, and how long
        flushes there have lately taken."""
        now, wall, budgets = self.monotonic(), self.clock(), {}
        for sub in {t.target.subscription_id for t in state.targets}:
            pollers, in_flight, expected = self._readings.counts(sub, now, wall)
            remaining = self.arm.pacer.remaining(sub, "reads")
            budgets[sub] = ReadBudget(remaining[0] if remaining else None, max(1, pollers),
                                      self.arm.pacer.refill(sub, "reads"), in_flight, expected)
        return budgets

