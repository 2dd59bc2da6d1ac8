"""target.py: which caches may be flushed, and the only URLs built from them."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from redisflush.errors import ValidationError
from redisflush.target import CacheTarget, in_scopes, make_target, parse_resource_id

from .helpers import (API_VERSION, CACHE, CACHE_TEXT, ENDPOINT, RESOURCE_ID, RG, RG_TEXT, SUB,
                      SUB_TEXT, assert_url_confined)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the three segments ----------------------------------------------------------------------

@pytest.mark.parametrize("sub, rg, cache, expected", [
    (SUB, RG, CACHE, (SUB, RG, CACHE)),
    (SUB.upper(), RG, CACHE, (SUB, RG, CACHE)),  # GUID normalised to lower case
    (SUB, "r" * 90, "c" * 63, (SUB, "r" * 90, "c" * 63)),  # longest allowed
    (SUB, "r", "c", (SUB, "r", "c")),  # shortest allowed
    (SUB, "My_RG.(1)-x", "Cache-01", (SUB, "My_RG.(1)-x", "Cache-01")),
    (SUB, "..a", "a1", (SUB, "..a", "a1")),  # dots are fine when not last
    (SUB, "grupo-ñandú", "c", (SUB, "grupo-ñandú", "c")),  # ARM allows unicode letters
    (SUB, "гр-1", "c", (SUB, "гр-1", "c")),  # Cyrillic resource group: a real name, kept
])
def test_make_target_accepts(sub, rg, cache, expected):
    target = make_target(sub, rg, cache)
    assert (target.subscription_id, target.resource_group, target.cache_name) == expected


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


@pytest.mark.parametrize("rg, rule", HOSTILE_RG)
def test_make_target_rejects_resource_group(rg, rule):
    with pytest.raises(ValidationError) as info:
        make_target(SUB, rg, CACHE)
    assert info.value.field == "resourceGroup"
    assert rule in info.value.rule


HOSTILE_CACHE = [
    "", "-c", "c-", "-", "c" * 64, "c_1", "c.1", "..", "../x", "a/b", "a%2Fb", "a?b", "a#b",
    "a b", "a\tb", "c\n", "\x00", "caché",
    "c\u0430che",  # Cyrillic 'а' look-alike
    "ｃａｃｈｅ",  # fullwidth
    "ca\u200bche", "c" * 100_000,
]


@pytest.mark.parametrize("cache", HOSTILE_CACHE)
def test_make_target_rejects_cache_name(cache):
    with pytest.raises(ValidationError) as info:
        make_target(SUB, RG, cache)
    assert info.value.field == "cacheName"
    assert "1-63" in info.value.rule


@pytest.mark.parametrize("sub", [
    "", "not-a-guid", "{" + SUB + "}", SUB + "0", SUB[:-1], SUB.replace("-", ""),
    SUB + "\n", "0000000g-1111-2222-3333-444444444444", "../" + SUB,
    "００000000-1111-2222-3333-444444444444",  # fullwidth digits
])
def test_make_target_rejects_subscription(sub):
    with pytest.raises(ValidationError) as info:
        make_target(sub, RG, CACHE)
    assert info.value.field == "subscriptionId"
    assert "GUID" in info.value.rule


@pytest.mark.parametrize("args, field, kind", [
    ((None, RG, CACHE), "subscriptionId", "null"),
    ((SUB, 5, CACHE), "resourceGroup", "a number"),
    ((SUB, RG, ["c"]), "cacheName", "an array"),
    ((SUB, RG, {"c": 1}), "cacheName", "an object"),
    ((True, RG, CACHE), "subscriptionId", "a boolean"),
    ((SUB, 1.5, CACHE), "resourceGroup", "a number"),
])
def test_make_target_names_wrong_types(args, field, kind):
    with pytest.raises(ValidationError) as info:
        make_target(*args)
    assert info.value.field == field
    assert info.value.rule == f"must be a string, not {kind}"


# --- the resource id form ---------------------------------------------------------------------

@pytest.mark.parametrize("rid", [
    RESOURCE_ID,
    RESOURCE_ID.replace("Microsoft.Cache/Redis", "Microsoft.Cache/redis"),
    RESOURCE_ID.replace("/subscriptions/", "/SUBSCRIPTIONS/").replace(
        "/resourceGroups/", "/resourcegroups/").replace("/providers/Microsoft.Cache/Redis/",
                                                        "/PROVIDERS/MICROSOFT.CACHE/REDIS/"),
])
def test_parse_resource_id_is_case_insensitive_on_provider_segments(rid):
    assert parse_resource_id(rid) == CacheTarget(SUB, RG, CACHE)


BAD_RESOURCE_IDS = [
    "", "/", RESOURCE_ID + "/", RESOURCE_ID + "/flush", RESOURCE_ID[1:],
    "/" + RESOURCE_ID, RESOURCE_ID.replace("/resourceGroups/", "//resourceGroups/"),
    RESOURCE_ID.replace("Microsoft.Cache/Redis", "Microsoft.Cache/redisEnterprise"),
    RESOURCE_ID.replace("Microsoft.Cache", "Microsoft.Storage"),
    RESOURCE_ID.replace("/providers/", "/providers/../providers/"),
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/../../x",
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/a%2F..%2Fb",
    f"/subscriptions/{SUB}/resourceGroups/..%2F../providers/Microsoft.Cache/Redis/c",
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/c?x=1",
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/c#x",
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/c\n",
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Ｍicrosoft.Cache/Redis/c",
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/Rеdis/c",  # Cyrillic е
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/c\u0430che",
    f"/subscriptions/{SUB}/resourceGroups/ｒｇ/providers/Microsoft.Cache/Redis/c",
    f"/subscriptions/x/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/c",
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/" + "c" * 5000,
    "https://management.azure.com" + RESOURCE_ID,
    "/subscriptions/" + "/" * 10_000,
]


@pytest.mark.parametrize("rid", BAD_RESOURCE_IDS)
def test_parse_resource_id_rejects(rid):
    with pytest.raises(ValidationError) as info:
        parse_resource_id(rid)
    assert info.value.field == "resourceId"
    assert info.value.rule


@pytest.mark.parametrize("rid, segment", [
    (RESOURCE_ID.replace(SUB, "xyz"), "subscription segment"),
    (RESOURCE_ID.replace(RG, "rg."), "resource group segment"),
    (RESOURCE_ID.replace(CACHE, "c_1"), "cache name segment"),
])
def test_parse_resource_id_says_which_segment(rid, segment):
    with pytest.raises(ValidationError) as info:
        parse_resource_id(rid)
    assert info.value.field == "resourceId"
    assert info.value.rule.startswith(segment)


def test_parse_resource_id_keeps_caller_field_name():
    with pytest.raises(ValidationError) as info:
        parse_resource_id(5, field="scope")
    assert info.value.field == "scope"


# --- built ids and URLs -----------------------------------------------------------------------

def test_resource_id_is_canonical():
    target = make_target(SUB.upper(), RG, CACHE)
    assert target.resource_id == RESOURCE_ID
    assert target.to_json() == {"subscriptionId": SUB, "resourceGroup": RG, "cacheName": CACHE}


@pytest.mark.parametrize("endpoint, api, rg, expected_tail", [
    (ENDPOINT, API_VERSION, RG, f"/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/{CACHE}"
                                f"/flush?api-version=2023-08-01"),
    ("http://127.0.0.1:7071", API_VERSION, "My_RG.(1)",
     "/resourceGroups/My_RG.(1)/providers/Microsoft.Cache/Redis/cache-1/flush?api-version="
     "2023-08-01"),
    (ENDPOINT, "2024-01-01&x=y#f", "grupo-ñ",
     "/resourceGroups/grupo-%C3%B1/providers/Microsoft.Cache/Redis/cache-1/flush?api-version="
     "2024-01-01%26x%3Dy%23f"),
])
def test_flush_url(endpoint, api, rg, expected_tail):
    url = make_target(SUB, rg, CACHE).flush_url(endpoint, api)
    assert url == f"{endpoint}/subscriptions/{SUB}{expected_tail}"


# --- scopes -----------------------------------------------------------------------------------

SUB_SCOPE = f"/subscriptions/{SUB}"
RG_SCOPE = f"/subscriptions/{SUB}/resourceGroups/rg"


@pytest.mark.parametrize("scopes, rg, cache, allowed", [
    ((), "anything", "c", True),
    ((SUB_SCOPE,), "rg", "c", True),
    ((SUB_SCOPE + "/",), "rg", "c", True),
    ((SUB_SCOPE.upper(),), "rg", "c", True),
    ((RG_SCOPE,), "rg", "c", True),
    ((RG_SCOPE,), "RG", "c", True),  # resource group names are case-insensitive in ARM
    ((RG_SCOPE,), "rg2", "c", False),  # prefix boundary: rg must not allow rg2
    ((RG_SCOPE,), "rg-prod", "c", False),
    ((RG_SCOPE,), "r", "c", False),
    ((RG_SCOPE + "/",), "rg2", "c", False),
    ((RG_SCOPE + "/providers/Microsoft.Cache/Redis/c",), "rg", "c", True),  # exact cache
    ((RG_SCOPE + "/providers/Microsoft.Cache/redis/c",), "rg", "c", True),
    ((RG_SCOPE + "/providers/Microsoft.Cache/Redis/c",), "rg", "c2", False),
    ((RG_SCOPE + "/providers/Microsoft.Cache/Redis/c",), "rg", "C", True),
    (("/subscriptions/00000000-1111-2222-3333-444444444445",), "rg", "c", False),
    (("/subscriptions/00000000-1111-2222-3333-44444444444",), "rg", "c", False),
    ((f"/subscriptions/{SUB}/resourceGroups/other", RG_SCOPE), "rg", "c", True),
    ((f"/subscriptions/{SUB}/resourceGroups/other", f"/subscriptions/{SUB}/resourceGroups/x"),
     "rg", "c", False),
])
def test_in_scopes(scopes, rg, cache, allowed):
    assert in_scopes(make_target(SUB, rg, cache), scopes) is allowed


# --- properties -------------------------------------------------------------------------------

@FAST
@given(SUB_TEXT, RG_TEXT, CACHE_TEXT,
       st.sampled_from([ENDPOINT, "http://127.0.0.1:7071", "https://management.usgovcloudapi.net"]))
def test_valid_target_url_stays_under_its_resource_group(sub, rg, cache, endpoint):
    target = make_target(sub, rg, cache)
    assert_url_confined(target.flush_url(endpoint, API_VERSION), target, endpoint)
    assert parse_resource_id(target.resource_id) == target


@FAST
@given(st.text(max_size=120), st.text(max_size=80))
def test_any_text_is_a_confined_target_or_a_validation_error(rg, cache):
    try:
        target = make_target(SUB, rg, cache)
    except ValidationError as exc:
        assert exc.field in ("resourceGroup", "cacheName")
        return
    assert_url_confined(target.flush_url(ENDPOINT, API_VERSION), target, ENDPOINT)


SEGMENTS = ["", "subscriptions", SUB, "resourceGroups", "rg", "..", ".", "%2F", "providers",
            "Microsoft.Cache", "Redis", "c", "c?x=1", "a#b", "a\\b", "flush", "rg\u2215x"]


@FAST
@given(st.lists(st.sampled_from(SEGMENTS), max_size=12).map("/".join))
def test_resource_id_soup_never_escapes(text):
    try:
        target = parse_resource_id(text)
    except ValidationError as exc:
        assert exc.field == "resourceId"
        return
    assert_url_confined(target.flush_url(ENDPOINT, API_VERSION), target, ENDPOINT)
