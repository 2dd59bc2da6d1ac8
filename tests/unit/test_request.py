"""core/request.py (with request_body.py, request_targets.py, request_id.py): every rule of
the request table (docs/design.md, "Flush request")."""
from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redisflush.core.commands import OpenRequest
from redisflush.core.request import (
    REQUEST_FIELDS,
    Delivery,
    FlushRequest,
    Origin,
    Rejection,
    earlier_fingerprints,
    parse_request,
)
from redisflush.core.request_body import MAX_BODY_BYTES
from redisflush.core.request_id import request_id_from_message_id
from redisflush.core.selector import parse_selector
from redisflush.core.targets import ENTERPRISE, REDIS, make_enterprise, make_target
from redisflush.ledger import LedgerRow, MemoryLedger
from redisflush.ledger_ops import open_request

from .helpers import (
    API_VERSION,
    CACHE,
    CACHE_TEXT,
    CLUSTER,
    CLUSTER_ID,
    DATABASE_ID,
    ENDPOINT,
    RESOURCE_ID,
    RG,
    RG_TEXT,
    SUB,
    SUB_TEXT,
    T0,
    assert_url_confined,
    at,
    cluster_id,
    db_id,
    load_fixture,
    rid,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEFAULT_TIMEOUT = 1800
MAX_TARGETS = 50
RESERVED = ("redis-flush-requests", "redis-flush-polls")
CASES = load_fixture("requests.json")
THREE = {"subscriptionId": SUB, "resourceGroup": RG, "cacheName": CACHE}
CLUSTER_PARTS = {"subscriptionId": SUB, "resourceGroup": RG, "clusterName": CLUSTER}


def parse(body: bytes | dict, *, message_id: str = "msg-1", scopes: tuple[str, ...] = (),
          max_targets: int = MAX_TARGETS, now: dt.datetime = T0, **delivery: object
          ) -> FlushRequest | Rejection:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(Delivery(raw, message_id, **delivery), default_timeout=DEFAULT_TIMEOUT,
                         allowed_scopes=scopes, max_targets=max_targets,
                         reserved_queues=RESERVED, now=now)


def rejected(body: bytes | dict, **kwargs: object) -> Rejection:
    result = parse(body, **kwargs)
    assert isinstance(result, Rejection), result
    return result


def accepted(body: bytes | dict, **kwargs: object) -> FlushRequest:
    result = parse(body, **kwargs)
    assert isinstance(result, FlushRequest), result
    return result


# --- fixture tables ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES["valid"], ids=lambda c: c["name"])
def test_valid_requests(case):
    request = accepted(case["body"])
    body = case["body"]
    assert [t.resource_id for t in request.targets] == case["targets"]
    assert request.linked_ids == (None if case.get("linked") is None else tuple(case["linked"]))
    if "selector" in case:
        assert request.selector is not None and request.selector.to_json() == case["selector"]
    else:
        assert request.selector is None
    assert request.timeout_seconds == body.get("timeoutSeconds", DEFAULT_TIMEOUT)
    assert request.origin.request_id == body.get("requestId", "msg-1")
    assert request.origin.reason == body.get("reason")
    assert request.origin.requested_by == body.get("requestedBy")


@pytest.mark.parametrize("case", CASES["invalid"], ids=lambda c: c["name"])
def test_invalid_requests_name_field_and_rule(case):
    body = case["raw"].encode() if "raw" in case else case["body"]
    rejection = rejected(body)
    assert rejection.field == case["field"]
    assert case["rule"] in rejection.rule
    assert rejection.message == f"{rejection.field}: {rejection.rule}"
    assert rejection.code == "InvalidRequest"
    assert rejection.origin.request_id == "msg-1"


def test_fixture_covers_every_request_field():
    named = {k for case in CASES["valid"] for k in case["body"]}
    assert named >= set(REQUEST_FIELDS)


# --- kinds and the by-parts forms -------------------------------------------------------------

def test_by_parts_and_resource_id_name_the_same_targets():
    assert accepted(THREE).targets == accepted({"resourceId": RESOURCE_ID}).targets
    assert accepted(CLUSTER_PARTS).targets == accepted({"resourceId": DATABASE_ID}).targets \
        == accepted({"resourceId": CLUSTER_ID}).targets
    (target,) = accepted({**CLUSTER_PARTS, "databaseName": "db-2"}).targets
    assert (target.kind, target.name, target.database) == (ENTERPRISE, CLUSTER, "db-2")
    (target,) = accepted(THREE).targets
    assert (target.kind, target.database) == (REDIS, None)


FORM_VALUES = {"resourceId": RESOURCE_ID, "resourceIds": [RESOURCE_ID],
               "selector": {"subscriptionId": SUB, "all": True}, "cacheName": CACHE,
               "clusterName": CLUSTER}


@pytest.mark.parametrize("first, second", list(itertools.combinations(FORM_VALUES, 2)))
def test_exactly_one_form(first, second):
    body = {first: FORM_VALUES[first], second: FORM_VALUES[second]}
    if "cacheName" in body or "clusterName" in body:
        body.update(subscriptionId=SUB, resourceGroup=RG)
    rejection = rejected(body)
    assert rejection.field == second  # the later form in the table's order is named
    assert rejection.rule == f"must not be given together with {first} (use one form)"


# --- resourceIds ------------------------------------------------------------------------------

def test_resource_ids_up_to_the_maximum():
    ids = [rid(f"c{i:02}") for i in range(MAX_TARGETS)]
    request = accepted({"resourceIds": list(reversed(ids))})
    assert [t.resource_id for t in request.targets] == ids  # sorted


@pytest.mark.parametrize("max_targets", [1, 3, 50, 500])
def test_resource_ids_over_the_maximum_name_the_count(max_targets):
    rejection = rejected({"resourceIds": [rid(f"c{i}") for i in range(max_targets + 1)]},
                         max_targets=max_targets)
    assert rejection.field == "resourceIds"
    assert f"1 to {max_targets}" in rejection.rule and f"got {max_targets + 1}" in rejection.rule
    assert "REDISFLUSH_MAX_TARGETS" in rejection.rule


@pytest.mark.parametrize("ids, field", [
    ([rid("a"), rid("A")], None),  # names differ in case: the same cache in ARM
    ([rid("a"), rid("b"), rid("a").upper().replace(SUB.upper(), SUB)], "resourceIds[2]"),
    ([db_id("k"), cluster_id("k")], "resourceIds[1]"),  # bare cluster = its default database
    ([db_id("k", "Default"), db_id("k", "default")], "resourceIds[1]"),
    ([rid("a"), rid("a", rg="RG-PROD")], "resourceIds[1]"),
    ([rid("a"), rid("a", sub=SUB.upper())], "resourceIds[1]"),
])
def test_resource_ids_duplicates_compare_without_case(ids, field):
    rejection = rejected({"resourceIds": ids})
    assert rejection.field == (field or "resourceIds[1]")
    assert "repeats an earlier id" in rejection.rule


def test_resource_ids_field_names_the_index_as_given_not_as_sorted():
    rejection = rejected({"resourceIds": [rid("zeta"), rid("alpha"), rid("b_1")]})
    assert rejection.field == "resourceIds[2]"
    assert rejection.rule.startswith("cache name segment")
    rejection = rejected({"resourceIds": [rid("zeta"), rid("alpha"), 7]})
    assert (rejection.field, rejection.rule) == ("resourceIds[2]", "must be a string, not a number")


def test_resource_ids_of_both_kinds_sorted_by_key():
    request = accepted({"resourceIds": [rid("b"), db_id("a"), rid("A-first")]})
    assert [t.key for t in request.targets] == sorted(t.key for t in request.targets)
    assert {t.kind for t in request.targets} == {REDIS, ENTERPRISE}


# --- linkedDatabaseIds ------------------------------------------------------------------------

@pytest.mark.parametrize("body", [{"resourceId": DATABASE_ID}, {"resourceId": CLUSTER_ID},
                                  CLUSTER_PARTS, {"resourceIds": [DATABASE_ID]}])
@pytest.mark.parametrize("linked, expected", [
    ([], ()), ([db_id("us", rg="rg-us")], (db_id("us", rg="rg-us"),)),
    ([db_id("us"), db_id("eu", "Db-2")], (db_id("us"), db_id("eu", "Db-2"))),
])
def test_linked_database_ids_with_one_managed_redis_database(body, linked, expected):
    request = accepted({**body, "linkedDatabaseIds": linked})
    assert request.linked_ids == expected
    assert accepted(body).linked_ids is None  # left out: the whole group


@pytest.mark.parametrize("body", [{"resourceId": DATABASE_ID}, CLUSTER_PARTS])
def test_a_null_where_absence_flushes_more_is_rejected(body):
    # a template's unset variable rendered as null: left out, the field means the group
    rejection = rejected({**body, "linkedDatabaseIds": None})
    assert rejection.field == "linkedDatabaseIds" and "must not be null" in rejection.rule


@pytest.mark.parametrize("field", ["resourceGroup", "tags", "all", "kinds"])
def test_a_null_selector_field_is_rejected_never_read_as_absent(field):
    rejection = rejected({"selector": {"subscriptionId": SUB, "all": True, field: None}})
    assert (rejection.field, rejection.code) == (f"selector.{field}", "InvalidRequest")
    assert "must not be null" in rejection.rule


def test_a_null_database_name_is_rejected_with_the_cluster_form():
    rejection = rejected({**CLUSTER_PARTS, "databaseName": None})
    assert rejection.field == "databaseName" and "must not be null" in rejection.rule


def test_linked_database_ids_that_differ_only_in_case_repeat_each_other():
    rejection = rejected({"resourceId": DATABASE_ID,
                          "linkedDatabaseIds": [db_id("us"), db_id("us").upper()
                                                .replace(SUB.upper(), SUB)]})
    assert rejection.field == "linkedDatabaseIds[1]" and "repeats" in rejection.rule


def test_a_selector_spelled_in_another_case_names_the_same_caches():
    def fingerprint(rg: str, tag: str, value: str) -> str:
        return accepted({"selector": {"subscriptionId": SUB, "resourceGroup": rg,
                                      "tags": {tag: value}}}).fingerprint
    assert fingerprint("rg-web", "app", "shop") == fingerprint("RG-WEB", "App", "shop")
    assert fingerprint("rg-web", "app", "shop") != fingerprint("rg-web", "app", "Shop")


def test_linked_database_ids_are_kept_exactly_as_given():
    odd = db_id("us").replace("/resourceGroups/", "/resourcegroups/").replace("Microsoft.Cache",
                                                                              "microsoft.cache")
    assert accepted({"resourceId": DATABASE_ID, "linkedDatabaseIds": [odd]}).linked_ids == (odd,)


@pytest.mark.parametrize("body", [
    {"resourceId": RESOURCE_ID}, THREE, {"resourceIds": [DATABASE_ID, db_id("k2")]},
    {"resourceIds": [RESOURCE_ID]}, {"selector": {"subscriptionId": SUB, "all": True}},
])
@pytest.mark.parametrize("linked", [[], [db_id("us")]])
def test_linked_database_ids_only_with_one_managed_redis_database(body, linked):
    rejection = rejected({**body, "linkedDatabaseIds": linked})
    assert rejection.field == "linkedDatabaseIds"
    assert "only with one Managed Redis database" in rejection.rule


@pytest.mark.parametrize("me", [DATABASE_ID, DATABASE_ID.upper().replace(SUB.upper(), SUB),
                                DATABASE_ID.replace("/resourceGroups/", "/RESOURCEGROUPS/")])
def test_linked_database_ids_refuse_the_database_itself(me):
    rejection = rejected({"resourceId": CLUSTER_ID, "linkedDatabaseIds": [db_id("us"), me]})
    assert rejection.field == "linkedDatabaseIds[1]"
    assert "is the database being flushed" in rejection.rule


# --- size, encoding, JSON oddities ------------------------------------------------------------

def padded(size: int) -> bytes:
    body = json.dumps(THREE).encode()
    return body + b" " * (size - len(body))


def test_body_of_exactly_64_kib_is_read():
    assert len(padded(MAX_BODY_BYTES)) == 64 * 1024
    accepted(padded(MAX_BODY_BYTES))


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, 2 * MAX_BODY_BYTES, 1024 * 1024])
def test_body_over_64_kib_is_rejected(size):
    rejection = rejected(padded(size))
    assert rejection.field == "body"
    assert "65536" in rejection.rule and str(size) in rejection.rule


def test_long_reason_inside_a_big_body_is_rejected_by_its_own_rule():
    rejection = rejected({**THREE, "reason": "x" * 60_000})
    assert (rejection.field, rejection.rule) == ("reason", "must be at most 256 characters")


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b'{"cacheName": "\xc3\x28"}', b"\x80",
                                 "{}".encode("utf-16"), "{}".encode("utf-16-le"),
                                 b'{"reason": "\xed\xa0\x80"}'])  # an encoded lone surrogate
def test_non_utf8_body_is_rejected(raw):
    rejection = rejected(raw)
    assert rejection.field == "body"
    assert "UTF-8" in rejection.rule or "JSON" in rejection.rule


@pytest.mark.parametrize("raw", ["\ufeff{}".encode(), "\ufeff".encode() + json.dumps(THREE)
                                 .encode()])
def test_byte_order_mark_is_rejected(raw):
    rejection = rejected(raw)
    assert (rejection.field, "byte order mark" in rejection.rule) == ("body", True)


@pytest.mark.parametrize("digits", [4301, 5000, 60_000])
def test_numbers_past_pythons_digit_limit_are_a_rejection(digits):
    raw = b'{"cacheName": "c", "timeoutSeconds": 1' + b"0" * (digits - 1) + b"}"
    rejection = rejected(raw)
    if len(raw) > MAX_BODY_BYTES:
        assert (rejection.field, "65536" in rejection.rule) == ("body", True)
    else:  # named where it is, like any other field's problem
        assert rejection.field == "timeoutSeconds"
        assert "too many digits" in rejection.rule and "4300" in rejection.rule


@pytest.mark.parametrize("raw, field, rule", [
    (b'{"reason": [1, NaN]}', "reason[1]", "must not be NaN"),
    (b'{"selector": {"subscriptionId": "x", "tags": {"a": Infinity}}}', "selector.tags.a",
     "must not be Infinity"),
    (b'{"reason": {"x": -Infinity}, "cacheName": 1}', "reason.x", "must not be -Infinity"),
    (b'{"resourceIds": [1' + b"0" * 5000 + b"]}", "resourceIds[0]", "too many digits"),
    (b'{"\\n": 1' + b"0" * 5000 + b"}", "\n", "too many digits"),  # a key that is a newline
    (b"NaN", "body", "JSON object"), (b"1" + b"0" * 5000, "body", "JSON object"),
])
def test_numbers_json_has_not_are_named_where_they_are(raw, field, rule):
    """NaN, Infinity and integers past Python's digit limit: rejected with their path (the
    first problem in document order), never as the whole body."""
    rejection = rejected(raw)
    assert (rejection.field, rule in rejection.rule) == (field, True), rejection.message


def test_a_4000_digit_number_is_read_and_refused_by_its_field_rule():
    rejection = rejected(b'{"resourceId": "' + RESOURCE_ID.encode() + b'", "timeoutSeconds": 1'
                         + b"0" * 3999 + b"}")
    assert (rejection.field, "between" in rejection.rule) == ("timeoutSeconds", True)


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 50_000,
                                 b'{"reason":' + b'[{"a":' * 3000 + b"}"])
def test_pathological_json_is_a_rejection_not_an_exception(raw):
    rejection = rejected(raw)
    assert rejection.field == "body"


NESTINGS = ((b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]"))


@pytest.mark.parametrize("depth", range(0, 480, 37))
def test_any_nesting_depth_is_a_rejection_not_an_exception(depth):
    for open_, close in NESTINGS:
        raw = b'{"reason":' + open_ * depth + b"1" + close * depth + b"}"
        assert isinstance(parse(raw), (FlushRequest, Rejection))
        raw = b'{"reason":' + open_ * depth + b'{"k":1,"k":2}' + close * depth + b"}"
        result = parse(raw)
        assert isinstance(result, Rejection) and result.field.startswith(("reason", "body"))


def test_deep_nesting_inside_64_kib_is_a_rejection_not_an_exception():
    for depth in (1000, 2000, 4000, 8000):
        for open_, close in NESTINGS:
            raw = b'{"reason":' + open_ * depth + b"1" + close * depth + b"}"
            if len(raw) > MAX_BODY_BYTES:
                continue
            rejection = rejected(raw)
            assert rejection.field in ("body", "reason")


def test_huge_float_timeout_is_rejected():
    rejection = rejected(b'{"cacheName": "c", "subscriptionId": "' + SUB.encode()
                         + b'", "resourceGroup": "rg", "timeoutSeconds": 1e999}')
    assert rejection.field == "timeoutSeconds"


@pytest.mark.parametrize("raw, field", [
    ('{"cacheName": "a", "cacheName": "b"}', "cacheName"),
    ('{"reason": {"x": 1, "x": 2}}', "reason.x"),
    ('{"reason": {"a": {"y": 1, "y": 1}}}', "reason.a.y"),
    ('{"selector": {"tags": {"k": "1", "k": "2"}}}', "selector.tags.k"),
    ('{"resourceIds": ["a", {"q": 1, "q": 2}]}', "resourceIds[1].q"),
    ('{"reason": [[{"z": 1, "z": 2}]]}', "reason[0][0].z"),
])
def test_duplicate_keys_are_named_with_their_path(raw, field):
    rejection = rejected(raw.encode())
    assert (rejection.field, rejection.rule) == (field, "must appear only once")


@pytest.mark.parametrize("raw, batch", [
    ('{"requestId": "dup-sel", "selector": {"tags": {"app": "a", "app": "b"}}}', True),
    ('{"requestId": "dup-sel", "resourceIds": ["a", "b"], "reason": {"x": 1, "x": 2}}', True),
    ('{"requestId": "dup-sel", "cacheName": "a", "cacheName": "b"}', False),
    ('{"requestId": "dup-sel", "selector": {}, "reason": "\\ud800"}', True),
])
def test_a_body_rejected_after_parsing_keeps_its_request_id_and_its_form(raw, batch):
    """A duplicated key, a lone surrogate or deep nesting is found once the body is parsed:
    the body's requestId names the rejection (a waiter filters on it) and a selector or a
    list gets its RequestCompleted, as a rejection for any other field does."""
    rejection = rejected(raw.encode(), message_id="dup-msg")
    assert rejection.origin.request_id == "dup-sel"
    assert rejection.batch is batch


def test_a_duplicated_request_id_is_not_taken_for_the_rejection():
    rejection = rejected(b'{"requestId": "a", "requestId": "b", "cacheName": "c"}',
                         message_id="dup-msg")
    assert (rejection.field, rejection.origin.request_id) == ("requestId", "dup-msg")


def test_duplicate_key_path_is_bounded():
    raw = '{"' + "k" * 1000 + '": {"x": 1, "x": 2}}'
    rejection = rejected(raw.encode())
    assert len(rejection.field) <= 128 and rejection.rule == "must appear only once"


@pytest.mark.parametrize("extra", ["timeout", "ResourceId", "", "x" * 500, "requestID",
                                   "kinds", "tags", "database"])
def test_unknown_fields_are_rejected_by_name(extra):
    rejection = rejected({**THREE, extra: 1})
    assert rejection.field == (extra[:64] or '""')  # an empty name shown as ""
    assert "is not a known field" in rejection.rule


# --- requestId --------------------------------------------------------------------------------

@pytest.mark.parametrize("request_id", ["a", "A" * 80, "deploy-42:flush.1_x", "0", "a:b:c"])
def test_request_id_valid(request_id):
    assert accepted({**THREE, "requestId": request_id}).origin.request_id == request_id


@pytest.mark.parametrize("request_id", ["", "A" * 81, "a b", "a/b", "a%2Fb", "ａ", "a\n", "é",
                                        "../x", "x\x00", 1, True, [], {}])
def test_request_id_invalid(request_id):
    rejection = rejected({**THREE, "requestId": request_id}, message_id="mid")
    assert rejection.field == "requestId"
    assert "1-80" in rejection.rule
    assert rejection.origin.request_id == "mid"  # the event still has a usable id


def test_request_id_defaults_to_message_id():
    assert accepted(THREE, message_id="ABC-123").origin.request_id == "ABC-123"


@pytest.mark.parametrize("message_id", ["", "has space", "x" * 81, "a/b", "ünï"])
def test_unusable_message_id_becomes_a_stable_digest(message_id):
    request_id = accepted(THREE, message_id=message_id).origin.request_id
    assert re.fullmatch(r"msg-[0-9a-f]{32}", request_id)
    assert request_id == request_id_from_message_id(message_id)
    assert request_id != request_id_from_message_id(message_id + "x")


def test_body_request_id_is_kept_in_a_rejection():
    rejection = rejected({"requestId": "mine", "cacheName": "-bad-", "subscriptionId": SUB,
                          "resourceGroup": RG})
    assert rejection.origin.request_id == "mine"
    assert rejection.field == "cacheName"


# --- reason / requestedBy ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["reason", "requestedBy"])
@pytest.mark.parametrize("value, ok", [("", True), ("x" * 256, True), ("é" * 256, True),
                                       ("漢" * 256, True), ("x" * 257, False),
                                       ("line\nbreak\ttab", True)])
def test_free_text_limits(name, value, ok):
    result = parse({**THREE, name: value})
    if ok:
        assert isinstance(result, FlushRequest)
        assert getattr(result.origin, "reason" if name == "reason" else "requested_by") == value
    else:
        assert isinstance(result, Rejection)
        assert (result.field, result.rule) == (name, "must be at most 256 characters")


@pytest.mark.parametrize("name", ["reason", "requestedBy"])
@pytest.mark.parametrize("value, kind", [(1, "a number"), ([], "an array"), ({}, "an object"),
                                         (True, "a boolean")])
def test_free_text_must_be_text(name, value, kind):
    rejection = rejected({**THREE, name: value})
    assert (rejection.field, rejection.rule) == (name, f"must be a string, not {kind}")


# --- timeoutSeconds and the deadline ----------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(30, 30), (86400, 86400), (600, 600), (60.0, 60),
                                             (None, DEFAULT_TIMEOUT)])
def test_timeout_accepted(value, expected):
    request = accepted({**THREE, "timeoutSeconds": value})
    assert request.timeout_seconds == expected and type(request.timeout_seconds) is int


@pytest.mark.parametrize("value, rule", [(29, "between 30 and 86400"),
                                         (86401, "between 30 and 86400"),
                                         (0, "between"), (-60, "between"), (10**12, "between"),
                                         (29.0, "between"), (30.5, "whole number"),
                                         ("60", "whole number"), (True, "whole number"),
                                         (False, "whole number"), ([60], "whole number"),
                                         ({}, "whole number")])
def test_timeout_rejected(value, rule):
    rejection = rejected({**THREE, "timeoutSeconds": value})
    assert rejection.field == "timeoutSeconds" and rule in rejection.rule
    assert rejection.targets == (make_target(SUB, RG, CACHE),)  # the event can name it


@pytest.mark.parametrize("enqueued, timeout, deadline", [
    (at(0), None, at(DEFAULT_TIMEOUT)),
    (at(-100), 60, at(-40)),  # waited in the queue past its deadline: already due
    (at(-5), 30, at(25)),
    (at(-86400), 86400, at(0)),
])
def test_deadline_counts_from_the_enqueue_time(enqueued, timeout, deadline):
    body = dict(THREE) if timeout is None else {**THREE, "timeoutSeconds": timeout}
    request = accepted(body, enqueued_at=enqueued, now=at(0))
    assert request.origin.requested_at == enqueued
    assert request.deadline == deadline


def test_without_an_enqueue_time_the_deadline_counts_from_now():
    request = accepted({**THREE, "timeoutSeconds": 45}, now=at(7))
    assert (request.origin.requested_at, request.deadline) == (at(7), at(52))


# --- origin from the delivery -----------------------------------------------------------------

def test_origin_copies_service_bus_properties():
    request = accepted({**THREE, "reason": "r", "requestedBy": "me"}, message_id="m1",
                       correlation_id="corr", reply_to="replies", reply_to_session_id="sess",
                       enqueued_at=at(-5))
    assert request.origin == Origin("m1", at(-5), "corr", "replies", "sess", "r", "me", "m1")
    assert request.origin.session_id == "sess"


def test_origin_defaults():
    request = accepted(THREE, reply_to="")
    assert request.origin == Origin("msg-1", T0, message_id="msg-1")
    assert request.origin.session_id == "msg-1"  # no ReplyToSessionId: the request id


def test_rejection_keeps_reply_to_so_the_waiting_sender_hears_about_it():
    rejection = rejected(b"not json", reply_to="replies", reply_to_session_id="s",
                         correlation_id="c")
    assert (rejection.origin.reply_to, rejection.origin.reply_to_session_id,
            rejection.origin.correlation_id) == ("replies", "s", "c")
    assert rejection.targets == ()


# --- ReplyTo ----------------------------------------------------------------------------------

@pytest.mark.parametrize("reply_to", ["replies", "redis-flush-replies", "a", "Q.1_x-2",
                                      "r" * 260, "redis-flush-requests-2"])
def test_reply_to_plain_queue_names(reply_to):
    assert accepted(THREE, reply_to=reply_to, reply_to_session_id="s").origin.reply_to == \
        reply_to


@pytest.mark.parametrize("reply_to", [
    "topic/subscriptions/sub", "q/$DeadLetterQueue", "$DeadLetterQueue", "q/$deadletterqueue",
    "a b", "-q", ".q", "_q", "q\n", "q?x", "q#x", "ｑ", "r" * 261, "sb://ns/q",
    "redis-flush-requests", "redis-flush-polls", "REDIS-FLUSH-POLLS", "Redis-Flush-Requests",
])
def test_reply_to_that_is_not_a_plain_foreign_queue_is_rejected(reply_to):
    rejection = rejected(THREE, reply_to=reply_to, reply_to_session_id="s", correlation_id="c")
    assert rejection.field == "ReplyTo"
    # the Rejected event must not go there: the origin drops it (topic event only)
    assert (rejection.origin.reply_to, rejection.origin.reply_to_session_id) == (None, None)
    assert rejection.origin.correlation_id == "c"


def test_bad_reply_to_is_dropped_even_when_the_body_is_bad_too():
    rejection = rejected(b"[]", reply_to="q/$DeadLetterQueue")
    assert rejection.field == "body" and rejection.origin.reply_to is None
    rejection = rejected({**THREE, "requestId": "a b"}, reply_to="redis-flush-polls")
    assert rejection.field == "requestId" and rejection.origin.reply_to is None


# --- scopes -----------------------------------------------------------------------------------

SCOPE_RG = f"/subscriptions/{SUB}/resourceGroups/rg"


@pytest.mark.parametrize("body, scopes, field", [
    ({**THREE, "resourceGroup": "rg"}, (SCOPE_RG,), None),
    ({**THREE, "resourceGroup": "rg2"}, (SCOPE_RG,), "resourceGroup"),  # a field it has
    ({"resourceId": rid(rg="rg2")}, (SCOPE_RG,), "resourceId"),
    ({"resourceId": rid(rg="rg")}, (SCOPE_RG,), None),
    ({"resourceId": RESOURCE_ID}, (f"/subscriptions/{SUB}",), None),
    ({"resourceId": RESOURCE_ID}, ("/subscriptions/00000000-1111-2222-3333-444444444445",),
     "resourceId"),
    ({"resourceId": RESOURCE_ID}, (), None),
    ({"resourceId": db_id(rg="rg")}, (SCOPE_RG,), None),
    ({"resourceId": db_id(rg="rg2")}, (SCOPE_RG,), "resourceId"),
    ({**CLUSTER_PARTS, "resourceGroup": "rg2"}, (SCOPE_RG,), "resourceGroup"),
    ({"resourceIds": [rid("a", rg="rg"), db_id(rg="rg")]}, (SCOPE_RG,), None),
    ({"resourceIds": [rid("a", rg="rg"), db_id(rg="rg2")]}, (SCOPE_RG,), "resourceIds[1]"),
])
def test_allowed_scopes(body, scopes, field):
    result = parse(body, scopes=scopes)
    if field is None:
        assert isinstance(result, FlushRequest)
        return
    assert isinstance(result, Rejection)
    assert result.field == field
    assert "REDISFLUSH_ALLOWED_SCOPES" in result.rule
    assert "rg2" in result.rule or "444444444444" in result.rule  # names the target
    assert result.targets  # the event can still name the caches


def test_selector_is_not_scope_checked_before_it_is_resolved():
    request = accepted({"selector": {"subscriptionId": SUB, "all": True}}, scopes=(SCOPE_RG,))
    assert request.targets == () and request.selector is not None


OTHER = "00000000-1111-2222-3333-444444444445"


@pytest.mark.parametrize("selector, scopes, field", [
    ({"subscriptionId": SUB}, (SCOPE_RG,), None),  # the allowed group lies inside it
    ({"subscriptionId": SUB.upper(), "resourceGroup": "RG"}, (SCOPE_RG.upper() + "/",), None),
    ({"subscriptionId": SUB, "resourceGroup": "rg"}, (rid("a", rg="rg"),), None),
    ({"subscriptionId": SUB, "resourceGroup": "rg"}, (f"/subscriptions/{SUB}",), None),
    ({"subscriptionId": OTHER}, (SCOPE_RG,), "selector.subscriptionId"),
    ({"subscriptionId": OTHER, "resourceGroup": "rg"}, (SCOPE_RG,), "selector.subscriptionId"),
    ({"subscriptionId": SUB, "resourceGroup": "rg2"}, (SCOPE_RG,), "selector.resourceGroup"),
    ({"subscriptionId": SUB, "resourceGroup": "rg"}, (SCOPE_RG + "2",), "selector.resourceGroup"),
    ({"subscriptionId": OTHER}, (), None),
])
def test_a_selector_wholly_outside_the_allowed_scopes_is_rejected_before_listing(
        selector, scopes, field):
    result = parse({"selector": {**selector, "all": True}}, scopes=scopes)
    if field is None:
        assert isinstance(result, FlushRequest)
        return
    assert isinstance(result, Rejection) and result.field == field
    assert "REDISFLUSH_ALLOWED_SCOPES" in result.rule and result.batch
    assert result.scope is not None and result.scope.lower() in result.rule.lower()


# --- fingerprint: what a requestId names, for good --------------------------------------------

def test_fingerprint_ignores_order_and_case_but_not_targets_or_linked():
    a = accepted({"resourceIds": [rid("a"), rid("b")]}).fingerprint
    assert a == accepted({"resourceIds": [rid("B"), rid("a")]}).fingerprint
    assert a != accepted({"resourceIds": [rid("a"), rid("c")]}).fingerprint
    one = accepted({"resourceId": DATABASE_ID}).fingerprint
    assert one == accepted(CLUSTER_PARTS).fingerprint
    assert one != accepted({"resourceId": DATABASE_ID, "linkedDatabaseIds": []}).fingerprint
    assert accepted({"resourceId": DATABASE_ID, "linkedDatabaseIds": []}).fingerprint != \
        accepted({"resourceId": DATABASE_ID, "linkedDatabaseIds": [db_id("us")]}).fingerprint
    s1 = accepted({"selector": {"subscriptionId": SUB, "tags": {"a": "1"}}}).fingerprint
    assert s1 == accepted({"selector": {"subscriptionId": SUB.upper(), "tags": {"a": "1"},
                                        "kinds": ["redisEnterprise", "redis"]}}).fingerprint
    assert s1 != accepted({"selector": {"subscriptionId": SUB, "tags": {"a": "2"}}}).fingerprint


def test_selector_request_carries_the_parsed_selector():
    selector = {"subscriptionId": SUB, "resourceGroup": RG, "tags": {"App": "shop"}}
    assert accepted({"selector": selector}).selector == parse_selector(selector)


# --- hostile inputs through the whole parser ---------------------------------------------------

HOSTILE = [
    {**THREE, "resourceGroup": "../rg"}, {**THREE, "resourceGroup": ".."},
    {**THREE, "cacheName": ".."}, {**THREE, "cacheName": "../../x"},
    {**THREE, "cacheName": "c%2F..%2Fx"}, {**THREE, "resourceGroup": "rg%2Fx"},
    {**THREE, "cacheName": "c\u0430che"}, {**THREE, "cacheName": "ｃａｃｈｅ"},
    {**THREE, "resourceGroup": "ｒｇ"}, {**THREE, "cacheName": "c\x00"},
    {**THREE, "resourceGroup": "rg\r\nX-Injected: 1"}, {**THREE, "cacheName": "c" * 70_000},
    {**CLUSTER_PARTS, "clusterName": "../x"}, {**CLUSTER_PARTS, "databaseName": ".."},
    {**CLUSTER_PARTS, "databaseName": "d%2F..%2Fx"}, {**CLUSTER_PARTS, "clusterName": "ｋ"},
    {**CLUSTER_PARTS, "resourceGroup": "rg?x=1"},
    {"resourceId": RESOURCE_ID + "/../../other"}, {"resourceId": RESOURCE_ID + "?x=1"},
    {"resourceId": RESOURCE_ID.replace("/resourceGroups/", "/resourceGroups/..%2F")},
    {"resourceId": DATABASE_ID + "/../../other"}, {"resourceId": DATABASE_ID + "?x=1"},
    {"resourceId": CLUSTER_ID + "/databases/..%2F..%2Fx"},
    {"resourceIds": [RESOURCE_ID + "/../x"]}, {"resourceIds": [DATABASE_ID + "#x"]},
]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_inputs_are_rejected(body):
    rejection = rejected(body)
    assert rejection.field.split("[")[0] in ("resourceId", "resourceIds", "resourceGroup",
                                             "cacheName", "clusterName", "databaseName", "body")
    assert rejection.targets == ()


# --- properties --------------------------------------------------------------------------------

def _check_outcome(result: object) -> None:
    assert isinstance(result, (FlushRequest, Rejection))
    if isinstance(result, Rejection):
        assert isinstance(result.field, str)  # may be an unknown key, even ""
        assert isinstance(result.rule, str) and result.rule
        return
    assert 30 <= result.timeout_seconds <= 86400
    assert 1 <= len(result.targets) <= MAX_TARGETS or result.selector is not None
    for target in result.targets:
        assert_url_confined(target.flush_url(ENDPOINT, API_VERSION), target, ENDPOINT)


@FAST
@given(st.binary(max_size=512), st.text(max_size=40))
def test_any_bytes_give_a_request_or_a_rejection(body, message_id):
    _check_outcome(parse(body, message_id=message_id))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
FIELD_VALUES = JSONISH | st.sampled_from([SUB, RG, CACHE, CLUSTER, "default", RESOURCE_ID,
                                          DATABASE_ID, CLUSTER_ID, 30, 86400, [], [DATABASE_ID],
                                          [RESOURCE_ID, DATABASE_ID], {"subscriptionId": SUB},
                                          {"subscriptionId": SUB, "all": True}])
REQUESTISH = st.dictionaries(st.sampled_from(list(REQUEST_FIELDS) + ["extra"]), FIELD_VALUES,
                             max_size=8)


@FAST
@given(JSONISH | REQUESTISH)
def test_any_json_gives_a_request_or_a_rejection(doc):
    _check_outcome(parse(json.dumps(doc, allow_nan=True).encode()))


@FAST
@given(SUB_TEXT, RG_TEXT, CACHE_TEXT, CACHE_TEXT, st.sampled_from(["id", "parts", "cluster",
                                                                   "clusterParts", "ids"]),
       st.none() | st.integers(min_value=30, max_value=86400))
def test_valid_requests_build_confined_urls(sub, rg, name, db, form, timeout):
    expected = make_enterprise(sub, rg, name, db) if form.startswith("cluster") else \
        make_target(sub, rg, name)
    body: dict = {"id": {"resourceId": expected.resource_id},
                  "ids": {"resourceIds": [expected.resource_id]},
                  "parts": {"subscriptionId": sub, "resourceGroup": rg, "cacheName": name},
                  "cluster": {"resourceId": expected.resource_id},
                  "clusterParts": {"subscriptionId": sub, "resourceGroup": rg,
                                   "clusterName": name, "databaseName": db}}[form]
    if timeout is not None:
        body["timeoutSeconds"] = timeout
    request = accepted(body)
    assert request.targets == (expected,)
    assert request.timeout_seconds == (timeout or DEFAULT_TIMEOUT)
    _check_outcome(request)


@FAST
@given(st.text(min_size=1, max_size=30), st.sampled_from(["cacheName", "clusterName",
                                                           "databaseName"]))
def test_any_name_text_is_accepted_only_when_it_is_plain_ascii(name, field):
    body = dict(THREE) if field == "cacheName" else dict(CLUSTER_PARTS)
    body[field] = name
    result = parse(body)
    plain = re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?", name, re.ASCII)
    assert isinstance(result, FlushRequest) == bool(plain and len(name) <= 63)


@FAST
@given(st.text(min_size=1, max_size=30))
def test_any_resource_group_text_is_accepted_only_without_separators_or_lookalikes(rg):
    result = parse({**THREE, "resourceGroup": rg})
    if isinstance(result, FlushRequest):
        assert not set(rg) & set("/\\?#%&= \t\r\n\x00")
        assert unicodedata.normalize("NFKC", rg) == rg and not rg.endswith(".")


def test_every_id_derived_from_the_longest_request_id_fits_a_service_bus_message_id():
    """Service Bus refuses a MessageId over 128 characters (the local bus would not)."""
    import hashlib

    from redisflush.core.request_id import MAX_REQUEST_ID

    rid, tag = "r" * MAX_REQUEST_ID, hashlib.sha256(b"x").hexdigest()[:12]
    longest = [f"{rid}:reused:{tag}:completed:{tag}", f"{rid}:completed:49:{tag}",
               f"{rid}:rejected:{tag}:completed",
               f"{rid}:progress:{10**12}:{tag}", f"{rid}:poll:{10**12}:{tag}"]
    assert max(len(i) for i in longest) <= 128



def test_an_empty_field_name_is_named_visibly():
    rejection = rejected({"resourceId": RESOURCE_ID, "": 1})
    assert rejection.field == '""' and rejection.rule.startswith("is not a known field")


def test_a_repeat_across_the_upgrade_finds_the_row_an_earlier_version_wrote():
    # before 2026-12 a selector's fingerprint kept its resource group and tag names as given
    request = accepted({"selector": {"subscriptionId": SUB, "resourceGroup": "RG-Web",
                                     "tags": {"App": "shop"}}})
    old = json.dumps({"selector": request.selector.to_json()}, separators=(",", ":"),
                     sort_keys=True)
    assert earlier_fingerprints(request.selector) == (old,) != (request.fingerprint,)
    ledger, now = MemoryLedger(), dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    expires = now + dt.timedelta(days=1)
    ledger.insert(LedgerRow("rel-1", "", "open", {"fingerprint": old}, 0, now, expires))
    also = earlier_fingerprints(request.selector)
    assert open_request(ledger, "rel-1", OpenRequest("open", request.fingerprint, expires,
                                                     also=also), now).status == "same"
    assert open_request(ledger, "rel-1", OpenRequest("open", request.fingerprint, expires),
                        now).status == "reused"
    lower = accepted({"selector": {"subscriptionId": SUB, "resourceGroup": "rg-web",
                                   "tags": {"app": "shop"}}})
    assert earlier_fingerprints(lower.selector) == ()  # nothing else was ever written


def test_a_message_without_a_message_id_gets_a_stand_in_its_redeliveries_repeat() -> None:
    """SequenceNumber and enqueue time (README, "The flush request": requestId)."""
    from redisflush.core.request_id import request_id_from_message_id, stand_in_message_id

    at = dt.datetime(2026, 12, 5, 3, 15, 0, 123456, tzinfo=dt.UTC)
    one = stand_in_message_id(42, at)
    assert one == "sb-seq-42-20261205T031500123456Z"
    assert request_id_from_message_id(one) == one  # a valid requestId as it is
    assert stand_in_message_id(42, at) == one and stand_in_message_id(43, at) != one
    assert stand_in_message_id(2**63 - 1, at).startswith("sb-seq-9223372036854775807-")
    assert stand_in_message_id(7, None) == "sb-seq-7"
    assert stand_in_message_id(None, at) == "" and stand_in_message_id(True, at) == ""
