"""Azure Managed Redis (`Microsoft.Cache/redisEnterprise`) databases end to end over HTTP:
read the database to learn its geo-replication group, flush it with `{"ids": [...]}` naming
the other members, follow `operationsStatus` or the database's signed `operationresults`
Location (docs/design.md, "What ARM really does", whose shapes the emulator and these tests
follow).
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from urllib.parse import quote

import pytest

from redisflush.ledger import LedgerRow, MemoryLedger
from tests.support.harness import SUB, Harness, database_id, resource_id, target_of
from tests.support.memory_bus import START
from tests.support.scripted_arm import (
    ENTERPRISE_API_VERSION,
    Answer,
    database_body,
    enterprise_flush_path,
)

RG, RG2 = "rg-caches", "rg-caches-us"
CLUSTER, PARTNER = "amr-eu", "amr-us"
DB = database_id(CLUSTER, rg=RG)
PARTNER_DB = database_id(PARTNER, rg=RG2)
DB_GET = f"{DB}?api-version={ENTERPRISE_API_VERSION}"
FLUSH = enterprise_flush_path(SUB, RG, CLUSTER, "default")
SUBSCRIPTION = f"/subscriptions/{SUB}"


@pytest.fixture
def h(make_harness: Callable[..., Harness]) -> Harness:
    """The geo pair spans two resource groups: the app may flush the whole subscription."""
    return make_harness(allowed_scopes=(SUBSCRIPTION,))


def seconds(moment: dt.datetime) -> float:
    return (moment - START).total_seconds()


def test_a_geo_replicated_database_is_flushed_with_its_group(h: Harness) -> None:
    """GET database -> POST {"ids": [partner]} -> operationsStatus 200 InProgress -> 200
    Succeeded: the recorded shape of a sibling database action."""
    status, location = h.arm.new_enterprise_operation(SUB, RG, CLUSTER, "default")
    h.arm.on_database(SUB, RG, CLUSTER, "default",
                      Answer(200, {}, database_body(SUB, RG, CLUSTER, linked=[PARTNER_DB])))
    h.arm.on_enterprise_flush(SUB, RG, CLUSTER, "default", Answer(
        202, {"Azure-AsyncOperation": status.url, "Location": location.url}, {"StatusCode": 202}))
    started = {"startTime": "2024-05-01T12:00:00Z"}
    h.arm.on_operation(status, Answer(200, {}, status.status("InProgress", **started)),
                       Answer(200, {}, status.status("Succeeded", **started,
                                                     endTime="2024-05-01T12:00:02Z")))
    rid = h.send_request({"resourceId": DB})

    h.run()

    data = h.event(rid, "Succeeded", rid=DB)
    assert data["kind"] == "redisEnterprise"
    assert data["linkedDatabaseIds"] == [PARTNER_DB]
    assert data["operation"] == status.status("Succeeded", **started,
                                              endTime="2024-05-01T12:00:02Z")
    assert data["armRequests"] == 4 and data["acceptedAt"] == "2024-05-01T12:00:00.000Z"
    assert [(r.method, r.raw_path, r.client_request_id, seconds(r.when))
            for r in h.arm.requests] == [
        ("GET", DB_GET, f"{rid}:0.0", 0.0), ("POST", FLUSH, f"{rid}:0.0", 0.0),
        ("GET", status.path, f"{rid}:0.1", 1.0), ("GET", status.path, f"{rid}:0.2", 2.0)]
    post = h.arm.requests[1]
    assert post.json == {"ids": [PARTNER_DB]}
    assert post.header("Content-Type") == "application/json"
    polls = h.polls(rid)
    assert [(target_of(p)["pollKind"], target_of(p)["pollUrl"], target_of(p)["linked"])
            for p in polls] == [("azure-asyncoperation", status.url, [PARTNER_DB])] * 2
    props = dict(h.events()[0].message.application_properties)
    assert (props["cacheName"], props["kind"]) == (CLUSTER, "redisEnterprise")
    row = h.ledger.get(rid, DB.lower())
    assert row is not None and row.state == "done"


def test_the_location_variant_is_followed_to_its_200(h: Harness) -> None:
    """Only the database's signed `operationresults` Location: 202 (no body) while running,
    then 200 means done whatever the body (ARM's Location rule)."""
    _, location = h.arm.new_enterprise_operation(SUB, RG, CLUSTER, "default")
    h.arm.on_enterprise_flush(SUB, RG, CLUSTER, "default",
                              Answer(202, {"Location": location.url}, {"StatusCode": 202}))
    h.arm.on_operation(location, Answer(202, {"Location": location.url}, b""),
                       Answer(200, {}, b""))
    rid = h.send_request({"resourceId": DB, "linkedDatabaseIds": []})

    h.run()

    data = h.event(rid, "Succeeded", rid=DB)
    assert data["linkedDatabaseIds"] == []
    assert data["operation"] is None
    assert [(r.method, r.raw_path, seconds(r.when)) for r in h.arm.requests] == [
        ("POST", FLUSH, 0.0), ("GET", location.path, 1.0), ("GET", location.path, 2.0)]
    assert h.arm.requests[0].json == {"ids": []}
    assert {target_of(p)["pollKind"] for p in h.polls(rid)} == {"location"}


def test_given_linked_ids_are_sent_as_given_without_reading_the_database(h: Harness) -> None:
    """Linked ids are case-sensitive in Azure: they go into the body exactly as given."""
    partner = PARTNER_DB.replace("rg-caches-us", "RG-Caches-US")
    status, _ = h.arm.new_enterprise_operation(SUB, RG, CLUSTER, "default")
    h.arm.on_enterprise_flush(SUB, RG, CLUSTER, "default",
                              Answer(202, {"Azure-AsyncOperation": status.url}, b""))
    h.arm.on_operation(status, Answer(200, {}, status.status("Succeeded")))
    rid = h.send_request({"subscriptionId": SUB, "resourceGroup": RG, "clusterName": CLUSTER,
                          "linkedDatabaseIds": [partner]})

    h.run()

    data = h.event(rid, "Succeeded", rid=DB)
    assert data["linkedDatabaseIds"] == [partner]
    assert [r.method for r in h.arm.requests] == ["POST", "GET"]
    assert h.arm.requests[0].json == {"ids": [partner]}


def test_a_bare_cluster_id_means_its_default_database_alone_when_not_replicated(
        h: Harness) -> None:
    h.arm.on_database(SUB, RG, CLUSTER, "default",
                      Answer(200, {}, database_body(SUB, RG, CLUSTER)))
    h.arm.on_enterprise_flush(SUB, RG, CLUSTER, "default", Answer(200, {}, b""))
    rid = h.send_request({"resourceId": DB.rsplit("/databases/", 1)[0]})

    h.run()

    data = h.event(rid, "Succeeded", rid=DB)
    assert data["linkedDatabaseIds"] == [] and data["armRequests"] == 2
    assert h.arm.requests[1].json == {"ids": []}
    assert h.polls() == []


def test_a_linked_database_outside_the_allowed_scopes_is_never_flushed(
        make_harness: Callable[..., Harness]) -> None:
    """The group's other member would be flushed too, so it must be inside the scopes."""
    h = make_harness()  # allowed: rg-caches only; the partner lives in rg-caches-us
    h.arm.on_database(SUB, RG, CLUSTER, "default",
                      Answer(200, {}, database_body(SUB, RG, CLUSTER, linked=[PARTNER_DB])))
    rid = h.send_request({"resourceId": DB})

    h.run()

    data = h.event(rid, "Rejected", rid=DB)
    assert data["error"]["code"] == "LinkedDatabaseNotAllowed"
    assert data["linkedDatabaseIds"] == []  # nothing was flushed with it
    assert [r.method for r in h.arm.requests] == ["GET"]
    assert h.ledger.get(rid, DB.lower()) is not None  # the outcome is kept for a repeat


def test_an_unreadable_database_is_retried_then_fails_without_a_post(h: Harness) -> None:
    h.arm.on_database(SUB, RG, CLUSTER, "default", then=Answer(200, {}, b"<html>"))
    rid = h.send_request({"resourceId": DB})

    h.run()

    data = h.event(rid, "Failed", rid=DB)
    assert data["error"]["code"] == "DatabaseInvalidJson"
    assert [r.method for r in h.arm.requests] == ["GET"] * 4  # the first and 3 retries


def test_a_missing_database_fails_with_arms_error(h: Harness) -> None:
    error = {"code": "ResourceNotFound", "message": "database default of amr-eu not found"}
    h.arm.on_database(SUB, RG, CLUSTER, "default", Answer(404, {}, {"error": error}))
    rid = h.send_request({"resourceId": DB})

    h.run()

    data = h.event(rid, "Failed", rid=DB)
    assert (data["error"]["code"], data["error"]["message"]) == (error["code"],
                                                                 error["message"])
    assert data["error"]["httpStatus"] == 404
    assert [r.method for r in h.arm.requests] == ["GET"]


class CountingLedger(MemoryLedger):
    """The memory ledger, counting the writes to each row."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def insert(self, row: LedgerRow) -> LedgerRow | None:
        self.writes.append(row.key)
        return super().insert(row)

    def update(self, row: LedgerRow) -> LedgerRow | None:
        self.writes.append(row.key)
        return super().update(row)


def test_a_group_member_waiting_for_an_earlier_ones_post_claims_only_when_it_may_go(
        make_harness: Callable[..., Harness]) -> None:
    """Two members of one group in one request, the first one's POST held 150 s by the
    pacer (another request's 429): the second waits unclaimed, rather than taking and giving
    back its claim every second, and flushes nothing the first one did."""
    ledger = CountingLedger()
    h = make_harness(ledger=ledger, allowed_scopes=(SUBSCRIPTION,))
    throttled = Answer(429, {"Retry-After": "150"},
                       {"error": {"code": "TooManyRequests", "message": "throttled"}})
    other = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, "other", throttled,
                   then=Answer(202, {"Azure-AsyncOperation": other.url}, b""))
    h.arm.on_operation(other, then=Answer(200, {}, other.status("Succeeded")))
    h.send_request({"resourceId": resource_id(rg=RG, cache="other"), "requestId": "other"})
    h.run(limit=1)  # writes parked for 150 s
    first, second, third = (database_id(c, rg=RG) for c in ("amr-a", "amr-b", "amr-x"))
    for cluster, linked in (("amr-a", [second, third]), ("amr-b", [first, third])):
        h.arm.on_database(SUB, RG, cluster, "default",
                          then=Answer(200, {}, database_body(SUB, RG, cluster, linked=linked)))
        status, _ = h.arm.new_enterprise_operation(SUB, RG, cluster, "default")
        h.arm.on_enterprise_flush(SUB, RG, cluster, "default",
                                  then=Answer(202, {"Azure-AsyncOperation": status.url}, {}))
        h.arm.on_operation(status, then=Answer(200, {}, status.status("Succeeded")))
    ledger.writes.clear()
    h.send_request({"resourceIds": [first, second], "requestId": "group"})

    h.run()

    assert ledger.writes.count(second.lower()) <= 3  # its claim, its acceptance, its end
    # and the chain sleeps until the first one's POST is due: it woke every second (152
    # poll messages and invocations for 150 s of waiting)
    assert len(h.polls("group")) <= 5, [seconds(p.visible_at) for p in h.polls("group")]
    posts = [r for r in h.arm.requests if r.method == "POST" and "databases" in r.raw_path]
    assert [json.loads(r.body)["ids"] for r in posts] == [[third], []]  # each database once


def test_a_group_member_found_in_doubt_keeps_its_share_of_the_group(h: Harness) -> None:
    """The first member's POST (with the third database) goes out twice with no answer
    (504, 504: FlushInDoubt): the third database may have been flushed by either, so the
    second member does not flush it again, and the first one's event names it."""
    first, second, third = (database_id(c, rg=RG) for c in ("amr-a", "amr-b", "amr-x"))
    for cluster, linked in (("amr-a", [second, third]), ("amr-b", [first, third])):
        h.arm.on_database(SUB, RG, cluster, "default",
                          then=Answer(200, {}, database_body(SUB, RG, cluster, linked=linked)))
    gateway = Answer(504, {}, {"error": {"code": "GatewayTimeout", "message": "gateway"}})
    h.arm.on_enterprise_flush(SUB, RG, "amr-a", "default", gateway, gateway)
    status, _ = h.arm.new_enterprise_operation(SUB, RG, "amr-b", "default")
    h.arm.on_enterprise_flush(SUB, RG, "amr-b", "default",
                              then=Answer(202, {"Azure-AsyncOperation": status.url}, {}))
    h.arm.on_operation(status, then=Answer(200, {}, status.status("Succeeded")))
    h.send_request({"resourceIds": [first, second], "requestId": "doubt"})

    h.run()

    posts = [r for r in h.arm.requests if r.method == "POST" and "databases" in r.raw_path]
    assert [json.loads(r.body)["ids"] for r in posts] == [[third], [third], []]
    caches, _ = h.batch("doubt", {first: "Failed", second: "Succeeded"}, "Failed")
    assert caches[first]["error"]["code"] == "FlushInDoubt"
    assert caches[first]["linkedDatabaseIds"] == [third]
    assert caches[second]["linkedDatabaseIds"] == []


def test_a_failed_flush_names_arms_error_given_as_an_error_response(h: Harness) -> None:
    """Managed Redis' OperationStatus declares `error` an ErrorResponse (`{"error": {code,
    message}}`), not classic Redis' bare ErrorDetail: the event's error still has ARM's code
    and message at its top level, and the operation keeps ARM's own words."""
    status, _ = h.arm.new_enterprise_operation(SUB, RG, CLUSTER, "default")
    accepted = Answer(202, {"Azure-AsyncOperation": status.url}, {"StatusCode": 202})
    h.arm.on_enterprise_flush(SUB, RG, CLUSTER, "default", accepted)
    wrapped = {"error": {"code": "FlushFailed", "message": "the database did not flush"}}
    h.arm.on_operation(status, Answer(200, {}, status.status("Failed", error=wrapped)))
    rid = h.send_request({"resourceId": DB, "linkedDatabaseIds": []})

    h.run()

    data = h.event(rid, "Failed", rid=DB)
    assert data["error"] == wrapped["error"]
    assert data["operation"]["error"] == wrapped


def test_fifty_long_linked_ids_are_flushed_announced_and_recorded_once(h: Harness) -> None:
    """The longest linkedDatabaseIds the request rules accept (50 ids of a 90-character
    resource group and 63-character names): the `done` row kept the `accepted` row's list and
    the outcome's copy of it, 36,000 characters, over the row limit (a string property holds
    32 K), so the step raised on every delivery and the flush was never announced."""
    rg, cluster = "r" * 90, "c" * 63
    target = database_id(cluster, rg=rg)
    linked = [database_id(f"{'d' * 60}{i:03d}", "e" * 63, rg=rg) for i in range(50)]
    status, location = h.arm.new_enterprise_operation(SUB, rg, cluster, "default")
    h.arm.on_enterprise_flush(SUB, rg, cluster, "default", Answer(
        202, {"Azure-AsyncOperation": status.url, "Location": location.url}, {}))
    h.arm.on_operation(status, Answer(200, {}, status.status("Succeeded")))
    rid = h.send_request({"resourceId": target, "linkedDatabaseIds": linked})

    h.run()

    data = h.event(rid, "Succeeded", rid=target)
    assert data["linkedDatabaseIds"] == linked
    assert [r.method for r in h.arm.requests] == ["POST", "GET"]
    row = h.ledger.get(rid, target.lower())
    assert row is not None and row.state == "done"
    assert row.data["outcome"]["linked"] == linked


def test_linked_ids_in_a_resource_group_named_in_japanese_are_flushed_once(
        h: Harness) -> None:
    """The request row keeps the request's fingerprint, JSON with every non-ASCII character
    escaped (6 characters each): 40 linked ids in a resource group of 88 kana made it 31,000
    characters, over the row limit, so opening the request raised on every delivery and the
    request was dead-lettered with no event. A long fingerprint is now kept as its digest."""
    rg, cluster = "リソース" * 22, "amr-jp"
    target = database_id(cluster, rg=rg)
    linked = [database_id(f"amr-jp-{i:02d}", rg=rg) for i in range(40)]
    status, _ = h.arm.new_enterprise_operation(SUB, rg, cluster, "default")
    h.arm.on("POST", quote(enterprise_flush_path(SUB, rg, cluster), safe="/?=-"),
             Answer(202, {"Azure-AsyncOperation": status.url}, {}))
    h.arm.on_operation(status, Answer(200, {}, status.status("Succeeded")))
    first = h.send_request({"resourceId": target, "linkedDatabaseIds": linked,
                            "requestId": "jp-geo"})

    h.run()

    data = h.event("jp-geo", "Succeeded", rid=target)
    assert data["linkedDatabaseIds"] == linked
    assert [r.method for r in h.arm.requests] == ["POST", "GET"]
    request_row = h.ledger.get("jp-geo", "")
    assert request_row is not None and request_row.state == "done"

    again = h.send_request({"resourceId": target, "linkedDatabaseIds": linked,
                            "requestId": "jp-geo"})
    h.run()
    assert [r.method for r in h.arm.requests] == ["POST", "GET"]  # a repeat: no second flush
    # the repeat's copy of the event (same id) was dropped by the topic: no RequestIdReused
    assert [e.message_id for e in h.events()] == ["jp-geo:completed"]
    assert again != first


def test_a_lone_surrogate_in_arms_error_does_not_cost_the_done_record_of_a_long_group(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """ARM's error holding half a surrogate pair made the ledger store the whole `done` row
    escaped, every non-ASCII character as 6: with 50 linked ids in a resource group named in
    kana, 14,000 characters became 36,000, over the row limit, so the record was refused and
    skipped (the row stayed `accepted`: a repeat read ARM again and could announce another
    outcome). Only the lone surrogate is escaped now."""
    rg, cluster = "リソース" * 22, "c" * 63
    target = database_id(cluster, rg=rg)
    linked = [database_id(f"{'d' * 60}{i:03d}", "e" * 63, rg=rg) for i in range(50)]
    status, _ = h.arm.new_enterprise_operation(SUB, rg, cluster, "default")
    h.arm.on("POST", quote(enterprise_flush_path(SUB, rg, cluster), safe="/?=-"),
             Answer(202, {"Azure-AsyncOperation": status.url}, {}))
    broken = {"error": {"code": "FlushFailed", "message": "shard \ud800 did not answer"}}
    h.arm.on_operation(status, Answer(200, {}, status.status("Failed", error=broken)))
    rid = h.send_request({"resourceId": target, "linkedDatabaseIds": linked})

    h.run()

    data = h.event(rid, "Failed", rid=target)
    assert data["error"]["message"] == "shard \ud800 did not answer"
    row = h.ledger.get(rid, target.lower())
    assert row is not None and row.state == "done", row and row.state
    assert row.data["outcome"]["error"]["message"] == "shard \ud800 did not answer"
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


def test_a_group_members_post_in_doubt_at_its_deadline_keeps_its_share(h: Harness) -> None:
    """The first member's POST (with the third database) gets a gateway's 504 with a
    Retry-After past the deadline: it may have run, so it ends TimedOut naming the third
    database and saying so, and the second member does not flush that database again (it
    did: the first one's outcome named nothing, so the second one's share took it back)."""
    first, second, third = (database_id(c, rg=RG) for c in ("amr-a", "amr-b", "amr-x"))
    for cluster, linked in (("amr-a", [second, third]), ("amr-b", [first, third])):
        h.arm.on_database(SUB, RG, cluster, "default",
                          then=Answer(200, {}, database_body(SUB, RG, cluster, linked=linked)))
    h.arm.on_enterprise_flush(SUB, RG, "amr-a", "default", Answer(
        504, {"Retry-After": "120"}, {"error": {"code": "GatewayTimeout", "message": "gw"}}))
    status, _ = h.arm.new_enterprise_operation(SUB, RG, "amr-b", "default")
    h.arm.on_enterprise_flush(SUB, RG, "amr-b", "default",
                              then=Answer(202, {"Azure-AsyncOperation": status.url}, {}))
    h.arm.on_operation(status, then=Answer(200, {}, status.status("Succeeded")))
    h.send_request({"resourceIds": [first, second], "requestId": "late",
                    "timeoutSeconds": 60})

    h.run()

    posts = [r for r in h.arm.requests if r.method == "POST" and "databases" in r.raw_path]
    assert [json.loads(r.body)["ids"] for r in posts] == [[third], []]  # each database once
    caches, _ = h.batch("late", {first: "TimedOut", second: "Succeeded"}, "TimedOut")
    assert caches[first]["linkedDatabaseIds"] == [third]
    assert "may or may not have run" in caches[first]["error"]["message"]
    assert caches[first]["error"]["details"][0]["code"] == "GatewayTimeout"
    assert caches[second]["linkedDatabaseIds"] == []


def test_both_members_of_a_pair_in_two_subscriptions_are_each_flushed_alone(
        make_harness: Callable[..., Harness]) -> None:
    """README, "Geo-replication groups": one POST per named database, each with the members
    the request does not name ({"ids": []} for both of a pair), each to its own
    subscription's URL; both events say nothing else was flushed with them."""
    sub2 = "0b5d2c4e-1111-4a8e-9d56-2d2f8c1f0a22"
    h = make_harness(allowed_scopes=(SUBSCRIPTION, f"/subscriptions/{sub2}"))
    eu, us = DB, database_id(PARTNER, rg=RG2, sub=sub2)
    for sub, rg, cluster, partner in ((SUB, RG, CLUSTER, us), (sub2, RG2, PARTNER, eu)):
        h.arm.on_database(sub, rg, cluster, "default",
                          then=Answer(200, {}, database_body(sub, rg, cluster, linked=[partner])))
        status, _ = h.arm.new_enterprise_operation(sub, rg, cluster, "default")
        h.arm.on_enterprise_flush(sub, rg, cluster, "default",
                                  then=Answer(202, {"Azure-AsyncOperation": status.url}, {}))
        h.arm.on_operation(status, then=Answer(200, {}, status.status("Succeeded")))
    h.send_request({"resourceIds": [eu, us], "requestId": "pair"})

    h.run()

    posts = sorted((r.raw_path.split("/")[2], json.loads(r.body)["ids"])
                   for r in h.arm.requests if r.method == "POST")
    assert posts == sorted([(SUB, []), (sub2, [])])
    caches, _ = h.batch("pair", {eu: "Succeeded", us: "Succeeded"}, "Succeeded",
                        scope="/subscriptions")
    assert caches[eu]["linkedDatabaseIds"] == [] and caches[us]["linkedDatabaseIds"] == []


def test_every_listed_member_is_sent_whatever_its_link_state(h: Harness) -> None:
    """README, "Geo-replication groups": the GET's `state` of a member (Linking, Unlinking,
    LinkFailed) does not decide; ARM does, and its refusal ends the database Failed."""
    states = {PARTNER_DB: "LinkFailed", database_id("amr-ap", rg=RG2): "Unlinking"}
    body = database_body(SUB, RG, CLUSTER, linked=list(states))
    for item in body["properties"]["geoReplication"]["linkedDatabases"]:
        item["state"] = states.get(item["id"], "Linked")
    h.arm.on_database(SUB, RG, CLUSTER, "default", Answer(200, {}, body))
    refusal = {"code": "BadRequest", "message": "database is not linked"}
    h.arm.on_enterprise_flush(SUB, RG, CLUSTER, "default", Answer(400, {}, {"error": refusal}))
    rid = h.send_request({"resourceId": DB})

    h.run()

    assert h.arm.requests[1].json == {"ids": list(states)}
    data = h.event(rid, "Failed", rid=DB)
    assert data["error"]["code"] == "BadRequest" and data["linkedDatabaseIds"] == []


def test_a_deadline_after_a_post_in_doubt_names_the_linked_databases_it_carried(
        h: Harness) -> None:
    """A flush POST answered by a gateway's 504 may have run, with the linked databases it
    named; the deadline then passing inside the claim's lease ends it TimedOut, and the event
    names those databases (what may have been flushed with it), as FlushInDoubt does."""
    h.arm.on_enterprise_flush(SUB, RG, CLUSTER, "default", Answer(504, {}, b""))
    rid = h.send_request({"resourceId": DB, "linkedDatabaseIds": [PARTNER_DB],
                          "timeoutSeconds": 30})
    h.run()
    data = h.event(rid, "TimedOut", rid=DB)
    assert [r.method for r in h.arm.requests] == ["POST"]
    assert h.arm.requests[0].json == {"ids": [PARTNER_DB]}
    assert data["linkedDatabaseIds"] == [PARTNER_DB]
    assert "may or may not have run it" in data["error"]["message"]
