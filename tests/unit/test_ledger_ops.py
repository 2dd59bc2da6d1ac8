"""ledger_ops on the MemoryLedger: what the request row keeps of a long fingerprint, and that
rows an earlier version wrote still name their request (docs/design.md, "Request ledger")."""
from __future__ import annotations

import datetime as dt
import json

from redisflush.core.commands import OpenRequest, ReadRows, RecordRequest, StoreTargets
from redisflush.core.ledger_rules import digest
from redisflush.ledger import REQUEST_KEY, LedgerRow, MemoryLedger
from redisflush.ledger_ops import open_request, read_rows, record, store_targets

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
