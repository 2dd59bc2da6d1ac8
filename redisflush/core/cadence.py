"""When to call ARM next (docs/design.md, "Reliability rules"; docs/benchmarks.md for the
figures behind the numbers).

Status reads: at most one per second per operation, spread further when the subscription's
read budget is shared by many operations (ARM refills 25 reads a second per subscription and
principal), never sooner than Retry-After. When they are that scarce, a new operation's first
read goes to when recent flushes of its kind ended (core/durations.py). Retries after
transient errors back off 2, 4, 8 ... 60 s, spread by a hash so a fleet does not move in
lockstep. Every wait is capped: a
Retry-After of thirty years parks a target for MAX_WAIT at most, and never past its deadline.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

MIN_POLL_GAP = 1.0          # one status read per second per operation, at most
READ_REFILL_PER_SECOND = 25.0
READ_SHARE = 0.8            # of the refill this process plans for; the rest is headroom
LOW_WATER = 50.0            # remaining reads under which the plan slows down in proportion
MAX_RETRY_DELAY = 60.0
MAX_WAIT = 300.0            # cap on any Retry-After or pacer wait
MAX_INLINE_WAIT = 0.2       # a pacer slot this close is waited for in-process


@dataclass(frozen=True)
class ReadBudget:
    """What the shell knows of one subscription's read bucket: the last remaining count ARM
    reported (None before any), and how many operations this process follows there."""

    remaining: float | None = None
    pollers: int = 1
    refill: float | None = None  # reads/s left for us when another client shares the bucket
    in_flight: int = 0  # operations accepted and not ended, read yet or not
    expected: Mapping[str, float] = field(default_factory=dict)  # kind -> seconds (durations)


def planned_rate(budget: ReadBudget) -> float:
    """Reads per second this process plans to spend on the subscription."""
    rate = (budget.refill or READ_REFILL_PER_SECOND) * READ_SHARE
    if budget.remaining is not None and budget.remaining < LOW_WATER:
        rate *= max(0.5, budget.remaining / LOW_WATER)
    return rate


def scarce(budget: ReadBudget | None) -> bool:
    """Whether the operations in flight could not all be read every second."""
    return budget is not None and budget.in_flight / planned_rate(budget) > MIN_POLL_GAP


def first_read_gap(budget: ReadBudget | None, kind: str) -> float:
    """Seconds from a flush's acceptance to its first status read. With reads to spare,
    the usual gap (so lag stays under a second whatever the flush takes); when they are
    scarce and recent flushes of this kind say when they end, that point: reads spent
    before it would mostly find the operation still running; scarce with nothing learned,
    one share of the reads among all the operations in flight."""
    expected = budget.expected.get(kind) if budget is not None else None
    if expected is not None and scarce(budget):
        return max(MIN_POLL_GAP, expected)
    return next_read_gap(budget, kind)


def next_read_gap(budget: ReadBudget | None, kind: str) -> float:
    """Seconds from one status read to the next. Scarce with nothing learned for the kind:
    one share of the reads among every operation in flight (not only those read lately), so
    reads never queue up behind the pacer faster than the bucket refills."""
    gap = poll_gap(budget)
    if budget is None or kind in budget.expected or not scarce(budget):
        return gap
    return max(gap, budget.in_flight / planned_rate(budget))


def poll_gap(budget: ReadBudget | None) -> float:
    """Seconds until an operation's next status read when ARM gave no Retry-After."""
    if budget is None:
        return MIN_POLL_GAP
    return max(MIN_POLL_GAP, max(1, budget.pollers) / planned_rate(budget))


def retry_delay(failures: int, seed: str) -> float:
    """Backoff after `failures` transient errors: 2, 4, 8 ... 60 s, spread by +-25%
    (from a hash of `seed`, so decisions stay deterministic)."""
    base = min(MAX_RETRY_DELAY, 2.0 ** min(max(1, failures), 16))
    spread = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:2], "big") / 65535.0
    return base * (0.75 + 0.5 * spread)


def capped(seconds: float | None) -> float:
    return 0.0 if seconds is None else min(max(0.0, seconds), MAX_WAIT)


def next_time(now: dt.datetime, delay: float, retry_after: float | None,
              deadline: dt.datetime) -> dt.datetime:
    """now + max(delay, Retry-After), both capped, and never past the deadline."""
    wait = max(capped(delay), capped(retry_after))
    left = (deadline - now).total_seconds()
    return deadline if wait >= left else now + dt.timedelta(seconds=wait)


PERCENT_HALF_STEP = 0.5   # a whole-number percentComplete: the end is uncertain by that
PROGRESS_MARGIN = 0.02    # seconds after the projected end, for the reading's own rounding
SAME_MOMENT = 0.001       # a read this close to a projected end was sent at it


def progress_end(age: float, percent: object) -> float | None:
    """The age (seconds from acceptance) by which an operation that reported `percent` at
    `age` ends if it progresses evenly, rounded up by the reading's precision; None when the
    reading says nothing (not a number strictly between 0 and 99: a 99 may be a cap held
    until the end)."""
    if isinstance(percent, bool) or not isinstance(percent, (int, float)):
        return None
    if not (math.isfinite(percent) and 0 < percent < 99 and math.isfinite(age) and age > 0):
        return None
    # a whole number may hide up to half a percent of progress; a value with decimals was
    # rounded more finely (to a tenth, at worst)
    half = PERCENT_HALF_STEP if float(percent).is_integer() else PERCENT_HALF_STEP / 10
    return age * 100.0 / max(percent - half, 0.5) + PROGRESS_MARGIN


def still_ahead(end: float | None, age: float) -> float | None:
    """An end projected by an earlier reading, while it is still ahead of a read sent at
    `age`; once a read at or after it found the operation running, the projection was wrong
    and is dropped (the one-a-second reads take over). A read scheduled at the end may be
    sent a rounding (a microsecond) before it: within a millisecond counts as at it."""
    return end if end is not None and end > age + SAME_MOMENT else None


def after_progress(sent: float, usual: float, end: float | None, gap: float,
                   budget: ReadBudget | None) -> float:
    """The next read's age given a projected end: moved to just after it when that is within
    the following gap (reads stay at least a gap apart, so the rate never rises); with reads
    scarce, no sooner than halfway to it either (a wrong projection costs a halving, not the
    whole wait). Without a projection, `usual`."""
    if end is None or end <= usual:
        return usual
    if end <= sent + 2 * gap:
        return end
    if scarce(budget):
        return max(usual, sent + (end - sent) / 2.0)
    return usual
