"""What Service Bus does to a request, played against `serve --local` through the CLI:

- the host dies (kill -9) right after the POSTs were accepted and the request is delivered
  again: the request ledger (LOCAL_DIR/ledger.sqlite) keeps every cache at one POST, and the
  topic carries one event per cache and one for the request;
- a request that waited in the queue past its deadline while serve was stopped is TimedOut
  without a POST (the deadline counts from the enqueue time, not from first processing).

Both move the broker's clock rather than wait for it: a lock lost by a dead host is handed
out again after a minute, and a 30 s request needs 30 s of queueing to be late. The tests
rewrite those times in the local bus file (`redisflush.local.bus_schema`: integer
microseconds since the epoch), which is all a minute of waiting would change.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from redisflush.bus import OutboundMessage
from redisflush.local.bus import LocalBus

from .conftest import (
    EVENTS,
    REQUEST_QUEUE,
    RG,
    SUB,
    Processes,
    Serve,
    cache_args,
    http_json,
    one_event,
    resource_id,
    run_cli,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e
BUS_FILE = "bus.sqlite"


def now_us() -> int:
    return time.time_ns() // 1000


def bus_rows(local_dir: Path, entity: str, request_id: str) -> list[dict[str, Any]]:
    """The rows of the request's messages (application property requestId) in the local bus
    file; [] while the sender is still creating it."""
    if not (local_dir / BUS_FILE).exists():
        return []
    with closing(sqlite3.connect(local_dir / BUS_FILE, timeout=30)) as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute(
                "SELECT * FROM messages WHERE entity = ? "
                "AND json_extract(properties, '$.requestId') = ?", (entity, request_id))]
        except sqlite3.OperationalError:   # no such table yet
            return []


def deliver_again(local_dir: Path, row: dict[str, Any]) -> None:
    """The same message (`row`, as queued before its first delivery) handed out once more,
    at once: what Service Bus does when the host that held its lock died (after the lock's
    minute) or lost the lock before completing."""
    row = {**row, "visible_at": now_us(), "lock_token": None,
           "delivery_count": row["delivery_count"] + 1}   # the first delivery counts
    row.pop("seq")
    with closing(sqlite3.connect(local_dir / BUS_FILE, timeout=30)) as db, db:
        db.execute(f"INSERT INTO messages ({', '.join(row)}) "
                   f"VALUES ({', '.join('?' * len(row))})", tuple(row.values()))


def enterprise_id(cluster: str, db: str = "default") -> str:
    return (f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/"
            f"redisEnterprise/{cluster}/databases/{db}")


def topic_events(local_dir: Path) -> list[dict[str, Any]]:
    with LocalBus(local_dir / BUS_FILE) as bus:
        return [json.loads(m.body) for m in bus.peek(EVENTS, max_count=100)]


AGAIN_IDS = [resource_id("again-a"), resource_id("again-b"), enterprise_id("again-m")]
AGAIN_FORMS = {
    "resource-ids": [a for i in AGAIN_IDS for a in ("--resource-id", i)],
    # the redelivery resolves nothing new: the ledger row keeps what the selector found
    "selector": ["--subscription", SUB, "--resource-group", RG, "--tag", "app=again"],
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("form", list(AGAIN_FORMS))
def test_kill9_after_the_posts_then_redelivery_flushes_each_cache_once(
        form: str, procs: Processes, local_dir: Path, tmp_path: Path,
        redis_url: str | None) -> None:
    rid = f"e2e-redeliver-{form}"
    tags = {"resourceGroup": RG, "tags": {"app": "again"}}
    config = write_config(tmp_path / "emulator.json", {
        "defaults": {"duration": 4},          # a long flush: still running across the restart
        "caches": {"again-a": tags, "again-b": tags},
        "clusters": {"again-m": tags}})
    serve_args = ("--config", str(config), *(("--redis-url", redis_url) if redis_url else ()))
    names = ["again-a", "again-b", "again-m/default"]

    # the request is queued before serve runs, so its message can be delivered again later
    sender = procs.spawn(["send", "--local", "--wait", "--json", "--timeout", "60",
                          "--request-id", rid, *AGAIN_FORMS[form]], local_dir, name="send")
    [queued] = wait_for(lambda: bus_rows(local_dir, REQUEST_QUEUE, rid), 20,
                        "the request queued")

    serve = procs.serve(local_dir, *serve_args)
    for name in names:
        assert http_json(f"{serve.arm_url}/_emulator/keys/{name}", "PUT", {"count": 25}) == \
            {"count": 25}
    # ARM accepted every POST and the FlushTrigger invocation returned: kill at once
    serve.wait_stderr(rf"FlushTrigger request={rid} .* completed \d+ ms: scheduled ", 30)
    serve.kill9()
    assert serve.popen.returncode == -9
    assert sender.alive(), "send --wait gave up when serve died"
    assert (local_dir / "ledger.sqlite").exists()

    deliver_again(local_dir, queued)
    again = procs.serve(local_dir, *serve_args)
    assert again.arm_url == serve.arm_url
    assert sender.wait(90) == 0, sender.stderr() + again.stderr()[-3000:]
    final = one_event(sender.stdout())
    assert final["type"] == "RedisFlush.RequestCompleted"
    assert final["data"]["status"] == "Succeeded" and final["data"]["counts"] == {"Succeeded": 3}

    # the redelivered request was handled again by the restarted serve ...
    redelivered = [m for m in again.invocation_lines()
                   if m["function"] == "FlushTrigger" and m["request"] == rid]
    assert len(redelivered) == 1 and redelivered[0]["outcome"] == "completed", again.stderr()
    assert re.search(rf"FlushTrigger request={rid} message=\S+ delivery=2 ", again.stderr())
    # ... and found every cache in the ledger: one POST per cache in all
    stats = again.stats()
    for name in names:
        book = stats["databases" if "/" in name else "caches"][name]
        assert (book["posts"], book["accepted"], book["flushes"]) == (1, 1, 1), (name, stats)
    assert stats["posts"] == 0          # this process's own total: the restart POSTed nothing
    if redis_url:   # real keys outlive serve: flushed once, by the one operation each
        for name in names:
            assert http_json(f"{again.arm_url}/_emulator/keys/{name}") == {"count": 0}

    # exactly one event per cache and one for the request on the topic
    events = topic_events(local_dir)
    assert sorted(e["id"] for e in events) == sorted(
        [f"{rid}:completed:{i}" for i in range(3)] + [f"{rid}:completed"]), events
    assert all(e["data"]["status"] == "Succeeded" for e in events)

    # delivered once more after it finished: the kept outcomes are published again (the
    # topic's duplicate detection drops them), nothing is POSTed or read
    polls_before = {n: stats["databases" if "/" in n else "caches"][n]["polls"] for n in names}
    deliver_again(local_dir, {**queued, "delivery_count": 1})   # delivered twice before
    again.wait_stderr(rf"FlushTrigger request={rid} message=\S+ delivery=3 completed "
                      r"\d+ ms: completed Succeeded", 20)
    stats = again.stats()
    assert stats["posts"] == 0
    assert {n: stats["databases" if "/" in n else "caches"][n]["polls"] for n in names} == \
        polls_before
    assert sorted(e["id"] for e in topic_events(local_dir)) == sorted(e["id"] for e in events)
    assert "Traceback" not in serve.stderr() + again.stderr()


LATE_CONFIG = {"defaults": {"duration": 0.5},
               "caches": {"late-cache": {"resourceGroup": RG, "tags": {"app": "late"}}},
               "clusters": {"late-m": {"resourceGroup": RG, "tags": {"app": "late"}}}}


@pytest.mark.timeout(90)
def test_request_late_in_the_queue_is_timed_out_without_a_post(procs: Processes,
                                                               local_dir: Path,
                                                               tmp_path: Path) -> None:
    rid, cache = "e2e-late-1", "late-cache"
    sender = procs.spawn(["send", "--local", "--wait", "--json", "--timeout", "30",
                          "--request-id", rid, *cache_args(cache)], local_dir, name="send")
    [queued] = wait_for(lambda: bus_rows(local_dir, REQUEST_QUEUE, rid), 20,
                        "the request queued")
    # serve stays stopped for 40 s: the request was enqueued 40 s ago, 10 s past its deadline
    enqueued = queued["enqueued_at"] - 40_000_000
    with closing(sqlite3.connect(local_dir / BUS_FILE, timeout=30)) as db, db:
        db.execute("UPDATE messages SET enqueued_at = ? WHERE seq = ?", (enqueued, queued["seq"]))

    serve = procs.serve(local_dir, "--config", str(write_config(tmp_path / "e.json",
                                                                LATE_CONFIG)))
    assert sender.wait(60) == 3, sender.stderr() + serve.stderr()
    event = one_event(sender.stdout())
    data = event["data"]
    assert event["type"] == "RedisFlush.FlushCompleted" and data["requestId"] == rid
    assert data["status"] == "TimedOut"
    assert data["error"]["code"] == "TimedOut" and "deadline" in data["error"]["message"]
    assert data["armRequests"] == 0 and data["operation"] is None and data["acceptedAt"] is None
    requested = dt.datetime.fromisoformat(data["requestedAt"].replace("Z", "+00:00"))
    assert abs(requested.timestamp() * 1e6 - enqueued) < 1000     # the enqueue time, kept
    assert data["durationSeconds"] >= 40
    assert serve.stats()["posts"] == 0 and serve.cache_stats(cache) == {}   # no POST
    lines = serve.invocation_lines()
    assert [(m["function"], m["request"], m["decision"]) for m in lines] == \
        [("FlushTrigger", rid, f"completed TimedOut ({cache})")], serve.stderr()
    assert [e["id"] for e in topic_events(local_dir)] == [f"{rid}:completed"]


LATE_FORMS = {
    "several": ["--resource-id", resource_id("late-cache"),
                "--resource-id", enterprise_id("late-m")],
    "selector": ["--subscription", SUB, "--tag", "app=late"],
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("form", list(LATE_FORMS))
def test_late_request_of_several_caches_is_timed_out_without_arm(
        form: str, procs: Processes, local_dir: Path, tmp_path: Path) -> None:
    """Several targets or a selector: no database read, no list page, no POST."""
    rid = f"e2e-late-{form}"
    sender = procs.spawn(["send", "--local", "--wait", "--json", "--timeout", "30",
                          "--request-id", rid, *LATE_FORMS[form]], local_dir, name="send")
    [queued] = wait_for(lambda: bus_rows(local_dir, REQUEST_QUEUE, rid), 20,
                        "the request queued")
    with closing(sqlite3.connect(local_dir / BUS_FILE, timeout=30)) as db, db:
        db.execute("UPDATE messages SET enqueued_at = ? WHERE seq = ?",
                   (queued["enqueued_at"] - 40_000_000, queued["seq"]))
    serve = procs.serve(local_dir, "--config", str(write_config(tmp_path / "e.json",
                                                                LATE_CONFIG)))
    assert sender.wait(60) == 3, sender.stderr() + serve.stderr()
    event = one_event(sender.stdout())
    data = event["data"]
    assert event["type"] == "RedisFlush.RequestCompleted" and event["id"] == f"{rid}:completed"
    assert data["status"] == "TimedOut" and data["armRequests"] == 0, data
    assert data["durationSeconds"] >= 40
    if form == "several":
        assert data["counts"] == {"TimedOut": 2} and data["error"] is None
        assert [r["status"] for r in data["results"]] == ["TimedOut", "TimedOut"]
        assert all(r["error"]["message"] == "the deadline passed while the flush was NotStarted"
                   for r in data["results"]), data
    else:   # the selector was never resolved: no caches to report
        assert data["counts"] == {} and data["results"] == []
        assert data["error"] == {"code": "TimedOut", "message": "the deadline passed while "
                                 "the selector was being resolved"}
    stats = serve.stats()
    assert (stats["posts"], stats["lists"], stats["databaseGets"]) == (0, 0, 0), stats
    assert stats["caches"] == {} and stats["databases"] == {}



def drop_request(local_dir: Path, message_id: str, body: dict[str, Any], *,
                 reply: bool) -> None:
    """A request straight on the bus under its own MessageId (as another sender, or an
    earlier attempt of a pipeline step, put it there); `reply` sets ReplyTo and the session
    as `send --wait` does."""
    rid = body["requestId"]
    with LocalBus(local_dir / BUS_FILE) as bus:
        bus.send(REQUEST_QUEUE, [OutboundMessage(
            json.dumps(body).encode(), message_id, correlation_id=rid,
            reply_to="redis-flush-replies" if reply else None,
            reply_to_session_id=rid if reply else None,
            application_properties={"requestId": rid})])


def first_request_done(procs: Processes, local_dir: Path, rid: str, how: str) -> Serve:
    """serve, and request `rid` for cache rep-1 flushed: `how` is `send` (the CLI without
    --wait: no ReplyTo), `bus` (another MessageId, no ReplyTo) or `bus+reply` (another
    MessageId, with ReplyTo)."""
    serve = procs.serve(local_dir, "--duration", "0.5")
    if how.startswith("bus"):
        drop_request(local_dir, f"{rid}-first-message",
                     {"subscriptionId": SUB, "resourceGroup": RG, "cacheName": "rep-1",
                      "requestId": rid}, reply=how == "bus+reply")
    else:
        first = run_cli(["send", "--local", *cache_args("rep-1"), "--request-id", rid],
                        local_dir, timeout=40)
        assert first.returncode == 0, first.stderr
    wait_for(lambda: any(e["id"] == f"{rid}:completed" for e in topic_events(local_dir)), 20,
             "the first request's event")
    return serve


def send_again(procs: Processes, local_dir: Path, serve: Serve, rid: str,
               cache: str) -> tuple[int, dict[str, Any]]:
    """`send --wait` for `rid` again: its exit code and final event, within 5 s (the app
    answers a repeat at once; a repeat the bus dropped would wait timeout + 60 s)."""
    again = procs.spawn(["send", "--local", "--wait", "--json", "--timeout", "30",
                         *cache_args(cache), "--request-id", rid], local_dir, name="send-again")
    try:
        rc = again.wait(5)
    except subprocess.TimeoutExpired:
        ran = [(m["function"], m["request"], m["decision"]) for m in serve.invocation_lines()]
        pytest.fail(f"send --wait got no final event in 5 s (stderr {again.stderr()!r}); "
                    f"serve ran: {ran}")
    assert serve.stats()["posts"] == 1 and serve.cache_stats("rep-1")["posts"] == 1
    assert serve.cache_stats("rep-2") == {}
    return rc, one_event(again.stdout())


@pytest.mark.timeout(60)
def test_request_id_reused_for_another_cache_ends_send_wait_rejected(
        procs: Processes, local_dir: Path) -> None:
    rid = "e2e-reused-1"
    serve = first_request_done(procs, local_dir, rid, "bus")
    rc, event = send_again(procs, local_dir, serve, rid, "rep-2")
    assert rc == 1
    assert event["data"]["status"] == "Rejected"
    assert event["data"]["error"]["code"] == "RequestIdReused"
    assert event["id"].startswith(f"{rid}:reused:")


@pytest.mark.timeout(60)
def test_same_request_sent_again_within_the_duplicate_window_is_answered(
        procs: Processes, local_dir: Path) -> None:
    """A pipeline step retried with its --request-id (the first try sent without --wait)."""
    rid = "e2e-repeat-1"
    serve = first_request_done(procs, local_dir, rid, "send")
    rc, event = send_again(procs, local_dir, serve, rid, "rep-1")
    assert rc == 0 and event["id"] == f"{rid}:completed"
    assert event["data"]["status"] == "Succeeded"
    assert [e["id"] for e in topic_events(local_dir)] == [f"{rid}:completed"]


@pytest.mark.timeout(60)
def test_repeated_request_gets_its_recorded_outcome_on_the_reply_session(
        procs: Processes, local_dir: Path) -> None:
    """The first attempt also waited (ReplyTo, under another MessageId) and took its answer
    off the session; the repeat's copy of the same final event must reach the second waiter."""
    rid = "e2e-repeat-2"
    serve = first_request_done(procs, local_dir, rid, "bus+reply")
    first_event = next(e for e in topic_events(local_dir) if e["id"] == f"{rid}:completed")
    with LocalBus(local_dir / BUS_FILE) as bus:     # the first waiter reads its session
        replies = bus.receive("redis-flush-replies", max_count=10, session_id=rid)
        assert json.loads(replies[-1].body)["id"] == f"{rid}:completed"
        for message in replies:
            bus.complete(message)
    rc, event = send_again(procs, local_dir, serve, rid, "rep-1")
    assert rc == 0
    assert event == first_event          # the recorded outcome, as first published


@pytest.mark.timeout(90)
def test_repeats_republish_the_recorded_outcomes_with_the_same_content(
        procs: Processes, local_dir: Path) -> None:
    """README, "Reliability": a repeat re-publishes the recorded outcome with the same content.
    40 requests (durationSeconds once differed by 1 ms in one case in four, so all 40 agreeing
    by chance was about one in 100,000), each sent again under a new MessageId once it
    finished."""
    n = 40
    serve = procs.serve(local_dir, "--immediate")
    rids = [f"e2e-same-{i:02d}" for i in range(n)]
    for rid in rids:
        drop_request(local_dir, f"{rid}-first", {"subscriptionId": SUB, "resourceGroup": RG,
                                                 "cacheName": f"same-{rid[-2:]}",
                                                 "requestId": rid}, reply=False)
    firsts = wait_for(lambda: (lambda events: len(events) == n and events)(
        {e["id"]: e for e in topic_events(local_dir)}), 60, f"{n} events")
    for rid in rids:
        drop_request(local_dir, f"{rid}-again", {"subscriptionId": SUB, "resourceGroup": RG,
                                                 "cacheName": f"same-{rid[-2:]}",
                                                 "requestId": rid}, reply=True)
    with LocalBus(local_dir / BUS_FILE) as bus:
        def answer(rid: str) -> dict[str, Any] | None:
            got = bus.receive("redis-flush-replies", session_id=rid)
            for message in got:
                bus.complete(message)
            return json.loads(got[0].body) if got else None
        repeats = {rid: wait_for(lambda rid=rid: answer(rid), 30, f"{rid}'s answer")
                   for rid in rids}
    assert serve.stats()["posts"] == n
    differing = {rid: (firsts[f"{rid}:completed"]["data"]["durationSeconds"],
                       repeats[rid]["data"]["durationSeconds"])
                 for rid in rids if repeats[rid] != firsts[f"{rid}:completed"]}
    assert differing == {}, f"{len(differing)} of {n} differ: {differing}"
