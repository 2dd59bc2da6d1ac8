"""How long flushes have lately taken, so a scarce read budget is spent near their ends
(docs/design.md, "Reliability rules": budget-aware polling).

When many operations share a subscription's read bucket, reading each one every second is
impossible; spreading the reads evenly spends most of them on operations that cannot have
ended yet. Flushes on one subscription and of one kind tend to take similar times, so the
first read of a new operation goes to the point by which most recent ones had ended.

The estimate tracks a high quantile (`QUANTILE`) of the duration from each finished operation:
all that is known of one is an interval (lo, hi] of ages, from the last read that found it
running (or none) to the read that found it ended. The estimate steps down a little when an
operation had ended by it and up more when it had not, so it settles where a `QUANTILE` share
of operations end by it (stochastic quantile tracking). Pure: ages in, estimate out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

QUANTILE = 0.9   # the share of operations the first read should find ended
STEP = 0.05      # relative step per finished operation
WARM_UP = 16     # operations whose middles only lower the first estimate
LATE = 1.0       # a read this late after the estimate still answers "ended by it?"
MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class Estimate:
    """A duration (seconds from the flush's acceptance) and how many operations shaped it."""

    seconds: float
    seen: int = 1


def observe(estimate: Estimate | None, lo: float | None, hi: float) -> Estimate | None:
    """The estimate after one operation that ended within ages (lo, hi]. Ages that are not
    finite, negative or out of order say nothing and leave it as it was."""
    if not _age(hi) or (lo is not None and (not _age(lo) or lo > hi)):
        return estimate
    # a narrow interval's middle; else its upper end, which no duration exceeds
    point = (lo + hi) / 2.0 if lo is not None and hi - lo <= 2 * LATE else hi
    if estimate is None:
        return Estimate(point)
    e = estimate.seconds
    if estimate.seen < WARM_UP:
        # the first operations' reads are sparse, so their intervals are wide: keep the
        # lowest; an estimate too low costs one early read each and climbs back quickly,
        # one too high would come down only by the small step
        return Estimate(min(e, point), estimate.seen + 1)
    if lo is None:
        if hi > e + LATE:
            return estimate  # its only read came long after the estimate (deferred): unknown
        ended_by = True  # its first read, at the estimate give or take delivery, found it over
    elif hi <= e:
        ended_by = True
    elif lo >= e:
        ended_by = False
    elif hi - lo <= 2 * LATE:  # a narrow interval straddles the estimate: judge its middle
        ended_by = (lo + hi) / 2.0 <= e
    else:
        return estimate  # a wide one (sparse reads) could have ended either side
    e *= (1.0 - STEP * (1.0 - QUANTILE)) if ended_by else (1.0 + STEP * QUANTILE)
    return Estimate(min(MAX_SECONDS, e), estimate.seen + 1)


def _age(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= MAX_SECONDS
