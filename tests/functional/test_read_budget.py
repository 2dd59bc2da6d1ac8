"""The read budget the shell hands each step (README, "How ARM is followed"; docs/design.md,
"Reliability rules"): how many operations this process has in flight on a subscription, and
how many it read lately, through the real shell, bus and ledger. An operation whose URL the
chain carries by reference to its ledger row (docs/design.md, "Poll message") is in flight
all the same, and a later request on that subscription spaces its reads by all of them."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from redisflush.core import cadence, next_message
from redisflush.core.state import RunState
from tests.support.harness import RG, SUB, Harness, resource_id
from tests.support.memory_bus import FakeClock
from tests.support.scripted_arm import Answer, ScriptedArm

CACHES = [f"cache-{n:02d}" for n in range(50)]
LIMIT = 60_000  # a (lowered) message that carries only a few 5.5 KB URLs: most go by reference
RETRY_AFTER = 30  # ARM's status answers ask for 30 s between reads: longer than POLLER_WINDOW


@pytest.fixture(autouse=True)
def lowered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(next_message, "MAX_MESSAGE_BYTES", LIMIT)


def _running(arm: ScriptedArm, h: Harness, cache: str) -> None:
    """A flush ARM accepts with a long signed Location that keeps running."""
    op = arm.new_operation(SUB, huge=True)
    arm.on_flush(SUB, RG, cache, Answer(202, {"Location": op.url}, b""))
    arm.on_operation(op, then=Answer(202, {"Retry-After": str(RETRY_AFTER)},
                                     op.status("InProgress")))


def _state(h: Harness, rid: str) -> RunState:
    return RunState.from_json(h.polls(rid)[-1].message.body)


def test_operations_carried_by_reference_count_as_in_flight(
        arm: ScriptedArm, clock: FakeClock, make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    for cache in CACHES:
        _running(arm, h, cache)
    rid = h.send_request({"resourceIds": [resource_id(cache=c) for c in CACHES]})
    rate = cadence.planned_rate(cadence.ReadBudget())

    # all 50 accepted; most left the message by reference before their first read
    (first,) = h.bus.pump(h.app, limit=1)
    assert first.error is None
    state = _state(h, rid)
    assert sum(t.poll_ref is not None for t in state.targets) >= 40
    assert all(t.phase == "poll" for t in state.targets)
    assert h.app._budgets(state)[SUB].in_flight == 50

    # read once each (their URLs read back from the ledger), then ARM's 30 s between reads:
    # halfway there, every one of them is still in flight
    (read,) = h.bus.pump(h.app, limit=1)
    assert read.error is None
    assert sum(r.method == "GET" for r in arm.requests) == 50
    clock.advance(RETRY_AFTER / 2)
    state = _state(h, rid)
    assert sum(t.poll_ref is not None for t in state.targets) >= 40
    budget = h.app._budgets(state)[SUB]
    assert budget.in_flight == 50
    assert cadence.next_read_gap(budget, "location") == pytest.approx(50 / rate)

    # a request for one more cache there now: its reads are spaced by all 51 (not once a
    # second as if the subscription had reads to spare)
    _running(arm, h, "cache-late")
    late = h.send_request({"resourceIds": [resource_id(cache="cache-late")]})
    (step,) = h.bus.pump(h.app, limit=1)
    assert step.error is None
    (ts,) = _state(h, late).targets
    assert ts.phase == "poll" and ts.accepted_at is not None
    gap = (ts.due - ts.accepted_at) / dt.timedelta(seconds=1)
    assert gap == pytest.approx(51 / rate, abs=0.01)


def test_an_operation_arm_moves_to_another_url_counts_once(
        arm: ScriptedArm, clock: FakeClock, make_harness: Callable[..., Harness]) -> None:
    """A 202 status answer with a new Location moves the poll (README, "How ARM is
    followed"): the same operation, read lately at two URLs, is one poller in flight."""
    h = make_harness()
    first, moved = arm.new_operation(SUB), arm.new_operation(SUB)
    arm.on_flush(SUB, RG, "cache-01", Answer(202, {"Location": first.url}, b""))
    arm.on_operation(first, then=Answer(202, {"Location": moved.url}, first.status("InProgress")))
    arm.on_operation(moved, then=Answer(202, {}, moved.status("InProgress")))
    rid = h.send_request({"resourceIds": [resource_id(cache="cache-01")]})

    h.bus.pump(h.app, limit=3)  # the POST, a read at the first URL, one at the new one
    assert [len(arm.route("GET", op.path).requests) for op in (first, moved)] == [1, 1]
    budget = h.app._budgets(_state(h, rid))[SUB]
    assert (budget.pollers, budget.in_flight) == (1, 1)


def test_a_redelivered_step_that_finds_its_request_ended_counts_nothing_in_flight(
        arm: ScriptedArm, clock: FakeClock, make_harness: Callable[..., Harness]) -> None:
    """The final step ended the flush and recorded it, then its message came again (its lock
    was lost): the redelivery reads the rows, finds the request ended, and announces it again
    without a call. Its operation is over; it was counted in flight again (the message's
    target still in `poll`) until ten seconds after that read was due, spreading the
    subscription's other reads."""
    h = make_harness()
    op = arm.new_operation(SUB)
    arm.on_flush(SUB, RG, "cache-01", Answer(202, {"Location": op.url}, b""))
    arm.on_operation(op, Answer(202, {}, op.status("InProgress")),
                     then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request({"resourceIds": [resource_id(cache="cache-01")]})
    h.bus.deliver_twice(f"{rid}:poll:2")

    done = h.bus.pump(h.app, limit=4)  # POST, a running read, the final read, its redelivery

    assert [(d.message_id, d.delivery_count) for d in done[-2:]] == [
        (f"{rid}:poll:2", 1), (f"{rid}:poll:2", 2)]
    assert all(d.error is None for d in done)
    assert len(arm.route("GET", op.path).requests) == 2
    budget = h.app._budgets(_state(h, rid))[SUB]
    assert (budget.pollers, budget.in_flight) == (1, 0)
