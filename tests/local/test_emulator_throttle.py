"""ARM throttling in the emulator with a fake clock: token buckets, the second client that
spends part of a subscription's read budget (admin route and config), and the clock itself."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from redisflush.local.emulator import ArmEmulator
from redisflush.local.emulator_clock import SYSTEM_CLOCK, FakeClock
from redisflush.local.emulator_config import EmulatorConfig
from redisflush.local.emulator_throttle import TokenBucket

from .test_emulator import AUTH, SUB

OTHER_SUB = "00000000-0000-0000-0000-0000000000bb"
API = "2023-08-01"


def read_url(arm: ArmEmulator, sub: str = SUB) -> str:
    return f"{arm.url}/subscriptions/{sub}/providers/Microsoft.Cache/redis?api-version={API}"


def reads_allowed(s: requests.Session, arm: ArmEmulator, sub: str = SUB, limit: int = 50) -> int:
    """How many reads go through before the first 429."""
    for n in range(limit):
        if s.get(read_url(arm, sub), headers=AUTH, timeout=5).status_code == 429:
            return n
    return limit


def load(s: requests.Session, arm: ArmEmulator, sub: str, rate: object) -> requests.Response:
    body = {"subscriptionId": sub, "readsPerSecond": rate}
    return s.put(f"{arm.url}/_emulator/load", json=body, timeout=5)


def post(s: requests.Session, arm: ArmEmulator) -> requests.Response:
    return s.post(f"{arm.url}/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Cache/"
                  f"redis/c/flush?api-version={API}", headers=AUTH, timeout=5)


CONFIG = {"throttling": {"reads": {"burst": 10, "perSecond": 10},
                         "writes": {"burst": 2, "perSecond": 1}}}


@pytest.fixture
def s() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def arm(clock):
    with ArmEmulator(EmulatorConfig.from_dict(CONFIG), clock=clock).start() as a:
        yield a


# ---- the bucket ------------------------------------------------------------------------------
def test_bucket_refills_with_the_clock(clock):
    b = TokenBucket(2, 4.0, clock)
    assert [b.take() for _ in range(3)] == [(True, 1), (True, 0), (False, 1)]
    clock.advance(1)
    assert b.take() == (True, 1)                   # 4 tokens back, capped at the burst of 2
    clock.advance(100)
    assert b.take() == (True, 1)                   # never more than the burst
    assert TokenBucket(1, 0.1, clock).take() == (True, 0)
    slow = TokenBucket(1, 0.1, clock)
    slow.take()
    assert slow.take() == (False, 10)              # whole seconds until a token is back


def test_a_request_before_retry_after_is_refused_again(clock):
    """ARM: "If you send a request before the retry value has elapsed, your request isn't
    processed and a new retry value is returned." A token that comes back sooner than the
    whole-second Retry-After does not let an early request through."""
    b = TokenBucket(1, 4.0, clock)
    assert b.take() == (True, 0)
    assert b.take() == (False, 1) and b.early()
    clock.advance(0.25)                            # a token is back, the Retry-After is not over
    assert b.early() and b.take() == (False, 1)    # refused again, the 1 s not restarted
    clock.advance(0.5)
    assert b.take() == (False, 1)                  # 0.25 s left: rounded up to a whole second
    assert b.tokens == 1.0                         # refusals took nothing (capped at the burst)
    clock.advance(0.25)
    assert not b.early() and b.take() == (True, 0)
    assert b.take() == (False, 1)                  # a fresh refusal: a fresh Retry-After


def test_the_starved_retry_after_holds_too(clock):
    b = TokenBucket(1, 1.0, clock, drain=2.0)
    clock.advance(1)
    assert b.take() == (False, 60)
    b.set_drain(0)                                 # the other client stops...
    clock.advance(59)
    assert b.take() == (False, 1)                  # ...but what ARM said holds
    clock.advance(1)
    assert b.take() == (True, 0)


def test_drain_shares_the_refill(clock):
    b = TokenBucket(10, 10.0, clock, drain=5.0)
    clock.advance(3)                               # full bucket: the refill covers the other client
    assert b.take() == (True, 9) and b.drained == 15
    for _ in range(9):
        b.take()
    clock.advance(1)
    assert sum(b.take()[0] for _ in range(10)) == 5   # half the refill is left for us
    assert b.take() == (False, 1) and b.drained == 20


def test_drain_above_the_refill_starves_everyone(clock):
    b = TokenBucket(4, 2.0, clock, drain=6.0)
    clock.advance(2)                  # empty after 1 s, then the load takes every refill
    assert b.take() == (False, 60) and b.drained == pytest.approx(6 * 1 + 2 * 1)
    b.set_drain(0)
    clock.advance(60)                 # the Retry-After of 60 s holds (then the bucket is full)
    assert b.take() == (True, 3)


# ---- the second client -----------------------------------------------------------------------
def test_second_client_spends_half_the_read_budget(s, arm, clock):
    assert reads_allowed(s, arm) == 10             # the burst
    r = load(s, arm, SUB, 5)
    assert r.status_code == 200
    assert r.json() == {"loads": {SUB: {"readsPerSecond": 5.0, "readsTaken": 0.0}}}
    clock.advance(1)
    assert reads_allowed(s, arm) == 5
    r = s.get(read_url(arm), headers=AUTH)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert reads_allowed(s, arm, OTHER_SUB) == 10        # another subscription: its own budget
    assert post(s, arm).status_code == 202                 # writes are not touched
    clock.advance(2)
    loads = s.get(f"{arm.url}/_emulator/load").json()["loads"]
    assert loads == {SUB: {"readsPerSecond": 5.0, "readsTaken": 15.0}}
    assert arm.stats()["loads"] == loads
    assert load(s, arm, SUB, 0).status_code == 200                  # stopped
    clock.advance(1)
    assert reads_allowed(s, arm) == 10


def test_load_from_config_and_over_config_changes(s, clock):
    cfg = {**CONFIG, "readLoad": {SUB: 7.5}}
    with ArmEmulator(EmulatorConfig.from_dict(cfg), clock=clock).start() as arm:
        assert reads_allowed(s, arm) == 10
        clock.advance(2)
        assert reads_allowed(s, arm) == 5          # 2 s x (10 - 7.5)/s
        load(s, arm, OTHER_SUB, 10)                # set by hand: survives a config change
        assert s.put(f"{arm.url}/_emulator/config", json=CONFIG).status_code == 200
        assert reads_allowed(s, arm) == 10 and reads_allowed(s, arm, OTHER_SUB) == 10
        clock.advance(1)
        assert reads_allowed(s, arm) == 10 and reads_allowed(s, arm, OTHER_SUB) == 0
        # starved: told 60 s a second ago (before the advance), so 59 s are left
        assert s.get(read_url(arm, OTHER_SUB), headers=AUTH).headers["Retry-After"] == "59"


@pytest.mark.parametrize("body", [
    {"subscriptionId": SUB}, {"subscriptionId": SUB, "readsPerSecond": -1},
    {"subscriptionId": SUB, "readsPerSecond": True}, {"readsPerSecond": 1},
    {"subscriptionId": "a/b", "readsPerSecond": 1}, []])
def test_load_route_validation(s, arm, body):
    r = s.put(f"{arm.url}/_emulator/load", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidLoad"


@pytest.mark.parametrize("bad,field", [
    ({"readLoad": []}, "readLoad"), ({"readLoad": {"x": 1}}, "readLoad['x']"),
    ({"readLoad": {SUB: -2}}, f"readLoad['{SUB}']"), ({"pageSize": 0}, "pageSize"),
    ({"nextLinkHost": "evil"}, "nextLinkHost"), ({"outOfScopeItems": 1}, "outOfScopeItems"),
    ({"defaultResourceGroup": ""}, "defaultResourceGroup")])
def test_config_validation(bad, field):
    with pytest.raises(ValueError) as err:
        EmulatorConfig.from_dict(bad)
    assert str(err.value).startswith(field + ":"), str(err.value)


# ---- the clock -------------------------------------------------------------------------------
def test_fake_clock():
    clock = FakeClock(100.0)
    mono = clock.monotonic()
    clock.advance(2.5)
    assert clock.time() == 102.5 and clock.monotonic() == mono + 2.5
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert abs(SYSTEM_CLOCK.time() - __import__("time").time()) < 5
    assert ArmEmulator().clock is SYSTEM_CLOCK


def test_operation_times_come_from_the_clock(s, arm, clock):
    url = post(s, arm).headers["Location"]
    assert "&t=1767225600000" in url                       # the signed ticks too
    body = s.get(url, headers=AUTH).json()
    assert body["status"] == "InProgress" and body["startTime"] == "2026-01-01T00:00:00.000000Z"
    clock.advance(1.999)
    assert s.get(url, headers=AUTH).json()["status"] == "InProgress"
    clock.advance(0.001)
    body = s.get(url, headers=AUTH).json()
    assert body["status"] == "Succeeded" and body["endTime"] == "2026-01-01T00:00:02.000000Z"
