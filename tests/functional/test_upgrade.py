"""Upgrade and rollback with requests in flight: what release 65a10d8 wrote (its poll
messages, ledger rows and events, captured by tests/fixtures/capture_release.py into
tests/fixtures/release_65a10d8.json) is carried on by this one, and what this one writes is
what that release reads (docs/design.md, "Upgrades and rollbacks").
"""
from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from redisflush.bus import OutboundMessage
from redisflush.functions import install
from redisflush.ledger import Ledger, LedgerRow, MemoryLedger
from redisflush.local.ledger import SqliteLedger
from tests.fixtures.capture_release import LONG_CODE, _scenario, scenarios
from tests.support.harness import RG, SUB, Harness, parse_time
from tests.support.memory_bus import FakeClock, MemoryBus
from tests.support.scripted_arm import Answer, ScriptedArm, database_body, database_id

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release_65a10d8.json"
OLD: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
NAMES = sorted(OLD)
# How each scenario's operation ends, as the capture scripted it
ENDS: dict[str, tuple[int, dict[str, Any]]] = {
    "up-single": (200, {"status": "Succeeded"}),
    "up-batch": (200, {"status": "Succeeded"}),
    "up-canceled": (200, {"status": "Canceled"}),
    "up-selector": (200, {"status": "Succeeded"}),
    "up-geo": (200, {"status": "Succeeded"}),
    "up-managed-failed": (200, {"status": "Failed", "error": {"error": {
        "code": "FlushFailed", "message": "the database refused"}}}),
    "up-location-errors": (404, {"error": {"code": LONG_CODE, "message": "gone"}}),
}


# where this release's events differ from the old one's on purpose (an error where the old
# release gave none, or gave Managed Redis' wrapper)
FIXED = {"up-canceled", "up-managed-failed"}


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _rows(snapshot: dict[str, Any], arm: str) -> list[LedgerRow]:
    rows = json.loads(json.dumps(snapshot["rows"]).replace("{ARM}", arm))
    return [LedgerRow(r["requestId"], r["key"], r["state"], r["data"], r["posts"],
                      _time(r["updatedAt"]), _time(r["expiresAt"])) for r in rows]


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger()
        return
    sqlite = SqliteLedger(tmp_path / "ledger.sqlite3")
    yield sqlite
    sqlite.close()


@pytest.fixture
def upgraded(arm: ScriptedArm, ledger: Ledger) -> Iterator[tuple[Harness, FakeClock]]:
    clock = FakeClock()
    yield Harness.create(clock, MemoryBus(clock), arm, ledger=ledger), clock
    install(None)


def _restore(h: Harness, clock: FakeClock, snapshot: dict[str, Any]) -> None:
    """The old release's rows and scheduled poll messages, as a deployment finds them."""
    clock.advance_to(_time(snapshot["now"]))
    for row in _rows(snapshot, h.arm.endpoint):
        assert h.ledger.insert(row) is not None
    for poll in snapshot["polls"]:
        body = json.dumps(poll["body"]).replace("{ARM}", h.arm.endpoint).encode()
        assert h.bus.inject(h.settings.poll_queue, OutboundMessage(
            body, poll["messageId"], correlation_id=poll["body"]["requestId"],
            scheduled_at=_time(poll["visibleAt"]),
            application_properties={"requestId": poll["body"]["requestId"]})) is not None


def _ends(h: Harness, name: str) -> int:
    """Each operation the old release's poll message follows answers its end; how many."""
    status, body = ENDS[name]
    targets = [t for poll in OLD[name]["inFlight"]["polls"] for t in poll["body"]["targets"]]
    for target in targets:
        parts = urlsplit(target["pollUrl"].replace("{ARM}", h.arm.endpoint))
        h.arm.on("GET", f"{parts.path}?{parts.query}", then=Answer(status, {}, body))
    return len(targets)


def _check_events(h: Harness, name: str) -> None:
    """Each event the old release would have published, once, with its status; an error
    with code and message on every one but a success's."""
    old = OLD[name]
    events = {e.message_id: json.loads(e.message.body) for e in h.events()}
    old_events = {e["messageId"]: json.loads(e["body"]) for e in old["final"]["events"]}
    assert set(events) == set(old_events)
    for event_id, event in events.items():
        assert event["data"]["status"] == old_events[event_id]["data"]["status"]
        if event["data"]["status"] != "Succeeded":  # README: code and message, always
            assert event["data"]["error"]["code"] and event["data"]["error"]["message"]
    rows = {r.key: r for r in h.ledger.rows(name)}
    assert rows[""].state == "done"
    assert all(r.state == "done" for r in rows.values())


@pytest.mark.parametrize("name", NAMES)
def test_an_old_release_poll_message_is_followed_to_its_end(
        upgraded: tuple[Harness, FakeClock], name: str) -> None:
    """The chain the old release left scheduled goes on under this one: its rows are read,
    its operation read, no second POST, each event once under the id the old release would
    have used, the chain's next MessageIds in the old numbering."""
    h, clock = upgraded
    _restore(h, clock, OLD[name]["inFlight"])
    targets = _ends(h, name)

    h.run()

    if name == "up-location-errors":
        # the run of the same ARM error the old release counted goes on: as many reads as
        # it would have made (it ends Failed on the 4th in a row), not a run begun again
        old = OLD[name]
        targets = len(old["final"]["armRequests"]) - len(old["inFlight"]["armRequests"])
    assert [r.method for r in h.arm.requests_for(name)] == ["GET"] * targets
    _check_events(h, name)


@pytest.mark.parametrize("name", NAMES)
def test_a_repeat_after_the_upgrade_of_a_request_in_flight_joins_its_chain(
        upgraded: tuple[Harness, FakeClock], name: str) -> None:
    """A pipeline's retry (same requestId, new MessageId) sent just after the upgrade, while
    the old release's chain is scheduled: the same fingerprint (not RequestIdReused), no
    POST, poll MessageIds in the one numbering, each event once (a second copy dropped)."""
    h, clock = upgraded
    old = OLD[name]
    _restore(h, clock, old["inFlight"])
    _ends(h, name)
    if name == "up-geo":  # the repeat reads the database's group again before its claim
        h.arm.on_database(SUB, RG, "amr-geo", "default", then=Answer(200, {}, database_body(
            SUB, RG, "amr-geo", linked=[database_id(SUB, RG, "amr-geo-2")])))

    h.send_request({**old["request"], "requestId": name}, message_id=f"{name}-send-2")
    h.run()

    assert "POST" not in [r.method for r in h.arm.requests_for(name)]
    assert all(re.fullmatch(re.escape(name) + r":poll:\d+", e.message_id)
               for e in h.polls(name))
    _check_events(h, name)


@pytest.mark.parametrize("name", NAMES)
def test_a_repeat_after_the_upgrade_re_announces_what_the_old_release_announced(
        upgraded: tuple[Harness, FakeClock], name: str) -> None:
    """A repeat of the requestId (a pipeline's retry) after the upgrade, of a request the
    old release finished: the same fingerprint (not RequestIdReused), no ARM call, and every
    event byte for byte the copy the old release published (docs/design.md, "Request
    ledger": every copy of an event id says the same)."""
    h, clock = upgraded
    old = OLD[name]
    _restore(h, clock, old["final"])
    clock.advance(3600)  # past the duplicate window: the topic keeps these copies

    h.send_request({**old["request"], "requestId": name}, message_id=f"{name}-send-2")
    h.run()

    assert h.arm.requests_for(name) == []
    events = [(e.message_id, e.message.body.decode()) for e in h.events()]
    assert sorted(events) == sorted((e["messageId"], e["body"]) for e in old["final"]["events"])


@pytest.mark.parametrize("name", NAMES)
def test_what_this_release_writes_is_what_the_old_release_wrote(name: str) -> None:
    """Rollback: the old release reads this one's rows and poll messages. The same request
    under the same script writes the same request row (its fingerprint whole, as the old
    release matches it), the same poll messages and the same target rows but for the done
    row (its outcome alone, all the old release reads of it); the events differ only where
    this release fixed them (a Canceled or a Managed Redis Failed error)."""
    old = OLD[name]
    new = json.loads(json.dumps(_scenario(name, *scenarios()[name])))
    for moment in ("inFlight", "final"):
        if name == "up-location-errors":  # a code over 128 characters is counted by digest
            for poll in new[moment]["polls"]:
                for target in poll["body"]["targets"]:
                    assert target["locationError"].startswith("404:sha256:")
                    target["locationError"] = f"404:{LONG_CODE}"
        for poll in new[moment]["polls"]:
            # this release adds the time each message is scheduled for, whether a target's
            # POST went out unanswered and its failed ledger reads (a target carried by
            # reference), which the old one ignores as it ignores every field it does not
            # know (docs/design.md, "Upgrades and rollbacks")
            at = poll["body"].pop("at")
            assert parse_time(at) == parse_time(poll["visibleAt"]), moment
            for target in poll["body"]["targets"]:
                assert target.pop("inDoubt") is False, moment
                assert target.pop("refFailures") == 0, moment
        assert new[moment]["polls"] == old[moment]["polls"], moment
        assert new[moment]["armRequests"] == old[moment]["armRequests"], moment
        old_rows = {r["key"]: r for r in old[moment]["rows"]}
        new_rows = {r["key"]: r for r in new[moment]["rows"]}
        assert set(new_rows) == set(old_rows)
        for key, row in new_rows.items():
            was = old_rows[key]
            if key and row["state"] == "done":
                assert row["data"] == {"outcome": row["data"]["outcome"]}
                outcome = row["data"]["outcome"]
                assert set(outcome) == set(was["data"]["outcome"])
                if name not in FIXED:
                    assert outcome == was["data"]["outcome"]
                row = {**row, "data": {**was["data"], "outcome": was["data"]["outcome"]}}
            assert row == was, (moment, key)
    new_events = dict((e["messageId"], e["body"]) for e in new["final"]["events"])
    old_events = dict((e["messageId"], e["body"]) for e in old["final"]["events"])
    assert set(new_events) == set(old_events)
    if name not in FIXED:
        assert new_events == old_events


def test_a_target_carried_by_reference_ends_clearly_in_the_old_release() -> None:
    """Rollback with a poll state that did not fit (docs/design.md, "Upgrades and
    rollbacks"): this release carries an accepted target's URL by reference, as a pollUrl
    `ledger:sha256:{hex}`. 65a10d8 reads a polling target whose pollUrl is a string and whose
    pollKind is known (else the whole message is unreadable and dead-lettered, every cache
    without its event); it then refuses to send a token to a URL that is not the ARM
    endpoint's (its core/trust.py, unchanged since) and ends that target Failed
    UntrustedOperationUrl with its event, never POSTing it again. Checked here against that
    release's rules and its captured poll messages."""
    from redisflush.core.state import BY_REFERENCE, RunState
    from redisflush.core.trust import is_trusted

    polls = [p["body"] for s in OLD.values() for p in s["inFlight"]["polls"]]
    polling = [(body, i) for body in polls for i, t in enumerate(body["targets"])
               if t["phase"] == "poll"]
    assert polling
    body, i = polling[0]
    doc = json.loads(json.dumps(body).replace("{ARM}", "https://management.azure.com"))
    state = RunState.from_json(json.dumps(doc).encode())
    ts = state.targets[i]
    carried = json.loads(RunState(state.origin, state.deadline, state.fingerprint, tuple(
        dataclasses_replace(t, poll_url=None, poll_ref="0" * 64) if t.index == i else t
        for t in state.targets), phase=state.phase, step=state.step).to_json())
    target = carried["targets"][i]
    # what 65a10d8's TargetState.from_json asks of a polling target
    assert isinstance(target["pollUrl"], str) and target["pollUrl"] == BY_REFERENCE + "0" * 64
    assert target["pollKind"] == ts.poll_kind in ("azure-asyncoperation", "location")
    assert set(target) >= set(doc["targets"][i])  # every field it knows, still there
    # what its ARM client does with it: no token goes there
    assert not is_trusted(target["pollUrl"], "https://management.azure.com")
    assert not is_trusted(target["pollUrl"], "http://127.0.0.1:8080")
