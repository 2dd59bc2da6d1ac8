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
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from redisflush.local.bus import LocalBus

from .conftest import (
    EVENTS,
    REQUEST_QUEUE,
    RG,
    SUB,
    Processes,
    cache_args,
    http_json,
    one_event,
    resource_id,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e
BUS_FILE = "bus.sqlite"


def now_us() -> int:
    return time.time_ns() // 1000


def bus_rows(local_dir: Path, entity: str, message_id: str) -> list[dict[str, Any]]:
    """The message's rows in the local bus file ([] while the sender is still creating it)."""
    if not (local_dir / BUS_FILE).exists():
        return []
    with closing(sqlite3.connect(local_dir / BUS_FILE, timeout=30)) as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute(
                "SELECT * FROM messages WHERE entity = ? AND message_id = ?",
                (entity, message_id))]
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


@pytest.mark.timeout(120)
def test_kill9_after_the_posts_then_redelivery_flushes_each_cache_once(
        procs: Processes, local_dir: Path, tmp_path: Path, redis_url: str | None) -> None:
    rid = "e2e-redeliver-1"
    config = write_config(tmp_path / "emulator.json", {
        "defaults": {"duration": 4},          # a long flush: still running across the restart
        "caches": {"again-a": {}, "again-b": {}},
        "clusters": {"again-m": {"resourceGroup": RG}}})
    serve_args = ("--config", str(config), *(("--redis-url", redis_url) if redis_url else ()))
    names = ["again-a", "again-b", "again-m/default"]
    ids = [resource_id("again-a"), resource_id("again-b"), enterprise_id("again-m")]

    # the request is queued before serve runs, so its message can be delivered again later
    sender = procs.spawn(["send", "--local", "--wait", "--json", "--timeout", "60",
                          "--request-id", rid, *(a for i in ids for a in ("--resource-id", i))],
                         local_dir, name="send")
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
    assert f"request={rid} message={rid} delivery=2 " in again.stderr()
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
        [f"{rid}:{i}:completed" for i in range(3)] + [f"{rid}:completed"]), events
    assert all(e["data"]["status"] == "Succeeded" for e in events)

    # delivered once more after it finished: the kept outcomes are published again (the
    # topic's duplicate detection drops them), nothing is POSTed or read
    polls_before = {n: stats["databases" if "/" in n else "caches"][n]["polls"] for n in names}
    deliver_again(local_dir, {**queued, "delivery_count": 1})   # delivered twice before
    again.wait_stderr(rf"FlushTrigger request={rid} message={rid} delivery=3 completed "
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
