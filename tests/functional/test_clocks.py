"""Clocks that differ (docs/design.md, "Clocks"): the app runs on many instances whose wall
clocks may differ from each other's and from Service Bus's by a second or more, and a
scheduled message arrives at or after its time by the bus's clock, sometimes minutes late."""
from __future__ import annotations

import datetime as dt

import pytest

from redisflush.core.ledger_rules import LEASE
from redisflush.ledger import LedgerRow
from tests.support.harness import CACHE, RG, SUB, Harness, resource_id
from tests.support.memory_bus import START
from tests.support.scripted_arm import Answer

BEHIND = dt.timedelta(seconds=1.5)


def both(url: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": url, "Location": url}


def behind(h: Harness, by: dt.timedelta = BEHIND) -> None:
    """The app's instance reads a wall clock `by` behind the bus's."""
    h.app.clock = lambda: h.clock.now() - by


def test_a_poll_message_read_on_a_clock_behind_the_bus_does_its_work(h: Harness) -> None:
    """The bus delivered the step at its scheduled time: the targets due then are read, not
    sent back to the queue until this instance's clock catches up (which, message after
    message at the same moment, spins the chain without reading ARM)."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, *[Answer(202, both(op.url), op.status("InProgress"))] * 3,
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run(limit=1)  # the POST, on a clock in step with the bus
    behind(h)
    h.run(max_steps=50)
    h.event(rid, "Succeeded")
    assert len(h.polls(rid)) == 4  # one message per status read
    gets = [r.when for r in h.arm.requests if r.method == "GET"]
    assert [(t - START).total_seconds() for t in gets] == [1.0, 2.0, 3.0, 4.0]


def test_a_poll_message_scheduled_at_the_deadline_ends_it_on_a_clock_behind(h: Harness
                                                                           ) -> None:
    """The step scheduled at the deadline (a wait capped there) ends the flush TimedOut when
    the bus delivers it, whatever the reading instance's clock says."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(202, {**both(op.url), "Retry-After": "120"},
                                  op.status("InProgress")),
                       then=Answer(202, both(op.url), op.status("InProgress")))
    rid = h.send_request(timeoutSeconds=30)
    h.run(limit=1)
    behind(h)
    h.run(max_steps=50)
    data = h.event(rid, "TimedOut")
    assert data["error"]["message"] == "the deadline passed while the flush was InProgress"
    assert len(h.polls(rid)) <= 3


@pytest.mark.parametrize("late", [120.0, 600.0])
def test_a_poll_message_delivered_minutes_late_reads_once_and_goes_on(h: Harness,
                                                                     late: float) -> None:
    """A backlog or a host restart delays the step by minutes: it reads the operation once
    (no burst of catch-up reads) and, past the deadline, ends TimedOut with the status read."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(202, both(op.url), op.status("InProgress")),
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request(timeoutSeconds=300)
    h.run(limit=1)
    h.clock.advance(late)
    h.run()
    gets = [r for r in h.arm.requests if r.method == "GET"]
    if late < 300:
        h.event(rid, "Succeeded")
        assert len(gets) == 2
    else:
        data = h.event(rid, "TimedOut")
        assert len(gets) == 1
        assert data["error"]["message"] == "the deadline passed while the flush was InProgress"


def test_a_claim_found_held_is_taken_over_once_its_lease_ends_on_a_clock_behind(
        h: Harness) -> None:
    """A `posting` row another instance wrote (its POST in flight, then that instance gone):
    the lease is judged on the reading instance's clock, and a step the bus delivers at the
    lease's end by its own clock, read on an instance behind it, claims again when its own
    clock has passed the end, not message after message at the same moment."""
    rid = "req-0001"
    h.ledger.insert(LedgerRow(rid, resource_id().lower(), "posting", {}, 1, START,
                              START + dt.timedelta(days=2)))
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("Succeeded")))
    behind(h)
    assert h.send_request() == rid
    h.run(max_steps=50)
    h.event(rid, "Succeeded")
    (post,) = [r for r in h.arm.requests if r.method == "POST"]
    # the lease ran out on the app's clock (1.5 s behind the bus's)
    assert post.when >= START + LEASE + BEHIND
    assert len(h.polls(rid)) <= 3


@pytest.mark.parametrize("answer", [Answer(504, {}, b""), Answer(502, {}, b"")])
def test_a_deadline_after_a_post_in_doubt_does_not_say_it_never_started(
        h: Harness, answer: Answer) -> None:
    """A POST that went out with no answer of ARM's own (a gateway's 502/504) may have
    started the flush; its claim is kept for the lease, and a deadline inside that lease ends
    the flush TimedOut: the event must not say the flush was NotStarted."""
    h.arm.on_flush(SUB, RG, CACHE, answer)
    rid = h.send_request(timeoutSeconds=30)
    h.run()
    data = h.event(rid, "TimedOut")
    assert [r.method for r in h.arm.requests] == ["POST"]
    message = data["error"]["message"]
    assert "NotStarted" not in message
    assert message == ("the deadline passed while the flush request's answer was unknown: "
                       "ARM may or may not have run it")
