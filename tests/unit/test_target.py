"""core/targets.py: which caches may be flushed (a classic cache or a Managed Redis
database), and the only URLs built from them."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redisflush.core.targets import (
    DEFAULT_DATABASE,
    ENTERPRISE,
    REDIS,
    Target,
    in_scopes,
    json_type,
    make_enterprise,
    make_target,
    parse_database_id,
    parse_resource_id,
)
from redisflush.errors import ValidationError

from .helpers import (
    API_VERSION,
    CACHE,
    CLUSTER,
    CLUSTER_ID,
    DATABASE_ID,
    ENDPOINT,
    ENTERPRISE_API_VERSION,
    NAME_TEXT,
    RESOURCE_ID,
    RG,
    RG_TEXT,
    SUB,
    SUB_TEXT,
    assert_url_confined,
    db_id,
    rid,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def classic(rg: str = RG, cache: str = CACHE, sub: str = SUB) -> Target:
    return make_target(sub, rg, cache)


def enterprise(rg: str = RG, cluster: str = CLUSTER, database: str | None = "default",
               sub: str = SUB) -> Target:
    return make_enterprise(sub, rg, cluster, database)


# The two kinds side by side: (build from sub, rg, name) and the field its name goes in.
KINDS = {
    "classic": (lambda sub, rg, name: make_target(sub, rg, name), "cacheName"),
    "cluster": (lambda sub, rg, name: make_enterprise(sub, rg, name), "clusterName"),
    "database": (lambda sub, rg, name: make_enterprise(sub, rg, CLUSTER, name), "databaseName"),
}


# --- the segments, for both kinds --------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sub, rg, name, expected", [
    (SUB, RG, "c1", (SUB, RG, "c1")),
    (SUB.upper(), RG, "c1", (SUB, RG, "c1")),  # GUID normalised to lower case
    (SUB, "r" * 90, "c" * 63, (SUB, "r" * 90, "c" * 63)),  # longest allowed
    (SUB, "r", "c", (SUB, "r", "c")),  # shortest allowed
    (SUB, "My_RG.(1)-x", "Cache-01", (SUB, "My_RG.(1)-x", "Cache-01")),
    (SUB, "..a", "a1", (SUB, "..a", "a1")),  # dots are fine when not last
    (SUB, "grupo-ñandú", "c", (SUB, "grupo-ñandú", "c")),  # ARM allows unicode letters
    (SUB, "гр-1", "c", (SUB, "гр-1", "c")),  # Cyrillic resource group: a real name, kept
])
def test_segments_accepted(kind, sub, rg, name, expected):
    build, _ = KINDS[kind]
    target = build(sub, rg, name)
    got = target.subscription_id, target.resource_group, \
        target.database if kind == "database" else target.name
    assert got == expected


HOSTILE_RG = [
    ("", "1-90"), ("r" * 91, "1-90"), ("rg.", "not end with '.'"), (".", "not end"),
    ("..", "not end"), ("../x", "1-90"), ("a/b", "1-90"), ("a%2Fb", "1-90"), ("a%2fb", "1-90"),
    ("a\\b", "1-90"), ("a b", "1-90"), ("rg\n", "1-90"), ("rg\r\n", "1-90"), ("\x00", "1-90"),
    ("r\x1bg", "1-90"), ("rg?x=1", "1-90"), ("rg#x", "1-90"), ("rg;x", "1-90"),
    ("ｒｇ", "look-alike"),  # fullwidth letters
    ("rg\u2024", "1-90"),  # one dot leader
    ("r\u200bg", "1-90"),  # zero-width space
    ("ﬁle", "look-alike"),  # ligature folds to "file"
    ("x" * 10_000, "1-90"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rg, rule", HOSTILE_RG)
def test_hostile_resource_group(kind, rg, rule):
    build, _ = KINDS[kind]
    with pytest.raises(ValidationError) as info:
        build(SUB, rg, "c1")
    assert info.value.field == "resourceGroup"
    assert rule in info.value.rule


HOSTILE_NAMES = [
    "", "-c", "c-", "-", "c" * 64, "c_1", "c.1", "..", "../x", "a/b", "a%2Fb", "a?b", "a#b",
    "a b", "a\tb", "c\n", "\x00", "caché",
    "c\u0430che",  # Cyrillic 'а' look-alike
    "ｃａｃｈｅ",  # fullwidth
    "ca\u200bche", "c" * 100_000,
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names(kind, name):
    build, field = KINDS[kind]
    with pytest.raises(ValidationError) as info:
        build(SUB, RG, name)
    assert info.value.field == field
    assert "1-63" in info.value.rule


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sub", [
    "", "not-a-guid", "{" + SUB + "}", SUB + "0", SUB[:-1], SUB.replace("-", ""),
    SUB + "\n", "0000000g-1111-2222-3333-444444444444", "../" + SUB,
    "００000000-1111-2222-3333-444444444444",  # fullwidth digits
])
def test_hostile_subscription(kind, sub):
    build, _ = KINDS[kind]
    with pytest.raises(ValidationError) as info:
        build(sub, RG, "c1")
    assert info.value.field == "subscriptionId"
    assert "GUID" in info.value.rule


@pytest.mark.parametrize("build, args, field, kind", [
    (make_target, (None, RG, CACHE), "subscriptionId", "null"),
    (make_target, (SUB, 5, CACHE), "resourceGroup", "a number"),
    (make_target, (SUB, RG, ["c"]), "cacheName", "an array"),
    (make_target, (SUB, RG, {"c": 1}), "cacheName", "an object"),
    (make_target, (True, RG, CACHE), "subscriptionId", "a boolean"),
    (make_target, (SUB, 1.5, CACHE), "resourceGroup", "a number"),
    (make_enterprise, (SUB, RG, 7), "clusterName", "a number"),
    (make_enterprise, (SUB, RG, CLUSTER, ["db"]), "databaseName", "an array"),
    (make_enterprise, (SUB, RG, CLUSTER, False), "databaseName", "a boolean"),
    (make_enterprise, (SUB, None, CLUSTER), "resourceGroup", "null"),
])
def test_wrong_types_are_named(build, args, field, kind):
    with pytest.raises(ValidationError) as info:
        build(*args)
    assert info.value.field == field
    assert info.value.rule == f"must be a string, not {kind}"


def test_managed_redis_database_defaults_to_default():
    assert make_enterprise(SUB, RG, CLUSTER).database == DEFAULT_DATABASE == "default"
    assert make_enterprise(SUB, RG, CLUSTER, None).database == "default"
    assert make_enterprise(SUB, RG, CLUSTER, "db2").database == "db2"


@pytest.mark.parametrize("value, expected", [
    (None, "null"), (True, "a boolean"), (0, "a number"), (1.5, "a number"), ([], "an array"),
    ({}, "an object"), ("s", "a string"),
])
def test_json_type(value, expected):
    assert json_type(value) == expected


# --- the resource id forms ---------------------------------------------------------------------

def _shout(text: str) -> str:
    for seg in ("/subscriptions/", "/resourceGroups/", "/providers/", "Microsoft.Cache/",
                "/Redis/", "/redisEnterprise/", "/databases/"):
        text = text.replace(seg, seg.upper())
    return text


def _whisper(text: str) -> str:
    for seg in ("/resourceGroups/", "Microsoft.Cache/", "/Redis/", "/redisEnterprise/"):
        text = text.replace(seg, seg.lower())
    return text


@pytest.mark.parametrize("text, expected", [
    (RESOURCE_ID, classic()),
    (RESOURCE_ID.replace("/Redis/", "/redis/"), classic()),
    (_shout(RESOURCE_ID), classic()),
    (_whisper(RESOURCE_ID), classic()),
    (RESOURCE_ID.replace(SUB, SUB.upper()), classic()),
    (DATABASE_ID, enterprise()),
    (_shout(DATABASE_ID), enterprise()),
    (_whisper(DATABASE_ID), enterprise()),
    (DATABASE_ID.replace("/databases/default", "/databases/db-2"), enterprise(database="db-2")),
    (CLUSTER_ID, enterprise()),  # a bare cluster id means database `default`
    (_shout(CLUSTER_ID), enterprise()),
    (CLUSTER_ID.replace("redisEnterprise", "REDISENTERPRISE"), enterprise()),
])
def test_parse_resource_id_both_kinds_any_provider_case(text, expected):
    assert parse_resource_id(text) == expected


def test_parse_resource_id_keeps_name_case_and_gives_the_kind():
    target = parse_resource_id(rid("Cache-A", rg="RG-Mixed"))
    assert (target.kind, target.name, target.resource_group) == (REDIS, "Cache-A", "RG-Mixed")
    target = parse_resource_id(db_id("Amr-A", "DB-x"))
    assert (target.kind, target.name, target.database) == (ENTERPRISE, "Amr-A", "DB-x")


def _bad_ids(good: str, name: str) -> list[str]:
    """Every hostile variation the classic id had, applied to `good` (whose last segment is
    `name`)."""
    stem = good[: -len(name)]
    return [
        good + "/", good + "/flush", good[1:], "/" + good,
        good.replace("/resourceGroups/", "//resourceGroups/"),
        good.replace("Microsoft.Cache", "Microsoft.Storage"),
        good.replace("/providers/", "/providers/../providers/"),
        stem + "../../x", stem + "a%2F..%2Fb", stem + name + "?x=1", stem + name + "#x",
        stem + name + "\n", good.replace("Microsoft.Cache", "Ｍicrosoft.Cache"),
        stem + "c\u0430che", good.replace(f"/{RG}/", "/ｒｇ/"),
        good.replace(f"/{RG}/", "/..%2F../"), good.replace(SUB, "x"), stem + "c" * 5000,
        ENDPOINT + good, good.replace("/subscriptions/", "/subscriptions//"),
    ]


BAD_RESOURCE_IDS = [
    "", "/", "/subscriptions/" + "/" * 10_000,
    RESOURCE_ID.replace("/Redis/", "/Rеdis/"),  # Cyrillic е in the provider type
    # classic id with a database tail, enterprise database id without a name, other children
    RESOURCE_ID + "/databases/default",
    CLUSTER_ID + "/databases",
    CLUSTER_ID + "/databases/",
    CLUSTER_ID + "/database/default",
    CLUSTER_ID + "/firewallRules/default",
    DATABASE_ID + "/flush",
    DATABASE_ID + "/databases/x",
    CLUSTER_ID.replace("redisEnterprise", "redisEnterprises"),
    CLUSTER_ID.replace("redisEnterprise", "redis-enterprise"),
    CLUSTER_ID.replace("redisEnterprise", "redisEntеrprise"),  # Cyrillic е
    *_bad_ids(RESOURCE_ID, CACHE),
    *_bad_ids(CLUSTER_ID, CLUSTER),
    *_bad_ids(DATABASE_ID, "default"),
]


@pytest.mark.parametrize("text", BAD_RESOURCE_IDS)
def test_parse_resource_id_rejects(text):
    with pytest.raises(ValidationError) as info:
        parse_resource_id(text)
    assert info.value.field == "resourceId"
    assert info.value.rule


@pytest.mark.parametrize("text, segment", [
    (RESOURCE_ID.replace(SUB, "xyz"), "subscription segment"),
    (RESOURCE_ID.replace(RG, "rg."), "resource group segment"),
    (RESOURCE_ID.replace(CACHE, "c_1"), "cache name segment"),
    (DATABASE_ID.replace(SUB, "xyz"), "subscription segment"),
    (DATABASE_ID.replace(RG, "rg."), "resource group segment"),
    (DATABASE_ID.replace(CLUSTER, "c_1"), "cluster name segment"),
    (DATABASE_ID.replace("/default", "/db_1"), "database name segment"),
    (CLUSTER_ID.replace(CLUSTER, "-c"), "cluster name segment"),
])
def test_parse_resource_id_says_which_segment(text, segment):
    with pytest.raises(ValidationError) as info:
        parse_resource_id(text)
    assert info.value.field == "resourceId"
    assert info.value.rule.startswith(segment)


def test_parse_resource_id_keeps_caller_field_name():
    with pytest.raises(ValidationError) as info:
        parse_resource_id(5, field="resourceIds[3]")
    assert info.value.field == "resourceIds[3]"
    assert info.value.rule == "must be a string, not a number"
    with pytest.raises(ValidationError) as info:
        parse_resource_id(RESOURCE_ID.replace(CACHE, "c_1"), field="resourceIds[0]")
    assert info.value.field == "resourceIds[0]"
    assert info.value.rule.startswith("cache name segment")


# --- linked database ids -------------------------------------------------------------------------

@pytest.mark.parametrize("text", [db_id("eu"), db_id("us", "db-2", rg="rg-us"),
                                  _whisper(db_id("eu"))])
def test_parse_database_id_keeps_the_id_exactly(text):
    assert parse_database_id(text, "linkedDatabaseIds[0]") == text  # case-sensitive in Azure


@pytest.mark.parametrize("text", [RESOURCE_ID, CLUSTER_ID, CLUSTER_ID + "/", DATABASE_ID + "/",
                                  "", 5, None, DATABASE_ID.replace(CLUSTER, "a/b")])
def test_parse_database_id_refuses_what_is_not_a_database(text):
    with pytest.raises(ValidationError) as info:
        parse_database_id(text, "linkedDatabaseIds[2]")
    assert info.value.field == "linkedDatabaseIds[2]"


# --- built ids and URLs -------------------------------------------------------------------------

def test_resource_id_key_and_names_are_canonical():
    target = make_target(SUB.upper(), RG, CACHE)
    assert target.resource_id == RESOURCE_ID
    assert target.key == RESOURCE_ID.lower()
    assert target.display_name == CACHE
    assert target.scope == f"/subscriptions/{SUB}/resourceGroups/{RG}"
    database = parse_resource_id(_shout(CLUSTER_ID))
    assert database.resource_id == DATABASE_ID
    assert database.key == DATABASE_ID.lower()
    assert database.display_name == f"{CLUSTER}/default"


@pytest.mark.parametrize("target", [classic(), enterprise(), enterprise(database="db-2"),
                                    classic(rg="My_RG.(1)"), enterprise(rg="grupo-ñandú")])
def test_to_json_round_trip(target):
    assert Target.from_json(target.to_json()) == target


def test_to_json_shape():
    assert classic().to_json() == {"kind": "redis", "subscriptionId": SUB, "resourceGroup": RG,
                                   "name": CACHE}
    assert enterprise().to_json() == {"kind": "redisEnterprise", "subscriptionId": SUB,
                                      "resourceGroup": RG, "name": CLUSTER,
                                      "database": "default"}


@pytest.mark.parametrize("doc", [
    None, [], "x",
    {"kind": "redis", "subscriptionId": SUB, "resourceGroup": RG, "name": "../x"},
    {"kind": "redisEnterprise", "subscriptionId": SUB, "resourceGroup": RG, "name": CLUSTER,
     "database": "a/b"},
    {"kind": "redis", "subscriptionId": "x", "resourceGroup": RG, "name": CACHE},
    {"kind": "redis", "subscriptionId": SUB, "resourceGroup": "rg.", "name": CACHE},
])
def test_from_json_validates_again(doc):
    with pytest.raises(ValidationError):
        Target.from_json(doc)


@pytest.mark.parametrize("kind", ["bogus", "Redis", None])
def test_from_json_refuses_an_unknown_kind(kind):
    with pytest.raises(ValidationError):
        Target.from_json({"kind": kind, "subscriptionId": SUB, "resourceGroup": RG,
                          "name": CACHE})


@pytest.mark.parametrize("endpoint, api, target, expected_tail", [
    (ENDPOINT, API_VERSION, classic(),
     f"/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/{CACHE}/flush?api-version=2023-08-01"),
    ("http://127.0.0.1:7071", API_VERSION, classic(rg="My_RG.(1)"),
     "/resourceGroups/My_RG.(1)/providers/Microsoft.Cache/Redis/cache-1/flush?api-version="
     "2023-08-01"),
    (ENDPOINT, "2024-01-01&x=y#f", classic(rg="grupo-ñ"),
     "/resourceGroups/grupo-%C3%B1/providers/Microsoft.Cache/Redis/cache-1/flush?api-version="
     "2024-01-01%26x%3Dy%23f"),
    (ENDPOINT, ENTERPRISE_API_VERSION, enterprise(),
     f"/resourceGroups/{RG}/providers/Microsoft.Cache/redisEnterprise/{CLUSTER}/databases/"
     "default/flush?api-version=2025-07-01"),
    (ENDPOINT, "2025-07-01&x=y", enterprise(rg="grupo-ñ", database="db-2"),
     f"/resourceGroups/grupo-%C3%B1/providers/Microsoft.Cache/redisEnterprise/{CLUSTER}/"
     "databases/db-2/flush?api-version=2025-07-01%26x%3Dy"),
])
def test_flush_url(endpoint, api, target, expected_tail):
    assert target.flush_url(endpoint, api) == f"{endpoint}/subscriptions/{SUB}{expected_tail}"
    assert target.resource_url(endpoint, api) == \
        f"{endpoint}/subscriptions/{SUB}{expected_tail}".replace("/flush?", "?")


# --- scopes ------------------------------------------------------------------------------------

SUB_SCOPE = f"/subscriptions/{SUB}"
RG_SCOPE = f"/subscriptions/{SUB}/resourceGroups/rg"
ENT = "/providers/Microsoft.Cache/redisEnterprise"


@pytest.mark.parametrize("scopes, target, allowed", [
    ((), classic("anything", "c"), True),
    ((SUB_SCOPE,), classic("rg", "c"), True),
    ((SUB_SCOPE + "/",), classic("rg", "c"), True),
    ((SUB_SCOPE.upper(),), classic("rg", "c"), True),
    ((RG_SCOPE,), classic("rg", "c"), True),
    ((RG_SCOPE,), classic("RG", "c"), True),  # resource group names are case-insensitive
    ((RG_SCOPE,), classic("rg2", "c"), False),  # prefix boundary: rg must not allow rg2
    ((RG_SCOPE,), classic("rg-prod", "c"), False),
    ((RG_SCOPE,), classic("r", "c"), False),
    ((RG_SCOPE + "/",), classic("rg2", "c"), False),
    ((RG_SCOPE + "/providers/Microsoft.Cache/Redis/c",), classic("rg", "c"), True),
    ((RG_SCOPE + "/providers/Microsoft.Cache/redis/c",), classic("rg", "c"), True),
    ((RG_SCOPE + "/providers/Microsoft.Cache/Redis/c",), classic("rg", "c2"), False),
    ((RG_SCOPE + "/providers/Microsoft.Cache/Redis/c",), classic("rg", "C"), True),
    ((SUB_SCOPE.replace("444444444444", "444444444445"),), classic("rg", "c"), False),
    ((SUB_SCOPE[:-1],), classic("rg", "c"), False),
    ((f"{SUB_SCOPE}/resourceGroups/other", RG_SCOPE), classic("rg", "c"), True),
    ((f"{SUB_SCOPE}/resourceGroups/other", f"{SUB_SCOPE}/resourceGroups/x"), classic("rg", "c"),
     False),
    # Managed Redis: a scope may name the cluster (all its databases) or one database
    ((RG_SCOPE,), enterprise("rg", "c"), True),
    ((RG_SCOPE,), enterprise("rg2", "c"), False),
    ((RG_SCOPE + ENT + "/c",), enterprise("rg", "c", "db-2"), True),
    ((RG_SCOPE + ENT.upper() + "/C",), enterprise("rg", "c"), True),
    ((RG_SCOPE + ENT + "/c",), enterprise("rg", "c2"), False),
    ((RG_SCOPE + ENT + "/c/databases/default",), enterprise("rg", "c"), True),
    ((RG_SCOPE + ENT + "/c/databases/default",), enterprise("rg", "c", "db-2"), False),
    ((RG_SCOPE + ENT + "/c/databases/d",), enterprise("rg", "c", "d2"), False),
    ((RG_SCOPE + "/providers/Microsoft.Cache/Redis/c",), enterprise("rg", "c"), False),
    ((RG_SCOPE + ENT + "/c",), classic("rg", "c"), False),
])
def test_in_scopes(scopes, target, allowed):
    assert in_scopes(target, scopes) is allowed


# --- properties ---------------------------------------------------------------------------------

ENDPOINTS = st.sampled_from([ENDPOINT, "http://127.0.0.1:7071",
                             "https://management.usgovcloudapi.net"])


@FAST
@given(SUB_TEXT, RG_TEXT, NAME_TEXT, ENDPOINTS)
def test_valid_classic_url_stays_under_its_resource_group(sub, rg, cache, endpoint):
    target = make_target(sub, rg, cache)
    assert_url_confined(target.flush_url(endpoint, API_VERSION), target, endpoint)
    assert_url_confined(target.resource_url(endpoint, API_VERSION), target, endpoint,
                        action=None)
    assert parse_resource_id(target.resource_id) == target


@FAST
@given(SUB_TEXT, RG_TEXT, NAME_TEXT, NAME_TEXT, ENDPOINTS)
def test_valid_database_url_stays_under_its_resource_group(sub, rg, cluster, db, endpoint):
    target = make_enterprise(sub, rg, cluster, db)
    v = ENTERPRISE_API_VERSION
    assert_url_confined(target.flush_url(endpoint, v), target, endpoint, v)
    assert_url_confined(target.resource_url(endpoint, v), target, endpoint, v, action=None)
    assert parse_resource_id(target.resource_id) == target


@FAST
@given(st.text(max_size=120), st.text(max_size=80), st.sampled_from(list(KINDS)))
def test_any_text_is_a_confined_target_or_a_validation_error(rg, name, kind):
    build, field = KINDS[kind]
    try:
        target = build(SUB, rg, name)
    except ValidationError as exc:
        assert exc.field in ("resourceGroup", field)
        return
    assert_url_confined(target.flush_url(ENDPOINT, API_VERSION), target, ENDPOINT)


SEGMENTS = ["", "subscriptions", SUB, "resourceGroups", "rg", "..", ".", "%2F", "providers",
            "Microsoft.Cache", "Redis", "redisEnterprise", "databases", "default", "c",
            "c?x=1", "a#b", "a\\b", "flush", "rg\u2215x"]


@FAST
@given(st.lists(st.sampled_from(SEGMENTS), max_size=12).map("/".join))
def test_resource_id_soup_never_escapes(text):
    try:
        target = parse_resource_id(text)
    except ValidationError as exc:
        assert exc.field == "resourceId"
        return
    assert_url_confined(target.flush_url(ENDPOINT, API_VERSION), target, ENDPOINT)
    assert parse_resource_id(target.resource_id) == target
