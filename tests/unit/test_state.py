"""core/state.py: the poll state v2 (one chain per request, one entry per target), its first
value, and its round trip through the poll message (docs/design.md, "Poll message")."""
from __future__ import annotations

import dataclasses
import json

import pytest

from redisflush.core.events import Outcome
from redisflush.core.ledger_rules import digest
from redisflush.core.request import Delivery, FlushRequest, Origin, parse_request
from redisflush.core.selector import parse_selector
from redisflush.core.state import (
    PHASES,
    VERSION,
    ListCall,
    RunState,
    TargetState,
    initial,
    with_targets,
)
from redisflush.core.targets import ENTERPRISE, REDIS, make_enterprise, make_target

from .helpers import ENDPOINT, RG, SUB, T0, at, cluster_id, db_id, rid

OP_URL = (f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache/locations/West%20US%202/"
          "operationresults/op-1?api-version=2023-08-01&t=a%2Bb&c=z")


def request(body: dict, *, message_id: str = "req-1", enqueued: object = None) -> FlushRequest:
    parsed = parse_request(Delivery(json.dumps(body, ensure_ascii=False).encode(), message_id,
                                    enqueued_at=enqueued or T0),  # type: ignore[arg-type]
                           default_timeout=1800, allowed_scopes=(), max_targets=50, now=T0)
    assert isinstance(parsed, FlushRequest), parsed
    return parsed


# --- the first state ---------------------------------------------------------------------------

def test_initial_state_of_several_targets():
    req = request({"resourceIds": [rid("b"), db_id("k"), rid("a")]}, enqueued=at(-10))
    state = initial(req, T0)
    assert (state.phase, state.step, state.message_id) == ("open", 0, "req-1:poll:0")
    assert state.deadline == at(1790) == req.deadline
    assert state.fingerprint == req.fingerprint
    assert [t.target.resource_id for t in state.targets] == [rid("a"), rid("b"), db_id("k")]
    assert [t.index for t in state.targets] == [0, 1, 2]
    assert [t.phase for t in state.targets] == ["claim", "claim", "read"]  # a database reads
    assert [t.linked for t in state.targets] == [(), (), None]  # its group first
    assert all(t.due == T0 and t.outcome is None and not t.reported for t in state.targets)
    assert state.selector is None and state.linked_request is None


@pytest.mark.parametrize("linked, phase, expected", [
    (None, "read", None), ([], "claim", ()), ([db_id("us")], "claim", (db_id("us"),)),
])
def test_one_database_reads_its_group_unless_the_request_named_it(linked, phase, expected):
    body: dict = {"resourceId": db_id("k")}
    if linked is not None:
        body["linkedDatabaseIds"] = linked
    (ts,) = initial(request(body), T0).targets
    assert (ts.phase, ts.linked) == (phase, expected)


def test_selector_state_starts_without_targets():
    state = initial(request({"selector": {"subscriptionId": SUB, "tags": {"app": "shop"}}}), T0)
    assert state.targets == () and state.selector is not None
    assert state.phase == "open"


def test_with_targets_sorts_and_numbers():
    state = initial(request({"selector": {"subscriptionId": SUB, "all": True}}), T0)
    targets = (make_enterprise(SUB, RG, "z"), make_target(SUB, RG, "B"),
               make_target(SUB, RG, "a"))
    state = with_targets(state, targets, at(3))
    assert [t.target.name for t in state.targets] == ["a", "B", "z"]
    assert [(t.index, t.phase, t.due) for t in state.targets] == [
        (0, "claim", at(3)), (1, "claim", at(3)), (2, "read", at(3))]


def test_with_target_replaces_by_index_and_arm_requests_add_up():
    state = initial(request({"resourceIds": [rid("a"), rid("b")]}), T0)
    state = dataclasses.replace(state, arm_requests=2)
    state = state.with_target(dataclasses.replace(state.targets[1], arm_requests=5))
    state = state.with_target(dataclasses.replace(state.targets[0], arm_requests=3))
    assert [t.arm_requests for t in state.targets] == [3, 5]
    assert state.total_arm_requests == 10


@pytest.mark.parametrize("step, message_id", [(0, "req-1:poll:0"), (7, "req-1:poll:7")])
def test_message_id(step, message_id):
    state = dataclasses.replace(initial(request({"resourceId": rid()}), T0), step=step)
    assert state.message_id == message_id


# --- round trip ----------------------------------------------------------------------------------

def full_state() -> RunState:
    origin = Origin("req-1", at(-3), "corr", "replies", "sess", "why", "who")
    targets = (
        TargetState(make_target(SUB, RG, "a"), 0, "poll", at(4), (), OP_URL,
                    "azure-asyncoperation", at(1), "InProgress",
                    {"status": "InProgress", "percentComplete": 40}, polls=5, failures=2,
                    bad_polls=1, arm_requests=9, paced=True, noted=True, projected_end=12.5),
        TargetState(make_enterprise(SUB, RG, "k", "db-2"), 1, "done", at(2),
                    (db_id("us"),), OP_URL + "&x=1", "location", at(1), "Succeeded",
                    outcome=Outcome("Succeeded", at(2), None, {"status": "Succeeded"}, at(1), 3,
                                    (db_id("us"),)), reported=True),
        TargetState(make_enterprise(SUB, RG, "k2"), 2, "read", at(0)),
        TargetState(make_target(SUB, RG, "c"), 3, "claim", at(0), ()),
        TargetState(make_target(SUB, RG, "d"), 4, "claim", at(9), (), failures=3, busy=True,
                    location_error="500:E", location_errors=2, in_doubt=True),
        TargetState(make_target(SUB, RG, "e"), 5, "done", at(3), (),
                    outcome=Outcome("Failed", at(3), {"code": "E", "message": "m"})),
    )
    return RunState(origin, at(1800), '{"targets":["x"]}', targets,
                    parse_selector({"subscriptionId": SUB, "resourceGroup": RG,
                                    "tags": {"app": "shop"}, "kinds": ["redis"]}),
                    "run", 12, (ListCall(REDIS, ENDPOINT + "/x?$skiptoken=2"),
                                ListCall(ENTERPRISE, ENDPOINT + "/k/databases",
                                         cluster_id("k"))),
                    (rid("a"), db_id("k", "db-2")), 2, 3, 1, at(6), 4, "Running", 50, False,
                    (db_id("us"),), scheduled_at=at(4))


@pytest.mark.parametrize("state", [
    full_state(),
    initial(request({"resourceId": rid()}), T0),
    initial(request({"selector": {"subscriptionId": SUB, "all": True}}), T0),
    initial(request({"resourceId": db_id(), "linkedDatabaseIds": []}), T0),
    # null selector, due and linked ids (a resolving chain always has its selector)
    dataclasses.replace(full_state(), phase="run", selector=None, due=None,
                        linked_request=None),
])
def test_round_trip(state):
    assert RunState.from_json(state.to_json()) == state


def test_a_target_read_in_phase_post_claims_again_first():
    """A poll message written before held claims were given back (or by a step that died
    before its POST): its claim may have outlived the lease."""
    doc = json.loads(full_state().to_json())
    doc["targets"][4]["phase"] = "post"
    assert RunState.from_json(json.dumps(doc).encode()).targets[4].phase == "claim"


def test_wire_shape():
    doc = json.loads(full_state().to_json())
    assert doc["v"] == VERSION == 2
    for key in ("requestId", "requestedAt", "correlationId", "replyTo", "replyToSessionId",
                "reason", "requestedBy", "deadline", "fingerprint", "phase", "step", "selector",
                "pendingLists", "found", "targets"):
        assert key in doc
    assert doc["deadline"] == "2030-01-01T12:30:00.000000Z"
    first = doc["targets"][0]
    assert first["pollUrl"] == OP_URL  # verbatim, signature and all
    assert first["target"] == {"kind": "redis", "subscriptionId": SUB, "resourceGroup": RG,
                               "name": "a"}
    assert {"i", "phase", "due", "linked", "pollKind", "acceptedAt", "lastStatus", "polls",
            "failures", "badPolls", "armRequests", "paced", "outcome", "reported",
            "noted", "runningAt", "projectedEnd"} <= first.keys()
    assert first["projectedEnd"] == 12.5
    assert doc["targets"][2]["linked"] is None and doc["targets"][3]["linked"] == []


def test_state_is_compact_json():
    body = full_state().to_json()
    assert b": " not in body and b", " not in body


def test_state_is_utf8_and_keeps_half_a_surrogate_pair():
    """Text outside ASCII weighs its UTF-8 bytes, not JSON's six-byte escapes, against the
    message's limit; a lone surrogate (ARM's JSON may escape one) reads back the same."""
    state = full_state()
    state = dataclasses.replace(state, origin=dataclasses.replace(
        state.origin, reason="漢" * 256, requested_by="\U0001f600" * 256))
    ts = dataclasses.replace(state.targets[0], last_operation={"status": "x\ud800y"})
    state = state.with_target(ts)
    body = state.to_json()
    assert "漢".encode() * 256 in body and "\U0001f600".encode() * 256 in body
    assert b"\\ud800" in body
    back = RunState.from_json(body)
    assert back.origin == state.origin
    assert back.targets[0].last_operation == {"status": "x\ud800y"}


def test_a_fingerprint_no_row_could_hold_whole_travels_as_its_digest():
    """15 tags of 512 + 256 characters outside the BMP: whole, the fingerprint alone is
    ~138,000 characters of JSON escapes (the request row holds its digest)."""
    tags = {f"{i:02}" + "\U0001f600" * 510: "\U0001f680" * 256 for i in range(15)}
    parsed = request({"selector": {"subscriptionId": SUB, "resourceGroup": RG, "tags": tags}})
    assert len(parsed.fingerprint) > 100_000
    state = initial(parsed, T0)
    assert state.fingerprint == digest(parsed.fingerprint)
    assert len(state.to_json()) < 60_000
    small = request({"selector": {"subscriptionId": SUB, "resourceGroup": RG,
                                  "tags": {"app": "漢" * 256}}})
    assert initial(small, T0).fingerprint == small.fingerprint  # whole, as every release


# --- what we did not write ------------------------------------------------------------------------

def _mutated(change) -> bytes:
    doc = json.loads(full_state().to_json())
    change(doc)
    return json.dumps(doc).encode()


def _set(**values):
    return lambda doc: doc.update(values)


def _target(position, **values):
    return lambda doc: doc["targets"][position].update(values)


HOSTILE = {
    "empty": b"", "not json": b"not json", "array": b"[]", "empty object": b"{}",
    "null": b"null", "not utf-8": b"\xff\xfe{}",
    "v1": _mutated(_set(v=1)), "v3": _mutated(_set(v=3)), "v null": _mutated(_set(v=None)),
    "v string": _mutated(_set(v="2")), "no requestId": _mutated(lambda d: d.pop("requestId")),
    "phase unknown": _mutated(_set(phase="flush")), "deadline null": _mutated(_set(deadline=None)),
    "deadline junk": _mutated(_set(deadline="soon")), "step junk": _mutated(_set(step="x")),
    "targets null": _mutated(_set(targets=None)),
    "targets object": _mutated(_set(targets={"x": 1})),
    "target junk": _mutated(_set(targets=["x"])),
    "target phase": _mutated(_target(0, phase="flushing")),
    "poll without url": _mutated(_target(0, pollUrl=None)),
    "poll url not text": _mutated(_target(0, pollUrl=5)),
    "poll kind unknown": _mutated(_target(0, pollKind="header")),
    "target segments": _mutated(_target(0, target={"kind": "redis", "subscriptionId": SUB,
                                                   "resourceGroup": RG, "name": "../x"})),
    "database segments": _mutated(_target(2, target={"kind": "redisEnterprise",
                                                     "subscriptionId": SUB,
                                                     "resourceGroup": "..",
                                                     "name": "k"})),
    "target null": _mutated(_target(0, target=None)),
    "due junk": _mutated(_target(0, due=None)),
    "index junk": _mutated(_target(0, i="first")),
    "selector junk": _mutated(_set(selector={"subscriptionId": SUB})),
    "selector kinds": _mutated(_set(selector={"subscriptionId": SUB, "all": True,
                                              "kinds": ["memcached"]})),
    "pending list junk": _mutated(_set(pendingLists=[{"url": "x"}])),
    "outcome junk": _mutated(_target(1, outcome={"status": "Succeeded"})),
    "huge number": b'{"v": 2, "step": 1' + b"0" * 5000 + b"}",
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_refuses_what_we_did_not_write(body):
    with pytest.raises(ValueError):
        RunState.from_json(body)


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"v": 2, "x": ' + b"[" * 100_000])
def test_deep_nesting_is_a_value_error(body):
    with pytest.raises(ValueError):
        RunState.from_json(body)


@pytest.mark.parametrize("indexes", [[7, 1, 2, 3, 4, 5], [1, 0, 2, 3, 4, 5], [0, 0, 2, 3, 4, 5],
                                     [-1, 1, 2, 3, 4, 5]])
def test_target_indexes_must_match_their_positions(indexes):
    def change(doc):
        for ts, i in zip(doc["targets"], indexes, strict=True):
            ts["i"] = i
    with pytest.raises(ValueError):
        RunState.from_json(_mutated(change))


@pytest.mark.parametrize("status", ["Bogus", "succeeded", ""])
def test_outcome_status_must_be_known(status):
    def change(doc):
        doc["targets"][1]["outcome"]["status"] = status
    with pytest.raises(ValueError):
        RunState.from_json(_mutated(change))


@pytest.mark.parametrize("phase", PHASES)
def test_every_phase_reads_back(phase):
    state = full_state()
    ts = dataclasses.replace(state.targets[0], phase=phase)
    state = state.with_target(ts)
    # a target in phase post claims again first (see the test above)
    assert RunState.from_json(state.to_json()).targets[0].phase == \
        ("claim" if phase == "post" else phase)


@pytest.mark.parametrize("value", [None, float("nan"), float("inf"), -1, 0, True, "300",
                                   [1], {"x": 1}])
def test_an_unusable_projected_end_reads_as_none(value):
    doc = json.loads(full_state().to_json())
    doc["targets"][0]["projectedEnd"] = value
    body = json.dumps(doc).encode()
    assert RunState.from_json(body).targets[0].projected_end is None


def test_a_state_without_projected_end_reads_back():
    doc = json.loads(full_state().to_json())
    del doc["targets"][0]["projectedEnd"]
    state = RunState.from_json(json.dumps(doc).encode())
    assert state.targets[0].projected_end is None


@pytest.mark.parametrize("scheduled, now, expected", [
    (None, at(10), at(10)),             # a request message: the app's own clock
    (at(20), at(10), at(20)),           # a clock behind the bus's: the scheduled time
    (at(20), at(25), at(25)),           # delivered late: now
    (at(10 ** 8), at(10), "deadline"),  # a forged `at` years on: capped at the deadline
])
def test_a_step_is_never_before_its_scheduled_time_nor_past_its_deadline(scheduled, now,
                                                                          expected):
    """docs/design.md, "Clocks": a poll message's step runs at its scheduled time at the
    earliest (the bus delivered it by its own clock), capped at the deadline, so an `at` a
    message could carry (any moment up to 9000) never dates an event past it."""
    from redisflush.core.step import delivered_now

    state = dataclasses.replace(initial(request({"resourceId": rid()}), T0),
                                scheduled_at=scheduled)
    assert delivered_now(state, now) == (state.deadline if expected == "deadline"
                                         else expected)
