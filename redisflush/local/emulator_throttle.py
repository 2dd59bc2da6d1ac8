"""ARM's throttling as the emulator plays it: one token bucket per subscription and kind (reads,
writes), plus the read load of a second client sharing a subscription's read budget.

ARM (2024+) throttles with token buckets per region, subscription and principal: reads 250 then
25/s, writes 200 then 10/s (docs/design.md, "What ARM really does"). Every GET takes a read
token, every POST a write token.

The second client is modelled as a steady drain on the read bucket, computed whenever the bucket
is looked at (no thread), so a `FakeClock` drives it exactly like the real clock: while tokens
are left it takes `readsPerSecond`; on an empty bucket it gets the refill as soon as it comes,
as a client hammering at that rate would. A load at or above the refill rate starves everyone
else (their Retry-After is then 60 s).

A 429's Retry-After holds: ARM documents that a request sent before the retry value has elapsed
"isn't processed and a new retry value is returned" (docs/design.md, "What ARM really does").
So a bucket that refused remembers until when, and refuses every request of its subscription and
kind before then again, taking no token, with the whole seconds still to wait. The emulator
knows one principal (one token), so "the same client" is the subscription.

Where the emulator stays simpler than ARM: Retry-After is the whole seconds until a token is
back (at least 1), the `x-ms-ratelimit-remaining-subscription-*` headers are this bucket's exact
count, and there is no subscription-global bucket (`...-global-*`) or per-region split.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .emulator_clock import SYSTEM_CLOCK, Clock

_STARVED_RETRY_AFTER = 60


class TokenBucket:
    """`burst` tokens, refilled at `per_second`, drained at `drain` per second by another client
    (monotonic clock). Not thread-safe: callers hold their lock."""

    def __init__(self, burst: int, per_second: float, clock: Clock = SYSTEM_CLOCK,
                 drain: float = 0.0) -> None:
        self.burst, self.rate, self.tokens = burst, per_second, float(burst)
        self.clock, self.drain, self.drained = clock, drain, 0.0
        self.at = clock.monotonic()
        self.refused_until = float("-inf")   # the last Retry-After handed out ends here

    def _advance(self) -> None:
        now = self.clock.monotonic()
        dt, self.at = max(0.0, now - self.at), now
        net = self.rate - self.drain
        if self.drain and net < 0 and self.tokens + net * dt < 0:
            # the load empties the bucket, then lives on the refills
            empty_at = self.tokens / -net
            self.drained += self.drain * empty_at + self.rate * (dt - empty_at)
        else:
            self.drained += self.drain * dt
        self.tokens = min(float(self.burst), max(0.0, self.tokens + net * dt))

    def set_drain(self, per_second: float) -> None:
        """Change the other client's rate from now on (what it took so far stays taken)."""
        self._advance()
        self.drain = per_second

    def early(self) -> bool:
        """Whether the Retry-After of the last refusal has not elapsed yet."""
        return self.clock.monotonic() < self.refused_until

    def take(self) -> tuple[bool, int]:
        """(True, tokens left) after taking one, or (False, Retry-After in whole seconds): until
        one is back, or, before the last Retry-After has elapsed, what is left of it (nothing
        taken, the refusal's end not moved)."""
        self._advance()
        now = self.clock.monotonic()
        if now < self.refused_until:
            return False, max(1, math.ceil(round(self.refused_until - now, 6)))
        if self.tokens >= 1:
            self.tokens -= 1
            return True, int(self.tokens)
        net = self.rate - self.drain
        wait = _STARVED_RETRY_AFTER if net <= 0 else max(1, math.ceil((1 - self.tokens) / net))
        self.refused_until = now + wait
        return False, wait


class Throttle:
    """The buckets of every subscription, and the second clients' read loads. Not thread-safe:
    the emulator calls it with its lock held."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._loads: dict[str, float] = {}          # set through the admin route; win over config

    def reset(self) -> None:
        """Fresh buckets (the config changed); loads set through the admin route stay."""
        self._buckets = {}

    def load(self, config_loads: Mapping[str, float], sub: str) -> float:
        key = sub.lower()
        if key in self._loads:
            return self._loads[key]
        return next((r for s, r in config_loads.items() if s.lower() == key), 0.0)

    def set_load(self, config_loads: Mapping[str, float], sub: str, per_second: float) -> None:
        self._loads[sub.lower()] = per_second
        bucket = self._buckets.get((sub.lower(), "reads"))
        if bucket is not None:
            bucket.set_drain(self.load(config_loads, sub))

    def take(self, throttling: Any, config_loads: Mapping[str, float], sub: str,
             kind: str) -> tuple[bool, int, bool]:
        """One request of `kind` ("reads" or "writes") on `sub`: `TokenBucket.take`'s answer,
        and whether the request came before the Retry-After its client was last given."""
        b = getattr(throttling, kind)
        if not throttling.enabled:
            return True, b.burst, False
        key = (sub.lower(), kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            drain = self.load(config_loads, sub) if kind == "reads" else 0.0
            bucket = self._buckets[key] = TokenBucket(b.burst, b.per_second, self.clock, drain)
        early = bucket.early()
        return (*bucket.take(), early)

    def loads(self, config_loads: Mapping[str, float]) -> dict[str, dict[str, float]]:
        """Every subscription with a read load: its rate and how many reads it took so far."""
        subs = {s.lower() for s in config_loads} | set(self._loads)
        out: dict[str, dict[str, float]] = {}
        for sub in sorted(subs):
            rate = self.load(config_loads, sub)
            bucket = self._buckets.get((sub, "reads"))
            if bucket is not None:
                bucket.set_drain(rate)           # bring `drained` up to now
            if rate or (bucket is not None and bucket.drained):
                out[sub] = {"readsPerSecond": rate,
                            "readsTaken": round(bucket.drained, 3) if bucket else 0.0}
        return out
