"""core/flush_steps.py and the rules it calls (core/arm_failures.py, core/target_end.py,
core/accepted_row.py, core/linked_databases.py): one target, the call it needs and what each
ARM or ledger answer means; and core/resolve.py (a selector's list pages), as table tests and
small replays.

The rules of the old orchestrator live here now: `on_answer(target state, answer, Context)`
gives the target's next state (its `due` is when it next needs ARM) and the ledger writes in
`Context.records`. Answers are built by hand; `now` is fixed. A replay feeds a synthetic
history of answers, each at the moment the previous one made the target due.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redisflush.core import cadence, lro, resolve
from redisflush.core.answers import UNTRUSTED_URL, ArmAnswer, ArmFailure, error_detail
from redisflush.core.arm_failures import MAX_BAD
from redisflush.core.commands import CallArm, Claimed, ClaimTarget, Deferred, Learn, RecordTarget
from redisflush.core.decision import Context
from redisflush.core.events import STATUSES, Outcome
from redisflush.core.fit import size
from redisflush.core.flush_steps import call_for, on_answer
from redisflush.core.ledger_rules import expiry
from redisflush.core.linked_databases import linked_databases
from redisflush.core.request import Delivery, FlushRequest, parse_request
from redisflush.core.state import PHASES, ListCall, RunState, TargetState, initial
from redisflush.core.target_end import ERROR_BYTES, OPERATION_BYTES, timed_out
from redisflush.core.targets import make_enterprise, make_target

from .helpers import (
    CACHE,
    CLUSTER,
    ENDPOINT,
    RG,
    SUB,
    SUB2,
    T0,
    at,
    cluster_id,
    db_id,
    load_fixture,
    rid,
)

TARGET = make_target(SUB, RG, CACHE)
DATABASE = make_enterprise(SUB, RG, CLUSTER)
FLUSH_URL = TARGET.flush_url(ENDPOINT, "2023-08-01")
OP_URL = (f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache/locations/West%20US%202/"
          "operationresults/op-1?api-version=2023-08-01")
SECRETS = ("SECRETT0KEN", "SIGNATURE", "HMACVALUE", "CERTBLOB", "hunter2")
SIGNED = OP_URL + "&t=SECRETT0KEN&c=CERTBLOB%2B%2F&s=SIGNATURE&h=HMACVALUE"
ENTERPRISE_STATUS = (f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache/locations/"
                     "West%20US%203/operationsStatus/op9?api-version=2025-07-01&t=1&c=2&s=3&h=4")
ENTERPRISE_LOCATION = (f"{ENDPOINT}{db_id()}/operationresults/op9?api-version=2025-07-01"
                       "&t=1&c=2&s=3&h=4")
ARM_ERRORS = load_fixture("arm_errors.json")
DEADLINE = at(1800)
LINKED = db_id("amr-us")
GAP = cadence.poll_gap(None)  # 1 s: one status read a second without Retry-After


# --- builders ------------------------------------------------------------------------------------

def cx(now: dt.datetime = T0, deadline: dt.datetime = DEADLINE, scopes: tuple[str, ...] = (),
       budget: cadence.ReadBudget | None = None) -> Context:
    return Context(now, deadline, ENDPOINT, scopes, budget)


def post_state(target=TARGET, linked: tuple[str, ...] = ()) -> TargetState:
    return TargetState(target, 0, "post", T0, linked)


def answer(status: int, body: Any = b"", headers: dict[str, str] | None = None,
           url: str = FLUSH_URL) -> ArmAnswer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ArmAnswer(status, headers or {}, raw, url)


def both(url: str = OP_URL, **extra: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": url, "Location": url, **extra}


def running(body: Any = None, **headers: str) -> ArmAnswer:
    return answer(202, {"status": "InProgress"} if body is None else body, headers, OP_URL)


def after(ts: TargetState, result, now: dt.datetime = T0, deadline: dt.datetime = DEADLINE,
          **kw: Any) -> tuple[TargetState, list]:
    context = cx(now, deadline, **kw)
    return on_answer(ts, result, context), context.records


def polling(kind: str = "azure-asyncoperation", url: str = OP_URL,
            deadline: dt.datetime = DEADLINE) -> TargetState:
    """A target just after ARM accepted its POST (due for its first status read)."""
    header = "Azure-AsyncOperation" if kind == "azure-asyncoperation" else "Location"
    ts, _ = after(post_state(), answer(202, headers={header: url}), deadline=deadline)
    assert (ts.phase, ts.poll_kind) == ("poll", kind)
    return ts


def done(ts: TargetState) -> Outcome:
    assert ts.phase == "done" and ts.outcome is not None, ts
    return ts.outcome


def wait_of(ts: TargetState, now: dt.datetime = T0) -> float:
    assert ts.phase != "done", ts.outcome
    return (ts.due - now).total_seconds()


def claimed(ts: TargetState, now: dt.datetime, deadline: dt.datetime = DEADLINE
            ) -> TargetState:
    """A target back at its claim (a POST retry claims its row again) gets it, as the ledger
    would answer when no other delivery got there first."""
    if ts.phase != "claim":
        return ts
    ts = on_answer(ts, Claimed("post"), cx(now, deadline))
    assert (ts.phase, ts.due) == ("post", now)
    return ts


def replay(ts: TargetState, results: Sequence, now: dt.datetime = T0,
           deadline: dt.datetime = DEADLINE) -> tuple[list[TargetState], list]:
    """Each answer at the moment the previous one made the target due; stops when done."""
    states, records = [], []
    for result in results:
        ts = claimed(ts, now, deadline)
        context = cx(now, deadline)
        ts = on_answer(ts, result, context)
        states.append(ts)
        records.extend(context.records)
        if ts.phase == "done":
            break
        assert ts.due >= now
        now = max(now, ts.due)
    return states, records


# --- what each phase asks for ----------------------------------------------------------------

def test_call_for_each_phase():
    kw = dict(request_id="req-1", step=4, endpoint=ENDPOINT, api_version="2023-08-01",
              enterprise_api_version="2025-07-01", deadline=DEADLINE)
    read = call_for(TargetState(DATABASE, 2, "read", T0, paced=True), **kw)
    assert read == CallArm("t2:read", "GET", DATABASE.resource_url(ENDPOINT, "2025-07-01"), SUB,
                           "req-1:2.4", None, True, cadence.MAX_INLINE_WAIT)
    claim = call_for(TargetState(TARGET, 1, "claim", T0), **kw)
    assert claim == ClaimTarget("t1:claim", TARGET.key, expiry(DEADLINE))
    post = call_for(post_state(), **kw)
    assert isinstance(post, CallArm) and (post.ref, post.method, post.url, post.body) == (
        "t0:post", "POST", FLUSH_URL, None)
    assert post.client_request_id == "req-1:0.4" and post.subscription_id == SUB
    group = (db_id("us", rg="rg-us"), db_id("eu", "Db-2"))
    post = call_for(post_state(DATABASE, group), **kw)
    assert post.url == DATABASE.flush_url(ENDPOINT, "2025-07-01")
    assert json.loads(post.body) == {"ids": list(group)}  # the other databases, as given
    alone = call_for(post_state(DATABASE, ()), **kw)
    assert json.loads(alone.body) == {"ids": []}  # always a body, empty when alone
    poll = call_for(dataclasses.replace(polling(url=SIGNED), index=3), **kw)
    assert (poll.ref, poll.method, poll.url, poll.body) == ("t3:poll", "GET", SIGNED, None)
    assert call_for(dataclasses.replace(post_state(), phase="done"), **kw) is None


def test_context_at_is_cadence_next_time():
    context = cx(at(10), at(100))
    assert context.at(5) == at(15) and context.at(1, 30) == at(40)
    assert context.at(1, 1e9) == at(100) and context.at(1000) == at(100)


# --- Managed Redis: reading the database's geo-replication group --------------------------------

def database_body(*ids: str, own: str = db_id()) -> dict:
    return {"id": own, "name": "default", "type": "Microsoft.Cache/redisEnterprise/databases",
            "properties": {"provisioningState": "Succeeded", "geoReplication": {
                "groupNickname": "g", "linkedDatabases": [{"id": i, "state": "Linked"}
                                                          for i in ids]}}}


READ_URL = DATABASE.resource_url(ENDPOINT, "2025-07-01")


@pytest.mark.parametrize("body, linked", [
    (database_body(db_id(), db_id("us", rg="rg-us")), (db_id("us", rg="rg-us"),)),
    (database_body(db_id("us"), db_id().upper().replace(SUB.upper(), SUB), db_id("eu")),
     (db_id("us"), db_id("eu"))),  # itself, in any case, is left out; order kept
    (database_body(db_id("us"), db_id("us")), (db_id("us"),)),
    (database_body(db_id()), ()),
    (database_body(), ()),
    ({"id": db_id(), "properties": {}}, ()),  # no geo-replication: alone
    ({"id": db_id()}, ()),
    ({"properties": {"geoReplication": None}}, ()),
    ({"properties": {"geoReplication": {"linkedDatabases": [{"id": 5}, "x", None]}}}, ()),
])
def test_linked_databases(body, linked):
    assert linked_databases(json.dumps(body).encode(), DATABASE.key) == linked


@pytest.mark.parametrize("body", [b"", b"<html>", b"[]", b"null", b'{"properties": []}',
                                  b'{"properties": "x"}', b"\xff", b"[" * 100_000])
def test_linked_databases_of_something_else_is_none(body):
    assert linked_databases(body, DATABASE.key) is None


def read_state() -> TargetState:
    return TargetState(DATABASE, 0, "read", T0)


def test_read_learns_the_group_then_claims():
    ts, records = after(read_state(), answer(200, database_body(db_id(), db_id("us")), {},
                                             READ_URL), at(2))
    assert (ts.phase, ts.due, ts.linked) == ("claim", at(2), (db_id("us"),))
    assert ts.arm_requests == 1 and records == []


@pytest.mark.parametrize("scopes, ok", [
    ((), True), ((f"/subscriptions/{SUB}",), True), ((cluster_id(), cluster_id("us")), True),
    ((cluster_id(),), False),  # the linked database lies outside: nothing is flushed
    ((db_id(),), False),
])
def test_read_checks_every_linked_database_against_the_scopes(scopes, ok):
    ts, _ = after(read_state(), answer(200, database_body(db_id(), db_id("us")), {}, READ_URL),
                  scopes=scopes)
    if ok:
        assert ts.phase == "claim"
        return
    outcome = done(ts)
    assert outcome.status == "Rejected"
    assert outcome.error["code"] == "LinkedDatabaseNotAllowed"
    assert outcome.error["target"] == "linkedDatabaseIds"
    assert outcome.linked == ()  # nothing was flushed with it


@pytest.mark.parametrize("linked", [
    rid("c"), "junk", "/subscriptions/x", db_id("us") + "/flush",
    cluster_id("us"),
])
def test_read_refuses_a_group_member_that_is_not_a_database(linked):
    body = {"properties": {"geoReplication": {"linkedDatabases": [{"id": linked}]}}}
    outcome = done(after(read_state(), answer(200, body, {}, READ_URL))[0])
    assert (outcome.status, outcome.error["code"]) == ("Rejected", "LinkedDatabaseNotAllowed")


@pytest.mark.parametrize("status, code", [(404, "ResourceNotFound"), (403, "AuthorizationFailed"),
                                          (400, "InvalidRequestBody")])
def test_read_permanent_error_fails(status, code):
    outcome = done(after(read_state(), answer(status, ARM_ERRORS[str(status)], {}, READ_URL))[0])
    assert (outcome.status, outcome.error["code"], outcome.error["httpStatus"]) == (
        "Failed", code, status)


@pytest.mark.parametrize("result", [answer(429, b"", {"Retry-After": "7"}), answer(503),
                                    answer(409, ARM_ERRORS["409"]), ArmFailure("Timeout", "t")])
def test_read_transient_error_is_retried(result):
    ts, records = after(read_state(), result)
    assert (ts.phase, ts.failures) == ("read", 1)
    assert wait_of(ts) >= 1.5 and records == []  # no ledger row before the claim


def test_read_of_an_unusable_body_is_retried_three_times_then_fails():
    states, _ = replay(read_state(), [answer(200, b"<html>", {}, READ_URL)] * 10)
    assert len(states) == MAX_BAD + 1
    assert [s.phase for s in states[:-1]] == ["read"] * MAX_BAD
    outcome = done(states[-1])
    assert (outcome.status, outcome.error["code"]) == ("Failed", "DatabaseInvalidJson")


# --- the ledger's answer to a claim -------------------------------------------------------------

def claim_state(linked: tuple[str, ...] = ()) -> TargetState:
    return TargetState(DATABASE, 0, "claim", T0, linked)


def test_claim_post():
    ts, _ = after(claim_state(), Claimed("post"), at(3))
    assert (ts.phase, ts.due) == ("post", at(3))


def test_claim_adopts_an_earlier_deliverys_operation():
    data = {"pollUrl": SIGNED, "pollKind": "location", "acceptedAt": "2030-01-01T11:59:00.000Z",
            "linked": [db_id("us")]}
    ts, _ = after(claim_state(), Claimed("adopt-poll", data), at(3))
    assert (ts.phase, ts.due, ts.poll_url, ts.poll_kind) == ("poll", at(3), SIGNED, "location")
    assert ts.accepted_at == at(-60) and ts.linked == (db_id("us"),)
    assert ts.last_status == "Accepted"
    # the requests the earlier delivery made are counted too
    ts, _ = after(claim_state(), Claimed("adopt-poll", {**data, "armRequests": 3}))
    assert ts.arm_requests == 3


def test_claim_adopts_an_earlier_outcome():
    outcome = Outcome("Succeeded", at(-5), None, {"status": "Succeeded"}, at(-9), 4,
                      (db_id("us"),))
    ts, _ = after(claim_state(), Claimed("adopt-done", {"outcome": outcome.to_json()}))
    assert done(ts) == outcome


@pytest.mark.parametrize("until, due", [(at(90), at(90)), (at(5000), DEADLINE)])
def test_claim_busy_waits_for_the_lease(until, due):
    ts, _ = after(claim_state(), Claimed("busy", until=until))
    assert (ts.phase, ts.due) == ("claim", due)


def test_claim_in_doubt_fails_without_a_third_post():
    outcome = done(after(claim_state(), Claimed("in-doubt"))[0])
    assert (outcome.status, outcome.error["code"]) == ("Failed", "FlushInDoubt")


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
    # only the OperationStatusResult fields are kept (never a URL with signatures)
    (200, {**OP_FULL, "extra": "dropped", "properties": {"x": 1}}, "Succeeded", OP_FULL, None),
    (200, {"status": "failed", "error": FAIL_ERROR}, "Failed",
     {"status": "failed", "error": FAIL_ERROR}, FAIL_ERROR),
    (200, {"status": "Failed"}, "Failed", {"status": "Failed"}, {"code": "OperationFailed"}),
    # README: an event's error is null only when Succeeded
    (200, {"status": "canceled"}, "Canceled", {"status": "canceled"},
     {"code": "OperationCanceled"}),
    (201, {"status": "Succeeded"}, "Succeeded", {"status": "Succeeded"}, None),
    (200, {"StatusCode": 200}, "Succeeded", None, None),  # Managed Redis' non-operation body
    (200, {"status": "Failed", "error": "boom"}, "Failed", {"status": "Failed", "error": "boom"},
     {"code": "OperationFailed", "message": "boom"}),
    (200, {"status": "Failed", "error": ["x"]}, "Failed", {"status": "Failed", "error": ["x"]},
     {"code": "OperationFailed"}),
    (200, {"status": "Failed", "error": 7}, "Failed", {"status": "Failed", "error": 7},
     {"code": "OperationFailed"}),
])
def test_post_200_at_once(status, body, expected, operation, error):
    ts, records = after(post_state(), answer(status, body))
    outcome = done(ts)
    assert outcome.status == expected == ts.last_status
    assert outcome.operation == operation
    if error is None:
        assert outcome.error is None
    else:
        assert {k: outcome.error[k] for k in error} == error
    assert outcome.arm_requests == ts.arm_requests == 1
    assert outcome.completed_at == T0
    assert records == []  # the step records the outcome when it reports it


def test_post_200_of_a_database_says_what_was_flushed_with_it():
    outcome = done(after(post_state(DATABASE, (db_id("us"),)), answer(200))[0])
    assert (outcome.status, outcome.linked) == ("Succeeded", (db_id("us"),))


def test_post_200_still_running_is_followed_when_it_names_a_url():
    ts, _ = after(post_state(), answer(200, {"status": "InProgress"}, both()))
    assert (ts.phase, ts.poll_url) == ("poll", OP_URL)


@pytest.mark.parametrize("status", [200, 201])
def test_post_200_still_running_without_a_url_is_not_a_success(status):
    outcome = done(after(post_state(), answer(status, {"status": "InProgress"}))[0])
    assert (outcome.status, outcome.error["code"]) == ("Failed", "NoOperationUrl")


# --- the POST answered 202 ----------------------------------------------------------------------

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
    ts, records = after(post_state(), answer(202, b"", headers))
    assert (ts.phase, ts.poll_kind, ts.poll_url) == ("poll", kind, url)
    assert ts.due == at(GAP)  # the first status read a second later without Retry-After
    assert (ts.accepted_at, ts.last_status, ts.arm_requests, ts.failures) == (
        T0, "Accepted", 1, 0)
    assert records == [RecordTarget(TARGET.key, "accepted", {
        "pollUrl": url, "pollKind": kind, "acceptedAt": "2030-01-01T12:00:00.000000Z",
        "linked": [], "armRequests": 1}, expiry(DEADLINE))]


def test_managed_redis_202_follows_operations_status():
    headers = {"Azure-AsyncOperation": ENTERPRISE_STATUS, "Location": ENTERPRISE_LOCATION}
    ts, records = after(post_state(DATABASE, (db_id("us"),)),
                        answer(202, {"StatusCode": 202}, headers, DATABASE.flush_url(
                            ENDPOINT, "2025-07-01")))
    assert (ts.poll_kind, ts.poll_url) == ("azure-asyncoperation", ENTERPRISE_STATUS)
    assert records[0].data["linked"] == [db_id("us")]
    # its status reads answer 200 while running (no move on a 200), then 200 Succeeded
    body = {"id": "/x/operationsStatus/op9", "name": "op9", "status": "InProgress",
            "startTime": "2030-01-01T12:00:00Z"}
    ts, _ = after(ts, answer(200, body, {"Location": "https://evil.example/x"},
                             ENTERPRISE_STATUS), at(1))
    assert (ts.phase, ts.poll_url, ts.last_status) == ("poll", ENTERPRISE_STATUS, "InProgress")
    ts, _ = after(ts, answer(200, {**body, "status": "Succeeded",
                                   "endTime": "2030-01-01T12:00:02Z"}, {}, ENTERPRISE_STATUS),
                  at(2))
    outcome = done(ts)
    assert (outcome.status, outcome.linked, outcome.arm_requests) == (
        "Succeeded", (db_id("us"),), 3)
    assert outcome.operation["endTime"] == "2030-01-01T12:00:02Z"


@pytest.mark.parametrize("headers", [{}, {"Location": ""}, {"Location": "  "},
                                     {"Retry-After": "5"}])
def test_post_202_without_operation_url_fails(headers):
    outcome = done(after(post_state(DATABASE, (db_id("us"),)), answer(202, b"", headers))[0])
    assert (outcome.status, outcome.error["code"]) == ("Failed", "NoOperationUrl")
    assert outcome.linked == (db_id("us"),)  # ARM took it: the group may have been flushed


@pytest.mark.parametrize("url", [
    "https://evil.example/ops/1?sig=SIGNATURE",
    "http://management.azure.com/ops/1?t=SECRETT0KEN",
    "https://management.azure.com:8443/ops/1",
    "https://user:hunter2@management.azure.com/ops/1",
    "https://[::1/ops/1?s=SIGNATURE",
    "//evil.example/ops/1?s=SIGNATURE",
])
def test_post_202_with_untrusted_operation_url_fails(url):
    ts, records = after(post_state(), answer(202, b"", both(url)))
    outcome = done(ts)
    assert (outcome.status, outcome.error["code"]) == ("Failed", "UntrustedOperationUrl")
    assert not any(secret in json.dumps(outcome.error) for secret in SECRETS)
    assert records == []


@pytest.mark.parametrize("headers, wait", [
    (both(**{"Retry-After": "10"}), 10.0),
    (both(**{"retry-after-ms": "500"}), GAP),  # never sooner than our own gap
    (both(**{"Retry-After": "Tue, 01 Jan 2030 12:01:00 GMT"}), 60.0),
    (both(**{"Retry-After": "99999999999"}), cadence.MAX_WAIT),  # capped
])
def test_post_202_honours_retry_after(headers, wait):
    assert wait_of(after(post_state(), answer(202, b"", headers))[0]) == wait


def test_post_202_retry_after_past_the_deadline_polls_at_the_deadline():
    ts, _ = after(post_state(), answer(202, b"", both(**{"Retry-After": "31"})), deadline=at(30))
    assert (ts.phase, ts.due) == ("poll", at(30))  # a last look: ARM did take it


# --- the POST failed ----------------------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_post_permanent_error_fails_with_arms_error(status):
    body = ARM_ERRORS[str(status)]
    ts, records = after(post_state(), answer(status, body))
    outcome = done(ts)
    assert outcome.status == "Failed"
    assert outcome.error == {**body["error"], "httpStatus": status}
    assert outcome.arm_requests == 1 and outcome.linked == ()  # nothing was accepted
    assert records == []


def test_post_400_keeps_target_details_and_additional_info():
    outcome = done(after(post_state(), answer(400, ARM_ERRORS["400"]))[0])
    assert outcome.error["target"] == "flush"
    assert outcome.error["details"] == [{"code": "BadArgument",
                                         "message": "api-version is not supported"}]
    assert outcome.error["additionalInfo"] == [{"type": "PolicyViolation",
                                                "info": {"policy": "p1"}}]


@pytest.mark.parametrize("status, body, code", [
    (403, b"<html>Forbidden</html>", "Http403"), (404, b"", "Http404"),
    (405, {"error": {"code": "MethodNotAllowed", "message": "no"}}, "MethodNotAllowed"),
    (301, b"", "Http301"),
])
def test_post_other_errors_fail_with_a_code(status, body, code):
    outcome = done(after(post_state(), answer(status, body))[0])
    assert (outcome.status, outcome.error["code"], outcome.error["httpStatus"]) == (
        "Failed", code, status)


TRANSIENT_POSTS = [
    (answer(408, b""), None), (answer(409, ARM_ERRORS["409"]), None),
    (answer(429, ARM_ERRORS["429"], {"Retry-After": "17"}), 17.0),
    (answer(429, ARM_ERRORS["429"], {"x-ms-retry-after-ms": "90000"}), 90.0),
    (answer(500, ARM_ERRORS["500"]), None), (answer(503, b"", {"Retry-After": "1"}), 1.0),
    (ArmFailure("ConnectionError", "POST failed: ConnectionError", sent=False), None),
    (ArmFailure("TokenUnavailable", "no token", retry_after=40.0, sent=False), 40.0),
]
# no answer of ARM's own to a POST that went out: ARM may have taken it
IN_DOUBT_POSTS = [answer(502, b"<html>bad gateway</html>"), answer(504, b""),
                  ArmFailure("ConnectionError", "POST failed: ConnectionError"),
                  ArmFailure("Timeout", "POST timed out")]


@pytest.mark.parametrize("result, ra", TRANSIENT_POSTS)
def test_post_transient_error_schedules_a_retry(result, ra):
    ts, records = after(post_state(), result)
    backoff = cadence.retry_delay(1, f"{TARGET.key}:{int(result_sent(result))}")
    assert wait_of(ts) == pytest.approx(max(backoff, ra or 0.0), abs=1e-5)
    assert wait_of(ts) >= (ra or 0.0)
    # ARM refused it for now: the row says so, and the retry claims the row again (a
    # redelivery of this request may have POSTed in between)
    assert (ts.phase, ts.failures, ts.arm_requests) == ("claim", 1, int(result_sent(result)))
    assert records == [RecordTarget(TARGET.key, "retry", {}, expiry(DEADLINE))]


def result_sent(result: object) -> bool:
    return not isinstance(result, ArmFailure) or result.sent


@pytest.mark.parametrize("result", IN_DOUBT_POSTS)
def test_a_post_that_may_have_reached_arm_keeps_its_claim(result):
    """No `retry` record: the row stays `posting`, so the claim again finds it busy until the
    lease ends and then sends it once more, never a third time (ledger_rules.on_existing)."""
    ts, records = after(post_state(), result)
    assert (ts.phase, ts.failures) == ("claim", 1)
    assert records == []


def test_post_retries_back_off_then_poll():
    history = [answer(409, ARM_ERRORS["409"])] * 5 + [answer(202, b"", both())]
    states, records = replay(post_state(), history)
    assert [s.phase for s in states] == ["claim"] * 5 + ["poll"]
    moments = [T0] + [s.due for s in states]
    waits = [(b - a).total_seconds() for a, b in zip(moments, moments[1:], strict=False)]
    for failures, wait in enumerate(waits[:5], start=1):
        base = min(60.0, 2.0 ** failures)
        assert 0.75 * base <= wait <= 1.25 * base
    assert states[-1].failures == 0 and states[-1].arm_requests == 6
    assert [r.state for r in records] == ["retry"] * 5 + ["accepted"]


@pytest.mark.parametrize("result", [answer(409, ARM_ERRORS["409"], {"Retry-After": "31"}),
                                    answer(429, b"", {"Retry-After": "600"}),
                                    ArmFailure("Timeout", "t", retry_after=45.0, sent=False)])
def test_post_retry_that_cannot_happen_before_the_deadline_times_out(result):
    ts, records = after(post_state(DATABASE, (LINKED,)), result, deadline=at(30))
    outcome = done(ts)
    assert (outcome.status, outcome.error["code"]) == ("TimedOut", "TimedOut")
    assert "NotStarted" in outcome.error["message"]  # ARM answered, or nothing went out
    assert outcome.error["details"][0]["code"] in ("Conflict", "Http429", "Timeout")
    assert outcome.linked == ()  # ARM answered, or nothing went out: nothing was flushed
    assert records == []


@pytest.mark.parametrize("result", [
    answer(504, {"error": {"code": "GatewayTimeout", "message": "gw"}}, {"Retry-After": "45"}),
    ArmFailure("Timeout", "t", retry_after=45.0)])
def test_a_post_in_doubt_that_cannot_be_sent_again_before_the_deadline_keeps_its_share(
        result):
    """It may have run with the linked ids it carried: its outcome names them (so no other
    member of the request flushes them again) and says it may have run."""
    ts, records = after(post_state(DATABASE, (LINKED,)), result, deadline=at(30))
    outcome = done(ts)
    assert (outcome.status, outcome.error["code"]) == ("TimedOut", "TimedOut")
    assert outcome.error["message"] == ("the deadline passed while the flush request's "
                                        "answer was unknown: ARM may or may not have run it")
    assert outcome.error["details"][0]["code"] in ("GatewayTimeout", "Timeout")
    assert outcome.linked == (LINKED,) and outcome.arm_requests == 1
    assert records == []


def test_post_retries_end_in_timed_out_inside_the_deadline():
    states, _ = replay(post_state(), [answer(503, ARM_ERRORS["500"])] * 50, deadline=at(60))
    outcome = done(states[-1])
    assert outcome.status == "TimedOut"
    assert outcome.error["details"][0]["code"] == "InternalServerError"
    assert all(s.due < at(60) for s in states[:-1])


@pytest.mark.parametrize("retry_after", ["99999999999", "1e300", "1e308",
                                         "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_enormous_retry_after_parks_for_minutes_not_forever(retry_after):
    headers = {"Retry-After": retry_after}
    ts, _ = after(post_state(), answer(429, b"", headers))
    assert wait_of(ts) == cadence.MAX_WAIT
    ts, _ = after(polling(), running(**headers), at(1))
    assert wait_of(ts, at(1)) == cadence.MAX_WAIT
    ts, _ = after(polling(), answer(503, b"", headers, OP_URL), at(1))
    assert wait_of(ts, at(1)) == cadence.MAX_WAIT
    # and with less time left than that: the POST times out, the poll looks at the deadline
    assert done(after(post_state(), answer(429, b"", headers), deadline=at(60))[0]).status == \
        "TimedOut"
    ts, _ = after(polling(deadline=at(60)), running(**headers), at(1), at(60))
    assert ts.due == at(60)


def test_very_long_outage_keeps_backing_off():
    ts = dataclasses.replace(polling(deadline=at(86400)), failures=5000)
    ts, _ = after(ts, answer(503, b"", {}, OP_URL), at(1), at(86400))
    assert 45.0 <= wait_of(ts, at(1)) <= 75.0


def test_failure_before_anything_was_sent_is_not_counted_as_an_arm_request():
    ts, _ = after(post_state(), ArmFailure("TokenUnavailable", "t", sent=False))
    assert ts.arm_requests == 0
    ts, _ = after(post_state(), ArmFailure("Timeout", "t"))
    assert ts.arm_requests == 1


def test_poll_refused_by_the_client_as_untrusted_fails():
    ts = dataclasses.replace(polling(), poll_url="https://evil.example/ops?s=SIGNATURE")
    outcome = done(after(ts, ArmFailure(UNTRUSTED_URL, "refused", sent=False), at(1))[0])
    assert (outcome.status, outcome.error["code"]) == ("Failed", "UntrustedOperationUrl")
    assert "SIGNATURE" not in json.dumps(outcome.error)
    assert outcome.arm_requests == 1  # the POST only


# --- the pacer's deferral ------------------------------------------------------------------------

@pytest.mark.parametrize("phase, wait, expected", [
    ("post", 5.0, at(5)), ("read", 0.5, at(0.5)), ("poll", 0.5, at(0.5)),
    ("poll", 4000.0, at(cadence.MAX_WAIT)),  # capped like any wait
])
def test_deferred_comes_back_with_its_slot(phase, wait, expected):
    ts = dataclasses.replace(polling(), phase=phase, arm_requests=3)
    ts, records = after(ts, Deferred(wait))
    assert (ts.phase, ts.due, ts.paced, ts.arm_requests) == (phase, expected, True, 3)
    assert records == []  # no request was made


@pytest.mark.parametrize("phase", ["post", "read"])
def test_deferred_past_the_deadline_times_out_without_a_call(phase):
    ts = dataclasses.replace(post_state(), phase=phase)
    outcome = done(after(ts, Deferred(31.0), deadline=at(30))[0])
    assert (outcome.status, outcome.error["code"]) == ("TimedOut", "TimedOut")
    assert "NotStarted" in outcome.error["message"]


def test_deferred_poll_near_the_deadline_looks_at_the_deadline():
    ts, _ = after(polling(deadline=at(30)), Deferred(31.0), deadline=at(30))
    assert (ts.phase, ts.due) == ("poll", at(30))
    outcome = done(after(polling(deadline=at(30)), Deferred(1.0), at(30), at(30))[0])
    assert outcome.status == "TimedOut"


@pytest.mark.parametrize("phase", ["post", "poll"])
@pytest.mark.parametrize("wait", [float("inf"), 1e300])
def test_deferred_without_end_does_not_raise(phase, wait):
    ts = dataclasses.replace(polling(), phase=phase)
    ts, _ = after(ts, Deferred(wait))
    assert ts.phase == "done" or ts.due <= at(cadence.MAX_WAIT)


def test_paced_target_clears_its_slot_after_the_call():
    ts, _ = after(post_state(), Deferred(5.0))
    assert ts.paced
    ts, _ = after(ts, answer(202, b"", both()), at(5))
    assert ts.paced is False and ts.phase == "poll"


# --- status polls --------------------------------------------------------------------------------

def test_poll_running_schedules_the_next_read():
    ts, records = after(polling(), running({"status": "InProgress", "percentComplete": 30}),
                        at(1))
    assert wait_of(ts, at(1)) == GAP
    assert (ts.last_status, ts.polls, ts.arm_requests) == ("InProgress", 1, 2)
    assert ts.last_operation == {"status": "InProgress", "percentComplete": 30}
    assert records == []


@pytest.mark.parametrize("budget, gap", [(cadence.ReadBudget(240, 100), 5.0),
                                         (cadence.ReadBudget(5, 40), 4.0),
                                         (cadence.ReadBudget(None, 1), 1.0)])
def test_poll_gap_follows_the_read_budget(budget, gap):
    ts, _ = after(polling(), running(), at(1), budget=budget)
    assert wait_of(ts, at(1)) == gap


@pytest.mark.parametrize("kind", ["azure-asyncoperation", "location"])
@pytest.mark.parametrize("status", ["Succeeded", "succeeded", "SUCCEEDED", "Failed", "FAILED",
                                    "Canceled", "canceled"])
def test_poll_terminal_status_completes(kind, status):
    body = {"id": "/ops/op-1", "name": "op-1", "status": status, "percentComplete": 100}
    if status.lower() == "failed":
        body["error"] = FAIL_ERROR
    outcome = done(after(polling(kind), answer(200, body, {}, OP_URL), at(1))[0])
    canonical = lro.terminal_status(status)
    assert outcome.status == canonical
    assert outcome.operation == body
    assert outcome.error == {"Succeeded": None, "Failed": FAIL_ERROR, "Canceled": {
        "code": "OperationCanceled",
        "message": "ARM reported the flush as Canceled without an error"}}[canonical]
    assert (outcome.arm_requests, outcome.accepted_at) == (2, T0)


def test_a_canceled_operation_keeps_arms_error_when_it_gave_one():
    error = {"code": "OperationCanceledByUser", "message": "canceled by a newer update"}
    for raw in (error, {"error": error}):
        body = {"status": "Canceled", "error": raw}
        outcome = done(after(polling(), answer(200, body, {}, OP_URL), at(1))[0])
        assert (outcome.status, outcome.error) == ("Canceled", error)


@pytest.mark.parametrize("status, body, expected", [
    (202, b"", "running"), (202, {"status": "InProgress"}, "running"),
    (202, {"status": "Succeeded"}, "Succeeded"),  # an object that says it is over
    (200, b"", "Succeeded"), (204, b"", "Succeeded"), (201, b"", "Succeeded"),
    (200, {"id": "/x"}, "Succeeded"), (200, {"status": "InProgress"}, "Succeeded"),
    (200, {"status": "Failed", "error": FAIL_ERROR}, "Failed"),
])
def test_location_poll_semantics(status, body, expected):
    ts, _ = after(polling("location"), answer(status, body, {}, OP_URL), at(1))
    if expected == "running":
        assert ts.phase == "poll" and ts.last_status == "InProgress"
    else:
        assert done(ts).status == expected


def test_poll_202_with_a_new_location_moves_the_poll():
    new = f"{ENDPOINT}/subscriptions/{SUB}/operationresults/op-2?api-version=1&t=x"
    ts, _ = after(polling(), running(Location=new), at(1))
    assert (ts.poll_kind, ts.poll_url) == ("location", new)
    ts, _ = after(polling(), running(**both(new)), at(1))
    assert (ts.poll_kind, ts.poll_url) == ("azure-asyncoperation", new)


def test_poll_202_with_the_same_headers_keeps_the_poll():
    before = polling()
    ts, _ = after(before, running(**both()), at(1))
    assert (ts.poll_kind, ts.poll_url) == (before.poll_kind, before.poll_url)


def test_poll_202_with_a_relative_new_location_is_resolved_against_the_status_url():
    ts, _ = after(polling("location"), running(Location="op-9?api-version=1"), at(1))
    assert ts.poll_url == (f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache/"
                           "locations/West%20US%202/operationresults/op-9?api-version=1")


@pytest.mark.parametrize("new", ["https://evil.example/ops/2?s=SIGNATURE",
                                 "http://management.azure.com/ops/2",
                                 "https://user:hunter2@management.azure.com/ops/2"])
def test_poll_202_moving_to_an_untrusted_url_fails(new):
    outcome = done(after(polling(), running(Location=new), at(1))[0])
    assert (outcome.status, outcome.error["code"]) == ("Failed", "UntrustedOperationUrl")
    assert not any(secret in json.dumps(outcome.error) for secret in SECRETS)


def test_poll_200_headers_do_not_move_anything():
    ts, _ = after(polling(), answer(200, {"status": "InProgress"},
                                    {"Location": "https://evil.example/x"}, OP_URL), at(1))
    assert ts.poll_url == OP_URL and ts.phase == "poll"


@pytest.mark.parametrize("headers, wait", [({"Retry-After": "12"}, 12.0),
                                           ({"retry-after-ms": "100"}, GAP),
                                           ({"Retry-After": "garbage"}, GAP)])
def test_poll_honours_retry_after(headers, wait):
    ts, _ = after(polling(), running(**headers), at(1))
    assert wait_of(ts, at(1)) == wait


BAD_POLLS = [
    (lambda: answer(400, ARM_ERRORS["400"], {}, OP_URL), "OperationStatusHttp400"),
    (lambda: answer(401, ARM_ERRORS["401"], {}, OP_URL), "OperationStatusHttp401"),
    (lambda: answer(403, ARM_ERRORS["403"], {}, OP_URL), "OperationStatusHttp403"),
    (lambda: answer(404, ARM_ERRORS["404"], {}, OP_URL), "OperationStatusHttp404"),
    (lambda: answer(200, b"", {}, OP_URL), "OperationStatusEmptyBody"),
    (lambda: answer(200, b"<html>oops", {}, OP_URL), "OperationStatusInvalidJson"),
    (lambda: answer(200, b"[1]", {}, OP_URL), "OperationStatusInvalidJson"),
    (lambda: answer(200, b"[" * 100_000, {}, OP_URL), "OperationStatusInvalidJson"),
    (lambda: answer(404, b"[" * 100_000, {}, OP_URL), "OperationStatusHttp404"),
    (lambda: answer(200, {"id": "/x"}, {}, OP_URL), "OperationStatusMissingStatus"),
    (lambda: answer(202, {"status": None}, {}, OP_URL), "OperationStatusMissingStatus"),
    (lambda: answer(200, b'{"status": "Failed", "status": "Succeeded"}', {}, OP_URL),
     "OperationStatusAmbiguous"),
]


@pytest.mark.parametrize("make, code", BAD_POLLS)
def test_unusable_status_answers_are_retried_three_times_then_fail(make, code):
    ts, _ = after(polling(), running(), at(1))  # a last known operation
    states, _ = replay(ts, [make() for _ in range(10)], ts.due)
    assert len(states) == MAX_BAD + 1 == 4
    assert all(s.phase == "poll" for s in states[:3])
    assert [s.bad_polls for s in states[:3]] == [1, 2, 3]
    outcome = done(states[-1])
    assert (outcome.status, outcome.error["code"]) == ("Failed", code)
    assert outcome.operation == {"status": "InProgress"}  # the last known operation
    if make().body.startswith(b'{"error"'):
        assert outcome.error["details"][0]["code"] == ARM_ERRORS[code[-3:]]["error"]["code"]
    elif code.startswith("OperationStatusHttp"):
        assert outcome.error["details"][0]["code"] == code.replace("OperationStatus", "")


def test_a_good_answer_resets_the_unusable_answer_count():
    bad = answer(404, ARM_ERRORS["404"], {}, OP_URL)
    history = [bad, bad, bad, running(), bad, bad, bad,
               answer(200, {"status": "Succeeded"}, {}, OP_URL)]
    states, _ = replay(polling(), history, at(1))
    assert len(states) == len(history)
    assert done(states[-1]).status == "Succeeded"


@pytest.mark.parametrize("result", [answer(409, ARM_ERRORS["409"], {}, OP_URL),
                                    answer(500, b"", {}, OP_URL), answer(408, b"", {}, OP_URL),
                                    answer(429, b"", {"Retry-After": "3"}, OP_URL),
                                    ArmFailure("ConnectionError", "c")])
def test_transient_poll_errors_are_retried_until_the_deadline(result):
    ts, _ = after(polling(deadline=at(300)), running({"status": "Flushing",
                                                      "percentComplete": 10}), at(1), at(300))
    states, records = replay(ts, [result] * 500, ts.due, at(300))
    assert len(states) > 4  # not the 3-strikes rule of unusable answers
    outcome = done(states[-1])
    assert all(s.due <= at(300) and s.phase == "poll" for s in states[:-1])
    assert outcome.status == "TimedOut"
    assert "Flushing" in outcome.error["message"]  # the last known status
    assert outcome.operation == {"status": "Flushing", "percentComplete": 10}
    assert records == []  # nothing to record while polling


def test_deadline_while_running_times_out_with_the_last_status():
    outcome = done(after(polling(deadline=at(30)), running({"status": "Flushing"}), at(30),
                         at(30))[0])
    assert outcome.status == "TimedOut"
    assert "Flushing" in outcome.error["message"]
    assert outcome.operation == {"status": "Flushing"}


def test_terminal_answer_at_the_deadline_still_counts():
    outcome = done(after(polling(deadline=at(30)), answer(200, {"status": "Succeeded"}, {},
                                                          OP_URL), at(30), at(30))[0])
    assert outcome.status == "Succeeded"


def test_poll_schedule_never_passes_the_deadline():
    states, _ = replay(polling(deadline=at(120)), [running()] * 500, at(1), at(120))
    moments = [at(1)] + [s.due for s in states[:-1]]
    gaps = [(b - a).total_seconds() for a, b in zip(moments, moments[1:], strict=False)]
    assert all(s.due <= at(120) for s in states[:-1])
    assert all(GAP <= g or b == at(120) for g, b in zip(gaps, moments[1:], strict=True))
    assert done(states[-1]).status == "TimedOut"
    assert 100 <= len(states) <= 121  # about one read a second, no more


def test_timed_out_keeps_what_is_known():
    ts, _ = after(polling(), running({"status": "Flushing", "percentComplete": 70}), at(1))
    outcome = done(timed_out(ts, cx(at(1800))))
    assert (outcome.status, outcome.error["code"]) == ("TimedOut", "TimedOut")
    assert "Flushing" in outcome.error["message"]
    assert outcome.operation == {"status": "Flushing", "percentComplete": 70}
    assert outcome.accepted_at == T0 and outcome.completed_at == at(1800)
    assert "NotStarted" in done(timed_out(post_state(), cx())).error["message"]


@pytest.mark.parametrize("now, post_calls", [(at(0), True), (at(1799), True), (at(1800), False),
                                             (at(5000), False)])
def test_past_the_deadline_no_post_starts_but_a_running_poll_gets_its_last_look(now, post_calls):
    from redisflush.core.decision import Config, View
    from redisflush.core.step import step
    parsed = parse_request(Delivery(json.dumps({"resourceIds": [rid("a"), rid("b")]}).encode(),
                                    "req-1", enqueued_at=T0),
                           default_timeout=1800, allowed_scopes=(), max_targets=50, now=T0)
    assert isinstance(parsed, FlushRequest)
    state = initial(parsed, T0)
    a, b = state.targets
    state = dataclasses.replace(state, phase="run", targets=(
        dataclasses.replace(a, phase="post"),
        dataclasses.replace(b, phase="poll", poll_url=OP_URL, poll_kind="location",
                            accepted_at=T0)))
    config = Config(ENDPOINT, "2023-08-01", "2025-07-01", 50, (), "redis-flush-polls")
    state, commands = step(state, {}, View(now), config)
    calls = {c.ref: c for c in commands if isinstance(c, CallArm)}
    assert "t1:poll" in calls  # ARM took it: it is read even at the deadline
    assert ("t0:post" in calls) is post_calls
    if not post_calls:
        outcome = done(state.targets[0])
        assert outcome.status == "TimedOut" and "NotStarted" in outcome.error["message"]
        assert outcome.arm_requests == 0


# --- several members of one geo-replication group in one request ----------------------------

def _drive_group(post_status: dict[str, int], read_first: dict[str, ArmAnswer]) -> list[dict]:
    """Two targets a and b of one group {a, b, c} through `step`, as the shell drives it;
    the POST bodies ARM accepted, with the database they flushed."""
    from redisflush.core.commands import Opened, OpenRequest, Schedule
    from redisflush.core.decision import Config, View
    from redisflush.core.step import begin, step
    config = Config(ENDPOINT, "2023-08-01", "2025-07-01", 50, (), "redis-flush-polls")
    group = database_body(db_id("a"), db_id("b"), db_id("c"))
    reads: dict[str, int] = {}
    parsed = parse_request(Delivery(json.dumps({"resourceIds": [db_id("a"), db_id("b")]})
                                    .encode(), "req-g", enqueued_at=T0),
                           default_timeout=1800, allowed_scopes=(), max_targets=50, now=T0)
    assert isinstance(parsed, FlushRequest)
    state, now, accepted = begin(parsed, T0), T0, []

    def arm(call: CallArm) -> ArmAnswer:
        name = call.url.split("/redisEnterprise/")[1].split("/")[0]
        if call.method == "POST":
            status = post_status.get(name, 200)
            if 200 <= status < 300:
                accepted.append({"flushed": name, **json.loads(call.body)})
            return answer(status, ARM_ERRORS.get(str(status), b""), {}, call.url)
        reads[name] = reads.get(name, 0) + 1
        if reads[name] == 1 and name in read_first:
            return read_first[name]
        return answer(200, group, {}, call.url)

    for _ in range(100):
        results: dict = {}
        for _ in range(20):
            state, commands = step(state, results, View(now), config)
            results = {}
            for c in commands:
                if isinstance(c, OpenRequest):
                    results[c.ref] = Opened("new")
                elif isinstance(c, ClaimTarget):
                    results[c.ref] = Claimed("post")
                elif isinstance(c, CallArm):
                    results[c.ref] = arm(c)
            if not results:
                break
        if state.phase == "done":
            return accepted
        scheduled = [c for c in commands if isinstance(c, Schedule)][-1]
        now, state = scheduled.at, RunState.from_json(scheduled.message.body)
    raise AssertionError("never ended")


def _flushes_of(database: str, accepted: list[dict]) -> int:
    return sum(1 for body in accepted for i in body["ids"] if i.lower() == database.lower())


def test_group_members_in_one_request_flush_the_rest_of_the_group_once():
    accepted = _drive_group({}, {})
    assert sorted(body["flushed"] for body in accepted) == ["a", "b"]
    assert _flushes_of(db_id("c"), accepted) == 1
    assert _flushes_of(db_id("a"), accepted) == _flushes_of(db_id("b"), accepted) == 0


def test_a_linked_database_is_flushed_even_when_the_target_that_would_flush_it_fails():
    accepted = _drive_group({"a": 404}, {})
    assert [body["flushed"] for body in accepted] == ["b"]
    assert _flushes_of(db_id("c"), accepted) == 1


def test_a_linked_database_is_flushed_once_when_the_earlier_target_reads_its_group_late():
    slow = answer(429, b"", {"Retry-After": "10"})
    accepted = _drive_group({}, {"a": slow})
    assert sorted(body["flushed"] for body in accepted) == ["a", "b"]
    assert _flushes_of(db_id("c"), accepted) == 1


# --- synthetic histories -------------------------------------------------------------------------

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
    (first, second, last), records = replay(post_state(), history)
    assert (first.due, first.poll_kind, first.poll_url) == (at(1), "azure-asyncoperation", url)
    assert "West%20US%202" in first.poll_url
    assert (second.due, second.last_status) == (at(2), "InProgress")
    outcome = done(last)
    assert outcome.status == "Succeeded" and outcome.error is None
    assert outcome.operation == json.loads(history[2].body)
    assert (outcome.arm_requests, outcome.accepted_at, outcome.completed_at) == (3, T0, at(2))
    assert [r.state for r in records if isinstance(r, RecordTarget)] == ["accepted"]
    # the success teaches the duration estimate: running at 1 s, ended by 2 s
    assert [(r.kind, r.lo, r.hi) for r in records if isinstance(r, Learn)] == \
        [("redis", 1.0, 2.0)]


def test_recorded_shape_after_a_busy_cache_and_a_throttled_poll():
    url, (post202, poll202, poll200) = recorded_history()
    history = [answer(409, ARM_ERRORS["409"]), answer(409, ARM_ERRORS["409"]), post202,
               poll202, answer(429, b"", {"Retry-After": "20"}, url), poll202, poll200]
    states, records = replay(post_state(), history)
    assert (states[4].due - states[3].due).total_seconds() >= 20
    outcome = done(states[-1])
    assert (outcome.status, outcome.arm_requests) == ("Succeeded", 7)
    assert [r.state for r in records if isinstance(r, RecordTarget)] == \
        ["retry", "retry", "accepted"]
    learned = [r for r in records if isinstance(r, Learn)]
    assert len(learned) == 1 and learned[0].lo is not None and learned[0].lo < learned[0].hi


def test_location_only_history():
    history = [answer(202, b"", {"Location": OP_URL, "Retry-After": "5"}),
               answer(202, b"", {"Location": OP_URL}, OP_URL),
               answer(202, b"", {"Location": OP_URL}, OP_URL),
               answer(204, b"", {}, OP_URL)]
    states, _ = replay(post_state(), history)
    assert [s.due for s in states[:-1]] == [at(5), at(6), at(7)]
    assert done(states[-1]).status == "Succeeded"


# --- redaction -----------------------------------------------------------------------------------

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
def test_no_signed_parameter_or_secret_reaches_an_outcome(history):
    states, _ = replay(post_state(), history, deadline=at(120))
    outcome = done(states[-1])
    text = json.dumps(outcome.to_json())
    assert not any(secret in text for secret in SECRETS), text


# --- invariants over any history ---------------------------------------------------------------

ANSWER_HEADERS = st.sampled_from([
    {}, both(), both(SIGNED), {"Location": OP_URL}, {"Azure-AsyncOperation": OP_URL},
    {"Location": "https://evil.example/x"}, {"Retry-After": "7"}, {"Retry-After": "inf"},
    {"Retry-After": "9999999999"}, {"retry-after-ms": "nan"},
    {**both(), "Retry-After": "Tue, 01 Jan 2030 12:05:00 GMT"}])
ANSWER_BODIES = st.sampled_from([
    b"", b"{}", b"<html>", {"status": "InProgress"}, {"status": "succeeded"},
    {"status": "Failed", "error": {"code": "E", "message": "m"}}, {"status": "Canceled"},
    {"status": "Running", "percentComplete": 50}, ARM_ERRORS["409"], ARM_ERRORS["404"],
    {"StatusCode": 202}])
ARM_RESULTS = st.one_of(
    st.builds(answer, st.sampled_from([200, 201, 202, 204, 400, 401, 403, 404, 408, 409, 429,
                                       500, 503]), ANSWER_BODIES, ANSWER_HEADERS),
    st.builds(ArmFailure, st.sampled_from(["Timeout", "ConnectionError", UNTRUSTED_URL]),
              st.just("m"), st.none() | st.floats(min_value=0, max_value=1e6), st.booleans()),
    st.builds(Deferred, st.floats(min_value=0, max_value=600)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ARM_RESULTS, min_size=1, max_size=40), st.integers(30, 3600))
def test_any_history_is_ordered_bounded_and_ends_soundly(history, timeout):
    deadline = at(timeout)
    ts, now = post_state(), T0
    for result in history:
        ts = claimed(ts, now, deadline)
        context = cx(now, deadline)
        before = ts
        ts = on_answer(ts, result, context)
        assert ts.phase in PHASES
        assert ts.arm_requests >= before.arm_requests
        for record in context.records:
            if isinstance(record, Learn):  # a success teaches a sound interval
                assert ts.outcome is not None and ts.outcome.status == "Succeeded"
                assert 0 <= record.hi and (record.lo is None or 0 <= record.lo <= record.hi)
                continue
            assert record.state in ("retry", "accepted") and record.key == TARGET.key
        if ts.phase == "done":
            break
        assert now <= ts.due <= deadline
        assert now < deadline  # the deadline always wins: an answer at it ends the target
        now = ts.due
    if ts.phase == "done":
        outcome = ts.outcome
        assert outcome is not None and outcome.status in STATUSES
        assert outcome.status != "Rejected"
        assert outcome.status != "Failed" or outcome.error and outcome.error.get("code")
        assert outcome.status != "TimedOut" or outcome.error["code"] == "TimedOut"
        assert outcome.completed_at <= max(deadline, now)
        assert size(outcome.error) <= ERROR_BYTES and size(outcome.operation) <= OPERATION_BYTES


# --- answers.error_detail ----------------------------------------------------------------------

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

def test_a_huge_arm_error_is_bounded_so_every_message_fits():
    details = [{"code": "E", "message": "x" * 100_000, "details": [{"d": [[[[[[1]]]]]]}]}] * 500
    body = {"status": "Failed", "percentComplete": float("nan"),
            "error": {"code": "Big", "message": "m", "details": details}}
    outcome = done(after(polling(), answer(200, json.dumps(body).encode(), {}, OP_URL),
                         at(1))[0])
    assert size(outcome.error) <= ERROR_BYTES and size(outcome.operation) <= OPERATION_BYTES
    assert outcome.error["code"] == "Big"
    assert outcome.operation["percentComplete"] is None


def test_a_huge_post_error_body_is_bounded():
    body = {"error": {"code": "Huge", "message": "y" * 50_000,
                      "additionalInfo": [{"type": "t", "info": {"k": "v" * 9000}}] * 100}}
    outcome = done(after(post_state(), answer(400, body))[0])
    assert outcome.error["code"] == "Huge" and size(outcome.error) <= ERROR_BYTES


def test_a_huge_running_operation_is_bounded_in_the_state():
    body = {"status": "InProgress", "percentComplete": 5, "error": {"message": "e" * 300_000},
            "startTime": "s" * 100_000}
    ts, _ = after(polling(), running(body), at(1))
    assert size(ts.last_operation) <= OPERATION_BYTES
    assert ts.last_operation["percentComplete"] == 5


# --- resolve: a selector's list pages ----------------------------------------------------------

LIST_BASE = f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache"
REDIS_LIST = f"{LIST_BASE}/redis?api-version=2023-08-01"
ENTERPRISE_LIST = f"{LIST_BASE}/redisEnterprise?api-version=2025-07-01"


def selector_request(**selector: Any) -> FlushRequest:
    body = {"selector": {"subscriptionId": SUB, "tags": {"app": "shop"}, **selector}}
    parsed = parse_request(Delivery(json.dumps(body).encode(), "req-1", enqueued_at=T0),
                           default_timeout=1800, allowed_scopes=(), max_targets=50, now=T0)
    assert isinstance(parsed, FlushRequest)
    return parsed


def resolving(**selector: Any) -> RunState:
    state = initial(selector_request(**selector), T0)
    calls = resolve.first_calls(state.selector, ENDPOINT, "2023-08-01", "2025-07-01")
    return dataclasses.replace(state, phase="resolve", pending_lists=calls, due=T0)


def listed(state: RunState, result, now: dt.datetime = T0) -> RunState:
    return resolve.on_list_answer(state, result, now, ENDPOINT, "2025-07-01", 50)


def page(*items: dict, next_link: str | None = None) -> ArmAnswer:
    doc: dict = {"value": list(items)}
    if next_link is not None:
        doc["nextLink"] = next_link
    return answer(200, doc, {}, REDIS_LIST)


def tagged(resource_id: str, **tags: str) -> dict:
    return {"id": resource_id, "tags": tags or {"app": "shop"}}


def test_first_calls_per_kind_and_api_version():
    assert [(c.kind, c.url, c.of) for c in resolving().pending_lists] == [
        ("redis", REDIS_LIST, None), ("redisEnterprise", ENTERPRISE_LIST, None)]
    state = resolving(resourceGroup="grupo-ñ", kinds=["redisEnterprise"])
    assert [c.url for c in state.pending_lists] == [
        f"{ENDPOINT}/subscriptions/{SUB}/resourceGroups/grupo-%C3%B1/providers/Microsoft.Cache/"
        "redisEnterprise?api-version=2025-07-01"]


def test_list_call_reads_the_first_pending_page():
    state = dataclasses.replace(resolving(), pages=3)
    assert resolve.list_call(state, 7) == CallArm("list", "GET", REDIS_LIST, SUB,
                                                  "req-1:list.3.7",
                                                  max_inline_wait=cadence.MAX_INLINE_WAIT,
                                                  large=True)


def test_a_page_adds_what_matched_and_the_next_link_comes_first():
    nxt = f"{LIST_BASE}/redis?api-version=2023-08-01&$skiptoken=2"
    state = listed(resolving(), page(tagged(rid("a")), tagged(rid("b"), app="blog"),
                                     tagged(rid("c", sub=SUB2)), next_link=nxt), at(2))
    assert state.found == (rid("a"),)
    assert state.ignored == 1 and state.pages == 1 and state.arm_requests == 1
    assert [c.url for c in state.pending_lists] == [nxt, ENTERPRISE_LIST]
    assert state.due == at(2) and state.list_failures == 0
    state = listed(state, page(tagged(rid("a")), tagged(rid("d"))))  # a repeat is kept once
    assert state.found == (rid("a"), rid("d"))
    assert [c.url for c in state.pending_lists] == [ENTERPRISE_LIST]


def test_clusters_then_their_databases():
    state = listed(resolving(), page())  # the classic list: nothing
    nxt = f"{LIST_BASE}/redisEnterprise?api-version=2025-07-01&$skiptoken=2"
    state = listed(state, answer(200, {"value": [tagged(cluster_id("k1")),
                                                 tagged(cluster_id("k2"), app="x")],
                                       "nextLink": nxt}, {}, ENTERPRISE_LIST))
    assert state.found == ()
    databases = f"{ENDPOINT}{cluster_id('k1')}/databases?api-version=2025-07-01"
    assert [(c.kind, c.url, c.of) for c in state.pending_lists] == [
        ("redisEnterprise", nxt, None), ("redisEnterprise", databases, cluster_id("k1"))]
    state = listed(state, answer(200, {"value": [tagged(cluster_id("k3"))]}, {}, nxt))
    assert [c.of for c in state.pending_lists] == [cluster_id("k1"), cluster_id("k3")]
    state = listed(state, answer(200, {"value": [{"id": db_id("k1")}, {"id": db_id("k1", "b")},
                                                 {"id": db_id("k9")}]}, {}, databases))
    assert state.found == (db_id("k1"), db_id("k1", "b"))
    assert state.ignored == 1  # the other cluster's database (a tag mismatch is no error)


@pytest.mark.parametrize("link", ["/subscriptions/x/providers/Microsoft.Cache/redis?$skiptoken=2",
                                  "?api-version=2023-08-01&$skiptoken=2"])
def test_a_relative_next_link_is_resolved_against_the_page(link):
    state = listed(resolving(), page(next_link=link))
    assert state.pending_lists[0].url.startswith(ENDPOINT + "/")
    assert "$skiptoken=2" in state.pending_lists[0].url


@pytest.mark.parametrize("link, expected", [
    # ARM refuses a request without api-version (MissingApiVersionParameter): a nextLink
    # without one is read with the listing's own, as Azure's SDKs do
    (f"{LIST_BASE}/redis?$skiptoken=2", f"{LIST_BASE}/redis?$skiptoken=2&api-version=2023-08-01"),
    (f"{LIST_BASE}/redis/p2", f"{LIST_BASE}/redis/p2?api-version=2023-08-01"),
    (f"{LIST_BASE}/redis/p2?", f"{LIST_BASE}/redis/p2?api-version=2023-08-01"),
    (f"{LIST_BASE}/redis/p2#f", f"{LIST_BASE}/redis/p2?api-version=2023-08-01#f"),
    # one that has it is followed verbatim, whatever version it names
    (f"{LIST_BASE}/redis?API-Version=2024-11-01&$skiptoken=2",
     f"{LIST_BASE}/redis?API-Version=2024-11-01&$skiptoken=2"),
])
def test_a_next_link_without_api_version_gets_the_listings(link, expected):
    state = listed(resolving(), page(next_link=link))
    assert state.pending_lists[0].url == expected


def test_a_database_list_next_link_without_api_version_gets_the_enterprise_one():
    databases = f"{ENDPOINT}{cluster_id('k1')}/databases?api-version=2025-07-01"
    state = dataclasses.replace(resolving(), pending_lists=(
        ListCall("redisEnterprise", databases, cluster_id("k1")),))
    link = f"{ENDPOINT}{cluster_id('k1')}/databases?$skiptoken=x"
    state = listed(state, answer(200, {"value": [], "nextLink": link}, {}, databases))
    assert [(c.url, c.of) for c in state.pending_lists] == [
        (link + "&api-version=2025-07-01", cluster_id("k1"))]


@pytest.mark.parametrize("link", ["https://evil.example/list?$skiptoken=SIGNATURE",
                                  "http://management.azure.com/list",
                                  "https://user:hunter2@management.azure.com/list"])
def test_an_untrusted_next_link_ends_the_resolve(link):
    with pytest.raises(resolve.ResolveFailed) as info:
        listed(resolving(), page(tagged(rid("a")), next_link=link))
    assert info.value.code == "UntrustedNextLink"
    assert not any(secret in info.value.message for secret in SECRETS)


def test_a_page_linking_to_itself_ends_the_resolve():
    with pytest.raises(resolve.ResolveFailed) as info:
        listed(resolving(), page(next_link=REDIS_LIST))
    assert info.value.code == "ListLoop"


def test_too_many_pages_end_the_resolve():
    state = dataclasses.replace(resolving(), pages=resolve.MAX_PAGES - 1)
    with pytest.raises(resolve.ResolveFailed) as info:
        listed(state, page(next_link=REDIS_LIST + "&$skiptoken=2"))
    assert info.value.code == "ListTooLong"
    last = dataclasses.replace(resolving(), pages=resolve.MAX_PAGES - 1,
                               pending_lists=resolving().pending_lists[:1])
    assert listed(last, page()).pending_lists == ()  # the last page itself is fine


@pytest.mark.parametrize("body", [b"<html>", b"[]", b'{"value": 5}', b""])
def test_an_unreadable_page_ends_the_resolve(body):
    with pytest.raises(resolve.ResolveFailed) as info:
        listed(resolving(), answer(200, body, {}, REDIS_LIST))
    assert info.value.code == "ListInvalidJson"


@pytest.mark.parametrize("status, code", [(403, "AuthorizationFailed"), (404, "ResourceNotFound"),
                                          (400, "InvalidRequestBody")])
def test_a_permanent_list_error_ends_the_resolve_with_arms_code(status, code):
    with pytest.raises(resolve.ResolveFailed) as info:
        listed(resolving(), answer(status, ARM_ERRORS[str(status)], {}, REDIS_LIST))
    assert info.value.code == code


def test_transient_list_errors_are_retried_then_end_the_resolve():
    state = resolving()
    for n in range(1, resolve.MAX_LIST_FAILURES + 1):
        before = state
        state = listed(state, answer(429, b"", {"Retry-After": "9"}, REDIS_LIST), at(n * 100))
        assert state.list_failures == n and state.pending_lists == before.pending_lists
        assert (state.due - at(n * 100)).total_seconds() >= 9
    with pytest.raises(resolve.ResolveFailed) as info:
        listed(state, ArmFailure("Timeout", "t"), at(900))
    assert info.value.code == "ListUnavailable"


def test_a_list_failure_before_sending_is_not_counted():
    state = listed(resolving(), ArmFailure("TokenUnavailable", "t", sent=False))
    assert state.arm_requests == 0 and state.list_failures == 1
    state = listed(state, page())
    assert state.arm_requests == 1 and state.list_failures == 0


def test_list_retry_never_past_the_deadline():
    state = listed(resolving(), answer(503, b"", {"Retry-After": "99999"}, REDIS_LIST), at(1790))
    assert state.due == state.deadline == at(1800)


def test_pending_list_round_trips_in_the_poll_state():
    state = listed(resolving(), page(tagged(rid("a")), next_link=REDIS_LIST + "&$skiptoken=2"))
    back = RunState.from_json(state.to_json())
    assert back.pending_lists == state.pending_lists and back.found == state.found
    assert isinstance(back.pending_lists[0], ListCall)


# --- first read placed by the learned duration (core/durations.py) ------------------------------

SCARCE = cadence.ReadBudget(250, 1, None, 40, {"redis": 9.5})


@pytest.mark.parametrize("budget, first", [
    (None, 1.0),                                               # nothing known: 1 s
    (cadence.ReadBudget(250, 1, None, 3, {"redis": 9.5}), 1.0),  # reads to spare: 1 s
    (SCARCE, 9.5),                                             # scarce: at the expected end
    # scarce, nothing learned for its kind: a share of the reads among the 40 in flight
    (cadence.ReadBudget(250, 1, None, 40, {"redisEnterprise": 9.5}), 2.0),
])
def test_first_read_after_acceptance(budget, first):
    ts, _ = after(post_state(), answer(202, headers=both()), budget=budget)
    assert ts.phase == "poll" and wait_of(ts, T0) == first


def test_retry_after_still_wins_over_the_expected_end():
    ts, _ = after(post_state(), answer(202, headers=both(**{"Retry-After": "30"})),
                  budget=SCARCE)
    assert wait_of(ts, T0) == 30.0


def test_the_expected_end_never_passes_the_deadline():
    ts, _ = after(post_state(), answer(202, headers=both()), deadline=at(4), budget=SCARCE)
    assert ts.due == at(4)


def test_reads_teach_the_estimate_only_on_success():
    ts, records = after(polling(), running(), at(1))
    assert ts.running_at == at(1) and records == []
    ts2, records = after(ts, running(), at(2))
    assert ts2.running_at == at(2)
    ok, learned = after(ts2, answer(200, {"status": "Succeeded"}, {}, OP_URL), at(3))
    assert learned == [Learn(TARGET.subscription_id, "redis", 2.0, 3.0)]
    failed, nothing = after(ts2, answer(200, {"status": "Failed", "error": FAIL_ERROR}, {},
                                        OP_URL), at(3))
    assert done(failed).status == "Failed" and nothing == []


def test_a_read_that_took_long_counts_from_when_it_was_sent():
    ts, _ = after(polling(), dataclasses.replace(running(), elapsed=0.4), at(1.4))
    ok, learned = after(ts, dataclasses.replace(answer(200, {"status": "Succeeded"}, {}, OP_URL),
                                                elapsed=0.3), at(2.8))
    assert learned == [Learn(TARGET.subscription_id, "redis", 1.0, 2.5)]


def test_running_at_survives_the_poll_message():
    ts, _ = after(polling(), running(), at(1))
    assert TargetState.from_json(json.loads(json.dumps(ts.to_json()))) == ts



def test_percent_complete_moves_the_next_read_to_just_after_the_projected_end():
    """90% done 9 s after acceptance: the end is projected at ~10.06 s; the usual next read
    (10 s) would find it running, so it is moved there instead of a later 11 s read."""
    ts, _ = after(polling(), running({"status": "InProgress", "percentComplete": 90}), at(9))
    assert wait_of(ts, at(9)) == pytest.approx(9.0 * 100 / 89.5 + 0.02 - 9.0)


def test_percent_complete_far_from_the_end_keeps_the_usual_read():
    ts, _ = after(polling(), running({"status": "InProgress", "percentComplete": 10}), at(2))
    assert wait_of(ts, at(2)) == GAP


def test_percent_complete_never_moves_a_read_past_the_deadline():
    ts, _ = after(polling(deadline=at(9.5)),
                  running({"status": "InProgress", "percentComplete": 90}), at(9),
                  deadline=at(9.5))
    assert ts.due <= at(9.5)


# --- a projected end kept through readings that say nothing (docs/design.md) ----------------

def _pc(percent: Any = None) -> ArmAnswer:
    body = {"status": "InProgress"} if percent is None else {"status": "InProgress",
                                                             "percentComplete": percent}
    return running(body)


def _projected(age: float, percent: float) -> float | None:
    return cadence.progress_end(age, percent)


@pytest.mark.parametrize("later", [99, None, 99.0, "99", float("nan")])
def test_a_reading_that_says_nothing_keeps_the_projected_end(later):
    """296 s at 98.7% projects ~300.07 s; a 99 (held), no percentComplete or an unusable one
    at 297 s keeps it (the read after goes at 298 s, the one after that to the end)."""
    ts, _ = after(polling(), _pc(98.7), at(296))
    end = _projected(296, 98.7)
    assert ts.projected_end == pytest.approx(end) and wait_of(ts, at(296)) == GAP
    ts, _ = after(ts, _pc(later), at(297))
    assert ts.projected_end == pytest.approx(end) and wait_of(ts, at(297)) == GAP
    ts, _ = after(ts, _pc(later), at(299))
    assert ts.due == T0 + dt.timedelta(seconds=end)


def test_a_read_at_the_projected_end_that_finds_it_running_drops_it():
    ts, _ = after(polling(), _pc(98.7), at(296))
    end = ts.projected_end
    assert end is not None
    ts, _ = after(ts, _pc(99), at(end))
    assert ts.projected_end is None and wait_of(ts, at(end)) == GAP


def test_a_transient_error_between_reads_keeps_the_projected_end():
    ts, _ = after(polling(), _pc(98.7), at(296))
    end = ts.projected_end
    ts, _ = after(ts, answer(503, b"", {}, OP_URL), at(297))
    assert ts.projected_end == end and ts.phase == "poll"


def test_retry_after_past_a_kept_projection_wins():
    ts, _ = after(polling(), _pc(98.7), at(296))
    ts, _ = after(ts, running({"status": "InProgress", "percentComplete": 99},
                              **{"Retry-After": "10"}), at(299))
    assert wait_of(ts, at(299)) == pytest.approx(10.0)


def test_a_kept_projection_halves_the_wait_when_reads_are_scarce():
    """Scarce reads: the next read no sooner than halfway to the kept end (cadence)."""
    scarce = cadence.ReadBudget(250, 1, None, 40, {})
    ts, _ = after(polling(), _pc(10), at(10), budget=scarce)
    end = _projected(10, 10)
    assert end is not None
    assert ts.due == T0 + dt.timedelta(seconds=10 + (end - 10) / 2)
    ts, _ = after(ts, _pc(99), at(50), budget=scarce)
    assert ts.projected_end == pytest.approx(end)
    assert ts.due == T0 + dt.timedelta(seconds=50 + (end - 50) / 2)


@pytest.mark.parametrize("huge", [1e9, 1e13, 1e15, 1e300])
def test_a_huge_projected_end_from_a_tampered_state_stops_at_the_deadline(huge):
    scarce = cadence.ReadBudget(250, 1, None, 40, {})
    ts = dataclasses.replace(polling(), projected_end=huge)
    ts, _ = after(ts, _pc(99), at(10), budget=scarce)
    assert ts.due == DEADLINE


@pytest.mark.parametrize("value", [5, True, 1.5, "x", {"id": "x"}])
def test_a_database_whose_linked_databases_is_not_a_list_is_unusable_not_a_crash(value):
    """A TypeError here would escape the pure core: the message would go to the dead-letter
    queue with no event, instead of ending `DatabaseInvalidJson` after its retries."""
    body = json.dumps({"properties": {"geoReplication": {"linkedDatabases": value}}})
    assert linked_databases(body.encode(), db_id().lower()) is None
    if not isinstance(value, dict):
        geo = json.dumps({"properties": {"geoReplication": value}})
        assert linked_databases(geo.encode(), db_id().lower()) is None


def test_a_group_member_adopting_an_accepted_flush_keeps_the_ids_that_post_carried():
    """A redelivered request reads the group again (the other members), then adopts the
    earlier delivery's accepted POST, whose recorded share was [] (the rest of the group was
    an earlier target's): its event names what that POST flushed, not the whole group."""
    member = make_enterprise(SUB, RG, "b")
    ts = TargetState(member, 1, "claim", T0, linked=(db_id("a"), db_id("c")))
    data = {"pollUrl": f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache/locations/"
                       "westus3/operationsStatus/op1?api-version=2025-07-01",
            "pollKind": "azure-asyncoperation", "acceptedAt": "2030-01-01T12:00:00.000Z",
            "linked": [], "armRequests": 2}
    adopted = on_answer(ts, Claimed("adopt-poll", data), cx())
    assert (adopted.phase, adopted.linked) == ("poll", ())
    older_row = {k: v for k, v in data.items() if k != "linked"}
    assert on_answer(ts, Claimed("adopt-poll", older_row), cx()).linked == ts.linked


# Azure Managed Redis' OperationStatus declares `error` as an ErrorResponse (`{"error": {code,
# message}}`, the RedisEnterprise spec's OperationStatus model), classic Redis' as a bare
# ErrorDetail: either way the event's error has ARM's code and message at its top level.
@pytest.mark.parametrize("raw, expected", [
    ({"error": FAIL_ERROR}, FAIL_ERROR),
    (FAIL_ERROR, FAIL_ERROR),
    ({"error": {"code": "E"}}, {"code": "E", "message": "ARM reported the flush as Failed "
                                                         "without an error message"}),
    ({"message": "no code"}, {"code": "OperationFailed", "message": "no code"}),
    ({"details": [{"code": "Inner"}]}, {"code": "OperationFailed",
                                        "message": "ARM reported the flush as Failed without "
                                                   "an error", "details": [{"code": "Inner"}]}),
    ({"code": 7, "message": ["x"]}, {"code": "OperationFailed",
                                     "message": "ARM reported the flush as Failed without an "
                                                "error"}),
])
def test_a_failed_operations_error_is_read_in_either_shape(raw, expected):
    body = {"id": "/x/operationsStatus/op9", "name": "op9", "status": "Failed",
            "startTime": "2030-01-01T12:00:00Z", "error": raw}
    ts = polling(url=ENTERPRISE_STATUS)
    outcome = done(after(ts, answer(200, body, {}, ENTERPRISE_STATUS), at(1))[0])
    assert outcome.status == "Failed"
    assert dict(outcome.error or {}) == expected
    assert outcome.operation["error"] == raw  # ARM's own words stay in the operation
