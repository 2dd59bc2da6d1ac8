"""Answers that end a flush as Failed: permanent POST errors with ARM's ErrorResponse, and a
status URL that keeps giving unusable answers (retried 3 times, then a code naming why).
"""
from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.harness import CACHE, RG, SUB, Harness, resource_id
from tests.support.scripted_arm import Answer, Operation, flush_path

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


def test_a_location_poll_404_is_read_as_often_and_ends_with_arms_error(h: Harness) -> None:
    """On a Location poll an ErrorResponse is how the operation's own error comes back, so
    the Failed event carries ARM's code (an Azure-AsyncOperation poll names the HTTP status)."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.url}, b""))
    h.arm.on_operation(op, then=_bad(op, "404"))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Failed")
    assert (data["error"]["code"], data["error"]["httpStatus"]) == ("ResourceNotFound", 404)
    assert data["armRequests"] == 5


def test_a_post_whose_answer_never_came_is_sent_once_more_then_in_doubt(
        make_harness: Callable[..., Harness]) -> None:
    """ARM may have taken a POST whose answer was cut off: its claim is kept, so it goes out
    once more after the 90 s lease and never a third time (README, "Reliability")."""
    h = make_harness(timeouts=(0.3, 1.0))
    op = h.arm.new_operation(SUB)
    # accepted, the answer far past the limit (not 0.4 s past: a prompt answer must never
    # race the read timeout on a loaded machine)
    late = Answer(202, both(op.url), b"", delay=30)
    h.arm.on_flush(SUB, RG, CACHE, late, late, late, then=Answer(202, both(op.url), b""))
    h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()

    h.run()

    posts = h.arm.route("POST", flush_path(SUB, RG, CACHE)).requests
    assert len(posts) == 2
    assert (posts[1].when - posts[0].when).total_seconds() >= 90
    assert h.event(rid, "Failed", arm_requests=2)["error"]["code"] == "FlushInDoubt"


def test_a_gateway_504_to_the_post_is_in_doubt_too(h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(504, {}, b"<html>gateway timeout</html>"),
                   then=Answer(202, both(op.url), b""))
    h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()

    h.run()

    posts = h.arm.route("POST", flush_path(SUB, RG, CACHE)).requests
    assert len(posts) == 2 and (posts[1].when - posts[0].when).total_seconds() >= 90
    h.event(rid, "Succeeded", arm_requests=3)


def test_a_post_the_pacer_held_back_claims_its_row_again_before_it_goes(h: Harness) -> None:
    """Writes parked for 150 s by another request's 429: the held-back POST gives its claim
    back, so a repeat of the request after the lease (on another instance) does not take the
    row for a dead writer's and POST as well; one POST goes out, when the slot comes."""
    throttled = Answer(429, {"Retry-After": "150"},
                       {"error": {"code": "TooManyRequests", "message": "throttled"}})
    first, second = h.arm.new_operation(SUB), h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, "cache-a", throttled, then=Answer(202, both(first.url), b""))
    h.arm.on_flush(SUB, RG, "cache-b", then=Answer(202, both(second.url), b""))
    for op in (first, second):
        h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    h.send_request({"resourceId": resource_id(cache="cache-a"), "requestId": "held-a"})
    h.run(limit=1)  # the 429: the subscription's writes parked for 150 s
    h.clock.advance(1)
    body = {"resourceId": resource_id(cache="cache-b"), "requestId": "held-b"}
    h.send_request(body)
    h.run(limit=1)  # claimed, the POST held back
    assert h.ledger.get("held-b", resource_id(cache="cache-b").lower()).state == "retry"
    h.clock.advance(95)
    h.restart()  # another instance, with a pacer of its own, gets a repeat
    h.send_request(body, message_id="held-b-again")

    h.run()

    assert len(h.arm.route("POST", flush_path(SUB, RG, "cache-b")).requests) == 1
    h.event("held-b", "Succeeded", rid=resource_id(cache="cache-b"))


@pytest.mark.parametrize("body", [b"<html><body>Access denied by proxy</body></html>",
                                  b'["Succeeded"]'])
def test_a_post_answered_200_with_something_arm_never_sends_is_not_a_success(
        h: Harness, body: bytes) -> None:
    """An intercepting proxy's page is not ARM saying the cache was flushed."""
    h.arm.on_flush(SUB, RG, CACHE, Answer(200, {"Content-Type": "text/html"}, body))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Failed")
    assert (data["error"]["code"], data["error"]["httpStatus"]) == ("FlushAnswerUnusable", 200)
    assert data["armRequests"] == 1 and h.polls() == []


def test_an_arm_error_with_a_lone_surrogate_is_announced_and_recorded(h: Harness) -> None:
    """ARM's JSON may escape half a surrogate pair ("\\ud800"), which json.loads keeps: the
    event already survives it, but the ledger's encoding raised UnicodeEncodeError on the
    `done` record, on every delivery, so the flush was never announced."""
    broken = {"error": {"code": "BadRequest", "message": "cache \ud800 refused"}}
    h.arm.on_flush(SUB, RG, CACHE, Answer(400, {}, broken))
    rid = h.send_request()
    h.run()
    data = h.event(rid, "Failed")
    assert data["error"]["code"] == "BadRequest"
    row = h.ledger.get(rid, resource_id().lower())
    assert row is not None and row.state == "done"
    assert row.data["outcome"]["error"]["message"] == "cache \ud800 refused"


def test_a_record_too_long_for_the_ledger_is_skipped_never_a_second_post(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """A record the ledger refuses as too long (here an operation URL of 31,000 characters)
    is skipped like one the ledger failed: it raised, the redelivery found the claim and
    POSTed the cache again after the lease."""
    op = h.arm.new_operation(SUB)
    url = op.url + "&pad=" + "p" * 31_000
    h.arm.on_flush(SUB, RG, CACHE, then=Answer(202, both(url), b""))
    h.arm.on("GET", url.split(h.arm.endpoint, 1)[1],
             then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()

    h.run()

    assert len(h.arm.route("POST", flush_path(SUB, RG, CACHE)).requests) == 1
    h.event(rid, "Succeeded")
    row = h.ledger.get(rid, resource_id().lower())
    assert row is not None and row.state == "done"
    skipped = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(skipped) == 1 and "not recorded accepted in the ledger, skipped" in skipped[0]
    assert "MAX_DATA_CHARS" in skipped[0]


HUGE = 600_000  # ARM's text, far past a message (ARM's answers may be up to 1 MB)


@pytest.mark.parametrize("how", ["running-status", "location-error-code"])
def test_arm_text_past_a_message_never_stops_the_chain(h: Harness, how: str) -> None:
    """A status or an error code of hundreds of KB (a hostile or broken ARM): the poll
    message still fits (README, "Reliability": ARM's own JSON cut by bytes), so the chain
    goes on to an event instead of being refused by the bus and dead-lettered."""
    op = h.arm.new_operation(SUB)
    if how == "running-status":
        h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
        h.arm.on_operation(op, Answer(200, {}, {"status": "Running" + "x" * HUGE}),
                           then=Answer(200, {}, op.status("Succeeded")))
        status = "Succeeded"
    else:
        h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.url}, b""))
        h.arm.on_operation(op, then=Answer(404, {}, {"error": {"code": "E" * HUGE,
                                                               "message": "gone"}}))
        status = "Failed"
    rid = h.send_request(reply_to="redis-flush-replies", reply_to_session_id="s")

    done = h.run()

    assert {d.outcome for d in done} == {"completed"}
    data = h.event(rid, status)
    assert len(h.events()[0].message.body) < 16_000
    assert all(len(p.message.body) < 16_000 for p in h.polls(rid))
    if how == "location-error-code":
        assert data["error"]["code"].startswith("EEEE")


@pytest.mark.parametrize("where", ["post", "location-poll"])
@pytest.mark.parametrize("odd", [{"code": 403, "message": {"text": "no"}},
                                 {"code": {"c": "x"}, "message": ["no"]},
                                 {"code": "  ", "message": None}])
def test_an_arm_error_without_a_text_code_or_message_still_gives_text_ones(
        h: Harness, where: str, odd: dict[str, object]) -> None:
    """README, "Events": every error but a success's has a `code` and a `message`, text a
    subscriber filters on. An ARM answer whose ErrorDetail holds another JSON value there (a
    number, an object, blanks) reached the event as it was: `error.code` 403, an object as
    the message. As for an operation's error, ARM's odd value gives way to the app's code."""
    op = h.arm.new_operation(SUB)
    if where == "post":
        h.arm.on_flush(SUB, RG, CACHE, Answer(403, {}, {"error": odd}))
    else:
        h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Location": op.url}, b""))
        h.arm.on_operation(op, then=Answer(403, {}, {"error": odd}))
    rid = h.send_request()
    h.run()
    error = h.event(rid, "Failed")["error"]
    assert (error["code"], error["message"]) == ("Http403", "ARM answered HTTP 403"), error
    assert error["httpStatus"] == 403


def test_a_resend_arm_refused_does_not_count_and_the_event_says_what_went_out(
        h: Harness) -> None:
    """After a POST in doubt, ARM's own refusal of the resend (409: it starts nothing) has it
    sent again; a second POST without an answer ends it FlushInDoubt. Three POSTs went out,
    so the event said "it was not sent a third time" wrongly; it says it is not sent again."""
    gateway = Answer(504, {}, b"<html>gateway timeout</html>")
    h.arm.on_flush(SUB, RG, CACHE, gateway, Answer(409, {}, {"error": {"code": "Conflict",
                                                                       "message": "busy"}}),
                   then=gateway)
    rid = h.send_request()

    h.run()

    posts = h.arm.route("POST", flush_path(SUB, RG, CACHE)).requests
    assert len(posts) == 3
    error = h.event(rid, "Failed", arm_requests=3)["error"]
    assert error["code"] == "FlushInDoubt"
    assert "went out twice with no answer" in error["message"]
    assert "third time" not in error["message"] and "not sent again" in error["message"]
