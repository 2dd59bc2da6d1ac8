"""examples/*.yml: they parse, their redisflush commands exist with those flags, OIDC."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from redisflush.cli import UsageError, build_parser

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GITHUB = EXAMPLES / "github-actions-flush.yml"
AZURE_DEVOPS = EXAMPLES / "azure-pipelines-flush.yml"
RECIPES = [GITHUB, AZURE_DEVOPS]
STOP = {"|", "||", "&&", ";", ">", ">>", "&", "2>", "<"}


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def redisflush_commands(doc: dict[str, Any]) -> list[list[str]]:
    """Every `python -m redisflush ...` in any script of the pipeline, as argv after it."""
    commands = []
    for script in strings(doc):
        text = script.replace("\\\n", " ")          # shell line continuations
        for line in text.splitlines():
            at = line.find("python -m redisflush")
            if at < 0:
                continue
            lexer = shlex.shlex(line[at:], posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = []
            for token in lexer:
                if token in STOP:
                    break
                tokens.append(token)
            assert tokens[:3] == ["python", "-m", "redisflush"]
            commands.append(tokens[3:])
    return commands


def test_the_extractor_sees_flags_and_stops_at_pipes() -> None:
    doc = {"run": 'python -m redisflush send --wait \\\n  --json | tee "x y"\n'}
    assert redisflush_commands(doc) == [["send", "--wait", "--json"]]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_and_runs_send_wait(path: Path) -> None:
    commands = redisflush_commands(load(path))
    waits = [c for c in commands if c[0] == "send" and "--wait" in c]
    assert waits, f"{path.name}: no `send --wait`"
    parser = build_parser()
    for argv in commands:
        try:
            args = parser.parse_args(argv)
        except UsageError as exc:                   # an unknown flag or a bad value
            pytest.fail(f"{path.name}: {' '.join(argv)}: {exc}")
        if "--wait" in argv:
            assert args.wait and args.json and args.timeout == 900
            assert args.namespace and args.resource_id
            assert not args.local and not args.connection_string   # identity, no secret


def test_the_cli_parser_really_rejects_unknown_flags() -> None:
    with pytest.raises(UsageError):
        build_parser().parse_args(["send", "--resource-id", "x", "--no-such-flag"])


def test_github_workflow_uses_oidc_after_deploy() -> None:
    doc = load(GITHUB)
    assert doc["permissions"]["id-token"] == "write"
    triggers = doc.get("on", doc.get(True))          # YAML 1.1 reads a bare `on` as True
    assert triggers and "push" in triggers
    jobs = doc["jobs"]
    flush = next(job for job in jobs.values() if any(
        "python -m redisflush send" in (s.get("run") or "") and "--wait" in s.get("run", "")
        for s in job["steps"]))
    assert flush["needs"] in jobs                    # runs after the deploy job
    uses = [s.get("uses", "") for s in flush["steps"]]
    login = next(s for s in flush["steps"] if s.get("uses", "").startswith("azure/login@"))
    assert login["uses"] == "azure/login@v2"
    assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}  # no `creds`
    order = [u.split("@")[0] for u in uses if u]
    assert order.index("azure/login") < order.index("actions/setup-python")
    runs = [s.get("run", "") for s in flush["steps"]]
    install = next(i for i, r in enumerate(runs) if "pip install -r requirements.txt" in r)
    send = next(i for i, r in enumerate(runs) if "--wait" in r)
    assert install < send
    # a non-zero exit must fail the step even through `| tee`
    assert "set -euo pipefail" in runs[send] or "| " not in runs[send]
    assert "continue-on-error" not in flush["steps"][send]


def test_azure_devops_flushes_in_an_azure_cli_task_after_deploy() -> None:
    doc = load(AZURE_DEVOPS)
    stages = {stage["stage"]: stage for stage in doc["stages"]}
    flush = stages["FlushCache"]
    assert flush["dependsOn"] in stages
    steps = [step for job in flush["jobs"] for step in job["steps"]]
    (task,) = [s for s in steps if s.get("task") == "AzureCLI@2"]
    inputs = task["inputs"]
    assert inputs["failOnStandardError"] is False
    assert inputs["scriptType"] == "bash"
    assert "python -m redisflush send" in inputs["inlineScript"]
    assert "set -euo pipefail" in inputs["inlineScript"]
    assert not task.get("continueOnError", False)
    assert any("pip install -r requirements.txt" in s.get("script", "") for s in steps)
    assert re.search(r"\$\(\w+\)", inputs["azureSubscription"])
