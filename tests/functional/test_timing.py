"""When the next step happens (docs/design.md, "Reliability rules"): Retry-After, the poll
cadence (one status read per second per operation, the first 1 s after acceptance), backoff
after transient errors (409 busy, 429, 5xx, refused connections, read timeouts, token errors:
2, 4, 8 ... 60 s spread by a hash), the 300 s cap on any wait, and the deadline.
"""
from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable

import pytest

from tests.support.harness import CACHE, RG, SUB, Harness, backoff, resource_id, target_of
from tests.support.memory_bus import START
from tests.support.scripted_arm import Answer, ScriptedArm, closed_port, flush_path

FLUSH = flush_path(SUB, RG, CACHE)
KEY = resource_id().lower()  # the target's key: its backoff is spread by a hash of it
BUSY = {"error": {"code": "Conflict", "message": "The resource 'cache-01' is busy processing "
                  "a previous update request or is undergoing system maintenance. As such, "
                  "it is currently unable to accept the update request. Please try again "
                  "later."}}


def both(url: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": url, "Location": url}


def http_date(moment: dt.datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(dt.UTC), usegmt=True)


def backoff_bounds(failures: int) -> tuple[float, float]:
    """docs/design.md backoff after n consecutive transient errors: 2, 4, 8 ... 60 s, +-25%."""
    base = min(60.0, 2.0 ** failures)
    return base * 0.75, base * 1.25


def retry(failures: int, sent: int) -> float:
    """The exact backoff of this test's target after `failures` transient errors in a row,
    when it has sent `sent` ARM requests so far (the hash's seed), checked against the bounds."""
    delay = backoff(failures, f"{KEY}:{sent}")
    low, high = backoff_bounds(failures)
    assert low <= delay <= high
    return delay


def seconds(a: dt.datetime, b: dt.datetime) -> float:
    return (b - a).total_seconds()


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
    first_poll_at = START + dt.timedelta(seconds=1)  # no Retry-After on the POST: 1 s
    headers = {**both(op.url), **build(first_poll_at)}
    h.arm.on_operation(op, Answer(202, headers, op.status("InProgress")),
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    h.event(rid, "Succeeded")
    first, second = h.polls(rid)
    assert first.visible_at == first_poll_at
    assert second.sent_at == first_poll_at
    # exactly what ARM asked (every form is more than the 1 s cadence)
    assert second.delay == pytest.approx(seconds, abs=1e-6)
    assert h.arm.requests[2].when - h.arm.requests[1].when >= dt.timedelta(seconds=seconds)


def test_without_retry_after_status_is_read_once_a_second(h: Harness) -> None:
    """The first poll 1 s after acceptance, then one status read per second: a flush ends
    within seconds, so a fixed 1 s cadence costs little (docs/design.md, "Reliability rules")."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, *[Answer(202, both(op.url), op.status("InProgress"))] * 12,
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    polls = h.polls(rid)
    accepted = dt.datetime.fromisoformat(data["acceptedAt"].replace("Z", "+00:00"))
    assert polls[0].sent_at == accepted == START
    assert [p.delay for p in polls] == [1.0] * 13
    gets = [r.when for r in h.arm.requests if r.method == "GET"]
    assert [seconds(START, t) for t in gets] == [float(n) for n in range(1, 14)]
    assert data["armRequests"] == 14


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
    # two retries of a POST not yet accepted, then the operation followed
    assert [target_of(s)["acceptedAt"] is None for s in steps] == [True, True, False]
    assert [target_of(s)["phase"] for s in steps][2] == "poll"
    assert [target_of(s)["failures"] for s in steps] == [1, 2, 0]
    assert [s.delay for s in steps] == pytest.approx([retry(1, 1), retry(2, 2), 1.0],
                                                     abs=1e-6)
    assert [r.method for r in h.arm.requests] == ["POST", "POST", "POST", "GET"]
    assert [r.client_request_id for r in h.arm.requests] == \
        [f"{rid}:0.0", f"{rid}:0.1", f"{rid}:0.2", f"{rid}:0.3"]


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
    assert post_times[1] - post_times[0] == dt.timedelta(seconds=17)
    first = h.polls(rid)[0]
    assert first.message_id == f"{rid}:poll:1"
    assert target_of(first)["acceptedAt"] is None and target_of(first)["failures"] == 1
    # never before Retry-After, and no later: 17 s is longer than the first backoff
    assert retry(1, 1) < 17
    assert first.delay == pytest.approx(17.0, abs=1e-6)


@pytest.mark.parametrize("where", ["post", "poll"])
def test_a_retry_after_of_an_hour_is_capped_at_300_seconds(h: Harness, where: str) -> None:
    op = h.arm.new_operation(SUB)
    hour = {"Retry-After": "3600"}
    if where == "post":
        h.arm.on_flush(SUB, RG, CACHE, Answer(429, hour, b""), Answer(202, both(op.url), b""))
        h.arm.on_operation(op, Answer(200, {}, op.status("Succeeded")))
    else:
        h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
        h.arm.on_operation(op, Answer(202, {**both(op.url), **hour}, op.status("InProgress")),
                           Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request(timeoutSeconds=3600)
    h.run()
    h.event(rid, "Succeeded")
    times = [seconds(START, r.when) for r in h.arm.requests]
    assert times == ([0.0, 300.0, 301.0] if where == "post" else [0.0, 1.0, 301.0])


def test_an_unparseable_retry_after_date_is_ignored_not_raised(h: Harness) -> None:
    # A year too large for a C long made email.utils raise OverflowError out of main.
    huge = {"Retry-After": "1 Jan 10000000000000000000 00:00 GMT"}
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(429, huge, b""),
                   Answer(202, {**both(op.url), **huge}, b""))
    h.arm.on_operation(op, Answer(503, huge, b""), Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    assert h.event(rid, "Succeeded")["armRequests"] == 4
    steps = h.polls(rid)
    assert target_of(steps[0])["failures"] == 1  # backoff, as with no Retry-After
    assert [s.delay for s in steps] == pytest.approx([retry(1, 1), 1.0, retry(1, 3)],
                                                     abs=1e-6)


def test_a_5xx_burst_on_the_post_and_on_polls_is_retried_with_backoff(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(500, {}, b""), Answer(503, {}, b"upstream"),
                   Answer(503, {}, {"error": {"code": "ServiceUnavailable", "message": "x"}}),
                   Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(503, {}, b""), Answer(500, {}, b""),
                       Answer(504, {}, b""), Answer(202, both(op.url), op.status("InProgress")),
                       Answer(503, {"Retry-After": "11"}, b""),
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    assert data["armRequests"] == 4 + 6
    delays = [s.delay for s in h.polls(rid)]
    # POST: 3 failures in a row -> backoff 2, 4, 8 (+-25%); then the first poll 1 s after
    # acceptance; 3 poll failures in a row: backoff again, counted afresh (the accepted POST
    # reset the count); a good answer: 1 s; the next 503 asks for 11 s and gets exactly that.
    assert delays == pytest.approx([retry(1, 1), retry(2, 2), retry(3, 3), 1.0,
                                    retry(1, 5), retry(2, 6), retry(3, 7), 1.0, 11.0],
                                   abs=1e-6)


def test_connection_refused_on_the_post_becomes_a_scheduled_retry(
        make_harness: Callable[..., Harness], servers: Callable[..., ScriptedArm]) -> None:
    arm = servers("127.0.0.1", closed_port(), run=False)
    h = make_harness(endpoint=arm.endpoint)
    h.arm = arm
    arm.clock = h.clock
    rid = h.send_request()

    first = h.run(limit=1)

    assert [d.outcome for d in first] == ["completed"] and first[0].error is None
    (waiting,) = h.bus.active[h.settings.poll_queue]
    assert waiting.message_id == f"{rid}:poll:1"
    assert target_of(waiting)["failures"] == 1
    # a refused connection sent nothing: the target has sent 0 requests
    assert target_of(waiting)["armRequests"] == 0
    assert waiting.delay == pytest.approx(retry(1, 0), abs=1e-6)

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
    (waiting,) = h.bus.active[h.settings.poll_queue]
    assert target_of(waiting)["failures"] == 1 and target_of(waiting)["phase"] == "poll"
    assert waiting.delay == pytest.approx(retry(1, 1), abs=1e-6)
    h.arm.start()
    h.run()
    data = h.event(rid, "Succeeded")
    assert data["armRequests"] == 2


def test_a_read_timeout_becomes_a_scheduled_retry(make_harness: Callable[..., Harness]) -> None:
    # the late answers come far past the 1 s read timeout and the others at once, so which
    # calls time out does not depend on how loaded the machine is (0.8 s against 0.25 s made
    # the prompt answers race the timeout too)
    h = make_harness(timeouts=(2.0, 1.0))
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b"", delay=30),
                   Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("InProgress"), delay=30),
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    done = h.run()
    assert all(d.error is None for d in done)
    data = h.event(rid, "Succeeded")
    assert [r.method for r in h.arm.requests] == ["POST", "POST", "GET", "GET"]
    assert data["armRequests"] == 4
    steps = h.polls(rid)
    assert steps[0].message_id == f"{rid}:poll:1" and target_of(steps[0])["failures"] == 1
    # a timed-out POST may have reached ARM: it counts as sent
    assert steps[0].delay == pytest.approx(retry(1, 1), abs=1e-6)


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
    retries = [s for s in h.polls(rid) if target_of(s)["acceptedAt"] is None]
    assert [target_of(s)["failures"] for s in retries] == [1, 2]
    assert [s.delay for s in retries] == pytest.approx([retry(1, 0), retry(2, 0)], abs=1e-6)


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
    # the POST, then one status read a second from 1 s to the deadline at 30 s
    gets = [seconds(START, r.when) for r in h.arm.requests if r.method == "GET"]
    assert gets == [float(n) for n in range(1, 31)]
    assert data["armRequests"] == 31


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
    # POST, back off 2, 4, 8 ... s (hash-spread), until the next wait would pass the
    # deadline: then TimedOut at once rather than a POST that could not be followed
    expected, at, failures = [], 0.0, 0
    while True:
        expected.append(at)
        failures += 1
        wait = retry(failures, len(expected))
        if at + wait >= 30:
            break
        at += wait
    assert [seconds(START, r.when) for r in h.arm.requests] == \
        pytest.approx(expected, abs=1e-5)
    assert data["armRequests"] == len(expected) >= 3
    assert seconds(START, dt.datetime.fromisoformat(data["completedAt"].replace("Z", "+00:00"))
                   ) == pytest.approx(expected[-1], abs=1e-3)


def test_retry_after_beyond_the_deadline_gives_one_last_look_at_the_deadline(
        h: Harness) -> None:
    """A wait is never past the deadline: the poll moves to the deadline itself, where the
    last look decides (TimedOut with the last known status, or the real end)."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, then=Answer(202, {**both(op.url), "Retry-After": "3600"},
                                       op.status("InProgress")))
    rid = h.send_request(timeoutSeconds=30)
    h.run()
    data = h.event(rid, "TimedOut")
    assert data["operation"]["status"] == "InProgress"
    assert data["armRequests"] == 3
    deadline = START + dt.timedelta(seconds=30)
    assert [r.when for r in h.arm.requests] == [START, START + dt.timedelta(seconds=1),
                                                deadline]
    assert [p.visible_at for p in h.polls(rid)] == [START + dt.timedelta(seconds=1),
                                                   deadline]
    assert h.clock.now() == deadline


def test_a_request_that_waited_past_its_deadline_is_timed_out_without_a_post(
        h: Harness) -> None:
    """The deadline counts from the request's enqueue time, not from its first processing."""
    h.arm.on_flush(SUB, RG, CACHE, then=Answer(200, {}, b""))
    rid = h.send_request(timeoutSeconds=60)
    h.clock.advance(61)  # no host ran for a minute
    h.run()
    data = h.event(rid, "TimedOut", arm_requests=0)
    assert h.arm.requests == [] and h.arm.connections == 0
    assert data["requestedAt"] == "2024-05-01T12:00:00.000Z"
    assert data["durationSeconds"] == 61.0
    assert data["error"]["code"] == "TimedOut" and "NotStarted" in data["error"]["message"]
    assert h.polls() == []


def test_a_redelivered_request_keeps_the_deadline_of_its_enqueue_time(h: Harness) -> None:
    """A delivery that failed (bus down) and came back after the deadline POSTs nothing."""
    h.arm.on_flush(SUB, RG, CACHE, then=Answer(409, {}, BUSY))
    rid = h.send_request(timeoutSeconds=30)
    h.bus.fail(h.settings.poll_queue)  # the first delivery cannot schedule its retry
    first = h.run(allow_errors=True, limit=1)
    assert first[0].outcome == "abandoned"
    h.clock.advance(45)
    h.run()
    data = h.event(rid, "TimedOut", arm_requests=0)
    assert [r.when for r in h.arm.requests] == [START]  # the first delivery's POST only
    assert data["durationSeconds"] == 45.0


def test_percent_complete_moves_the_last_read_to_just_after_the_projected_end(h: Harness
                                                                              ) -> None:
    """docs/design.md, "Reliability rules": an operation that reports 10, 20 ... 90% at its
    reads 1 s apart is projected to end at ~10.07 s, so the read that finds it over is sent
    then, not at the next whole second; no read comes sooner than a second after another."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, *[Answer(202, both(op.url), op.status("InProgress",
                                                                  percentComplete=10.0 * k))
                             for k in range(1, 10)],
                       Answer(200, {}, op.status("Succeeded", percentComplete=100.0)))
    rid = h.send_request()
    h.run()
    h.event(rid, "Succeeded")
    gets = [seconds(START, r.when) for r in h.arm.requests if r.method == "GET"]
    assert gets[:9] == [float(n) for n in range(1, 10)]
    assert gets[9] == pytest.approx(9 * 100 / 89.5 + 0.02, abs=1e-3)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(gets, gets[1:], strict=False))


def test_a_percent_held_at_99_keeps_the_end_projected_before_it(h: Harness) -> None:
    """docs/design.md, "Reliability rules": a 300 s operation whose percentComplete rises
    evenly and then reads 99 for its last 3 s (a cap held until the end) is still read just
    after the end the last reading under 99 projected, not at the next whole second; a read
    at that end that finds it running drops the projection (one a second again)."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    running = [Answer(202, both(op.url), op.status(
        "InProgress", percentComplete=min(99.0, round(100 * k / 300.0, 1))))
        for k in range(1, 301)]
    h.arm.on_operation(op, *running, Answer(202, both(op.url), op.status(
        "InProgress", percentComplete=99.0)), Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request(timeoutSeconds=900)
    h.run()
    h.event(rid, "Succeeded")
    gets = [seconds(START, r.when) for r in h.arm.requests if r.method == "GET"]
    projected = 296 * 100 / (98.7 - 0.05) + 0.02   # the reading at 296 s: 98.7%
    # reads every second until the projected end is within two gaps of a read; from 297 s on
    # they read 99.0 (held), and the end stays where 296 s's 98.7% put it
    assert gets[:299] == [float(n) for n in range(1, 300)]
    assert gets[299] == pytest.approx(projected, abs=1e-3) and 300.0 < projected < 300.1
    # this scripted operation ran on past its projection: the next read comes a second later
    assert gets[300] == pytest.approx(projected + 1.0, abs=1e-3)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(gets, gets[1:], strict=False))


def test_a_location_poll_failing_in_varied_ways_backs_off_as_any_transient_failure(
        h: Harness) -> None:
    """Different ARM errors in a row do not end the flush (only the same one repeated
    does), and they are read again with the usual growing backoff, not every 2 s."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.url}, b""))
    errors = [Answer(status, {}, {"error": {"code": code, "message": "for now"}})
              for _ in range(3) for status, code in ((500, "InternalServerError"),
                                                      (503, "ServiceUnavailable"))]
    h.arm.on_operation(op, *errors, then=Answer(200, {}, b""))
    rid = h.send_request()

    h.run()

    h.event(rid, "Succeeded")
    delays = [s.delay for s in h.polls(rid)]
    assert delays[1:7] == pytest.approx([retry(n, n + 1) for n in range(1, 7)], abs=1e-6)
