"""lro.py: ARM's async-operation rules, sans IO."""
from __future__ import annotations

import datetime as dt
import email.utils

import pytest
from hypothesis import given, settings, strategies as st

from redisflush.core import lro
from redisflush.core.lro import (POLL_GAPS, AsyncOperationPolling, LocationPolling, Reading,
                            is_transient, is_trusted, poll_gap, poll_target, redact_url,
                            retry_after, retry_delay, strategy, terminal_status)

from .helpers import ENDPOINT, T0

FLUSH_URL = (f"{ENDPOINT}/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cache/Redis/c"
             "/flush?api-version=2023-08-01")
OP_URL = (f"{ENDPOINT}/subscriptions/s/providers/Microsoft.Cache/locations/West%20US%202/"
          "operationresults/op-1?api-version=2023-08-01")
SIGNED = OP_URL + "&t=638512345678901234&c=MIIHADCCBuig%2BAwIBAgITHgRc%3D&s=Xy_z-1&h=Ab%2Fc"


def http_date(moment: dt.datetime) -> str:
    return email.utils.format_datetime(moment, usegmt=True)


# --- Retry-After -----------------------------------------------------------------------------

@pytest.mark.parametrize("headers, expected", [
    ({}, None),
    ({"Retry-After": "10"}, 10.0),
    ({"retry-after": "0"}, 0.0),
    ({"RETRY-AFTER": " 7 "}, 7.0),
    ({"Retry-After": "2.5"}, 2.5),
    ({"Retry-After": "-5"}, 0.0),
    ({"Retry-After": http_date(T0 + dt.timedelta(seconds=120))}, 120.0),
    ({"Retry-After": http_date(T0 - dt.timedelta(seconds=120))}, 0.0),  # in the past
    ({"Retry-After": "Wed, 01 Jan 2030 12:00:30 GMT"}, 30.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"x-ms-retry-after-ms": "250"}, 0.25),
    ({"Retry-After-Ms": "0"}, 0.0),
    # precedence: retry-after-ms, then x-ms-retry-after-ms, then Retry-After
    ({"Retry-After": "10", "retry-after-ms": "500"}, 0.5),
    ({"Retry-After": "10", "x-ms-retry-after-ms": "3000"}, 3.0),
    ({"x-ms-retry-after-ms": "3000", "retry-after-ms": "500"}, 0.5),
    # garbage is ignored, and a garbage ms header does not hide a good Retry-After
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": ""}, None),
    ({"Retry-After": "Wed, 99 Foo 2030"}, None),
    ({"retry-after-ms": "abc", "Retry-After": "4"}, 4.0),
    ({"retry-after-ms": "abc"}, None),
    ({"Retry-After": "nan"}, None),
    ({"Retry-After": "inf"}, None),
    ({"Retry-After": "-inf"}, None),
    ({"Retry-After": "1e400"}, None),
    ({"retry-after-ms": "nan", "Retry-After": "4"}, 4.0),
    ({"x-ms-retry-after-ms": "infinity", "Retry-After": "4"}, 4.0),
    # an HTTP-date whose year overflows a C long raised OverflowError out of the handler
    ({"Retry-After": "1 Jan 10000000000000000000 00:00 GMT"}, None),
    ({"Retry-After": "Mon, 01 Jan 99999 00:00:00 GMT"}, None),
])
def test_retry_after(headers, expected):
    assert retry_after(headers, T0) == expected


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["Retry-After", "retry-after-ms", "x-ms-retry-after-ms",
                                        "Other"]),
                       st.text(max_size=40)
                       | st.sampled_from(["inf", "-inf", "nan", "INF", "Infinity", "1e400",
                                          "1e308", "-0", "1_000", "\u0661\u0662"])
                       | st.floats().map(str)
                       | st.integers().map(str)))
def test_retry_after_is_none_or_a_finite_non_negative_number(headers):
    value = retry_after(headers, T0)
    assert value is None or (0.0 <= value < float("inf"))


# --- poll target -----------------------------------------------------------------------------

@pytest.mark.parametrize("headers, expected", [
    ({}, None),
    ({"Azure-AsyncOperation": "", "Location": "  "}, None),
    ({"Azure-AsyncOperation": OP_URL}, ("azure-asyncoperation", OP_URL)),
    ({"Location": OP_URL}, ("location", OP_URL)),
    ({"azure-asyncoperation": OP_URL, "location": OP_URL + "&x=1"},
     ("azure-asyncoperation", OP_URL)),  # Azure-AsyncOperation wins
    ({"Location": OP_URL + "&x=1", "Azure-AsyncOperation": OP_URL},
     ("azure-asyncoperation", OP_URL)),  # whatever the header order
    ({"Azure-AsyncOperation": OP_URL, "Location": OP_URL}, ("azure-asyncoperation", OP_URL)),
    ({"Azure-AsyncOperation": "", "Location": OP_URL}, ("location", OP_URL)),
    ({"Location": "/subscriptions/s/operationresults/op-2?api-version=1"},
     ("location", f"{ENDPOINT}/subscriptions/s/operationresults/op-2?api-version=1")),
    ({"Location": "op-3?api-version=1"},
     ("location", f"{ENDPOINT}/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cache/"
                  "Redis/c/op-3?api-version=1")),
    ({"Azure-AsyncOperation": SIGNED}, ("azure-asyncoperation", SIGNED)),
    ({"Azure-AsyncOperation": f" {SIGNED} "}, ("azure-asyncoperation", SIGNED)),
])
def test_poll_target(headers, expected):
    assert poll_target(headers, FLUSH_URL) == expected


@pytest.mark.parametrize("url", [
    OP_URL, SIGNED,
    SIGNED + "&sig=" + "A%2Bb%2F" * 700,  # > 4 KB
    f"{ENDPOINT}/a/./b/../c?x=%20&y=a+b&z=%7E~",  # no normalisation of any kind
    f"{ENDPOINT}/a;p=1?x=1",
    f"{ENDPOINT}/ops/1?",  # even an empty query stays as sent
    f"{ENDPOINT}:443/ops/1?api-version=1",
])
def test_poll_target_uses_header_urls_verbatim(url):
    kind, got = poll_target({"Azure-AsyncOperation": url}, FLUSH_URL)
    assert got == url
    assert len(SIGNED + "&sig=" + "A%2Bb%2F" * 700) > 4096


# --- trust --------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, endpoint, trusted", [
    (OP_URL, ENDPOINT, True),
    (SIGNED, ENDPOINT, True),
    ("https://MANAGEMENT.azure.com/x", ENDPOINT, True),  # host names are case-insensitive
    ("https://management.azure.com:443/x", ENDPOINT, True),  # default port spelled out
    ("https://management.azure.com/x", "https://management.azure.com:443", True),
    ("http://management.azure.com/x", ENDPOINT, False),  # https vs http
    ("https://management.azure.com:8443/x", ENDPOINT, False),
    ("https://management.azure.com:80/x", ENDPOINT, False),
    ("https://evil.example/x", ENDPOINT, False),
    ("https://management.azure.com.evil.example/x", ENDPOINT, False),
    ("https://evil.example/management.azure.com/x", ENDPOINT, False),
    ("https://management.azure.com@evil.example/x", ENDPOINT, False),
    ("https://user:pw@management.azure.com/x", ENDPOINT, False),  # userinfo
    ("https://user@management.azure.com/x", ENDPOINT, False),
    ("https://management.azure.com\\@evil.example/x", ENDPOINT, False),
    ("https://management.usgovcloudapi.net/x", ENDPOINT, False),
    ("//management.azure.com/x", ENDPOINT, False),  # no scheme
    ("/subscriptions/x", ENDPOINT, False),
    ("ftp://management.azure.com/x", ENDPOINT, False),
    ("https://management.azure.com:99999/x", ENDPOINT, False),  # invalid port
    ("https://management.azure.com:abc/x", ENDPOINT, False),
    ("https://[::1/x", ENDPOINT, False),  # unparseable
    ("", ENDPOINT, False),
    # http only when the configured endpoint is itself an http loopback URL (local mode)
    ("http://127.0.0.1:7071/ops/1", "http://127.0.0.1:7071", True),
    ("http://localhost:7071/ops/1", "http://localhost:7071", True),
    ("http://[::1]:7071/ops/1", "http://[::1]:7071", True),
    ("http://127.0.0.1:7072/ops/1", "http://127.0.0.1:7071", False),
    ("http://localhost:7071/ops/1", "http://127.0.0.1:7071", False),
    ("https://127.0.0.1:7071/ops/1", "http://127.0.0.1:7071", False),
    ("http://management.azure.com/x", "http://management.azure.com", False),
    ("http://10.0.0.1/x", "http://10.0.0.1", False),
])
def test_is_trusted(url, endpoint, trusted):
    assert is_trusted(url, endpoint) is trusted


@pytest.mark.parametrize("url, expected", [
    (OP_URL, f"{ENDPOINT}/subscriptions/s/providers/Microsoft.Cache/locations/West%20US%202/"
             "operationresults/op-1?…"),
    (f"{ENDPOINT}/x", f"{ENDPOINT}/x"),
    ("https://user:secret@evil.example:8443/p?sig=1#frag", "https://evil.example:8443/p?…"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected
    assert "t=6385" not in redact_url(SIGNED) and "MIIH" not in redact_url(SIGNED)


# --- status readings -------------------------------------------------------------------------

@pytest.mark.parametrize("status", [200, 201, 202])
@pytest.mark.parametrize("body, expected", [
    (b'{"status":"Succeeded"}', Reading("terminal", "Succeeded", {"status": "Succeeded"})),
    (b'{"status":"succeeded"}', Reading("terminal", "Succeeded", {"status": "succeeded"})),
    (b'{"status":"FAILED"}', Reading("terminal", "Failed", {"status": "FAILED"})),
    (b'{"status":"canceled"}', Reading("terminal", "Canceled", {"status": "canceled"})),
    (b'{"status":"InProgress"}', Reading("running", "InProgress", {"status": "InProgress"})),
    (b'{"status":"Accepted"}', Reading("running", "Accepted", {"status": "Accepted"})),
    (b'{"status":"Cancelled"}', Reading("running", "Cancelled", {"status": "Cancelled"})),
    (b'{"status":"Deleting"}', Reading("running", "Deleting", {"status": "Deleting"})),
    (b"", Reading("bad", problem="OperationStatusEmptyBody")),
    (b"  \n", Reading("bad", problem="OperationStatusEmptyBody")),
    (b"<html>", Reading("bad", problem="OperationStatusInvalidJson")),
    (b'["status"]', Reading("bad", problem="OperationStatusInvalidJson")),
    (b"\xff", Reading("bad", problem="OperationStatusInvalidJson")),
    (b"[" * 100_000, Reading("bad", problem="OperationStatusInvalidJson")),
    (b"{}", Reading("bad", problem="OperationStatusMissingStatus", operation={})),
    (b'{"status":""}', Reading("bad", problem="OperationStatusMissingStatus",
                               operation={"status": ""})),
    (b'{"status":3}', Reading("bad", problem="OperationStatusMissingStatus",
                              operation={"status": 3})),
])
def test_async_operation_reading(status, body, expected):
    assert AsyncOperationPolling().read(status, body) == expected


@pytest.mark.parametrize("status, body, state, reading_status", [
    (202, b"", "running", "InProgress"),
    (202, b"garbage", "running", "InProgress"),
    (202, b'{"status":"InProgress","percentComplete":50}', "running", "InProgress"),
    (202, b"{}", "running", "InProgress"),
    (200, b"", "terminal", "Succeeded"),
    (204, b"", "terminal", "Succeeded"),
    (201, b"", "terminal", "Succeeded"),
    (200, b'{"status":"Succeeded"}', "terminal", "Succeeded"),
    (200, b'{"status":"failed","error":{"code":"X"}}', "terminal", "Failed"),
    (200, b'{"status":"CANCELED"}', "terminal", "Canceled"),
    (200, b'{"id":"/x","name":"flush"}', "terminal", "Succeeded"),  # the result itself
    (200, b'{"status":"Running"}', "running", "Running"),
    (200, b"<html>", "bad", None),
])
def test_location_reading(status, body, state, reading_status):
    reading = LocationPolling().read(status, body)
    assert (reading.state, reading.status) == (state, reading_status)


@pytest.mark.parametrize("value, expected", [("Succeeded", "Succeeded"),
                                             ("sUcCeEdEd", "Succeeded"), ("failed", "Failed"),
                                             ("CANCELED", "Canceled"), ("InProgress", None),
                                             ("", None), (None, None), (1, None)])
def test_terminal_status(value, expected):
    assert terminal_status(value) == expected


def test_strategy_lookup():
    assert strategy("azure-asyncoperation").kind == "azure-asyncoperation"
    assert strategy("location").kind == "location"
    with pytest.raises(ValueError):
        strategy("status-check")


# --- schedule ---------------------------------------------------------------------------------

def test_poll_gaps_start_quick_never_shrink_and_cap_at_30():
    gaps = [poll_gap(n) for n in range(200)]
    assert gaps[0] <= 2.0
    assert all(a <= b for a, b in zip(gaps, gaps[1:]))
    assert max(gaps) == 30.0 and gaps[-1] == 30.0
    assert POLL_GAPS[-1] == 30.0


@pytest.mark.parametrize("failures, base", [(0, 2), (1, 2), (2, 4), (3, 8), (4, 16), (5, 32),
                                            (6, 60), (7, 60), (50, 60)])
def test_retry_delay_grows_then_caps(failures, base):
    for seed in ("a", "b", "req:1", "req:2", ""):
        delay = retry_delay(failures, seed)
        assert 0.75 * base <= delay <= 1.25 * base


@pytest.mark.parametrize("failures", [1023, 1024, 5000, 10**6])
def test_retry_delay_survives_very_long_outages(failures):
    assert 45.0 <= retry_delay(failures, "seed") <= 75.0


def test_retry_delay_is_deterministic_and_spread_by_seed():
    assert retry_delay(3, "req-1:4") == retry_delay(3, "req-1:4")
    spread = {round(retry_delay(3, f"req-{i}:1"), 6) for i in range(50)}
    assert len(spread) > 25  # a fleet of retries does not move in lockstep


@pytest.mark.parametrize("status, transient", [
    (408, True), (409, True), (429, True), (500, True), (502, True), (503, True), (504, True),
    (599, True), (400, False), (401, False), (403, False), (404, False), (405, False),
    (410, False), (412, False), (422, False), (200, False), (202, False), (301, False),
])
def test_is_transient(status, transient):
    assert is_transient(status) is transient


def test_header_lookup_is_case_insensitive():
    assert lro.header({"X-Thing": "1"}, "x-thing") == "1"
    assert lro.header({"x-thing": "1"}, "X-THING") == "1"
    assert lro.header({}, "x") is None


@pytest.mark.parametrize("value", ["https://[::1/x", "http://[management.azure.com/x"])
def test_unparseable_header_url_is_kept_and_refused_not_raised(value):
    kind, url = poll_target({"Location": value}, FLUSH_URL)
    assert (kind, url) == ("location", value)
    assert is_trusted(url, ENDPOINT) is False
    assert redact_url(url) == "(unparseable URL)"
