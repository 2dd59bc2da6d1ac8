"""Whole flows through FlushTrigger.main and PollOrchestrator.main against scripted ARM:
the recorded real-traffic shape and every other shape the ARM async-operation spec allows.
"""
from __future__ import annotations

import re

import pytest

from redisflush import __version__
from tests.support.harness import CACHE, RG, SUB, Harness, target_of
from tests.support.scripted_arm import Answer, flush_path

FLUSH = flush_path(SUB, RG, CACHE)


def both(url: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": url, "Location": url}


@pytest.mark.parametrize("huge", [False, True], ids=["signed-url", "signed-url-over-4KB"])
def test_recorded_traffic_shape_gives_one_succeeded_event(h: Harness, huge: bool) -> None:
    op = h.arm.new_operation(SUB, huge=huge)
    assert len(op.path) > (4096 if huge else 1000) and "West%20US%202" in op.path
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(202, both(op.url), op.status("InProgress")),
                       Answer(202, both(op.url), op.status("InProgress")),
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()

    done = h.run()

    data = h.event(rid, "Succeeded")
    assert data["operation"] == op.status("Succeeded")
    assert data["armRequests"] == 4
    # The header URL was used verbatim: the raw request target matched the scripted one.
    assert [(r.method, r.raw_path) for r in h.arm.requests] == \
        [("POST", FLUSH)] + [("GET", op.path)] * 3
    assert [(d.queue, d.outcome) for d in done] == \
        [("redis-flush-requests", "completed")] + [("redis-flush-polls", "completed")] * 3
    polls = h.polls(rid)
    # one poll message per step of the request (state v2), numbered by step
    assert [p.message_id for p in polls] == [f"{rid}:poll:{n}" for n in (1, 2, 3)]
    assert [p.body_json["step"] for p in polls] == [1, 2, 3]
    assert [len(p.body_json["targets"]) for p in polls] == [1, 1, 1]
    assert {target_of(p)["pollUrl"] for p in polls} == {op.url}
    assert {target_of(p)["pollKind"] for p in polls} == {"azure-asyncoperation"}
    assert data["acceptedAt"] == data["requestedAt"]
    assert h.bus.dead_letters == {}
    for request in h.arm.requests:
        assert request.header("Authorization") == "Bearer t"
        assert re.search(rf"\bredisflush/{re.escape(__version__)}\b",
                         request.header("User-Agent") or "")
    post = h.arm.requests[0]
    assert post.body == b"" and post.header("Content-Length") == "0"
    # `{requestId}:{targetIndex}.{step}`: each step has its own client request id, so ARM's
    # logs can tell them apart (the POST in the request's step 0, then poll steps 1, 2, 3)
    assert [r.client_request_id for r in h.arm.requests] == \
        [f"{rid}:0.0", f"{rid}:0.1", f"{rid}:0.2", f"{rid}:0.3"]


def test_post_answers_200_with_the_result(h: Harness) -> None:
    result = {"id": "/subscriptions/x/operationresults/1", "name": "1", "status": "Succeeded",
              "percentComplete": 100.0, "startTime": "2024-05-01T12:00:00Z",
              "endTime": "2024-05-01T12:00:01Z", "operations": []}
    h.arm.on_flush(SUB, RG, CACHE, Answer(200, {}, result))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    assert data["armRequests"] == 1
    assert data["operation"] == {k: v for k, v in result.items() if k != "operations"}
    assert data["acceptedAt"] is None
    assert h.polls() == []


def test_post_answers_200_without_a_body(h: Harness) -> None:
    h.arm.on_flush(SUB, RG, CACHE, Answer(200, {}, b""))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    assert data["operation"] is None and data["armRequests"] == 1
    assert h.polls() == []


def test_post_answers_200_with_a_failed_result(h: Harness) -> None:
    error = {"code": "FlushFailed", "message": "the cache refused the flush"}
    h.arm.on_flush(SUB, RG, CACHE, Answer(200, {}, {"status": "Failed", "error": error}))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Failed")
    assert data["error"] == error
    assert h.polls() == []


@pytest.mark.parametrize("final", [
    Answer(200, {}, b""),
    Answer(204, {}, None),
    Answer(200, {}, {"value": "the result itself, with no status field"}),
], ids=["200-empty", "204", "200-result-without-status"])
def test_location_only_polling(h: Harness, final: Answer) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.url}, b""))
    h.arm.on_operation(op, Answer(202, {"Location": op.url}, b""), Answer(202, {}, b""), final)
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    assert data["armRequests"] == 4
    assert {target_of(p)["pollKind"] for p in h.polls(rid)} == {"location"}
    assert [r.raw_path for r in h.arm.requests[1:]] == [op.path] * 3


def test_location_polling_ends_with_the_operation_error(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    error = {"code": "InternalServerError", "message": "flush failed on a shard",
             "details": [{"code": "ShardUnavailable", "message": "shard 2"}]}
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.url}, b""))
    h.arm.on_operation(op, Answer(202, {}, b""),
                       Answer(200, {}, op.status("Failed", error=error)))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Failed")
    assert data["error"] == error
    assert data["operation"]["status"] == "Failed"


@pytest.mark.parametrize("status", [500, 409, 400])
def test_location_polling_that_answers_the_operation_error_ends_failed_with_it(
        h: Harness, status: int) -> None:
    """Location polling gives a failed operation's error as the answer itself: read again
    in case it was a status read failing for now, then Failed with ARM's error, long before
    the deadline (not TimedOut, with the error lost)."""
    op = h.arm.new_operation(SUB)
    error = {"code": "FlushFailed", "message": "the flush failed on a shard"}
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.url}, b""))
    h.arm.on_operation(op, Answer(202, {}, b""), then=Answer(status, {}, {"error": error}))
    rid = h.send_request()

    h.run()

    data = h.event(rid, "Failed")
    assert data["error"] == {**error, "httpStatus": status}
    assert data["armRequests"] == 1 + 1 + 4  # the POST, InProgress, the error four times
    assert data["durationSeconds"] < 60


@pytest.mark.parametrize("code", ["OperationCanceled", "operationcanceled", "Canceled",
                                  "CANCELED"])
def test_location_polling_that_answers_a_cancel_error_ends_canceled(h: Harness,
                                                                    code: str) -> None:
    """ARM's cancel codes, in any case (error codes are compared without case here, as
    terminal statuses are)."""
    op = h.arm.new_operation(SUB)
    error = {"code": code, "message": "The flush operation was canceled."}
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.url}, b""))
    h.arm.on_operation(op, then=Answer(409, {}, {"error": error}))
    rid = h.send_request()

    h.run()

    assert h.event(rid, "Canceled")["error"] == {**error, "httpStatus": 409}


def test_location_polling_reads_on_after_an_error_that_passes(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    busy = {"error": {"code": "Conflict", "message": "busy, try again later"}}
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.url}, b""))
    h.arm.on_operation(op, Answer(409, {}, busy), Answer(503, {}, busy), Answer(500, {}, busy),
                       Answer(202, {}, b""), Answer(409, {}, busy), then=Answer(200, {}, b""))
    rid = h.send_request()

    h.run()

    assert h.event(rid, "Succeeded")["armRequests"] == 7


def test_a_run_of_different_location_errors_is_a_status_url_failing_for_now(
        h: Harness) -> None:
    """Only the same error again and again is the operation's: timeouts, then errors that
    differ, are read through with backoff to the operation's real end."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.url}, b""))
    errors = [Answer(status, {}, {"error": {"code": code, "message": "for now"}})
              for status, code in ((409, "Conflict"), (500, "InternalServerError"),
                                   (503, "ServiceUnavailable"), (502, "BadGateway"),
                                   (409, "Conflict"))]
    h.arm.on_operation(op, *errors, then=Answer(200, {}, b""))
    rid = h.send_request()

    h.run()

    assert h.event(rid, "Succeeded")["armRequests"] == 1 + 5 + 1


def test_azure_asyncoperation_only(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("InProgress", percentComplete=40.0)),
                       Answer(200, {}, op.status("Succeeded", percentComplete=100.0)))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    assert data["operation"]["percentComplete"] == 100.0
    assert {target_of(p)["pollKind"] for p in h.polls(rid)} == {"azure-asyncoperation"}
    assert data["armRequests"] == 3


def test_202_without_any_operation_header_fails(h: Harness) -> None:
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {}, b""))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Failed")
    assert data["error"]["code"] == "NoOperationUrl"
    assert data["armRequests"] == 1
    assert h.polls() == []


@pytest.mark.parametrize("given,canonical", [
    ("succeeded", "Succeeded"), ("SUCCEEDED", "Succeeded"), ("failed", "Failed"),
    ("FaIlEd", "Failed"), ("canceled", "Canceled"), ("CANCELED", "Canceled"),
])
def test_terminal_statuses_in_any_case(h: Harness, given: str, canonical: str) -> None:
    op = h.arm.new_operation(SUB)
    error = {"code": "OperationError", "message": "it did not work"}
    extra = {"error": error} if canonical == "Failed" else {}
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(202, both(op.url), op.status("InProgress")),
                       Answer(200, {}, op.status(given, **extra)))
    rid = h.send_request()
    h.run()
    data = h.event(rid, canonical)
    assert data["armRequests"] == 3
    if canonical == "Failed":
        assert data["error"] == error


def test_a_failed_operation_without_an_error_still_names_a_code(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("Failed")))
    rid = h.send_request()
    h.run()
    assert h.event(rid, "Failed")["error"]["code"]


@pytest.mark.parametrize("error", ["boom", ["a", "b"], 42, True],
                         ids=["string", "list", "number", "bool"])
def test_a_failed_operation_whose_error_is_not_an_object_completes(h: Harness,
                                                                    error: object) -> None:
    # was: dict(error) raised in main, the poll was abandoned and redelivered, no event
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(200, {}, {"status": "Failed", "error": error}))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Failed")
    assert data["error"]["code"] == "OperationFailed" and data["error"]["message"]
    assert data["operation"]["error"] == error


def test_unknown_statuses_mean_still_running(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    running = ["Accepted", "Running", "Flushing", "Cancelling", "Updating", "succeeded-ish"]
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, *[Answer(202, both(op.url), op.status(s)) for s in running],
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    assert data["armRequests"] == 1 + len(running) + 1
    # Each running status was carried to the next step as the last known status.
    seen = [target_of(p)["lastStatus"] for p in h.polls(rid)]
    assert seen == ["Accepted", *running]


def test_a_202_poll_answer_with_a_new_location_moves_the_poll(h: Harness) -> None:
    first, second = h.arm.new_operation(SUB), h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(first.url), b""))
    h.arm.on_operation(first, Answer(202, {"Location": second.url}, first.status("InProgress")))
    h.arm.on_operation(second, Answer(202, {"Location": second.url}, b""),
                       Answer(200, {}, second.status("Succeeded")))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Succeeded")
    assert [(r.method, r.raw_path) for r in h.arm.requests] == \
        [("POST", FLUSH), ("GET", first.path), ("GET", second.path), ("GET", second.path)]
    assert data["armRequests"] == 4
    kinds = [(target_of(p)["pollKind"], target_of(p)["pollUrl"]) for p in h.polls(rid)]
    assert kinds == [("azure-asyncoperation", first.url), ("location", second.url),
                     ("location", second.url)]


def test_a_relative_operation_url_is_resolved_against_arm(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.path}, b""))
    h.arm.on_operation(op, Answer(200, {}, b""))
    rid = h.send_request()
    h.run()
    h.event(rid, "Succeeded")
    assert h.arm.requests[-1].raw_path == op.path
