"""core/fit.py and core/compact.py: ARM's own JSON bounded by bytes, and the poll message
under 192 KiB with 50 targets and 2 KiB signed URLs (docs/design.md, "Poll message")."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redisflush.core.compact import compact
from redisflush.core.events import Outcome
from redisflush.core.fit import MAX_MESSAGE_BYTES, clean, fit, size
from redisflush.core.request import Origin
from redisflush.core.state import RunState, TargetState
from redisflush.core.step import poll_message
from redisflush.core.targets import make_enterprise, make_target

from .helpers import ENDPOINT, RG, SUB, T0, at, db_id

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def wire(value: object) -> int:
    """Bytes of the compact UTF-8 JSON, the measure `fit` promises."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


# --- size and clean -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (None, 4), ({}, 2), ([], 2), ("", 2), ({"a": 1}, 7), ([1, 2], 5), ("é", 4), ("漢", 5),
    ("\x00", 8), ({"k": [True, None]}, 17),
])
def test_size_is_compact_utf8_bytes(value, expected):
    assert size(value) == expected == wire(value)


@pytest.mark.parametrize("value, expected", [
    (float("nan"), None), (float("inf"), None), (float("-inf"), None), (1.5, 1.5),
    (10 ** 299, 10 ** 299), (10 ** 300, None), (-(10 ** 300), None), (10 ** 5000, None),
    (True, True), (False, False), (None, None), ("s", "s"),
    ({"a": float("nan"), "b": [float("inf"), 1, 10 ** 400]}, {"a": None, "b": [None, 1, None]}),
], ids=lambda v: type(v).__name__)
def test_clean_drops_what_is_not_json(value, expected):
    assert clean(value) == expected


def test_clean_cuts_deep_nesting_and_long_keys():
    deep: object = 1
    for _ in range(20):
        deep = {"d": deep}
    text = json.dumps(clean(deep), ensure_ascii=False)
    assert text.count("{") == 8 and text.count("…") == 1
    assert clean({"k" * 1000: 1}) == {"k" * 256: 1}


def test_clean_with_a_limit_makes_a_cheap_first_cut():
    assert clean("x" * 100, limit=10) == "x" * 10 + "…"
    assert clean("x" * 10, limit=10) == "x" * 10
    assert len(clean(list(range(1000)), limit=40)) == 5  # limit // 8 items at most


# --- fit ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    None, {}, {"status": "Succeeded", "percentComplete": 100}, [1, "two", None, True, 2.5],
    {"error": {"code": "E", "message": "m", "details": [{"code": "x"}] * 10}},
])
def test_fit_leaves_what_already_fits(value):
    assert fit(value, 10_000) == value


@pytest.mark.parametrize("max_bytes", [8, 64, 100, 1000, 4096, 65536])
@pytest.mark.parametrize("value", [
    "x" * 100_000, "é" * 100_000, "漢" * 100_000, "😀" * 50_000, "\x00" * 50_000,
    ["y" * 1000] * 500, {"error": {"code": "Big", "message": "m" * 300_000,
                                   "details": [{"message": "d" * 10_000}] * 100}},
    {f"k{i}": "v" * 100 for i in range(500)},
    {f"{'k' * 250}{i}": i for i in range(64)},  # many long keys and nothing cuttable
    [[[[[[[[[[["deep"] * 50] * 3] * 3] * 3] * 3] * 3] * 3] * 3] * 3] * 3],
    {"percent": float("nan"), "n": 10 ** 4000, "s": "z" * 10_000},
], ids=lambda v: type(v).__name__)
def test_fit_output_is_at_most_max_bytes(value, max_bytes):
    out = fit(value, max_bytes)
    assert wire(out) <= max_bytes
    assert json.loads(json.dumps(out, allow_nan=False)) == out  # plain JSON


def test_fit_keeps_the_small_fields_and_cuts_the_big_one():
    error = {"code": "Big", "message": "m" * 300_000, "target": "flush"}
    out = fit(error, 4096)
    assert out["code"] == "Big" and out["target"] == "flush"
    assert out["message"].startswith("mmm") and out["message"].endswith("…")
    assert 1000 < wire(out) <= 4096  # cut by about what was too much, not to nothing


def test_fit_drops_nan_infinity_and_huge_integers_even_when_small():
    out = fit({"a": float("nan"), "b": float("-inf"), "c": 10 ** 350, "d": 7}, 1000)
    assert out == {"a": None, "b": None, "c": None, "d": 7}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() |
    st.integers(min_value=10 ** 290, max_value=10 ** 400) | st.text(max_size=300),
    lambda children: st.lists(children, max_size=100)
    | st.dictionaries(st.text(max_size=30), children, max_size=10),
    max_leaves=60)


@FAST
@given(JSON_VALUES, st.integers(min_value=4, max_value=5000))
def test_any_value_fits_any_budget(value, max_bytes):
    out = fit(value, max_bytes)
    assert wire(out) <= max_bytes
    text = json.dumps(out, allow_nan=False)  # never NaN or Infinity
    json.loads(text)  # and readable back (no 4,300+ digit integers)


@FAST
@given(JSON_VALUES)
def test_what_fits_is_only_cleaned(value):
    cleaned = clean(value)
    if wire(cleaned) <= 200_000:
        assert fit(value, 200_000) == cleaned


@FAST
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30))
def test_no_non_finite_float_survives(values):
    out = fit({"v": values}, 100_000)
    assert all(v is None or math.isfinite(v) for v in out["v"])


# --- compact: the poll message with 50 targets ------------------------------------------------

SECRET = "SIG" + "s" * 2045  # a 2 KiB signed query string
HUGE = {"status": "InProgress", "percentComplete": 10, "error": {"message": "e" * 300_000},
        "details": ["d" * 10_000] * 50, "nan": float("nan"), "big": 10 ** 4000 // 10 ** 3990}


def op_url(i: int) -> str:
    return (f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache/locations/West%20US%202/"
            f"operationresults/op-{i}?api-version=2023-08-01&t=638&c={SECRET}&s=x{i}&h=y")


def fifty(*, done_every: int = 0, reported: bool = False, last: object = HUGE,
          text: str = "e") -> RunState:
    origin = Origin("req-50", T0, "corr", "replies", "sess", "r" * 256, "b" * 256)
    targets = []
    for i in range(50):
        target = make_target(SUB, RG, f"cache-{i:02}") if i % 2 else \
            make_enterprise(SUB, RG, f"amr-{i:02}")
        ts = TargetState(target, i, "poll", at(5), linked=(db_id(f"peer-{i}"),) if i % 2 == 0
                         else (), poll_url=op_url(i), poll_kind="azure-asyncoperation",
                         accepted_at=at(1), last_status="InProgress",
                         last_operation=dict(last) if isinstance(last, dict) else None, polls=7,
                         arm_requests=9)
        if done_every and i % done_every == 0:
            ts = dataclasses.replace(ts, phase="done", reported=reported, outcome=Outcome(
                "Failed", at(4), {"code": "Big", "message": text * 100_000,
                                  "details": [{"m": text * 5000}] * 20},
                dict(last) if isinstance(last, dict) else None, at(1), 9))
        targets.append(ts)
    return RunState(origin, at(1800), "f" * 2000, tuple(targets), phase="run", step=41)


@pytest.mark.parametrize("state", [
    fifty(), fifty(done_every=3), fifty(done_every=3, reported=True), fifty(done_every=1),
    fifty(done_every=1, reported=True), fifty(last={"status": "InProgress"}),
    fifty(done_every=2, text="漢"), fifty(last={"status": "x", "m": "漢" * 100_000}),
], ids=["polling", "some-done", "some-reported", "all-done", "all-reported", "small-json",
        "cjk-errors", "cjk-operations"])
def test_poll_message_of_fifty_targets_fits(state):
    message = poll_message(state, at(5))
    assert len(message.body) <= MAX_MESSAGE_BYTES
    back = RunState.from_json(message.body)
    # verbatim, but for ended targets already reported, which nothing polls again (when the
    # state had to be cut)
    assert [t.poll_url for t in back.targets] == [
        None if t.phase == "done" and t.reported and len(state.to_json()) > MAX_MESSAGE_BYTES
        else op_url(i) for i, t in enumerate(state.targets)]
    assert [t.target for t in back.targets] == [t.target for t in state.targets]
    assert [t.phase for t in back.targets] == [t.phase for t in state.targets]
    assert [t.linked for t in back.targets] == [t.linked for t in state.targets]
    for old, new in zip(state.targets, back.targets, strict=True):
        if old.outcome:
            assert new.outcome is not None and new.outcome.status == old.outcome.status
            assert new.outcome.error["code"] == "Big"
    assert back.origin == state.origin and back.deadline == state.deadline
    assert message.message_id == "req-50:poll:41"
    assert message.scheduled_at == at(5)
    assert message.correlation_id == "req-50"


def test_compact_leaves_a_small_state_alone():
    state = fifty(last={"status": "InProgress", "percentComplete": 5})
    assert len(state.to_json()) <= MAX_MESSAGE_BYTES
    assert compact(state, MAX_MESSAGE_BYTES) == state


@pytest.mark.parametrize("limit", [MAX_MESSAGE_BYTES, 160_000])
def test_compact_meets_a_smaller_limit_too(limit):
    # the floor is what is never cut: 50 verbatim 2 KiB URLs and the targets (~147 KB)
    state = fifty(done_every=2)
    assert len(state.to_json()) > limit
    assert len(compact(state, limit).to_json()) <= limit


@pytest.mark.parametrize("value", [list(range(100)), {f"k{i}": i for i in range(100)},
                                   {"results": [{"status": "Succeeded"}] * 65}],
                         ids=["list", "object", "results"])
def test_fit_keeps_long_lists_that_fit(value):
    assert wire(value) < 10_000
    assert fit(value, 10_000) == value


def test_a_state_that_cut_does_not_fit_sheds_its_heaviest_targets_records_first():
    """50 signed URLs of ~6 KB: even cut, the state passes the limit. The step ends the
    heaviest unfinished targets PollStateTooLarge until the rest fits; each one's `done`
    record comes before the step's first event."""
    from redisflush.core.commands import Publish, RecordTarget, Schedule
    from redisflush.core.step import Config, View, step

    state = fifty(last={"status": "InProgress"})
    state = dataclasses.replace(state, targets=tuple(
        dataclasses.replace(t, poll_url=op_url(t.index) + "&x=" + "p" * (4000 + t.index * 10),
                            due=at(60), linked=())
        for t in state.targets))
    config = Config(ENDPOINT, "2023-08-01", "2025-07-01", 50, (f"/subscriptions/{SUB}",),
                    "redis-flush-polls")

    after, commands = step(state, {}, View(at(5)), config)

    (schedule,) = [c for c in commands if isinstance(c, Schedule)]
    assert len(schedule.message.body) <= MAX_MESSAGE_BYTES
    shed = [t for t in after.targets if t.phase == "done"]
    assert 0 < len(shed) <= 25
    assert all(t.outcome and t.outcome.error and t.outcome.error["code"] == "PollStateTooLarge"
               for t in shed)
    # the heaviest (longest URLs: the highest indexes) went first
    assert {t.index for t in shed} == set(range(50 - len(shed), 50))
    kinds = [type(c) for c in commands]
    last_record = max(i for i, k in enumerate(kinds) if k is RecordTarget)
    assert last_record < kinds.index(Publish)
    back = RunState.from_json(schedule.message.body)
    assert [t.poll_url for t in back.targets if t.phase == "poll"] == \
        [t.poll_url for t in after.targets if t.phase == "poll"]
