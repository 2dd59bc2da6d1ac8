"""What arrives on the queues and how the host settles it: rejected requests, redeliveries
(at-least-once, made exactly-once per POST by the ledger: docs/design.md, "Request ledger"),
bus failures (raise so the host redelivers), reply sessions, request ids, and the message
shapes the Python worker really builds.
"""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

import FlushTrigger
import LedgerPurge
import PollOrchestrator
from redisflush.bus import BusError, OutboundMessage
from tests.support.harness import (
    CACHE,
    RG,
    SUB,
    Harness,
    rejected_id,
    resource_id,
    target_of,
)
from tests.support.memory_bus import START, trigger_message
from tests.support.scripted_arm import Answer


def both(url: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": url, "Location": url}


def script_success(h: Harness, running: int = 1) -> Any:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, *[Answer(202, both(op.url), op.status("InProgress"))] * running,
                       Answer(200, {}, op.status("Succeeded")))
    return op


def take(h: Harness, queue: str):
    """Remove the next waiting message from `queue` as the host would, for a direct call."""
    envelope = min(h.bus.active[queue], key=lambda e: e.sequence_number)
    h.bus.active[queue].remove(envelope)
    envelope.delivery_count += 1
    return envelope


# -- rejected requests ---------------------------------------------------------------------

REJECTED = {
    "bad-json": (b'{"cacheName": "cache-01", ', "body", None),
    "not-utf8": (b'{"cacheName": "\xff\xfe"}', "body", None),
    "unknown-field": ({"subscriptionId": SUB, "resourceGroup": RG, "cacheName": CACHE,
                       "cacheNmae": "typo"}, "cacheNmae", None),
    "bad-cache-name": ({"subscriptionId": SUB, "resourceGroup": RG, "cacheName": "-bad-"},
                       "cacheName", None),
    "out-of-scope": ({"resourceId": resource_id(rg="rg-payments")}, "resourceId",
                     resource_id(rg="rg-payments")),
    "too-large": (b'{"reason": "' + b"x" * (64 * 1024) + b'"}', "body", None),
    "timeout-too-short": ({"subscriptionId": SUB, "resourceGroup": RG, "cacheName": CACHE,
                           "timeoutSeconds": 5}, "timeoutSeconds", resource_id()),
    # half of a UTF-16 pair escaped alone: once POSTed, no event could be encoded to UTF-8
    "lone-surrogate-value": (b'{"resourceId": "' + resource_id().encode()
                             + b'", "reason": "bad \\ud800 half"}', "reason", None),
    "lone-surrogate-key": (b'{"resourceId": "' + resource_id().encode()
                           + b'", "\\udfff": 1}', "\\udfff", None),
    # not JSON numbers, or past Python's integer limit: named where they are, as any field
    "nan": (b'{"resourceId": "' + resource_id().encode() + b'", "timeoutSeconds": NaN}',
            "timeoutSeconds", None),
    "infinity-inside": (b'{"resourceId": "' + resource_id().encode()
                        + b'", "reason": {"x": -Infinity}}', "reason.x", None),
    "5000-digits": (b'{"resourceId": "' + resource_id().encode() + b'", "timeoutSeconds": 1'
                    + b"0" * 4999 + b"}", "timeoutSeconds", None),
    "5000-digits-in-a-list": (b'{"resourceIds": [1' + b"0" * 4999 + b"]}", "resourceIds[0]",
                              None),
}


@pytest.mark.parametrize("kind", list(REJECTED))
def test_a_rejected_request_gives_one_rejected_event_and_no_arm_request(
        h: Harness, kind: str) -> None:
    body, field, rid_seen = REJECTED[kind]
    mid = h.send_request(body, reply_to="redis-flush-replies", reply_to_session_id="s-1")
    envelope = take(h, h.settings.request_queue)

    assert FlushTrigger.main(trigger_message(envelope, h.clock.now())) is None

    data = h.event(mid, "Rejected", rid=rid_seen, arm_requests=0, event_id=rejected_id(mid))
    assert data["error"]["target"] == field
    assert data["error"]["code"] == "InvalidRequest"
    assert field in data["error"]["message"]
    assert h.arm.requests == [] and h.arm.connections == 0
    assert h.polls() == []
    (reply,) = h.bus.messages("redis-flush-replies")
    assert reply.message.session_id == "s-1"
    assert reply.message.body == h.events()[0].message.body


def test_a_rejected_request_delivered_twice_still_gives_one_event(h: Harness) -> None:
    mid = h.send_request(b"not json")
    h.bus.deliver_twice(mid)
    done = h.run()
    assert [(d.delivery_count, d.outcome) for d in done] == [(1, "completed"), (2, "completed")]
    h.event(mid, "Rejected", rid=None, arm_requests=0, event_id=rejected_id(mid))
    assert [e.message_id for e in h.bus.dropped] == [rejected_id(mid)]


def test_a_request_corrected_under_its_rejected_request_id_still_gets_its_event(
        h: Harness) -> None:
    """A pipeline's request is rejected (here: outside the allowed scopes), it is fixed and
    sent again at once under the same requestId: the flush's event must not share the
    rejected event's id, or the topic's duplicate detection would drop it (and `send
    --wait` would never see it)."""
    h.send_request({"resourceId": resource_id(rg="rg-payments"), "requestId": "deploy-42"},
                   message_id="try-1", reply_to="redis-flush-replies", reply_to_session_id="s")
    h.run()
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("Succeeded")))
    h.send_request({"resourceId": resource_id(), "requestId": "deploy-42"}, message_id="try-2",
                   reply_to="redis-flush-replies", reply_to_session_id="s")
    h.run()
    assert h.bus.dropped == []
    ids = [(e.message.message_id, json.loads(e.message.body)["data"]["status"])
           for e in h.events()]
    assert ids == [(rejected_id("deploy-42", "try-1"), "Rejected"),
                   ("deploy-42:completed", "Succeeded")]
    assert [e.message.message_id for e in h.bus.messages("redis-flush-replies")
            if e.message.subject != "RedisFlush.FlushProgress"] == [
        rejected_id("deploy-42", "try-1"), "deploy-42:completed"]


@pytest.mark.parametrize("field, value", [("reason", 5), ("requestedBy", ["x"]),
                                          ("timeoutSeconds", 5)])
def test_a_rejection_carries_the_bodys_request_id_whatever_field_broke(
        h: Harness, field: str, value: object) -> None:
    """`send` names the request in the body and waits on that id: a rejection under the
    MessageId would reach its reply session and be skipped as another request's."""
    h.send_request({"resourceId": resource_id(), "requestId": "deploy-77", field: value},
                   message_id="deploy-77:0a1b2c", reply_to="redis-flush-replies",
                   reply_to_session_id="deploy-77")
    h.run()
    (event,) = h.events()
    assert event.message.message_id == rejected_id("deploy-77", "deploy-77:0a1b2c")
    data = json.loads(event.message.body)["data"]
    assert (data["requestId"], data["error"]["target"]) == ("deploy-77", field)
    assert event.message.correlation_id == "deploy-77"


def test_a_waiting_repeat_of_a_request_still_running_gets_its_final_event(h: Harness) -> None:
    """The first send had no ReplyTo (fire and forget); `send --wait` repeats it while ARM
    works: the repeat follows the operation on a chain of its own (the first one's messages
    would drop its own as duplicates), flushes nothing again, and its reply session gets the
    final event; the topic still has it once."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, *[Answer(202, both(op.url), op.status("InProgress"))] * 12,
                       then=Answer(200, {}, op.status("Succeeded")))
    h.send_request(requestId="deploy-7", message_id="first")
    h.run(limit=1)  # accepted; its chain goes on
    h.clock.advance(5)
    h.send_request(requestId="deploy-7", message_id="second", reply_to="redis-flush-replies",
                   reply_to_session_id="deploy-7")

    h.run()

    assert [r.method for r in h.arm.requests].count("POST") == 1
    finals = [e.message for e in h.bus.messages("redis-flush-replies")
              if e.message.subject == "RedisFlush.FlushCompleted"]
    assert [json.loads(m.body)["data"]["status"] for m in finals] == ["Succeeded"]
    assert finals[0].session_id == "deploy-7"
    assert [e.message.message_id for e in h.events()] == ["deploy-7:completed"]


@pytest.mark.parametrize("first_timeout, repeat_timeout, status", [
    (3600, 60, "Succeeded"),   # the repeat's shorter timeout must not end the flush early
    (60, 3600, "TimedOut"),    # nor its longer one tell its waiter another story
])
def test_a_waiting_repeat_keeps_the_first_sends_deadline(
        h: Harness, first_timeout: int, repeat_timeout: int, status: str) -> None:
    """A `send --wait` repeat writes its own timeoutSeconds; the flush is the first send's,
    and so is its deadline: the topic, the ledger and the waiter's reply say one outcome."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, *[Answer(202, {**both(op.url), "Retry-After": "20"},
                                    op.status("InProgress"))] * 10,
                       then=Answer(200, {}, op.status("Succeeded")))  # ends after ~200 s
    h.send_request(requestId="deploy-9", timeoutSeconds=first_timeout, message_id="first")
    h.run(limit=1)
    h.clock.advance(5)
    h.send_request(requestId="deploy-9", timeoutSeconds=repeat_timeout, message_id="second",
                   reply_to="redis-flush-replies", reply_to_session_id="deploy-9")

    h.run()

    topic = [json.loads(e.message.body)["data"]["status"] for e in h.events()]
    replies = [json.loads(e.message.body)["data"]["status"]
               for e in h.bus.messages("redis-flush-replies")
               if e.message.subject == "RedisFlush.FlushCompleted"]
    (row,) = [r for r in h.ledger.rows("deploy-9") if r.key]
    assert topic == replies == [status]
    assert row.data["outcome"]["status"] == status


# -- redeliveries --------------------------------------------------------------------------

def test_a_delivery_that_found_the_claim_busy_looks_again_before_timing_out(
        h: Harness) -> None:
    """Two deliveries at once (the first's lock was lost while its POST was at ARM), and a
    deadline inside the claim's 90 s lease: the second one's chain, the one that survives,
    claims once more at the deadline and follows the accepted flush to its end instead of
    timing the cache out without a look."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b"", delay=1.0))
    h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    h.send_request(requestId="short-1", timeoutSeconds=60)
    envelope = take(h, h.settings.request_queue)
    first = threading.Thread(target=FlushTrigger.main,
                             args=(trigger_message(envelope, h.clock.now()),))
    first.start()
    deadline = time.monotonic() + 10
    while not h.arm.requests and time.monotonic() < deadline:
        time.sleep(0.01)  # the first delivery's POST is at ARM
    envelope.delivery_count = 2  # its lock was lost: delivered again meanwhile
    FlushTrigger.main(trigger_message(envelope, h.clock.now()))
    first.join()

    h.run()

    assert [r.method for r in h.arm.requests].count("POST") == 1
    h.event("short-1", "Succeeded")

def test_a_redelivered_request_gives_one_post_one_poll_chain_and_one_event(
        h: Harness) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, Answer(202, both(op.url), op.status("InProgress")),
                       Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.bus.deliver_twice(rid)

    done = h.run()

    assert [d.delivery_count for d in done if d.queue == h.settings.request_queue] == [1, 2]
    # The redelivery found the accepted row in the ledger: no second POST; it followed the
    # recorded operation at once, and its poll step had the chain's MessageId (dropped).
    assert [(r.method, r.client_request_id) for r in h.arm.requests] == \
        [("POST", f"{rid}:0.0"), ("GET", f"{rid}:0.0"), ("GET", f"{rid}:0.1")]
    assert [e.message_id for e in h.bus.dropped] == [f"{rid}:poll:1"]
    assert [p.message_id for p in h.polls(rid)] == [f"{rid}:poll:1"]
    # The event counts its own chain (POST, GET); the redelivery's GET is the extra request.
    data = h.event(rid, "Succeeded", arm_requests=len(h.arm.requests_for(rid)) - 1)
    assert data["armRequests"] == 2
    rows = {r.key: r.state for r in h.ledger.rows(rid)}
    assert rows == {"": "done", resource_id().lower(): "done"}


BUSY = Answer(409, {}, {"error": {"code": "Conflict", "message": "busy, try again later"}})


def test_a_post_retried_after_busy_claims_the_ledger_again(h: Harness) -> None:
    """The first delivery's POST meets 409 busy: its row says `retry` and the retry step is
    scheduled. The request is delivered again (its completion was lost); the redelivery
    claims the `retry` row and POSTs (accepted). The retry step must then claim too, find
    the accepted row and follow it; POSTing from the poll state alone flushes twice."""
    op, second = h.arm.new_operation(SUB), h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, BUSY, Answer(202, both(op.url), b""),
                   then=Answer(202, both(second.url), b""))
    h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    h.arm.on_operation(second, then=Answer(200, {}, second.status("Succeeded")))
    rid = h.send_request()
    h.bus.deliver_twice(rid)

    h.run()

    posts = [r for r in h.arm.requests if r.method == "POST"]
    # the refused POST, then exactly one that ARM accepted
    assert [r.client_request_id for r in posts] == [f"{rid}:0.0", f"{rid}:0.0"]
    assert h.arm.route("GET", second.path).requests == []
    h.event(rid, "Succeeded", arm_requests=len(h.arm.requests_for(rid)) - 1)


def test_a_redelivered_request_whose_post_was_refused_posts_once_more(h: Harness) -> None:
    """A 409 is no flush: the ledger row says `retry`, so a redelivery may POST again; the
    retry step it would have scheduled has the chain's MessageId (dropped)."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, BUSY, Answer(202, both(op.url), b""))
    h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.bus.deliver_twice(rid)
    h.run(limit=2)  # the request and its redelivery, nothing else yet

    assert [r.method for r in h.arm.requests] == ["POST", "POST"]
    assert [e.message_id for e in h.bus.dropped] == [f"{rid}:poll:1"]
    (waiting,) = h.bus.active[h.settings.poll_queue]
    # the first delivery's retry step, still to come (the test above: no third POST)
    assert target_of(waiting)["acceptedAt"] is None and target_of(waiting)["failures"] == 1
    assert h.ledger.get(rid, resource_id().lower()).state == "accepted"


@pytest.mark.parametrize("step", [1, 2], ids=["running-step", "final-step"])
def test_a_redelivered_poll_message_gives_one_chain_and_one_event(h: Harness,
                                                                   step: int) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    # poll:`step` is answered the same way both times it is delivered
    running = [Answer(202, both(op.url), op.status("InProgress"))] * (3 - step)
    h.arm.on_operation(op, *running, then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.bus.deliver_twice(f"{rid}:poll:{step}")

    done = h.run()

    assert [d.message_id for d in done if d.delivery_count == 2] == [f"{rid}:poll:{step}"]
    assert len(h.events()) == 1
    assert [p.message_id for p in h.polls(rid)] == [f"{rid}:poll:1", f"{rid}:poll:2"]
    dropped = [e.message_id for e in h.bus.dropped]
    assert dropped == [f"{rid}:poll:2" if step == 1 else f"{rid}:completed"]
    # the event counts its chain; the second delivery of a running step GETs once more, of
    # the final step reads the ledger's rows (the end recorded) and calls ARM no more
    extra = 1 if step == 1 else 0
    h.event(rid, "Succeeded", arm_requests=len(h.arm.requests_for(rid)) - extra)


# -- bus failures --------------------------------------------------------------------------

def test_a_bus_failure_makes_main_raise(h: Harness) -> None:
    script_success(h)
    h.send_request()
    envelope = take(h, h.settings.request_queue)
    h.bus.fail(h.settings.poll_queue)
    with pytest.raises(BusError):
        FlushTrigger.main(trigger_message(envelope, h.clock.now()))


@pytest.mark.parametrize("entity", ["redis-flush-polls", "redis-flush-events"])
def test_a_bus_failure_is_redelivered_and_still_gives_one_event(h: Harness,
                                                                entity: str) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, then=Answer(202, both(op.url), b""))
    h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request()
    h.bus.fail(entity)

    done = h.run(allow_errors=True)

    failed = [d for d in done if d.error is not None]
    assert len(failed) == 1 and isinstance(failed[0].error, BusError)
    assert failed[0].outcome == "abandoned"
    retried = [d for d in done if d.message_id == failed[0].message_id]
    assert [(d.delivery_count, d.outcome) for d in retried] == [(1, "abandoned"),
                                                                (2, "completed")]
    # the step that failed ran again: its POST is carried in the ledger row (poll queue
    # case); a poll step whose event failed reads the end its first try recorded (no second
    # GET), so the event says what the row keeps
    h.event(rid, "Succeeded", arm_requests=len(h.arm.requests_for(rid)))
    assert json.loads(h.events()[0].message.body)["data"]["completedAt"] == \
        h.ledger.get(rid, resource_id().lower()).data["outcome"]["completedAt"][:23] + "Z"


def test_a_rejection_whose_event_cannot_be_published_is_redelivered(h: Harness) -> None:
    mid = h.send_request({"cacheName": "x"})
    h.bus.fail(h.settings.events_topic, times=2)
    done = h.run(allow_errors=True)
    assert [d.outcome for d in done] == ["abandoned", "abandoned", "completed"]
    h.event(mid, "Rejected", rid=None, arm_requests=0, event_id=rejected_id(mid))


def test_a_bus_that_stays_down_dead_letters_the_request(h: Harness) -> None:
    h.arm.on_flush(SUB, RG, CACHE, then=Answer(200, {}, {"status": "Succeeded"}))
    mid = h.send_request()
    h.bus.fail(times=100)
    done = h.run(allow_errors=True)
    assert [d.delivery_count for d in done] == list(range(1, 11))
    assert done[-1].outcome == "dead-lettered"
    assert [e.message_id for e in h.bus.dead_letters[h.settings.request_queue]] == [mid]
    assert h.events() == []


def test_an_unreadable_poll_message_is_dead_lettered_without_a_request(h: Harness) -> None:
    h.bus.inject(h.settings.poll_queue, OutboundMessage(b'{"v": 99}', "stranger:poll:1"))
    done = h.run(allow_errors=True)
    assert done[-1].outcome == "dead-lettered" and len(done) == 10
    assert all(isinstance(d.error, ValueError) for d in done)
    assert h.arm.requests == [] and h.events() == []


# -- ids, replies, what the worker hands over ----------------------------------------------

def test_request_id_defaults_to_the_message_id_and_the_body_can_set_it(h: Harness) -> None:
    h.arm.on_flush(SUB, RG, CACHE, Answer(200, {}, b""), Answer(200, {}, b""))
    implicit = h.send_request(message_id="pipeline-run-42.step_3")
    h.send_request(requestId="deploy:2024-05-01:cache-01", correlation_id="corr-9")
    h.run()
    h.event(implicit, "Succeeded")
    data = h.event("deploy:2024-05-01:cache-01", "Succeeded")
    assert data["requestId"] == "deploy:2024-05-01:cache-01"
    assert {r.request_id for r in h.arm.requests} == {implicit, "deploy:2024-05-01:cache-01"}


def test_reason_and_requested_by_are_copied_into_the_event(h: Harness) -> None:
    h.arm.on_flush(SUB, RG, CACHE, Answer(200, {}, b""))
    rid = h.send_request(reason="release 7.1 schema change", requestedBy="pipeline:deploy")
    h.run()
    data = h.event(rid, "Succeeded")
    assert (data["reason"], data["requestedBy"]) == ("release 7.1 schema change",
                                                    "pipeline:deploy")


@pytest.mark.parametrize("session", ["waiter-7", None])
def test_the_event_also_goes_to_the_reply_session(h: Harness, session: str | None) -> None:
    script_success(h, running=2)
    rid = h.send_request(reply_to="redis-flush-replies", reply_to_session_id=session)
    h.run()
    h.event(rid, "Succeeded")
    replies = h.bus.messages("redis-flush-replies")
    (completed,) = [r for r in replies if r.message_id == f"{rid}:completed"]
    assert completed.message.session_id == (session or rid)
    assert completed.message.body == h.events()[0].message.body
    assert completed.message.content_type == "application/cloudevents+json"
    assert {r.message.session_id for r in replies} == {session or rid}
    # progress notes, if any, come before the completion and are never completion events
    assert replies[-1] is completed
    assert all(r.body_json["type"] != "RedisFlush.FlushCompleted" for r in replies[:-1])


def test_no_reply_copy_without_reply_to(h: Harness) -> None:
    script_success(h)
    rid = h.send_request()
    h.run()
    h.event(rid, "Succeeded")
    queues = [entity for kind, entity, _ in h.bus.send_calls if kind == "queue"]
    assert set(queues) == {h.settings.poll_queue}


ENQUEUED_FORMS = {
    "dotnet-Z": "2024-05-01T11:59:59.5000000Z",
    "offset": "2024-05-01T11:59:59.500000+00:00",
    "no-offset": "2024-05-01T11:59:59.5000000",  # the worker's fallback: a naive datetime
    "us-format": "05/01/2024 11:59:59.5Z",
}


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch):
    """Run with a local time zone far from UTC, as a developer machine may have."""
    import time
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("path", ["202-chain", "200-at-once", "rejected"])
@pytest.mark.parametrize("form", list(ENQUEUED_FORMS))
def test_every_enqueued_time_form_the_worker_parses_is_handled(
        h: Harness, far_from_utc: None, form: str, path: str) -> None:
    if path == "202-chain":
        script_success(h)
    elif path == "200-at-once":
        h.arm.on_flush(SUB, RG, CACHE, Answer(200, {}, b""))
    rid = h.send_request({"cacheName": "x"} if path == "rejected" else None)
    envelope = take(h, h.settings.request_queue)
    FlushTrigger.main(trigger_message(envelope, h.clock.now(),
                                      enqueued_time=ENQUEUED_FORMS[form]))
    h.run()
    data = h.event(rid, "Rejected" if path == "rejected" else "Succeeded",
                   rid=None if path == "rejected" else resource_id(),
                   event_id=rejected_id(rid) if path == "rejected" else None)
    assert data["requestedAt"] == "2024-05-01T11:59:59.500Z"
    assert data["durationSeconds"] >= 0.5


@pytest.mark.parametrize("datum_type", ["string", "json"])
def test_a_request_handed_over_as_text_works_like_bytes(h: Harness, datum_type: str) -> None:
    script_success(h)
    rid = h.send_request()
    envelope = take(h, h.settings.request_queue)
    FlushTrigger.main(trigger_message(envelope, h.clock.now(), datum_type=datum_type))
    envelope = take(h, h.settings.poll_queue)
    h.clock.advance_to(envelope.visible_at)
    PollOrchestrator.main(trigger_message(envelope, h.clock.now(), datum_type=datum_type))
    h.run()
    h.event(rid, "Succeeded")


def test_the_worker_message_carries_what_the_app_reads(h: Harness) -> None:
    mid = h.send_request(reply_to="redis-flush-replies", reply_to_session_id="s-9",
                         correlation_id="c-1")
    envelope = take(h, h.settings.request_queue)
    msg = trigger_message(envelope, h.clock.now())
    assert (msg.message_id, msg.delivery_count, msg.reply_to, msg.reply_to_session_id,
            msg.correlation_id) == (mid, 1, "redis-flush-replies", "s-9", "c-1")
    # EnqueuedTimeUtc comes without an offset, as in Azure: a naive datetime meaning UTC
    assert msg.enqueued_time_utc == START.replace(tzinfo=None)
    assert msg.get_body() == envelope.message.body
    assert msg.application_properties == {} and msg.user_properties == {}
    h.bus.active[h.settings.request_queue].append(envelope)  # put it back


def test_no_invocation_sleeps_more_than_a_moment(h: Harness) -> None:
    op = script_success(h, running=20)
    for n in range(30):  # a burst of requests through the same pacer
        h.arm.on_flush(SUB, RG, f"cache-{n:02d}", Answer(200, {}, b""))
        h.send_request(cacheName=f"cache-{n:02d}")
    rid = h.send_request()
    h.run()
    h.event(rid, "Succeeded")
    assert len(h.events()) == 31
    assert all(s <= 1.0 for s in h.clock.sleeps)
    assert op is not None


def test_the_deadline_is_fixed_when_the_request_arrives(h: Harness) -> None:
    script_success(h)
    rid = h.send_request(timeoutSeconds=120)
    h.run()
    h.event(rid, "Succeeded")
    deadlines = {p.body_json["deadline"] for p in h.polls(rid)}
    assert deadlines == {(START + dt.timedelta(seconds=120)).isoformat(
        timespec="microseconds").replace("+00:00", "Z")}  # state keeps microseconds
    assert json.loads(h.events()[0].message.body)["data"]["acceptedAt"] == \
        START.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_progress_note_that_cannot_be_sent_does_not_redeliver_the_step(h: Harness) -> None:
    script_success(h, running=2)
    rid = h.send_request(reply_to="redis-flush-replies", reply_to_session_id="w-1")
    h.bus.fail("redis-flush-replies", times=1)  # the first reply-queue send: a progress note
    done = h.run()
    assert all(d.outcome == "completed" for d in done)
    assert len(h.arm.requests_for(rid)) == h.event(rid, "Succeeded")["armRequests"]
    replies = h.bus.messages("redis-flush-replies")
    assert replies[-1].message_id == f"{rid}:completed"


def test_a_request_id_sent_again_after_the_ledger_purge_flushes_again(h: Harness) -> None:
    """While the ledger keeps a request (until a day past its deadline) the same requestId is
    a repeat: no POST. LedgerPurge then deletes its rows, and the requestId is new again."""
    def script() -> None:
        op = h.arm.new_operation(SUB)
        h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
        h.arm.on_operation(op, Answer(200, {}, op.status("Succeeded")))

    script()
    h.send_request(requestId="nightly")
    first_sent = h.clock.now()
    h.run()
    h.send_request(requestId="nightly", message_id="again-1")
    h.run()
    assert [r.method for r in h.arm.requests] == ["POST", "GET"]
    rows = h.ledger.rows("nightly")
    expires = max(r.expires_at for r in rows)
    assert len(rows) == 2 and all(r.expires_at == expires for r in rows)
    keep = dt.timedelta(seconds=h.settings.timeout_seconds, days=1)
    assert first_sent + keep <= expires <= h.clock.now() + keep

    h.clock.advance_to(expires - dt.timedelta(seconds=1))
    assert LedgerPurge.main(TimerRequest()) is None
    assert len(h.ledger.rows("nightly")) == 2
    h.clock.advance_to(expires)
    LedgerPurge.main(TimerRequest())
    assert h.ledger.rows("nightly") == []

    script()
    h.send_request(requestId="nightly", message_id="again-2")
    h.run()
    assert [r.method for r in h.arm.requests] == ["POST", "GET", "POST", "GET"]
    statuses = [json.loads(e.message.body)["data"]["status"] for e in h.events()
                if e.message.correlation_id == "nightly"]
    # the first and the new request's: the repeat's copy had the same event id within the
    # topic's duplicate-detection window, so Service Bus dropped it
    assert statuses == ["Succeeded"] * 2
    assert [m.message_id for m in h.bus.dropped if m.message_id == "nightly:completed"]


def test_requests_sent_without_a_message_id_each_flush_once(h: Harness) -> None:
    """The .NET SDK's ServiceBusMessage sends no MessageId unless told to. Two such requests
    for one cache, with no requestId in the body, shared one requestId (a digest of ""): the
    second was answered as a repeat of the first and never flushed. Each now has its own
    requestId from its SequenceNumber and enqueue time, which its redelivery repeats."""
    h.arm.on_flush(SUB, RG, CACHE, Answer(200, {}, b""), Answer(200, {}, b""))
    body = json.dumps({"subscriptionId": SUB, "resourceGroup": RG,
                       "cacheName": CACHE}).encode()
    for _ in range(2):
        envelope = h.bus.inject(h.settings.request_queue, OutboundMessage(body, ""))
        assert envelope is not None
        h.bus.deliver_twice("")
        done = h.run()
        assert [d.delivery_count for d in done] == [1, 2]
        h.clock.advance(3600)

    posts = [r.client_request_id for r in h.arm.requests if r.method == "POST"]
    assert len(posts) == 2, posts
    ids = [e.message.correlation_id for e in h.events()]
    assert len(ids) == 2 and len(set(ids)) == 2, ids
    assert all(i is not None and i.startswith("sb-seq-") for i in ids), ids
    assert [e.body_json["data"]["status"] for e in h.events()] == ["Succeeded", "Succeeded"]
