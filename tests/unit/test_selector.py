"""core/selector.py: what a selector may say, which listed items it matches, and how one list
page is read (docs/design.md, "Flush request" and "Listing")."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redisflush.core.selector import (
    MAX_TAGS,
    Selector,
    database_list_path,
    parse_selector,
    read_page,
)
from redisflush.core.targets import ENTERPRISE, KINDS, REDIS, parse_resource_id
from redisflush.errors import ValidationError

from .helpers import RG, SUB, SUB2, cluster_id, db_id, rid

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sel(**fields: object) -> Selector:
    return parse_selector({"subscriptionId": SUB, **fields})


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("doc, expected", [
    ({"subscriptionId": SUB, "all": True}, Selector(SUB)),
    ({"subscriptionId": SUB.upper(), "all": True}, Selector(SUB)),
    ({"subscriptionId": SUB, "resourceGroup": RG, "all": True}, Selector(SUB, RG)),
    ({"subscriptionId": SUB, "tags": {"app": "shop"}}, Selector(SUB, tags=(("app", "shop"),))),
    ({"subscriptionId": SUB, "tags": {"b": "2", "A": "1"}},
     Selector(SUB, tags=(("A", "1"), ("b", "2")))),
    ({"subscriptionId": SUB, "tags": {"app": ""}}, Selector(SUB, tags=(("app", ""),))),
    ({"subscriptionId": SUB, "all": True, "kinds": ["redis"]}, Selector(SUB, kinds=(REDIS,))),
    ({"subscriptionId": SUB, "all": True, "kinds": ["redisEnterprise"]},
     Selector(SUB, kinds=(ENTERPRISE,))),
    ({"subscriptionId": SUB, "all": True, "kinds": ["redisEnterprise", "redis"]},
     Selector(SUB, kinds=KINDS)),
])
def test_valid_selectors(doc, expected):
    assert parse_selector(doc) == expected


@pytest.mark.parametrize("doc, field, rule", [
    (None, "selector", "must be an object, not null"),
    ([], "selector", "must be an object, not an array"),
    ("all", "selector", "must be an object, not a string"),
    # a template's unset variable: left out, resourceGroup would mean the whole subscription
    ({"subscriptionId": SUB, "resourceGroup": None, "all": True}, "selector.resourceGroup",
     "must not be null"),
    ({"subscriptionId": SUB, "tags": None, "all": True}, "selector.tags", "must not be null"),
    ({}, "selector.subscriptionId", "is required"),
    ({"all": True}, "selector.subscriptionId", "is required"),
    ({"subscriptionId": "x", "all": True}, "selector.subscriptionId", "GUID"),
    ({"subscriptionId": 5, "all": True}, "selector.subscriptionId", "must be a string"),
    ({"subscriptionId": SUB}, "selector.tags", "is required"),  # never everything by omission
    ({"subscriptionId": SUB, "all": False}, "selector.all", "must be true"),
    ({"subscriptionId": SUB, "all": "true"}, "selector.all", "must be true"),
    ({"subscriptionId": SUB, "all": 1}, "selector.all", "must be true"),
    ({"subscriptionId": SUB, "all": True, "tags": {"a": "b"}}, "selector.all", "together"),
    ({"subscriptionId": SUB, "tags": {}}, "selector.tags", "non-empty object"),
    ({"subscriptionId": SUB, "tags": []}, "selector.tags", "non-empty object"),
    ({"subscriptionId": SUB, "tags": "app=shop"}, "selector.tags", "non-empty object"),
    ({"subscriptionId": SUB, "tags": {"": "x"}}, "selector.tags", "1-512"),
    ({"subscriptionId": SUB, "tags": {"k" * 513: "x"}}, "selector.tags", "1-512"),
    ({"subscriptionId": SUB, "tags": {"App": "a", "app": "a"}}, "selector.tags",
     "differ without case"),
    ({"subscriptionId": SUB, "tags": {"app": 1}}, "selector.tags.app", "must be a string"),
    ({"subscriptionId": SUB, "tags": {"app": None}}, "selector.tags.app", "must be a string"),
    ({"subscriptionId": SUB, "tags": {"app": "v" * 257}}, "selector.tags.app", "at most 256"),
    ({"subscriptionId": SUB, "tags": {f"t{i}": "v" for i in range(MAX_TAGS + 1)}},
     "selector.tags", f"at most {MAX_TAGS}"),
    ({"subscriptionId": SUB, "all": True, "kinds": []}, "selector.kinds", "non-empty"),
    ({"subscriptionId": SUB, "all": True, "kinds": "redis"}, "selector.kinds", "non-empty list"),
    ({"subscriptionId": SUB, "all": True, "kinds": ["Redis"]}, "selector.kinds", "from: redis"),
    ({"subscriptionId": SUB, "all": True, "kinds": ["redis", "redis"]}, "selector.kinds",
     "distinct"),
    ({"subscriptionId": SUB, "all": True, "kinds": ["enterprise"]}, "selector.kinds", "from"),
    ({"subscriptionId": SUB, "all": True, "kinds": None}, "selector.kinds", "must not be null"),
    ({"subscriptionId": SUB, "all": True, "resourceGroup": "rg."}, "selector.resourceGroup",
     "not end with '.'"),
    ({"subscriptionId": SUB, "all": True, "resourceGroup": "a/b"}, "selector.resourceGroup",
     "1-90"),
    ({"subscriptionId": SUB, "all": True, "resourceGroup": "ｒｇ"}, "selector.resourceGroup",
     "look-alike"),
    ({"subscriptionId": SUB, "all": True, "resourceGroup": 5}, "selector.resourceGroup",
     "must be a string"),
    ({"subscriptionId": SUB, "all": True, "tag": {"a": "b"}}, "selector.tag", "not a known field"),
    ({"subscriptionId": SUB, "all": True, "x" * 300: 1}, "selector." + "x" * 64,
     "not a known field"),
])
def test_invalid_selectors_name_the_field(doc, field, rule):
    with pytest.raises(ValidationError) as info:
        parse_selector(doc)
    assert info.value.field == field
    assert rule in info.value.rule


@pytest.mark.parametrize("doc", [
    {"subscriptionId": SUB, "all": True},
    {"subscriptionId": SUB, "resourceGroup": RG, "tags": {"App": "shop", "env": "prod"},
     "kinds": ["redisEnterprise"]},
])
def test_to_json_round_trip(doc):
    selector = parse_selector(doc)
    assert parse_selector(selector.to_json()) == selector
    assert selector.to_json()["kinds"] == list(selector.kinds)
    assert ("all" in selector.to_json()) == (not selector.tags)


# --- matching -----------------------------------------------------------------------------------

@pytest.mark.parametrize("tags, item_tags, match", [
    ({"app": "shop"}, {"app": "shop"}, True),
    ({"app": "shop"}, {"APP": "shop"}, True),  # names compare without case
    ({"App": "shop"}, {"aPP": "shop", "env": "x"}, True),  # extra tags on the item are fine
    ({"app": "shop"}, {"app": "Shop"}, False),  # values compare exactly
    ({"app": "shop"}, {"app": "shop "}, False),
    ({"app": "shop"}, {"app": "shop", "x": "y"}, True),
    ({"app": "shop", "env": "prod"}, {"app": "shop"}, False),  # every tag must match
    ({"app": "shop", "env": "prod"}, {"app": "shop", "ENV": "prod"}, True),
    ({"app": "shop"}, {}, False),
    ({"app": "shop"}, None, False),
    ({"app": "shop"}, ["app", "shop"], False),
    ({"app": "shop"}, "app=shop", False),
    ({"app": "1"}, {"app": 1}, False),
    ({"app": ""}, {"app": ""}, True),
    ({"app": ""}, {}, False),
])
def test_tags_match(tags, item_tags, match):
    assert sel(tags=tags).matches_tags(item_tags) is match


@pytest.mark.parametrize("item_tags", [None, {}, {"x": "y"}, "junk"])
def test_all_matches_whatever_the_tags(item_tags):
    assert sel(all=True).matches_tags(item_tags) is True


@pytest.mark.parametrize("selector, resource_id, inside", [
    (Selector(SUB), rid("c"), True),
    (Selector(SUB), rid("c", rg="other"), True),
    (Selector(SUB), rid("c").upper(), True),
    (Selector(SUB), rid("c", sub=SUB2), False),
    (Selector(SUB), f"/subscriptions/{SUB}", False),
    (Selector(SUB), f"/subscriptions/{SUB}0/resourceGroups/rg/x", False),
    (Selector(SUB, "rg"), rid("c", rg="rg"), True),
    (Selector(SUB, "rg"), rid("c", rg="RG"), True),
    (Selector(SUB, "rg"), rid("c", rg="rg2"), False),  # prefix boundary
    (Selector(SUB, "rg"), rid("c", rg="other"), False),
    (Selector(SUB, "rg"), db_id("k", rg="rg"), True),
    (Selector(SUB, "rg"), f"/subscriptions/{SUB}/resourceGroups/rg", False),
])
def test_in_scope(selector, resource_id, inside):
    assert selector.in_scope(resource_id) is inside


@pytest.mark.parametrize("selector, expected", [
    (Selector(SUB), [(REDIS, f"/subscriptions/{SUB}/providers/Microsoft.Cache/redis"),
                     (ENTERPRISE,
                      f"/subscriptions/{SUB}/providers/Microsoft.Cache/redisEnterprise")]),
    (Selector(SUB, "rg-1", kinds=(ENTERPRISE,)),
     [(ENTERPRISE, f"/subscriptions/{SUB}/resourceGroups/rg-1/providers/Microsoft.Cache/"
                   "redisEnterprise")]),
    (Selector(SUB, "grupo-ñ(1)", kinds=(REDIS,)),
     [(REDIS, f"/subscriptions/{SUB}/resourceGroups/grupo-%C3%B1(1)/providers/Microsoft.Cache/"
              "redis")]),
])
def test_list_paths(selector, expected):
    assert selector.list_paths() == expected
    assert selector.scope == (f"/subscriptions/{SUB}" + (
        f"/resourceGroups/{selector.resource_group}" if selector.resource_group else ""))


def test_database_list_path():
    assert database_list_path(cluster_id("k")) == cluster_id("k") + "/databases"
    assert database_list_path(cluster_id("k", rg="grupo-ñ")) == \
        cluster_id("k", rg="grupo-%C3%B1") + "/databases"


# --- reading one page ---------------------------------------------------------------------------

def page(*items: object, next_link: object = None) -> bytes:
    doc: dict = {"value": list(items)}
    if next_link is not None:
        doc["nextLink"] = next_link
    return json.dumps(doc).encode()


def item(resource_id: str, **tags: str) -> dict:
    return {"id": resource_id, "name": resource_id.rsplit("/", 1)[1], "tags": tags}


def test_classic_page_keeps_matching_caches_in_scope_only():
    selector = sel(resourceGroup=RG, tags={"app": "shop"})
    body = page(item(rid("a"), app="shop"), item(rid("b"), App="shop"), item(rid("c"), app="x"),
                item(rid("d", rg="other"), app="shop"),  # out of scope: ignored
                item(rid("e", sub=SUB2), app="shop"),  # another subscription: ignored
                item(rid("f")))
    reading = read_page(selector, REDIS, body)
    assert [t.resource_id for t in reading.targets] == [rid("a"), rid("b")]
    assert reading.ignored == 2
    assert reading.clusters == [] and reading.next_link is None and reading.problem is None


def test_cluster_page_gives_clusters_whose_databases_come_next():
    selector = sel(tags={"app": "shop"})
    body = page(item(cluster_id("k1"), app="shop"), item(cluster_id("k2"), APP="shop"),
                item(cluster_id("k3"), app="blog"), item(cluster_id("k4", sub=SUB2), app="shop"),
                item(cluster_id("k5") + "/", app="shop"))
    reading = read_page(selector, ENTERPRISE, body)
    assert reading.targets == []  # clusters are not targets: their databases are
    assert reading.clusters == [cluster_id("k1"), cluster_id("k2")]
    assert reading.ignored == 2  # the other subscription, the id with a trailing slash


def test_database_page_keeps_every_database_of_its_cluster():
    selector = sel(tags={"app": "shop"})  # databases carry no tags of their own
    body = page({"id": db_id("k1")}, {"id": db_id("k1", "second")},
                {"id": db_id("k2")},  # another cluster's database: ignored
                {"id": rid("c")},  # not a database: ignored
                {"id": cluster_id("k1")})  # the cluster itself: ignored
    reading = read_page(selector, ENTERPRISE, body, databases_of=cluster_id("k1"))
    assert [t.resource_id for t in reading.targets] == [db_id("k1"), db_id("k1", "second")]
    assert reading.ignored == 3
    reading = read_page(selector, ENTERPRISE, body, databases_of=cluster_id("K1").upper()
                        .replace(SUB.upper(), SUB))
    assert len(reading.targets) == 2  # ids compare without case


def test_wrong_kind_and_unreadable_items_are_ignored():
    selector = sel(all=True)
    body = page(item(db_id("k")), item(cluster_id("k")), "junk", None, 5, [],
                {"id": None}, {"id": 7}, {"name": "no id"},
                {"id": rid("c") + "/firewallRules/x"},
                {"id": f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Cache/"
                       "Redis/c_1"},
                item(rid("ok")))
    reading = read_page(selector, REDIS, body)
    assert [t.resource_id for t in reading.targets] == [rid("ok")]
    assert reading.ignored == 11
    reading = read_page(selector, ENTERPRISE, body)
    assert reading.clusters == [cluster_id("k")]
    assert reading.targets == [] and reading.ignored == 11


@pytest.mark.parametrize("link, expected", [
    ("https://management.azure.com/x?$skiptoken=2", "https://management.azure.com/x?$skiptoken=2"),
    ("/relative?$skiptoken=2", "/relative?$skiptoken=2"),  # resolved by the caller
    ("", None), ("  ", None), (None, None), (5, None), ({"href": "x"}, None),
])
def test_next_link(link, expected):
    body = json.dumps({"value": [], "nextLink": link}).encode()
    assert read_page(sel(all=True), REDIS, body).next_link == expected


@pytest.mark.parametrize("body", [b"", b"<html>", b"[]", b"null", b'{"values": []}',
                                  b'{"value": {}}', b'{"value": null}', b"\xff", b"[" * 100_000])
def test_unreadable_page_is_a_problem_not_an_exception(body):
    reading = read_page(sel(all=True), REDIS, body)
    assert reading.problem == "ListInvalidJson"
    assert reading.targets == [] and reading.next_link is None


@FAST
@given(st.lists(st.fixed_dictionaries(
    {"id": st.sampled_from([rid("a"), rid("b", rg="other"), rid("c", sub=SUB2), db_id("k"),
                            cluster_id("k"), cluster_id("k2", rg="other"), "x", ""]),
     "tags": st.dictionaries(st.sampled_from(["app", "App", "env"]),
                             st.sampled_from(["shop", "Shop", "x"]), max_size=3)}), max_size=12),
    st.sampled_from([None, RG]), st.sampled_from(list(KINDS)))
def test_any_page_gives_only_matching_in_scope_items_of_its_kind(items, rg, kind):
    selector = sel(resourceGroup=rg, tags={"app": "shop"}) if rg else sel(tags={"app": "shop"})
    reading = read_page(selector, kind, page(*items))
    for target in reading.targets:
        assert target.kind == REDIS == kind and selector.in_scope(target.resource_id)
    for cluster in reading.clusters:
        assert kind == ENTERPRISE and selector.in_scope(cluster)
        assert parse_resource_id(cluster).kind == ENTERPRISE
    matched = len(reading.targets) + len(reading.clusters)
    assert matched + reading.ignored <= len(items)
    for it in items:
        tags = {k.lower(): v for k, v in it["tags"].items()}
        if it["id"] in (rid("a"), cluster_id("k")) and tags.get("app") == "shop" and \
                (it["id"] == rid("a")) == (kind == REDIS):
            assert it["id"] in [t.resource_id for t in reading.targets] + reading.clusters
