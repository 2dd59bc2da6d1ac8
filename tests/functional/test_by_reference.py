"""A poll state too large for one message: an accepted flush's operation URL is carried by
reference to its ledger row and read back when due (docs/design.md, "Poll message"), through
the real shell, bus and ledger. When the ledger does not give it back (unreadable, the row
missing, another URL in it) that cache ends Failed PollStateTooLarge saying so: never a
second POST, never a missing event."""
from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from redisflush.core import next_message
from redisflush.ledger import LedgerError, LedgerRow, MemoryLedger
from tests.support.harness import RG, SUB, Harness, resource_id
from tests.support.scripted_arm import Answer, ScriptedArm, flush_path, statuses

CACHES = ["cache-a", "cache-b", "cache-c"]
LIMIT, PAD = 30_000, 10_000  # three 10 KB URLs do not fit a (lowered) 30 KB message


class ReadFailingLedger(MemoryLedger):
    """A table whose reads answer 503 once `down` is set (writes still go)."""

    down = False

    def get(self, request_id: str, key: str) -> LedgerRow | None:
        if self.down:
            raise LedgerError("table service: 503 ServerBusy")
        return super().get(request_id, key)

    def rows(self, request_id: str) -> list[LedgerRow]:
        if self.down:
            raise LedgerError("table service: 503 ServerBusy")
        return super().rows(request_id)


@pytest.fixture(autouse=True)
def lowered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(next_message, "MAX_MESSAGE_BYTES", LIMIT)


def _started(arm: ScriptedArm, make_harness: Callable[..., Harness], ledger: MemoryLedger
             ) -> tuple[Harness, str, str]:
    """Three caches accepted with 10 KB operation URLs, after the request's first step: the
    request id and the key of the cache carried by reference."""
    h = make_harness(ledger=ledger)
    for cache in CACHES:
        op = arm.new_operation(SUB)
        pad = "&pad=" + "p" * PAD
        url = op.url + pad
        arm.on_flush(SUB, RG, cache, then=Answer(
            202, {"Azure-AsyncOperation": url, "Location": url}, b""))
        arm.on("GET", op.path + pad, *statuses(op, "InProgress", code=200),
               then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request({"resourceIds": [resource_id(cache=c) for c in CACHES]})
    (first,) = h.bus.pump(h.app, limit=1)
    assert first.error is None
    (poll,) = h.polls(rid)
    assert len(poll.message.body) <= LIMIT
    (carried,) = [t["target"]["name"] for t in json.loads(poll.message.body)["targets"]
                  if t["pollUrl"].startswith("ledger:sha256:")]
    return h, rid, resource_id(cache=carried).lower()


def _events(h: Harness, rid: str) -> dict[str, dict]:
    return {json.loads(m.body)["data"].get("resourceId", "").lower():
            json.loads(m.body)["data"] for i, m in h.event_messages(rid).items()
            if i != f"{rid}:completed"}


def _posts(arm: ScriptedArm) -> list[int]:
    return [len(arm.route("POST", flush_path(SUB, RG, c)).requests) for c in CACHES]


def test_a_cache_carried_by_reference_is_followed_to_its_end(
        arm: ScriptedArm, make_harness: Callable[..., Harness]) -> None:
    ledger = MemoryLedger()
    h, rid, key = _started(arm, make_harness, ledger)
    h.run()
    events = _events(h, rid)
    assert {d["status"] for d in events.values()} == {"Succeeded"} and len(events) == 3
    assert _posts(arm) == [1, 1, 1]
    assert h.bus.counts(h.settings.poll_queue).get("deadletter", 0) == 0


@pytest.mark.parametrize("case, why", [
    ("unreadable", "the ledger could not be read 3 times in a row"),
    ("missing", "the ledger holds no accepted row for it"),
    ("other-url", "the ledger's accepted row holds another operation URL")])
def test_a_cache_whose_url_the_ledger_does_not_give_back_ends_saying_why(
        arm: ScriptedArm, make_harness: Callable[..., Harness], case: str, why: str) -> None:
    ledger = ReadFailingLedger()
    h, rid, key = _started(arm, make_harness, ledger)
    row = ledger.get(rid, key)
    assert row is not None and row.state == "accepted"
    if case == "unreadable":
        ledger.down = True
    elif case == "missing":
        with ledger._lock:
            del ledger._rows[(rid, key)]
    else:
        assert ledger.update(LedgerRow(rid, key, "accepted", {
            **row.data, "pollUrl": row.data["pollUrl"] + "&moved=1"}, row.posts,
            row.updated_at, row.expires_at, row.etag)) is not None

    h.run()

    events = _events(h, rid)
    assert len(events) == 3 and set(events) == {resource_id(cache=c).lower() for c in CACHES}
    ended = events.pop(key)
    assert ended["status"] == "Failed" and ended["error"]["code"] == "PollStateTooLarge"
    assert why in ended["error"]["message"] and "may still run" in ended["error"]["message"]
    assert {d["status"] for d in events.values()} == {"Succeeded"}
    assert _posts(arm) == [1, 1, 1]  # never POSTed again
    assert h.bus.counts(h.settings.poll_queue).get("deadletter", 0) == 0
    request = json.loads(h.event_messages(rid)[f"{rid}:completed"].body)["data"]
    assert request["status"] == "Failed" and request["counts"] == {"Succeeded": 2, "Failed": 1}
