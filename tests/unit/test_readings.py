"""The shell's readings behind each step's read budget (redisflush/readings.py, through
redisflush/app.py `_track`, `_seen_poller`, `_budgets`; README, "How ARM is followed"): the
counts equal a plain scan of every reading over random sequences of events on injected clocks,
and a step looks at the same few readings whether the process follows a hundred operations or
twenty thousand (no scan of them all on every step: O(N^2) for a fleet of N caches in one
process)."""
from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from redisflush.app import FlushApp
from redisflush.core import durations
from redisflush.core.commands import Learn
from redisflush.core.request import Origin
from redisflush.core.state import PHASES, RunState, TargetState
from redisflush.core.targets import parse_resource_id
from redisflush.readings import POLLER_WINDOW, Expiring
from redisflush.settings import Settings
from tests.support.harness import build_app
from tests.support.memory_bus import FakeClock, MemoryBus
from tests.unit.helpers import SUB, SUB2, T0, rid

SUBS = (SUB, SUB2, SUB.upper())  # the same subscription in another case counts as one
WINDOW = dt.timedelta(seconds=POLLER_WINDOW)


@dataclass
class Clocks:
    """A wall clock that NTP may step back, and a monotonic one that never goes back."""

    wall: dt.datetime = T0
    mono: float = 1000.0

    def now(self) -> dt.datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


@dataclass
class Reference:
    """The readings as a straightforward scan: every entry of the subscription looked at on
    every budget, the durations searched by (subscription, kind)."""

    clocks: Clocks
    pollers: dict[str, dict[str, float]] = field(default_factory=dict)
    in_flight: dict[str, dict[str, dt.datetime]] = field(default_factory=dict)
    learned: dict[tuple[str, str], durations.Estimate] = field(default_factory=dict)

    def track(self, state: RunState) -> None:
        now = self.clocks.now()
        for ts in state.targets:
            sub, op = ts.target.subscription_id.lower(), f"{state.origin.request_id}:{ts.index}"
            if ts.phase == "post" and ts.due <= now:
                self.in_flight.setdefault(sub, {})[op] = now + WINDOW
            elif ts.phase == "poll":
                self.in_flight.setdefault(sub, {})[op] = ts.due + WINDOW
            else:
                self.in_flight.get(sub, {}).pop(op, None)
                if ts.phase == "done":
                    self.pollers.get(sub, {}).pop(op, None)

    def seen(self, sub: str, op: str) -> None:
        self.pollers.setdefault(sub.lower(), {})[op] = self.clocks.monotonic()

    def learn(self, sub: str, kind: str, lo: float | None, hi: float) -> None:
        learned = durations.observe(self.learned.get((sub.lower(), kind)), lo, hi)
        if learned is not None:
            self.learned[(sub.lower(), kind)] = learned

    def budgets(self, state: RunState) -> dict[str, tuple[int, int, dict[str, float]]]:
        now, wall, found = self.clocks.monotonic(), self.clocks.now(), {}
        for sub in {t.target.subscription_id for t in state.targets}:
            key = sub.lower()
            seen = self.pollers.get(key, {})
            for op, at in list(seen.items()):
                if now - at > POLLER_WINDOW:
                    del seen[op]
            flying = self.in_flight.get(key, {})
            for op, until in list(flying.items()):
                if until < wall:
                    del flying[op]
            found[sub] = (max(1, len(seen)), len(flying),
                          {k: e.seconds for (s, k), e in self.learned.items() if s == key})
        return found


def _target(n: int, sub: str = SUB) -> TargetState:
    return TargetState(parse_resource_id(rid(f"c{n}", sub=sub)), n, "poll", T0,
                       (), f"https://management.azure.com/op/{n}", "location", T0)


def _state(request_id: str, targets: list[TargetState]) -> RunState:
    return RunState(Origin(request_id, T0), T0 + dt.timedelta(hours=1), "f", tuple(targets))


def _app(clocks: Clocks | FakeClock) -> FlushApp:
    fake = FakeClock()
    app = build_app(Settings(arm_endpoint="https://management.azure.com"), MemoryBus(fake),
                    fake)
    app.clock, app.monotonic = clocks.now, clocks.monotonic
    return app


def _random_state(rng: random.Random, clocks: Clocks) -> RunState:
    """Some targets of one of a few requests, each in any phase, due around now (on the
    half second, so expiries land exactly on the moment a budget is taken)."""
    targets = []
    for n in rng.sample(range(8), rng.randint(1, 5)):
        due = clocks.wall + dt.timedelta(seconds=rng.randrange(-30, 90) / 2)
        ts = _target(n, rng.choice(SUBS))
        targets.append(TargetState(ts.target, n, rng.choice(PHASES), due, (), ts.poll_url,
                                   "location", T0))
    return _state(rng.choice(("r1", "r2", "r3")), targets)


@pytest.mark.parametrize("seed", range(40))
def test_budgets_count_as_a_scan_of_every_reading_does(seed: int) -> None:
    rng = random.Random(seed)
    clocks = Clocks()
    app, ref = _app(clocks), Reference(clocks)
    counted = set()
    for _ in range(1000):
        event = rng.random()
        if event < 0.3:
            state = _random_state(rng, clocks)
            app._track(state)
            ref.track(state)
        elif event < 0.55:
            sub, op = rng.choice(SUBS), f"{rng.choice(('r1', 'r2', 'r3'))}:{rng.randrange(8)}"
            app._seen_poller(sub, op)
            ref.seen(sub, op)
        elif event < 0.6:
            sub, kind = rng.choice(SUBS), rng.choice(("redis", "enterprise"))
            hi = rng.uniform(1, 60)
            lo = rng.choice((None, hi - rng.uniform(0, 3)))
            app._effect(Learn(sub, kind, lo, hi), "r1")
            ref.learn(sub, kind, lo, hi)
        elif event < 0.85:
            state = _random_state(rng, clocks)
            got = {s: (b.pollers, b.in_flight, dict(b.expected))
                   for s, b in app._budgets(state).items()}
            assert got == ref.budgets(state)
            counted |= {(p > 1, f > 0, bool(e)) for p, f, e in got.values()}
        else:
            step = rng.choice((0, 0, 0.5, 1, 2.5, 5, 10, 10.5, 20))
            clocks.mono += step
            # the wall clock mostly keeps pace; now and then NTP steps it back or ahead
            wall = step if rng.random() < 0.9 else rng.choice((-30, -5, 15))
            clocks.wall += dt.timedelta(seconds=wall)
    # not a run of empty budgets: operations were read lately, in flight, durations learned
    assert {c for c in counted if c[0]} and {c for c in counted if c[1]} and \
        {c for c in counted if c[2]}


def _looked_at(app: FlushApp, clock: FakeClock, state: RunState) -> int:
    """How many readings 300 `_budgets` calls look at (each moment handed to an expiry
    test), the clocks moving a millisecond before each: a count, not a timing, so it holds
    on a loaded machine."""
    looked = 0
    originals = Expiring.expire

    def counting(self: Expiring[Any], expired: Callable[[Any], bool]) -> None:
        def counted(at: Any) -> bool:
            nonlocal looked
            looked += 1
            return expired(at)
        originals(self, counted)

    Expiring.expire = counting  # type: ignore[method-assign]
    try:
        for _ in range(300):
            clock.advance(0.001)
            app._budgets(state)
    finally:
        Expiring.expire = originals  # type: ignore[method-assign]
    return looked


def _following(n: int) -> tuple[FlushApp, FakeClock]:
    """An app following `n` operations on SUB (all in flight and read lately, none
    expiring) and with durations learned on `n` other subscriptions."""
    clock = FakeClock()
    app = _app(clock)
    app._track(_state("fleet", [
        TargetState(t.target, t.index, "poll", clock.now() + dt.timedelta(seconds=30), (),
                    t.poll_url, "location", T0) for t in map(_target, range(n))]))
    for i in range(n):
        app._seen_poller(SUB, f"fleet:{i}")
        app._effect(Learn(f"00000000-0000-0000-0000-{i:012d}", "redis", 5.0, 6.0), "fleet")
    return app, clock


def test_a_step_looks_at_the_same_readings_whatever_number_of_operations_the_process_follows(
        ) -> None:
    one = _state("one", [_target(0)])
    looked = {}
    for n in (100, 20_000):
        app, clock = _following(n)
        budget = app._budgets(one)[SUB]
        assert (budget.pollers, budget.in_flight) == (n, n)
        looked[n] = _looked_at(app, clock, one)
    # nothing expires: each budget looks at the front of its two heaps only (a scan of every
    # reading looked at 2 x 20,000 a call)
    assert looked == {100: 600, 20_000: 600}, looked


def test_moments_set_again_and_again_keep_the_heap_bounded_and_the_counts_exact() -> None:
    """An operation's forget-after moves with each step (its next read); the entries it
    leaves behind are swept out, and what expires is what a scan would drop."""
    rng = random.Random(7)
    expiring: Expiring[float] = Expiring()
    plain: dict[str, float] = {}
    for round_ in range(2000):
        key = f"r:{rng.randrange(20)}"
        if rng.random() < 0.1:
            expiring.pop(key)
            plain.pop(key, None)
        else:
            at = round_ + rng.uniform(0, 500)  # far ahead: nothing expires for a while
            expiring.set(key, at)
            plain[key] = at
        assert len(expiring._heap) <= 2 * len(plain) + 64
        if round_ % 50 == 0:
            now = float(round_)
            expiring.expire(lambda at: at < now)  # noqa: B023  (called at once)
            plain = {k: at for k, at in plain.items() if not at < now}
            assert len(expiring) == len(plain)
    expiring.expire(lambda at: True)
    assert len(expiring) == 0
