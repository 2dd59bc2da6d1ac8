"""What bench/ prints about cost (section 5) and about the missed CPU target (the findings),
from the figures of the last full run (docs/benchmarks.md, 2026-12-05): the text must say only
what those figures show. A busy instance is shared by the executions running on it at once, so
ours' "never idle" cost is given per C and set against the SDK's held executions on the same
instance; the CPU finding quotes ArmClient's own exchange and py-spy's shares, not the SDK."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    return {name: importlib.import_module(name) for name in ("common", "cost", "run")}


def lag_section(common: ModuleType) -> Any:
    """Section 1's rows for a 10 s flush as the last full run measured them (ours' 12
    executions took 41 ms of CPU on loopback, section 5's $0.0366)."""
    s = common.Section("1")
    s.data = {"durations": [10.0], "rows": {
        "ours|10": {"executions": 12, "reads": 11, "exec_ms": 41.3, "requests": 12},
        "sdk|10": {"median": 19.5, "requests": 4}, "sdk2|10": {"median": 1.46, "requests": 9},
        "sdk1|10": {"median": 0.48, "requests": 14}}}
    return s


def test_cost_on_a_busy_instance_is_per_shared_execution_and_names_where_the_sdk_wins(bench):
    s = bench["cost"].run(lag_section(bench["common"]))
    assert s.table[1][2] == "$0.673" and s.table[1][6] == "$0.0366 / $0.081"   # as published
    rows = {r[0]: r[1:] for r in s.extra}
    assert rows["C = 1"][:2] == ["$0.081", "$0.588"] and rows["C = 1"][3] == "ours"
    assert rows["C = 32"][:2] == ["$0.036", "$0.022"] and rows["C = 32"][3] == "the SDK way"
    even = s.data["shared"]["break_even"]
    assert even["sdk1"] == pytest.approx(17.5, abs=0.1)
    assert rows["break-even C (the SDK way cheaper above it)"][1] == "17.5"
    headline = s.headline[0]
    assert "tends to" not in headline
    assert "$0.0344 + $0.0469/C" in headline and "$0.0036 + $0.5847/C" in headline
    assert "the SDK way above it" in headline and "ours $0.036, the SDK $0.022" in headline


def test_break_even_is_none_when_ours_is_cheaper_at_any_sharing(bench):
    cost = bench["cost"]
    ours = {"execs": 1.0, "ops": 4.0, "azure_gb_s": 0.1}
    sdk = {"execs": 1.0, "ops": 4.0, "busy_gb_s": 20.0}
    assert cost.break_even(ours, "azure_gb_s", sdk) is None


def cpu_section(common: ModuleType, arm_client: bool = True) -> Any:
    s = common.Section("3")
    s.data = {
        "reqs": 11.0, "per_req": 1.93, "per": 21.28, "issue_baseline": "6332ebb",
        "baselines": {
            "6332ebb": {"per": 9.77, "per_req": 1.95, "reqs": 5.0, "ratio": 2.18,
                        "ratio_req": 0.99},
            "d200612": {"per": 27.03, "per_req": 2.46, "reqs": 11.0, "ratio": 0.79,
                        "ratio_req": 0.79}},
        "sdk": {"per": 18.73, "per_req": 1.44, "reqs": 13.0},
        "profile": {"cpu": 6.2, "profile": {"total": 691, "self": {}, "inclusive": {
            "an ARM call (ArmClient.call and below)": 242, "the local bus (SQLite)": 60,
            "the ledger (SQLite)": 32, "logging": 22}}}}
    if arm_client:
        s.data["arm_client"] = {"cpu_ms": 0.24, "wall_ms": 0.35}
    return s


def test_the_cpu_finding_says_what_the_run_shows_and_leans_on_no_sdk_figure(bench):
    text = bench["run"]._findings({"3": cpu_section(bench["common"])})[0]
    assert "0.44 ms per request, against 1.93 ms now" in text
    assert "takes 0.24 ms of CPU per call" in text and "about 1.69 ms" in text
    assert "an ARM call is 35% inclusive, the local bus 9%, the ledger 5%" in text
    assert "held 45% of that run's CPU" in text
    assert "does not show 0.44 ms per request to be out of reach" in text
    assert "77% off the CPU per request" in text and "took 21% off" in text
    assert "SDK" not in text and "1.44" not in text


def test_the_cpu_finding_without_the_arm_client_figure_still_reads(bench):
    text = bench["run"]._findings({"3": cpu_section(bench["common"], arm_client=False)})[0]
    assert "ArmClient's own exchange" not in text and "out of reach" in text
