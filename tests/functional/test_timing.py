"""When the next step happens: Retry-After, first-poll latency, backoff after transient
errors (409 busy, 429, 5xx, refused connections, read timeouts, token errors) and the deadline.
"""
from __future__ import annotations

import datetime as dt
import email.utils
from typing import Callable

import pytest

from tests.support.harness import CACHE, RG, SUB, Harness
from tests.support.memory_bus import START
from tests.support.scripted_arm import Answer, ScriptedArm, closed_port, flush_path

FLUSH = flush_path(SUB, RG, CACHE)
BUSY = {"error": {"code": "Conflict", "message": "The resource 'cache-01' is busy processing "
                  "a previous update request or is undergoing system maintenance. As such, "
                  "it is currently unable to accept the update request. Please try again "
                  "later."}}


def both(url: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": url, "Location": url}


def http_date(moment: dt.datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(dt.timezone.utc), usegmt=True)


def backoff_bounds(failures: int) -> tuple[float, float]:
    """DESIGN backoff after n consecutive transient errors: 2, 4, 8 ... 60 s, +-25%."""
    base = min(60.0, 2.0 ** failures)
    return base * 0.75, base * 1.25


# Each Retry-After form, as (headers builder given the time ARM answers, expected seconds).
RETRY_AFTER_FORMS = {
    "seconds": (lambda at: {"Retry-After": "7"}, 7.0),
    "http-date": (lambda at: {"Retry-After": http_date(at + dt.timedelta(seconds=9))}, 9.0),
    "retry-after-ms": (lambda at: {"retry-after-ms": "4500"}, 4.5),
    "x-ms-retry-after-ms": (lambda at: {"x-ms-retry-after-ms": "3500"}, 3.5),
}


@pytest.mark.parametrize("form", list(RETRY_AFTER_FORMS))
def test_retry_after_on_the_accepted_post_delays_the_first_poll(h: Harness, form: str) -> None:
    build, seconds = RETRY_AFTER_FORMS[form]
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {**both(op.url), **build(START)}, b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    h.event(rid, "Succeeded")
    (first,) = h.polls(rid)
    assert first.sent_at == START
    assert first.delay >= seconds
    assert first.delay <= seconds + 0.001  # no needless wait beyond what ARM asked
    get = h.arm.requests[1]
    assert get.when >= START + dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("form", list(RETRY_AFTER_FORMS))
def test_retry_after_on_a_running_poll_delays_the_next_poll(h: Harness, form: str) -> None:
    build, seconds = RETRY_AFTER_FORMS[form]
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    first_poll_at = START + dt.timedelta(seconds=2)  # no Retry-After on the POST: 2 s
    headers = {**both(op.url), **build(first_poll_at)}
    h.arm.on_operation(op, Answer(202, headers, op.status("InProgress")),
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    h.event(rid, "Succeeded")
    first, second = h.polls(rid)
    assert first.visible_at == first_poll_at
    assert second.sent_at == first_poll_at
    assert second.delay >= seconds
    assert h.arm.requests[2].when - h.arm.requests[1].when >= dt.timedelta(seconds=seconds)


def test_without_retry_after_the_first_poll_comes_within_two_seconds(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, *[Answer(202, both(op.url), op.status("InProgress"))] * 12,
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    polls = h.polls(rid)
    accepted = dt.datetime.fromisoformat(data["acceptedAt"].replace("Z", "+00:00"))
    assert polls[0].sent_at == accepted
    assert 0 < polls[0].delay <= 2.0
    gaps = [p.delay for p in polls]
    assert gaps == sorted(gaps), "the gap between polls never shrinks"
    assert max(gaps) <= 30.0, "a running operation is looked at at least every 30 s"
    assert h.arm.requests[1].when - h.arm.requests[0].when <= dt.timedelta(seconds=2)


def test_409_busy_on_the_post_is_requeued_then_succeeds(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(409, {}, BUSY), Answer(409, {}, BUSY),
                   Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    assert data["armRequests"] == 4
    steps = h.polls(rid)
    assert [s.message_id for s in steps] == [f"{rid}:poll:1", f"{rid}:poll:2", f"{rid}:poll:3"]
    assert [s.body_json["phase"] for s in steps] == ["flush", "flush", "poll"]
    for failures, step in enumerate(steps[:2], start=1):
        low, high = backoff_bounds(failures)
        assert low <= step.delay <= high
    assert [r.method for r in h.arm.requests] == ["POST", "POST", "POST", "GET"]


@pytest.mark.parametrize("form", ["seconds", "http-date", "retry-after-ms"])
def test_429_on_the_post_waits_for_retry_after(h: Harness, form: str) -> None:
    headers = {"seconds": {"Retry-After": "17"},
               "http-date": {"Retry-After": http_date(START + dt.timedelta(seconds=17))},
               "retry-after-ms": {"retry-after-ms": "17000"}}[form]
    op = h.arm.new_operation(SUB)
    throttled = {"error": {"code": "TooManyRequests", "message": "throttled"}}
    h.arm.on_flush(SUB, RG, CACHE, Answer(429, headers, throttled),
                   Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    assert data["armRequests"] == 3
    post_times = [r.when for r in h.arm.requests if r.method == "POST"]
    assert post_times[1] - post_times[0] >= dt.timedelta(seconds=17)
    assert h.polls(rid)[0].message_id == f"{rid}:poll:1"
    assert h.polls(rid)[0].body_json["phase"] == "flush"
    assert h.polls(rid)[0].delay >= 17


def test_an_unparseable_retry_after_date_is_ignored_not_raised(h: Harness) -> None:
    # A year too large for a C long made email.utils raise OverflowError out of main.
    huge = {"Retry-After": "1 Jan 10000000000000000000 00:00 GMT"}
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(429, huge, b""), Answer(202, {**both(op.url), **huge}, b""))
    h.arm.on_operation(op, Answer(503, huge, b""), Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    assert h.event(rid, "Succeeded")["armRequests"] == 4
    assert h.polls(rid)[0].body_json["failures"] == 1  # backoff, as with no Retry-After


def test_a_5xx_burst_on_the_post_and_on_polls_is_retried_with_backoff(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(500, {}, b""), Answer(503, {}, b"upstream"),
                   Answer(502, {}, {"error": {"code": "BadGateway", "message": "gw"}}),
                   Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(503, {}, b""), Answer(500, {}, b""),
                       Answer(504, {}, b""), Answer(202, both(op.url), op.status("InProgress")),
                       Answer(503, {"Retry-After": "11"}, b""),
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    assert data["armRequests"] == 4 + 6
    steps = h.polls(rid)
    delays = [s.delay for s in steps]
    # POST: 3 failures in a row -> backoff 2, 4, 8 (+-25%).
    for i, failures in enumerate((1, 2, 3)):
        low, high = backoff_bounds(failures)
        assert low <= delays[i] <= high, (i, delays)
    # delays[3] is the first poll (<= 2 s); then 3 poll failures in a row: backoff again,
    # counted afresh (the accepted POST reset the count).
    assert delays[3] <= 2.0
    for i, failures in zip((4, 5, 6), (1, 2, 3)):
        low, high = backoff_bounds(failures)
        assert low <= delays[i] <= high, (i, delays)
    # a good answer resets the count; the next 503 asks for 11 s and gets at least that
    assert delays[8] >= 11.0


def test_connection_refused_on_the_post_becomes_a_scheduled_retry(
        make_harness: Callable[..., Harness], servers: Callable[..., ScriptedArm]) -> None:
    arm = servers("127.0.0.1", closed_port(), run=False)
    h = make_harness(endpoint=arm.endpoint)
    h.arm = arm
    arm.clock = h.clock
    rid = h.send_request()

    first = h.run(limit=1)

    assert [d.outcome for d in first] == ["completed"] and first[0].error is None
    (retry,) = h.bus.active[h.settings.poll_queue]
    assert retry.message_id == f"{rid}:poll:1"
    assert retry.body_json["failures"] == 1
    low, high = backoff_bounds(1)
    assert low <= retry.delay <= high

    arm.start()
    op = arm.new_operation(SUB)
    arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    arm.on_operation(op, Answer(200, {}, op.status("Succeeded")))
    h.run()
    data = h.event(rid, "Succeeded")
    assert [r.method for r in arm.requests] == ["POST", "GET"]
    assert data["armRequests"] == 2


def test_connection_refused_on_a_poll_becomes_a_scheduled_retry(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run(limit=1)
    h.arm.stop()  # ARM unreachable for the first poll
    step = h.run(limit=1)
    assert step[0].outcome == "completed" and step[0].error is None
    (retry,) = h.bus.active[h.settings.poll_queue]
    assert retry.body_json["failures"] == 1 and retry.body_json["phase"] == "poll"
    h.arm.start()
    h.run()
    data = h.event(rid, "Succeeded")
    assert data["armRequests"] == 2


def test_a_read_timeout_becomes_a_scheduled_retry(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(timeouts=(2.0, 0.25))
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b"", delay=0.8),
                   Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("InProgress"), delay=0.8),
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    done = h.run()
    assert all(d.error is None for d in done)
    data = h.event(rid, "Succeeded")
    assert [r.method for r in h.arm.requests] == ["POST", "POST", "GET", "GET"]
    assert data["armRequests"] == 4
    steps = h.polls(rid)
    assert steps[0].message_id == f"{rid}:poll:1" and steps[0].body_json["failures"] == 1


class FlakyTokens:
    """A token source that fails `failures` times (as azure-identity does) before working."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def token(self, scope: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("ManagedIdentityCredential authentication unavailable. "
                               "No identity has been assigned to this resource.")
        return "t"


def test_a_token_error_is_transient(make_harness: Callable[..., Harness]) -> None:
    tokens = FlakyTokens(2)
    h = make_harness(tokens=tokens)
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    done = h.run()
    assert all(d.error is None for d in done)
    data = h.event(rid, "Succeeded")
    assert [r.method for r in h.arm.requests] == ["POST", "GET"]
    assert data["armRequests"] == 2  # token errors sent nothing to ARM
    assert tokens.calls == 4
    retries = [s for s in h.polls(rid) if s.body_json["phase"] == "flush"]
    assert [s.body_json["failures"] for s in retries] == [1, 2]


@pytest.mark.parametrize("status", ["InProgress", "Flushing"])
def test_the_deadline_ends_a_never_ending_operation_as_timed_out(h: Harness,
                                                                  status: str) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, then=Answer(202, both(op.url), op.status(status,
                                                                    percentComplete=10.0)))
    rid = h.send_request(timeoutSeconds=30)
    h.run()
    data = h.event(rid, "TimedOut")
    assert data["error"]["code"] == "TimedOut" and status in data["error"]["message"]
    assert data["operation"]["status"] == status
    deadline = START + dt.timedelta(seconds=30)
    assert h.clock.now() == deadline
    assert h.arm.requests[-1].when == deadline  # one last look at the deadline
    assert all(p.visible_at <= deadline for p in h.polls(rid))
    assert data["durationSeconds"] == 30.0
    assert 5 <= data["armRequests"] <= 16


def test_the_deadline_wins_over_a_post_that_stays_busy(h: Harness) -> None:
    h.arm.on_flush(SUB, RG, CACHE, then=Answer(409, {}, BUSY))
    rid = h.send_request(timeoutSeconds=30)
    h.run()
    data = h.event(rid, "TimedOut")
    assert data["operation"] is None
    assert "NotStarted" in data["error"]["message"]
    assert data["error"]["details"][0]["code"] == "Conflict"
    deadline = START + dt.timedelta(seconds=30)
    assert all(r.when < deadline for r in h.arm.requests)
    assert data["armRequests"] >= 3


def test_retry_after_beyond_the_deadline_times_out_at_once(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(202, {**both(op.url), "Retry-After": "3600"},
                                  op.status("InProgress")))
    rid = h.send_request(timeoutSeconds=30)
    h.run()
    data = h.event(rid, "TimedOut")
    assert data["operation"]["status"] == "InProgress"
    assert data["armRequests"] == 2
    assert h.clock.now() < START + dt.timedelta(seconds=30)
