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
from redisflush.core.next_message import poll_message
from redisflush.core.request import Origin
from redisflush.core.state import RunState, TargetState
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
    # encoded once: with 50 ended targets the uncut state is ~90 MB of JSON, and encoding it
    # per target (twice 50 times) took 2-3 minutes on a loaded 2-core machine, near the timeout
    cut = len(state.to_json()) > MAX_MESSAGE_BYTES
    # verbatim, but for ended targets already reported, which nothing polls again (when the
    # state had to be cut)
    assert [t.poll_url for t in back.targets] == [
        None if t.phase == "done" and t.reported and cut
        else op_url(i) for i, t in enumerate(state.targets)]
    assert [t.target for t in back.targets] == [t.target for t in state.targets]
    assert [t.phase for t in back.targets] == [t.phase for t in state.targets]
    # (an ended, reported target's linked ids only in its outcome, when the state was cut)
    assert [t.linked for t in back.targets] == [
        () if t.phase == "done" and t.reported and cut else t.linked for t in state.targets]
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


CONFIG_ARGS = (ENDPOINT, "2023-08-01", "2025-07-01", 50, (f"/subscriptions/{SUB}",),
               "redis-flush-polls")


def long_urls(**kw: object) -> RunState:
    """50 accepted flushes whose signed URLs of ~6 KB do not fit one message even cut."""
    state = fifty(last={"status": "InProgress"})
    return dataclasses.replace(state, targets=tuple(
        dataclasses.replace(t, poll_url=op_url(t.index) + "&x=" + "p" * (4000 + t.index * 10),
                            due=at(60), linked=(), **kw)
        for t in state.targets))


def test_a_state_that_cut_does_not_fit_carries_its_longest_urls_by_reference():
    """50 signed URLs of ~6 KB: even cut, the state passes the limit. The step carries the
    longest URLs by reference to the ledger's accepted rows (each recorded first, as the
    step does not know the row holds it) until the rest fits: no target ends."""
    from redisflush.core.accepted_row import url_digest
    from redisflush.core.commands import RecordTarget, Schedule
    from redisflush.core.decision import Config, View
    from redisflush.core.step import step

    state = long_urls()
    after, commands = step(state, {}, View(at(5)), Config(*CONFIG_ARGS))

    (schedule,) = [c for c in commands if isinstance(c, Schedule)]
    assert len(schedule.message.body) <= MAX_MESSAGE_BYTES
    assert all(t.phase == "poll" for t in after.targets)
    carried = [t for t in after.targets if t.poll_ref]
    assert 0 < len(carried) <= 25
    # the longest (the highest indexes) went first
    assert {t.index for t in carried} == set(range(50 - len(carried), 50))
    records = [c for c in commands if isinstance(c, RecordTarget)]
    assert sorted(r.key for r in records) == sorted(t.target.key for t in carried)
    assert all(r.state == "accepted" and r.data["pollUrl"] == state.targets[t.index].poll_url
               for r, t in zip(sorted(records, key=lambda r: r.key),
                               sorted(carried, key=lambda t: t.target.key), strict=True))
    assert max(commands.index(r) for r in records) < commands.index(schedule)
    back = RunState.from_json(schedule.message.body)
    assert back.targets == after.targets
    for t in back.targets:
        doc = json.loads(schedule.message.body)["targets"][t.index]
        if t.poll_ref:
            assert t.poll_ref == url_digest(state.targets[t.index].poll_url or "")
            assert doc["pollUrl"] == "ledger:sha256:" + t.poll_ref
            assert doc["pollKind"] == "azure-asyncoperation" and doc["phase"] == "poll"
        else:
            assert doc["pollUrl"] == state.targets[t.index].poll_url


def test_a_url_the_ledger_is_known_to_hold_is_carried_without_a_record():
    from redisflush.core.commands import RecordTarget
    from redisflush.core.decision import Config, View
    from redisflush.core.step import step

    after, commands = step(long_urls(stored=True), {}, View(at(5)), Config(*CONFIG_ARGS))
    assert any(t.poll_ref for t in after.targets)
    assert not [c for c in commands if isinstance(c, RecordTarget)]


def _carried_due() -> RunState:
    from redisflush.core.commands import Schedule
    from redisflush.core.decision import Config, View
    from redisflush.core.step import step

    _, commands = step(long_urls(), {}, View(at(5)), Config(*CONFIG_ARGS))
    (schedule,) = [c for c in commands if isinstance(c, Schedule)]
    return RunState.from_json(schedule.message.body)


def _rows(state: RunState, urls: dict[int, object], row_state: str = "accepted"
          ) -> dict[str, tuple[str, dict[str, object]]]:
    return {t.target.key: (row_state, {"pollUrl": urls[t.index],
                                        "pollKind": "azure-asyncoperation",
                                        "acceptedAt": "2026-01-01T00:00:01+00:00"})
            for t in state.targets if t.index in urls}


def test_a_target_carried_by_reference_reads_its_url_back_from_the_ledger_when_due():
    """The next step reads the request's rows first (as a redelivered step does), then
    GETs each target's own URL; none is POSTed."""
    from redisflush.core.commands import CallArm, Opened, ReadRows
    from redisflush.core.decision import Config, View
    from redisflush.core.step import step

    state, original = _carried_due(), long_urls()
    carried = [t.index for t in state.targets if t.poll_ref]
    config = Config(*CONFIG_ARGS)
    state, commands = step(state, {}, View(at(60)), config)
    assert isinstance(commands[0], ReadRows) and commands[0].ref == "refs"
    assert {c.url for c in commands if isinstance(c, CallArm)} == \
        {t.poll_url for t in original.targets if t.index not in carried}
    rows = _rows(state, {i: original.targets[i].poll_url for i in carried})
    _, commands = step(state, {"refs": Opened("same", targets=rows)}, View(at(60)), config)
    calls = [c for c in commands if isinstance(c, CallArm)]
    # (the others' GETs again too: their answers did not come back to this step)
    assert {c.url for c in calls} >= {original.targets[i].poll_url for i in carried}
    assert all(c.method == "GET" for c in calls) and len(calls) == 50


@pytest.mark.parametrize("case, why", [
    ("missing", "holds no accepted row"), ("other", "holds another operation URL"),
    ("posting", "holds no accepted row"), ("gone", "holds no accepted row")])
def test_a_target_whose_url_the_ledger_does_not_give_back_ends_saying_so(case, why):
    from redisflush.core.commands import CallArm, Opened, Publish, RecordTarget
    from redisflush.core.decision import Config, View
    from redisflush.core.step import step

    state, original = _carried_due(), long_urls()
    carried = [t.index for t in state.targets if t.poll_ref]
    urls = {i: original.targets[i].poll_url for i in carried}
    if case == "missing":
        urls.pop(carried[0])
    elif case == "other":
        urls[carried[0]] = original.targets[0].poll_url
    rows = _rows(state, urls, "posting" if case == "posting" else "accepted")
    opened = Opened("gone") if case == "gone" else Opened("same", targets=rows)
    after, commands = step(state, {"refs": opened}, View(at(60)), Config(*CONFIG_ARGS))
    ended = [t for t in after.targets if t.phase == "done"]
    expected = carried if case in ("gone", "posting") else carried[:1]
    assert [t.index for t in ended] == expected
    for t in ended:
        assert t.outcome and t.outcome.status == "Failed" and t.outcome.error
        assert t.outcome.error["code"] == "PollStateTooLarge"
        assert why in t.outcome.error["message"] and "may still run" in \
            t.outcome.error["message"]
    assert len([c for c in commands if isinstance(c, Publish)]) == len(ended)
    done = [c for c in commands if isinstance(c, RecordTarget) and c.state == "done"]
    assert len(done) == len(ended)
    assert not [c for c in commands if isinstance(c, CallArm) and c.method == "POST"]


def test_a_ledger_that_cannot_be_read_is_tried_again_then_the_target_ends():
    from redisflush.core.commands import Opened, ReadRows
    from redisflush.core.decision import Config, View
    from redisflush.core.step import step

    state, config = _carried_due(), Config(*CONFIG_ARGS)
    first = next(t.index for t in state.targets if t.poll_ref)
    now = at(60)
    for attempt in range(1, 4):
        state, commands = step(state, {}, View(now), config)
        assert any(isinstance(c, ReadRows) for c in commands)
        state, commands = step(state, {"refs": Opened("unknown")}, View(now), config)
        ts = state.targets[first]
        if attempt < 3:
            assert ts.phase == "poll" and ts.poll_ref and ts.due > now
            now = max(t.due for t in state.targets if t.poll_ref)
        else:
            assert ts.phase == "done" and ts.outcome and ts.outcome.error
            assert "could not be read 3 times" in ts.outcome.error["message"]


def test_a_target_the_ledger_records_done_takes_the_recorded_outcome():
    from redisflush.core.commands import Opened
    from redisflush.core.decision import Config, View
    from redisflush.core.step import step

    state = _carried_due()
    first = next(t for t in state.targets if t.poll_ref)
    outcome = Outcome("Succeeded", at(30), None, {"status": "Succeeded"}, at(1), 4)
    rows = {first.target.key: ("done", {"outcome": outcome.to_json()})}
    after, _ = step(state, {"refs": Opened("same", targets=rows)}, View(at(60)),
                    Config(*CONFIG_ARGS))
    assert after.targets[first.index].outcome == outcome


def test_what_a_reference_cannot_carry_still_sheds_its_heaviest_targets_records_first():
    """Targets never sent (their claim still to come) with long linked ids: nothing to carry
    by reference, and the state does not fit. The step ends the heaviest unfinished targets
    PollStateTooLarge until the rest fits, saying their flush was not sent; each one's
    `done` record comes before the step's first event."""
    from redisflush.core.commands import Publish, RecordTarget, Schedule
    from redisflush.core.decision import Config, View
    from redisflush.core.step import step

    state = fifty(last={"status": "InProgress"})
    state = dataclasses.replace(state, targets=tuple(
        dataclasses.replace(t, phase="claim", poll_url=None, poll_kind=None, accepted_at=None,
                            due=at(60), linked=tuple(
                                db_id(f"peer-{t.index}-{n}") + "x" * (1200 + t.index)
                                for n in range(4)))
        for t in state.targets))

    after, commands = step(state, {}, View(at(5)), Config(*CONFIG_ARGS))

    (schedule,) = [c for c in commands if isinstance(c, Schedule)]
    assert len(schedule.message.body) <= MAX_MESSAGE_BYTES
    shed = [t for t in after.targets if t.phase == "done"]
    assert 0 < len(shed) <= 25
    assert all(t.outcome and t.outcome.error and t.outcome.error["code"] == "PollStateTooLarge"
               and "was not sent" in t.outcome.error["message"] for t in shed)
    assert {t.index for t in shed} == set(range(50 - len(shed), 50))
    kinds = [type(c) for c in commands]
    last_record = max(i for i, k in enumerate(kinds) if k is RecordTarget)
    assert last_record < kinds.index(Publish)


def test_a_run_of_arm_errors_does_not_shorten_the_ledger_reads_a_carried_target_gets():
    """ARM's transient errors and the ledger's failed reads are counted apart: a target
    carried by reference after two 503s still gets its three reads of the ledger (one
    counter for both ended it after one, saying "could not be read 3 times"), and a read
    that comes back leaves ARM's count as it was."""
    from redisflush.core.commands import Opened
    from redisflush.core.decision import Config, View
    from redisflush.core.state import RunState
    from redisflush.core.step import step

    state, config = _carried_due(), Config(*CONFIG_ARGS)
    state = dataclasses.replace(state, targets=tuple(
        dataclasses.replace(t, failures=2) if t.poll_ref else t for t in state.targets))
    state = RunState.from_json(state.to_json())  # as a message carries it
    first = next(t.index for t in state.targets if t.poll_ref)
    state, _ = step(state, {}, View(at(60)), config)
    state, _ = step(state, {"refs": Opened("unknown")}, View(at(60)), config)
    ts = state.targets[first]
    assert ts.phase == "poll" and ts.poll_ref and (ts.failures, ts.ref_failures) == (2, 1)
    state = RunState.from_json(state.to_json())
    assert state.targets[first].ref_failures == 1

    original = long_urls()
    now = max(t.due for t in state.targets if t.poll_ref)
    state, _ = step(state, {}, View(now), config)
    rows = _rows(state, {t.index: original.targets[t.index].poll_url
                         for t in state.targets if t.poll_ref})
    state, _ = step(state, {"refs": Opened("same", targets=rows)}, View(now), config)
    ts = state.targets[first]
    assert ts.poll_url == original.targets[first].poll_url
    assert (ts.failures, ts.ref_failures) == (2, 0)


def test_a_failed_ledger_read_counts_only_against_carried_targets_that_were_due():
    """The rows are read for the carried targets due now (or a redelivered step's check);
    one carried target not due yet (a later Retry-After, its projected end) did not need the
    read: a failure of it is none of its tries, and leaves its next read where it was. It
    counted one (three such, through its neighbours' reads, ended it PollStateTooLarge
    unread) and its read moved from 12:05 to 12:01:02, minutes before Retry-After."""
    from redisflush.core.commands import Opened
    from redisflush.core.decision import Config, View
    from redisflush.core.step import step

    state, config = _carried_due(), Config(*CONFIG_ARGS)
    due, later = [t.index for t in state.targets if t.poll_ref][:2]
    state = dataclasses.replace(state, targets=tuple(
        dataclasses.replace(t, due=at(300)) if t.index == later else t
        for t in state.targets))
    state, _ = step(state, {}, View(at(60)), config)
    state, _ = step(state, {"refs": Opened("unknown")}, View(at(60)), config)
    assert state.targets[due].ref_failures == 1
    waiting = state.targets[later]
    assert waiting.poll_ref and (waiting.due, waiting.ref_failures) == (at(300), 0)
