"""pacing.py: the GCRA mirror of ARM's per-subscription buckets, on a fake clock."""
from __future__ import annotations

import pytest

from redisflush.pacing import LIMITS, MAX_PAUSE, Pacer, bucket_kind, remaining_count

SUB_A = "00000000-0000-0000-0000-00000000000a"
SUB_B = "00000000-0000-0000-0000-00000000000b"
WRITES_HEADER = "x-ms-ratelimit-remaining-subscription-writes"
READS_HEADER = "x-ms-ratelimit-remaining-subscription-reads"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def burst(pacer: Pacer, sub: str, method: str, n: int) -> list[float]:
    return [pacer.reserve(sub, method) for _ in range(n)]


@pytest.mark.parametrize("method, kind", [("POST", "writes"), ("GET", "reads"),
                                          ("get", "reads"), ("HEAD", "reads"),
                                          ("PUT", "writes"), ("DELETE", "writes"),
                                          ("PATCH", "writes")])
def test_bucket_kind(method, kind):
    assert bucket_kind(method) == kind


@pytest.mark.parametrize("method, size, rate", [("POST", 200, 10.0), ("GET", 250, 25.0)])
def test_burst_then_refill_rate(clock, method, size, rate):
    assert LIMITS[bucket_kind(method)] == (size, rate)
    pacer = Pacer(clock)
    assert burst(pacer, SUB_A, method, size) == pytest.approx([0.0] * size, abs=1e-9)
    queued = burst(pacer, SUB_A, method, 5)
    assert queued == pytest.approx([k / rate for k in range(1, 6)])
    clock.now += 10.0  # ten seconds refill 10*rate tokens, minus the 5 already promised
    free = int(10 * rate) - 5
    assert burst(pacer, SUB_A, method, free) == pytest.approx([0.0] * free, abs=1e-9)
    assert pacer.reserve(SUB_A, method) == pytest.approx(1 / rate)


def test_idle_time_never_banks_more_than_the_burst(clock):
    pacer = Pacer(clock, limits={"writes": (3, 1.0), "reads": (3, 1.0)})
    clock.now += 3600
    assert burst(pacer, SUB_A, "POST", 4) == pytest.approx([0, 0, 0, 1.0])


def test_small_limits_exact_schedule(clock):
    pacer = Pacer(clock, limits={"writes": (2, 2.0), "reads": (1, 1.0)})
    assert burst(pacer, SUB_A, "POST", 4) == pytest.approx([0, 0, 0.5, 1.0])
    clock.now += 0.5
    assert pacer.reserve(SUB_A, "POST") == pytest.approx(1.0)


@pytest.mark.parametrize("remaining, free", [("0", 0), ("1", 1), ("5", 5), ("150", 150)])
def test_remaining_header_pulls_the_mirror_down(clock, remaining, free):
    pacer = Pacer(clock)
    pacer.observe(SUB_A, "POST", 200, {WRITES_HEADER: remaining})
    waits = burst(pacer, SUB_A, "POST", free + 1)
    assert waits[:free] == pytest.approx([0.0] * free, abs=1e-9)
    assert waits[free] == pytest.approx(0.1)


def test_remaining_header_never_pushes_the_mirror_up(clock):
    pacer = Pacer(clock)
    burst(pacer, SUB_A, "POST", 200)  # our mirror: empty
    pacer.observe(SUB_A, "POST", 200, {WRITES_HEADER: "199"})  # another instance's view
    assert pacer.reserve(SUB_A, "POST") == pytest.approx(0.1)


def test_remaining_header_is_case_insensitive_and_garbage_is_ignored(clock):
    pacer = Pacer(clock)
    pacer.observe(SUB_A, "POST", 200, {WRITES_HEADER.upper(): "0"})
    assert pacer.reserve(SUB_A, "POST") == pytest.approx(0.1)
    other = Pacer(clock)
    other.observe(SUB_A, "POST", 200, {WRITES_HEADER: "lots"})
    assert other.reserve(SUB_A, "POST") == 0.0


def test_reads_header_only_moves_the_reads_bucket(clock):
    pacer = Pacer(clock)
    pacer.observe(SUB_A, "GET", 200, {READS_HEADER: "0", WRITES_HEADER: "0"})
    assert pacer.reserve(SUB_A, "GET") == pytest.approx(1 / 25)
    assert pacer.reserve(SUB_A, "POST") == 0.0


@pytest.mark.parametrize("retry_after, wait", [(30.0, 30.0), (0.0, 0.0), (None, 1.0)])
def test_429_pushes_the_next_slot_out(clock, retry_after, wait):
    pacer = Pacer(clock)
    pacer.observe(SUB_A, "POST", 429, {}, retry_after)
    assert pacer.reserve(SUB_A, "POST") == pytest.approx(wait)
    assert pacer.reserve(SUB_B, "POST") == 0.0  # another subscription is not throttled
    assert pacer.reserve(SUB_A, "GET") == 0.0  # nor the reads of the same one


def test_429_with_remaining_zero_takes_the_later_of_both(clock):
    pacer = Pacer(clock)
    pacer.observe(SUB_A, "POST", 429, {WRITES_HEADER: "0"}, 5.0)
    assert pacer.reserve(SUB_A, "POST") == pytest.approx(5.0)
    clock.now += 5.0
    assert pacer.reserve(SUB_A, "POST") == pytest.approx(0.1)


def test_a_non_429_does_not_push_slots(clock):
    pacer = Pacer(clock)
    pacer.observe(SUB_A, "POST", 503, {}, 30.0)
    assert pacer.reserve(SUB_A, "POST") == 0.0


def test_buckets_are_separate_per_subscription_and_kind(clock):
    pacer = Pacer(clock, limits={"writes": (2, 1.0), "reads": (2, 1.0)})
    assert burst(pacer, SUB_A, "POST", 3) == pytest.approx([0, 0, 1.0])
    assert burst(pacer, SUB_B, "POST", 3) == pytest.approx([0, 0, 1.0])
    assert burst(pacer, SUB_A, "GET", 3) == pytest.approx([0, 0, 1.0])


def test_subscription_keys_are_case_insensitive(clock):
    pacer = Pacer(clock, limits={"writes": (1, 1.0), "reads": (1, 1.0)})
    assert pacer.reserve(SUB_A, "POST") == 0.0
    assert pacer.reserve(SUB_A.upper(), "POST") == pytest.approx(1.0)


def test_slots_are_handed_out_not_lost_when_time_passes(clock):
    pacer = Pacer(clock, limits={"writes": (1, 1.0), "reads": (1, 1.0)})
    assert burst(pacer, SUB_A, "POST", 3) == pytest.approx([0, 1.0, 2.0])
    clock.now += 1.5
    assert pacer.reserve(SUB_A, "POST") == pytest.approx(1.5)


# --- hostile header values, remembered counts, capped pauses ------------------------------------

@pytest.mark.parametrize("value", ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400",
                                   "-1", "-0.5", "-1e9", "", "  ", "lots", "0x10", "1,000",
                                   "\u0661\u0662x"])
def test_a_garbage_remaining_header_is_ignored(clock, value):
    pacer = Pacer(clock)
    pacer.observe(SUB_A, "POST", 200, {WRITES_HEADER: value})
    assert burst(pacer, SUB_A, "POST", 200) == pytest.approx([0.0] * 200, abs=1e-9)
    assert pacer.remaining(SUB_A, "writes") is None


@pytest.mark.parametrize("value, count", [("0", 0.0), ("12", 12.0), (" 7 ", 7.0),
                                          ("249.0", 249.0), ("1e2", 100.0)])
def test_remaining_count(value, count):
    assert remaining_count(value) == count


def test_remaining_remembers_the_last_count_and_when_it_was_seen(clock):
    pacer = Pacer(clock)
    assert pacer.remaining(SUB_A, "reads") is None
    pacer.observe(SUB_A, "GET", 200, {READS_HEADER: "240"})
    assert pacer.remaining(SUB_A, "reads") == (240.0, 1000.0)
    clock.now += 2.5
    pacer.observe(SUB_A.upper(), "GET", 200, {READS_HEADER: "180"})
    assert pacer.remaining(SUB_A, "reads") == (180.0, 1002.5)
    pacer.observe(SUB_A, "GET", 200, {READS_HEADER: "nan"})  # garbage keeps the last good one
    assert pacer.remaining(SUB_A, "reads") == (180.0, 1002.5)
    assert pacer.remaining(SUB_A, "writes") is None
    assert pacer.remaining(SUB_B, "reads") is None


def test_remaining_is_recorded_on_a_429_too(clock):
    pacer = Pacer(clock)
    pacer.observe(SUB_A, "POST", 429, {WRITES_HEADER: "0"}, 3.0)
    assert pacer.remaining(SUB_A, "writes") == (0.0, 1000.0)


THIRTY_YEARS = 30 * 365 * 86400.0


@pytest.mark.parametrize("retry_after", [THIRTY_YEARS, 1e300, MAX_PAUSE + 1])
def test_a_429_parks_a_subscription_for_at_most_max_pause(clock, retry_after):
    assert MAX_PAUSE == 300.0
    pacer = Pacer(clock)
    pacer.observe(SUB_A, "POST", 429, {}, retry_after)
    assert pacer.reserve(SUB_A, "POST") == pytest.approx(MAX_PAUSE)
    clock.now += MAX_PAUSE
    assert pacer.reserve(SUB_A, "POST") < 1.0  # usable again after five minutes


@pytest.mark.parametrize("retry_after", [float("nan"), float("inf"), -5.0])
def test_a_429_with_an_unusable_retry_after_pauses_the_default_second(clock, retry_after):
    pacer = Pacer(clock)
    pacer.observe(SUB_A, "POST", 429, {}, retry_after)
    assert pacer.reserve(SUB_A, "POST") == pytest.approx(1.0)


def test_a_second_client_on_the_bucket_is_seen_in_the_refill_estimate():
    """ARM's remaining count falls faster than our own reads explain: the refill left for us
    is estimated from the headers (12.5/s when another client takes half of 25/s) and the
    mirror paces at that rate."""
    from redisflush.pacing import Pacer

    now = [100.0]
    pacer = Pacer(clock=lambda: now[0])
    header = "x-ms-ratelimit-remaining-subscription-reads"
    remaining = 150.0
    for _ in range(200):  # 10 s: we read 20/s; refill 25/s; the other client takes 12.5/s
        now[0] += 0.05
        remaining += 25 * 0.05 - 12.5 * 0.05 - 1
        pacer.observe("sub", "GET", 200, {header: str(remaining)})
    estimate = pacer.refill("sub", "reads")
    assert estimate is not None and 11.5 <= estimate <= 13.5
    assert pacer.refill("sub", "writes") is None
    full = Pacer(clock=lambda: now[0])
    full.observe("sub", "GET", 200, {header: "249"})
    assert full.refill("sub", "reads") is None  # a full bucket says nothing about the rate


def test_paused_while_a_429s_retry_after_runs(clock):
    """A slot handed out before a 429 may fall inside its Retry-After, which ARM answers with
    another 429: `paused` tells the shell to take a new slot, past the pause."""
    pacer = Pacer(clock)
    held = pacer.reserve(SUB_A, "POST")                 # a slot for now, held by a message
    assert held == 0.0 and not pacer.paused(SUB_A, "POST")
    pacer.observe(SUB_A, "POST", 429, {WRITES_HEADER: "0"}, 2.0)
    assert pacer.paused(SUB_A, "POST") and not pacer.paused(SUB_A, "GET")
    assert not pacer.paused(SUB_B, "POST")
    assert pacer.reserve(SUB_A, "POST") >= 2.0          # the new slot lies past the pause
    clock.now += 1.999
    assert pacer.paused(SUB_A.upper(), "POST")
    clock.now += 0.001
    assert not pacer.paused(SUB_A, "POST")
    pacer.observe(SUB_A, "POST", 429, {}, 10**9)        # capped like the slots
    clock.now += MAX_PAUSE
    assert not pacer.paused(SUB_A, "POST")
