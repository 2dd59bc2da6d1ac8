"""Answers that end a flush as Failed: permanent POST errors with ARM's ErrorResponse, and a
status URL that keeps giving unusable answers (retried 3 times, then a code naming why).
"""
from __future__ import annotations

import pytest

from tests.support.harness import CACHE, RG, SUB, Harness
from tests.support.scripted_arm import Answer, Operation

ARM_ERROR = {"error": {
    "code": "AuthorizationFailed",
    "message": "The client 'a1b2' with object id 'a1b2' does not have authorization to perform "
               "action 'Microsoft.Cache/redis/flush/action' over scope '/subscriptions/...'",
    "target": "cache-01",
    "details": [{"code": "RoleAssignmentMissing", "message": "assign Redis Cache Contributor"}],
    "additionalInfo": [{"type": "PolicyViolation", "info": {"policy": "p1"}}],
}}


def both(url: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": url, "Location": url}


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_a_permanent_post_error_fails_with_arms_error(h: Harness, status: int) -> None:
    h.arm.on_flush(SUB, RG, CACHE, Answer(status, {}, ARM_ERROR))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Failed")
    error = data["error"]
    for key in ("code", "message", "target", "details", "additionalInfo"):
        assert error[key] == ARM_ERROR["error"][key], key
    assert error.get("httpStatus") == status
    assert data["armRequests"] == 1 and h.polls() == []


def test_a_permanent_post_error_without_a_body_names_the_http_status(h: Harness) -> None:
    h.arm.on_flush(SUB, RG, CACHE, Answer(403, {}, b""))
    rid = h.send_request()
    h.run()
    error = h.event(rid, "Failed")["error"]
    assert "403" in error["code"] and "403" in error["message"]


def test_a_bare_error_detail_body_is_read_too(h: Harness) -> None:
    h.arm.on_flush(SUB, RG, CACHE, Answer(404, {}, {"code": "ResourceNotFound",
                                                     "message": "cache-01 was not found"}))
    rid = h.send_request()
    h.run()
    error = h.event(rid, "Failed")["error"]
    assert (error["code"], error["message"]) == ("ResourceNotFound", "cache-01 was not found")


def _bad(op: Operation, kind: str) -> Answer:
    return {
        "404": Answer(404, {}, {"error": {"code": "ResourceNotFound", "message": "gone"}}),
        "403": Answer(403, {}, {"error": {"code": "AuthorizationFailed", "message": "no"}}),
        "invalid-json": Answer(200, {}, b'{"status": "InProg'),
        "not-an-object": Answer(200, {}, b'["InProgress"]'),
        "missing-status": Answer(200, {}, {"id": op.resource_id, "name": op.name}),
        "empty-body": Answer(200, {}, b""),
    }[kind]


BAD = {"404": "OperationStatusHttp404", "403": "OperationStatusHttp403",
       "invalid-json": "OperationStatusInvalidJson",
       "not-an-object": "OperationStatusInvalidJson",
       "missing-status": "OperationStatusMissingStatus", "empty-body": "OperationStatusEmptyBody"}


@pytest.mark.parametrize("kind", list(BAD))
def test_an_unusable_status_answer_is_retried_3_times_then_fails(h: Harness, kind: str) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    # Four bad answers (the first and 3 retries); a fifth look would see Succeeded.
    h.arm.on_operation(op, *[_bad(op, kind)] * 4, then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Failed")
    assert data["error"]["code"] == BAD[kind]
    assert len(h.arm.route("GET", op.path).requests) == 4
    assert data["armRequests"] == 5
    if kind in ("404", "403"):
        assert data["error"]["details"][0]["code"] == \
            _bad(op, kind).body["error"]["code"]  # type: ignore[index]


def test_a_usable_answer_resets_the_count_of_unusable_ones(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    bad = _bad(op, "invalid-json")
    h.arm.on_operation(op, bad, bad, bad, Answer(202, both(op.url), op.status("InProgress")),
                       bad, bad, bad, Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    assert h.event(rid, "Succeeded")["armRequests"] == 9


def test_status_url_409_and_5xx_are_transient_not_unusable(h: Harness) -> None:
    """Busy/5xx on a status GET do not use up the 3 retries of an unusable answer."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, *[Answer(409, {}, {"error": {"code": "Conflict", "message": "busy"}}),
                             Answer(500, {}, b"")] * 3,
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.run()
    assert h.event(rid, "Succeeded")["armRequests"] == 8


def test_a_location_poll_404_is_unusable_too(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.url}, b""))
    h.arm.on_operation(op, then=_bad(op, "404"))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Failed")
    assert data["error"]["code"] == "OperationStatusHttp404"
    assert data["armRequests"] == 5
