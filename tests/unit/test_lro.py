"""core/lro.py: ARM's async-operation rules, sans IO (and core/trust.py, which it re-exports)."""
from __future__ import annotations

import ast
import datetime as dt
import email.utils
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redisflush.core import lro, trust
from redisflush.core.cadence import retry_delay
from redisflush.core.lro import (
    AsyncOperationPolling,
    LocationPolling,
    Reading,
    is_transient,
    is_trusted,
    poll_target,
    redact_url,
    retry_after,
    strategy,
    terminal_status,
)

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
ENDPOINT = "https://management.azure.com"

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
    # RFC 5322's "-0000" (UTC, zone unknown): parsedate_to_datetime gives a naive datetime,
    # which compared with an aware now raised TypeError out of the step
    ({"Retry-After": "Wed, 01 Jan 2030 12:00:30 -0000"}, 30.0),
    ({"Retry-After": "Wed, 01 Jan 2030 13:00:30 +0100"}, 30.0),
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


@pytest.mark.parametrize("endpoint", ["https://management.azure.com:99999",
                                      "https://[::1", "http://127.0.0.1:abc"])
def test_an_unreadable_endpoint_trusts_no_url(endpoint):
    assert not is_trusted(endpoint + "/x", endpoint)
    assert not is_trusted("https://management.azure.com/x", endpoint)


def test_is_trusted_keeps_every_url_of_a_fleet_read_in_turn():
    """A process follows hundreds of operations, reading each in turn: a cache smaller than
    that missed on every read, parsing the URL and the endpoint again (bench/cpu.py)."""
    urls = [f"{ENDPOINT}/subscriptions/s/operations/op-{i}" for i in range(1000)]
    for url in urls:
        is_trusted(url, ENDPOINT)
    before = trust.is_trusted.cache_info()
    assert all(is_trusted(url, ENDPOINT) for url in urls)
    assert trust.is_trusted.cache_info().hits - before.hits == len(urls)


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
    (b'{"status":"  "}', Reading("bad", problem="OperationStatusMissingStatus",
                                 operation={"status": "  "})),
    # surrounding whitespace does not hide a terminal status
    (b'{"status":" Succeeded "}', Reading("terminal", "Succeeded", {"status": " Succeeded "})),
    (b'{"status":"\\tfailed\\n"}', Reading("terminal", "Failed", {"status": "\tfailed\n"})),
    (b'{"status":" InProgress "}', Reading("running", "InProgress",
                                           {"status": " InProgress "})),
    # a key named twice, at any depth: which one ARM meant is unknowable
    (b'{"status":"Failed","status":"Succeeded"}',
     Reading("bad", problem="OperationStatusAmbiguous")),
    (b'{"status":"Succeeded","status":"Succeeded"}',
     Reading("bad", problem="OperationStatusAmbiguous")),
    (b'{"status":"Failed","error":{"code":"A","code":"B"}}',
     Reading("bad", problem="OperationStatusAmbiguous")),
    # the Managed Redis 202 flush body is not an operation resource
    (b'{"StatusCode":202}', Reading("bad", problem="OperationStatusMissingStatus",
                                    operation={"StatusCode": 202})),
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
    # Location's 200/204 means done whatever its body (docs/design.md, "Reliability rules"):
    (200, b'{"status":"Running"}', "terminal", "Succeeded"),  # e.g. the resource's own status
    (200, b"<html>", "terminal", "Succeeded"),
    (200, b'"success"', "terminal", "Succeeded"),
    (200, b"[1]", "terminal", "Succeeded"),
    (200, b"null", "terminal", "Succeeded"),
    (200, b"\xff\xfe", "terminal", "Succeeded"),
    (204, b"{not json", "terminal", "Succeeded"),
    (200, b"[" * 100_000, "terminal", "Succeeded"),
    (200, b'{"status":" failed "}', "terminal", "Failed"),  # an object's terminal status counts
    (202, b'{"status":"Failed"}', "terminal", "Failed"),
    (202, b'"success"', "running", "InProgress"),
    (202, b"[1]", "running", "InProgress"),
    # a status named twice: refuse to guess, whatever the HTTP status
    (200, b'{"status":"Failed","status":"Succeeded"}', "bad", None),
    (204, b'{"status":"Succeeded","status":"Failed"}', "bad", None),
])
def test_location_reading(status, body, state, reading_status):
    reading = LocationPolling().read(status, body)
    assert (reading.state, reading.status) == (state, reading_status)


@pytest.mark.parametrize("value, expected", [("Succeeded", "Succeeded"),
                                             (" Succeeded ", "Succeeded"),
                                             ("\tCanceled\r\n", "Canceled"),
                                             ("Suc ceeded", None),
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


# --- percentComplete and hostile numbers -------------------------------------------------------

def status_body(percent: str) -> bytes:
    return b'{"status":"InProgress","percentComplete":' + percent.encode() + b"}"


@pytest.mark.parametrize("percent", ["9" * 5000, "-" + "9" * 5000, "1e999", "-1e999", "NaN",
                                     "Infinity", "-Infinity", '"50"', "true", "null", "[50]",
                                     '{"v":50}', "-5", "100.5", "1" + "0" * 40])
@pytest.mark.parametrize("polling", [AsyncOperationPolling(), LocationPolling()])
def test_an_unusable_percent_complete_is_dropped_not_fatal(polling, percent):
    reading = polling.read(202, status_body(percent))
    assert (reading.state, reading.status) == ("running", "InProgress")
    assert reading.operation == {"status": "InProgress", "percentComplete": None}


@pytest.mark.parametrize("percent, expected", [("0", 0), ("42.5", 42.5), ("100", 100),
                                               ("1e1", 10.0)])
def test_a_usable_percent_complete_is_kept(percent, expected):
    reading = AsyncOperationPolling().read(200, status_body(percent))
    assert reading.operation["percentComplete"] == expected


def test_no_non_finite_or_huge_number_survives_anywhere_in_the_document():
    body = (b'{"status":"Failed","error":{"code":"X","details":[{"n":' + b"7" * 5000 +
            b',"f":1e400,"c":NaN}]}}')
    reading = AsyncOperationPolling().read(200, body)
    assert reading.state == "terminal" and reading.status == "Failed"
    json.dumps(reading.operation, allow_nan=False)  # would raise on inf/nan
    assert reading.operation["error"]["details"][0] == {"n": None, "f": None, "c": None}


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from([200, 201, 202, 204]),
       body=st.binary(max_size=200)
       | st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                      | st.text(max_size=20),
                      lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(["status", "percentComplete", "error",
                                                         "id", "x"]), inner, max_size=4),
                      max_leaves=10).map(lambda d: json.dumps(d).encode()))
def test_readings_never_raise_and_say_something_definite(status, body):
    for polling in (AsyncOperationPolling(), LocationPolling()):
        reading = polling.read(status, body)
        assert reading.state in ("running", "terminal", "bad")
        assert (reading.problem is not None) == (reading.state == "bad")
        if reading.state == "terminal":
            assert reading.status in ("Succeeded", "Failed", "Canceled")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["Retry-After", "retry-after-ms", "x-ms-retry-after-ms"]),
                       st.text()
                       | st.sampled_from(["9" * 5000, "1" * 400 + ".5", "-" + "9" * 5000,
                                          "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
                                          "Sat, 31 Dec 9999 23:59:59 GMT",
                                          "Thu, 01 Jan 1970 00:00:00 +9999",
                                          "\x00", "\u2028", "1e-400"])))
def test_retry_after_never_raises_on_any_header_value(headers):
    value = retry_after(headers, T0)
    assert value is None or 0.0 <= value < float("inf")


# --- Azure Managed Redis (redisEnterprise) shapes, docs/design.md "What ARM really does" ---------

ENTERPRISE_AAO = (f"{ENDPOINT}/subscriptions/s/providers/Microsoft.Cache/locations/westus2/"
                  "operationsStatus/a1b2?api-version=2025-07-01")
ENTERPRISE_LOCATION = (f"{ENDPOINT}/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cache/"
                       "redisEnterprise/c/databases/default/operationresults/a1b2?"
                       "api-version=2025-07-01&t=6385&c=MIIH&s=abc&h=def")


def test_managed_redis_flush_answer_is_followed_through_operations_status():
    headers = {"Azure-AsyncOperation": ENTERPRISE_AAO, "Location": ENTERPRISE_LOCATION}
    assert poll_target(headers, FLUSH_URL) == ("azure-asyncoperation", ENTERPRISE_AAO)
    assert poll_target({"Location": ENTERPRISE_LOCATION}, FLUSH_URL) == \
        ("location", ENTERPRISE_LOCATION)


def test_managed_redis_operations_status_is_200_in_progress_while_running():
    running = (b'{"id":"/x/a1b2","name":"a1b2","status":"InProgress",'
               b'"startTime":"2030-01-01T12:00:00Z"}')
    done = (b'{"id":"/x/a1b2","name":"a1b2","status":"Succeeded",'
            b'"startTime":"2030-01-01T12:00:00Z","endTime":"2030-01-01T12:00:01Z"}')
    assert AsyncOperationPolling().read(200, running).state == "running"
    reading = AsyncOperationPolling().read(200, done)
    assert (reading.state, reading.status) == ("terminal", "Succeeded")
    assert reading.operation["endTime"] == "2030-01-01T12:00:01Z"


def test_managed_redis_202_flush_body_is_not_an_operation_resource():
    body = b'{"StatusCode":202}'
    assert AsyncOperationPolling().read(202, body).state == "bad"
    assert LocationPolling().read(202, body) == Reading("running", "InProgress")


# --- purity and the moved trust rules ------------------------------------------------------------

IO_MODULES = {"requests", "urllib3", "socket", "ssl", "http", "sqlite3", "azure", "os",
              "subprocess", "threading", "logging", "select", "asyncio", "io"}


@pytest.mark.parametrize("module", [lro, trust])
def test_core_modules_import_no_io_library(module):
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: only within the core package
                assert node.level == 1, f"{module.__name__} imports outside the core"
            else:
                imported.add((node.module or "").split(".")[0])
    assert not imported & IO_MODULES
    assert "redisflush" not in imported


def test_trust_rules_live_in_core_trust_and_are_re_exported():
    from redisflush import settings
    assert lro.is_trusted is trust.is_trusted and lro.redact_url is trust.redact_url
    assert lro.is_loopback_http is trust.is_loopback_http
    assert settings.is_loopback_http is trust.is_loopback_http


def test_a_running_status_past_a_word_is_cut_so_messages_stay_small() -> None:
    """The status rides in every poll message and note (README, "Reliability")."""
    reading = lro.AsyncOperationPolling().read(200, json.dumps(
        {"status": " Running" + "x" * 100_000}).encode())
    assert reading.state == "running" and reading.status is not None
    assert len(reading.status) == lro.MAX_STATUS and reading.status.startswith("Runningxx")
    assert lro.AsyncOperationPolling().read(200, b'{"status": "InProgress"}').status == \
        "InProgress"


def test_header_lookup_is_case_insensitive_on_any_dict() -> None:
    from redisflush.core.lro import header
    assert header({"retry-after": "5"}, "Retry-After") == "5"  # an ArmAnswer's lower-cased
    assert header({"Retry-After": "7"}, "retry-after") == "7"  # a plain dict's own case
    assert header({"Retry-After": ""}, "RETRY-AFTER") == ""
    assert header({"x-other": "1"}, "retry-after") is None
    from redisflush.core.answers import LowerCaseHeaders
    lowered = LowerCaseHeaders({"retry-after": "5", "x-ms-ratelimit-remaining-subscription-reads":
                                "11"})
    assert header(lowered, "Retry-After") == "5"
    assert header(lowered, "x-ms-ratelimit-remaining-subscription-READS") == "11"
    assert header(lowered, "retry-after-ms") is None
