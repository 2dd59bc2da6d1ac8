"""What this process has seen of each subscription's status reads, for the read budget a step
is given (README, "How ARM is followed"; docs/design.md, "Reliability rules"): which
operations it read lately, which it has in flight, how long flushes there took.

Kept apart from the shell (`app.py`) because it is state of its own with rules of its own: an
operation counts once, keyed by request and target (never by URL: one carried by reference
has its URL in the ledger only, and ARM may move one), and what expired is dropped from the
front of a heap, so a step costs the same with ten operations followed or twenty thousand."""
from __future__ import annotations

import datetime as dt
import heapq
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from .core import durations
from .core.commands import CallArm
from .core.state import RunState

# An operation read this long ago no longer counts as one polled lately; one in flight whose
# next read was due this long ago no longer counts as in flight.
POLLER_WINDOW = 10.0

_T = TypeVar("_T", float, dt.datetime)


class Readings:
    """One per process, shared by its invocations (thread-safe)."""

    def __init__(self) -> None:
        # operations whose status was read lately: subscription -> operation -> when
        self._polled: dict[str, Expiring[float]] = {}
        # operations accepted and not seen ending: subscription -> operation -> forget after
        self._in_flight: dict[str, Expiring[dt.datetime]] = {}
        # what flushes took: subscription -> kind -> estimate
        self._durations: dict[str, dict[str, durations.Estimate]] = {}
        self._lock = threading.Lock()

    def track(self, state: RunState, now: dt.datetime) -> None:
        """Which of a request's operations are in flight. A finished one stops counting at
        once (else it would stretch everyone's gap for POLLER_WINDOW seconds); one waiting
        for its first read counts until a window after that read was due."""
        window = dt.timedelta(seconds=POLLER_WINDOW)
        with self._lock:
            for ts in state.targets:
                sub = ts.target.subscription_id.lower()
                operation = operation_key(state.origin.request_id, ts.index)
                # a target POSTing now is an operation in flight by the time it is answered
                # (not one whose POST waits for a later write slot)
                if ts.phase == "post" and ts.due <= now:
                    _of(self._in_flight, sub).set(operation, now + window)
                elif ts.phase == "poll":
                    _of(self._in_flight, sub).set(operation, ts.due + window)
                else:
                    if sub in self._in_flight:
                        self._in_flight[sub].pop(operation)
                    if ts.phase == "done" and sub in self._polled:
                        self._polled[sub].pop(operation)

    def polled(self, subscription: str, operation: str, at: float) -> None:
        """An operation's status is being read now (`at`, on the monotonic clock)."""
        with self._lock:
            _of(self._polled, subscription.lower()).set(operation, at)

    def learn(self, subscription: str, kind: str, lo: float | None, hi: float) -> None:
        """A flush of `kind` there took between `lo` and `hi` seconds."""
        with self._lock:
            kinds = self._durations.setdefault(subscription.lower(), {})
            learned = durations.observe(kinds.get(kind), lo, hi)
            if learned is not None:
                kinds[kind] = learned

    def counts(self, subscription: str, now: float, wall: dt.datetime
               ) -> tuple[int, int, dict[str, float]]:
        """Operations polled lately and in flight on the subscription, and what flushes of
        each kind there take; expired readings are dropped first (`now` monotonic, `wall`
        the wall clock the due times are on)."""
        key = subscription.lower()
        with self._lock:
            polled = in_flight = 0
            seen = self._polled.get(key)
            if seen is not None:
                seen.expire(lambda at: now - at > POLLER_WINDOW)
                polled = len(seen)
            flying = self._in_flight.get(key)
            if flying is not None:
                flying.expire(lambda until: until < wall)
                in_flight = len(flying)
            expected = {kind: e.seconds for kind, e in self._durations.get(key, {}).items()}
        return polled, in_flight, expected


def operation_key(request_id: str, index: int) -> str:
    """How the readings key an operation: its request and target, as the client request id
    does (`{requestId}:{target}.{step}`); the same whether its URL is in the state or in the
    ledger only, and when ARM moves it."""
    return f"{request_id}:{index}"


def polled_operation(request_id: str, call: CallArm) -> str | None:
    """The operation a status read follows (its ref is `t{index}:poll`, core/flush_steps
    `call_for`), or None for any other call."""
    target, _, phase = call.ref.partition(":")
    if call.method != "GET" or phase != "poll" or not target[1:].isdigit():
        return None
    return operation_key(request_id, int(target[1:]))


def _of(table: dict[str, Expiring[_T]], subscription: str) -> Expiring[_T]:
    found = table.get(subscription)
    if found is None:
        found = table[subscription] = Expiring()
    return found


class Expiring(Generic[_T]):
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
