"""host.json: the telemetry docs/azure.md ("Application Insights queries") relies on."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEVELS = ["Trace", "Debug", "Information", "Warning", "Error", "Critical", "None"]


def host() -> dict:
    return json.loads((ROOT / "host.json").read_text())


def test_successful_runs_keep_their_requests_rows() -> None:
    # docs/azure.md: every invocation (LedgerPurge runs included) is a `requests` row, and its
    # queries count and take percentiles over them. The host writes the rows of successful
    # runs only when Host.Results logs at Information or lower (at Error, failed runs only).
    levels = host()["logging"]["logLevel"]
    level = levels.get("Host.Results", levels.get("default", "Information"))
    assert LEVELS.index(level) <= LEVELS.index("Information"), level


def test_requests_and_traces_are_never_sampled() -> None:
    sampling = host()["logging"]["applicationInsights"]["samplingSettings"]
    if sampling.get("isEnabled", True):
        excluded = set(sampling.get("excludedTypes", "").split(";"))
        assert {"Request", "Trace"} <= excluded


def test_function_logs_keep_the_apps_lines() -> None:
    # the app's `request <requestId>: <outcome>` lines and the host's `Executed ...` line
    levels = host()["logging"]["logLevel"]
    assert LEVELS.index(levels.get("Function", levels["default"])) <= LEVELS.index("Information")
