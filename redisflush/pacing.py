"""Client-side pacing against ARM's per-subscription token buckets.

ARM throttles each subscription with token buckets (writes: 200, refilled at 10/s; reads:
250 at 25/s — learn.microsoft.com "Understand how Azure Resource Manager throttles
requests") and reports what is left in `x-ms-ratelimit-remaining-subscription-*`. A fleet
flush that ignored this would spend much of its budget on 429s. The pacer mirrors the
buckets with GCRA (a token bucket kept as one "theoretical arrival time"), corrects the
mirror from every header ARM sends back, and hands out future slots instead of letting
requests hit an empty bucket. Several instances each keep their own mirror; the headers
pull them all down to the server's count.

Every wait it hands out is bounded: a 429 pauses its bucket for at most `MAX_PAUSE`, whatever
Retry-After says (docs/design.md, "Reliability rules"), and a header value that is not a
finite, non-negative number ("nan", "inf", "-1", garbage) is ignored.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .core.lro import header

LIMITS = {"writes": (200, 10.0), "reads": (250, 25.0)}  # burst, refill per second
MAX_PAUSE = 300.0  # the longest a 429 may park one subscription's bucket, in seconds
_HEADERS = {"writes": "x-ms-ratelimit-remaining-subscription-writes",
            "reads": "x-ms-ratelimit-remaining-subscription-reads"}


def bucket_kind(method: str) -> str:
    return "reads" if method.upper() in ("GET", "HEAD") else "writes"


@dataclass
class _Bucket:
    interval: float  # seconds per token
    tolerance: float  # (burst - 1) * interval: how far ahead of now `tat` may run
    tat: float = 0.0  # theoretical arrival time of the next conforming request
    seen: tuple[float, float] | None = None  # (remaining, clock) from ARM's last header
    anchor: tuple[float, float, int] | None = None  # (remaining, clock, our answers) then
    answers: int = 0  # our requests ARM answered (each took one token)
    refill: float | None = None  # the refill left for us, estimated from the headers
    paused_until: float = float("-inf")  # the last 429's Retry-After (capped) ends here


class Pacer:
    """Thread-safe mirror of ARM's buckets, keyed by (subscription, writes|reads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 limits: Mapping[str, tuple[int, float]] = LIMITS) -> None:
        self._clock = clock
        self._limits = dict(limits)
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, subscription: str, kind: str) -> _Bucket:
        key = (subscription.lower(), kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            burst, rate = self._limits[kind]
            bucket = _Bucket(1.0 / rate, (burst - 1) / rate)
            self._buckets[key] = bucket
        return bucket

    def reserve(self, subscription: str, method: str) -> float:
        """Take the next slot: 0 means send now, else the seconds until our slot comes."""
        with self._lock:
            now = self._clock()
            bucket = self._bucket(subscription, bucket_kind(method))
            tat = max(bucket.tat, now)
            wait = max(0.0, tat - bucket.tolerance - now)
            bucket.tat = tat + bucket.interval
            return wait

    def observe(self, subscription: str, method: str, status: int,
                headers: Mapping[str, str], retry_after: float | None = None) -> None:
        """Pull the mirror down to what ARM says is left (never up: others may share it)."""
        kind = bucket_kind(method)
        left = remaining_count(header(headers, _HEADERS[kind]))
        with self._lock:
            now = self._clock()
            bucket = self._bucket(subscription, kind)
            bucket.answers += 1
            if left is not None:
                bucket.seen = (left, now)
                self._estimate(bucket, kind, left, now)
                bucket.tat = max(bucket.tat,
                                 now + bucket.tolerance - (left - 1) * bucket.interval)
            if status == 429:
                pause = 1.0  # ARM's 429 always says when; without a usable value, a second
                if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
                    pause = retry_after
                bucket.tat = max(bucket.tat, now + bucket.tolerance + min(pause, MAX_PAUSE))
                bucket.paused_until = max(bucket.paused_until, now + min(pause, MAX_PAUSE))

    def paused(self, subscription: str, method: str) -> bool:
        """Whether a 429's Retry-After for this bucket is still running. ARM refuses a request
        sent before it elapses again (docs/design.md, "What ARM really does"), so a slot handed
        out before that 429 came is void: the caller takes a new one (`reserve`), which lies
        past the pause."""
        with self._lock:
            bucket = self._buckets.get((subscription.lower(), bucket_kind(method)))
            return bucket is not None and self._clock() < bucket.paused_until

    def _estimate(self, bucket: _Bucket, kind: str, left: float, now: float) -> None:
        """The refill rate actually left for us when another client shares the bucket:
        (remaining now - remaining then + our requests in between) / elapsed, measured over
        at least ESTIMATE_WINDOW seconds while the bucket is below its burst (a full bucket
        says nothing about the rate). Our pacing and reading plan then use it."""
        burst, rate = self._limits[kind]
        if bucket.anchor is None or left >= burst - 50:
            bucket.anchor = (left, now, bucket.answers)
            if left >= burst - 50:
                bucket.refill = None
            return
        then, at, answers = bucket.anchor
        if now - at < ESTIMATE_WINDOW:
            return
        observed = (left - then + (bucket.answers - answers)) / (now - at)
        estimate = min(rate, max(rate * 0.1, observed))
        bucket.refill = estimate if bucket.refill is None else \
            0.5 * bucket.refill + 0.5 * estimate
        bucket.interval = 1.0 / bucket.refill
        bucket.anchor = (left, now, bucket.answers)

    def refill(self, subscription: str, kind: str) -> float | None:
        """The estimated refill left for us (per second), or None (the documented one)."""
        with self._lock:
            bucket = self._buckets.get((subscription.lower(), kind))
            return bucket.refill if bucket is not None else None

    def remaining(self, subscription: str, kind: str) -> tuple[float, float] | None:
        """ARM's last reported remaining count for (subscription, "reads"|"writes") and the
        clock reading when it was seen, or None before any header: budget-aware polling."""
        with self._lock:
            bucket = self._buckets.get((subscription.lower(), kind))
            return bucket.seen if bucket is not None else None


ESTIMATE_WINDOW = 3.0


def remaining_count(value: str | None) -> float | None:
    """A remaining-requests header as a count; "nan", "inf", negatives, garbage -> None."""
    if value is None:
        return None
    try:
        count = float(value)
    except ValueError:
        return None
    return count if math.isfinite(count) and count >= 0 else None

