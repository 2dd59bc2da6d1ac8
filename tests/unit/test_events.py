"""events.py: the CloudEvents completion event and its Service Bus messages, field by field."""
from __future__ import annotations

import dataclasses

import datetime as dt
import json
import re

import pytest

from redisflush.bus import OutboundMessage
from redisflush.events import (CONTENT_TYPE, EVENT_TYPE, PROGRESS_TYPE, REJECTED_SOURCE,
                               STATUSES, completion_event, event_messages, event_properties,
                               progress_message)
from redisflush.messages import Origin
from redisflush.target import CacheTarget

from .helpers import CACHE, RESOURCE_ID, RG, SUB, T0, at

TARGET = CacheTarget(SUB, RG, CACHE)
ORIGIN = Origin("req-1", T0, correlation_id="corr-9", reply_to="redis-flush-replies",
                reply_to_session_id="sess-1", reason="release 42", requested_by="pipeline")
OPERATION = {"id": "/subscriptions/x/operationresults/op-1", "name": "op-1",
             "status": "Succeeded", "percentComplete": 100,
             "startTime": "2030-01-01T12:00:01Z", "endTime": "2030-01-01T12:00:05Z",
             "error": None}


def succeeded_event(origin: Origin = ORIGIN) -> dict:
    return completion_event(origin, TARGET, "Succeeded", operation=OPERATION, error=None,
                            accepted_at=at(1), completed_at=at(6.25), arm_requests=3)


def test_completion_event_exact_shape():
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


@pytest.mark.parametrize("status", STATUSES)
def test_every_status_is_a_valid_event(status):
    error = None if status == "Succeeded" else {"code": "X", "message": "m", "target": "t",
                                                "details": [{"code": "Y"}]}
    event = completion_event(ORIGIN, TARGET, status, operation=None, error=error,
                             accepted_at=None, completed_at=at(2), arm_requests=0)
    assert event["data"]["status"] == status
    assert event["data"]["error"] == error
    assert event["data"]["acceptedAt"] is None and event["data"]["operation"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["time"])


@pytest.mark.parametrize("status", ["succeeded", "Running", "", "Cancelled"])
def test_unknown_status_is_refused(status):
    with pytest.raises(ValueError):
        completion_event(ORIGIN, TARGET, status, operation=None, error=None, accepted_at=None,
                         completed_at=T0, arm_requests=0)


def test_event_time_is_utc_whatever_the_input_zone():
    plus2 = dt.timezone(dt.timedelta(hours=2))
    event = completion_event(ORIGIN, TARGET, "Succeeded", operation=None, error=None,
                             accepted_at=None, completed_at=dt.datetime(2030, 1, 1, 14, 0, 3,
                                                                        tzinfo=plus2),
                             arm_requests=1)
    assert event["time"] == event["data"]["completedAt"] == "2030-01-01T12:00:03.000Z"
    assert event["data"]["durationSeconds"] == 3.0


def test_duration_is_never_negative():
    event = completion_event(Origin("r", at(10)), TARGET, "Failed", operation=None,
                             error={"code": "E", "message": "m"}, accepted_at=None,
                             completed_at=T0, arm_requests=1)
    assert event["data"]["durationSeconds"] == 0.0


def test_rejected_without_a_known_target():
    origin = Origin("msg-abc", T0)
    error = {"code": "InvalidRequest", "message": "body: must be a JSON object",
             "target": "body"}
    event = completion_event(origin, None, "Rejected", operation=None, error=error,
                             accepted_at=None, completed_at=at(0.5), arm_requests=0)
    assert event["source"] == REJECTED_SOURCE
    assert "subject" not in event
    assert event["id"] == "msg-abc:completed"
    assert event["data"]["resourceId"] is None
    assert event["data"]["error"] == error
    assert event["data"]["armRequests"] == 0
    assert event_properties(event, None) == {"status": "Rejected", "requestId": "msg-abc"}


def test_rejected_with_a_known_target():
    error = {"code": "InvalidRequest", "message": "resourceId: is outside the scopes",
             "target": "resourceId"}
    event = completion_event(ORIGIN, TARGET, "Rejected", operation=None, error=error,
                             accepted_at=None, completed_at=at(0.5), arm_requests=0)
    assert (event["source"], event["subject"]) == (RESOURCE_ID, CACHE)
    assert event["data"]["resourceId"] == RESOURCE_ID
    assert event_properties(event, TARGET) == {
        "status": "Rejected", "requestId": "req-1", "cacheName": CACHE, "resourceGroup": RG,
        "subscriptionId": SUB}


def test_application_properties_for_sql_filters():
    props = event_properties(succeeded_event(), TARGET)
    assert props == {"status": "Succeeded", "cacheName": CACHE, "resourceGroup": RG,
                     "subscriptionId": SUB, "requestId": "req-1"}
    assert all(isinstance(v, str) for v in props.values())


def test_topic_message_and_reply_copy():
    event = succeeded_event()
    topic, reply = event_messages(event, ORIGIN, TARGET)
    assert isinstance(topic, OutboundMessage) and isinstance(reply, OutboundMessage)
    assert json.loads(topic.body) == event
    assert topic.message_id == "req-1:completed" == event["id"]
    assert topic.content_type == CONTENT_TYPE == "application/cloudevents+json"
    assert topic.subject == EVENT_TYPE == "RedisFlush.FlushCompleted"
    assert topic.correlation_id == "req-1"  # CorrelationId = requestId
    assert dict(topic.application_properties) == event_properties(event, TARGET, "corr-9")
    assert topic.application_properties["correlationId"] == "corr-9"
    assert topic.session_id is None and topic.scheduled_at is None
    assert reply.session_id == "sess-1"  # SessionId = ReplyToSessionId
    for name in ("body", "message_id", "content_type", "subject", "correlation_id",
                 "application_properties"):
        assert getattr(reply, name) == getattr(topic, name)
    assert reply.scheduled_at is None


def test_no_reply_copy_without_reply_to():
    origin = Origin("req-2", T0, reply_to_session_id="ignored")
    topic, reply = event_messages(succeeded_event(origin), origin, TARGET)
    assert reply is None
    assert topic.message_id == "req-2:completed"


def test_reply_copy_without_session_id_uses_the_request_id():
    origin = Origin("req-3", T0, reply_to="replies")
    _, reply = event_messages(succeeded_event(origin), origin, TARGET)
    assert reply is not None and reply.session_id == "req-3"


def test_rejected_event_messages_without_target():
    origin = Origin("msg-x", T0, reply_to="replies", reply_to_session_id="s")
    event = completion_event(origin, None, "Rejected", operation=None,
                             error={"code": "InvalidRequest", "message": "m", "target": "body"},
                             accepted_at=None, completed_at=T0, arm_requests=0)
    topic, reply = event_messages(event, origin, None)
    assert dict(topic.application_properties) == {"status": "Rejected", "requestId": "msg-x"}
    assert reply is not None and reply.session_id == "s"
    assert json.loads(reply.body)["source"] == REJECTED_SOURCE


def test_event_body_is_compact_json_of_the_event():
    event = succeeded_event()
    topic, _ = event_messages(event, ORIGIN, TARGET)
    assert topic.body == json.dumps(event, separators=(",", ":")).encode()


def test_progress_message_goes_to_the_waiting_session_only():
    note = progress_message(ORIGIN, TARGET, "InProgress", {"percentComplete": 40}, 3, at(4))
    assert note is not None
    body = json.loads(note.body)
    assert body["type"] == PROGRESS_TYPE and note.subject == PROGRESS_TYPE
    assert note.message_id == body["id"] == "req-1:progress:3"
    assert note.session_id == "sess-1" and note.correlation_id == "req-1"
    assert note.content_type == CONTENT_TYPE
    assert body["data"] == {"requestId": "req-1", "status": "InProgress", "percentComplete": 40}
    assert progress_message(Origin("r", T0), TARGET, "InProgress", None, 1, T0) is None


def test_the_request_correlation_id_travels_as_a_property_of_both_copies():
    origin = dataclasses.replace(ORIGIN, correlation_id="pipeline-run-77",
                                 reply_to="redis-flush-replies")
    event = completion_event(origin, TARGET, "Succeeded", operation=None, error=None,
                             accepted_at=None, completed_at=origin.requested_at,
                             arm_requests=1)
    topic, reply = event_messages(event, origin, TARGET)
    assert topic.application_properties["correlationId"] == "pipeline-run-77"
    assert reply is not None and reply.application_properties["correlationId"] == \
        "pipeline-run-77"
    assert topic.correlation_id == origin.request_id  # the message's own CorrelationId


def test_no_correlation_property_when_the_request_had_none():
    event = completion_event(ORIGIN, TARGET, "Succeeded", operation=None, error=None,
                             accepted_at=None, completed_at=ORIGIN.requested_at, arm_requests=1)
    topic, _ = event_messages(event, dataclasses.replace(ORIGIN, correlation_id=None), TARGET)
    assert "correlationId" not in topic.application_properties
