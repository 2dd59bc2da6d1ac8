"""Property-based fuzzing of the request queue, end to end through FlushTrigger: any body and
any Service Bus properties a sender controls (README, "The flush request") end in events and
a completed message, never a traceback (a raise would retry the message into the dead-letter
queue with no event), and a rejection names the field (`error.target`, `error.message`
`field: rule`).

Mutations start from the valid forms of the request table: a field given a value of another
JSON type, a huge or deeply nested value, text with any unicode, a repeated key, an extra
field, a field left out, and bytes that are not UTF-8 JSON (a BOM, a stray byte, UTF-16).
"""
from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redisflush.core.request import REQUEST_FIELDS, Delivery, Rejection, parse_request
from redisflush.functions import install
from tests.support.harness import RG, SUB, Harness
from tests.support.memory_bus import FakeClock, MemoryBus
from tests.support.scripted_arm import ScriptedArm

# FUZZ_EXAMPLES=5000 FUZZ_RANDOM=1 explores further; CI runs the fixed, fast default
EXPLORE = bool(os.environ.get("FUZZ_RANDOM"))
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "500")), deadline=None,
                derandomize=not EXPLORE, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

DB = (f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/redisEnterprise/"
      "amr-1/databases/default")
CLASSIC = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/cache-01"
VALID = [
    {"resourceId": CLASSIC},
    {"resourceId": DB, "linkedDatabaseIds": []},
    {"subscriptionId": SUB, "resourceGroup": RG, "cacheName": "cache-01"},
    {"subscriptionId": SUB, "resourceGroup": RG, "clusterName": "amr-1", "databaseName": "db",
     "linkedDatabaseIds": [DB.replace("amr-1", "amr-2")]},
    {"resourceIds": [CLASSIC, DB]},
    {"selector": {"subscriptionId": SUB, "resourceGroup": RG, "tags": {"app": "shop"},
                  "kinds": ["redis"]}},
    {"selector": {"subscriptionId": SUB, "all": True}},
]
OPTIONAL = {"requestId": "rel-1", "reason": "release", "requestedBy": "ci",
            "timeoutSeconds": 900}

TEXT = st.text(max_size=40) | st.sampled_from([
    "", " ", "\u0000", "\ud800", "\udfff", "\u202e", "\ufeff", "ｒｇ", "İ", "ß", "🙂" * 70,
    "x" * 300, "x" * 70_000, "/subscriptions/../..", "%2F", "a\nb", "default", "redis",
    "redisEnterprise", SUB.upper(), "{" + SUB + "}"])
NUMBERS = st.integers() | st.floats() | st.sampled_from(
    [0, -1, 29, 30, 86400, 86401, 30.0, 30.5, 10 ** 30, 2 ** 63, -(2 ** 63), 1e308])
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)


def _deep(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


ODD_VALUES = JSON | st.builds(_deep, st.integers(1, 40), SCALARS) | st.sampled_from(
    [[CLASSIC] * 51, [CLASSIC, CLASSIC.upper()], [DB] * 3, list(range(60)), {"": None},
     {"subscriptionId": SUB, "tags": {f"t{i}": "v" for i in range(16)}},
     {"subscriptionId": SUB, "tags": {"a": "1", "A": "2"}},
     {"subscriptionId": SUB, "tags": {}, "all": True},
     {"subscriptionId": SUB, "resourceGroup": None, "all": True},
     {"subscriptionId": SUB, "all": True, "kinds": ["redis", "redis"]},
     {"subscriptionId": SUB, "all": 1}, {"subscriptionId": SUB, "all": "true"}])


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid form, then a few mutations of its fields."""
    doc = dict(draw(st.sampled_from(VALID)))
    if draw(st.booleans()):
        doc.update(draw(st.dictionaries(st.sampled_from(list(OPTIONAL)),
                                        st.sampled_from(list(OPTIONAL.values())), max_size=2)))
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["set", "drop", "extra", "nested"]))
        if how == "set":
            doc[draw(st.sampled_from(REQUEST_FIELDS))] = draw(ODD_VALUES)
        elif how == "drop" and doc:
            doc.pop(draw(st.sampled_from(sorted(doc))))
        elif how == "extra":
            doc[draw(TEXT)] = draw(SCALARS)
        elif how == "nested" and isinstance(doc.get("selector"), dict):
            doc["selector"] = {**doc["selector"],
                               draw(st.sampled_from(["subscriptionId", "resourceGroup", "tags",
                                                     "all", "kinds", "extra"])): draw(ODD_VALUES)}
    return doc


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """The document's bytes, sometimes broken on the wire."""
    data = _dump(draw(documents()))
    how = draw(st.sampled_from(["plain"] * 4 + ["bom", "byte", "utf16", "dupkey", "cut",
                                                "digits", "nan"]))
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "byte":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) \
            + data[at:]
    if how == "utf16":
        return data.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    if how == "dupkey" and data.startswith(b"{") and len(data) > 2:
        key = draw(st.sampled_from(["resourceId", "requestId", "selector", "timeoutSeconds"]))
        return b'{"' + key.encode() + b'": 1, "' + key.encode() + b'": 2, ' + data[1:]
    if how == "cut":
        return data[:draw(st.integers(0, len(data)))]
    if how == "digits":
        return b'{"timeoutSeconds": ' + b"9" * 5000 + b", " + data[1:]
    if how == "nan":
        return b'{"timeoutSeconds": NaN, ' + data[1:]
    return data


PROPERTY = st.none() | st.sampled_from(["", " ", "q", "redis-flush-polls", "a/b", "$dlq",
                                        "x" * 300, "\u00e9", "\u2028", "q\nq"]) | \
    st.text(max_size=20)


def _harness(fuzz_arm: ScriptedArm) -> Harness:
    clock = FakeClock()
    fuzz_arm.unexpected.clear()  # every ARM call is answered 404: the flow is what is tested
    return Harness.create(clock, MemoryBus(clock), fuzz_arm, timeouts=(1.0, 2.0))


@FUZZ
@given(body=bodies(), message_id=st.sampled_from(["m-1", "", "x" * 128, "a b", "\u00e9"])
       | st.text(min_size=1, max_size=20), reply_to=PROPERTY, session=PROPERTY,
       correlation=PROPERTY)
def test_any_request_message_ends_in_events_and_a_completed_message(
        fuzz_arm: ScriptedArm, body: bytes, message_id: str, reply_to: str | None,
        session: str | None, correlation: str | None) -> None:
    h = _harness(fuzz_arm)
    try:
        h.send_request(body, message_id=message_id or "m", reply_to=reply_to,
                       reply_to_session_id=session, correlation_id=correlation)
        done = h.run(allow_errors=True)
        failed = [d for d in done if d.error is not None]
        assert not failed, f"a function raised: {failed[0].error!r}"
        events = [json.loads(e.message.body) for e in h.events()]
        finals = [e for e in events if e["data"]["status"] in
                  ("Succeeded", "Failed", "Canceled", "TimedOut", "Rejected")]
        assert finals, "no completion event"
        parsed = parse_request(Delivery(body, message_id or "m", reply_to=reply_to),
                               default_timeout=h.settings.timeout_seconds,
                               allowed_scopes=h.settings.allowed_scopes,
                               max_targets=h.settings.max_targets,
                               reserved_queues=(h.settings.request_queue,
                                                h.settings.poll_queue,
                                                h.settings.events_topic),
                               now=h.clock.now())
        if isinstance(parsed, Rejection):
            (event,) = finals
            error = event["data"]["error"]
            assert event["data"]["status"] == "Rejected"
            assert error["target"] == parsed.field and error["target"]
            assert error["message"].startswith(f"{parsed.field}: ")
    finally:
        install(None)
