"""What the engineer on call finds in Application Insights by one requestId (docs/azure.md,
"Application Insights queries"): every line the app writes while handling a request names
it, in every invocation (the trigger, each poll step, a ledger record skipped, a reply not
sent, and an invocation that raises so its message is redelivered or dead-lettered)."""
from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

import pytest

from redisflush.functions import install
from redisflush.ledger import LedgerError, MemoryLedger
from redisflush.ledger_tables import TableLedger
from tests.contract.conftest import azurite  # noqa: F401  (the Table storage emulator)
from tests.support.harness import RG, SUB, Harness, resource_id
from tests.support.memory_bus import FakeClock, MemoryBus
from tests.support.scripted_arm import Answer, ScriptedArm

CACHES = ["cache-a", "cache-b", "cache-c"]
REQUEST_ID = "deploy-42.release_7"
REPO = Path(__file__).resolve().parents[2]


class OpenRefusingLedger(MemoryLedger):
    """Refuses the first `times` inserts of a request row (the table is down)."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.left = times

    def insert(self, row):  # type: ignore[no-untyped-def]
        if not row.key and self.left > 0:
            self.left -= 1
            raise LedgerError("ledger table redisflushrequests: 403 "
                              "AuthorizationPermissionMismatch")
        return super().insert(row)


@pytest.fixture
def arm() -> ScriptedArm:
    arm = ScriptedArm(seed=5).start()
    yield arm  # type: ignore[misc]
    install(None)
    arm.stop()


def _accepting(arm: ScriptedArm) -> None:
    for cache in CACHES:
        op = arm.new_operation(SUB)
        url = {"Azure-AsyncOperation": op.url, "Location": op.url}
        arm.on_flush(SUB, RG, cache, then=Answer(202, url, b""))
        arm.on_operation(op, Answer(200, {}, op.status("InProgress")),
                         Answer(200, {}, op.status("InProgress")),
                         then=Answer(200, {}, op.status("Succeeded")))


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What reaches Application Insights: the worker forwards INFO and above."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


def test_every_line_of_every_invocation_names_the_request(
        arm: ScriptedArm, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    h = Harness.create(clock, MemoryBus(clock), arm, ledger=OpenRefusingLedger(times=1))
    _accepting(arm)
    h.bus.fail(h.settings.poll_queue, times=1)  # a step raises once: redelivered
    h.bus.fail("replies", times=50, error="MessagingEntityNotFoundError: no such queue")
    caplog.set_level(logging.INFO)
    h.send_request({"resourceIds": [resource_id(cache=c) for c in CACHES],
                    "requestId": REQUEST_ID}, reply_to="replies")
    done = h.run(allow_errors=True)
    assert [type(d.error).__name__ for d in done if d.error] == ["LedgerError", "BusError"]
    assert h.batch(REQUEST_ID, {resource_id(cache=c): "Succeeded" for c in CACHES},
                   "Succeeded")
    lines = _lines(caplog)
    # what the docs' query matches: `message startswith_cs strcat("request ", requestId, ": ")`
    assert [line for line in lines if not line.startswith(f"request {REQUEST_ID}: ")] == []
    # one line at least per invocation, the two that raised included
    raised = [line for line in lines if ": raised, so the message is delivered again" in line]
    assert len(raised) == 2 and "AuthorizationPermissionMismatch" in raised[0]
    assert len(lines) >= len(done)


def test_the_azure_sdks_add_no_lines_without_the_request(
        arm: ScriptedArm, azurite: str,  # noqa: F811 (the fixture imported above)
        caplog: pytest.LogCaptureFixture) -> None:
    """The ledger on Table storage (Azurite), the root logger at INFO as the Python worker
    runs it: azure-core's HTTP logging policy would add a request and a response line for
    every ledger call, naming no request, to every invocation's traces."""
    table = TableLedger.from_settings("t" + uuid.uuid4().hex[:20], connection_string=azurite)
    clock = FakeClock()
    h = Harness.create(clock, MemoryBus(clock), arm, ledger=table)
    _accepting(arm)
    caplog.set_level(logging.INFO)
    try:
        h.send_request({"resourceIds": [resource_id(cache=c) for c in CACHES],
                        "requestId": REQUEST_ID})
        h.run()
    finally:
        table.close()
    assert h.batch(REQUEST_ID, {resource_id(cache=c): "Succeeded" for c in CACHES},
                   "Succeeded")
    lines = _lines(caplog)
    assert [line[:120] for line in lines if not line.startswith(f"request {REQUEST_ID}: ")
            ] == []


class AcceptRefusingLedger(MemoryLedger):
    """Refuses every record of a target as accepted (the table fails after the POST)."""

    def update(self, row):  # type: ignore[no-untyped-def]
        if row.key and row.state == "accepted":
            raise LedgerError("table service: 503 ServerBusy")
        return super().update(row)


def _kusto(text: str, pattern: str) -> str:
    found = re.search(pattern, text)
    assert found, f"docs/azure.md has no {pattern!r}"
    return found.group(1)


def test_the_documented_queries_match_the_lines_the_app_writes(
        arm: ScriptedArm, caplog: pytest.LogCaptureFixture) -> None:
    docs = (REPO / "docs" / "azure.md").read_text()
    clock = FakeClock()
    h = Harness.create(clock, MemoryBus(clock), arm, ledger=AcceptRefusingLedger())
    for cache, end in zip(CACHES, ["Succeeded", "Failed", "Succeeded"], strict=True):
        op = arm.new_operation(SUB)
        arm.on_flush(SUB, RG, cache, then=Answer(202, {"Azure-AsyncOperation": op.url}, b""))
        arm.on_operation(op, Answer(200, {}, op.status("InProgress")),
                         then=Answer(200, {}, op.status(end)))
    caplog.set_level(logging.INFO)
    h.send_request({"resourceIds": [resource_id(cache=c) for c in CACHES],
                    "requestId": REQUEST_ID})
    h.run()
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    # "A request's invocations": the prefix every line of the request starts with
    assert 'message startswith_cs strcat("request ", requestId, ": ")' in docs
    assert all(r.getMessage().startswith(f"request {REQUEST_ID}: ") for r in records)
    # "Outcomes over time": extract_all's pattern, one match per completion event
    pattern = _kusto(docs, r'extract_all\(@"(.+?)", message\)')
    assert _kusto(docs, r'message contains_cs "(: completed )"') == ": completed "
    ends = [tuple(m) for r in records if ": completed " in r.getMessage()
            for m in re.findall(pattern, r.getMessage())]
    assert sorted(ends) == sorted([("Succeeded", "cache-a"), ("Failed", "cache-b"),
                                   ("Succeeded", "cache-c"), ("Failed", "request")])
    # "Ledger records skipped": an error line holding the phrase the query looks for
    phrase = _kusto(docs, r'severityLevel >= 3 and message contains_cs "([^"]+)"')
    skipped = [r for r in records if phrase in r.getMessage()]
    assert skipped and all(r.levelno >= logging.ERROR for r in skipped)
