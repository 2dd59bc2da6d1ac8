"""Replay: several caches, Managed Redis with its geo group, selectors, the pacer wiring."""
from __future__ import annotations

import json

from redisflush.core.cadence import ReadBudget
from redisflush.core.commands import Note, Publish, Reply
from redisflush.core.fit import MAX_MESSAGE_BYTES

from .world import (
    ENDPOINT,
    SUB,
    T0,
    World,
    accepted,
    answer,
    by_path,
    db_id,
    deferred,
    rid,
    running,
    succeeded,
)

ENTERPRISE_OP = (f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache/locations/westus3/"
                 "operationsStatus/op9?api-version=2025-07-01&t=1&c=2&s=3&h=4")


def test_three_caches_one_chain_events_as_each_ends_then_the_request():
    durations = {"a": 1, "b": 3, "c": 6}
    polls: dict[str, int] = {}

    def post(call, world):
        name = call.url.split("/Redis/")[1].split("/")[0]
        return accepted(op=name)

    def poll(call, world):
        name = call.url.split("operationresults/")[1].split("?")[0]
        polls[name] = polls.get(name, 0) + 1
        return succeeded() if polls[name] >= durations[name] else running()

    world = World(by_path({"/flush": post, "operationresults": poll}))
    ids = [rid("c"), rid("a"), rid("b")]
    world.run(world.request({"resourceIds": ids}, reply_to="replies"))
    events = world.published()
    assert [e["id"] for e in events] == ["req-1:completed:0", "req-1:completed:1",
                                        "req-1:completed:2", "req-1:completed"]
    assert [e["subject"] for e in events[:3]] == ["a", "b", "c"]  # sorted, finished in order
    assert all(e["data"]["batch"]["count"] == 3 for e in events[:3])
    final = events[-1]
    assert final["type"] == "RedisFlush.RequestCompleted"
    assert final["data"]["status"] == "Succeeded"
    assert final["data"]["counts"] == {"Succeeded": 3}
    assert final["data"]["armRequests"] == 3 + sum(durations.values())
    replies = [c for c in world.commands if isinstance(c, Reply)]
    assert [r.message.message_id for r in replies] == ["req-1:completed"]  # only the request's
    finished = [json.loads(n.message.body)["data"]["finished"]
                for n in world.commands if isinstance(n, Note)]
    assert [f["name"] for group in finished for f in group] == ["a", "b"]  # c: final event
    assert len(world.arm_calls("POST")) == 3


def test_one_target_failing_while_others_succeed():
    def post(call, world):
        if "/Redis/b/" in call.url:
            return answer(404, {"error": {"code": "ResourceNotFound", "message": "gone"}})
        return accepted(op=call.url.split("/Redis/")[1].split("/")[0])
    world = World(by_path({"/flush": post, "operationresults": lambda c, w: succeeded()}))
    world.run(world.request({"resourceIds": [rid("a"), rid("b"), rid("c")]}))
    final = world.published()[-1]
    assert final["data"]["status"] == "Failed"
    assert final["data"]["counts"] == {"Succeeded": 2, "Failed": 1}
    failed = [r for r in final["data"]["results"] if r["status"] == "Failed"]
    assert failed[0]["error"]["code"] == "ResourceNotFound"


def test_aggregate_status_prefers_failed_then_timed_out_then_canceled():
    from redisflush.core.events import aggregate_status
    assert aggregate_status(["Succeeded", "Succeeded"]) == "Succeeded"
    assert aggregate_status(["Canceled", "TimedOut", "Succeeded"]) == "TimedOut"
    assert aggregate_status(["Canceled", "TimedOut", "Failed"]) == "Failed"
    assert aggregate_status(["Succeeded", "Canceled"]) == "Canceled"


def geo_database(group=("eu", "us")):
    def read(call, world):
        own = call.url.split("/redisEnterprise/")[1].split("/")[0]
        return answer(200, {"id": db_id(own), "name": "default",
                            "properties": {"geoReplication": {"groupNickname": "g",
                                           "linkedDatabases": [{"id": db_id(c), "state": "Linked"}
                                                               for c in group]}}})
    return read


def enterprise_post(call, world):
    headers = {"Azure-AsyncOperation": ENTERPRISE_OP,
               "Location": call.url.replace("/flush?", "/operationresults/op9?") + "&t=1"}
    return answer(202, {"StatusCode": 202}, headers)


def test_managed_redis_reads_its_group_and_flushes_with_the_other_databases():
    polls = {"n": 0}

    def status(call, world):
        polls["n"] += 1
        return answer(200, {"id": "x", "name": "op9",
                            "status": "InProgress" if polls["n"] < 2 else "Succeeded"})
    world = World(by_path({"/flush": enterprise_post, "operationsStatus": status,
                           "/databases/default?": geo_database()}))
    world.run(world.request({"resourceId": db_id("eu")}))
    post = world.arm_calls("POST")[0]
    assert "api-version=2025-07-01" in post.url
    assert json.loads(post.body) == {"ids": [db_id("us")]}
    event = world.published()[0]
    assert event["subject"] == "eu/default"
    assert event["data"]["kind"] == "redisEnterprise"
    assert event["data"]["linkedDatabaseIds"] == [db_id("us")]
    assert event["data"]["status"] == "Succeeded"


def test_no_linked_sends_an_empty_ids_list_and_reads_nothing():
    world = World(by_path({"/flush": enterprise_post,
                           "operationsStatus": lambda c, w: answer(200, {"status": "Succeeded"})}))
    world.run(world.request({"resourceId": db_id("eu"), "linkedDatabaseIds": []}))
    assert [c.method for c in world.calls] == ["POST", "GET"]
    assert json.loads(world.arm_calls("POST")[0].body) == {"ids": []}
    assert world.published()[0]["data"]["linkedDatabaseIds"] == []


def test_a_linked_database_outside_the_allowed_scopes_is_not_flushed():
    from dataclasses import replace
    world = World(by_path({"/databases/default?": geo_database(("eu", "us"))}))
    world.config = replace(world.config, allowed_scopes=(db_id("eu"),))
    world.run(world.request({"resourceId": db_id("eu")}))
    assert world.arm_calls("POST") == []
    event = world.published()[0]
    assert event["data"]["status"] == "Rejected"
    assert event["data"]["error"]["code"] == "LinkedDatabaseNotAllowed"


def listing(pages):
    """A list API answering pages in order by the URL's first matching key."""
    def route(call, world):
        for key, body in pages.items():
            if key in call.url:
                return answer(200, body)
        raise AssertionError(call.url)
    return route


def test_selector_pages_both_kinds_and_matches_tags_case_insensitively():
    base = f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache"
    pages = {
        "skiptoken=2": {"value": [{"id": rid("shop-us"), "tags": {"app": "shop"}},
                                  {"id": rid("shop-case"), "tags": {"app": "Shop"}}]},
        "Cache/redis?": {"value": [
            {"id": rid("shop-eu"), "tags": {"App": "shop"}},
            {"id": rid("blog"), "tags": {"app": "blog"}},
            {"id": rid("shop-x", sub="11111111-2222-3333-4444-555555555555"),
             "tags": {"app": "shop"}}],  # another subscription: ignored
            "nextLink": f"{base}/redis?api-version=2023-08-01&$skiptoken=2"},
        "redisEnterprise?": {"value": [
            {"id": db_id("amr").rsplit("/databases", 1)[0], "tags": {"app": "shop"}}]},
        "amr/databases?": {"value": [{"id": db_id("amr")}, {"id": db_id("amr", "second")}]},
    }
    routes = {"/flush": lambda c, w: accepted(op="x"),
              "operationresults": lambda c, w: succeeded(),
              "/databases/": geo_database(("amr",)), **{k: listing(pages) for k in pages}}
    world = World(by_path({"/flush": routes.pop("/flush"),
                           "operationresults": routes.pop("operationresults"),
                           "skiptoken=2": listing(pages), "amr/databases?": listing(pages),
                           "Cache/redis?": listing(pages), "redisEnterprise?": listing(pages),
                           "/databases/": geo_database(("amr",))}))
    world.run(world.request({"selector": {"subscriptionId": SUB, "tags": {"app": "shop"}}}))
    final = world.published()[-1]
    assert final["type"] == "RedisFlush.RequestCompleted"
    names = sorted(r["resourceId"].rsplit("/", 1)[1] for r in final["data"]["results"])
    assert names == ["default", "second", "shop-eu", "shop-us"]
    assert final["source"] == f"/subscriptions/{SUB}"
    assert final["data"]["status"] == "Succeeded"


def test_selector_with_an_untrusted_next_link_sends_no_token_there():
    page = {"value": [], "nextLink": "https://evil.example/list?$skiptoken=1"}
    world = World(by_path({"Cache/redis?": lambda c, w: answer(200, page)}))
    world.run(world.request({"selector": {"subscriptionId": SUB, "all": True,
                                          "kinds": ["redis"]}}))
    assert all("evil" not in c.url for c in world.calls)
    final = world.published()[-1]
    assert final["data"]["status"] == "Failed"
    assert final["data"]["error"]["code"] == "UntrustedNextLink"


def test_selector_matching_nothing_or_too_many_is_rejected_with_the_count():
    world = World(by_path({"Cache/redis?": lambda c, w: answer(200, {"value": []})}))
    world.run(world.request({"selector": {"subscriptionId": SUB, "tags": {"a": "b"},
                                          "kinds": ["redis"]}}))
    final = world.published()[-1]
    assert final["data"]["status"] == "Rejected" and "matched 0 caches" in \
        final["data"]["error"]["message"]
    many = {"value": [{"id": rid(f"c{i}"), "tags": {"a": "b"}} for i in range(51)]}
    world = World(by_path({"Cache/redis?": lambda c, w: answer(200, many)}))
    world.run(world.request({"selector": {"subscriptionId": SUB, "tags": {"a": "b"},
                                          "kinds": ["redis"]}}))
    final = world.published()[-1]
    assert final["data"]["error"]["message"].endswith(
        "more than REDISFLUSH_MAX_TARGETS (50) caches (listing stopped once 51 had matched)")
    assert world.arm_calls("POST") == []


def test_deferred_by_the_pacer_comes_back_with_its_slot():
    answers = iter([deferred(4.0), accepted()])

    def post(call, world):
        return next(answers)
    world = World(by_path({"/flush": post, "operationresults": lambda c, w: succeeded()}))
    world.run(world.request({"resourceId": rid("web")}))
    posts = world.arm_calls("POST")
    assert [p.paced for p in posts] == [False, True]
    assert (world.scheduled[0].at - T0).total_seconds() == 4.0


def test_read_budget_spreads_polls_when_many_operations_share_a_subscription():
    world = World(by_path({"/flush": lambda c, w: accepted(),
                           "operationresults": lambda c, w: running()}))
    world.budgets = {SUB: ReadBudget(remaining=240, pollers=100)}
    world.invoke(__import__("redisflush.core.step", fromlist=["begin"]).begin(
        world.request({"resourceId": rid("web")}), world.now))
    gap = (world.scheduled[-1].at - T0).total_seconds()
    assert gap == 100 / 20.0  # 100 pollers over 80% of 25 reads/s
    world2 = World(world.script)
    world2.budgets = {SUB: ReadBudget(remaining=5, pollers=40)}
    world2.invoke(__import__("redisflush.core.step", fromlist=["begin"]).begin(
        world2.request({"resourceId": rid("web")}), world2.now))
    assert (world2.scheduled[-1].at - T0).total_seconds() == 4.0  # a low bucket slows down


def test_fifty_targets_with_2kib_urls_and_huge_arm_json_fit_every_message():
    def post(call, world):
        name = call.url.split("/Redis/")[1].split("/")[0]
        url = f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache/locations/w/" \
              f"operationresults/{name}?api-version=2023-08-01&t={'x' * 2048}"
        return answer(202, b"", {"Azure-AsyncOperation": url})

    huge = running(error={"message": "e" * 300_000}, percentComplete=10 ** 4000 // 10 ** 3990,
                   details=["d" * 10_000] * 50)

    def poll(call, world):
        return huge
    world = World(by_path({"/flush": post, "operationresults": poll}))
    request = world.request({"resourceIds": [rid(f"cache-{i:02}") for i in range(50)],
                             "timeoutSeconds": 30})
    world.run(request)
    sizes = [len(s.message.body) for s in world.scheduled] + \
        [len(c.message.body) for c in world.commands if isinstance(c, Publish)]
    assert max(sizes) <= MAX_MESSAGE_BYTES
    assert world.published()[-1]["data"]["counts"] == {"TimedOut": 50}
    assert len([s for s in world.scheduled]) >= 2


def test_a_selector_matching_one_cache_keeps_the_per_cache_and_request_ids_apart():
    page = {"value": [{"id": rid("only"), "tags": {"app": "shop"}}]}
    world = World(by_path({"Cache/redis?": lambda c, w: answer(200, page),
                           "/flush": lambda c, w: accepted(),
                           "operationresults": lambda c, w: succeeded()}))
    world.run(world.request({"selector": {"subscriptionId": SUB, "tags": {"app": "shop"},
                                          "kinds": ["redis"]}}))
    ids = [e["id"] for e in world.published()]
    assert ids == ["req-1:completed:0", "req-1:completed"]
    assert world.published()[0]["data"]["batch"] == {"index": 0, "count": 1}


def test_two_members_of_one_geo_group_in_one_request_flush_each_database_once():
    world = World(by_path({"/flush": enterprise_post,
                           "operationsStatus": lambda c, w: answer(200, {"status": "Succeeded"}),
                           "/databases/default?": geo_database(("eu", "us", "asia"))}))
    world.run(world.request({"resourceIds": [db_id("eu"), db_id("us")]}))
    bodies = {c.url.split("/redisEnterprise/")[1].split("/")[0]: json.loads(c.body)
              for c in world.arm_calls("POST")}
    assert bodies == {"eu": {"ids": [db_id("asia")]}, "us": {"ids": []}}
    flushed = [db for b in bodies.values() for db in b["ids"]] + list(bodies)
    assert len(flushed) == len(set(flushed)) == 3
    events = {e["subject"]: e["data"]["linkedDatabaseIds"] for e in world.published()[:2]}
    assert events == {"eu/default": [db_id("asia")], "us/default": []}
