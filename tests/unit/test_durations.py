"""core/durations.py: the duration estimate a scarce read budget places first reads with.

It must settle where the QUANTILE share of operations have ended (so most first reads find
the flush over and one read per operation suffices), follow a change of durations both ways,
and ignore ages that say nothing."""
from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redisflush.core.durations import MAX_SECONDS, QUANTILE, WARM_UP, Estimate, observe


def run(estimate: Estimate | None, durations: list[float], gap: float = 1.0
        ) -> Estimate | None:
    """Each operation read first at the current estimate (or `gap` with none), then every
    `gap` seconds: what the app's reads would tell the estimate."""
    for d in durations:
        first = estimate.seconds if estimate is not None else gap
        lo, t = None, first
        while t < d:
            lo, t = t, t + gap
        estimate = observe(estimate, lo, t)
    return estimate


def test_first_operation_gives_the_middle_of_its_interval():
    assert observe(None, 9.0, 10.0) == Estimate(9.5, 1)
    assert observe(None, None, 3.0) == Estimate(3.0, 1)  # ended before its first read


@pytest.mark.parametrize("spread", [0.0, 0.5, 2.0])
def test_settles_at_the_high_quantile(spread):
    rng = random.Random(7)
    durations = [10.0 + rng.uniform(0, spread) for _ in range(3000)]
    estimate = run(None, durations)
    assert estimate is not None and estimate.seen == 3000
    tail = durations[-1000:]
    share = sum(d <= estimate.seconds for d in tail) / len(tail)
    # ends by the estimate for about QUANTILE of them, and never far past the slowest
    assert share >= QUANTILE - 0.15
    assert estimate.seconds <= (10.0 + spread) * (1 + 0.05) + 0.1


def test_the_first_operations_keep_the_lowest_point():
    """Early reads are sparse (shared among many operations), so their intervals are wide:
    the warm-up keeps the lowest upper bound or middle, then the tracker takes over."""
    est = observe(None, None, 19.0)
    for lo, hi in [(None, 16.0), (9.0, 11.0), (None, 25.0), (1.5, 12.5)]:
        est = observe(est, lo, hi)
    # (1.5, 12.5] is too wide for its middle (7) to mean anything: its upper end counts
    assert est == Estimate(10.0, 5)
    for _ in range(WARM_UP):
        est = observe(est, None, 30.0)
    assert est is not None and est.seconds == 10.0 and est.seen >= WARM_UP


def test_follows_durations_down_and_up():
    est = run(None, [30.0] * 5)
    assert est is not None and est.seconds >= 29
    est = run(est, [10.0] * 400)
    assert est is not None and est.seconds < 11.0      # shorter flushes pull it down
    est = run(est, [20.0] * 60)
    assert est is not None and est.seconds > 19.0      # longer ones push it up, faster


def test_an_operation_that_ended_by_the_estimate_lowers_it_a_little():
    e = Estimate(10.0, 50)
    down, up = observe(e, None, 10.0), observe(e, 10.0, 11.0)
    assert down is not None and up is not None
    assert 9.9 < down.seconds < 10.0 < up.seconds < 10.5
    # the upward step is QUANTILE / (1 - QUANTILE) times the downward one
    assert math.isclose((up.seconds - 10) / (10 - down.seconds), QUANTILE / (1 - QUANTILE))


def test_a_straddling_interval_is_judged_by_its_middle():
    e = Estimate(10.0, 50)
    assert observe(e, 9.0, 10.8).seconds < 10.0   # middle 9.9: ended by it
    assert observe(e, 9.5, 11.0).seconds > 10.0   # middle 10.25: had not
    assert observe(e, 8.0, 25.0) == e             # too wide to say (reads were sparse)


def test_a_late_only_read_says_nothing():
    """A read deferred past the estimate that finds the flush over: it may have ended any
    time before, so the estimate stays (a pacer backlog must not push it up)."""
    e = Estimate(10.0, 50)
    assert observe(e, None, 30.0) == e


@pytest.mark.parametrize("lo, hi", [(None, -1.0), (None, math.nan), (None, math.inf),
                                    (5.0, 4.0), (-1.0, 3.0), (math.nan, 3.0),
                                    (None, MAX_SECONDS + 1)])
def test_ages_that_say_nothing_leave_it(lo, hi):
    e = Estimate(10.0, 50)
    assert observe(e, lo, hi) == e
    assert observe(None, lo, hi) is None


@given(st.lists(st.tuples(st.one_of(st.none(), st.floats(0, 100)), st.floats(0, 100)),
                max_size=50))
def test_stays_finite_positive_and_bounded(pairs):
    est = None
    for lo, hi in pairs:
        est = observe(est, lo, hi)
    if est is not None:
        assert math.isfinite(est.seconds) and 0 <= est.seconds <= MAX_SECONDS
