"""Property-based fuzzing of the poll queue, end to end through PollOrchestrator.

A poll message is the app's own, but anyone with send rights on the queue can forge one, and a
release reads the messages of another (docs/design.md, "Poll message", "Security rules").
A message that `RunState.from_json` refuses is unreadable: it raises and is dead-lettered after
MaxDeliveryCount for a person to look at (README, "Reliability"). One it accepts must never
make the step raise (that would retry it into the dead-letter queue after its ARM calls and
events), and must flush nothing outside REDISFLUSH_ALLOWED_SCOPES.
"""
from __future__ import annotations

import copy
import json
import os
import traceback
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redisflush.bus import OutboundMessage
from redisflush.core.request import Delivery, FlushRequest, parse_request
from redisflush.core.state import RunState, initial
from redisflush.functions import install
from tests.support.harness import CACHE, RG, SCOPE, SUB, Harness, database_id
from tests.support.memory_bus import FakeClock, MemoryBus
from tests.support.scripted_arm import (
    Answer,
    ScriptedArm,
    database_body,
    list_path,
    page,
)

EXPLORE = bool(os.environ.get("FUZZ_RANDOM"))
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")), deadline=None,
                derandomize=not EXPLORE, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TEXT = st.text(max_size=30) | st.sampled_from([
    "", "\ud800", "\u2028", "x" * 300, "2030-01-01T00:00:00Z", "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999+14:00", "2024-05-01T12:00:00-23:59", "not a date",
    "http://evil.example/x", "https://management.azure.com/x", "poll", "claim", "read",
    "done", "post", "open", "resolve", "run", "location", "azure-asyncoperation", "redis",
    "redisEnterprise", "Succeeded", "Failed", "InProgress", SUB, RG, CACHE])
MOMENTS = st.sampled_from([
    "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59", "1970-01-01", "2024-05-01T12:00:00.5Z", "2024-05-01T12:00:00-23:59",
    "2024-05-01T11:59:00Z", "2024-05-02T12:00:00Z", "2024-05-01T12:29:59Z"])
NUMBERS = st.integers() | st.floats() | st.sampled_from(
    [0, -1, 1, 2, 10 ** 20, -(10 ** 20), 2 ** 63, 1e308, float("inf"), float("nan")])
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8)


@pytest.fixture(scope="module")
def bases(fuzz_arm: ScriptedArm) -> list[dict[str, Any]]:
    """Poll states of every phase, as the app writes them, with ARM answering for each."""
    op = fuzz_arm.new_operation(SUB)
    fuzz_arm.on_flush(SUB, RG, CACHE, then=Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    fuzz_arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    fuzz_arm.on("GET", database_id("amr-1") + "?api-version=2025-07-01",
           then=Answer(200, {}, database_body(SUB, RG, "amr-1")))
    fuzz_arm.on("POST", database_id("amr-1") + "/flush?api-version=2025-07-01",
           then=Answer(200, {}, b""))
    fuzz_arm.on("GET", list_path(SUB, RG, "redis"), then=Answer(200, {}, page([])))
    clock = FakeClock()
    h = Harness.create(clock, MemoryBus(clock), fuzz_arm, timeouts=(1.0, 2.0))
    h.send_request(requestId="fz-poll")
    h.run(limit=1)
    (waiting,) = h.bus.active[h.settings.poll_queue]
    docs = [waiting.body_json]
    for body in ({"resourceId": database_id("amr-1"), "requestId": "fz-read"},
                 {"selector": {"subscriptionId": SUB, "resourceGroup": RG, "all": True,
                               "kinds": ["redis"]}, "requestId": "fz-sel"},
                 {"resourceIds": [database_id("amr-1"), f"{SCOPE}/providers/Microsoft.Cache/"
                                  f"Redis/{CACHE}"], "requestId": "fz-two"}):
        parsed = parse_request(Delivery(json.dumps(body).encode(), body["requestId"],
                                        enqueued_at=clock.now()),
                               default_timeout=1800, allowed_scopes=(SCOPE,), max_targets=50,
                               now=clock.now())
        assert isinstance(parsed, FlushRequest)
        docs.append(json.loads(initial(parsed, clock.now()).to_json()))
    install(None)
    return docs


TOP = ["v", "requestId", "requestedAt", "correlationId", "replyTo", "replyToSessionId",
       "reason", "requestedBy", "messageId", "replyTag", "deadline", "fingerprint", "phase",
       "step", "selector", "pendingLists", "found", "ignored", "pages", "listFailures", "due",
       "armRequests", "noteStatus", "notePercent", "reported", "linkedRequest", "listPaced",
       "at", "targets"]
TARGET = ["target", "i", "phase", "due", "linked", "pollUrl", "pollKind", "acceptedAt",
          "lastStatus", "lastOperation", "polls", "failures", "badPolls", "armRequests",
          "paced", "outcome", "reported", "noted", "runningAt", "projectedEnd", "busy",
          "locationError", "locationErrors", "inDoubt", "refFailures"]
INNER = ["kind", "subscriptionId", "resourceGroup", "name", "database"]
OUTCOME = {"status": "Succeeded", "completedAt": "2024-05-01T12:00:00Z", "error": None,
           "operation": None, "acceptedAt": None, "armRequests": 1, "linked": []}


@st.composite
def mutated(draw: st.DrawFn, bases: list[dict[str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "target", "inner", "outcome", "selector",
                                      "time"]))
        value = draw(JSON)
        targets = doc.get("targets")
        if where == "time":  # a moment out of range, before the deadline or long after it
            field = draw(st.sampled_from(["requestedAt", "deadline", "due", "at", "t.due",
                                          "t.acceptedAt", "t.runningAt"]))
            holder = doc if not field.startswith("t.") else (
                targets[0] if isinstance(targets, list) and targets and
                isinstance(targets[0], dict) else {})
            holder[field.removeprefix("t.")] = draw(MOMENTS)
            continue
        if where == "top":
            key = draw(st.sampled_from(TOP))
        elif isinstance(targets, list) and targets and isinstance(targets[0], dict):
            entry = targets[0]
            if where == "target":
                doc, key = entry, draw(st.sampled_from(TARGET))
            elif where == "inner" and isinstance(entry.get("target"), dict):
                doc_inner = entry["target"]
                doc_inner[draw(st.sampled_from(INNER))] = value
                continue
            elif where == "outcome":
                entry["phase"] = "done"
                entry["outcome"] = {**OUTCOME, draw(st.sampled_from(sorted(OUTCOME))): value}
                continue
            else:
                continue
        elif where == "selector" and isinstance(doc.get("selector"), dict):
            doc["selector"][draw(st.sampled_from(["subscriptionId", "resourceGroup", "tags",
                                                  "all", "kinds"]))] = value
            continue
        else:
            continue
        if draw(st.booleans()) and key in doc:
            del doc[key]
        else:
            doc[key] = value
    return doc


def _root(doc: dict[str, Any]) -> dict[str, Any]:
    return doc


def test_the_fuzzed_fields_are_every_field_a_poll_message_has(bases: list[dict[str, Any]]
                                                               ) -> None:
    """A field added to the poll message is fuzzed too (`refFailures` was left out)."""
    assert {key for doc in bases for key in doc} == set(TOP)
    assert {key for doc in bases for t in doc["targets"] for key in t} == set(TARGET)


@FUZZ
@given(data=st.data())
def test_a_poll_message_is_unreadable_or_its_step_never_raises(
        fuzz_arm: ScriptedArm, bases: list[dict[str, Any]], data: st.DataObject) -> None:
    doc = data.draw(mutated(bases))
    body = json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
    clock = FakeClock()
    fuzz_arm.unexpected.clear()
    before = len(fuzz_arm.requests)
    h = Harness.create(clock, MemoryBus(clock), fuzz_arm, timeouts=(1.0, 2.0))
    try:
        try:
            RunState.from_json(body)
            readable = True
        except ValueError:
            readable = False
        h.bus.inject(h.settings.poll_queue, OutboundMessage(body, "fz:poll:1"))
        done = h.run(allow_errors=True, max_steps=3000)
        errors = [d.error for d in done if d.error is not None]
        if readable:
            assert not errors, "a readable poll message raised: " + "".join(
                traceback.format_exception(errors[0])[-6:])
        else:
            assert errors and all(isinstance(e, ValueError) for e in errors)
            assert h.events() == [] and len(fuzz_arm.requests) == before
        for seen in fuzz_arm.requests[before:]:
            if seen.method == "POST":
                assert seen.raw_path.startswith(SCOPE + "/"), seen.raw_path
    finally:
        install(None)


# --- what the fuzzing found, one example each ----------------------------------------------

def _waiting_poll(h: Harness) -> Any:
    """The poll message a one-cache request leaves on the queue after its POST (202)."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    h.send_request(requestId="forged")
    h.run(limit=1)
    (waiting,) = h.bus.active[h.settings.poll_queue]
    return waiting


@pytest.mark.parametrize("field, value", [
    ("requestId", 7), ("correlationId", ["x"]), ("target.outcome.error", "text")])
def test_a_poll_message_with_a_field_of_another_type_is_unreadable_before_any_call(
        h: Harness, field: str, value: Any) -> None:
    """A forged field the app never writes (a requestId that is a number, an error that is
    text) was read as it came and raised later, after the step's ARM read and ledger record
    (a TypeError or a bus refusal, retried into the dead-letter queue); it is unreadable at
    once, with no call made."""
    waiting = _waiting_poll(h)
    state = waiting.body_json
    target = state["targets"][0]
    if field.startswith("target.outcome."):
        target.update(phase="done", outcome={
            "status": "Succeeded", "completedAt": "2024-05-01T12:00:00Z", "armRequests": 1,
            field.rsplit(".", 1)[1]: value})
    elif field.startswith("target."):
        target[field.split(".", 1)[1]] = value
    else:
        state[field] = value
    waiting.message = replace(waiting.message, body=json.dumps(state).encode())
    before = len(h.arm.requests)

    done = h.run(allow_errors=True)

    assert done and all(isinstance(d.error, ValueError) and "invalid poll state" in
                        str(d.error) for d in done)
    assert len(h.arm.requests) == before and h.events() == []
    assert h.bus.dead_letters[h.settings.poll_queue]


@pytest.mark.parametrize("how", ["reported", "no targets"])
def test_a_poll_message_with_nothing_left_to_follow_ends_its_chain(h: Harness, how: str
                                                                   ) -> None:
    """A run whose every target is done and already reported (or that has none) re-queued
    itself for the same moment, forever; it ends."""
    waiting = _waiting_poll(h)
    state = waiting.body_json
    if how == "reported":
        state["reported"] = True
        state["targets"][0].update(phase="done", reported=True, outcome={
            "status": "Succeeded", "completedAt": "2024-05-01T12:00:00Z", "armRequests": 1})
    else:
        state["targets"] = []
    waiting.message = replace(waiting.message, body=json.dumps(state).encode())

    done = h.run(max_steps=20)

    assert len(done) == 1 and done[0].error is None
    assert len(h.polls()) == 1  # the forged one only: nothing re-queued


def test_a_poll_message_due_after_its_deadline_ends_at_the_deadline(h: Harness) -> None:
    """A target due after the deadline (no step of the app's own writes one) sent its chain
    back for the deadline, at once, again and again until that due came (a day here); it is
    read at the deadline and ends."""
    waiting = _waiting_poll(h)
    state = waiting.body_json
    state["targets"][0]["due"] = "2024-05-02T12:00:00Z"  # the deadline is 2024-05-01 12:30
    waiting.message = replace(waiting.message, body=json.dumps(state).encode())

    h.run(max_steps=100)

    (event,) = h.events()
    assert json.loads(event.message.body)["data"]["status"] == "Succeeded"


@pytest.mark.parametrize("field", ["requestedAt", "deadline"])
def test_a_poll_message_with_a_moment_out_of_range_is_unreadable(h: Harness, field: str
                                                                   ) -> None:
    """A year 9999 deadline (or a year 1 time in +14:00) overflowed the first sum made with
    it, after the step's ARM read; it is unreadable at once."""
    waiting = _waiting_poll(h)
    state = waiting.body_json
    state[field] = "9999-12-31T23:59:59-14:00"
    waiting.message = replace(waiting.message, body=json.dumps(state).encode())
    before = len(h.arm.requests)

    done = h.run(allow_errors=True)

    assert all(isinstance(d.error, ValueError) for d in done)
    assert len(h.arm.requests) == before and h.events() == []
