"""Property-based fuzzing of `redisflush send` arguments (in process, `--dry-run`): any mix of
flags and values, odd ones included (blank, unicode, argv bytes that were not UTF-8, huge or
negative numbers, values that look like flags), is either a request printed as one JSON line
(exit 0) or one `error:` line that names the flag (exit 2); never a
traceback, and never a request that widened what the flags named (README, "CLI")."""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redisflush.cli import main

EXPLORE = bool(os.environ.get("FUZZ_RANDOM"))
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "500")), deadline=None,
                derandomize=not EXPLORE, database=None,
                suppress_health_check=[HealthCheck.too_slow])

SUB = "00000000-0000-0000-0000-000000000000"
CLASSIC = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Cache/redis/c"
DB = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Cache/redisEnterprise/k"
VALUE_FLAGS = ["--resource-id", "--subscription", "--resource-group", "--cache", "--cluster",
               "--database", "--linked-id", "--tag", "--kind", "--request-id", "--reason",
               "--requested-by", "--timeout"]
SWITCHES = ["--all", "--no-linked", "--json"]
VALUES = st.text(max_size=12) | st.sampled_from([
    "", " ", "\t", SUB, SUB.upper(), "rg", "rg.", "c", "k", "default", CLASSIC, DB,
    DB + "/databases/d", "app=shop", "=v", "a==b", "redis", "REDISENTERPRISE", "memcached",
    "30", "86400", "86401", "-1", "0", "1e3", "nan", "9" * 400, "\u0663\u0660", "\uff13\uff10",
    "\udcff", "a\udcffb", "x" * 300, "--all", "-x", "rel-1", "a/b", "\u202e", "\n"])


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    argv: list[str] = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 4)) == 0:
            argv.append(draw(st.sampled_from(SWITCHES)))
        else:
            argv += [draw(st.sampled_from(VALUE_FLAGS)), draw(VALUES)]
    return argv


@pytest.fixture(scope="module", autouse=True)
def pipeline_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No host.json and no app setting: what a pipeline has."""
    before, saved = Path.cwd(), dict(os.environ)
    os.chdir(tmp_path_factory.mktemp("pipeline"))
    for name in ("ServiceBusConnection", "ServiceBusConnection__fullyQualifiedNamespace",
                 "REDISFLUSH_TIMEOUT_SECONDS", "REDISFLUSH_MAX_TARGETS",
                 "REDISFLUSH_REQUEST_QUEUE", "REDISFLUSH_REPLY_QUEUE"):
        os.environ.pop(name, None)
    yield
    os.chdir(before)
    os.environ.clear()
    os.environ.update(saved)


@FUZZ
@given(argvs())
def test_any_send_arguments_are_a_request_or_one_line_naming_the_flag(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["send", "--dry-run", *argv])
        except SystemExit as exc:  # argparse's own usage error
            code = exc.code  # type: ignore[assignment]
    text = err.getvalue()
    assert code in (0, 2), (code, text)
    if code == 0:
        body = json.loads(out.getvalue())
        assert isinstance(body, dict)
        if "selector" in body and "--resource-group" in argv:
            # a group given is never dropped: the selector stays inside it
            assert body["selector"].get("resourceGroup"), body
        return
    lines = [line for line in text.splitlines() if line.strip()]
    assert out.getvalue() == "" and lines, text
    error = [line for line in lines if line.startswith(("error:", "redisflush", "usage:"))]
    assert error, text
    # the flag is named (argparse's own errors, the forms, and the app's rules alike)
    assert "--" in lines[-1] or "the cache is required" in lines[-1], text


@pytest.mark.parametrize("argv, flag", [
    (["--subscription", "x", "--resource-group", "rg", "--cache", "c"], "--subscription"),
    (["--subscription", SUB, "--resource-group", "rg.", "--all"], "--resource-group"),
    (["--resource-id", CLASSIC, "--resource-id", "/x"], "--resource-id"),
    (["--subscription", SUB, "--tag", "a=" + "x" * 300], "--tag"),
    (["--resource-id", CLASSIC, "--no-linked"], "--no-linked"),
    (["--resource-id", DB, "--linked-id", "/x"], "--linked-id"),
    (["--resource-id", CLASSIC, "--timeout", "5"], "--timeout"),
])
def test_a_value_the_request_rules_refuse_is_named_by_its_flag(
        argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The app's rules named only the body's field (`selector.resourceGroup: ...`), which a
    pipeline never wrote; the line names the flag it gave as well."""
    assert main(["send", "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"error: argument {flag}: "), err
    assert "invalid request: " in err
