"""What a request may say about itself, over HTTP: its requestId (one set of caches for good,
kept by the ledger: docs/design.md, "Request ledger") and its ReplyTo (a plain queue of the
sender's, never a subqueue, a topic path or the app's own queues: "Flush request").
"""
from __future__ import annotations

import hashlib
import json

import pytest

from tests.support.harness import CACHE, RG, SUB, Harness, check_event, rejected_id, resource_id
from tests.support.scripted_arm import Answer, flush_path


def script(h: Harness, cache: str = CACHE, running: int = 1) -> None:
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, cache, Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    h.arm.on_operation(op, *[Answer(200, {}, op.status("InProgress"))] * running,
                       then=Answer(200, {}, op.status("Succeeded")))


# -- one requestId, one set of caches ------------------------------------------------------

def test_the_same_request_id_under_two_message_ids_flushes_once(h: Harness) -> None:
    script(h)
    h.send_request(requestId="deploy-42", message_id="pipeline-try-1")
    h.send_request(requestId="deploy-42", message_id="pipeline-try-2")

    h.run()

    assert [r.method for r in h.arm.requests if r.method == "POST"] == ["POST"]
    # the second message followed the first one's operation; its chain was the same chain
    data = h.event("deploy-42", "Succeeded",
                   arm_requests=len(h.arm.requests_for("deploy-42")) - 1)
    # the chain's POST and read; the second message's own read (at once) is the extra one
    assert data["armRequests"] == 2
    assert [(r.method, r.client_request_id) for r in h.arm.requests] == [
        ("POST", "deploy-42:0.0"), ("GET", "deploy-42:0.0"), ("GET", "deploy-42:0.1")]
    assert "deploy-42:poll:1" in [e.message_id for e in h.bus.dropped]


def test_the_same_request_id_naming_another_cache_is_rejected(h: Harness) -> None:
    script(h)
    h.arm.on_flush(SUB, RG, "cache-02", then=Answer(200, {}, b""))
    h.send_request(requestId="deploy-43", message_id="m-1")
    h.run()
    h.send_request({"resourceId": resource_id(cache="cache-02"), "requestId": "deploy-43"},
                   message_id="m-2")

    done = h.run()

    assert [d.outcome for d in done] == ["completed"]  # rejected once, never retried
    assert h.arm.route("POST", flush_path(SUB, RG, "cache-02")).requests == []
    events = h.event_messages("deploy-43")
    first = check_event(events["deploy-43:completed"], "deploy-43", "Succeeded", resource_id())
    assert first["data"]["status"] == "Succeeded"
    (reused_id,) = set(events) - {"deploy-43:completed"}
    digest = hashlib.sha256(json.dumps({"targets": [resource_id(cache="cache-02").lower()]},
                                       separators=(",", ":")).encode()).hexdigest()[:12]
    assert reused_id == f"deploy-43:reused:{digest}:completed"
    reused = check_event(events[reused_id], "deploy-43", "Rejected",
                         resource_id(cache="cache-02"), event_id=reused_id)["data"]
    assert reused["error"]["code"] == "RequestIdReused"
    assert reused["error"]["target"] == "requestId"
    assert reused["armRequests"] == 0


def test_a_repeat_after_the_duplicate_window_republishes_the_same_event(h: Harness) -> None:
    """Same id, same event: a subscriber deduplicating by id must not see two stories."""
    script(h, running=0)
    h.send_request(requestId="deploy-44", message_id="m-1")
    h.run()
    h.clock.advance(3600)  # the topic's duplicate detection window (10 min) has passed
    h.send_request(requestId="deploy-44", message_id="m-2")

    h.run()

    assert [r.method for r in h.arm.requests] == ["POST", "GET"]  # no second flush
    first, again = [e.message for e in h.events()]
    assert first.message_id == again.message_id == "deploy-44:completed"
    assert json.loads(again.body) == json.loads(first.body)


def test_a_repeat_of_a_finished_request_flushes_nothing(h: Harness) -> None:
    script(h, running=0)
    h.send_request(requestId="deploy-45", message_id="m-1")
    h.run()
    h.clock.advance(120)
    h.send_request(requestId="deploy-45", message_id="m-2")

    h.run()

    assert [r.method for r in h.arm.requests] == ["POST", "GET"]
    assert [e.message_id for e in h.bus.dropped] == ["deploy-45:completed"]
    h.event("deploy-45", "Succeeded")


# -- ReplyTo -------------------------------------------------------------------------------

@pytest.mark.parametrize("reply_to", [
    "redis-flush-replies/$deadletterqueue",    # a subqueue: the sender's dead letters
    "redis-flush-events/subscriptions/audit",  # a topic path
    "redis-flush-requests",                    # the app's own request queue: a loop
    "REDIS-FLUSH-POLLS",                       # its poll queue, in any case
    "redis-flush-events",                      # its events topic: replies would be events
    "replies with space",
])
def test_a_reply_to_that_is_not_a_plain_queue_of_the_sender_is_rejected(
        h: Harness, reply_to: str) -> None:
    h.arm.on_flush(SUB, RG, CACHE, then=Answer(200, {}, b""))
    mid = h.send_request(reply_to=reply_to, reply_to_session_id="s-1")

    done = h.run()

    assert [d.outcome for d in done] == ["completed"]
    data = h.event(mid, "Rejected", rid=None, arm_requests=0, event_id=rejected_id(mid))
    assert data["error"]["target"] == "ReplyTo" and data["error"]["code"] == "InvalidRequest"
    assert h.arm.requests == [] and h.arm.connections == 0
    # nothing went anywhere but the topic: no reply, no message back on the app's queues
    sent = {entity for kind, entity, _ in h.bus.send_calls}
    assert sent == {h.settings.events_topic}
    assert [e.message_id for e in h.bus.messages(h.settings.request_queue)] == [mid]


def test_a_reply_queue_that_does_not_exist_never_makes_a_step_run_again(h: Harness) -> None:
    script(h, running=2)
    h.bus.fail("gone-replies", times=100,
               error="MessagingEntityNotFoundError: the queue gone-replies does not exist")
    rid = h.send_request(reply_to="gone-replies", reply_to_session_id="s-2")

    done = h.run()

    # every delivery completed the first time: the request, then three poll steps
    assert [(d.delivery_count, d.outcome) for d in done] == [(1, "completed")] * 4
    h.event(rid, "Succeeded")  # the topic event is out
    assert [r.method for r in h.arm.requests] == ["POST", "GET", "GET", "GET"]
    tried = [ids for kind, entity, ids in h.bus.send_calls if entity == "gone-replies"]
    assert tried and tried[-1] == [f"{rid}:completed"]  # notes were tried, then the reply
    assert h.bus.messages("gone-replies") == []


def test_a_final_reply_that_fails_is_not_retried_by_running_the_step_again(
        h: Harness) -> None:
    """Even a failure that may pass (a busy server, after the SDK's own retries) leaves the
    step done: running it again would read ARM again (another outcome than the topic's is
    possible) and redo what came before the reply. The topic has the event."""
    h.arm.on_flush(SUB, RG, CACHE, then=Answer(200, {}, b""))
    h.bus.fail("redis-flush-replies", times=1,
               error="ServiceBusServerBusyError: the server is busy")
    rid = h.send_request(reply_to="redis-flush-replies", reply_to_session_id="s-1")

    done = h.run()

    assert [(d.delivery_count, d.outcome) for d in done] == [(1, "completed")]
    h.event(rid, "Succeeded")
    assert [r.method for r in h.arm.requests] == ["POST"]
    assert h.bus.messages("redis-flush-replies") == []
