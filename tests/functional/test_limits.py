"""Size limits end to end (docs/design.md, "Poll message"; README, "Reliability"): a request
or an ARM answer that is legal but large must still end with its events, never in a poll
message Service Bus refuses (a request dead-lettered with no event after its caches were
flushed). The memory bus refuses what Service Bus refuses (256 KB a message)."""
from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from redisflush.app import CALL_WINDOW
from redisflush.ledger_tables import TableLedger
from tests.contract.conftest import azurite  # noqa: F401  (the session's Azurite)
from tests.support.harness import RG, SCOPE, SUB, Harness, check_request_event, resource_id
from tests.support.scripted_arm import (
    Answer,
    cache_item,
    cluster_item,
    list_path,
    page,
    statuses,
)

# the longest tags a selector may name (15; names 512 characters, values 256), in characters
# outside the BMP: 4 bytes each in UTF-8, 12 as JSON's ASCII escapes
SHOP = {"app": "shop"}
LONG_TAGS = {f"{i:02}" + "\U0001f600" * 510: "\U0001f680" * 256 for i in range(15)}


@pytest.mark.parametrize("store", ["memory", "table"])
def test_a_selector_with_the_longest_non_ascii_tags_is_followed_to_its_end(
        make_harness: Callable[..., Harness], request: pytest.FixtureRequest, store: str
        ) -> None:
    """Each message of its chain fits, and a repeat matches its request row (which holds the
    fingerprint's digest) on Table storage too."""
    ledger = TableLedger.from_settings("t" + uuid.uuid4().hex[:20], connection_string=request
                                       .getfixturevalue("azurite")) if store == "table" else None
    h = make_harness(ledger=ledger)
    caches = list_path(SUB, RG, "redis")
    h.arm.on_list(caches, Answer(200, {}, page([cache_item(SUB, RG, "shop-eu", LONG_TAGS)])))
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, "shop-eu", Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    h.arm.on_operation(op, Answer(200, {}, op.status("InProgress")),
                       Answer(200, {}, op.status("Succeeded")))
    body = {"selector": {"subscriptionId": SUB, "resourceGroup": RG, "tags": LONG_TAGS,
                         "kinds": ["redis"]}, "requestId": "long-tags",
            "reason": "\U0001f600" * 256, "requestedBy": "\U0001f600" * 256}
    # as a pipeline sends it: UTF-8, under the body's 64 KiB
    wire = json.dumps(body, ensure_ascii=False).encode()
    rid = h.send_request(wire, message_id="long-tags-1") and "long-tags"

    h.run()

    assert h.bus.counts(h.settings.request_queue).get("deadletter", 0) == 0
    h.batch(rid, {resource_id(cache="shop-eu"): "Succeeded"}, "Succeeded", scope=SCOPE)
    assert all(len(e.message.body) <= 192 * 1024 for e in h.polls(rid))
    (row,) = [r for r in h.ledger.rows(rid) if r.key == ""]
    assert row.state == "done" and str(row.data["fingerprint"]).startswith("sha256:")
    sent = len(h.bus.send_calls)

    h.send_request(wire, message_id="long-tags-2")  # a repeat: re-announced, not flushed
    h.run()

    assert [r.method for r in h.arm.requests].count("POST") == 1
    published = {i for kind, _, ids in h.bus.send_calls[sent:] if kind == "topic" for i in ids}
    assert published == {f"{rid}:completed", f"{rid}:completed:0"}  # not RequestIdReused
    if ledger is not None:
        ledger.close()


class _SlowCall:
    """The ARM client whose call number `nth` (from 1) takes `seconds` of the harness's
    clock (a slow list page): the invocation's call window closes, and what is left of the
    listing goes to a poll message."""

    def __init__(self, inner: Any, h: Harness, seconds: float, nth: int = 1) -> None:
        self.inner, self.h, self.seconds, self.nth = inner, h, seconds, nth

    @property
    def pacer(self) -> Any:
        return self.inner.pacer

    def call(self, *args: Any, **kwargs: Any) -> Any:
        result = self.inner.call(*args, **kwargs)
        self.nth -= 1
        if self.nth == 0:
            self.h.clock.advance(self.seconds)
        return result


@pytest.mark.parametrize("size", [300_000, 1_000_000])
def test_a_next_link_too_long_for_a_poll_message_fails_the_request_with_an_event(
        h: Harness, size: int) -> None:
    caches = list_path(SUB, RG, "redis")
    link = h.arm.endpoint + caches + "&$skiptoken=" + "x" * size
    h.arm.on_list(caches, Answer(200, {}, page([cache_item(SUB, RG, "shop-eu", SHOP)],
                                               next_link=link)))
    h.app.arm = _SlowCall(h.app.arm, h, CALL_WINDOW + 1)  # type: ignore[assignment]
    rid = h.send_request({"selector": {"subscriptionId": SUB, "resourceGroup": RG,
                                       "tags": SHOP, "kinds": ["redis"]}},
                         message_id=f"big-link-{size}")

    h.run()

    assert h.bus.counts(h.settings.request_queue).get("deadletter", 0) == 0
    (only,) = h.event_messages(rid).values()
    data = check_request_event(only, rid, "Failed", SCOPE, results={})["data"]
    assert data["error"]["code"] == "ListTooLarge"
    assert "x" * 100 not in data["error"]["message"]  # the link is not repeated
    assert [r.method for r in h.arm.requests] == ["GET"]  # nothing flushed


def test_a_selector_matching_hundreds_of_clusters_ends_with_an_event(h: Harness) -> None:
    """Each matching Managed Redis cluster leaves its database list to read: 500 of them, with
    the longest names, are more than one poll message carries."""
    rg, clusters = "r" * 90, list_path(SUB, "r" * 90, "redisEnterprise")
    for n in range(5):
        items = [cluster_item(SUB, rg, f"c{n}{i:02}" + "x" * 59, SHOP) for i in range(100)]
        link = h.arm.endpoint + clusters + f"&$skiptoken={n + 1}" if n < 4 else None
        h.arm.on_list(clusters + (f"&$skiptoken={n}" if n else ""),
                      Answer(200, {}, page(items, next_link=link)))
    h.app.settings = dataclasses.replace(h.settings, allowed_scopes=(f"/subscriptions/{SUB}",))
    h.app.arm = _SlowCall(h.app.arm, h, CALL_WINDOW + 1, nth=5)  # type: ignore[assignment]
    rid = h.send_request({"selector": {"subscriptionId": SUB, "resourceGroup": rg, "all": True,
                                       "kinds": ["redisEnterprise"]}}, message_id="clusters")

    h.run()

    assert h.bus.counts(h.settings.request_queue).get("deadletter", 0) == 0
    (only,) = h.event_messages(rid).values()
    data = json.loads(only.body)["data"]
    assert data["status"] == "Failed" and data["error"]["code"] == "ListTooLarge"
    assert all(r.method == "GET" for r in h.arm.requests)


def test_fifty_caches_with_long_signed_operation_urls_are_all_followed_to_their_end(
        h: Harness) -> None:
    """50 caches whose flushes ARM answers with a Location of ~5.5 KB (signed parameters; the
    README's "even past 4 KB"): their poll state cannot all travel in one message. The
    longest are carried by reference to their ledger rows and read back when due: every
    cache is followed to its end, none is POSTed twice."""
    caches = [f"cache-{n:02d}" for n in range(50)]
    ops = {}
    for cache in caches:
        op = ops[cache] = h.arm.new_operation(SUB, huge=True)
        h.arm.on_flush(SUB, RG, cache, Answer(202, {"Location": op.url}, b""))
        h.arm.on_operation(op, *statuses(op, "InProgress", "InProgress"),
                           then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request({"resourceIds": [resource_id(cache=c) for c in caches]})

    h.run()

    assert h.bus.counts(h.settings.request_queue).get("deadletter", 0) == 0
    assert h.bus.counts(h.settings.poll_queue).get("deadletter", 0) == 0
    events = {json.loads(m.body)["data"].get("resourceId"): json.loads(m.body)["data"]
              for i, m in h.event_messages(rid).items() if i != f"{rid}:completed"}
    assert len(events) == 50
    assert all(d["status"] == "Succeeded" for d in events.values())
    assert [r.method for r in h.arm.requests].count("POST") == 50
    polls = h.polls(rid)
    assert all(len(e.message.body) <= 192 * 1024 for e in polls)
    # some went by reference, and were read at their own URL all the same
    assert any("ledger:sha256:" in e.message.body.decode() for e in polls)
    read = [r.raw_path for r in h.arm.requests if r.method == "GET"]
    assert all(read.count(op.path) == 3 for op in ops.values())
    request = json.loads(h.event_messages(rid)[f"{rid}:completed"].body)["data"]
    assert request["status"] == "Succeeded" and request["counts"]["Succeeded"] == 50
