"""Selectors resolved through ARM's list APIs over HTTP (docs/design.md, "Flush request" and
"Listing"): nextLink paging for both kinds, tag matching (names without case, values exact),
items outside the selector's scope ignored, a nextLink that leaves the ARM endpoint refused
before any token goes there, and the count rules (0 matches, more than the maximum).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from tests.support.harness import (
    RG,
    SCOPE,
    SUB,
    Harness,
    check_request_event,
    database_id,
    rejected_id,
    resource_id,
)
from tests.support.scripted_arm import (
    Answer,
    ScriptedArm,
    cache_item,
    cluster_item,
    database_body,
    database_item,
    database_list_path,
    enterprise_flush_path,
    flush_path,
    list_path,
    page,
)

OTHER_SUB = "11111111-2222-3333-4444-555555555555"
SHOP = {"app": "shop"}


def selector(**fields: object) -> dict[str, object]:
    return {"selector": {"subscriptionId": SUB, "resourceGroup": RG, "tags": SHOP, **fields}}


def test_a_tag_selector_pages_through_both_kinds_and_flushes_every_match(h: Harness) -> None:
    arm = h.arm
    caches, clusters = list_path(SUB, RG, "redis"), list_path(SUB, RG, "redisEnterprise")
    arm.on_list(caches, Answer(200, {}, page([
        cache_item(SUB, RG, "shop-eu", {"App": "shop"}),       # tag names ignore case
        cache_item(SUB, RG, "blog", {"app": "blog"}),
    ], next_link=arm.endpoint + caches + "&$skiptoken=c2")))
    arm.on_list(caches + "&$skiptoken=c2", Answer(200, {}, page([
        cache_item(SUB, RG, "shop-us", {"app": "shop", "env": "prod"}),
        cache_item(SUB, RG, "shop-case", {"app": "Shop"}),     # values are exact
        cache_item(SUB, "rg-other", "shop-other-rg", SHOP),    # outside the selector's scope
        cache_item(OTHER_SUB, RG, "shop-other-sub", SHOP),     # another subscription
        {"id": 42, "tags": SHOP},                              # not a resource at all
    ])))
    arm.on_list(clusters, Answer(200, {}, page([cluster_item(SUB, RG, "amr-eu", SHOP)],
                                               next_link=arm.endpoint + clusters + "&p=2")))
    arm.on_list(clusters + "&p=2", Answer(200, {}, page([
        cluster_item(SUB, RG, "amr-us", SHOP), cluster_item(SUB, RG, "amr-blog", {"app": "x"})])))
    arm.on_list(database_list_path(SUB, RG, "amr-eu"),
                Answer(200, {}, page([database_item(SUB, RG, "amr-eu")])))
    us_dbs = database_list_path(SUB, RG, "amr-us")
    arm.on_list(us_dbs, Answer(200, {}, page([database_item(SUB, RG, "amr-us")],
                                             next_link=arm.endpoint + us_dbs + "&p=2")))
    arm.on_list(us_dbs + "&p=2", Answer(200, {}, page([
        database_item(SUB, RG, "amr-us", "second")])))
    matched = {resource_id(cache=c): "Succeeded" for c in ("shop-eu", "shop-us")}
    for cache in ("shop-eu", "shop-us"):
        op = arm.new_operation(SUB)
        arm.on_flush(SUB, RG, cache, Answer(202, {"Azure-AsyncOperation": op.url}, b""))
        arm.on_operation(op, Answer(200, {}, op.status("InProgress")),
                         Answer(200, {}, op.status("Succeeded")))
    for cluster, db in (("amr-eu", "default"), ("amr-us", "default"), ("amr-us", "second")):
        arm.on_database(SUB, RG, cluster, db,
                        Answer(200, {}, database_body(SUB, RG, cluster, db)))
        arm.on_enterprise_flush(SUB, RG, cluster, db, Answer(200, {}, b""))
        matched[database_id(cluster, db)] = "Succeeded"
    rid = h.send_request(selector(), message_id="sel-1")

    h.run()

    caches_data, request = h.batch(rid, matched, "Succeeded", scope=SCOPE)
    assert request["counts"] == {"Succeeded": 5}
    # the list pages in order, each its own client request id `{requestId}:list.{page}.{step}`
    lists = [r for r in arm.requests if "/flush" not in r.raw_path and
             r.raw_path.split("?")[0].endswith(("/redis", "/redisEnterprise", "/databases"))]
    assert [(r.raw_path, r.client_request_id) for r in lists] == [
        (caches, f"{rid}:list.0.0"), (caches + "&$skiptoken=c2", f"{rid}:list.1.0"),
        (clusters, f"{rid}:list.2.0"), (clusters + "&p=2", f"{rid}:list.3.0"),
        (database_list_path(SUB, RG, "amr-eu"), f"{rid}:list.4.0"),
        (us_dbs, f"{rid}:list.5.0"), (us_dbs + "&p=2", f"{rid}:list.6.0")]
    posts = sorted(r.raw_path for r in arm.requests if r.method == "POST")
    assert posts == sorted([flush_path(SUB, RG, "shop-eu"), flush_path(SUB, RG, "shop-us"),
                            enterprise_flush_path(SUB, RG, "amr-eu"),
                            enterprise_flush_path(SUB, RG, "amr-us"),
                            enterprise_flush_path(SUB, RG, "amr-us", "second")])
    # per cache: sorted by id, classic before Managed Redis; databases flushed alone
    assert [caches_data[r]["batch"]["index"] for r in sorted(matched, key=str.lower)] == \
        [0, 1, 2, 3, 4]
    assert all(caches_data[database_id(c, d)]["linkedDatabaseIds"] == []
               for c, d in (("amr-eu", "default"), ("amr-us", "second")))
    assert request["armRequests"] == 7 + 2 * 3 + 3 * 2
    # what it resolved to is in the ledger, so a redelivery flushes the same set
    (row,) = [r for r in h.ledger.rows(rid) if r.key == ""]
    assert sorted(row.data["targets"], key=str.lower) == sorted(matched, key=str.lower)


def test_an_untrusted_next_link_sends_nothing_there_and_fails_the_request(
        h: Harness, servers: Callable[..., ScriptedArm]) -> None:
    foreign = servers("127.0.0.1")  # another port on loopback: not the ARM endpoint
    caches = list_path(SUB, RG, "redis")
    foreign.on_list(caches + "&$skiptoken=2",
                    then=Answer(200, {}, page([cache_item(SUB, RG, "shop-x", SHOP)])))
    h.arm.on_list(caches, Answer(200, {}, page(
        [cache_item(SUB, RG, "shop-eu", SHOP)],
        next_link=foreign.endpoint + caches + "&$skiptoken=2")))
    rid = h.send_request(selector(kinds=["redis", "redisEnterprise"]), message_id="sel-2")

    h.run()

    assert foreign.requests == [] and foreign.connections == 0
    assert [r.raw_path for r in h.arm.requests] == [caches]  # no POST, no further list
    (only,) = h.event_messages(rid).values()  # the request's event alone: no cache had one
    data = check_request_event(only, rid, "Failed", SCOPE, results={})["data"]
    assert data["error"]["code"] == "UntrustedNextLink"
    assert "skiptoken" not in data["error"]["message"]  # the link's query is not repeated
    assert data["counts"] == {} and data["results"] == []


def test_a_resolve_that_fails_counts_the_list_pages_it_read(h: Harness) -> None:
    caches = list_path(SUB, RG, "redis")
    h.arm.on_list(caches, Answer(200, {}, page([], next_link="https://elsewhere.example/x")))
    h.arm.on_list(list_path(SUB, RG, "redisEnterprise"), Answer(200, {}, page([])))
    rid = h.send_request(selector(), message_id="sel-7")

    h.run()

    (only,) = h.event_messages(rid).values()
    data = check_request_event(only, rid, "Failed", SCOPE, results={})["data"]
    assert data["error"]["code"] == "UntrustedNextLink"
    assert data["armRequests"] == len(h.arm.requests) == 1


def test_only_items_inside_the_scope_are_flushed(h: Harness) -> None:
    """A list answer is input too: an id outside the selector's scope is ignored."""
    caches = list_path(SUB, RG, "redis")
    h.arm.on_list(caches, Answer(200, {}, page([
        cache_item(SUB, RG, "shop-eu", SHOP),
        cache_item(SUB, "rg-payments", "payments", SHOP),
        {"id": "/subscriptions/x/../../providers/Microsoft.Cache/Redis/evil", "tags": SHOP}])))
    h.arm.on_flush(SUB, RG, "shop-eu", Answer(200, {}, b""))
    rid = h.send_request(selector(kinds=["redis"]), message_id="sel-3")

    h.run()

    # a selector's cache events are a batch even for one match: the request's own event
    # keeps `{requestId}:completed`
    caches_data, request = h.batch(rid, {resource_id(cache="shop-eu"): "Succeeded"},
                                   "Succeeded")
    assert caches_data[resource_id(cache="shop-eu")]["batch"] == {"index": 0, "count": 1}
    assert [r.method for r in h.arm.requests] == ["GET", "POST"]
    assert request["armRequests"] == 2


def test_a_selector_matching_nothing_is_rejected_naming_the_count(h: Harness) -> None:
    caches = list_path(SUB, RG, "redis")
    h.arm.on_list(caches, Answer(200, {}, page([cache_item(SUB, RG, "blog", {"app": "b"}),
                                                cache_item(SUB, "rg-x", "out", SHOP)])))
    rid = h.send_request(selector(kinds=["redis"]), message_id="sel-4")

    h.run()

    (only,) = h.event_messages(rid).values()
    data = check_request_event(only, rid, "Rejected", SCOPE, results={})["data"]
    assert data["error"]["code"] == "SelectorRejected"
    assert "matched 0 caches" in data["error"]["message"]
    assert "1 listed items were outside it" in data["error"]["message"]
    assert [r.method for r in h.arm.requests] == ["GET"]
    assert data["armRequests"] == 1


def test_a_selector_matching_more_than_the_maximum_is_rejected_without_a_post(
        make_harness: Callable[..., Harness]) -> None:
    h = make_harness(max_targets=2)
    caches = list_path(SUB, RG, "redis")
    h.arm.on_list(caches, Answer(200, {}, page([cache_item(SUB, RG, f"shop-{n}", SHOP)
                                                for n in range(3)])))
    rid = h.send_request(selector(kinds=["redis"]), message_id="sel-5")

    h.run()

    (only,) = h.event_messages(rid).values()
    data = check_request_event(only, rid, "Rejected", SCOPE, results={})["data"]
    assert data["error"]["message"].endswith(
        "matched more than REDISFLUSH_MAX_TARGETS (2) caches (listing stopped once 3 had matched)")
    assert [r.method for r in h.arm.requests] == ["GET"]
    assert data["armRequests"] == 1


def test_listing_stops_at_the_first_match_over_the_maximum_whatever_the_pages_left(
        make_harness: Callable[..., Harness]) -> None:
    # 40 pages of 100 matches, the first answered 503 so the listing goes on in poll
    # messages: the ids kept stop at the limit, so no message outgrows the bus
    h = make_harness(max_targets=50)
    caches = list_path(SUB, RG, "redis")
    for n in range(40):
        path = caches if n == 0 else f"{caches}&$skiptoken={n}"
        link = f"{h.arm.endpoint}{caches}&$skiptoken={n + 1}"
        items = page([cache_item(SUB, RG, f"shop-{n}-{i:03d}-{'x' * 40}", SHOP)
                      for i in range(100)], next_link=link)
        if n == 0:
            h.arm.on_list(path, Answer(503, {}, b""), then=Answer(200, {}, items))
        else:
            h.arm.on_list(path, Answer(200, {}, items))
    rid = h.send_request(selector(kinds=["redis"]), message_id="sel-many")

    h.run()

    (only,) = h.event_messages(rid).values()
    data = check_request_event(only, rid, "Rejected", SCOPE, results={})["data"]
    assert "more than REDISFLUSH_MAX_TARGETS (50)" in data["error"]["message"]
    assert [r.method for r in h.arm.requests] == ["GET", "GET"]  # the 503, then page 1 only
    assert all(len(p.message.body) < 16_000 for p in h.polls(rid))


def test_allowed_scopes_apply_to_every_resolved_target(h: Harness) -> None:
    """A subscription-wide selector on an app allowed one resource group: a match outside
    it rejects the request, and nothing is flushed (not even the allowed ones)."""
    caches = list_path(SUB, None, "redis")
    h.arm.on_list(caches, Answer(200, {}, page([cache_item(SUB, RG, "shop-eu", SHOP),
                                                cache_item(SUB, "rg-payments", "pay", SHOP)])))
    rid = h.send_request({"selector": {"subscriptionId": SUB, "tags": SHOP,
                                       "kinds": ["redis"]}}, message_id="sel-6")

    h.run()

    (only,) = h.event_messages(rid).values()
    data = check_request_event(only, rid, "Rejected", f"/subscriptions/{SUB}",
                               results={})["data"]
    assert "outside REDISFLUSH_ALLOWED_SCOPES" in data["error"]["message"]
    assert "rg-payments" in data["error"]["message"]
    assert [r.method for r in h.arm.requests] == ["GET"]


@pytest.mark.parametrize("where, field", [
    ({"subscriptionId": OTHER_SUB}, "selector.subscriptionId"),
    ({"resourceGroup": "rg-payments"}, "selector.resourceGroup"),
    ({"subscriptionId": OTHER_SUB, "resourceGroup": RG}, "selector.subscriptionId"),
])
def test_a_selector_wholly_outside_the_allowed_scopes_is_rejected_without_listing(
        h: Harness, where: dict[str, str], field: str) -> None:
    """No cache it could match may be flushed: it is refused on arrival, before the app's
    identity lists a scope the setting keeps it out of (and before the rejection could name
    a cache found there)."""
    rid = h.send_request({"selector": {"subscriptionId": SUB, "tags": SHOP, **where}},
                         message_id="sel-out")

    h.run()

    assert h.arm.requests == []
    (only,) = h.event_messages(rid).values()
    scope = f"/subscriptions/{where.get('subscriptionId', SUB)}" + (
        f"/resourceGroups/{where['resourceGroup']}" if "resourceGroup" in where else "")
    data = check_request_event(only, rid, "Rejected", scope, results={},
                               event_id=rejected_id(rid))["data"]
    assert data["error"]["target"] == field
    assert "REDISFLUSH_ALLOWED_SCOPES" in data["error"]["message"]
    assert h.polls() == []


def test_a_selector_over_an_allowed_scope_is_listed(h: Harness) -> None:
    """A subscription-wide selector may match caches of an allowed group: it is resolved."""
    h.arm.on_list(list_path(SUB, None, "redis"), Answer(200, {}, page([])))
    rid = h.send_request({"selector": {"subscriptionId": SUB.upper(), "tags": SHOP,
                                       "kinds": ["redis"]}}, message_id="sel-over")
    h.run()
    (only,) = h.event_messages(rid).values()
    assert "matched 0 caches" in json.loads(only.body)["data"]["error"]["message"]
    assert [r.method for r in h.arm.requests] == ["GET"]


def test_a_redelivered_selector_request_flushes_what_it_resolved_without_listing_again(
        h: Harness) -> None:
    """The resolved set is in the ledger: a redelivery neither lists nor POSTs again."""
    caches = list_path(SUB, RG, "redis")
    h.arm.on_list(caches, Answer(200, {}, page([cache_item(SUB, RG, "shop-eu", SHOP),
                                                cache_item(SUB, RG, "shop-us", SHOP)])))
    ops = {}
    for cache in ("shop-eu", "shop-us"):
        ops[cache] = op = h.arm.new_operation(SUB)
        h.arm.on_flush(SUB, RG, cache, Answer(202, {"Azure-AsyncOperation": op.url}, b""))
        h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request(selector(kinds=["redis"]), message_id="sel-8")
    h.bus.fail(h.settings.poll_queue)  # the first delivery dies scheduling its next step

    done = h.run(allow_errors=True)

    assert [(d.message_id, d.outcome) for d in done][:2] == [(rid, "abandoned"),
                                                             (rid, "completed")]
    assert [r.raw_path for r in h.arm.requests if r.raw_path == caches] == [caches]
    assert sorted(r.raw_path for r in h.arm.requests if r.method == "POST") == \
        [flush_path(SUB, RG, "shop-eu"), flush_path(SUB, RG, "shop-us")]
    statuses = {resource_id(cache=c): "Succeeded" for c in ("shop-eu", "shop-us")}
    # every request counts: the first delivery's list page and POSTs are carried in the
    # ledger rows it wrote, the redelivery adds the two status reads
    caches_data, request = h.batch(rid, statuses, "Succeeded",
                                   arm_requests=len(h.arm.requests))
    assert [d["armRequests"] for d in caches_data.values()] == [2, 2]
    assert all(d["acceptedAt"] == "2024-05-01T12:00:00.000Z" for d in caches_data.values())
    assert request["counts"] == {"Succeeded": 2}


def test_a_list_page_waits_out_a_read_pause_another_request_met(h: Harness) -> None:
    """A 429 on one request's status read pauses the subscription's reads for its
    Retry-After; a selector request arriving then reads its list page when the pause ends
    (the pacer's slot held for it), instead of failing each delivery until dead-lettered."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, "other", Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    throttled = {"error": {"code": "TooManyRequests", "message": "throttled"}}
    h.arm.on_operation(op, Answer(429, {"Retry-After": "30"}, throttled),
                       then=Answer(200, {}, op.status("Succeeded")))
    caches = list_path(SUB, RG, "redis")
    h.arm.on_list(caches, Answer(200, {}, page([cache_item(SUB, RG, "shop-eu", SHOP)])))
    flush = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, "shop-eu", Answer(202, {"Azure-AsyncOperation": flush.url}, b""))
    h.arm.on_operation(flush, then=Answer(200, {}, flush.status("Succeeded")))
    first = h.send_request({"subscriptionId": SUB, "resourceGroup": RG, "cacheName": "other"},
                           message_id="sel-paused-a")
    h.run(limit=2)  # its POST, then its first status read: 429, reads paused for 30 s
    throttled_at = h.clock.now()
    h.clock.advance(1)
    rid = h.send_request(selector(kinds=["redis"]), message_id="sel-paused-b")

    h.run()

    (lists,) = [r for r in h.arm.requests if r.raw_path == caches]
    assert (lists.when - throttled_at).total_seconds() >= 30
    check_request_event(h.event_messages(rid)[f"{rid}:completed"], rid, "Succeeded", SCOPE,
                        results={resource_id(cache="shop-eu"): "Succeeded"})
    assert h.event_messages(first)[f"{first}:completed"].application_properties["status"] \
        == "Succeeded"


def test_a_selector_request_rejected_on_arrival_gets_a_request_event_with_its_scope(
        h: Harness) -> None:
    """The body asked for a selector: its one event is the RequestCompleted that subscribers
    of the request's type wait for, with the selector's scope, not a FlushCompleted."""
    rid = h.send_request({**selector(kinds=["redis"]), "timeoutSeconds": 5},
                         message_id="sel-late")

    h.run()

    (only,) = h.event_messages(rid).values()
    assert only.message_id.startswith(f"{rid}:rejected:")
    data = check_request_event(only, rid, "Rejected", SCOPE, results={},
                               event_id=only.message_id)["data"]
    assert data["error"]["target"] == "timeoutSeconds"
    assert h.arm.requests == []


def test_a_cache_list_rejected_before_its_ids_were_read_gets_a_request_event(
        h: Harness) -> None:
    rid = h.send_request({"resourceIds": [resource_id(cache="shop-eu"), 42]},
                         message_id="ids-bad")

    h.run()

    (only,) = h.event_messages(rid).values()
    doc = json.loads(only.body)
    assert doc["type"] == "RedisFlush.RequestCompleted"
    assert doc["source"] == "/redisflush/requests" and "subject" not in doc
    assert doc["data"]["status"] == "Rejected"
    assert doc["data"]["error"]["target"] == "resourceIds[1]"


def test_a_repeat_of_a_rejected_selector_is_answered_from_the_ledger(h: Harness) -> None:
    """The request ended Rejected, and a requestId names one request for good: a repeat
    after the tag was put on a cache neither lists nor flushes, and its waiter gets the
    recorded Rejected (the topic already has it under the same id)."""
    caches = list_path(SUB, RG, "redis")
    h.arm.on_list(caches, Answer(200, {}, page([cache_item(SUB, RG, "late", {"app": "b"})])),
                  then=Answer(200, {}, page([cache_item(SUB, RG, "late", SHOP)])))
    body = {**selector(kinds=["redis"]), "requestId": "sel-again"}
    h.send_request(body, message_id="m-1")
    h.run()
    (first,) = h.event_messages("sel-again").values()
    h.clock.advance(3600)  # past the topic's duplicate window: the repeat's copy goes out
    h.send_request(body, message_id="m-2", reply_to="replies")

    h.run()

    assert [r.raw_path for r in h.arm.requests] == [caches]
    first_doc, again = json.loads(first.body), [e.message for e in h.events()][-1]
    assert again.message_id == first.message_id == "sel-again:completed"
    assert json.loads(again.body) == first_doc
    (reply,) = h.bus.messages("replies")
    assert json.loads(reply.message.body)["data"]["status"] == "Rejected"
    assert first_doc["data"]["error"]["code"] == "SelectorRejected"


def test_a_repeat_of_a_failed_listing_is_answered_from_the_ledger(h: Harness) -> None:
    caches = list_path(SUB, RG, "redis")
    h.arm.on_list(caches, Answer(400, {}, {"error": {"code": "BadFilter", "message": "no"}}),
                  then=Answer(200, {}, page([cache_item(SUB, RG, "shop-eu", SHOP)])))
    body = {**selector(kinds=["redis"]), "requestId": "list-failed"}
    h.send_request(body, message_id="m-1")
    h.run()
    h.clock.advance(3600)
    h.send_request(body, message_id="m-2")

    h.run()

    first, again = [json.loads(e.message.body) for e in h.events()]
    assert first == again and first["data"]["status"] == "Failed"
    assert first["data"]["error"]["code"] == "BadFilter"
    assert [r.method for r in h.arm.requests] == ["GET"]


def test_a_list_page_over_a_mebibyte_is_read_whole(h: Harness) -> None:
    """A large subscription's page of whole resources passes the 1 MiB a status body may
    have; it is read whole, not cut into JSON that reads as broken."""
    caches = list_path(SUB, RG, "redis")
    items = [cache_item(SUB, RG, f"other-{n:05d}", {"app": "blog", "pad": "x" * 200})
             for n in range(4000)] + [cache_item(SUB, RG, "shop-eu", SHOP)]
    h.arm.on_list(caches, Answer(200, {}, page(items)))
    assert len(json.dumps(page(items))) > 1024 * 1024
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, "shop-eu", Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request(selector(kinds=["redis"]), message_id="sel-big")

    h.run()

    check_request_event(h.event_messages(rid)[f"{rid}:completed"], rid, "Succeeded", SCOPE,
                        results={resource_id(cache="shop-eu"): "Succeeded"})


def test_a_cache_listed_on_two_pages_with_its_id_in_another_case_is_one_cache(
        h: Harness) -> None:
    """ARM compares resource ids without case: the same cache on two pages, once with its
    resource group in another case, is one target (one event, one count, one share of
    REDISFLUSH_MAX_TARGETS), not two reports of one POST."""
    arm = h.arm
    caches = list_path(SUB, None, "redis")
    arm.on_list(caches, Answer(200, {}, page([cache_item(SUB, RG, "shop-eu", SHOP)],
                                             next_link=arm.endpoint + caches + "&$skiptoken=2")))
    arm.on_list(caches + "&$skiptoken=2", Answer(200, {}, page([
        cache_item(SUB, RG.upper(), "shop-eu", SHOP)])))
    op = arm.new_operation(SUB)
    accepted = Answer(202, {"Azure-AsyncOperation": op.url}, b"")
    arm.on_flush(SUB, RG, "shop-eu", accepted, then=accepted)
    arm.on_flush(SUB, RG.upper(), "shop-eu", accepted, then=accepted)
    arm.on_operation(op, Answer(200, {}, op.status("Succeeded")),
                     then=Answer(200, {}, op.status("Succeeded")))
    h.send_request({"selector": {"subscriptionId": SUB, "tags": SHOP, "kinds": ["redis"]}},
                   message_id="sel-dup")

    h.run()

    assert len([r for r in arm.requests if r.method == "POST"]) == 1
    events = [json.loads(e.message.body) for e in h.events()]
    per_cache = [e for e in events if e["type"] == "RedisFlush.FlushCompleted"]
    (request,) = [e for e in events if e["type"] == "RedisFlush.RequestCompleted"]
    assert request["data"]["counts"] == {"Succeeded": 1}
    assert len(per_cache) == 1


@pytest.mark.parametrize("first, announced", [
    (Answer(200, {}, {"value": []}), "Rejected"),  # matched 0 caches: SelectorRejected
    (Answer(400, {}, {"error": {"code": "BadFilter", "message": "no"}}), "Failed"),
])
def test_a_selector_announced_rejected_is_not_listed_again_when_its_reply_fails(
        h: Harness, first: Answer, announced: str) -> None:
    """A rejected selector's commands are [Publish, Reply, RecordRequest("done")]: a reply
    that fails must not make the step run again, or the request's end is never recorded and
    the redelivery lists again and, now matching, flushes after the topic said Rejected or
    Failed ("a selector Rejected for 0 matches stays so under its requestId")."""
    shop = {"app": "shop"}
    caches = list_path(SUB, RG, "redis")
    h.arm.on_list(caches, first,  # the first listing: no match yet, or a failed listing
                  then=Answer(200, {}, page([cache_item(SUB, RG, "shop-eu", shop)])))
    h.arm.on_flush(SUB, RG, "shop-eu", then=Answer(200, {}, b""))
    h.bus.fail("redis-flush-replies", times=1,
               error="ServiceBusServerBusyError: the server is busy")
    h.send_request({"selector": {"subscriptionId": SUB, "resourceGroup": RG, "tags": shop,
                                 "kinds": ["redis"]}},
                   message_id="sel-retry", reply_to="redis-flush-replies",
                   reply_to_session_id="s-1")

    h.run(allow_errors=True)

    statuses = [json.loads(e.message.body)["data"]["status"] for e in h.events()]
    assert statuses[0] == announced  # announced on the topic first
    posts = h.arm.route("POST", flush_path(SUB, RG, "shop-eu")).requests
    assert posts == [], f"flushed after the request was announced Rejected: {statuses}"


def test_a_requestid_keeps_the_list_its_first_resolution_stored(h: Harness) -> None:
    # the first delivery's listing is interrupted (500: it goes on in a poll message); a
    # repeat of the requestId resolves meanwhile to {a, b}; then shop-0 is tagged, and the
    # first chain's own listing finds {0, a, b}: it adopts the stored {a, b}
    arm = h.arm
    caches = list_path(SUB, RG, "redis")
    arm.on_list(caches,
                Answer(500, {}, {"error": {"code": "InternalServerError", "message": "x"}}),
                Answer(200, {}, page([cache_item(SUB, RG, "shop-a", SHOP),
                                      cache_item(SUB, RG, "shop-b", SHOP)])),
                then=Answer(200, {}, page([cache_item(SUB, RG, "shop-0", SHOP),
                                           cache_item(SUB, RG, "shop-a", SHOP),
                                           cache_item(SUB, RG, "shop-b", SHOP)])))
    names = ("shop-0", "shop-a", "shop-b")
    for name in names:
        arm.on_flush(SUB, RG, name, then=Answer(200, {}, b""))
    body = {**selector(kinds=["redis"]), "requestId": "rel-77"}
    h.send_request(body, message_id="first")
    h.bus.pump(h.app, limit=1)
    h.send_request(body, message_id="second")

    h.run()

    posts = {n: len(arm.route("POST", flush_path(SUB, RG, n)).requests) for n in names}
    assert posts == {"shop-0": 0, "shop-a": 1, "shop-b": 1}
    assert [r.method for r in arm.requests].count("GET") == 3  # both chains listed
    # the events are the repeat's (it ended first): its list and its two POSTs
    h.batch("rel-77", {resource_id(cache="shop-a"): "Succeeded",
                       resource_id(cache="shop-b"): "Succeeded"}, "Succeeded", arm_requests=3)


@pytest.mark.parametrize("pages", [61, 62, 63])
def test_a_listing_that_ends_in_an_invocations_last_round_is_stored_by_the_next_message(
        h: Harness, pages: int) -> None:
    # storing the list is a call: in the last of an invocation's rounds its answer would
    # come back to no step, so the next message stores it
    caches = list_path(SUB, RG, "redis")
    for n in range(pages):
        path = caches if n == 0 else f"{caches}&$skiptoken={n}"
        last = n == pages - 1
        link = None if last else f"{h.arm.endpoint}{caches}&$skiptoken={n + 1}"
        h.arm.on_list(path, Answer(200, {}, page(
            [cache_item(SUB, RG, "shop-a", SHOP)] if last else [], next_link=link)))
    h.arm.on_flush(SUB, RG, "shop-a", then=Answer(200, {}, b""))
    rid = h.send_request(selector(kinds=["redis"]), message_id=f"sel-{pages}")

    h.run()

    assert len(h.arm.route("POST", flush_path(SUB, RG, "shop-a")).requests) == 1
    h.batch(rid, {resource_id(cache="shop-a"): "Succeeded"}, "Succeeded")


@pytest.mark.parametrize("later", ["tags-removed", "list-403"])
def test_a_chain_whose_own_listing_ends_the_request_adopts_a_list_stored_meanwhile(
        h: Harness, later: str) -> None:
    # the first delivery's listing is interrupted (503); a repeat stores {a, b} and POSTs
    # both (its poll:1 is the first chain's id: dropped as a duplicate); the first chain's
    # listing then matches nothing or is refused: it follows the stored list, it does not
    # end the request
    caches = list_path(SUB, RG, "redis")
    third = (Answer(200, {}, page([])) if later == "tags-removed" else
             Answer(403, {}, {"error": {"code": "AuthorizationFailed", "message": "no"}}))
    h.arm.on_list(caches, Answer(503, {}, {"error": {"code": "Busy", "message": "x"}}),
                  Answer(200, {}, page([cache_item(SUB, RG, "shop-a", SHOP),
                                        cache_item(SUB, RG, "shop-b", SHOP)])),
                  then=third)
    for name in ("shop-a", "shop-b"):
        op = h.arm.new_operation(SUB)
        h.arm.on_flush(SUB, RG, name, Answer(202, {"Azure-AsyncOperation": op.url}, b""))
        h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    body = {**selector(kinds=["redis"]), "requestId": "sel-race"}
    h.send_request(body, message_id="first")
    h.run(limit=1)
    h.send_request(body, message_id="repeat")
    h.run(limit=1)

    h.run()

    assert [len(h.arm.route("POST", flush_path(SUB, RG, n)).requests)
            for n in ("shop-a", "shop-b")] == [1, 1]
    h.batch("sel-race", {resource_id(cache="shop-a"): "Succeeded",
                         resource_id(cache="shop-b"): "Succeeded"}, "Succeeded",
            arm_requests=5)  # the repeat's: its page, two POSTs, two reads
    assert {r.state for r in h.ledger.rows("sel-race")} == {"done"}


def test_a_repeat_of_a_selector_request_ended_before_rows_kept_its_list_re_announces(
        h: Harness) -> None:
    # versions before 2026-12 kept no list on a selector's request row: a repeat of such a
    # request after the upgrade reads its caches from its target rows, lists nothing, and
    # re-publishes the recorded outcome (it looped listing for ever)
    caches = list_path(SUB, RG, "redis")
    h.arm.on_list(caches, then=Answer(200, {}, page([cache_item(SUB, RG, "shop-a", SHOP)])))
    h.arm.on_flush(SUB, RG, "shop-a", then=Answer(200, {}, b""))
    body = {**selector(kinds=["redis"]), "requestId": "old-sel"}
    h.send_request(body, message_id="first")
    h.run()
    row = h.ledger.get("old-sel", "")
    assert row is not None and row.state == "done"
    old = {k: v for k, v in row.data.items() if k not in ("targets", "armRequests")}
    assert h.ledger.update(dataclasses.replace(row, data=old)) is not None
    gets = len(h.arm.requests)

    h.send_request(body, message_id="repeat", reply_to="replies")
    done = h.run()

    assert len(done) == 1 and len(h.arm.requests) == gets  # no listing, no POST
    replies = [e.message_id for e in h.bus.messages("replies")]
    (reply,) = replies  # a selector's waiter gets the request's event
    assert reply.startswith("old-sel:completed:")
    assert json.loads(h.bus.messages("replies")[0].message.body)["data"]["status"] == \
        "Succeeded"


def test_a_next_link_without_api_version_is_read_with_the_listings(h: Harness) -> None:
    """ARM refuses a request without api-version (400 MissingApiVersionParameter); a nextLink
    that lacks one is read with the listing's own, as Azure's SDKs do, not refused as a whole."""
    arm = h.arm
    caches = list_path(SUB, RG, "redis")
    bare = caches.split("?")[0] + "?$skiptoken=c2"
    arm.on_list(caches, Answer(200, {}, page([], next_link=arm.endpoint + bare)))
    arm.on_list(bare + "&api-version=2023-08-01", Answer(200, {}, page([
        cache_item(SUB, RG, "shop-eu", SHOP)])))
    op = arm.new_operation(SUB)
    arm.on_flush(SUB, RG, "shop-eu", Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    arm.on_operation(op, Answer(200, {}, op.status("Succeeded")))
    rid = h.send_request(selector(kinds=["redis"]))

    h.run()

    _, request = h.batch(rid, {resource_id(cache="shop-eu"): "Succeeded"}, "Succeeded",
                         scope=SCOPE)
    assert request["counts"] == {"Succeeded": 1}


def test_a_listing_refused_with_an_error_past_a_ledger_row_still_ends_with_an_event(
        h: Harness) -> None:
    """ARM's error text is cut before the request row keeps it (a row holds at most
    30,000 characters): an uncut one raised on every delivery, dead-lettering the request
    with no event."""
    h.arm.on_list(list_path(SUB, RG, "redis"), then=Answer(403, {}, {"error": {
        "code": "AuthorizationFailed", "message": "no " + "x" * 100_000}}))
    rid = h.send_request(selector(kinds=["redis"]), message_id="sel-big-error")

    done = h.run()

    assert {d.outcome for d in done} == {"completed"}
    (only,) = h.event_messages(rid).values()
    data = check_request_event(only, rid, "Failed", SCOPE, results={})["data"]
    assert data["error"]["code"] == "AuthorizationFailed"
    assert data["error"]["message"].startswith("listing the redis caches: no xxx")


def test_a_listing_refused_with_an_error_of_no_text_names_the_http_status(h: Harness) -> None:
    """A listing's error code or message that is not text (a number, an object) reached the
    request's event as Python's rendering of it (`{'c': 1}`): now the HTTP status names it,
    as for a cache's flush (README, "Events": `code` and `message`, text)."""
    h.arm.on_list(list_path(SUB, RG, "redis"), then=Answer(403, {}, {"error": {
        "code": {"c": 1}, "message": 42}}))
    rid = h.send_request(selector(kinds=["redis"]), message_id="sel-odd-error")

    h.run()

    (only,) = h.event_messages(rid).values()
    data = check_request_event(only, rid, "Failed", SCOPE, results={})["data"]
    assert (data["error"]["code"], data["error"]["message"]) == (
        "Http403", "listing the redis caches: HTTP 403"), data["error"]


def test_a_default_kinds_selector_refused_the_managed_redis_listing_names_that_kind(
        h: Harness) -> None:
    """An app deployed with managedRedisAccess none (infra/README.md) may list classic caches
    but not Managed Redis clusters: the selector's default kinds list both, and the event
    says which listing was refused, so the pipeline knows to send kinds ["redis"]; no cache
    of the allowed kind is flushed on a partial listing."""
    h.arm.on_list(list_path(SUB, RG, "redis"), Answer(200, {}, page([
        cache_item(SUB, RG, "shop-eu", SHOP)])))
    h.arm.on_list(list_path(SUB, RG, "redisEnterprise"), then=Answer(403, {}, {"error": {
        "code": "AuthorizationFailed", "message": "no read on redisEnterprise"}}))
    rid = h.send_request(selector(), message_id="sel-no-amr")

    h.run()

    (only,) = h.event_messages(rid).values()
    data = check_request_event(only, rid, "Failed", SCOPE, results={})["data"]
    assert (data["error"]["code"], data["error"]["message"]) == (
        "AuthorizationFailed", "listing the redisEnterprise caches: no read on redisEnterprise")
    assert not [r for r in h.arm.requests if r.method == "POST"], "flushed on a partial listing"
