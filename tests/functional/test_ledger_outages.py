"""A step whose ledger records or events fail after its POSTs were answered: the redelivery
(or the chain) must never POST a cache ARM already took (README, "Reliability").
"""
from __future__ import annotations

import logging

import pytest

from redisflush.functions import install
from redisflush.ledger import REQUEST_KEY, LedgerError, LedgerRow, MemoryLedger
from tests.support.harness import RG, SUB, Harness, resource_id
from tests.support.memory_bus import FakeClock, MemoryBus
from tests.support.scripted_arm import Answer, ScriptedArm, flush_path

CACHES = ["cache-a", "cache-b", "cache-c"]


class RefusingLedger(MemoryLedger):
    """Refuses the first `times` writes of a target row to `state`, as a table that answers
    503 (after the SDK's own retries) would."""

    def __init__(self, state: str, times: int) -> None:
        super().__init__()
        self.state, self.left, self.refused = state, times, 0

    def _refuse(self, row: LedgerRow) -> None:
        if row.key != REQUEST_KEY and row.state == self.state and self.left > 0:
            self.left -= 1
            self.refused += 1
            raise LedgerError("table service: 503 ServerBusy")

    def update(self, row: LedgerRow) -> LedgerRow | None:
        self._refuse(row)
        return super().update(row)

    def insert(self, row: LedgerRow) -> LedgerRow | None:
        self._refuse(row)
        return super().insert(row)


@pytest.fixture
def arm() -> ScriptedArm:
    arm = ScriptedArm(seed=11).start()
    yield arm  # type: ignore[misc]
    install(None)
    arm.stop()


def _harness(arm: ScriptedArm, ledger: MemoryLedger | None = None) -> Harness:
    clock = FakeClock()
    return Harness.create(clock, MemoryBus(clock), arm, ledger=ledger or MemoryLedger())


def _accepting(arm: ScriptedArm, caches: list[str]) -> None:
    for cache in caches:
        op = arm.new_operation(SUB)
        url = {"Azure-AsyncOperation": op.url, "Location": op.url}
        arm.on_flush(SUB, RG, cache, then=Answer(202, url, b""))
        arm.on_operation(op, Answer(200, {}, op.status("InProgress")),
                         then=Answer(200, {}, op.status("Succeeded")))


def _posts(arm: ScriptedArm, caches: list[str]) -> list[int]:
    return [len(arm.route("POST", flush_path(SUB, RG, c)).requests) for c in caches]


def _all(caches: list[str], status: str) -> dict[str, str]:
    return {resource_id(cache=c): status for c in caches}


def _body(caches: list[str]) -> dict[str, object]:
    return {"resourceIds": [resource_id(cache=c) for c in caches]}


def test_an_event_the_topic_refuses_after_answered_posts_never_reposts(arm: ScriptedArm
                                                                        ) -> None:
    # ARM answers every flush 200 at once: the step's records and events come together, and
    # every target is recorded done before the first event goes out
    h = _harness(arm)
    for cache in CACHES:
        arm.on_flush(SUB, RG, cache, then=Answer(200, {}, b""))
    rid = h.send_request(_body(CACHES))
    h.bus.fail(h.settings.events_topic, times=1)
    done = h.run(allow_errors=True)
    assert [d.error is not None for d in done][:1] == [True]  # the refusal redelivered
    assert _posts(arm, CACHES) == [1, 1, 1]
    assert [r.posts for r in h.ledger.rows(rid) if r.key] == [1, 1, 1]
    assert h.batch(rid, _all(CACHES, "Succeeded"), "Succeeded")


@pytest.mark.parametrize("n", [1, 3])
def test_a_passing_ledger_failure_on_acceptance_is_retried_in_the_invocation(
        arm: ScriptedArm, n: int) -> None:
    caches = CACHES[:n]
    ledger = RefusingLedger("accepted", times=1)
    h = _harness(arm, ledger)
    _accepting(arm, caches)
    rid = h.send_request(_body(caches))
    h.run()  # nothing raised
    assert ledger.refused == 1
    assert _posts(arm, caches) == [1] * n
    assert {r.key.rsplit("/", 1)[-1]: r.state for r in h.ledger.rows(rid) if r.key} == \
        dict.fromkeys(caches, "done")


def test_a_ledger_that_keeps_refusing_the_acceptance_is_logged_and_the_chain_goes_on(
        arm: ScriptedArm, caplog: pytest.LogCaptureFixture) -> None:
    ledger = RefusingLedger("accepted", times=10_000)
    h = _harness(arm, ledger)
    _accepting(arm, CACHES)
    with caplog.at_level(logging.ERROR, logger="redisflush"):
        rid = h.send_request(_body(CACHES))
        h.run()  # nothing raised: a redelivery would POST every cache again
    # the first record failed its three tries; the two after it are skipped untried
    assert ledger.refused == 3
    assert _posts(arm, CACHES) == [1, 1, 1]
    skipped = [r.getMessage() for r in caplog.records if "not recorded accepted" in r.getMessage()]
    assert len(skipped) == 3 and all(rid in line for line in skipped)
    assert h.batch(rid, _all(CACHES, "Succeeded"), "Succeeded")
    # the chain's end is recorded over the claims the acceptance never replaced
    assert {r.state for r in h.ledger.rows(rid) if r.key} == {"done"}


class SlowRefusingLedger(RefusingLedger):
    """Each refused write takes 10 s of the app's clock (a table that times out)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__("accepted", times=10_000)
        self.clock = clock

    def _refuse(self, row: LedgerRow) -> None:
        try:
            super()._refuse(row)
        except LedgerError:
            self.clock.advance(10.0)
            raise


@pytest.mark.parametrize("n", [3, 50])
def test_a_table_that_times_out_cannot_hold_the_invocation_past_its_lock(
        arm: ScriptedArm, n: int) -> None:
    clock = FakeClock()
    ledger = SlowRefusingLedger(clock)
    h = Harness.create(clock, MemoryBus(clock), arm, ledger=ledger)
    caches = [f"cache-{i:02d}" for i in range(n)]
    _accepting(arm, caches)
    h.send_request(_body(caches))
    began = clock.monotonic()

    (first,) = h.bus.pump(h.app, limit=1)

    assert first.error is None
    assert ledger.refused == 3  # one record's three tries; the table is then taken as down
    assert clock.monotonic() - began < 40


class DownLedger(MemoryLedger):
    """A table that answers 503 to everything once `down` is set."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise LedgerError("table service: 503 ServerBusy")

    def insert(self, row: LedgerRow) -> LedgerRow | None:
        self._check()
        return super().insert(row)

    def update(self, row: LedgerRow) -> LedgerRow | None:
        self._check()
        return super().update(row)

    def get(self, request_id: str, key: str) -> LedgerRow | None:
        self._check()
        return super().get(request_id, key)

    def rows(self, request_id: str) -> list[LedgerRow]:
        self._check()
        return super().rows(request_id)


@pytest.mark.parametrize("entity", ["redis-flush-events", "redis-flush-polls"])
def test_a_redelivered_poll_step_goes_on_when_the_ledger_is_down(arm: ScriptedArm,
                                                                 entity: str) -> None:
    # the step reads its rows first on redelivery: best effort, never a reason to raise (the
    # message's deliveries would go to the outage and the chain would be lost)
    ledger = DownLedger()
    h = _harness(arm, ledger)
    _accepting(arm, CACHES[:1])
    rid = h.send_request(_body(CACHES[:1]))
    h.run(limit=1)  # accepted and recorded; poll:1 scheduled
    ledger.down = True
    h.bus.fail(entity, times=1)

    done = h.run(allow_errors=True)

    assert [type(d.error).__name__ for d in done if d.error is not None] == ["BusError"]
    assert not h.bus.dead_letters
    # the rows unread, the redelivery read ARM again: one status read more than it counts
    assert h.event(rid, "Succeeded", rid=resource_id(cache=CACHES[0]),
                   arm_requests=len(h.arm.requests_for(rid)) - 1)
