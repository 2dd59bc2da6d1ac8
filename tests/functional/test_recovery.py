"""The recovery procedures of docs/azure.md ("Dead-lettered messages"), carried out against
the memory bus: a request dead-lettered after ARM accepted its POSTs (the poll queue was
down for all ten deliveries) is re-sent once the cause is fixed. The ledger keeps its caches
from a second POST only when the re-sent message keeps its requestId: the body's, or, for a
body without one, the MessageId."""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

from redisflush.bus import OutboundMessage
from redisflush.ledger import LedgerError, MemoryLedger
from tests.support.harness import RG, SUB, Harness, resource_id
from tests.support.harness import database_id as amr_id
from tests.support.scripted_arm import Answer, database_body, enterprise_flush_path, flush_path

CACHES = ["cache-a", "cache-b"]
BODY = {"resourceIds": [resource_id(cache=c) for c in CACHES]}
FIRST = "sb-message-1"  # the MessageId the pipeline's SDK gave the request


def _script(h: Harness) -> None:
    for cache in CACHES:
        op = h.arm.new_operation(SUB)
        h.arm.on_flush(SUB, RG, cache, then=Answer(202, {"Azure-AsyncOperation": op.url}, b""))
        # running while the request is redelivered nine times (each reads it once), over by
        # the time it is re-sent
        running = [Answer(200, {}, op.status("InProgress"))] * 9
        h.arm.on_operation(op, *running, then=Answer(200, {}, op.status("Succeeded")))


def _posts(h: Harness) -> list[int]:
    return [len(h.arm.route("POST", flush_path(SUB, RG, c)).requests) for c in CACHES]


def _dead_lettered(h: Harness) -> OutboundMessage:
    """The request, its POSTs accepted, dead-lettered because no poll message could be sent."""
    _script(h)
    h.send_request(BODY, message_id=FIRST)
    h.bus.fail(h.settings.poll_queue, times=10)
    done = h.run(allow_errors=True)
    assert [d.outcome for d in done][-1] == "dead-lettered" and len(done) == 10
    assert _posts(h) == [1, 1]
    [envelope] = h.bus.dead_letters[h.settings.request_queue]
    h.clock.advance(11 * 60)  # past the queue's duplicate-detection window
    return envelope.message


def _resend(h: Harness, message: OutboundMessage, message_id: str, body: dict) -> None:
    assert h.bus.inject(h.settings.request_queue, OutboundMessage(
        json.dumps(body).encode(), message_id)) is not None
    h.run()


def _statuses(h: Harness, request_id: str) -> list[str]:
    return [json.loads(e.message.body)["data"]["status"] for e in h.events()
            if e.message.correlation_id == request_id]


def test_resent_as_is_it_continues_without_a_second_post(h: Harness) -> None:
    message = _dead_lettered(h)
    _resend(h, message, FIRST, BODY)
    assert _posts(h) == [1, 1]
    assert _statuses(h, FIRST) == ["Succeeded"] * 3  # each cache's event and the request's


def test_resent_under_a_new_message_id_it_is_a_new_request_and_posts_again(
        h: Harness) -> None:
    """What a re-send tool that gives the copy a MessageId of its own does to a request whose
    body names no requestId: the docs say to check the MessageId, or name the requestId."""
    message = _dead_lettered(h)
    _resend(h, message, "sb-copy-1", BODY)
    assert _posts(h) == [2, 2]


def test_resent_naming_the_first_message_id_as_request_id_posts_nothing_again(
        h: Harness) -> None:
    """What `send --request-id FIRST` (or a body with that requestId) does."""
    message = _dead_lettered(h)
    _resend(h, message, "sb-copy-2", {**BODY, "requestId": FIRST})
    assert _posts(h) == [1, 1]
    assert _statuses(h, FIRST) == ["Succeeded"] * 3


def test_resent_after_its_deadline_reads_the_accepted_flushes_once_and_never_posts(
        h: Harness) -> None:
    """The first send's deadline holds for every delivery of a requestId (README, "The flush
    request"): a re-send after it ends the request, with one read of each operation ARM
    accepted. Before the fix the caches ended TimedOut "while the flush was NotStarted",
    with no acceptedAt, though ARM had run their flushes: the engineer would send them again
    under a new requestId and flush twice."""
    message = _dead_lettered(h)
    before = len(h.arm.requests)
    h.clock.advance(dt.timedelta(hours=1).total_seconds())
    _resend(h, message, FIRST, BODY)
    assert [r.method for r in h.arm.requests[before:]] == ["GET", "GET"]
    assert _posts(h) == [1, 1]
    assert _statuses(h, FIRST) == ["Succeeded"] * 3
    for event in h.events()[:2]:
        assert json.loads(event.message.body)["data"]["acceptedAt"] is not None


def test_resent_after_its_deadline_while_arm_still_runs_it_says_so(h: Harness) -> None:
    message = _dead_lettered(h)
    for route in h.arm.routes.values():  # the operations are still running
        if route.method == "GET":
            route.answers.appendleft(Answer(200, {}, {"status": "InProgress"}))
    h.clock.advance(dt.timedelta(hours=1).total_seconds())
    _resend(h, message, FIRST, BODY)
    assert _posts(h) == [1, 1]
    datas = [json.loads(e.message.body)["data"] for e in h.events()
             if e.message.correlation_id == FIRST]
    assert [d["status"] for d in datas] == ["TimedOut"] * 3
    assert [d["error"]["message"] for d in datas[:2]] == [
        "the deadline passed while the flush was InProgress"] * 2
    assert all(d["acceptedAt"] is not None for d in datas[:2])


class NoAcceptanceLedger(MemoryLedger):
    """The table refuses every record of a target as accepted: the claims stay `posting`."""

    def update(self, row):  # type: ignore[no-untyped-def]
        if row.key and row.state == "accepted":
            raise LedgerError("table service: 503 ServerBusy")
        return super().update(row)


def test_resent_after_its_deadline_a_claim_never_recorded_accepted_is_in_doubt(
        make_harness: Callable[..., Harness]) -> None:
    h = make_harness(ledger=NoAcceptanceLedger())
    message = _dead_lettered(h)
    before = len(h.arm.requests)
    h.clock.advance(dt.timedelta(hours=1).total_seconds())
    _resend(h, message, FIRST, BODY)
    assert h.arm.requests[before:] == [] and _posts(h) == [1, 1]
    datas = [json.loads(e.message.body)["data"] for e in h.events()
             if e.message.correlation_id == FIRST]
    assert [d["status"] for d in datas] == ["TimedOut"] * 3
    assert all("ARM may or may not have run it" in d["error"]["message"] for d in datas[:2])


def test_resent_after_its_deadline_a_managed_redis_database_reads_its_accepted_flush(
        h: Harness) -> None:
    """A Managed Redis database starts by reading its geo group ("read"), not at its claim:
    re-sent after the deadline it too is read once from its `accepted` row, never said
    TimedOut "while the flush was NotStarted" (the engineer would flush it again)."""
    cluster = "amr-a"
    h.arm.on_database(SUB, RG, cluster, "default",
                      then=Answer(200, {}, database_body(SUB, RG, cluster)))
    op = h.arm.new_operation(SUB)
    h.arm.on_enterprise_flush(SUB, RG, cluster, "default",
                              then=Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    running = [Answer(200, {}, op.status("InProgress"))] * 9
    h.arm.on_operation(op, *running, then=Answer(200, {}, op.status("Succeeded")))
    body = {"resourceId": amr_id(cluster)}
    h.send_request(body, message_id=FIRST)
    h.bus.fail(h.settings.poll_queue, times=10)
    done = h.run(allow_errors=True)
    assert [d.outcome for d in done][-1] == "dead-lettered"
    posts = len(h.arm.route("POST", enterprise_flush_path(SUB, RG, cluster)).requests)
    assert posts == 1
    h.clock.advance(dt.timedelta(hours=1).total_seconds())
    before = len(h.arm.requests)
    _resend(h, OutboundMessage(b"", FIRST), FIRST, body)
    assert "POST" not in [r.method for r in h.arm.requests[before:]]
    datas = [json.loads(e.message.body)["data"] for e in h.events()
             if e.message.correlation_id == FIRST]
    assert [d["status"] for d in datas] == ["Succeeded"] * len(datas), datas
    assert datas[0]["acceptedAt"] is not None
