"""examples/*.yml: they parse, install the sender alone, and every `redisflush` command they run
uses only flags the CLI defines (docs/design.md, "CLI") in a target form the request accepts.

SEND_FLAGS below is the checker's own list of `send` flags;
test_the_real_parser_knows_every_recipe_flag holds it and every recipe to the real parser
(redisflush.cli.build_parser), so a flag the CLI drops or renames fails here.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GITHUB = EXAMPLES / "github-actions-flush.yml"
AZURE_DEVOPS = EXAMPLES / "azure-pipelines-flush.yml"
RECIPES = [GITHUB, AZURE_DEVOPS]
STOP = {"|", "||", "&&", ";", ">", ">>", "&", "2>", "<", "(", ")"}

# `redisflush send` flags (docs/design.md, "CLI"): those taking a value, and switches.
VALUE_FLAGS = {"--resource-id", "--subscription", "--resource-group", "--cache", "--cluster",
               "--database", "--linked-id", "--tag", "--kind", "--timeout", "--namespace",
               "--connection-string", "--request-id", "--reason", "--requested-by"}
SWITCHES = {"--no-linked", "--all", "--wait", "--json", "--local", "--dry-run"}
REPEATABLE = {"--resource-id", "--linked-id", "--tag"}
SEND_FLAGS = VALUE_FLAGS | SWITCHES
KINDS = {"redis", "redisEnterprise"}
EXIT_CODES = {0: "Succeeded", 1: "Failed/Canceled/Rejected", 2: "usage", 3: "TimedOut",
              130: "interrupted"}
# a pipeline expression stands for one value: ${{ ... }} (GitHub, Azure DevOps templates) and
# $(...) (Azure DevOps macros)
PIPELINE_EXPRESSION = re.compile(r"\$\{\{[^}]*\}\}|\$\([\w.]+\)")


class BadCommand(ValueError):
    pass


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


SCRIPT_KEYS = {"run", "script", "inlineScript", "bash", "pwsh", "powershell"}


def scripts(node: Any) -> Iterator[str]:
    """The shell scripts of a pipeline (GitHub `run`, Azure DevOps `script`/`inlineScript`...),
    in document order."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SCRIPT_KEYS and isinstance(value, str):
                yield value
            else:
                yield from scripts(value)
    elif isinstance(node, list):
        for value in node:
            yield from scripts(value)


def shell_commands(script: str) -> Iterator[list[str]]:
    """Each simple command of a script (continuations joined, split at pipes and `;`)."""
    text = script.replace("\\\n", " ")
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command: list[str] = []
        for token in lexer:
            if token in STOP:
                if command:
                    yield command
                command = []
            else:
                command.append(token)
        if command:
            yield command


def redisflush_commands(doc: dict[str, Any]) -> list[list[str]]:
    """Every `redisflush ...` run by any script of the pipeline, as argv after `redisflush`."""
    return [command[1:] for script in scripts(doc) for command in shell_commands(script)
            if command[0] == "redisflush"]


def pip_installs(doc: dict[str, Any]) -> list[list[str]]:
    return [command for script in scripts(doc) for command in shell_commands(script)
            if command[:2] == ["pip", "install"]
            or command[:4] == ["python", "-m", "pip", "install"]]


def parse_send(argv: list[str]) -> dict[str, list[str]]:
    """The options of `redisflush send`, checked against SEND_FLAGS; flag -> values."""
    if not argv or argv[0] != "send":
        raise BadCommand(f"not a send command: {argv[:1]}")
    options: dict[str, list[str]] = {}
    i = 1
    while i < len(argv):
        flag = argv[i]
        if flag not in SEND_FLAGS:
            raise BadCommand(f"unknown flag or stray argument {flag!r}")
        if flag in options and flag not in REPEATABLE:
            raise BadCommand(f"{flag} given twice")
        if flag in VALUE_FLAGS:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise BadCommand(f"{flag} needs a value")
            options.setdefault(flag, []).append(argv[i + 1])
            i += 2
        else:
            options.setdefault(flag, []).append("")
            i += 1
    return options


def concrete(value: str) -> str:
    """The value with each pipeline expression replaced by a plausible stand-in."""
    return PIPELINE_EXPRESSION.sub("1", value)


def target_form(options: dict[str, list[str]]) -> str:
    """Which request form the options make (docs/design.md, "CLI": TARGET), or BadCommand."""
    has = set(options)
    linked = {"--linked-id", "--no-linked"} & has
    if linked == {"--linked-id", "--no-linked"}:
        raise BadCommand("--linked-id and --no-linked together")
    if "--resource-id" in has:
        if has & {"--subscription", "--resource-group", "--cache", "--cluster", "--database",
                  "--tag", "--all", "--kind"}:
            raise BadCommand("--resource-id with another target form")
        if linked and len(options["--resource-id"]) != 1:
            raise BadCommand("linked databases go with one Managed Redis database")
        return "resourceIds" if len(options["--resource-id"]) > 1 else "resourceId"
    if "--subscription" not in has:
        raise BadCommand("no target: --resource-id, or --subscription with a target")
    if "--cache" in has:
        if "--resource-group" not in has or has & {"--cluster", "--database", "--tag", "--all",
                                                   "--kind"} or linked:
            raise BadCommand("a classic cache by parts is --subscription --resource-group --cache")
        return "cache"
    if "--cluster" in has:
        if "--resource-group" not in has or has & {"--tag", "--all", "--kind"}:
            raise BadCommand("a Managed Redis database by parts is --subscription "
                             "--resource-group --cluster [--database]")
        return "database"
    if has & {"--database"} or linked:
        raise BadCommand("--database and linked databases need --cluster")
    selectors = {"--tag", "--all"} & has
    if len(selectors) != 1:
        raise BadCommand("a selector needs --tag K=V ... or --all (exactly one of them)")
    for tag in options.get("--tag", []):
        if not re.fullmatch(r"[^=\s]+=.*", concrete(tag)):
            raise BadCommand(f"--tag {tag!r}: K=V")
    for kind in options.get("--kind", []):
        if kind not in KINDS:
            raise BadCommand(f"--kind {kind!r}")
    return "selector"


def check_values(options: dict[str, list[str]]) -> None:
    for timeout in options.get("--timeout", []):
        if not (timeout.isdigit() and 30 <= int(timeout) <= 86400):
            raise BadCommand(f"--timeout {timeout!r}: 30..86400")
    for request_id in options.get("--request-id", []):
        if not re.fullmatch(r"[A-Za-z0-9._:-]{1,80}", concrete(request_id)):
            raise BadCommand(f"--request-id {request_id!r}")
    for name in ("--reason", "--requested-by"):
        for value in options.get(name, []):
            if len(value) > 256:
                raise BadCommand(f"{name}: at most 256 characters")
    for database in options.get("--database", []):
        if not re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?", concrete(database)):
            raise BadCommand(f"--database {database!r}")


def sends(path: Path) -> list[dict[str, list[str]]]:
    result = []
    for argv in redisflush_commands(load(path)):
        try:
            options = parse_send(argv)
            target_form(options)
            check_values(options)
        except BadCommand as exc:
            pytest.fail(f"{path.name}: redisflush {' '.join(argv)}: {exc}")
        result.append(options)
    return result


# -- the checker itself ---------------------------------------------------------------------------

def test_the_extractor_sees_commands_flags_and_stops_at_pipes() -> None:
    doc = {"name": "redisflush send --bogus (a step name, not a script)",
           "run": 'set -e\npip install "redisflush @ git+https://x/redisflush"\n'
                  'redisflush send --wait \\\n  --json | tee "x y"  # done\n'}
    assert redisflush_commands(doc) == [["send", "--wait", "--json"]]
    assert pip_installs(doc) == [["pip", "install", "redisflush @ git+https://x/redisflush"]]


@pytest.mark.parametrize("argv,error", [
    (["send", "--resource-id", "x", "--no-such-flag"], "unknown flag"),
    (["send", "--resource-id"], "needs a value"),
    (["send", "--subscription", "s", "--subscription", "t", "--all"], "twice"),
    (["watch"], "not a send"),
])
def test_the_checker_rejects_what_the_cli_rejects(argv: list[str], error: str) -> None:
    with pytest.raises(BadCommand, match=error):
        parse_send(argv)


@pytest.mark.parametrize("argv,form", [
    (["--resource-id", "/a"], "resourceId"),
    (["--resource-id", "/a", "--resource-id", "/b"], "resourceIds"),
    (["--resource-id", "/db", "--no-linked"], "resourceId"),
    (["--subscription", "s", "--resource-group", "g", "--cache", "c"], "cache"),
    (["--subscription", "s", "--resource-group", "g", "--cluster", "c"], "database"),
    (["--subscription", "s", "--resource-group", "g", "--cluster", "c", "--database", "d",
      "--linked-id", "/l1", "--linked-id", "/l2"], "database"),
    (["--subscription", "s", "--tag", "app=shop", "--tag", "env=prod"], "selector"),
    (["--subscription", "s", "--resource-group", "g", "--all", "--kind", "redis"], "selector"),
])
def test_the_checker_knows_every_target_form(argv: list[str], form: str) -> None:
    assert target_form(parse_send(["send", *argv])) == form


@pytest.mark.parametrize("argv", [
    [],                                                            # nothing to flush
    ["--subscription", "s"],                                       # no selector by omission
    ["--subscription", "s", "--tag", "app"],                       # K=V
    ["--subscription", "s", "--tag", "a=b", "--all"],
    ["--subscription", "s", "--all", "--kind", "memcached"],
    ["--resource-id", "/a", "--cache", "c"],
    ["--resource-id", "/a", "--resource-id", "/b", "--no-linked"],
    ["--subscription", "s", "--resource-group", "g", "--cache", "c", "--cluster", "d"],
    ["--subscription", "s", "--cluster", "c"],                     # no resource group
    ["--subscription", "s", "--resource-group", "g", "--cluster", "c", "--no-linked",
     "--linked-id", "/l"],
    ["--subscription", "s", "--resource-group", "g", "--database", "d"],
])
def test_the_checker_refuses_ambiguous_or_incomplete_targets(argv: list[str]) -> None:
    with pytest.raises(BadCommand):
        target_form(parse_send(["send", *argv]))


@pytest.mark.parametrize("argv", [
    ["--timeout", "10"], ["--timeout", "86401"], ["--timeout", "abc"],
    ["--request-id", "has space"], ["--request-id", "x" * 129],
    ["--database", "-bad"],
])
def test_the_checker_refuses_bad_values(argv: list[str]) -> None:
    with pytest.raises(BadCommand):
        check_values(parse_send(["send", *argv]))


def test_pipeline_expressions_count_as_values() -> None:
    options = parse_send(["send", "--request-id",
                          "deploy-${{ github.run_id }}-$(System.JobAttempt)"])
    check_values(options)


def test_the_real_parser_knows_every_recipe_flag() -> None:
    """The CLI's own parser knows every flag the recipes use (and every flag SEND_FLAGS
    lets them use). No skip: a CLI that fails to import or lost a flag fails here."""
    from redisflush.cli import build_parser
    parser = build_parser()
    send = next(action.choices["send"] for action in parser._actions
                if getattr(action, "choices", None) and "send" in action.choices)
    known = set(send._option_string_actions)
    used = {flag for path in RECIPES for options in sends(path) for flag in options}
    assert used <= known, sorted(used - known)
    assert SEND_FLAGS <= known, sorted(SEND_FLAGS - known)
    # and it parses every recipe command, pipeline expressions replaced by plausible values
    stand_in = {"--subscription": "00000000-0000-0000-0000-000000000000",
                "--resource-id": "/subscriptions/00000000-0000-0000-0000-000000000000/"
                                 "resourceGroups/rg-app/providers/Microsoft.Cache/Redis/web",
                "--resource-group": "rg-app", "--cluster": "shop-cache",
                "--namespace": "my-ns"}
    for path in RECIPES:
        for argv in redisflush_commands(load(path)):
            concrete_argv = [stand_in.get(argv[i - 1], concrete(arg))
                             if PIPELINE_EXPRESSION.search(arg) else arg
                             for i, arg in enumerate(argv)]
            try:
                parser.parse_args(concrete_argv)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - its usage error, whatever it is
                pytest.fail(f"{path.name}: {' '.join(concrete_argv)}: {exc}")


# -- the recipes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_redisflush_command_is_a_valid_send(path: Path) -> None:
    commands = sends(path)
    assert len(commands) >= 3, f"{path.name}: expected the selector, cache and Managed Redis sends"
    for options in commands:
        if "--wait" in options:
            assert "--json" in options                         # the event on stdout, for tee
            assert options.get("--namespace"), "Entra ID through the namespace"
            assert "--timeout" in options
            assert "--local" not in options and "--connection-string" not in options
            assert "--request-id" in options                   # a re-run of a step flushes once


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_has_the_multi_region_selector_and_managed_redis_examples(path: Path) -> None:
    by_form: dict[str, list[dict[str, list[str]]]] = {}
    for options in sends(path):
        if "--wait" in options:
            by_form.setdefault(target_form(options), []).append(options)
    assert set(by_form) == {"selector", "resourceId", "database"}, set(by_form)
    (selector,) = by_form["selector"]
    assert selector["--tag"] == ["app=shop"]
    assert "--resource-group" not in selector               # the whole subscription
    assert "--kind" not in selector                         # both kinds
    (database,) = by_form["database"]
    assert database["--database"] == ["default"]
    assert "--no-linked" not in database and "--linked-id" not in database   # the whole group


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_installs_the_sender_alone(path: Path) -> None:
    doc = load(path)
    text = path.read_text()
    assert "python -m redisflush" not in text               # the console script
    assert "requirements.txt" not in text                   # not the function app's
    (install,) = pip_installs(doc)
    (package,) = install[2:]
    assert re.fullmatch(r"redisflush @ git\+https://github\.com/[\w.-]+/redisflush(@\S+)?",
                        concrete(package)) or package.endswith(".whl"), package
    # installed before anything runs it
    ordered = list(scripts(doc))
    first_install = next(i for i, s in enumerate(ordered) if pip_installs({"run": s}))
    first_send = next(i for i, s in enumerate(ordered) if redisflush_commands({"run": s}))
    assert first_install < first_send


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_documents_the_exit_codes(path: Path) -> None:
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    flat = " ".join(header.replace("#", " ").split())
    for code, word in EXIT_CODES.items():
        assert re.search(rf"\b{code} {re.escape(word)}", flat), (code, word)


def test_docs_give_the_same_exit_codes() -> None:
    for path in (EXAMPLES / "README.md", ROOT / "docs" / "azure.md"):
        flat = " ".join(path.read_text().replace("*", "").split())
        for code, word in EXIT_CODES.items():
            assert re.search(rf"\b{code} {re.escape(word)}", flat), (path.name, code, word)


def test_github_workflow_uses_oidc_after_deploy() -> None:
    doc = load(GITHUB)
    assert doc["permissions"]["id-token"] == "write"
    triggers = doc.get("on", doc.get(True))          # YAML 1.1 reads a bare `on` as True
    assert triggers and "push" in triggers
    scope_input = triggers["workflow_dispatch"]["inputs"]["scope"]
    jobs = doc["jobs"]
    flush = next(job for job in jobs.values()
                 if any("redisflush send" in (s.get("run") or "") for s in job["steps"]))
    assert flush["needs"] in jobs                    # runs after the deploy job
    steps = flush["steps"]
    login = next(s for s in steps if s.get("uses", "").startswith("azure/login@"))
    assert login["uses"] == "azure/login@v2"
    assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}  # no `creds`
    assert not any(s.get("uses", "").startswith("actions/checkout") for s in steps)
    order = [s.get("uses", "").split("@")[0] for s in steps]
    assert order.index("azure/login") < order.index("actions/setup-python")
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert python["with"]["python-version"] in ("3.11", "3.12", "3.13")
    runs = [s.get("run") or "" for s in steps]
    install = next(i for i, r in enumerate(runs) if "pip install" in r)
    waits = [i for i, r in enumerate(runs) if "--wait" in r]
    assert waits and install < min(waits)
    scopes = []
    for i in waits:
        # a non-zero exit must fail the step even through `| tee`
        assert "set -euo pipefail" in runs[i] and steps[i]["shell"] == "bash"
        assert "continue-on-error" not in steps[i]
        scope = re.fullmatch(r"env\.SCOPE == '([\w-]+)'", steps[i]["if"])
        assert scope, steps[i]["if"]
        scopes.append(scope.group(1))
    # exactly one flush runs, whichever scope is chosen; a push takes the default
    assert sorted(scopes) == sorted(scope_input["options"])
    assert doc["env"]["SCOPE"] == f"${{{{ inputs.scope || '{scope_input['default']}' }}}}"
    assert scope_input["default"] == "selector"


def test_azure_devops_flushes_in_an_azure_cli_task_after_deploy() -> None:
    doc = load(AZURE_DEVOPS)
    stages = {stage["stage"]: stage for stage in doc["stages"]}
    flush = stages["FlushCache"]
    assert flush["dependsOn"] in stages
    steps = [step for job in flush["jobs"] for step in job["steps"]]
    assert {"checkout": "none"} in steps
    tasks = [s for s in steps if s.get("task") == "AzureCLI@2"]
    (scope_param,) = [p for p in doc["parameters"] if p["name"] == "scope"]
    scopes = []
    for task in tasks:
        inputs = task["inputs"]
        assert inputs["failOnStandardError"] is False   # progress goes to stderr
        assert inputs["scriptType"] == "bash"
        assert "redisflush send" in inputs["inlineScript"]
        assert "set -euo pipefail" in inputs["inlineScript"]
        assert not task.get("continueOnError", False)
        assert re.search(r"\$\(\w+\)", inputs["azureSubscription"])
        scope = re.fullmatch(r"and\(succeeded\(\), eq\('\$\{\{ parameters\.scope \}\}', "
                             r"'(\w+)'\)\)", task["condition"])
        assert scope, task["condition"]
        scopes.append(scope.group(1))
    assert sorted(scopes) == sorted(scope_param["values"])          # exactly one runs
    assert scope_param["default"] == "selector"
    install = next(i for i, s in enumerate(steps) if "pip install" in s.get("script", ""))
    assert install < steps.index(tasks[0])
    python = next(s for s in steps if s.get("task") == "UsePythonVersion@0")
    assert python["inputs"]["versionSpec"] in ("3.11", "3.12", "3.13")
