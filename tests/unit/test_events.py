"""core/events.py: the per-cache FlushCompleted, the per-request RequestCompleted, progress
notes, and their Service Bus messages, field by field (docs/design.md, "Completion events")."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

import pytest

from redisflush.core.events import (
    CONTENT_TYPE,
    EVENT_TYPE,
    FLUSH_COMPLETED,
    PROGRESS,
    REJECTED_SOURCE,
    REQUEST_COMPLETED,
    STATUSES,
    Outcome,
    aggregate_status,
    cache_event_id,
    event_message,
    flush_completed,
    iso,
    parse_iso,
    progress_note,
    properties,
    request_completed,
)
from redisflush.core.fit import MAX_MESSAGE_BYTES
from redisflush.core.outbound import OutboundMessage
from redisflush.core.request import Origin
from redisflush.core.targets import make_enterprise, make_target, parse_resource_id

from .helpers import CACHE, CLUSTER, DATABASE_ID, RESOURCE_ID, RG, SUB, T0, at, db_id, rid

TARGET = make_target(SUB, RG, CACHE)
DATABASE = make_enterprise(SUB, RG, CLUSTER)
ORIGIN = Origin("req-1", T0, correlation_id="corr-9", reply_to="redis-flush-replies",
                reply_to_session_id="sess-1", reason="release 42", requested_by="pipeline")
OPERATION = {"id": "/subscriptions/x/operationresults/op-1", "name": "op-1",
             "status": "Succeeded", "percentComplete": 100,
             "startTime": "2030-01-01T12:00:01Z", "endTime": "2030-01-01T12:00:05Z",
             "error": None}
SUCCEEDED = Outcome("Succeeded", at(6.25), None, OPERATION, at(1), 3)
SCOPE = f"/subscriptions/{SUB}/resourceGroups/{RG}"


def succeeded_event(origin: Origin = ORIGIN, **kwargs: object) -> dict:
    return flush_completed(origin, TARGET, SUCCEEDED, **kwargs)


# --- FlushCompleted --------------------------------------------------------------------------

def test_flush_completed_exact_shape():
    assert succeeded_event() == {
        "specversion": "1.0",
        "type": "RedisFlush.FlushCompleted",
        "source": RESOURCE_ID,
        "subject": CACHE,
        "id": "req-1:completed",
        "time": "2030-01-01T12:00:06.250Z",
        "datacontenttype": "application/json",
        "data": {
            "requestId": "req-1",
            "status": "Succeeded",
            "resourceId": RESOURCE_ID,
            "kind": "redis",
            "linkedDatabaseIds": [],
            "operation": OPERATION,
            "error": None,
            "requestedAt": "2030-01-01T12:00:00.000Z",
            "acceptedAt": "2030-01-01T12:00:01.000Z",
            "completedAt": "2030-01-01T12:00:06.250Z",
            "durationSeconds": 6.25,
            "armRequests": 3,
            "reason": "release 42",
            "requestedBy": "pipeline",
        },
    }


def test_flush_completed_for_a_managed_redis_database():
    outcome = dataclasses.replace(SUCCEEDED, linked=(db_id("us", rg="rg-us"),))
    event = flush_completed(ORIGIN, DATABASE, outcome)
    assert (event["source"], event["subject"]) == (DATABASE_ID, f"{CLUSTER}/default")
    assert event["data"]["kind"] == "redisEnterprise"
    assert event["data"]["resourceId"] == DATABASE_ID
    assert event["data"]["linkedDatabaseIds"] == [db_id("us", rg="rg-us")]


@pytest.mark.parametrize("index, count, batch_flag, event_id, batch", [
    (0, 1, None, "req-1:completed", None),  # a one-target request: as before
    (0, 2, None, "req-1:completed:0", {"index": 0, "count": 2}),
    (1, 2, None, "req-1:completed:1", {"index": 1, "count": 2}),
    (49, 50, None, "req-1:completed:49", {"index": 49, "count": 50}),
    # a selector that matched one cache is still a batch: RequestCompleted takes the plain id
    (0, 1, True, "req-1:completed:0", {"index": 0, "count": 1}),
    (0, 1, False, "req-1:completed", None),
])
def test_single_vs_batch_ids(index, count, batch_flag, event_id, batch):
    event = succeeded_event(index=index, count=count, batch=batch_flag)
    assert event["id"] == event_id
    assert cache_event_id(ORIGIN, index, batch is not None) == event_id
    assert event["data"].get("batch") == batch


def test_explicit_event_id_wins():
    assert succeeded_event(event_id="req-1:reused:abc:completed")["id"] == \
        "req-1:reused:abc:completed"


@pytest.mark.parametrize("status", STATUSES)
def test_every_status_is_a_valid_event(status):
    error = None if status == "Succeeded" else {"code": "X", "message": "m", "target": "t",
                                                "details": [{"code": "Y"}]}
    event = flush_completed(ORIGIN, TARGET, Outcome(status, at(2), error))
    assert event["data"]["status"] == status
    assert event["data"]["error"] == error
    assert event["data"]["acceptedAt"] is None and event["data"]["operation"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["time"])


@pytest.mark.parametrize("status", ["succeeded", "Running", "", "Cancelled", "Accepted"])
def test_unknown_status_is_refused(status):
    with pytest.raises(ValueError):
        flush_completed(ORIGIN, TARGET, Outcome(status, T0))


def test_event_time_is_utc_whatever_the_input_zone():
    plus2 = dt.timezone(dt.timedelta(hours=2))
    event = flush_completed(ORIGIN, TARGET, Outcome("Succeeded", dt.datetime(
        2030, 1, 1, 14, 0, 3, tzinfo=plus2)))
    assert event["time"] == event["data"]["completedAt"] == "2030-01-01T12:00:03.000Z"
    assert event["data"]["durationSeconds"] == 3.0


def test_duration_is_never_negative():
    event = flush_completed(Origin("r", at(10)), TARGET, Outcome("Failed", T0, {"code": "E"}))
    assert event["data"]["durationSeconds"] == 0.0


def test_rejected_without_a_known_target():
    origin = Origin("msg-abc", T0)
    error = {"code": "InvalidRequest", "message": "body: must be a JSON object",
             "target": "body"}
    event = flush_completed(origin, None, Outcome("Rejected", at(0.5), error))
    assert event["source"] == REJECTED_SOURCE
    assert "subject" not in event
    assert event["id"] == "msg-abc:completed"
    assert (event["data"]["resourceId"], event["data"]["kind"]) == (None, None)
    assert event["data"]["error"] == error
    assert properties(event, origin, None) == {"type": FLUSH_COMPLETED, "status": "Rejected",
                                               "requestId": "msg-abc"}


# --- aggregate status -------------------------------------------------------------------------

@pytest.mark.parametrize("statuses, expected", [
    (["Succeeded"], "Succeeded"),
    (["Succeeded"] * 50, "Succeeded"),
    (["Succeeded", "Failed"], "Failed"),
    (["Failed", "TimedOut", "Canceled"], "Failed"),
    (["Canceled", "TimedOut", "Failed"], "Failed"),  # priority, not the order seen
    (["Canceled", "TimedOut", "Succeeded"], "TimedOut"),
    (["TimedOut", "Canceled"], "TimedOut"),
    (["Succeeded", "Canceled"], "Canceled"),
    (["Canceled"], "Canceled"),
    (["TimedOut"] * 3, "TimedOut"),
    (["Rejected", "Succeeded"], "Failed"),  # a target refused alone fails the request
    (["Rejected", "Canceled"], "Canceled"),
])
def test_aggregate_status(statuses, expected):
    assert aggregate_status(statuses) == expected


def test_aggregate_of_nothing_is_not_a_success():
    assert aggregate_status([]) != "Succeeded"


# --- RequestCompleted -------------------------------------------------------------------------

def results(*statuses: str) -> list:
    out = []
    for i, status in enumerate(statuses):
        error = None if status == "Succeeded" else {"code": f"E{i}", "message": "m",
                                                    "details": [{"code": "inner"}]}
        out.append((make_target(SUB, RG, f"c{i}"), Outcome(status, at(i + 1), error)))
    return out


def test_request_completed_exact_shape():
    event = request_completed(ORIGIN, SCOPE, results("Succeeded", "Failed"),
                              completed_at=at(9.5), arm_requests=7)
    assert event == {
        "specversion": "1.0", "type": "RedisFlush.RequestCompleted", "source": SCOPE,
        "subject": SCOPE, "id": "req-1:completed", "time": "2030-01-01T12:00:09.500Z",
        "datacontenttype": "application/json",
        "data": {
            "requestId": "req-1", "status": "Failed",
            "counts": {"Succeeded": 1, "Failed": 1},
            "results": [
                {"resourceId": rid("c0"), "status": "Succeeded", "error": None,
                 "durationSeconds": 1.0},
                {"resourceId": rid("c1"), "status": "Failed",
                 "error": {"code": "E1", "message": "m"},  # short: code and message only
                 "durationSeconds": 2.0}],
            "error": None,
            "requestedAt": "2030-01-01T12:00:00.000Z", "completedAt": "2030-01-01T12:00:09.500Z",
            "durationSeconds": 9.5, "armRequests": 7, "reason": "release 42",
            "requestedBy": "pipeline"}}


@pytest.mark.parametrize("statuses, counts", [
    (["Succeeded"] * 3, {"Succeeded": 3}),
    (["Succeeded", "TimedOut", "TimedOut", "Canceled"],
     {"Succeeded": 1, "TimedOut": 2, "Canceled": 1}),
    (["Failed"] * 50, {"Failed": 50}),
])
def test_request_completed_counts_and_status(statuses, counts):
    event = request_completed(ORIGIN, SCOPE, results(*statuses), completed_at=at(60),
                              arm_requests=1)
    assert event["data"]["counts"] == counts
    assert event["data"]["status"] == aggregate_status(statuses)
    assert [r["status"] for r in event["data"]["results"]] == statuses


def test_request_completed_rejected_with_its_own_error():
    error = {"code": "SelectorRejected", "message": "selector: matched 0 caches"}
    event = request_completed(ORIGIN, f"/subscriptions/{SUB}", [], completed_at=at(1),
                              arm_requests=2, status="Rejected", error=error)
    assert event["data"]["status"] == "Rejected"
    assert event["data"]["error"] == error
    assert (event["data"]["counts"], event["data"]["results"]) == ({}, [])


def test_request_completed_lists_every_target_up_to_64():
    event = request_completed(ORIGIN, SCOPE, results(*["Succeeded"] * 64), completed_at=at(1),
                              arm_requests=64)
    assert len(event["data"]["results"]) == 64


@pytest.mark.parametrize("n", [65, 100, 500])
def test_request_completed_lists_every_target(n):
    # REDISFLUSH_MAX_TARGETS may be up to 500: every target has its result
    event = request_completed(ORIGIN, SCOPE, results(*["Succeeded"] * n), completed_at=at(1),
                              arm_requests=n)
    assert event["data"]["counts"] == {"Succeeded": n}
    assert len(event["data"]["results"]) == n


# --- application properties ---------------------------------------------------------------------

def test_properties_of_a_cache_event():
    props = properties(succeeded_event(), ORIGIN, TARGET)
    assert props == {"type": FLUSH_COMPLETED, "status": "Succeeded", "cacheName": CACHE,
                     "kind": "redis", "resourceGroup": RG, "subscriptionId": SUB,
                     "requestId": "req-1", "correlationId": "corr-9"}
    assert all(isinstance(v, str) for v in props.values())


def test_properties_of_a_database_event_name_the_cluster():
    event = flush_completed(ORIGIN, DATABASE, SUCCEEDED)
    props = properties(event, ORIGIN, DATABASE)
    assert (props["cacheName"], props["kind"]) == (CLUSTER, "redisEnterprise")


@pytest.mark.parametrize("scope, sub, rg", [
    (SCOPE, SUB, RG), (f"/subscriptions/{SUB}", SUB, None), ("/subscriptions", None, None),
    (f"/subscriptions/{SUB}/resourcegroups/Other", SUB, "Other"),
])
def test_properties_of_a_request_event_have_no_cache_name(scope, sub, rg):
    event = request_completed(ORIGIN, scope, results("Succeeded", "Succeeded"),
                              completed_at=at(3), arm_requests=4)
    props = properties(event, ORIGIN, None)
    assert "cacheName" not in props and "kind" not in props
    assert props["type"] == REQUEST_COMPLETED and props["status"] == "Succeeded"
    assert props["requestId"] == "req-1" and props["correlationId"] == "corr-9"
    assert props.get("subscriptionId") == sub and props.get("resourceGroup") == rg


def test_no_correlation_property_when_the_request_had_none():
    origin = dataclasses.replace(ORIGIN, correlation_id=None)
    assert "correlationId" not in properties(succeeded_event(origin), origin, TARGET)


# --- messages -----------------------------------------------------------------------------------

def test_topic_message_and_reply_copy():
    event = succeeded_event()
    topic = event_message(event, ORIGIN, TARGET)
    reply = event_message(event, ORIGIN, TARGET, session=True)
    assert isinstance(topic, OutboundMessage) and isinstance(reply, OutboundMessage)
    assert json.loads(topic.body) == event
    assert b'", "' not in topic.body and b'": ' not in topic.body  # compact JSON
    assert topic.message_id == "req-1:completed" == event["id"]
    assert topic.content_type == CONTENT_TYPE == "application/cloudevents+json"
    assert topic.subject == EVENT_TYPE == FLUSH_COMPLETED  # Subject = the event type
    assert topic.correlation_id == "req-1"  # CorrelationId = requestId
    assert dict(topic.application_properties) == properties(event, ORIGIN, TARGET)
    assert topic.session_id is None and topic.scheduled_at is None
    assert reply.session_id == "sess-1"  # SessionId = ReplyToSessionId
    for name in ("body", "message_id", "content_type", "subject", "correlation_id",
                 "application_properties"):
        assert getattr(reply, name) == getattr(topic, name)


def test_reply_copy_without_session_id_uses_the_request_id():
    origin = Origin("req-3", T0, reply_to="replies")
    reply = event_message(succeeded_event(origin), origin, TARGET, session=True)
    assert reply.session_id == "req-3"


def test_request_event_message():
    event = request_completed(ORIGIN, SCOPE, results("Succeeded", "Canceled"),
                              completed_at=at(3), arm_requests=4)
    message = event_message(event, ORIGIN, None)
    assert message.subject == REQUEST_COMPLETED
    assert message.message_id == "req-1:completed"
    assert json.loads(message.body) == event
    assert message.application_properties["status"] == "Canceled"


# --- progress notes -----------------------------------------------------------------------------

def test_progress_note_goes_to_the_waiting_session():
    finished = [{"index": 1, "resourceId": rid("c1"), "name": "c1", "status": "Succeeded",
                 "error": None, "durationSeconds": 2.0}]
    note = progress_note(ORIGIN, status="Running", percent=None, targets=3,
                         counts={"Succeeded": 1}, finished=finished, step=4, now=at(4),
                         source=SCOPE)
    body = json.loads(note.body)
    assert body["type"] == PROGRESS == note.subject == "RedisFlush.FlushProgress"
    assert note.message_id == body["id"] == "req-1:progress:4"
    assert (note.session_id, note.correlation_id) == ("sess-1", "req-1")
    assert note.content_type == CONTENT_TYPE
    assert body["source"] == SCOPE and body["time"] == "2030-01-01T12:00:04.000Z"
    assert body["data"] == {"requestId": "req-1", "status": "Running", "percentComplete": None,
                            "targets": 3, "counts": {"Succeeded": 1}, "finished": finished}


# --- sizes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["e" * 600_000, "é" * 300_000, "\x00" * 100_000])
def test_a_huge_error_still_fits_one_message(text):
    outcome = Outcome("Failed", at(1), {"code": "Big", "message": text,
                                        "details": [{"message": text}] * 10})
    event = flush_completed(ORIGIN, TARGET, outcome, index=3, count=50)
    assert len(event_message(event, ORIGIN, TARGET).body) <= MAX_MESSAGE_BYTES
    assert event["data"]["error"]["code"] == "Big"
    assert event["data"]["batch"] == {"index": 3, "count": 50}
    assert event["data"]["requestId"] == "req-1"


def test_nan_and_huge_numbers_never_reach_an_event():
    operation = {"status": "Failed", "percentComplete": float("nan"), "x": float("inf"),
                 "big": 10 ** 400}
    event = flush_completed(ORIGIN, TARGET, Outcome("Failed", at(1), {"code": "E"}, operation))
    body = event_message(event, ORIGIN, TARGET).body
    json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in an event"))
    assert event["data"]["operation"]["big"] is None


@pytest.mark.parametrize("char", ["漢", "é", "😀"])
def test_fifty_non_ascii_errors_fit_one_request_message(char):
    per = 4096 // len(char.encode())  # each error as target_end leaves it (ERROR_BYTES)
    rows = [(make_target(SUB, RG, f"c{i}"),
             Outcome("Failed", at(1), {"code": "E", "message": char * (per - 40)}))
            for i in range(50)]
    event = request_completed(ORIGIN, SCOPE, rows, completed_at=at(2), arm_requests=50)
    assert len(event_message(event, ORIGIN, None).body) <= MAX_MESSAGE_BYTES


# --- outcome and time round trips ----------------------------------------------------------------

@pytest.mark.parametrize("outcome", [
    Outcome("Succeeded", at(1)),
    Outcome("Failed", at(2.5), {"code": "E", "message": "m"}, {"status": "Failed"}, at(1), 4,
            (db_id("us"),)),
])
def test_outcome_round_trip(outcome):
    assert Outcome.from_json(json.loads(json.dumps(outcome.to_json()))) == outcome


@pytest.mark.parametrize("text, moment", [
    ("2030-01-01T12:00:00.000Z", T0), ("2030-01-01T12:00:00Z", T0),
    ("2030-01-01T14:00:00+02:00", T0), ("2030-01-01T12:00:00", T0),
])
def test_parse_iso(text, moment):
    assert parse_iso(text) == moment and parse_iso(text).tzinfo is not None


def test_iso_is_milliseconds_utc():
    assert iso(at(0.1234)) == "2030-01-01T12:00:00.123Z"
    assert iso(None) is None
    assert parse_resource_id(succeeded_event()["source"]) == TARGET


def test_a_request_event_of_fifty_long_errors_keeps_every_cache_and_cuts_the_errors():
    """50 caches, each Failed with a 4 KiB error (the most an outcome keeps) and the longest
    ids: the event must fit, and every cache keeps its entry (status, a code, the start of
    its message): cutting the list dropped half the caches, and `send --wait` then counted
    the ellipsis as a cache ("26 caches" for 50)."""
    rg = "ア" * 90
    results = [(parse_resource_id(db_id("c" * 61 + f"{i:02}", "d" * 63, rg=rg)),
                Outcome("Failed", at(9), {"code": "SomeArmCode", "message": "漢" * 1360,
                                          "details": [{"x": "y" * 1000}]}, None, at(1), 3))
               for i in range(50)]
    event = request_completed(dataclasses.replace(ORIGIN, reason="😀" * 256,
                                                  requested_by="😀" * 256),
                              f"/subscriptions/{SUB}/resourceGroups/{rg}", results,
                              completed_at=at(10), arm_requests=150)
    message = event_message(event, ORIGIN, None, session=True, tag="t" * 12)
    assert len(message.body) <= MAX_MESSAGE_BYTES
    got = event["data"]["results"]
    assert [r["resourceId"] for r in got] == [t.resource_id for t, _ in results]
    assert all(r["status"] == "Failed" and r["error"]["code"] == "SomeArmCode" for r in got)
    assert all(r["error"]["message"].startswith("漢" * 100) for r in got)
    assert all(r["error"]["message"].endswith("…") for r in got)  # cut, and says so
    assert event["data"]["counts"] == {"Failed": 50}
