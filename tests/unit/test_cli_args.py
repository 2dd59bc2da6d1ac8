"""The CLI's flags, in process: every TARGET form gives the body docs/design.md ("CLI") says,
every mixed or incomplete form and every out-of-range value is one line naming the flag
(exit 2), and the exit codes are the documented ones."""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

import redisflush.cli as cli
from redisflush.cli import build_parser, main
from redisflush.sender.errors import UsageError
from redisflush.sender.follow import exit_code, is_final
from redisflush.sender.report import Progress, describe
from redisflush.sender.targets import target_body

SUB = "00000000-0000-0000-0000-000000000000"
RG = "rg-app"
GROUP = f"/subscriptions/{SUB}/resourceGroups/{RG}"
CLASSIC = f"{GROUP}/providers/Microsoft.Cache/redis/cache-a"
DB = f"{GROUP}/providers/Microsoft.Cache/redisEnterprise/amr-a/databases/default"
LINKED = f"/subscriptions/{SUB}/resourceGroups/rg-b/providers/Microsoft.Cache/redisEnterprise/amr-b/databases/default"  # noqa: E501
PARTS = ["--subscription", SUB, "--resource-group", RG]


@pytest.fixture(autouse=True)
def pipeline_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No host.json and no app setting: what a pipeline has."""
    monkeypatch.chdir(tmp_path)
    for name in ("ServiceBusConnection", "ServiceBusConnection__fullyQualifiedNamespace",
                 "REDISFLUSH_TIMEOUT_SECONDS", "REDISFLUSH_MAX_TARGETS",
                 "REDISFLUSH_REQUEST_QUEUE", "REDISFLUSH_REPLY_QUEUE"):
        monkeypatch.delenv(name, raising=False)


def body(*argv: str) -> dict[str, Any]:
    return target_body(build_parser().parse_args(["send", *argv]))


FORMS = {
    "one-id": (["--resource-id", CLASSIC], {"resourceId": CLASSIC}),
    "several-ids": (["--resource-id", CLASSIC, "--resource-id", DB],
                    {"resourceIds": [CLASSIC, DB]}),
    "classic-parts": ([*PARTS, "--cache", "cache-a"],
                      {"subscriptionId": SUB, "resourceGroup": RG, "cacheName": "cache-a"}),
    "cluster-parts": ([*PARTS, "--cluster", "amr-a"],
                      {"subscriptionId": SUB, "resourceGroup": RG, "clusterName": "amr-a"}),
    "cluster-database-linked": (
        [*PARTS, "--cluster", "amr-a", "--database", "db2", "--linked-id", LINKED],
        {"subscriptionId": SUB, "resourceGroup": RG, "clusterName": "amr-a",
         "databaseName": "db2", "linkedDatabaseIds": [LINKED]}),
    "cluster-alone": ([*PARTS, "--cluster", "amr-a", "--no-linked"],
                      {"subscriptionId": SUB, "resourceGroup": RG, "clusterName": "amr-a",
                       "linkedDatabaseIds": []}),
    "database-id-alone": (["--resource-id", DB, "--no-linked"],
                          {"resourceId": DB, "linkedDatabaseIds": []}),
    "selector-tags": (["--subscription", SUB, "--tag", "app=shop", "--tag", "env=a=b",
                       "--tag", "empty="],
                      {"selector": {"subscriptionId": SUB,
                                    "tags": {"app": "shop", "env": "a=b", "empty": ""}}}),
    "selector-all-in-group": ([*PARTS, "--all", "--kind", "REDISENTERPRISE", "--kind",
                               "redis", "--kind", "redis"],
                              {"selector": {"subscriptionId": SUB, "resourceGroup": RG,
                                            "all": True,
                                            "kinds": ["redisEnterprise", "redis"]}}),
}


@pytest.mark.parametrize("argv,expected", FORMS.values(), ids=list(FORMS))
def test_each_target_form_gives_its_body(argv: list[str], expected: dict[str, Any]) -> None:
    assert body(*argv) == expected


USAGE = {
    "nothing": ([], "the cache is required"),
    "subscription-only": (["--subscription", SUB], "the cache is required"),
    "cache-without-group": (["--subscription", SUB, "--cache", "c"],
                            "--cache needs --resource-group"),
    "id-and-cache": (["--resource-id", CLASSIC, "--cache", "c"],
                     "--resource-id cannot be combined with --cache"),
    "id-and-selector": (["--resource-id", CLASSIC, "--subscription", SUB, "--all"],
                        "--resource-id cannot be combined with --subscription, --all"),
    "cache-and-cluster": ([*PARTS, "--cache", "c", "--cluster", "k"],
                          "--cache cannot be combined with --cluster"),
    "cache-and-linked": ([*PARTS, "--cache", "c", "--no-linked"],
                         "--cache cannot be combined with --no-linked"),
    "linked-and-no-linked": ([*PARTS, "--cluster", "k", "--linked-id", LINKED, "--no-linked"],
                             "--linked-id cannot be combined with --no-linked"),
    "several-ids-linked": (["--resource-id", DB, "--resource-id", CLASSIC, "--no-linked"],
                           "several --resource-id cannot be combined with --no-linked"),
    "database-alone": ([*PARTS, "--database", "d"], "--database needs --cluster"),
    "kind-alone": ([*PARTS, "--kind", "redis"], "--kind needs a selector"),
    "tag-and-all": (["--subscription", SUB, "--tag", "a=b", "--all"],
                    "--tag cannot be combined with --all"),
    "selector-without-subscription": (["--all"], "a selector (--tag/--all) needs "
                                                 "--subscription"),
    "selector-with-cluster": ([*PARTS, "--cluster", "k", "--all"],
                              "--cluster cannot be combined with --all"),
    "tag-without-equals": (["--subscription", SUB, "--tag", "app"], "--tag: 'app' is not K=V"),
    "tag-without-name": (["--subscription", SUB, "--tag", "=v"], "--tag: '=v' is not K=V"),
    "tag-twice": (["--subscription", SUB, "--tag", "App=a", "--tag", "app=b"],
                  "--tag app: given twice"),
    "bad-kind": (["--subscription", SUB, "--all", "--kind", "memcached"],
                 "--kind: 'memcached' is not redis or redisEnterprise"),
    "local-and-namespace": (["--local", "--namespace", "ns", "--resource-id", CLASSIC],
                            "--local cannot be combined with --namespace"),
}


@pytest.mark.parametrize("argv,mentions", USAGE.values(), ids=list(USAGE))
def test_mixed_or_incomplete_forms_are_one_line(argv: list[str], mentions: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "--dry-run", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and mentions in err


# Every flag that takes a value refuses an empty or blank one (README, "CLI"): a pipeline's
# unset "$RG" must never read as a flag left out, which would widen a selector from the group
# to the whole subscription, or send --database "" to `default`.
SELECTOR = ["--subscription", SUB, "--all"]
EMPTY = {
    "resource-group-all": (["--subscription", SUB, "--resource-group", "{}", "--all"],
                           "--resource-group"),
    "resource-group-tag": (["--subscription", SUB, "--resource-group", "{}", "--tag",
                            "app=shop"], "--resource-group"),
    "resource-group-cache": (["--subscription", SUB, "--resource-group", "{}", "--cache", "c"],
                             "--resource-group"),
    "database": ([*PARTS, "--cluster", "amr-a", "--database", "{}"], "--database"),
    "subscription": (["--subscription", "{}", "--all"], "--subscription"),
    "cache": ([*PARTS, "--cache", "{}"], "--cache"),
    "cluster": ([*PARTS, "--cluster", "{}"], "--cluster"),
    "resource-id": (["--resource-id", "{}"], "--resource-id"),
    "second-resource-id": (["--resource-id", CLASSIC, "--resource-id", "{}"], "--resource-id"),
    "linked-id": ([*PARTS, "--cluster", "amr-a", "--linked-id", "{}"], "--linked-id"),
    "tag": ([*SELECTOR[:2], "--tag", "{}"], "--tag"),
    "kind": ([*SELECTOR, "--kind", "{}"], "--kind"),
    "request-id": ([*SELECTOR, "--request-id", "{}"], "--request-id"),
    "timeout": ([*SELECTOR, "--timeout", "{}"], "--timeout"),
    "namespace": ([*SELECTOR, "--namespace", "{}"], "--namespace"),
    "connection-string": ([*SELECTOR, "--connection-string", "{}"], "--connection-string"),
}


@pytest.mark.parametrize("blank", ["", "   ", "\t"], ids=["empty", "spaces", "tab"])
@pytest.mark.parametrize("argv,flag", EMPTY.values(), ids=list(EMPTY))
def test_an_empty_value_is_refused_never_a_flag_left_out(
        argv: list[str], flag: str, blank: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [blank if a == "{}" else a for a in argv]
    assert main(["send", "--dry-run", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and f"argument {flag}" in err, err
    if flag != "--timeout":  # an int flag: argparse says "invalid int value"
        assert "must not be empty or only spaces" in err, err


@pytest.mark.parametrize("flag,field", [("--reason", "reason"),
                                        ("--requested-by", "requestedBy")])
def test_free_text_may_be_empty_it_names_no_cache(flag: str, field: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # an optional `--reason "$REASON"` with REASON unset: the request goes as given
    assert main(["send", "--dry-run", *SELECTOR, flag, ""]) == 0
    assert json.loads(capsys.readouterr().out)[field] == ""


@pytest.mark.parametrize("argv", [
    ["watch", "--namespace", ""], ["watch", "--connection-string", " "],
    ["--app-root", "", "send", *SELECTOR], ["serve", "--local", "--arm-endpoint", ""],
    ["serve", "--local", "--redis-url", " "], ["emulator", "--config", ""],
])
def test_other_commands_refuse_empty_values_too(argv: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "must not be empty or only spaces" in err, err


@pytest.mark.parametrize("name,value", [("resource_group", ""), ("resource_group", " "),
                                        ("database", ""), ("cache", "")])
def test_target_body_never_widens_on_an_empty_value(name: str, value: str) -> None:
    """Past the parser too: a Namespace with an empty value is refused, not read as absent."""
    for argv in (["--subscription", SUB, "--resource-group", RG, "--all"],
                 [*PARTS, "--cluster", "amr-a", "--database", "d"],
                 [*PARTS, "--cache", "c"]):
        args = build_parser().parse_args(["send", *argv])
        if getattr(args, name) is None:
            continue
        setattr(args, name, value)
        with pytest.raises(UsageError, match=f"--{name.replace('_', '-')} must not be empty"):
            target_body(args)


VALUES = {
    "serve-port": (["serve", "--local", "--emulator-port", "70000"], "--emulator-port"),
    "emulator-port": (["emulator", "--port", "-1"], "--port"),
    "demo-keys": (["demo", "--keys", "-5"], "--keys"),
    "demo-duration": (["demo", "--duration", "nan"], "--duration"),
    "serve-concurrency": (["serve", "--local", "--concurrency", "0"], "--concurrency"),
    "watch-deadletter": (["watch", "--subscription-name", "all/$deadletterqueue"],
                         "--subscription-name"),
    "watch-long-name": (["watch", "--subscription-name", "x" * 51], "--subscription-name"),
    "watch-negative-timeout": (["watch", "--timeout", "-1"], "--timeout"),
    "watch-zero-count": (["watch", "--count", "0"], "--count"),
    "watch-unknown-status": (["watch", "--status", "Succeeded,Bogus"], "'Bogus' is not a status"),
    "serve-redis-url": (["serve", "--local", "--redis-url", "foo://bar"], "--redis-url"),
    "emulator-redis-url": (["emulator", "--redis-url", "redis://[::1"], "--redis-url"),
    "send-huge-timeout": (["send", "--resource-id", CLASSIC, "--timeout", "9" * 5000],
                          "--timeout"),
    "no-app-root-send": (["--app-root", "/nonexistent", "send", "--resource-id", CLASSIC,
                          "--dry-run"], "--app-root: /nonexistent is not a folder"),
    "no-app-root-serve": (["--app-root", "/nonexistent", "serve", "--local"],
                          "--app-root: /nonexistent"),
    "no-app-root-demo": (["--app-root", "/nonexistent", "demo"], "--app-root: /nonexistent"),
}


@pytest.mark.parametrize("argv,mentions", VALUES.values(), ids=list(VALUES))
def test_out_of_range_values_are_one_line(argv: list[str], mentions: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and mentions in err, err


def test_app_root_without_host_json_is_an_error(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--app-root", str(tmp_path), "watch", "--local", "--timeout", "0"]) == 2
    assert "has no host.json" in capsys.readouterr().err


def test_a_busy_emulator_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["emulator", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"--port {port}" in err, err


def test_ctrl_c_is_exit_130_and_documented(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: Any) -> int:
        raise KeyboardInterrupt
    monkeypatch.setitem(cli.COMMANDS, "watch", interrupted)
    assert main(["watch"]) == 130
    assert "130 interrupted" in build_parser().format_help()


# -- what needs the app's request parser (redisflush.core.request) -----------------------------

def test_dry_run_prints_the_body_and_a_selector_says_it_needs_arm(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "--dry-run", "--subscription", SUB, "--tag", "app=shop",
                 "--reason", "nightly", "--timeout", "600"]) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert printed == {"selector": {"subscriptionId": SUB, "tags": {"app": "shop"}},
                       "reason": "nightly", "timeoutSeconds": 600,
                       "requestId": printed["requestId"]}  # a new one: the body carries it
    assert err.strip() == ("what a selector resolves to needs ARM: the app resolves it when "
                           "it runs")


@pytest.mark.parametrize("argv,mentions", [
    (["--resource-id", CLASSIC, "--resource-id", CLASSIC.upper().replace("SUBSCRIPTIONS",
                                                                         "subscriptions")],
     "resourceIds"),
    ([*PARTS, "--cache", "bad_name!"], "cacheName"),
    (["--resource-id", CLASSIC, "--request-id", "has space"], "requestId"),
    (["--resource-id", CLASSIC, "--reason", "x" * 300], "reason"),
    # argv that was not UTF-8: Python hands it over as lone surrogates, which no event
    # could carry, so the request is refused before it is sent
    (["--resource-id", CLASSIC, "--reason", "\udcff\n"], "reason: must not contain"),
    (["--resource-id", CLASSIC, "--request-id", "r" * 81], "requestId: must be 1-80"),
    (["--resource-id", CLASSIC, "--timeout", "5"], "timeoutSeconds"),
    (["--resource-id", CLASSIC, "--no-linked"], "linkedDatabaseIds"),
])
def test_invalid_requests_never_traceback(argv: list[str], mentions: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["send", "--dry-run", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if code == 0:                       # the parser may accept it: then it is printed as sent
        assert json.loads(out)
        return
    assert code == 2 and len(err.splitlines()) == 1 and mentions in err, err


# -- events ---------------------------------------------------------------------------------

def test_final_event_rules() -> None:
    one = {"type": "RedisFlush.FlushCompleted", "id": "r:completed", "data": {}}
    cache = {"type": "RedisFlush.FlushCompleted", "id": "r:completed:1", "data": {}}
    request = {"type": "RedisFlush.RequestCompleted", "id": "r:completed", "data": {}}
    rejected = {**one, "data": {"status": "Rejected"}}
    many = "RedisFlush.RequestCompleted"
    assert is_final(one, "r", "RedisFlush.FlushCompleted")
    assert is_final(request, "r", many) and is_final(rejected, "r", many)
    assert not is_final(cache, "r", many) and not is_final(one, "r", many)
    assert not is_final(one, "other", "RedisFlush.FlushCompleted")
    assert [exit_code({"data": {"status": s}}) for s in
            ("Succeeded", "Failed", "Canceled", "Rejected", "TimedOut", "Odd", 7)] == \
        [0, 1, 1, 1, 3, 1, 1]


def test_describe_and_progress_survive_odd_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert describe({"data": "nonsense"}).startswith("None: (unknown cache)")
    line = describe({"type": "RedisFlush.RequestCompleted",
                     "data": {"status": "Failed", "results": [
                         {"resourceId": f"{GROUP}/providers/Microsoft.Cache/redis/c{i}",
                          "status": "Failed", "error": {"code": "E", "message": "m"}}
                         for i in range(5)], "counts": {"Failed": 5},
                         "durationSeconds": 10 ** 500, "armRequests": True}})
    assert "; c0 Failed - E: m" in line and "and 2 more" in line and "\n" not in line
    rejected = describe({"type": "RedisFlush.RequestCompleted", "data": {
        "status": "Rejected", "requestId": "r", "counts": {}, "results": [],
        "error": {"code": "SelectorRejected", "message": "selector: matched 0 caches"}}})
    assert rejected == ("Rejected: 0 caches request=r - SelectorRejected: selector: matched 0 "
                        "caches")
    progress = Progress(sys.stderr)
    for note in ({"status": "InProgress", "percentComplete": 10 ** 400},
                 {"status": "InProgress", "percentComplete": "50"},     # same line: not again
                 {"status": "InProgress", "percentComplete": 1e308},
                 {"status": "Running", "finished": [None, {"index": "x", "status": 1}]}):
        progress.note(note)
    assert capsys.readouterr().err.split() == ["InProgress", "0.0s", "(unknown", "cache):",
                                               "1", "0.0s", "Running", "0.0s"]


def test_a_parser_that_raises_is_still_one_line(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import redisflush.core.request as request

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("surprise\nsecond line")
    monkeypatch.setattr(request, "parse_request", broken)
    assert main(["send", "--dry-run", "--resource-id", CLASSIC]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "invalid request: body: could not be checked" in err


def test_a_bad_arm_endpoint_flag_is_named_as_the_flag(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert main(["serve", "--local", "--arm-endpoint", "https://host:"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --arm-endpoint: ") and len(err.splitlines()) == 1, err
