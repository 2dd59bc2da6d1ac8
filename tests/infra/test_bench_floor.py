"""bench/cpu_floor.py, the CPU of the parts no poll step can skip, and what the CPU finding
says from it (bench/run.py). The parts run for real (the local bus and ledger on SQLite files,
the worker's converter, three HTTP clients against a server process on loopback), so a part
that broke or did nothing fails here; the finding is checked against the figures of the run
that first measured it (0.46 ms per request with ArmClient, 2026-12-05)."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

from redisflush.ledger import LedgerRow
from redisflush.local.ledger import SqliteLedger

BENCH = Path(__file__).resolve().parents[2] / "bench"
MEASURED = {"bus: send + receive + complete": 0.103, "worker: message conversion": 0.098,
            "state: decode + encode": 0.051, "http.client alone": 0.092, "urllib3 pool": 0.168,
            "ArmClient": 0.208, "ledger: one write": 0.113, "event: one publish": 0.044}


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    return {name: importlib.import_module(name) for name in ("common", "cpu_floor", "run")}


def test_every_part_runs_for_real_and_costs_cpu(bench):
    result = bench["cpu_floor"].run(calls=40, rounds=1)
    assert set(result["ms"]) == set(bench["cpu_floor"].PARTS)
    assert all(ms > 0 for ms in result["ms"].values()), result["ms"]
    # the poll message is the app's own, with its operation URL: about 1.4 KiB
    assert 1000 < result["poll_body_bytes"] < 4000
    assert "stored 5.00 rows per flush" in bench["cpu_floor"].note(result, 5.0)
    assert "the app writes more" in bench["cpu_floor"].note(result, None)


def test_section_3_counts_the_rows_the_ledger_stored(bench, tmp_path):
    cpu = importlib.import_module("cpu")
    path = tmp_path / "ledger.sqlite"
    assert cpu._ledger_writes(path) is None  # no ledger: nothing to say
    ledger = SqliteLedger(path)
    row = ledger.insert(LedgerRow("r", "", "open"))
    assert row is not None and ledger.insert(LedgerRow("r", "", "open")) is None  # lost
    assert ledger.update(row) is not None
    ledger.close()
    assert cpu._ledger_writes(path) == 2  # the insert that lost counts nothing


def test_the_floor_adds_the_parts_of_each_read_and_of_the_flush(bench):
    floor = bench["cpu_floor"].floor
    app = floor(MEASURED, 11, "ArmClient")
    assert app["per_request"] == pytest.approx(0.103 + 0.098 + 0.051 + 0.208)
    assert app["per_flush"] == pytest.approx(11 * 0.46 + 2 * 0.113 + 0.044)
    assert floor(MEASURED, 11)["http"] == 0.092  # the cheapest GET when none is named
    rows = bench["cpu_floor"].table({"ms": MEASURED, "calls": 2000, "rounds": 3}, 11, 4.885)
    assert rows[-3][1] == "4.05 ms = 0.83x the 4.88 ms allowed"  # http.client alone
    assert rows[-1][1] == "5.33 ms = 1.09x the 4.88 ms allowed"  # ArmClient


def cpu_section(common: ModuleType, ms: dict[str, float]) -> object:
    s = common.Section("3")
    s.data = {
        "reqs": 11.0, "per_req": 1.93, "per": 21.28, "issue_baseline": "6332ebb",
        "baselines": {"6332ebb": {"per": 9.77, "per_req": 1.95, "reqs": 5.0, "ratio": 2.18,
                                  "ratio_req": 0.99}},
        "floor": {"ms": ms, "calls": 2000, "rounds": 3}}
    return s


def test_the_finding_says_what_the_floor_leaves_for_the_rest(bench):
    text = bench["run"]._findings({"3": cpu_section(bench["common"], MEASURED)})[0]
    assert "0.46 ms per request with ArmClient" in text and "1.09x" in text
    assert "the 4.88 ms per flush the target allows at 11 requests" in text
    assert "the parts alone pass it" in text
    # http.client alone: (4.885 - 4.054) / 11 = 0.076 ms left against 1.93 - 0.46 = 1.47 now
    assert "with http.client alone they leave 0.08 ms per request" in text
    assert "takes 1.47 ms now: it would take 95% off that rest" in text
    assert "out of reach" not in text and "does not show" not in text


def test_the_finding_says_out_of_reach_only_when_every_client_passes_the_target(bench):
    dear = {**MEASURED, "bus: send + receive + complete": 0.3}
    text = bench["run"]._findings({"3": cpu_section(bench["common"], dear)})[0]
    assert "out of reach in this design" in text and "leave" not in text
