"""`send --local --wait --json` against `serve --local --config FILE`, one emulator behaviour
per scenario: exit code, event status and error code, plus what the emulator saw.

The scenarios run concurrently (see `scenario_runs`), each with its own local dir, serve and
send; each test below waits for its own scenario and asserts on it.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import re
from typing import Any

import pytest

from .conftest import SUB, Scenario, ScenarioRun, resource_id

pytestmark = pytest.mark.e2e
OTHER_SUB = "00000000-0000-0000-0000-0000000000ff"


def config(cache: str, **behaviour: Any) -> dict[str, Any]:
    """Only `cache` exists; it flushes in 0.5 s unless `behaviour` says otherwise."""
    return {"defaults": {"duration": 0.5}, "caches": {cache: behaviour}}


def scenario(id: str, exit_code: int, status: str, error_code: str | None = None, *,
             behaviour: dict[str, Any] | None = None, **kw: Any) -> Scenario:
    cache = kw.pop("cache", f"c-{id}")
    cfg = kw.pop("config", config(cache, **(behaviour or {})))
    return Scenario(id, cfg, cache, exit_code, status, error_code, **kw)


# -- extra checks, per scenario ---------------------------------------------------------------

def recorded_default(run: ScenarioRun) -> None:
    assert run.data["armRequests"] == 2          # one POST, one status GET
    assert run.data["operation"]["status"] == "Succeeded"
    assert run.data["acceptedAt"] is not None
    assert run.stats == {"posts": 1, "accepted": 1, "flushes": 1, "polls": 1}


def operation_error(code: str):
    def check(run: ScenarioRun) -> None:
        assert run.data["operation"]["status"] == "Failed"
        assert run.data["operation"]["error"]["code"] == code
        assert run.stats["flushes"] == 0
    return check


def canceled(run: ScenarioRun) -> None:
    # ARM's operation gave no error: the event's says so (README: null only when Succeeded)
    assert run.data["error"] == {"code": "OperationCanceled",
                                 "message": "ARM reported the flush as Canceled without an error"}
    assert run.data["operation"]["status"] == "Canceled"
    assert run.stats["flushes"] == 0


def never_polled(run: ScenarioRun) -> None:
    assert run.stats["posts"] == 1 and run.stats["polls"] == 0
    assert run.data["armRequests"] == 1


def untrusted(run: ScenarioRun) -> None:
    never_polled(run)
    message = run.data["error"]["message"]
    assert "management.example.net" in message
    # signed query parameters never reach events: the URL is shown without its query
    assert "api-version" not in json.dumps(run.event)


def not_found(run: ScenarioRun) -> None:
    assert run.data["error"]["httpStatus"] == 404
    assert run.data["armRequests"] == 1 and run.data["operation"] is None
    assert run.stats == {}                        # the emulator keeps no book on unknown caches


def polls(n: int, flushes: int = 1):
    def check(run: ScenarioRun) -> None:
        assert run.stats["polls"] == n, run.stats
        assert run.stats["posts"] == 1 and run.stats["flushes"] == flushes
    return check


def bad_polls_failed(run: ScenarioRun) -> None:
    assert run.stats["polls"] == 4               # 3 retries of an unusable answer, then Failed
    assert "4 unusable answers" in run.data["error"]["message"]


def posts(n: int):
    def check(run: ScenarioRun) -> None:
        assert run.stats["posts"] == n, run.stats
        assert run.stats["accepted"] == 1 and run.stats["flushes"] == 1
    return check


def busy(run: ScenarioRun) -> None:
    assert run.stats["posts"] >= 2, run.stats    # at least one 409 busy before the 202
    assert run.stats["accepted"] == 1 and run.stats["flushes"] == 1


def post_forbidden(run: ScenarioRun) -> None:
    assert run.data["error"]["httpStatus"] == 403
    assert run.stats["posts"] == 1 and run.stats["accepted"] == 0   # permanent: no retry


def location_done_no_content(run: ScenarioRun) -> None:
    polls(1)(run)
    assert run.data["operation"] is None          # 204: no OperationStatusResult to carry


def immediate(run: ScenarioRun) -> None:
    assert run.data["armRequests"] == 1
    assert run.stats == {"posts": 1, "accepted": 1, "flushes": 1, "polls": 0}


def percent_progress(run: ScenarioRun) -> None:
    # a 2.5 s flush read at 1 s (about 40%): the end it projects (~2.5 s) falls within the
    # gap after the next read, so that read moves to just after it instead of 2 s and 3 s
    # (README, "How ARM is followed"): a progress line per percentage seen, then the final one
    percents = [int(p) for p in re.findall(r"InProgress (\d+)%", run.send.stderr)]
    assert 1 <= len(percents) <= 2 and percents == sorted(set(percents)), run.send.stderr
    assert 0 < percents[0] < 100, run.send.stderr
    assert run.stats["posts"] == 1 and run.stats["polls"] <= 3, run.stats
    if len(percents) == 1:  # the moved read found it over: two reads, not three
        assert run.stats["polls"] == 2, run.stats
    assert run.data["operation"]["percentComplete"] == 100.0


def waited_at_least(seconds: float, reads: int):
    """ARM's Retry-After on the 202 put off the first status read: `reads` reads in all."""
    def check(run: ScenarioRun) -> None:
        assert run.data["durationSeconds"] >= seconds, run.data
        polls(reads)(run)
    return check


def moved(run: ScenarioRun) -> None:
    # reads at 1 s (202 naming a new URL), 2 s (the new URL, running) and 3 s (done)
    assert run.stats["polls"] == 3 and run.stats["flushes"] == 1, run.stats
    polled = re.findall(r"GET \S+/operationresults/([0-9a-f-]+) -> \d+", run.serve_log)
    assert len(set(polled)) == 2, polled          # the poll followed the new URL


def location_result(run: ScenarioRun) -> None:
    # status reads once a second after ARM accepted: 202 at 1 s and 2 s, 200 at 3 s (2.5 s
    # flush; the half second either side keeps the count exact under load)
    polls(3)(run)
    assert run.data["armRequests"] == 4          # the POST and three Location reads
    assert run.data["operation"]["status"] == "Succeeded"


def slow_answers(run: ScenarioRun) -> None:
    # every answer takes 0.5 s: the first status read, a second after the POST, finds the
    # 0.5 s flush over and answers 0.5 s later, so the event comes 1.5 s after the POST at
    # the earliest (2 s when the second is counted from the POST's answer)
    assert run.stats == {"posts": 1, "accepted": 1, "flushes": 1, "polls": 1}, run.stats
    assert run.data["armRequests"] == 2
    assert run.data["durationSeconds"] >= 1.5, run.data


def retry_after_past_the_deadline(run: ScenarioRun) -> None:
    # ARM's Retry-After (3600 s) lies past the 30 s deadline: no read before the deadline,
    # one last look at it, and a terminal answer there still counts
    assert run.stats == {"posts": 1, "accepted": 1, "flushes": 1, "polls": 1}, run.stats
    assert run.data["armRequests"] == 2
    assert 29.5 <= run.data["durationSeconds"] <= 45, run.data
    assert run.data["operation"]["status"] == "Succeeded"


def timed_out_at_once(detail: str | None):
    def check(run: ScenarioRun) -> None:
        error = run.data["error"]
        assert "deadline" in error["message"]
        if detail:
            assert error["details"][0]["code"] == detail
        assert run.data["durationSeconds"] < 15   # decided at once, not at the deadline
        assert run.stats["flushes"] == 0
    return check


def timed_out_at_deadline(run: ScenarioRun) -> None:
    assert 29 <= run.data["durationSeconds"] <= 50, run.data
    assert run.data["operation"]["status"] == "InProgress"   # the last known status
    assert "InProgress" in run.data["error"]["message"]
    assert run.stats["flushes"] == 0


def rejected_by_scope(run: ScenarioRun) -> None:
    assert run.data["error"]["target"] == "resourceGroup"  # sent by parts: the field it has
    assert "REDISFLUSH_ALLOWED_SCOPES" in run.data["error"]["message"]
    assert run.data["armRequests"] == 0 and run.stats == {}   # never reached ARM


SCENARIOS = [
    scenario("recorded-default", 0, "Succeeded", behaviour={}, check=recorded_default),
    scenario("failed", 1, "Failed", "FlushFailedE2E", behaviour={
        "outcome": "Failed", "error": {"code": "FlushFailedE2E", "message": "emulated"}},
        check=operation_error("FlushFailedE2E")),
    scenario("failed-default-error", 1, "Failed", "InternalServerError",
             behaviour={"outcome": "Failed"}, check=operation_error("InternalServerError")),
    scenario("canceled", 1, "Canceled", "OperationCanceled", behaviour={"outcome": "Canceled"},
             check=canceled),
    scenario("poll-mode-none", 1, "Failed", "NoOperationUrl", behaviour={"pollMode": "none"},
             check=never_polled),
    scenario("foreign-host", 1, "Failed", "UntrustedOperationUrl",
             behaviour={"foreignHost": "https://management.example.net"}, check=untrusted),
    scenario("unknown-cache", 1, "Failed", "ResourceNotFound", cache="not-configured",
             config=config("known-*"), check=not_found),
    scenario("invalid-json-4", 1, "Failed", "OperationStatusInvalidJson",
             behaviour={"invalidJsonPolls": 4}, check=bad_polls_failed, slow=True),
    scenario("invalid-json-3", 0, "Succeeded", behaviour={"invalidJsonPolls": 3},
             check=polls(4), slow=True),
    scenario("statusless-4", 1, "Failed", "OperationStatusMissingStatus",
             behaviour={"statuslessPolls": 4}, check=bad_polls_failed, slow=True),
    scenario("busy", 0, "Succeeded", behaviour={"busySeconds": 1}, check=busy),
    scenario("throttle-first", 0, "Succeeded",
             behaviour={"throttleFirst": 1, "throttleRetryAfter": 1}, check=posts(2)),
    scenario("post-errors-5xx", 0, "Succeeded", behaviour={"postErrors": [503]},
             check=posts(2)),
    scenario("post-error-403", 1, "Failed", "AuthorizationFailed",
             behaviour={"postErrors": [403]}, check=post_forbidden),
    scenario("poll-errors", 0, "Succeeded", behaviour={"pollErrors": [503, 404]},
             check=polls(3)),
    scenario("location-only", 0, "Succeeded",
             behaviour={"pollMode": "location", "duration": 2.5}, check=location_result),
    scenario("location-no-content", 0, "Succeeded",
             behaviour={"pollMode": "location", "locationDoneNoContent": True},
             check=location_done_no_content),
    scenario("async-only", 0, "Succeeded", behaviour={"pollMode": "async"}, check=polls(1)),
    scenario("location-failed", 1, "Failed", "LocFailed", behaviour={
        "pollMode": "location", "outcome": "Failed",
        "error": {"code": "LocFailed", "message": "emulated"}}),
    scenario("immediate", 0, "Succeeded", behaviour={"immediate": True}, check=immediate),
    scenario("immediate-empty-body", 0, "Succeeded",
             behaviour={"immediate": True, "immediateEmptyBody": True}, check=immediate),
    scenario("percent-complete", 0, "Succeeded",
             behaviour={"percentComplete": True, "duration": 2.5}, check=percent_progress),
    scenario("retry-after-4", 0, "Succeeded", behaviour={"retryAfter": 4},
             check=waited_at_least(4.0, 1)),
    scenario("latency", 0, "Succeeded", behaviour={"latency": 0.5}, check=slow_answers),
    scenario("move-after-polls", 0, "Succeeded",
             behaviour={"moveAfterPolls": 1, "duration": 2.5}, check=moved, verbose=True),
    # SLOW (~30 s): a poll's Retry-After past the deadline waits for the deadline itself
    scenario("retry-after-past-deadline", 0, "Succeeded",
             behaviour={"retryAfter": 3600}, send_args=("--timeout", "30"),
             check=retry_after_past_the_deadline, slow=True),
    scenario("timed-out-throttled", 3, "TimedOut", "TimedOut",
             behaviour={"throttleFirst": 1, "throttleRetryAfter": 3600},
             send_args=("--timeout", "30"), check=timed_out_at_once("TooManyRequests")),
    # SLOW (~31 s): the real deadline. The shortest timeoutSeconds is 30 (docs/design.md); the quick
    # TimedOut scenario above ends early because a POST retry cannot happen before it.
    scenario("timed-out-deadline-30s", 3, "TimedOut", "TimedOut",
             behaviour={"duration": 300}, send_args=("--timeout", "30"),
             check=timed_out_at_deadline, slow=True),
    scenario("rejected-by-scope", 1, "Rejected", "InvalidRequest", behaviour={},
             serve_env={"REDISFLUSH_ALLOWED_SCOPES": f"/subscriptions/{OTHER_SUB}"},
             check=rejected_by_scope),
    scenario("flags-only", 1, "Canceled", "OperationCanceled", config=None,
             serve_args=("--duration", "0.5", "--outcome", "Canceled", "--poll-mode",
                         "location"), check=canceled),
    scenario("flags-over-config", 0, "Succeeded", cache="only-this",
             config={"caches": {"only-*": {}}}, serve_args=("--immediate",), check=immediate),
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_send_wait_json(sc: Scenario, scenario_runs: dict[str, cf.Future[ScenarioRun]]) -> None:
    run = scenario_runs[sc.id].result(timeout=220)
    context = f"\nsend stderr:\n{run.send.stderr}\nserve log:\n{run.serve_log[-4000:]}"
    assert "Traceback" not in run.send.stderr + run.serve_log, context
    assert run.send.returncode == sc.exit_code, context
    event = run.event
    data = event["data"]
    assert event["type"] == "RedisFlush.FlushCompleted"
    assert event["specversion"] == "1.0"
    assert event["subject"] == sc.cache
    assert event["source"].lower() == resource_id(sc.cache).lower()
    # a request rejected on arrival: the id its corrected resend cannot need (core.events)
    assert event["id"] == f"{data['requestId']}:completed" or (
        data["status"] == "Rejected" and event["id"].startswith(f"{data['requestId']}:rejected:")
        and event["id"].endswith(":completed"))
    assert data["status"] == sc.status, context
    if sc.error_code is None:
        assert data["error"] is None, data
    else:
        assert data["error"]["code"] == sc.error_code, data
    assert SUB in data["resourceId"]
    if sc.check:
        sc.check(run)
    assert run.serve_exit == 0, "serve did not stop cleanly on SIGTERM" + context
    assert "abandoned" not in run.serve_log, context
