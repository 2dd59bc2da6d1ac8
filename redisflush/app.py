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
"Reliability")."""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .arm import MAX_BODY, MAX_LIST_BODY, ArmClient
from .bus import Bus, BusError
from .core import durations
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
from .core.decision import Config, View
from .core.frozen import replace
from .core.request import Delivery, Rejection, parse_request
from .core.request_events import rejected_on_arrival
from .core.state import RunState
from .core.step import begin, step
from .ledger import Ledger, LedgerError
from .ledger_ops import claim_target, open_request, read_rows, record, store_targets
from .logtext import printable
from .settings import Settings

log = logging.getLogger("redisflush")
# An invocation stops starting ARM calls this long after it began: one call may last up to
# its whole-duration limit, and the lock (one minute) must outlive the invocation.
CALL_WINDOW = 20.0
MAX_ROUNDS = 64
ARM_THREADS = 8
POLLER_WINDOW = 10.0
# A failed ledger record is tried again after these pauses, while the invocation is younger
# than RECORD_WINDOW; once one has failed for good, the table is taken to be down and the
# invocation's other records are skipped untried: it must end inside its one-minute lock.
RECORD_PAUSES = (0.5, 2.0)
RECORD_WINDOW = 45.0


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
    # Operations are keyed `{requestId}:{target index}` (`_operation`), never by URL: a URL
    # carried by reference is not in the state, and one ARM moves would count twice.
    # operations whose status was read lately: subscription -> operation -> when
    _pollers: dict[str, _Expiring[float]] = field(default_factory=dict, repr=False)
    # operations accepted and not seen ending: subscription -> operation -> forget after
    _in_flight: dict[str, _Expiring[dt.datetime]] = field(default_factory=dict, repr=False)
    # what flushes took: subscription -> kind -> estimate
    _durations: dict[str, dict[str, durations.Estimate]] = field(default_factory=dict,
                                                                 repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
            with _raising_logged(parsed.origin.request_id):
                self._carry_out(rejected_on_arrival(parsed, now), parsed.origin.request_id,
                                _Invocation(self.monotonic()))
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
        with _raising_logged(state.origin.request_id):
            return self._drive_rounds(state)

    def _drive_rounds(self, state: RunState) -> str:
        answers: dict[str, Result] = {}
        outcome, run = "no change", _Invocation(self.monotonic())
        for round_ in range(MAX_ROUNDS):
            # no ARM call in the last two rounds: a ledger call a step makes on an ARM
            # answer (storing a selector's list or end) still has a round for its answer
            can_call = round_ < MAX_ROUNDS - 2 and self.monotonic() - run.started < CALL_WINDOW
            view = View(self.clock(), can_call, self._budgets(state))
            state, commands = step(state, answers, view, self.config)
            self._track(state)
            outcome = _describe(commands) or outcome
            answers = self._carry_out(commands, state.origin.request_id, run)
            if not answers:
                break
        log.info("request %s: %s", printable(state.origin.request_id), outcome)
        return outcome

    def _carry_out(self, commands: list[Command], request_id: str, run: _Invocation
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
                answers[command.ref] = self._read_rows(command, request_id, run)
            elif isinstance(command, StoreTargets):
                answers[command.ref] = store_targets(self.ledger, request_id, command,
                                                     self.clock())
            elif isinstance(command, ClaimTarget):
                answers[command.ref] = claim_target(self.ledger, request_id, command,
                                                    self.clock())
            elif isinstance(command, (RecordTarget, RecordRequest)):
                self._record(command, request_id, run)
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

    def _read_rows(self, command: ReadRows, request_id: str, run: _Invocation) -> Opened:
        """A redelivered step's look at what its first try recorded: best effort. A ledger
        that fails answers `unknown`, and the step reads ARM again as it would have; raising
        would spend the message's deliveries on a table outage and lose the chain."""
        if not run.ledger_down:
            try:
                return read_rows(self.ledger, request_id, command)
            except LedgerError as exc:
                run.ledger_down = True
                log.warning("request %s: the ledger's rows could not be read for a redelivered "
                            "step, so it reads ARM again: %s", printable(request_id),
                            printable(exc, 300))
        return Opened("unknown")

    def _record(self, command: RecordTarget | RecordRequest, request_id: str,
                run: _Invocation) -> None:
        """A ledger record, tried again after RECORD_PAUSES. One that still fails is logged
        and skipped: the step has made its calls, and raising would have the redelivery find
        each answered target still claimed and POST it again. What it costs: a repeat of the
        request finds the row as it was (docs/design.md, "Request ledger"). A row the ledger
        refuses as too long (ValueError: a bug, not an outage) is skipped the same way, at
        once: raising would POST again just the same."""
        problem = "the ledger failed an earlier record of this invocation"
        for pause in (*RECORD_PAUSES, None):
            if run.ledger_down:
                break
            try:
                record(self.ledger, request_id, command, self.clock())
                return
            except ValueError as exc:
                problem = f"the ledger refuses the row: {exc}"
                break
            except LedgerError as exc:
                problem = str(exc)
                if pause is None or self.monotonic() - run.started >= RECORD_WINDOW:
                    run.ledger_down = True
                    break
                self.sleep(pause)
        what = f"target {command.key}" if isinstance(command, RecordTarget) else "the request"
        log.error("request %s: %s not recorded %s in the ledger, skipped (a repeat of the "
                  "request finds its row as it was): %s", printable(request_id),
                  printable(what, 300), command.state, printable(problem, 300))

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
            with self._lock:
                kinds = self._durations.setdefault(command.subscription_id.lower(), {})
                learned = durations.observe(kinds.get(command.kind), command.lo, command.hi)
                if learned is not None:
                    kinds[command.kind] = learned
        elif isinstance(command, Log):
            getattr(log, command.level, log.info)("%s", printable(command.text, 500))

    def _call(self, call: CallArm, invocation_started: float, request_id: str) -> Result:
        """One ARM call through the pacer. A call that would start after the invocation's
        CALL_WINDOW (queued behind others on the shared threads) is handed to the next
        message instead, its slot held: the invocation must end inside its lock."""
        method = call.method
        if not call.paced:
            wait = self.arm.pacer.reserve(call.subscription_id, method)
            if wait > call.max_inline_wait:
                return Deferred(wait)
            if wait > 0:
                self.sleep(wait)
        if self.monotonic() - invocation_started >= CALL_WINDOW:
            return Deferred(0.0)
        polled = _polled(request_id, call)
        if polled is not None:
            self._seen_poller(call.subscription_id, polled)
        started = self.monotonic()
        result = self.arm.call(method, call.url, call.subscription_id, call.client_request_id,
                               call.body, max_body=MAX_LIST_BODY if call.large else MAX_BODY)
        if isinstance(result, ArmAnswer):
            # on the app's own clock, which the core's times are on (see read_gap_from)
            result = replace(result, elapsed=max(0.0, self.monotonic() - started))
        return result

    # -- readings ------------------------------------------------------------------------------

    def _track(self, state: RunState) -> None:
        """Which operations are in flight on each subscription. A finished one stops counting
        against the read budget at once (else it would stretch everyone's gap for
        POLLER_WINDOW seconds); one waiting for its first read counts until a window after
        that read was due. Keyed by target, not URL: one carried by reference (its URL in the
        ledger only, docs/design.md "Poll message") is in flight all the same."""
        window, now = dt.timedelta(seconds=POLLER_WINDOW), self.clock()
        with self._lock:
            for ts in state.targets:
                sub = ts.target.subscription_id.lower()
                operation = _operation(state.origin.request_id, ts.index)
                # a target POSTing now is an operation in flight by the time it is answered
                # (not one whose POST waits for a later write slot)
                if ts.phase == "post" and ts.due <= now:
                    _of(self._in_flight, sub).set(operation, now + window)
                elif ts.phase == "poll":
                    _of(self._in_flight, sub).set(operation, ts.due + window)
                else:
                    if sub in self._in_flight:
                        self._in_flight[sub].pop(operation)
                    if ts.phase == "done" and sub in self._pollers:
                        self._pollers[sub].pop(operation)

    def _seen_poller(self, subscription: str, operation: str) -> None:
        with self._lock:
            _of(self._pollers, subscription.lower()).set(operation, self.monotonic())

    def _budgets(self, state: RunState) -> Mapping[str, ReadBudget]:
        """Per subscription of this request: ARM's last remaining-reads count, how many
        operations this process has polled there lately and has in flight, and how long
        flushes there have lately taken. What expired is dropped from the front of each
        `_Expiring`: a step costs O(expired + 1), not a look at every operation followed."""
        now, wall, budgets = self.monotonic(), self.clock(), {}
        for sub in {t.target.subscription_id for t in state.targets}:
            key = sub.lower()
            with self._lock:
                pollers = in_flight = 0
                seen = self._pollers.get(key)
                if seen is not None:
                    seen.expire(lambda at: now - at > POLLER_WINDOW)
                    pollers = len(seen)
                flying = self._in_flight.get(key)
                if flying is not None:
                    flying.expire(lambda until: until < wall)
                    in_flight = len(flying)
                expected = {kind: e.seconds for kind, e in self._durations.get(key, {}).items()}
            remaining = self.arm.pacer.remaining(sub, "reads")
            budgets[sub] = ReadBudget(remaining[0] if remaining else None, max(1, pollers),
                                      self.arm.pacer.refill(sub, "reads"), in_flight, expected)
        return budgets


_T = TypeVar("_T", float, dt.datetime)


def _of(table: dict[str, _Expiring[_T]], subscription: str) -> _Expiring[_T]:
    found = table.get(subscription)
    if found is None:
        found = table[subscription] = _Expiring()
    return found


class _Expiring(Generic[_T]):
    """Keys with a moment each (when an operation was read, or when to forget it), kept in a
    heap by moment as well, so what has expired is found at its front: O(expired log n) a
    step instead of a scan of every key (O(N^2) over a fleet of N caches in one process).
    The moments need not come in order (a due time, a wall clock NTP steps back). A key set
    again or popped leaves its old heap entry behind, skipped when it comes up and swept out
    once such entries outnumber the live ones."""

    def __init__(self) -> None:
        self._at: dict[str, _T] = {}
        self._heap: list[tuple[_T, str]] = []

    def __len__(self) -> int:
        return len(self._at)

    def set(self, key: str, at: _T) -> None:
        if key in self._at and self._at[key] == at:
            return  # its heap entry is there already
        self._at[key] = at
        heapq.heappush(self._heap, (at, key))
        self._sweep()

    def pop(self, key: str) -> None:
        if self._at.pop(key, None) is not None:
            self._sweep()

    def _sweep(self) -> None:
        """Rebuild the heap from the live keys once left-behind entries outnumber them (by
        64): O(1) a change, amortized, and the heap stays under twice the keys."""
        if len(self._heap) > 2 * len(self._at) + 64:
            self._heap = [(when, k) for k, when in self._at.items()]
            heapq.heapify(self._heap)

    def expire(self, expired: Callable[[_T], bool]) -> None:
        """Drop every key whose moment is `expired`, which must hold for all moments up to
        some point and for none after it (a moment too old, or a time already past)."""
        heap, at = self._heap, self._at
        while heap and expired(heap[0][0]):
            when, key = heapq.heappop(heap)
            if key in at and at[key] == when:
                del at[key]


@contextlib.contextmanager
def _raising_logged(request_id: str) -> Iterator[None]:
    """An invocation that raises (the bus or the ledger failed) logs one line naming its
    request before the exception leaves: the host's exception names no request, and the
    engineer on call looks a dead-lettered request up by its id (docs/azure.md,
    "Application Insights queries")."""
    try:
        yield
    except Exception as exc:
        log.error("request %s: raised, so the message is delivered again (dead-lettered "
                  "after MaxDeliveryCount): %s: %s", printable(request_id),
                  type(exc).__name__, printable(exc, 300))
        raise


@dataclass
class _Invocation:
    """One invocation: when it began (no ARM call starts CALL_WINDOW after it, no failed
    ledger record is tried again RECORD_WINDOW after it), and whether a record failed for
    good (the table is taken to be down: the rest are skipped)."""

    started: float
    ledger_down: bool = False


def _operation(request_id: str, index: int) -> str:
    """How the readings key an operation: its request and target, as the client request id
    does (`{requestId}:{target}.{step}`); the same whether its URL is in the state or in the
    ledger only, and when ARM moves it."""
    return f"{request_id}:{index}"


def _polled(request_id: str, call: CallArm) -> str | None:
    """The operation a status read follows (its ref is `t{index}:poll`, core/flush_steps
    `call_for`), or None for any other call."""
    target, _, phase = call.ref.partition(":")
    if call.method != "GET" or phase != "poll" or not target[1:].isdigit():
        return None
    return _operation(request_id, int(target[1:]))


def _describe(commands: list[Command]) -> str | None:
    """What a decision did, for the host's one log line per invocation."""
    done = [c for c in commands if isinstance(c, Publish)]
    scheduled = [c for c in commands if isinstance(c, Schedule)]
    parts = [f"completed {c.message.application_properties.get('status')} "
             f"({c.message.application_properties.get('cacheName') or 'request'})"
             for c in done]
    parts += [f"scheduled {c.message.message_id} at {c.at:%H:%M:%S.%f}"[:-3] for c in scheduled]
    return "; ".join(parts) or None
