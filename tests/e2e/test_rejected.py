"""Malformed messages dropped straight on the request queue (past the CLI's own validation)
complete with one `Rejected` event naming the field, and are never retried."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from redisflush.bus import OutboundMessage
from redisflush.local.bus import LocalBus

from .conftest import REQUEST_QUEUE, RG, SUB, Processes, run_cli

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(60)
def test_malformed_requests_give_rejected_events(procs: Processes, local_dir: Path) -> None:
    serve = procs.serve(local_dir)
    typo = {"subscriptionId": SUB, "resourceGroup": RG, "cachName": "typo-cache"}
    bad_cache = {"subscriptionId": SUB, "resourceGroup": RG, "cacheName": "-bad-"}
    with LocalBus(local_dir / "bus.sqlite") as bus:
        bus.send(REQUEST_QUEUE, [
            OutboundMessage(b"{not json", "e2e-bad-json"),
            OutboundMessage(json.dumps(typo).encode(), "e2e-unknown-field"),
            OutboundMessage(json.dumps(bad_cache).encode(), "e2e-bad-cache"),
        ])
    watch = run_cli(["watch", "--local", "--json", "--count", "3", "--timeout", "20"],
                    local_dir, timeout=40)
    assert watch.returncode == 0, watch.stderr
    events = {e["data"]["requestId"]: e for e in
              (json.loads(line) for line in watch.stdout.splitlines() if line.strip())}
    assert sorted(events) == ["e2e-bad-cache", "e2e-bad-json", "e2e-unknown-field"]
    for event in events.values():
        assert event["data"]["status"] == "Rejected"
        assert event["data"]["error"]["code"] == "InvalidRequest"
        assert event["data"]["armRequests"] == 0
    assert events["e2e-bad-json"]["data"]["error"]["target"] == "body"
    assert "JSON" in events["e2e-bad-json"]["data"]["error"]["message"]
    unknown = events["e2e-unknown-field"]["data"]["error"]
    assert unknown["target"] == "cachName" and "not a known field" in unknown["message"]
    assert events["e2e-bad-cache"]["data"]["error"]["target"] == "cacheName"
    for rid in events:   # no valid cache to name: the event's source is the request queue
        assert "subject" not in events[rid] and events[rid]["source"] == "/redisflush/requests"

    # each was handled once, completed (not abandoned), and nothing is left to retry
    lines = [m for m in serve.invocation_lines() if m["function"] == "FlushTrigger"]
    assert sorted(m["request"] for m in lines) == sorted(events)
    assert all(m["outcome"] == "completed" for m in lines)
    with LocalBus(local_dir / "bus.sqlite") as bus:
        assert bus.counts(REQUEST_QUEUE) == {"active": 0, "scheduled": 0, "locked": 0,
                                             "deadletter": 0}
    assert serve.stats()["posts"] == 0
