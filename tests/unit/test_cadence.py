"""core/cadence.py: when to call ARM next (poll gap from the read budget, retry backoff with a
deterministic spread, every wait capped at MAX_WAIT and never past the deadline)."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redisflush.core.cadence import (
    LOW_WATER,
    MAX_RETRY_DELAY,
    MAX_WAIT,
    MIN_POLL_GAP,
    READ_REFILL_PER_SECOND,
    READ_SHARE,
    ReadBudget,
    after_progress,
    capped,
    first_read_gap,
    next_read_gap,
    next_time,
    poll_gap,
    progress_end,
    retry_delay,
    still_ahead,
)

from .helpers import T0, at

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PLANNED = READ_REFILL_PER_SECOND * READ_SHARE  # 20 reads a second for this process


# --- poll gap ------------------------------------------------------------------------------------

@pytest.mark.parametrize("budget, gap", [
    (None, 1.0),  # nothing known: one read a second per operation
    (ReadBudget(), 1.0),
    (ReadBudget(remaining=None, pollers=1), 1.0),
    (ReadBudget(remaining=250, pollers=20), 1.0),  # 20 operations share 20 reads/s
    (ReadBudget(remaining=250, pollers=40), 2.0),
    (ReadBudget(remaining=240, pollers=100), 5.0),
    (ReadBudget(remaining=None, pollers=100), 5.0),
    (ReadBudget(remaining=LOW_WATER, pollers=100), 5.0),  # at the low-water mark: unchanged
    (ReadBudget(remaining=25, pollers=100), 10.0),  # half the low water: half the rate
    (ReadBudget(remaining=5, pollers=40), 4.0),
    (ReadBudget(remaining=0, pollers=40), 4.0),  # never below half the rate: a read planned
    (ReadBudget(remaining=-3, pollers=40), 4.0),  # while the bucket is low is not kept long
    (ReadBudget(remaining=250, pollers=25, refill=12.5), 2.5),  # another client takes half
    (ReadBudget(remaining=None, pollers=5, refill=12.5), 1.0),
    (ReadBudget(remaining=5, pollers=1), 1.0),  # one operation: still 1 s at most often
    (ReadBudget(remaining=250, pollers=0), 1.0),  # 0 pollers counts as one
])
def test_poll_gap(budget, gap):
    assert poll_gap(budget) == pytest.approx(gap)


@FAST
@given(st.none() | st.floats(min_value=-100, max_value=1e6), st.integers(0, 10_000),
       st.integers(0, 10_000))
def test_poll_gap_never_below_one_second_and_slower_when_busier(remaining, pollers, more):
    budget = ReadBudget(remaining, pollers)
    gap = poll_gap(budget)
    assert gap >= MIN_POLL_GAP
    assert poll_gap(ReadBudget(remaining, pollers + more)) >= gap
    if remaining is not None and remaining > 1:
        assert poll_gap(ReadBudget(remaining - 1, pollers)) >= gap  # fewer reads left
    assert gap <= max(MIN_POLL_GAP, max(1, pollers) / (PLANNED * 0.5)) + 1e-9


# --- retry delay ---------------------------------------------------------------------------------

@pytest.mark.parametrize("failures, base", [
    (0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 32.0), (6, 60.0), (7, 60.0),
    (16, 60.0), (5000, 60.0), (10 ** 9, 60.0),
])
def test_retry_delay_doubles_to_the_cap_with_a_spread(failures, base):
    for seed in ("a", "req-1:0", "x" * 100, ""):
        delay = retry_delay(failures, seed)
        assert 0.75 * base <= delay <= 1.25 * base


def test_retry_delay_is_deterministic_per_seed_and_spread_across_seeds():
    assert retry_delay(3, "req-1:0") == retry_delay(3, "req-1:0")
    delays = {retry_delay(3, f"req-{i}") for i in range(200)}
    assert len(delays) > 150  # a fleet does not move in lockstep
    assert min(delays) < 7.0 and max(delays) > 9.0  # the spread covers the +-25% band


def test_retry_delay_cap():
    assert MAX_RETRY_DELAY == 60.0
    assert max(retry_delay(50, f"s{i}") for i in range(500)) <= 1.25 * MAX_RETRY_DELAY


@FAST
@given(st.integers(-5, 10 ** 6), st.text(max_size=50))
def test_any_retry_delay_is_finite_and_bounded(failures, seed):
    delay = retry_delay(failures, seed)
    assert 1.5 <= delay <= 75.0


# --- caps ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, expected", [
    (None, 0.0), (-5.0, 0.0), (0.0, 0.0), (3.5, 3.5), (300.0, 300.0), (301.0, MAX_WAIT),
    (30 * 365 * 86400.0, MAX_WAIT), (float("inf"), MAX_WAIT), (float("-inf"), 0.0),
    (1e308, MAX_WAIT),
])
def test_capped(seconds, expected):
    assert capped(seconds) == expected


def test_capped_nan_is_no_wait():
    assert capped(float("nan")) == 0.0


# --- next time -----------------------------------------------------------------------------------

DEADLINE = at(1800)


@pytest.mark.parametrize("now, delay, retry_after, expected", [
    (T0, 1.0, None, at(1)),
    (T0, 2.0, 5.0, at(5)),  # never sooner than Retry-After
    (T0, 10.0, 5.0, at(10)),  # nor sooner than our own delay
    (T0, 0.0, 0.0, T0),
    (T0, -4.0, None, T0),
    (T0, 1.0, 30 * 365 * 86400.0, at(MAX_WAIT)),  # thirty years parks for minutes
    (T0, 1e9, None, at(MAX_WAIT)),
    (T0, float("inf"), None, at(MAX_WAIT)),
    (T0, 1.0, float("inf"), at(MAX_WAIT)),
    (at(1700), 1.0, 200.0, DEADLINE),  # never past the deadline
    (at(1799), 2.0, None, DEADLINE),
    (at(1798), 2.0, None, DEADLINE),  # exactly at it
    (at(1797), 2.0, None, at(1799)),
    (DEADLINE, 1.0, None, DEADLINE),
    (at(5000), 1.0, None, DEADLINE),  # already past: the deadline (the caller times out)
])
def test_next_time(now, delay, retry_after, expected):
    assert next_time(now, delay, retry_after, DEADLINE) == expected


@FAST
@given(st.floats(min_value=0, max_value=4000), st.floats(allow_nan=False),
       st.none() | st.floats(allow_nan=False), st.integers(0, 86400))
def test_next_time_is_capped_and_inside_the_deadline(start, delay, retry_after, left):
    now = at(start)
    deadline = now + dt.timedelta(seconds=left)
    moment = next_time(now, delay, retry_after, deadline)
    assert now <= moment <= deadline
    assert (moment - now).total_seconds() <= MAX_WAIT
    wanted = max(capped(delay), capped(retry_after))
    assert moment == deadline or (moment - now).total_seconds() == pytest.approx(wanted,
                                                                                 abs=1e-5)


# --- first read: at the expected end only when reads are scarce --------------------------------

@pytest.mark.parametrize("budget, kind, gap", [
    (None, "redis", 1.0),
    (ReadBudget(in_flight=5, expected={"redis": 10.0}), "redis", 1.0),  # reads to spare
    (ReadBudget(in_flight=20, expected={"redis": 10.0}), "redis", 1.0),  # 20 a second: enough
    (ReadBudget(in_flight=21, expected={"redis": 10.0}), "redis", 10.0),  # scarce: at the end
    (ReadBudget(in_flight=21, expected={"redis": 0.2}), "redis", 1.0),   # never under 1 s
    (ReadBudget(in_flight=11, refill=12.5, expected={"redis": 10.0}), "redis", 10.0),
    (ReadBudget(in_flight=9, refill=12.5, expected={"redis": 10.0}), "redis", 1.0),
    # few reads left halve the plan: 11 operations are then too many
    (ReadBudget(remaining=10, in_flight=11, expected={"redis": 7.0}), "redis", 7.0),
    (ReadBudget(remaining=None, in_flight=11, expected={"redis": 7.0}), "redis", 1.0),
    # scarce, but nothing learned for this kind: a share among all in flight
    (ReadBudget(pollers=40, in_flight=40, expected={"redis": 10.0}), "redisEnterprise", 2.0),
    (ReadBudget(pollers=1, in_flight=200), "redis", 10.0),
    (ReadBudget(pollers=1, in_flight=200, refill=12.5), "redis", 20.0),
])
def test_first_read_gap(budget, kind, gap):
    assert first_read_gap(budget, kind) == pytest.approx(gap)


@pytest.mark.parametrize("budget, kind, gap", [
    (None, "redis", 1.0),
    (ReadBudget(pollers=3, in_flight=200), "redis", 10.0),  # nothing learned: a fair share
    (ReadBudget(pollers=3, in_flight=200, refill=12.5), "redis", 20.0),
    (ReadBudget(pollers=3, in_flight=200, expected={"redis": 10.0}), "redis", 1.0),  # learned:
    # only the few read again (found running at the expected end) share the reads
    (ReadBudget(pollers=40, in_flight=200, expected={"redis": 10.0}), "redis", 2.0),
    (ReadBudget(pollers=3, in_flight=10), "redis", 1.0),  # not scarce
])
def test_next_read_gap(budget, kind, gap):
    assert next_read_gap(budget, kind) == pytest.approx(gap)


# --- percentComplete: a projected end moves the next read, never closer than a gap ------------

@pytest.mark.parametrize("age, percent, end", [
    (9.0, 90.0, 9.0 * 100 / 89.5 + 0.02),   # a whole number: up to half a percent hidden
    (2.0, 50, 2.0 * 100 / 49.5 + 0.02),
    (1.0, 0.7, 1.0 * 100 / 0.65 + 0.02),    # decimals: rounded to a tenth at worst
    (290.0, 96.7, 290.0 * 100 / 96.65 + 0.02),  # 300 s flush: ~0.07 s late, not 1.5 s
    (1.0, 0.3, 1.0 * 100 / 0.5 + 0.02),     # never under half a percent
])
def test_progress_end(age, percent, end):
    assert progress_end(age, percent) == pytest.approx(end)


@pytest.mark.parametrize("age, percent", [
    (5.0, 0), (5.0, 99), (5.0, 99.5), (5.0, 100), (5.0, -3), (5.0, float("nan")),
    (5.0, float("inf")), (5.0, True), (5.0, "50"), (5.0, None), (0.0, 50), (-1.0, 50),
    (float("nan"), 50),
])
def test_progress_end_says_nothing(age, percent):
    assert progress_end(age, percent) is None


@pytest.mark.parametrize("sent, usual, end, budget, moved", [
    (9.0, 10.0, None, None, 10.0),          # no projection
    (9.0, 10.0, 9.6, None, 10.0),           # ends before the next read anyway
    (9.0, 10.0, 10.06, None, 10.06),        # within the following gap: just after it
    (9.0, 10.0, 11.0, None, 11.0),
    (9.0, 10.0, 11.5, None, 10.0),          # further: the usual read (reprojects then)
    (9.0, 10.0, 30.0, ReadBudget(in_flight=100), 19.5),  # scarce: halfway there
    (9.0, 25.0, 30.0, ReadBudget(in_flight=100), 25.0),  # scarce, the spread gap is later
])
def test_after_progress(sent, usual, end, budget, moved):
    assert after_progress(sent, usual, end, 1.0, budget) == pytest.approx(moved)


@pytest.mark.parametrize("end, age, kept", [
    (None, 5.0, None),       # nothing projected
    (300.2, 297.0, 300.2),   # a held 99 says nothing: the earlier projection stands
    (300.2, 300.2, None),    # a read at the projected end found it running: wrong, dropped
    (300.2, 300.1999995, None),  # sent a microsecond's rounding before it: at it
    (300.2, 300.198, 300.2),
    (300.2, 301.0, None),
])
def test_still_ahead(end, age, kept):
    assert still_ahead(end, age) == kept


@given(st.floats(0, 1000), st.floats(1, 10), st.one_of(st.none(), st.floats(0, 5000)),
       st.integers(0, 500))
def test_after_progress_never_reads_sooner_than_a_gap(sent, gap, end, in_flight):
    usual = sent + gap
    moved = after_progress(sent, usual, end, gap, ReadBudget(in_flight=in_flight))
    assert moved >= usual
    if end is not None and moved > usual:
        assert moved <= max(end, usual)   # never past the projected end
