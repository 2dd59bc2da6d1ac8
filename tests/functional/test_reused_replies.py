"""Each waiting send of a reused requestId gets its own RequestIdReused reply: the copies'
MessageIds differ per send, so the reply queue's duplicate detection drops none of them (the
topic keeps one event)."""
from __future__ import annotations

import json

from tests.support.harness import RG, SUB, Harness, resource_id
from tests.support.scripted_arm import Answer

REPLIES = "redis-flush-replies"


def test_each_waiting_send_of_a_reused_request_id_gets_its_rejection(h: Harness) -> None:
    """`send --request-id deploy-60 --wait` for cache-02 after deploy-60 flushed cache-01 is
    Rejected (RequestIdReused, exit 1). The pipeline step is retried (same command) within
    the reply queue's 10-minute duplicate window: the app answers it with the same event, but
    its reply copy carries the same MessageId `deploy-60:reused:{digest}:completed` as the
    first one (rejection_commands gives it no reply tag, unlike a repeat's other replies), so
    the reply queue drops it and the second waiter sits until its timeout + 60 s and exits 3
    (TimedOut) instead of 1. Seen with serve --local: third send exited 3 after 90 s."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, "cache-01", Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    h.send_request({"resourceId": resource_id(cache="cache-01"), "requestId": "deploy-60"},
                   message_id="deploy-60:aaaa")
    h.run()
    for mid in ("deploy-60:bbbb", "deploy-60:cccc"):
        h.send_request({"resourceId": resource_id(cache="cache-02"), "requestId": "deploy-60"},
                       message_id=mid, reply_to=REPLIES, reply_to_session_id="deploy-60")
        h.run()
    replies = [json.loads(e.message.body) for e in h.bus.messages(REPLIES)
               if e.message.subject == "RedisFlush.FlushCompleted"]
    assert [r["data"]["error"]["code"] for r in replies] == ["RequestIdReused"] * 2, (
        [e.message_id for e in h.bus.dropped])
