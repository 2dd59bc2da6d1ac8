"""core/ledger_rules.py: what a target row found at claim time means, the lease on a row being
POSTed, and that an in-doubt POST is sent once more, never a third time (docs/design.md,
"Request ledger")."""
from __future__ import annotations

import datetime as dt

import pytest

from redisflush.core.ledger_rules import (
    LEASE,
    REPOSTED,
    expiry,
    new_target_row,
    on_existing,
    recorded,
    stored_targets,
)
from redisflush.ledger import LedgerRow

from .helpers import T0, at

KEY = "/subscriptions/s/resourcegroups/rg/providers/microsoft.cache/redis/c"
EXPIRES = at(1800 + 86400)
ACCEPTED_DATA = {"pollUrl": "https://management.azure.com/op/1?t=x", "pollKind": "location",
                 "acceptedAt": "2030-01-01T12:00:01.000Z", "linked": []}


def row(state: str, updated: float = 0.0, posts: int = 1, **data: object) -> LedgerRow:
    return LedgerRow("req-1", KEY, state, dict(data), posts, at(updated), EXPIRES, etag="e1")


def test_new_target_row_is_posting_once():
    fresh = new_target_row("req-1", KEY, at(5), EXPIRES)
    assert (fresh.request_id, fresh.key, fresh.state, fresh.posts) == ("req-1", KEY, "posting", 1)
    assert (fresh.data, fresh.updated_at, fresh.expires_at, fresh.etag) == ({}, at(5), EXPIRES,
                                                                              "")


# --- a row found at claim time -------------------------------------------------------------------

@pytest.mark.parametrize("state, data, decision", [
    ("accepted", ACCEPTED_DATA, "adopt-poll"),  # ARM took it: follow its operation
    ("done", {"outcome": {"status": "Succeeded"}}, "adopt-done"),  # re-publish the outcome
])
def test_a_row_that_says_how_far_it_got_is_adopted(state, data, decision):
    found = row(state, **data)
    assert on_existing(found, at(1000)) == (decision, data, None, None)


def test_a_retry_row_is_posted_again_and_counted():
    decision, data, until, write = on_existing(row("retry", posts=2, note="x"), at(30))
    assert (decision, data, until) == ("post", {"note": "x"}, None)
    assert write is not None
    assert (write.state, write.posts, write.updated_at) == ("posting", 3, at(30))
    assert write.etag == "e1"  # a conditional update of the row that was read


@pytest.mark.parametrize("age", [0.0, 1.0, 45.0, LEASE.total_seconds() - 0.001])
def test_a_posting_row_inside_its_lease_is_busy(age):
    decision, _, until, write = on_existing(row("posting", updated=0), at(age))
    assert (decision, until, write) == ("busy", at(0) + LEASE, None)


@pytest.mark.parametrize("age, decision", [(89.0, "busy"), (90.0, "post")])
def test_the_lease_is_the_90_seconds_the_design_names(age, decision):
    """docs/design.md, "Request ledger": a `posting` row younger than 90 s belongs to a live
    invocation. The tests above count in LEASE, so a lease of ten minutes (a redelivery
    waiting that long before its POST) passed them all; this one counts in seconds."""
    assert on_existing(row("posting", updated=0), at(age))[0] == decision


def test_a_posting_row_from_the_future_is_busy_too():
    decision, _, until, write = on_existing(row("posting", updated=30), at(0))  # clock skew
    assert (decision, until, write) == ("busy", at(30) + LEASE, None)


@pytest.mark.parametrize("age", [LEASE.total_seconds(), LEASE.total_seconds() + 1, 86400.0])
def test_a_posting_row_whose_writer_is_gone_is_sent_once_more(age):
    decision, data, until, write = on_existing(row("posting", updated=0, posts=1), at(age))
    assert (decision, until) == ("post", None)
    assert write is not None
    assert write.state == "posting" and write.posts == 2 and write.updated_at == at(age)
    assert write.data[REPOSTED] is True


def test_a_reposted_row_whose_writer_is_gone_is_in_doubt():
    stale = row("posting", updated=0, posts=2, **{REPOSTED: True})
    decision, data, until, write = on_existing(stale, at(LEASE.total_seconds() + 5))
    assert (decision, until, write) == ("in-doubt", None, None)
    assert data[REPOSTED] is True


def test_a_reposted_row_inside_its_lease_is_still_busy():
    live = row("posting", updated=0, posts=2, **{REPOSTED: True})
    assert on_existing(live, at(10))[0] == "busy"


def test_never_a_third_post_after_two_crashes():
    """Replay the rule: crash, lease passes, repost, crash, lease passes -> in doubt."""
    current = new_target_row("req-1", KEY, at(0), EXPIRES)
    posts, now = 1, at(0)
    for _ in range(5):
        now += LEASE
        decision, _, _, write = on_existing(current, now)
        if decision != "post":
            break
        posts += 1
        current = write
    assert decision == "in-doubt"
    assert posts == 2 == current.posts


def test_retries_after_arm_refused_are_not_limited_by_the_repost_rule():
    """A retry row means ARM answered (409/429/5xx): posting again is not a double flush."""
    current = new_target_row("req-1", KEY, at(0), EXPIRES)
    for n in range(2, 8):
        current = recorded(current, "req-1", KEY, "retry", {}, at(n), EXPIRES)
        decision, _, _, current = on_existing(current, at(n))
        assert decision == "post" and current.posts == n


def test_a_repost_that_arm_refused_keeps_its_mark():
    """Once a POST was in doubt, the mark stays: a later crash is not reposted again."""
    current = row("posting", updated=0)
    _, _, _, current = on_existing(current, at(LEASE.total_seconds()))
    current = recorded(current, "req-1", KEY, "retry", {}, at(100), EXPIRES)
    _, _, _, current = on_existing(current, at(101))  # posting again after the retry
    decision = on_existing(current, at(101) + LEASE)[0]
    assert decision == "in-doubt"


# --- recording -----------------------------------------------------------------------------------

def test_recorded_merges_data_and_keeps_the_longer_expiry():
    old = row("posting", updated=0, posts=2, **{REPOSTED: True, "a": 1})
    new = recorded(old, "req-1", KEY, "accepted", {"a": 2, **ACCEPTED_DATA}, at(3), at(10))
    assert new.state == "accepted" and new.posts == 2 and new.updated_at == at(3)
    assert new.data == {REPOSTED: True, "a": 2, **ACCEPTED_DATA}
    assert new.expires_at == EXPIRES  # never shortened
    later = recorded(old, "req-1", KEY, "done", {}, at(3), EXPIRES + dt.timedelta(days=1))
    assert later is not None and later.expires_at == EXPIRES + dt.timedelta(days=1)
    assert new.etag == "e1"


@pytest.mark.parametrize("state", ["accepted", "done", "retry", "posting"])
def test_the_first_outcome_recorded_is_kept(state):
    """A late redelivery's step (say, one that timed out after the flush was reported) must
    not rewrite the outcome the topic already has."""
    done = row("done", outcome={"status": "Succeeded"})
    assert recorded(done, "req-1", KEY, state, {"outcome": {"status": "TimedOut"}}, at(5),
                    EXPIRES) is None


@pytest.mark.parametrize("current", ["accepted", "done"])
def test_a_retry_gives_back_only_a_claim(current):
    """`retry` over an operation another delivery got accepted would make the next claim
    POST it again."""
    assert recorded(row(current), "req-1", KEY, "retry", {}, at(5), EXPIRES) is None


def test_recorded_without_a_row_makes_one():
    new = recorded(None, "req-1", "", "open", {"fingerprint": "f"}, at(2), EXPIRES)
    assert new == LedgerRow("req-1", "", "open", {"fingerprint": "f"}, 0, at(2), EXPIRES)


def test_recorded_does_not_mutate_the_row_it_read():
    old = row("posting", note="x")
    recorded(old, "req-1", KEY, "done", {"note": "y"}, at(3), EXPIRES)
    assert old.data == {"note": "x"} and old.state == "posting"


@pytest.mark.parametrize("deadline", [T0, at(1800), at(86400)])
def test_rows_outlive_the_deadline_by_a_day(deadline):
    assert expiry(deadline) == deadline + dt.timedelta(days=1)


def test_lease_is_longer_than_one_arm_call():
    from redisflush.arm import TOTAL_TIMEOUT  # an ARM call's whole-duration limit
    assert LEASE.total_seconds() >= 2 * TOTAL_TIMEOUT


def test_a_selectors_targets_are_kept_by_the_first_delivery_to_store_them():
    ours = stored_targets(None, "req-1", ("f",), ["a", "b"], 3, at(2), EXPIRES)
    assert ours is not None and ours.data == {"fingerprint": "f", "targets": ["a", "b"],
                                              "armRequests": 3}
    opened = LedgerRow("req-1", "", "open", {"fingerprint": "f"}, 0, at(1), EXPIRES)
    kept = stored_targets(opened, "req-1", ("f",), ["a"], 1, at(2), EXPIRES)
    assert kept is not None and kept.data["targets"] == ["a"] and kept.updated_at == at(2)
    # another delivery's list stays: the chain adopts it; a row naming others is left alone
    assert stored_targets(kept, "req-1", ("f",), ["a", "c"], 2, at(3), EXPIRES) is None
    assert stored_targets(opened, "req-1", ("other",), ["a"], 1, at(3), EXPIRES) is None


def test_a_fingerprint_an_earlier_version_wrote_still_names_the_request():
    earlier = LedgerRow("req-1", "", "open", {"fingerprint": "old"}, 0, at(1), EXPIRES)
    kept = stored_targets(earlier, "req-1", ("new", "old"), ["a"], 1, at(2), EXPIRES)
    assert kept is not None and kept.data["fingerprint"] == "old"


def test_a_selectors_request_ends_as_a_whole_only_while_no_list_is_stored():
    opened = LedgerRow("req-1", "", "open", {"fingerprint": "f"}, 0, at(1), EXPIRES)
    ended = {"status": "Rejected", "completedAt": "x"}
    done = stored_targets(opened, "req-1", ("f",), [], 0, at(2), EXPIRES, ended)
    assert done is not None and done.state == "done" and done.data["ended"] == ended
    listed = stored_targets(opened, "req-1", ("f",), ["a"], 1, at(2), EXPIRES)
    assert stored_targets(listed, "req-1", ("f",), [], 0, at(3), EXPIRES, ended) is None
    # and a list comes too late once the request ended: the chain re-announces the end
    assert stored_targets(done, "req-1", ("f",), ["a"], 1, at(3), EXPIRES) is None
