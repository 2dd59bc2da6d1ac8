"""orchestrator.py: (state, ARM answer, now) -> Schedule | Complete, as table tests and replays.

Answers are built by hand; `now` is fixed. A replay feeds a synthetic history of ARM answers
through the decisions, each step running at the moment the previous one was scheduled for.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any, Sequence

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from redisflush.core import lro
from redisflush.arm import UNTRUSTED_URL, ArmAnswer, ArmFailure, error_detail
from redisflush.events import STATUSES
from redisflush.messages import FlushRequest, Origin, PollState
from redisflush.orchestrator import (MAX_BAD_POLLS, Complete, Schedule, after_poll, after_post,
                                     before_call, begin, deferred)
from redisflush.target import CacheTarget

from .helpers import CACHE, ENDPOINT, RG, SUB, T0, at, load_fixture

FLUSH_URL = (f"{ENDPOINT}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/"
             f"Redis/{CACHE}/flush?api-version=2023-08-01")
OP_URL = (f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache/locations/West%20US%202/"
          "operationresults/op-1?api-version=2023-08-01")
SECRETS = ("SECRETT0KEN", "SIGNATURE", "HMACVALUE", "CERTBLOB", "hunter2")
SIGNED = (OP_URL + "&t=SECRETT0KEN&c=CERTBLOB%2B%2F&s=SIGNATURE&h=HMACVALUE")
ARM_ERRORS = load_fixture("arm_errors.json")
TERMINAL_CODES = ("Succeeded", "Failed", "Canceled")


# --- builders ----------------------------------------------------------------------------------

def start(timeout: int = 1800, request_id: str = "req-1") -> PollState:
    request = FlushRequest(Origin(request_id, T0), CacheTarget(SUB, RG, CACHE), timeout)
    return begin(request, T0)


def answer(status: int, body: Any = b"", headers: dict[str, str] | None = None,
           url: str = FLUSH_URL) -> ArmAnswer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ArmAnswer(status, headers or {}, raw, url)


def both(url: str = OP_URL, **extra: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": url, "Location": url, **extra}


def polling(kind: str = "azure-asyncoperation", url: str = OP_URL, timeout: int = 1800
            ) -> tuple[PollState, dt.datetime]:
    """A state just after ARM accepted the POST, and the moment its first poll runs."""
    header = "Azure-AsyncOperation" if kind == "azure-asyncoperation" else "Location"
    action = after_post(start(timeout), answer(202, headers={header: url}), T0, ENDPOINT)
    assert isinstance(action, Schedule) and action.state.poll_kind == kind
    return action.state, action.at


def running(body: Any = None, **headers: str) -> ArmAnswer:
    return answer(202, {"status": "InProgress"} if body is None else body, headers, OP_URL)


def replay(state: PollState, results: Sequence[ArmAnswer | ArmFailure], now: dt.datetime = T0,
           endpoint: str = ENDPOINT) -> list[Schedule | Complete]:
    actions: list[Schedule | Complete] = []
    for result in results:
        decide = after_post if state.phase == "flush" else after_poll
        action = decide(state, result, now, endpoint)
        actions.append(action)
        if isinstance(action, Complete):
            break
        assert action.at >= now
        state, now = action.state, action.at
    return actions


def only_complete(action: Schedule | Complete) -> Complete:
    assert isinstance(action, Complete), action
    return action


def only_schedule(action: Schedule | Complete) -> Schedule:
    assert isinstance(action, Schedule), action
    return action


def wait_of(action: Schedule | Complete, now: dt.datetime) -> float:
    return (only_schedule(action).at - now).total_seconds()


# --- the POST answered 200 at once --------------------------------------------------------------

OP_FULL = {"id": "/subscriptions/x/operationresults/op-1", "name": "op-1",
           "status": "Succeeded", "percentComplete": 100,
           "startTime": "2030-01-01T12:00:00Z", "endTime": "2030-01-01T12:00:01Z"}
FAIL_ERROR = {"code": "FlushFailed", "message": "could not flush", "target": "cache-1",
              "details": [{"code": "Inner", "message": "x"}]}


@pytest.mark.parametrize("status, body, expected, operation, error", [
    (200, b"", "Succeeded", None, None),
    (204, b"", "Succeeded", None, None),
    (200, {"status": "Succeeded"}, "Succeeded", {"status": "Succeeded"}, None),
    (200, {"status": "SUCCEEDED"}, "Succeeded", {"status": "SUCCEEDED"}, None),
    (200, {**OP_FULL, "extra": "dropped", "properties": {"x": 1}}, "Succeeded", OP_FULL, None),
    (200, {"status": "failed", "error": FAIL_ERROR}, "Failed",
     {"status": "failed", "error": FAIL_ERROR}, FAIL_ERROR),
    (200, {"status": "Failed"}, "Failed", {"status": "Failed"}, {"code": "OperationFailed"}),
    (200, {"status": "canceled"}, "Canceled", {"status": "canceled"}, None),
    (201, {"status": "Succeeded"}, "Succeeded", {"status": "Succeeded"}, None),
    # an error that is not an ErrorDetail object still gives an error object (was: a raise)
    (200, {"status": "Failed", "error": "boom"}, "Failed", {"status": "Failed", "error": "boom"},
     {"code": "OperationFailed", "message": "boom"}),
    (200, {"status": "Failed", "error": ["x"]}, "Failed", {"status": "Failed", "error": ["x"]},
     {"code": "OperationFailed"}),
    (200, {"status": "Failed", "error": 7}, "Failed", {"status": "Failed", "error": 7},
     {"code": "OperationFailed"}),
])
def test_post_200_at_once(status, body, expected, operation, error):
    done = only_complete(after_post(start(), answer(status, body), T0, ENDPOINT))
    assert done.status == expected
    assert done.operation == operation
    if error is None:
        assert done.error is None
    else:
        assert {k: done.error[k] for k in error} == error
    assert done.state.arm_requests == 1
    assert done.state.last_status == expected


def test_post_200_still_running_is_followed_when_it_names_a_url():
    action = after_post(start(), answer(200, {"status": "InProgress"}, both()), T0, ENDPOINT)
    assert only_schedule(action).state.poll_url == OP_URL


@pytest.mark.parametrize("status", [200, 201])
def test_post_200_still_running_without_a_url_is_not_a_success(status):
    done = only_complete(after_post(start(), answer(status, {"status": "InProgress"}), T0,
                                    ENDPOINT))
    assert done.status == "Failed"
    assert done.error["code"] == "NoOperationUrl"


# --- the POST answered 202 ---------------------------------------------------------------------

@pytest.mark.parametrize("headers, kind, url", [
    (both(), "azure-asyncoperation", OP_URL),
    ({"Azure-AsyncOperation": OP_URL}, "azure-asyncoperation", OP_URL),
    ({"Location": OP_URL}, "location", OP_URL),
    ({"location": OP_URL + "&loc=1", "azure-asyncoperation": OP_URL}, "azure-asyncoperation",
     OP_URL),
    ({"Location": "/subscriptions/x/operationresults/1?api-version=1"}, "location",
     f"{ENDPOINT}/subscriptions/x/operationresults/1?api-version=1"),
    (both(SIGNED), "azure-asyncoperation", SIGNED),
])
def test_post_202_starts_polling(headers, kind, url):
    action = only_schedule(after_post(start(), answer(202, b"", headers), T0, ENDPOINT))
    state = action.state
    assert (state.phase, state.poll_kind, state.poll_url) == ("poll", kind, url)
    assert action.at == at(2)  # first poll within 2 s when there is no Retry-After
    assert state.message_id == "req-1:poll:1"
    assert (state.accepted_at, state.last_status, state.arm_requests) == (T0, "Accepted", 1)


@pytest.mark.parametrize("headers", [{}, {"Location": ""}, {"Retry-After": "5"}])
def test_post_202_without_operation_url_fails(headers):
    done = only_complete(after_post(start(), answer(202, b"", headers), T0, ENDPOINT))
    assert done.status == "Failed"
    assert done.error["code"] == "NoOperationUrl"


@pytest.mark.parametrize("url", [
    "https://evil.example/ops/1?sig=SIGNATURE",
    "http://management.azure.com/ops/1?t=SECRETT0KEN",
    "https://management.azure.com:8443/ops/1",
    "https://user:hunter2@management.azure.com/ops/1",
    "https://[::1/ops/1?s=SIGNATURE",
])
def test_post_202_with_untrusted_operation_url_fails(url):
    done = only_complete(after_post(start(), answer(202, b"", both(url)), T0, ENDPOINT))
    assert done.status == "Failed"
    assert done.error["code"] == "UntrustedOperationUrl"
    assert not any(secret in json.dumps(done.error) for secret in SECRETS)


@pytest.mark.parametrize("headers, wait", [
    (both(**{"Retry-After": "10"}), 10.0),
    (both(**{"retry-after-ms": "500"}), 2.0),  # never sooner than our own first gap
    (both(**{"Retry-After": "Tue, 01 Jan 2030 12:01:00 GMT"}), 60.0),
])
def test_post_202_honours_retry_after(headers, wait):
    assert wait_of(after_post(start(), answer(202, b"", headers), T0, ENDPOINT), T0) == wait


def test_post_202_retry_after_past_the_deadline_times_out():
    done = only_complete(after_post(start(timeout=30),
                                    answer(202, b"", both(**{"Retry-After": "31"})), T0,
                                    ENDPOINT))
    assert done.status == "TimedOut"


# --- the POST failed ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_post_permanent_error_fails_with_arms_error(status):
    body = ARM_ERRORS[str(status)]
    done = only_complete(after_post(start(), answer(status, body), T0, ENDPOINT))
    assert done.status == "Failed"
    assert done.error == {**body["error"], "httpStatus": status}
    assert done.state.arm_requests == 1


def test_post_400_keeps_target_details_and_additional_info():
    done = only_complete(after_post(start(), answer(400, ARM_ERRORS["400"]), T0, ENDPOINT))
    assert done.error["target"] == "flush"
    assert done.error["details"] == [{"code": "BadArgument",
                                      "message": "api-version is not supported"}]
    assert done.error["additionalInfo"] == [{"type": "PolicyViolation",
                                             "info": {"policy": "p1"}}]


@pytest.mark.parametrize("status, body, code", [
    (403, b"<html>Forbidden</html>", "Http403"), (404, b"", "Http404"),
    (405, {"error": {"code": "MethodNotAllowed", "message": "no"}}, "MethodNotAllowed"),
    (301, b"", "Http301"),
])
def test_post_other_errors_fail_with_a_code(status, body, code):
    done = only_complete(after_post(start(), answer(status, body), T0, ENDPOINT))
    assert (done.status, done.error["code"], done.error["httpStatus"]) == ("Failed", code,
                                                                           status)


TRANSIENT_POSTS = [
    (answer(408, b""), None), (answer(409, ARM_ERRORS["409"]), None),
    (answer(429, ARM_ERRORS["429"], {"Retry-After": "17"}), 17.0),
    (answer(429, ARM_ERRORS["429"], {"x-ms-retry-after-ms": "90000"}), 90.0),
    (answer(500, ARM_ERRORS["500"]), None), (answer(503, b"", {"Retry-After": "1"}), 1.0),
    (answer(504, b""), None),
    (ArmFailure("ConnectionError", "POST failed: ConnectionError"), None),
    (ArmFailure("Timeout", "POST timed out"), None),
    (ArmFailure("TokenUnavailable", "no token", retry_after=40.0), 40.0),
]


@pytest.mark.parametrize("result, ra", TRANSIENT_POSTS)
def test_post_transient_error_schedules_a_retry(result, ra):
    action = only_schedule(after_post(start(), result, T0, ENDPOINT))
    backoff = lro.retry_delay(1, "req-1:0")
    assert wait_of(action, T0) == pytest.approx(max(backoff, ra or 0.0), abs=1e-5)
    assert wait_of(action, T0) >= (ra or 0.0)
    assert action.at <= action.state.deadline
    state = action.state
    assert (state.phase, state.message_id, state.failures, state.arm_requests) == (
        "flush", "req-1:poll:1", 1, 1)


def test_post_retries_back_off_with_strictly_increasing_message_ids():
    history = [answer(409, ARM_ERRORS["409"])] * 5 + [answer(202, b"", both())]
    actions = replay(start(), history)
    ids = [only_schedule(a).state.message_id for a in actions]
    assert ids == [f"req-1:poll:{n}" for n in range(1, 7)]
    assert [a.state.phase for a in actions] == ["flush"] * 5 + ["poll"]
    attempts = [a.state.attempt for a in actions]
    assert attempts == sorted(set(attempts))
    moments = [T0] + [a.at for a in actions]
    waits = [(b - a).total_seconds() for a, b in zip(moments, moments[1:])]
    for failures, wait in enumerate(waits[:5], start=1):
        base = min(60.0, 2.0 ** failures)
        assert 0.75 * base <= wait <= 1.25 * base
    assert actions[-1].state.failures == 0 and actions[-1].state.arm_requests == 6


@pytest.mark.parametrize("result", [answer(409, ARM_ERRORS["409"], {"Retry-After": "31"}),
                                    answer(429, b"", {"Retry-After": "600"}),
                                    ArmFailure("Timeout", "t", retry_after=45.0)])
def test_post_retry_that_cannot_happen_before_the_deadline_times_out(result):
    done = only_complete(after_post(start(timeout=30), result, T0, ENDPOINT))
    assert done.status == "TimedOut"
    assert done.error["code"] == "TimedOut"
    assert "NotStarted" in done.error["message"]
    assert done.error["details"][0]["code"] in ("Conflict", "Http429", "Timeout")


def test_post_retries_end_in_timed_out_inside_the_deadline():
    actions = replay(start(timeout=60), [answer(503, ARM_ERRORS["500"])] * 50)
    done = only_complete(actions[-1])
    assert done.status == "TimedOut"
    assert done.error["details"][0]["code"] == "InternalServerError"
    assert all(a.at < at(60) for a in actions[:-1])


@pytest.mark.parametrize("retry_after", ["99999999999", "1e300", "1e308",
                                         "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_enormous_retry_after_times_out_instead_of_overflowing(retry_after):
    headers = {"Retry-After": retry_after}
    done = only_complete(after_post(start(), answer(429, b"", headers), T0, ENDPOINT))
    assert done.status == "TimedOut"
    state, now = polling()
    done = only_complete(after_poll(state, running(**headers), now, ENDPOINT))
    assert done.status == "TimedOut"
    done = only_complete(after_poll(state, answer(503, b"", headers, OP_URL), now, ENDPOINT))
    assert done.status == "TimedOut"
    done = only_complete(after_post(start(), answer(202, b"", both(**headers)), T0, ENDPOINT))
    assert done.status == "TimedOut"


def test_very_long_outage_keeps_backing_off():
    state, now = polling(timeout=86400)
    state = dataclasses.replace(state, failures=5000)
    action = only_schedule(after_poll(state, answer(503, b"", {}, OP_URL), now, ENDPOINT))
    assert 45.0 <= wait_of(action, now) <= 75.0


def test_failure_before_anything_was_sent_is_not_counted_as_an_arm_request():
    action = only_schedule(after_post(start(), ArmFailure("TokenUnavailable", "t", sent=False),
                                      T0, ENDPOINT))
    assert action.state.arm_requests == 0
    action = only_schedule(after_post(start(), ArmFailure("Timeout", "t"), T0, ENDPOINT))
    assert action.state.arm_requests == 1


def test_poll_refused_by_the_client_as_untrusted_fails():
    state, now = polling()
    state = dataclasses.replace(state, poll_url="https://evil.example/ops?s=SIGNATURE")
    done = only_complete(after_poll(state, ArmFailure(UNTRUSTED_URL, "refused", sent=False),
                                    now, ENDPOINT))
    assert (done.status, done.error["code"]) == ("Failed", "UntrustedOperationUrl")
    assert "SIGNATURE" not in json.dumps(done.error)


# --- before the call / pacer deferral ----------------------------------------------------------

@pytest.mark.parametrize("phase, now, timed_out", [
    ("flush", at(0), False), ("flush", at(1799), False), ("flush", at(1800), True),
    ("flush", at(5000), True), ("poll", at(1800), False), ("poll", at(5000), False),
])
def test_before_call(phase, now, timed_out):
    state = dataclasses.replace(start(), phase=phase)
    action = before_call(state, now)
    if timed_out:
        assert only_complete(action).status == "TimedOut"
        assert "NotStarted" in action.error["message"]
    else:
        assert action is None


@pytest.mark.parametrize("phase, wait, expected_at", [
    ("flush", 5.0, at(5)), ("poll", 0.5, at(0.5)), ("flush", 4000.0, at(1800)),
    ("poll", float("inf"), at(1800)), ("flush", 1e300, at(1800)),
])
def test_deferred_comes_back_with_its_slot(phase, wait, expected_at):
    state = dataclasses.replace(start(), phase=phase, attempt=3)
    action = only_schedule(deferred(state, wait, T0))
    assert action.at == expected_at
    assert action.state.paced is True
    assert action.state.attempt == 4 and action.state.phase == phase
    assert action.state.arm_requests == 0  # no request was made


def test_paced_step_clears_its_slot_after_the_call():
    action = only_schedule(deferred(start(), 5.0, T0))
    after = only_schedule(after_post(action.state, answer(202, b"", both()), at(5), ENDPOINT))
    assert after.state.paced is False
    assert after.state.message_id == "req-1:poll:2"


# --- status polls ------------------------------------------------------------------------------

def test_poll_running_schedules_the_next_poll():
    state, now = polling()
    action = only_schedule(after_poll(state, running({"status": "InProgress",
                                                      "percentComplete": 30}), now, ENDPOINT))
    assert wait_of(action, now) == lro.POLL_GAPS[1]  # the gap after the first poll
    nxt = action.state
    assert (nxt.last_status, nxt.polls, nxt.attempt, nxt.arm_requests) == ("InProgress", 1, 2, 2)
    assert nxt.last_operation == {"status": "InProgress", "percentComplete": 30}
    assert nxt.message_id == "req-1:poll:2"


@pytest.mark.parametrize("kind", ["azure-asyncoperation", "location"])
@pytest.mark.parametrize("status", ["Succeeded", "succeeded", "SUCCEEDED", "Failed", "FAILED",
                                    "Canceled", "canceled"])
def test_poll_terminal_status_completes(kind, status):
    state, now = polling(kind)
    body = {"id": "/ops/op-1", "name": "op-1", "status": status, "percentComplete": 100}
    if status.lower() == "failed":
        body["error"] = FAIL_ERROR
    done = only_complete(after_poll(state, answer(200, body, {}, OP_URL), now, ENDPOINT))
    canonical = lro.terminal_status(status)
    assert done.status == canonical
    assert done.operation == body
    assert done.error == (FAIL_ERROR if canonical == "Failed" else None)
    assert done.state.arm_requests == 2


@pytest.mark.parametrize("status, body, expected", [
    (202, b"", "schedule"), (202, {"status": "InProgress"}, "schedule"),
    (200, b"", "Succeeded"), (204, b"", "Succeeded"), (200, {"id": "/x"}, "Succeeded"),
    (200, {"status": "Failed", "error": FAIL_ERROR}, "Failed"),
])
def test_location_poll_semantics(status, body, expected):
    state, now = polling("location")
    action = after_poll(state, answer(status, body, {}, OP_URL), now, ENDPOINT)
    if expected == "schedule":
        assert only_schedule(action).state.last_status == "InProgress"
    else:
        assert only_complete(action).status == expected


def test_poll_202_with_a_new_location_moves_the_poll():
    state, now = polling()
    new = f"{ENDPOINT}/subscriptions/{SUB}/operationresults/op-2?api-version=1&t=x"
    action = only_schedule(after_poll(state, running(Location=new), now, ENDPOINT))
    assert (action.state.poll_kind, action.state.poll_url) == ("location", new)
    action = only_schedule(after_poll(state, running(**both(new)), now, ENDPOINT))
    assert (action.state.poll_kind, action.state.poll_url) == ("azure-asyncoperation", new)


def test_poll_202_with_the_same_headers_keeps_the_poll():
    state, now = polling()
    action = only_schedule(after_poll(state, running(**both()), now, ENDPOINT))
    assert (action.state.poll_kind, action.state.poll_url) == (state.poll_kind, state.poll_url)


def test_poll_202_with_a_relative_new_location_is_resolved_against_the_status_url():
    state, now = polling("location")
    action = only_schedule(after_poll(state, running(Location="op-9?api-version=1"), now,
                                      ENDPOINT))
    assert action.state.poll_url == (f"{ENDPOINT}/subscriptions/{SUB}/providers/"
                                     "Microsoft.Cache/locations/West%20US%202/operationresults/"
                                     "op-9?api-version=1")


@pytest.mark.parametrize("new", ["https://evil.example/ops/2?s=SIGNATURE",
                                 "http://management.azure.com/ops/2",
                                 "https://user:hunter2@management.azure.com/ops/2"])
def test_poll_202_moving_to_an_untrusted_url_fails(new):
    state, now = polling()
    done = only_complete(after_poll(state, running(Location=new), now, ENDPOINT))
    assert (done.status, done.error["code"]) == ("Failed", "UntrustedOperationUrl")
    assert not any(secret in json.dumps(done.error) for secret in SECRETS)


def test_poll_200_headers_do_not_move_anything():
    state, now = polling()
    action = only_schedule(after_poll(state, answer(200, {"status": "InProgress"},
                                                    {"Location": "https://evil.example/x"},
                                                    OP_URL), now, ENDPOINT))
    assert action.state.poll_url == OP_URL


@pytest.mark.parametrize("headers, wait", [({"Retry-After": "12"}, 12.0),
                                           ({"retry-after-ms": "100"}, 3.0),
                                           ({"Retry-After": "garbage"}, 3.0)])
def test_poll_honours_retry_after(headers, wait):
    state, now = polling()
    assert wait_of(after_poll(state, running(**headers), now, ENDPOINT), now) == wait


BAD_POLLS = [
    (lambda: answer(400, ARM_ERRORS["400"], {}, OP_URL), "OperationStatusHttp400"),
    (lambda: answer(401, ARM_ERRORS["401"], {}, OP_URL), "OperationStatusHttp401"),
    (lambda: answer(403, ARM_ERRORS["403"], {}, OP_URL), "OperationStatusHttp403"),
    (lambda: answer(404, ARM_ERRORS["404"], {}, OP_URL), "OperationStatusHttp404"),
    (lambda: answer(200, b"", {}, OP_URL), "OperationStatusEmptyBody"),
    (lambda: answer(202, b"", {}, OP_URL), "OperationStatusEmptyBody"),
    (lambda: answer(200, b"<html>oops", {}, OP_URL), "OperationStatusInvalidJson"),
    (lambda: answer(200, b"[1]", {}, OP_URL), "OperationStatusInvalidJson"),
    (lambda: answer(200, b"[" * 100_000, {}, OP_URL), "OperationStatusInvalidJson"),
    (lambda: answer(404, b"[" * 100_000, {}, OP_URL), "OperationStatusHttp404"),
    (lambda: answer(200, {"id": "/x"}, {}, OP_URL), "OperationStatusMissingStatus"),
    (lambda: answer(202, {"status": None}, {}, OP_URL), "OperationStatusMissingStatus"),
]


@pytest.mark.parametrize("make, code", BAD_POLLS)
def test_unusable_status_answers_are_retried_three_times_then_fail(make, code):
    state, now = polling()
    state = only_schedule(after_poll(state, running(), now, ENDPOINT)).state  # last known
    actions = replay(state, [make() for _ in range(10)], now)
    assert len(actions) == MAX_BAD_POLLS + 1 == 4
    assert all(isinstance(a, Schedule) for a in actions[:3])
    done = only_complete(actions[-1])
    assert (done.status, done.error["code"]) == ("Failed", code)
    assert done.operation == {"status": "InProgress"}  # the last known operation
    if make().body.startswith(b'{"error"'):
        assert done.error["details"][0]["code"] == ARM_ERRORS[code[-3:]]["error"]["code"]
    elif code.startswith("OperationStatusHttp"):
        assert done.error["details"][0]["code"] == code.replace("OperationStatus", "")


def test_a_good_answer_resets_the_unusable_answer_count():
    state, now = polling()
    bad = answer(404, ARM_ERRORS["404"], {}, OP_URL)
    history = [bad, bad, bad, running(), bad, bad, bad, answer(200, {"status": "Succeeded"},
                                                                {}, OP_URL)]
    actions = replay(state, history, now)
    assert len(actions) == len(history)
    assert only_complete(actions[-1]).status == "Succeeded"


@pytest.mark.parametrize("result", [answer(409, ARM_ERRORS["409"], {}, OP_URL),
                                    answer(500, b"", {}, OP_URL), answer(408, b"", {}, OP_URL),
                                    answer(429, b"", {"Retry-After": "3"}, OP_URL),
                                    ArmFailure("ConnectionError", "c")])
def test_transient_poll_errors_are_retried_until_the_deadline(result):
    state, now = polling(timeout=300)
    state = only_schedule(after_poll(state, running({"status": "Flushing",
                                                     "percentComplete": 10}), now,
                                     ENDPOINT)).state
    actions = replay(state, [result] * 500, now)
    assert len(actions) > 4  # not the 3-strikes rule of unusable answers
    schedules, done = actions[:-1], only_complete(actions[-1])
    assert all(a.at <= at(300) for a in schedules)
    assert all(a.state.phase == "poll" for a in schedules)
    assert done.status == "TimedOut"
    assert "Flushing" in done.error["message"]  # the last known status
    assert done.operation == {"status": "Flushing", "percentComplete": 10}


def test_deadline_while_running_times_out_with_the_last_status():
    state, _ = polling(timeout=30)
    done = only_complete(after_poll(state, running({"status": "Flushing"}), at(30), ENDPOINT))
    assert done.status == "TimedOut"
    assert "Flushing" in done.error["message"]
    assert done.operation == {"status": "Flushing"}


def test_terminal_answer_at_the_deadline_still_counts():
    state, _ = polling(timeout=30)
    done = only_complete(after_poll(state, answer(200, {"status": "Succeeded"}, {}, OP_URL),
                                    at(30), ENDPOINT))
    assert done.status == "Succeeded"


def test_poll_schedule_never_passes_the_deadline_and_gaps_grow():
    state, now = polling(timeout=120)
    actions = replay(state, [running()] * 200, now)
    schedules = [a for a in actions if isinstance(a, Schedule)]
    moments = [now] + [a.at for a in schedules]
    gaps = [(b - a).total_seconds() for a, b in zip(moments, moments[1:])]
    assert all(a.at <= at(120) for a in schedules)
    assert all(g <= 30.0 for g in gaps)
    assert all(a <= b for a, b in zip(gaps[:-1], gaps[1:-1]))  # the last may be cut short
    assert only_complete(actions[-1]).status == "TimedOut"


def test_poll_retry_after_past_the_deadline_times_out():
    state, now = polling(timeout=60)
    done = only_complete(after_poll(state, running(**{"Retry-After": "120"}), now, ENDPOINT))
    assert done.status == "TimedOut"


# --- synthetic histories ------------------------------------------------------------------------

def recorded_history() -> tuple[str, list[ArmAnswer]]:
    fixture = load_fixture("arm_flush_recorded.json")
    url = fixture["operationUrl"]
    answers = []
    for i, raw in enumerate(fixture["answers"]):
        headers = {k: v.replace("{operationUrl}", url) for k, v in raw["headers"].items()}
        answers.append(answer(raw["status"], raw["body"] if raw["body"] != "" else b"", headers,
                              FLUSH_URL if i == 0 else url))
    return url, answers


def test_recorded_real_traffic_shape():
    url, history = recorded_history()
    actions = replay(start(), history)
    first, second, done = actions
    assert isinstance(first, Schedule) and isinstance(second, Schedule)
    assert (first.at, first.state.message_id) == (at(2), "req-1:poll:1")
    assert (first.state.poll_kind, first.state.poll_url) == ("azure-asyncoperation", url)
    assert "West%20US%202" in first.state.poll_url
    assert (second.at, second.state.message_id) == (at(5), "req-1:poll:2")  # 2 s, then 3 s
    assert second.state.last_status == "InProgress"
    done = only_complete(done)
    assert done.status == "Succeeded" and done.error is None
    assert done.operation == json.loads(history[2].body)
    assert done.state.arm_requests == 3
    assert done.state.accepted_at == T0


def test_recorded_shape_after_a_busy_cache_and_a_throttled_poll():
    url, (post202, poll202, poll200) = recorded_history()
    history = [answer(409, ARM_ERRORS["409"]), answer(409, ARM_ERRORS["409"]), post202,
               poll202, answer(429, b"", {"Retry-After": "20"}, url), poll202, poll200]
    actions = replay(start(), history)
    ids = [a.state.message_id for a in actions[:-1]]
    assert ids == ["req-1:poll:1", "req-1:poll:2", "req-1:poll:3", "req-1:poll:4",
                   "req-1:poll:5", "req-1:poll:6"]
    assert (actions[4].at - actions[3].at).total_seconds() >= 20
    done = only_complete(actions[-1])
    assert (done.status, done.state.arm_requests) == ("Succeeded", 7)


def test_location_only_history():
    history = [answer(202, b"", {"Location": OP_URL, "Retry-After": "5"}),
               answer(202, b"", {"Location": OP_URL}, OP_URL),
               answer(202, b"", {"Location": OP_URL}, OP_URL),
               answer(204, b"", {}, OP_URL)]
    actions = replay(start(), history)
    assert [a.at for a in actions[:-1]] == [at(5), at(8), at(11)]
    assert only_complete(actions[-1]).status == "Succeeded"


# --- redaction ----------------------------------------------------------------------------------

SIGNED_EVIL = "https://evil.example/ops?t=SECRETT0KEN&s=SIGNATURE"
REDACTION_HISTORIES = {
    "succeeded via signed url": [answer(202, b"", both(SIGNED)),
                                 answer(202, {"status": "InProgress", "statusUrl": SIGNED},
                                        both(SIGNED), SIGNED),
                                 answer(200, {"status": "Succeeded", "properties": {
                                     "url": SIGNED}, "links": [SIGNED]}, {}, SIGNED)],
    "failed via signed url": [answer(202, b"", both(SIGNED)),
                              answer(200, {"status": "Failed", "nextLink": SIGNED,
                                           "error": {"code": "E", "message": "m"}}, {}, SIGNED)],
    "untrusted move": [answer(202, b"", both(SIGNED)),
                       answer(202, {"status": "InProgress"}, {"Location": SIGNED_EVIL}, SIGNED)],
    "untrusted userinfo": [answer(202, b"", both(
        "https://admin:hunter2@management.azure.com/ops?t=SECRETT0KEN"))],
    "untrusted at once": [answer(202, b"", both(SIGNED_EVIL))],
    "bad polls": [answer(202, b"", both(SIGNED))] + [answer(404, b"", {}, SIGNED)] * 4,
    "bad json": [answer(202, b"", both(SIGNED))] + [answer(200, b"?t=SECRETT0KEN", {},
                                                           SIGNED)] * 4,
    "timed out": [answer(202, b"", both(SIGNED))] + [
        answer(202, {"status": "InProgress", "href": SIGNED}, both(SIGNED), SIGNED)] * 500,
    "transient then timeout": [answer(202, b"", both(SIGNED))] + [answer(503, b"", {},
                                                                         SIGNED)] * 500,
}


@pytest.mark.parametrize("history", REDACTION_HISTORIES.values(), ids=REDACTION_HISTORIES.keys())
def test_no_signed_parameter_or_secret_reaches_a_completion(history):
    done = only_complete(replay(start(timeout=120), history)[-1])
    text = json.dumps({"operation": done.operation, "error": done.error})
    assert not any(secret in text for secret in SECRETS), text


# --- invariants over any history ------------------------------------------------------------------

ANSWER_HEADERS = st.sampled_from([
    {}, both(), both(SIGNED), {"Location": OP_URL}, {"Azure-AsyncOperation": OP_URL},
    {"Location": "https://evil.example/x"}, {"Retry-After": "7"}, {"Retry-After": "inf"},
    {"Retry-After": "9999999999"}, {"retry-after-ms": "nan"},
    {**both(), "Retry-After": "Tue, 01 Jan 2030 12:05:00 GMT"}])
ANSWER_BODIES = st.sampled_from([
    b"", b"{}", b"<html>", {"status": "InProgress"}, {"status": "succeeded"},
    {"status": "Failed", "error": {"code": "E", "message": "m"}}, {"status": "Canceled"},
    {"status": "Running", "percentComplete": 50}, ARM_ERRORS["409"], ARM_ERRORS["404"]])
ARM_RESULTS = st.one_of(
    st.builds(answer, st.sampled_from([200, 201, 202, 204, 400, 401, 403, 404, 408, 409, 429,
                                       500, 503]), ANSWER_BODIES, ANSWER_HEADERS),
    st.builds(ArmFailure, st.sampled_from(["Timeout", "ConnectionError"]), st.just("m"),
              st.none() | st.floats(min_value=0, max_value=1e6)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ARM_RESULTS, min_size=1, max_size=40), st.integers(30, 3600))
def test_any_history_gives_ordered_steps_and_at_most_one_sound_completion(history, timeout):
    state = start(timeout)
    actions = replay(state, history)
    deadline = state.deadline
    attempts = [a.state.attempt for a in actions if isinstance(a, Schedule)]
    assert attempts == list(range(1, len(attempts) + 1))
    assert all(a.at <= deadline for a in actions if isinstance(a, Schedule))
    completes = [a for a in actions if isinstance(a, Complete)]
    assert len(completes) <= 1 and (not completes or actions[-1] is completes[0])
    for done in completes:
        assert done.status in STATUSES and done.status != "Rejected"
        assert done.status != "Failed" or done.error and done.error.get("code")
        assert done.status != "TimedOut" or done.error["code"] == "TimedOut"


# --- arm.error_detail ---------------------------------------------------------------------------

@pytest.mark.parametrize("body, expected", [
    (json.dumps(ARM_ERRORS["400"]).encode(), ARM_ERRORS["400"]["error"]),
    (b'{"code": "X", "message": "m", "extra": 1}', {"code": "X", "message": "m"}),
    (b'{"error": {"code": "X"}}', {"code": "X"}),
    (b'{"error": {"message": "only a message"}}', {"message": "only a message"}),
    (b'{"error": {"foo": 1}}', None), (b'{"error": "text"}', None), (b"[]", None),
    (b"", None), (b"<html>", None), (b"\xff", None), (b"null", None),
    (b'{"error":' * 100_000, None),
])
def test_error_detail(body, expected):
    assert error_detail(body) == expected


# --- size bounds on ARM's own JSON ---------------------------------------------------------------

def test_a_huge_arm_error_is_bounded_so_the_event_always_fits_a_message():
    from redisflush.orchestrator import MAX_ITEMS, MAX_TEXT, bounded
    details = [{"code": "E", "message": "x" * 100_000, "details": [{"d": [[[[[[1]]]]]]}]}] * 500
    state, now = polling()
    action = after_poll(state, answer(200, {"status": "Failed", "percentComplete": float("nan"),
                                            "error": {"code": "Big", "message": "m",
                                                      "details": details}}, {}, OP_URL),
                        now, ENDPOINT)
    done = only_complete(action)
    size = len(json.dumps({"operation": done.operation, "error": done.error}))
    assert size < 200_000
    assert done.error["code"] == "Big"
    assert len(done.error["details"]) == MAX_ITEMS
    assert len(done.error["details"][0]["message"]) == MAX_TEXT + 1
    assert done.operation["percentComplete"] is None
    assert bounded({"a": [1, "b", None, True]}) == {"a": [1, "b", None, True]}


def test_a_huge_post_error_body_is_bounded():
    state = start()
    body = {"error": {"code": "Huge", "message": "y" * 50_000,
                      "additionalInfo": [{"type": "t", "info": {"k": "v" * 9000}}] * 100}}
    done = only_complete(after_post(state, answer(400, body), at(0), ENDPOINT))
    assert done.error["code"] == "Huge" and len(json.dumps(done.error)) < 100_000
