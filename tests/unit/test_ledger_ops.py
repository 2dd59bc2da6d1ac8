"""ledger_ops: what the request row keeps of a long fingerprint, that rows an earlier version
wrote still name their request, and how a target's claim gates its POST, races included
(docs/design.md, "Request ledger")."""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from redisflush.core.commands import (
    Claimed,
    ClaimTarget,
    OpenRequest,
    ReadRows,
    RecordRequest,
    RecordTarget,
    StoreTargets,
)
from redisflush.core.ledger_rules import LEASE, digest
from redisflush.ledger import REQUEST_KEY, Ledger, LedgerRow, MemoryLedger
from redisflush.ledger_ops import claim_target, open_request, read_rows, record, store_targets
from redisflush.local.ledger import SqliteLedger

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
EXPIRES = NOW + dt.timedelta(days=1)
# a selector whose tag values are kana: json.dumps writes each as a 6-character escape
LONG = json.dumps({"selector": {"tags": {f"t{i}": "タグ" * 128 for i in range(15)}}},
                  separators=(",", ":"), sort_keys=True)
SHORT = '{"targets":["/subscriptions/s/resourcegroups/rg/providers/microsoft.cache/redis/c"]}'


def test_a_short_fingerprint_is_kept_as_it_is() -> None:
    ledger = MemoryLedger()
    assert open_request(ledger, "r", OpenRequest("open", SHORT, EXPIRES), NOW).status == "new"
    row = ledger.get("r", REQUEST_KEY)
    assert row is not None and row.data["fingerprint"] == SHORT


def test_a_fingerprint_the_row_can_hold_is_kept_whole_as_earlier_releases_keep_it() -> None:
    """A rollback's release matches the row's fingerprint whole: 22 caches (about 2,400
    characters) were kept as a digest, and a repeat under the release before read it as
    another request's (RequestIdReused, tests/functional/test_upgrade.py)."""
    whole = LONG[:25_000]
    ledger = MemoryLedger()
    assert open_request(ledger, "r", OpenRequest("open", whole, EXPIRES), NOW).status == "new"
    record(ledger, "r", RecordRequest("done", {"fingerprint": whole, "ended": {}}, EXPIRES), NOW)
    row = ledger.get("r", REQUEST_KEY)
    assert row is not None and row.state == "done" and row.data["fingerprint"] == whole


def test_a_fingerprint_the_row_cannot_hold_with_its_list_is_kept_as_its_digest() -> None:
    assert len(LONG) > 20_000
    ledger = MemoryLedger()
    assert open_request(ledger, "r", OpenRequest("open", LONG, EXPIRES), NOW).status == "new"
    row = ledger.get("r", REQUEST_KEY)
    assert row is not None and row.data["fingerprint"] == LONG  # it fits, alone
    targets = tuple(f"/subscriptions/s/resourcegroups/rg/providers/microsoft.cache/redis/"
                    f"{'c' * 60}{i:02d}" for i in range(50))
    stored = store_targets(ledger, "r", StoreTargets("stored", LONG, targets, 3, EXPIRES), NOW)
    assert stored.status == "same" and stored.data["targets"] == list(targets)
    record(ledger, "r", RecordRequest("done", {"fingerprint": LONG, "ended": {}}, EXPIRES), NOW)
    row = ledger.get("r", REQUEST_KEY)
    assert row is not None and row.state == "done"
    assert row.data["fingerprint"] == digest(LONG)  # with 50 targets it would not
    assert row.data["fingerprint"].startswith("sha256:") and len(row.data["fingerprint"]) == 71
    assert open_request(ledger, "r", OpenRequest("open", LONG, EXPIRES), NOW).status == "same"
    assert read_rows(ledger, "r", ReadRows("rows", LONG)).status == "same"
    assert open_request(ledger, "r", OpenRequest("open", LONG + " ", EXPIRES),
                        NOW).status == "reused"


def test_a_long_fingerprint_an_earlier_version_kept_whole_still_names_the_request() -> None:
    ledger = MemoryLedger()
    whole = LONG[:20_000]
    ledger.insert(LedgerRow("r", REQUEST_KEY, "open", {"fingerprint": whole}, 0, NOW, EXPIRES))
    assert open_request(ledger, "r", OpenRequest("open", whole, EXPIRES), NOW).status == "same"
    stored = store_targets(ledger, "r", StoreTargets("stored", whole, ("a",), 1, EXPIRES), NOW)
    assert stored.status == "same" and stored.data["targets"] == ["a"]


# -- claim_target: the gate before every POST (docs/design.md, "Request ledger") -------------
# On the local SQLite ledger (a real file, conditional writes by version), not a stand-in.

KEY = "/subscriptions/s/resourcegroups/rg/providers/microsoft.cache/redis/c"


def _claim(ledger: Ledger, now: dt.datetime) -> Claimed:
    return claim_target(ledger, "r", ClaimTarget("t0:claim", KEY, EXPIRES), now)


def test_the_first_claim_writes_a_posting_row_and_a_second_inside_the_lease_is_busy(
        tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    assert _claim(ledger, NOW).decision == "post"
    row = ledger.get("r", KEY)
    assert row is not None and row.state == "posting" and row.posts == 1
    busy = _claim(ledger, NOW + dt.timedelta(seconds=30))
    assert (busy.decision, busy.until) == ("busy", NOW + LEASE)


def test_a_stale_claim_is_posted_once_more_then_in_doubt(tmp_path: Path) -> None:
    """At most two POSTs that ARM may have run: the re-POST after the lease is written down
    (posts 2, the reposted mark), so the next stale claim is in doubt, not a third POST."""
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    assert _claim(ledger, NOW).decision == "post"
    later = NOW + LEASE + dt.timedelta(seconds=1)
    assert _claim(ledger, later).decision == "post"
    row = ledger.get("r", KEY)
    assert row is not None and (row.state, row.posts, row.updated_at) == ("posting", 2, later)
    assert _claim(ledger, later + dt.timedelta(seconds=30)).decision == "busy"
    assert _claim(ledger, later + LEASE + dt.timedelta(seconds=1)).decision == "in-doubt"


def test_a_retry_row_is_claimed_again_before_its_post(tmp_path: Path) -> None:
    """ARM refused the POST for now (`retry`): the next claim takes the row back to `posting`,
    so another delivery arriving meanwhile waits instead of POSTing too."""
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    assert _claim(ledger, NOW).decision == "post"
    record(ledger, "r", RecordTarget(KEY, "retry", {}, EXPIRES), NOW)
    assert _claim(ledger, NOW + dt.timedelta(seconds=5)).decision == "post"
    row = ledger.get("r", KEY)
    assert row is not None and row.state == "posting"
    assert _claim(ledger, NOW + dt.timedelta(seconds=6)).decision == "busy"


class _Racing:
    """The SQLite ledger with another delivery of the request writing `then` to the row just
    after this claim read it, once: this claim's conditional update loses."""

    def __init__(self, ledger: SqliteLedger, then: Callable[[], None]) -> None:
        self.ledger, self.then = ledger, then

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)

    def get(self, request_id: str, key: str) -> LedgerRow | None:
        row = self.ledger.get(request_id, key)
        then, self.then = self.then, lambda: None
        then()
        return row


@pytest.mark.parametrize("first", ["retry", "stale"])
def test_a_claim_that_loses_the_race_for_the_row_follows_the_winner(tmp_path: Path,
                                                                    first: str) -> None:
    """Two deliveries claim a `retry` (or stale `posting`) row at once; the other one wins and
    gets its POST accepted. This claim's write loses (the row changed since it was read), so
    it reads the row again and follows that operation: never a second POST."""
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    assert _claim(ledger, NOW).decision == "post"
    if first == "retry":
        record(ledger, "r", RecordTarget(KEY, "retry", {}, EXPIRES), NOW)
    now = NOW + LEASE + dt.timedelta(seconds=1)
    accepted = {"pollUrl": "https://management.azure.com/op/1", "pollKind": "location"}

    def other_delivery() -> None:
        assert _claim(ledger, now).decision == "post"
        record(ledger, "r", RecordTarget(KEY, "accepted", accepted, EXPIRES), now)

    claimed = claim_target(_Racing(ledger, other_delivery), "r",
                           ClaimTarget("t0:claim", KEY, EXPIRES), now)
    assert claimed.decision == "adopt-poll"
    assert claimed.data["pollUrl"] == accepted["pollUrl"]
