"""messages.py: every rule of the request table, and the poll state's round trip."""
from __future__ import annotations

import dataclasses
import json
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from redisflush.messages import (MAX_BODY_BYTES, Delivery, FlushRequest, Origin, PollState,
                                 Rejection, parse_request, request_id_from_message_id)
from redisflush.target import CacheTarget

from .helpers import (API_VERSION, CACHE, CACHE_TEXT, ENDPOINT, RESOURCE_ID, RG, RG_TEXT, SUB,
                      SUB_TEXT, T0, assert_url_confined, at, load_fixture)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEFAULT_TIMEOUT = 1800
CASES = load_fixture("requests.json")
THREE = {"subscriptionId": SUB, "resourceGroup": RG, "cacheName": CACHE}


def parse(body: bytes | dict, *, message_id: str = "msg-1", scopes: tuple[str, ...] = (),
          **delivery: object) -> FlushRequest | Rejection:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(Delivery(raw, message_id, **delivery), default_timeout=DEFAULT_TIMEOUT,
                         allowed_scopes=scopes, now=T0)


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
    assert request.target == CacheTarget(*case["target"])
    body = case["body"]
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
    assert rejection.origin.request_id == "msg-1"


# --- size, encoding, JSON oddities -------------------------------------------------------------

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
                                 "{}".encode("utf-16")])
def test_non_utf8_body_is_rejected(raw):
    rejection = rejected(raw)
    assert rejection.field == "body" and "UTF-8" in rejection.rule


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 50_000,
                                 b'{"timeoutSeconds": 1' + b"0" * 5000 + b"}",
                                 "\ufeff{}".encode()])
def test_pathological_json_is_a_rejection_not_an_exception(raw):
    assert isinstance(parse(raw), Rejection)


def test_huge_float_timeout_is_rejected():
    rejection = rejected(b'{"cacheName": "c", "subscriptionId": "' + SUB.encode()
                         + b'", "resourceGroup": "rg", "timeoutSeconds": 1e999}')
    assert rejection.field == "timeoutSeconds"


# --- requestId -------------------------------------------------------------------------------

@pytest.mark.parametrize("request_id", ["a", "A" * 128, "deploy-42:flush.1_x", "0", "a:b:c"])
def test_request_id_valid(request_id):
    assert accepted({**THREE, "requestId": request_id}).origin.request_id == request_id


@pytest.mark.parametrize("request_id", ["", "A" * 129, "a b", "a/b", "a%2Fb", "ａ", "a\n", "é",
                                        "../x", None.__class__.__name__ + "\x00", 1, True, [],
                                        {}])
def test_request_id_invalid(request_id):
    rejection = rejected({**THREE, "requestId": request_id}, message_id="mid")
    assert rejection.field == "requestId"
    assert "1-128" in rejection.rule
    assert rejection.origin.request_id == "mid"  # the event still has a usable id


def test_request_id_defaults_to_message_id():
    assert accepted(THREE, message_id="ABC-123").origin.request_id == "ABC-123"


@pytest.mark.parametrize("message_id", ["", "has space", "x" * 129, "a/b", "ünï"])
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
                                       ("x" * 257, False), ("line\nbreak\ttab", True)])
def test_free_text_limits(name, value, ok):
    result = parse({**THREE, name: value})
    if ok:
        assert isinstance(result, FlushRequest)
        assert getattr(result.origin, "reason" if name == "reason" else "requested_by") == value
    else:
        assert isinstance(result, Rejection)
        assert (result.field, result.rule) == (name, "must be at most 256 characters")


# --- timeoutSeconds ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(30, 30), (86400, 86400), (600, 600), (60.0, 60),
                                             (None, DEFAULT_TIMEOUT)])
def test_timeout_accepted(value, expected):
    body = {**THREE, "timeoutSeconds": value}
    request = accepted(body)
    assert request.timeout_seconds == expected and type(request.timeout_seconds) is int


def test_timeout_default_when_absent():
    assert accepted(THREE).timeout_seconds == DEFAULT_TIMEOUT


@pytest.mark.parametrize("value, rule", [(29, "between 30 and 86400"),
                                         (86401, "between 30 and 86400"),
                                         (0, "between"), (-60, "between"), (10**12, "between"),
                                         (30.5, "whole number"), ("60", "whole number"),
                                         (True, "whole number"), (False, "whole number"),
                                         ([60], "whole number"), ({}, "whole number")])
def test_timeout_rejected(value, rule):
    rejection = rejected({**THREE, "timeoutSeconds": value})
    assert rejection.field == "timeoutSeconds" and rule in rejection.rule
    assert rejection.target == CacheTarget(SUB, RG, CACHE)


# --- origin from the delivery -----------------------------------------------------------------

def test_origin_copies_service_bus_properties():
    request = accepted({**THREE, "reason": "r", "requestedBy": "me"}, message_id="m1",
                       correlation_id="corr", reply_to="replies", reply_to_session_id="sess",
                       enqueued_at=at(-5))
    assert request.origin == Origin("m1", at(-5), "corr", "replies", "sess", "r", "me")


def test_origin_defaults():
    request = accepted(THREE, reply_to="")
    assert request.origin == Origin("msg-1", T0)


def test_rejection_keeps_reply_to_so_the_waiting_sender_hears_about_it():
    rejection = rejected(b"not json", reply_to="replies", reply_to_session_id="s",
                         correlation_id="c")
    assert (rejection.origin.reply_to, rejection.origin.reply_to_session_id,
            rejection.origin.correlation_id) == ("replies", "s", "c")
    assert rejection.target is None


# --- scopes ------------------------------------------------------------------------------------

SCOPE_RG = f"/subscriptions/{SUB}/resourceGroups/rg"


@pytest.mark.parametrize("body, scopes, ok", [
    ({**THREE, "resourceGroup": "rg"}, (SCOPE_RG,), True),
    ({**THREE, "resourceGroup": "rg2"}, (SCOPE_RG,), False),
    ({"resourceId": RESOURCE_ID.replace(f"/{RG}/", "/rg2/")}, (SCOPE_RG,), False),
    ({"resourceId": RESOURCE_ID.replace(f"/{RG}/", "/rg/")}, (SCOPE_RG,), True),
    ({"resourceId": RESOURCE_ID}, (f"/subscriptions/{SUB}",), True),
    ({"resourceId": RESOURCE_ID}, ("/subscriptions/00000000-1111-2222-3333-444444444445",),
     False),
    ({"resourceId": RESOURCE_ID}, (), True),
])
def test_allowed_scopes(body, scopes, ok):
    result = parse(body, scopes=scopes)
    if ok:
        assert isinstance(result, FlushRequest)
    else:
        assert isinstance(result, Rejection)
        assert result.field == "resourceId"
        assert "REDISFLUSH_ALLOWED_SCOPES" in result.rule
        assert result.target is not None  # the event can still name the cache


# --- hostile inputs through the whole parser ---------------------------------------------------

HOSTILE = [
    {**THREE, "resourceGroup": "../rg"}, {**THREE, "resourceGroup": ".."},
    {**THREE, "cacheName": ".."}, {**THREE, "cacheName": "../../x"},
    {**THREE, "cacheName": "c%2F..%2Fx"}, {**THREE, "resourceGroup": "rg%2Fx"},
    {**THREE, "cacheName": "c\u0430che"}, {**THREE, "cacheName": "ｃａｃｈｅ"},
    {**THREE, "resourceGroup": "ｒｇ"}, {**THREE, "cacheName": "c\x00"},
    {**THREE, "resourceGroup": "rg\r\nX-Injected: 1"}, {**THREE, "cacheName": "c" * 70_000},
    {"resourceId": RESOURCE_ID + "/../../other"}, {"resourceId": RESOURCE_ID + "?x=1"},
    {"resourceId": RESOURCE_ID.replace("/resourceGroups/", "/resourceGroups/..%2F")},
]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_inputs_are_rejected(body):
    rejection = rejected(body)
    assert rejection.field in ("resourceId", "resourceGroup", "cacheName", "body")
    assert rejection.target is None


# --- properties --------------------------------------------------------------------------------

def _check_outcome(result: object) -> None:
    assert isinstance(result, (FlushRequest, Rejection))
    if isinstance(result, Rejection):
        assert isinstance(result.field, str)  # may be an unknown key, even ""
        assert isinstance(result.rule, str) and result.rule
    else:
        assert 30 <= result.timeout_seconds <= 86400
        assert_url_confined(result.target.flush_url(ENDPOINT, API_VERSION), result.target,
                            ENDPOINT)


@FAST
@given(st.binary(max_size=512), st.text(max_size=40))
def test_any_bytes_give_a_request_or_a_rejection(body, message_id):
    _check_outcome(parse(body, message_id=message_id))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
FIELD_VALUES = JSONISH | st.sampled_from([SUB, RG, CACHE, RESOURCE_ID, 30, 86400])
REQUESTISH = st.dictionaries(
    st.sampled_from(["resourceId", "subscriptionId", "resourceGroup", "cacheName", "requestId",
                     "reason", "requestedBy", "timeoutSeconds", "extra"]),
    FIELD_VALUES, max_size=8)


@FAST
@given(JSONISH | REQUESTISH)
def test_any_json_gives_a_request_or_a_rejection(doc):
    _check_outcome(parse(json.dumps(doc, allow_nan=True).encode()))


@FAST
@given(SUB_TEXT, RG_TEXT, CACHE_TEXT, st.booleans(),
       st.none() | st.integers(min_value=30, max_value=86400))
def test_valid_requests_build_confined_urls(sub, rg, cache, use_resource_id, timeout):
    body: dict = ({"resourceId": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                                 f"Microsoft.Cache/Redis/{cache}"}
                  if use_resource_id else
                  {"subscriptionId": sub, "resourceGroup": rg, "cacheName": cache})
    if timeout is not None:
        body["timeoutSeconds"] = timeout
    request = accepted(body)
    assert request.target == CacheTarget(sub.lower(), rg, cache)
    assert request.timeout_seconds == (timeout or DEFAULT_TIMEOUT)
    assert_url_confined(request.target.flush_url(ENDPOINT, API_VERSION), request.target,
                        ENDPOINT)


@FAST
@given(st.text(min_size=1, max_size=30))
def test_any_cache_text_is_accepted_only_when_it_is_plain_ascii(cache):
    result = parse({**THREE, "cacheName": cache})
    plain = re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?", cache, re.ASCII)
    assert isinstance(result, FlushRequest) == bool(plain)


@FAST
@given(st.text(min_size=1, max_size=30))
def test_any_resource_group_text_is_accepted_only_without_separators_or_lookalikes(rg):
    result = parse({**THREE, "resourceGroup": rg})
    if isinstance(result, FlushRequest):
        assert not set(rg) & set("/\\?#%&= \t\r\n\x00")
        assert unicodedata.normalize("NFKC", rg) == rg and not rg.endswith(".")


# --- poll state -------------------------------------------------------------------------------

FULL_STATE = PollState(
    Origin("req-1", at(-3), "corr", "replies", "sess", "why", "who"),
    CacheTarget(SUB, RG, CACHE), deadline=at(1800), phase="poll", attempt=7,
    poll_url="https://management.azure.com/x/operationresults/1?api-version=1&t=a%2Bb&c=z",
    poll_kind="azure-asyncoperation", accepted_at=at(1), last_status="InProgress",
    last_operation={"status": "InProgress", "percentComplete": 40}, polls=5, failures=2,
    bad_polls=1, arm_requests=9, paced=True)


@pytest.mark.parametrize("state", [
    FULL_STATE,
    PollState(Origin("r", T0), CacheTarget(SUB, RG, CACHE), deadline=at(30)),
])
def test_poll_state_round_trip(state):
    assert PollState.from_json(state.to_json()) == state


def test_poll_state_wire_shape():
    doc = json.loads(FULL_STATE.to_json())
    assert doc["v"] == 1
    for key in ("requestId", "target", "pollUrl", "pollKind", "attempt", "acceptedAt",
                "deadline", "lastStatus", "replyTo", "replyToSessionId", "reason",
                "requestedBy"):
        assert key in doc
    assert doc["pollUrl"] == FULL_STATE.poll_url  # verbatim, signature and all
    assert doc["deadline"] == "2030-01-01T12:30:00.000Z"


@pytest.mark.parametrize("phase, attempt, message_id", [("flush", 0, "req-1:poll:0"),
                                                        ("flush", 3, "req-1:poll:3"),
                                                        ("poll", 4, "req-1:poll:4")])
def test_poll_state_message_id(phase, attempt, message_id):
    state = dataclasses.replace(FULL_STATE, phase=phase, attempt=attempt)
    assert state.message_id == message_id


def _mutated(**changes: object) -> bytes:
    doc = json.loads(FULL_STATE.to_json())
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[]", b"{}", _mutated(v=2), _mutated(v=None), _mutated(phase="done"),
    _mutated(target={"subscriptionId": SUB, "resourceGroup": RG, "cacheName": "../x"}),
    _mutated(target=None), _mutated(deadline=None),
])
def test_poll_state_refuses_what_we_did_not_write(body):
    with pytest.raises(ValueError):
        PollState.from_json(body)
