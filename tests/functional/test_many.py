"""Several caches in one request over HTTP (docs/design.md, "Poll message" and "Completion
events"): one chain follows every target, each cache's event goes out as soon as it ends, the
request's event when the last one does, and status reads share the subscription's budget.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from tests.support.harness import RG, SCOPE, SUB, Harness, database_id, resource_id, target_of
from tests.support.memory_bus import START
from tests.support.scripted_arm import Answer, Operation, database_body

GONE = {"error": {"code": "ResourceNotFound", "message": "cache-b was not found"}}


def seconds(moment: dt.datetime) -> float:
    return (moment - START).total_seconds()


def accept(h: Harness, cache: str, running: int, **headers: str) -> Operation:
    """Cache `cache` accepts its flush and runs for `running` status reads."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, cache, Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    h.arm.on_operation(op, *[Answer(200, headers, op.status("InProgress"))] * running,
                       Answer(200, headers, op.status("Succeeded")))
    return op


def test_one_target_failing_while_the_others_succeed(h: Harness) -> None:
    accept(h, "cache-a", running=2)
    h.arm.on_flush(SUB, RG, "cache-b", Answer(404, {}, GONE))
    h.arm.on_flush(SUB, RG, "cache-c", Answer(200, {}, b""))
    ids = [resource_id(cache=c) for c in ("cache-c", "cache-a", "cache-b")]
    rid = h.send_request({"resourceIds": ids, "reason": "release 9"},
                         reply_to="redis-flush-replies", reply_to_session_id="w-1")

    h.run()

    statuses = {resource_id(cache="cache-a"): "Succeeded",
                resource_id(cache="cache-b"): "Failed",
                resource_id(cache="cache-c"): "Succeeded"}
    caches, request = h.batch(rid, statuses, "Failed")
    assert request["counts"] == {"Succeeded": 2, "Failed": 1}
    assert request["reason"] == "release 9"
    failed = caches[resource_id(cache="cache-b")]
    assert failed["error"]["code"] == "ResourceNotFound" and failed["armRequests"] == 1
    (result,) = [r for r in request["results"] if r["status"] == "Failed"]
    assert result["error"] == {"code": "ResourceNotFound", "message": "cache-b was not found"}
    # each cache's event as soon as it ended: b and c in the request's own step, a two
    # status reads later, the request's event with the last one
    order = [(e.message_id, seconds(e.sent_at)) for e in h.events()]
    assert order == [(f"{rid}:completed:1", 0.0), (f"{rid}:completed:2", 0.0),
                     (f"{rid}:completed:0", 3.0), (f"{rid}:completed", 3.0)]
    assert request["armRequests"] == 3 + 3
    # the waiting pipeline gets notes, then the request's event only (not each cache's)
    replies = h.bus.messages("redis-flush-replies")
    assert [r.message_id for r in replies][-1] == f"{rid}:completed"
    assert all(r.message.subject == "RedisFlush.FlushProgress" for r in replies[:-1])
    assert {r.message.session_id for r in replies} == {"w-1"}
    finished = [f["name"] for r in replies[:-1] for f in r.body_json["data"]["finished"]]
    assert sorted(finished) == ["cache-b", "cache-c"]


def test_one_chain_follows_every_target(h: Harness) -> None:
    """One poll message per step for the whole request, never one per target."""
    for cache, running in (("cache-a", 1), ("cache-b", 3), ("cache-c", 0)):
        accept(h, cache, running)
    rid = h.send_request({"resourceIds": [resource_id(cache=c)
                                          for c in ("cache-a", "cache-b", "cache-c")]})

    h.run()

    polls = h.polls(rid)
    assert [p.message_id for p in polls] == [f"{rid}:poll:{n}" for n in (1, 2, 3, 4)]
    assert [p.delay for p in polls] == [1.0] * 4
    assert [[target_of(p, i)["phase"] for i in range(3)] for p in polls] == [
        ["poll", "poll", "poll"], ["poll", "poll", "done"], ["done", "poll", "done"],
        ["done", "poll", "done"]]
    # each read in its step, with the target's index and the step in its client id
    gets = sorted((r.client_request_id, seconds(r.when)) for r in h.arm.requests
                  if r.method == "GET")
    assert gets == [(f"{rid}:0.1", 1.0), (f"{rid}:0.2", 2.0), (f"{rid}:1.1", 1.0),
                    (f"{rid}:1.2", 2.0), (f"{rid}:1.3", 3.0), (f"{rid}:1.4", 4.0),
                    (f"{rid}:2.1", 1.0)]
    statuses = {resource_id(cache=c): "Succeeded" for c in ("cache-a", "cache-b", "cache-c")}
    h.batch(rid, statuses, "Succeeded")


def test_both_kinds_in_one_request(make_harness: Any) -> None:
    h = make_harness(allowed_scopes=(f"/subscriptions/{SUB}",))
    partner = database_id("amr-us", rg="rg-us")
    status, _ = h.arm.new_enterprise_operation(SUB, RG, "amr-eu", "default")
    h.arm.on_database(SUB, RG, "amr-eu", "default",
                      Answer(200, {}, database_body(SUB, RG, "amr-eu", linked=[partner])))
    h.arm.on_enterprise_flush(SUB, RG, "amr-eu", "default",
                              Answer(202, {"Azure-AsyncOperation": status.url}, b""))
    h.arm.on_operation(status, Answer(200, {}, status.status("Succeeded")))
    accept(h, "cache-01", running=0)
    db = database_id("amr-eu")
    rid = h.send_request({"resourceIds": [db, resource_id()]})

    h.run()

    caches, request = h.batch(rid, {db: "Succeeded", resource_id(): "Succeeded"},
                              "Succeeded", scope=SCOPE)
    assert caches[db]["kind"] == "redisEnterprise" and caches[db]["linkedDatabaseIds"] == \
        [partner]
    assert caches[resource_id()]["kind"] == "redis"
    post = [r for r in h.arm.requests if r.method == "POST" and "amr-eu" in r.raw_path]
    assert [json.loads(r.body) for r in post] == [{"ids": [partner]}]
    assert request["armRequests"] == 5


def test_status_reads_spread_when_the_read_budget_runs_low(h: Harness) -> None:
    """24 operations in one subscription; after the first reads ARM reports 5 reads left:
    the pacer's mirror follows the header, so later reads leave at the bucket's refill rate
    (one per 40 ms) instead of all at once, and the reading plan stretches the gap (24
    pollers over half of 80% of 25 reads/s). Removing the header feedback fails this."""
    low = {"x-ms-ratelimit-remaining-subscription-reads": "5"}
    caches = [f"cache-{i:02d}" for i in range(24)]
    for cache in caches:
        accept(h, cache, running=2, **low)
    rid = h.send_request({"resourceIds": [resource_id(cache=c) for c in caches]})

    h.run()

    reads = sorted(seconds(r.when) for r in h.arm.requests if r.method == "GET")
    # 24 in flight over 20 planned reads a second: the first reads at 1.2 s, with a full bucket
    assert len(reads) == 72 and reads[0] == 1.2
    paced = [t for t in reads if t > 1.2]  # once ARM said 5 reads were left
    assert len(paced) >= 48
    window = paced[-1] - paced[0]
    assert len(paced) - 1 <= 25 * window + 1  # at the refill rate, never in one burst
    assert reads[-1] >= 1.2 + 2 * 2.4 - 1e-6  # and the reading plan stretched the gap
    statuses = {resource_id(cache=c): "Succeeded" for c in caches}
    h.batch(rid, statuses, "Succeeded")


def test_scarce_reads_go_to_where_recent_flushes_ended(h: Harness) -> None:
    """docs/design.md, "Reliability rules": with more operations in flight than reads to
    read each every second, a new operation's first read goes to when recent flushes of its
    kind ended (here 9-10 s after acceptance, learned from one flush read every second), so
    each of the 30 is read once, at ~9.5 s, instead of every 1.5 s from the start."""
    accept(h, "first", running=9)
    h.send_request({"resourceId": resource_id(cache="first")})
    h.run()
    learned = [seconds(r.when) for r in h.arm.requests if r.method == "GET"]
    assert learned == [float(s) for s in range(1, 11)]  # 1 s apart: ended within (9, 10]

    caches = [f"cache-{i:02d}" for i in range(30)]
    for cache in caches:
        accept(h, cache, running=0)
    start = h.clock.now()
    rid = h.send_request({"resourceIds": [resource_id(cache=c) for c in caches]})
    h.run()

    reads = [(r.when - start).total_seconds() for r in h.arm_requests(rid)
             if r.method == "GET"]
    assert len(reads) == 30 and min(reads) >= 9.5 - 1e-6
    h.batch(rid, {resource_id(cache=c): "Succeeded" for c in caches}, "Succeeded")


def test_without_a_learned_duration_scarce_reads_are_shared(h: Harness) -> None:
    """The same 30 operations with nothing learned: the first reads are spread over all in
    flight (30 over 80% of 25 reads/s = 1.5 s), not at 1 s each."""
    caches = [f"cache-{i:02d}" for i in range(30)]
    for cache in caches:
        accept(h, cache, running=0)
    rid = h.send_request({"resourceIds": [resource_id(cache=c) for c in caches]})
    h.run()
    reads = [seconds(r.when) for r in h.arm.requests if r.method == "GET"]
    assert len(reads) == 30 and min(reads) >= 1.5 - 1e-6
    h.batch(rid, {resource_id(cache=c): "Succeeded" for c in caches}, "Succeeded")


def test_a_request_of_several_groups_rejected_whole_names_their_subscription(
        h: Harness) -> None:
    """A bad field rejects the request before any cache is touched: one RequestCompleted, with
    the scope its caches share (their subscription here, not the first cache's group)."""
    from tests.support.harness import check_request_event, rejected_id

    ids = [resource_id(rg="rg0", cache="c0"), resource_id(rg="rg1", cache="c1")]
    rid = h.send_request({"resourceIds": ids, "timeoutSeconds": 5})
    h.run()
    (event,) = h.events()
    doc = check_request_event(event.message, rid, "Rejected", f"/subscriptions/{SUB}",
                              event_id=rejected_id(rid))
    assert doc["data"]["error"]["target"] == "timeoutSeconds"
    assert h.arm.requests == []


def test_a_batch_and_one_cache_requests_named_like_its_ids_each_publish_every_event(
        h: Harness) -> None:
    """Request `coll` of two caches and requests `coll:0`, `coll:1` of one cache each: every
    event id differs, so the topic's duplicate detection drops none of the five events."""
    for cache in ("c1", "c2", "c3", "c4"):
        accept(h, cache, 0)
    h.send_request({"resourceIds": [resource_id(cache="c1"), resource_id(cache="c2")],
                    "requestId": "coll"})
    h.send_request({"resourceId": resource_id(cache="c3"), "requestId": "coll:0"})
    h.send_request({"resourceId": resource_id(cache="c4"), "requestId": "coll:1"})
    h.run()
    assert h.bus.dropped == []
    assert sorted(e.message.message_id for e in h.events()) == [
        "coll:0:completed", "coll:1:completed", "coll:completed", "coll:completed:0",
        "coll:completed:1"]


def test_a_repeat_of_a_finished_batch_republishes_the_same_request_event(h: Harness) -> None:
    """completedAt, durationSeconds and armRequests are the first run's, as the ledger kept
    them: a subscriber deduplicating by id must not see two stories."""
    names = ("cache-a", "cache-b")
    for name in names:
        op = h.arm.new_operation(SUB)
        h.arm.on_flush(SUB, RG, name, Answer(202, {"Azure-AsyncOperation": op.url}, b""))
        h.arm.on_operation(op, Answer(202, {}, op.status("InProgress")),
                           then=Answer(200, {}, op.status("Succeeded")))
    body = {"resourceIds": [resource_id(cache=n) for n in names], "requestId": "batch-again"}
    h.send_request(body, message_id="m-1")
    h.run()
    sent = len(h.arm.requests)
    h.clock.advance(3600)  # past the topic's duplicate window
    h.send_request(body, message_id="m-2")

    h.run()

    assert len(h.arm.requests) == sent  # nothing flushed or read again
    by_id: dict[str, list[dict[str, object]]] = {}
    for envelope in h.events():
        by_id.setdefault(envelope.message.message_id, []).append(
            json.loads(envelope.message.body))
    assert sorted(by_id) == ["batch-again:completed", "batch-again:completed:0",
                             "batch-again:completed:1"]
    for copies in by_id.values():
        first, again = copies
        assert first == again
    assert by_id["batch-again:completed"][0]["data"]["armRequests"] == sent


def test_finished_operations_stop_counting_against_the_read_budget(h: Harness) -> None:
    """A flush that ended stops counting among the subscription's operations at once
    (FlushApp._track), not after POLLER_WINDOW: 40 flushes that just ended must not spread
    the next flush's status reads to 2 s (41 operations over the 20 reads a second this
    process plans for), which would cost it a second of lag per read."""
    caches = [f"cache-{i:02d}" for i in range(40)]
    for cache in caches:
        accept(h, cache, running=0)
    first = h.send_request({"resourceIds": [resource_id(cache=c) for c in caches]})
    h.run()
    h.batch(first, {resource_id(cache=c): "Succeeded" for c in caches}, "Succeeded")
    op = accept(h, "cache-next", running=3)
    second = h.send_request({"resourceId": resource_id(cache="cache-next")})
    h.run()
    h.event(second, "Succeeded", rid=resource_id(cache="cache-next"))
    reads = [seconds(r.when) for r in h.arm.requests
             if r.method == "GET" and r.raw_path == op.path]
    assert len(reads) == 4
    assert [round(b - a, 3) for a, b in zip(reads, reads[1:], strict=False)] == [1.0] * 3
