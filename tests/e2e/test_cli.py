"""CLI contracts: usage and configuration errors are one line on stderr and exit 2 (never a
traceback, nothing sent); `send --dry-run` prints the request and sends nothing; `watch`
stops when told and leaves what it did not print on the bus; Ctrl-C is exit 130."""
from __future__ import annotations

import json
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from redisflush.core.outbound import OutboundMessage

from .conftest import SUB, Processes, cache_args, resource_id, run_cli, wait_for, write_config

pytestmark = pytest.mark.e2e

USAGE_ERRORS = {
    "send-no-cache": (["send", "--local", "--wait"], "the cache is required"),
    "send-both-forms": (["send", "--local", "--resource-id", resource_id("c1"),
                         "--cache", "c1"], "--resource-id cannot be combined with --cache"),
    "send-partial-form": (["send", "--local", "--subscription", SUB, "--cache", "c1"],
                          "--cache needs --resource-group"),
    "send-selector-and-cache": (["send", "--local", *cache_args("c1"), "--all"],
                                "--cache cannot be combined with --all"),
    "send-kind-without-selector": (["send", "--local", *cache_args("c1"), "--kind", "redis"],
                                   "--cache cannot be combined with --kind"),
    "send-linked-with-classic": (["send", "--local", "--resource-id", resource_id("c1"),
                                  "--no-linked"], "linkedDatabaseIds"),
    "send-bad-cache-name": (["send", "--local", *cache_args("bad_name!")], "cacheName"),
    "send-bad-resource-id": (["send", "--local", "--resource-id", "/subscriptions/x/redis/y"],
                             "resourceId"),
    "send-timeout-too-small": (["send", "--local", *cache_args("c1"), "--timeout", "5"],
                               "timeoutSeconds"),
    "send-timeout-too-large": (["send", "--local", *cache_args("c1"), "--timeout", "86401"],
                               "timeoutSeconds"),
    "send-timeout-not-a-number": (["send", "--local", *cache_args("c1"), "--timeout", "abc"],
                                  "--timeout"),
    "send-local-and-namespace": (["send", "--local", "--namespace", "ns", *cache_args("c1")],
                                 "--local"),
    "serve-without-local": (["serve"], "--local"),
    "serve-port-out-of-range": (["serve", "--local", "--emulator-port", "70000"],
                                "--emulator-port: 70000 is not between 0 and 65535"),
    "serve-unreachable-redis": (["serve", "--local", "--redis-url", "redis://127.0.0.1:1/0"],
                                "--redis-url redis://127.0.0.1:1/0: no answer from Redis"),
    "emulator-unreachable-redis": (["emulator", "--redis-url", "redis://127.0.0.1:1/0"],
                                   "--redis-url redis://127.0.0.1:1/0: no answer from Redis"),
    "demo-negative-keys": (["demo", "--keys", "-5"], "--keys: -5"),
    "watch-deadletter-subqueue": (["watch", "--local", "--subscription-name",
                                   "all/$deadletterqueue"], "--subscription-name"),
    "watch-negative-timeout": (["watch", "--local", "--timeout", "-1"], "--timeout"),
    "app-root-missing": (["--app-root", "/nonexistent", "serve", "--local"],
                         "--app-root: /nonexistent is not a folder"),
    "app-root-without-host-json": (["--app-root", "/", "send", "--local", *cache_args("c1")],
                                   "--app-root: / has no host.json"),
    "unknown-command": (["bogus"], "bogus"),
    "unknown-option": (["send", "--local", *cache_args("c1"), "--colour", "red"], "--colour"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args,mentions", USAGE_ERRORS.values(), ids=list(USAGE_ERRORS))
def test_usage_errors_exit_2_with_one_line(args: list[str], mentions: str,
                                           local_dir: Path) -> None:
    result = run_cli(args, local_dir, timeout=25)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and lines[0].startswith("error: ")
    assert mentions in lines[0]
    assert result.stdout == ""
    assert not (local_dir / "bus.sqlite").exists()     # nothing was sent anywhere


def test_no_command_prints_help_and_exits_2(local_dir: Path) -> None:
    result = run_cli([], local_dir, timeout=25)
    assert result.returncode == 2
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("setting,value", [("REDISFLUSH_TIMEOUT_SECONDS", "5"),
                                           ("REDISFLUSH_ARM_ENDPOINT", "http://example.com")])
def test_bad_setting_is_a_configuration_error(setting: str, value: str,
                                              local_dir: Path) -> None:
    result = run_cli(["serve", "--local"], local_dir, env={setting: value}, timeout=25)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and setting in lines[0], result.stderr


@pytest.mark.parametrize("command", ["serve", "emulator"])
def test_bad_emulator_config_exits_2(command: str, local_dir: Path, tmp_path: Path) -> None:
    bad = write_config(tmp_path / "bad.json", {"caches": {"c1": {"outcom": "Failed"}}})
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"caches": {"café": {}}}'.encode("latin-1"))
    args = [command, "--local"] if command == "serve" else [command]
    for config, mentions in ((bad, "outcom"), (tmp_path / "missing.json", "missing.json"),
                             (latin1, f"config file {latin1}: must be UTF-8 JSON (byte 0xe9 at "
                                      "offset 16 is not UTF-8)")):
        result = run_cli([*args, "--config", str(config)], local_dir, timeout=25)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and mentions in lines[0], result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["serve", "--local"], ["send", "--local",
                                                            *cache_args("c1")]])
def test_a_non_utf8_local_settings_json_is_named_in_one_line(command: list[str], local_dir: Path,
                                                             tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    settings = tmp_path / "local.settings.json"
    settings.write_bytes(b'{"Values": {"REDISFLUSH_REASON": "\xff"}}')
    result = run_cli(["--app-root", str(tmp_path), *command], local_dir, timeout=25)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"error: {settings}: must be UTF-8 JSON (byte 0xff at offset 34 "
                             "is not UTF-8)\n")


@pytest.mark.parametrize("command", [["demo"], ["serve", "--local"],
                                     ["send", "--local", *cache_args("c1")],
                                     ["watch", "--local", "--timeout", "0"]],
                         ids=["demo", "serve", "send", "watch"])
@pytest.mark.parametrize("under", [False, True], ids=["is-a-file", "under-a-file"])
def test_a_local_dir_that_is_a_file_names_the_setting_in_one_line(
        command: list[str], under: bool, tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    local_dir = a_file / "sub" if under else a_file
    result = run_cli(command, local_dir, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: REDISFLUSH_LOCAL_DIR: '{local_dir}' must be a folder")
    assert "Traceback" not in result.stderr
    assert a_file.read_text() == ""                     # the file is left as it was


def test_send_dry_run_prints_the_request(local_dir: Path) -> None:
    result = run_cli(["send", "--local", "--dry-run", "--resource-id", resource_id("c1"),
                      "--request-id", "e2e-dry-1", "--reason", "why not", "--timeout", "60"],
                     local_dir, timeout=25)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"resourceId": resource_id("c1"),
                                         "requestId": "e2e-dry-1", "reason": "why not",
                                         "timeoutSeconds": 60}
    assert len(result.stdout.splitlines()) == 1
    assert not (local_dir / "bus.sqlite").exists()     # dry run: nothing sent


def test_send_wait_writes_the_timeout_it_waits_for_into_the_request(local_dir: Path) -> None:
    """Without --timeout the app would apply its own default while the sender waited for its
    own: the waiter could give up on a flush that goes on (or wait on one that ended)."""
    result = run_cli(["send", "--local", "--dry-run", "--wait", "--resource-id",
                      resource_id("c1"), "--request-id", "e2e-wait-timeout"], local_dir,
                     timeout=25, env={"REDISFLUSH_TIMEOUT_SECONDS": "300"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["timeoutSeconds"] == 300


def test_send_without_wait_prints_the_request_id(local_dir: Path) -> None:
    result = run_cli(["send", "--local", *cache_args("c1"), "--request-id", "e2e-nowait-1"],
                     local_dir, timeout=25)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "e2e-nowait-1"
    from redisflush.local.bus import LocalBus
    with LocalBus(local_dir / "bus.sqlite") as bus:
        [message] = bus.peek("redis-flush-requests")
    # a new MessageId on every send; the requestId is in the body (a repeat reaches the app)
    assert message.message_id.startswith("e2e-nowait-1:") and message.reply_to is None
    assert json.loads(message.body)["cacheName"] == "c1"
    assert json.loads(message.body)["requestId"] == "e2e-nowait-1"


def test_send_dry_run_of_a_selector_says_arm_resolves_it(local_dir: Path) -> None:
    result = run_cli(["send", "--local", "--dry-run", "--subscription", SUB, "--tag",
                      "app=shop", "--kind", "redisEnterprise"], local_dir, timeout=25)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == {"selector": {"subscriptionId": SUB, "tags": {"app": "shop"},
                                    "kinds": ["redisEnterprise"]},
                       "requestId": printed["requestId"]}
    assert result.stderr == ("what a selector resolves to needs ARM: the app resolves it "
                             "when it runs\n")


def test_a_busy_emulator_port_is_one_line(local_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(["emulator", "--port", str(port)], local_dir, timeout=25)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--port {port}: cannot listen on it" in lines[0], result.stderr


def _publish_events(local_dir: Path, count: int, subject: str = "cache-{n}") -> None:
    from redisflush.local.bus import LocalBus

    with LocalBus(local_dir / "bus.sqlite") as bus:
        bus.ensure_topic("redis-flush-events")
        bus.ensure_subscription("redis-flush-events", "all")
        bus.publish("redis-flush-events", [OutboundMessage(json.dumps(
            {"type": "RedisFlush.FlushCompleted", "id": f"w-{n}:completed",
             "subject": subject.format(n=n),
             "data": {"requestId": f"w-{n}", "status": "Succeeded"}}
        ).encode(), f"w-{n}:completed") for n in range(count)])


def test_an_event_the_console_cannot_encode_is_printed_escaped(local_dir: Path) -> None:
    """A pipeline agent's console in cp1252 (or ASCII) and a cache in `rg-日本`: the line is
    printed with escapes, not a traceback with exit 1."""
    _publish_events(local_dir, 1, subject="日本-{n}")
    result = run_cli(["watch", "--local", "--count", "1"], local_dir, timeout=25,
                     env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0, result.stderr
    assert "\\u65e5\\u672c-0" in result.stdout and "Traceback" not in result.stderr


def test_watch_count_1_leaves_the_other_events_unlocked(local_dir: Path) -> None:
    _publish_events(local_dir, 5)
    result = run_cli(["watch", "--local", "--count", "1", "--json"], local_dir, timeout=25)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == "w-0:completed"
    from redisflush.local.bus import LocalBus

    with LocalBus(local_dir / "bus.sqlite") as bus:
        left = bus.receive("redis-flush-events/subscriptions/all", max_count=10)
    # the four it did not print: at once receivable (not locked), never delivered before
    assert [m.message_id for m in left] == [f"w-{n}:completed" for n in range(1, 5)]
    assert all(m.delivery_count == 1 for m in left)


def test_watch_timeout_0_stops_at_once(local_dir: Path) -> None:
    started = time.monotonic()
    result = run_cli(["watch", "--local", "--timeout", "0"], local_dir, timeout=25)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10 and result.stdout == ""


def test_ctrl_c_exits_130(local_dir: Path, procs: Processes) -> None:
    watch = procs.spawn(["watch", "--local"], local_dir, ctrl_c=True)
    wait_for(lambda: (local_dir / "bus.sqlite").exists(), 20, "the local bus")
    time.sleep(0.5)                          # past start-up: it is waiting for events
    watch.popen.send_signal(signal.SIGINT)
    assert watch.wait(15) == 130
    assert "Traceback" not in watch.stderr()
    assert "130 interrupted" in run_cli(["--help"], local_dir, timeout=25).stdout


def test_emulator_ctrl_c_exits_130_after_closing_its_port(local_dir: Path,
                                                         procs: Processes) -> None:
    """`emulator --help`: 130 interrupted (Ctrl-C); SIGTERM stays a clean 0
    (test_serve.py::test_serve_against_a_separate_emulator)."""
    emulator = procs.spawn(["emulator"], local_dir, name="emulator", ctrl_c=True)
    url = wait_for(lambda: re.search(r"ARM emulator on http://(\S+):(\d+)", emulator.stdout()),
                   20, "the emulator to listen")
    emulator.popen.send_signal(signal.SIGINT)
    assert emulator.wait(15) == 130, emulator.stderr()
    assert "Traceback" not in emulator.stderr()
    with pytest.raises(OSError):
        socket.create_connection((url.group(1), int(url.group(2))), timeout=2).close()


def test_serve_help_says_ctrl_c_drains_and_exits_0(local_dir: Path) -> None:
    """serve drains on Ctrl-C and exits 0 (README, "Local mode"): its --help must not
    promise 130."""
    text = " ".join(run_cli(["serve", "--help"], local_dir, timeout=25).stdout.split())
    assert "exit codes: 0 stopped (Ctrl-C or SIGTERM: in-flight calls finish first" in text
    assert "130" not in text


# -- several caches and selectors through serve --local ---------------------------------------

@pytest.mark.timeout(120)
def test_send_wait_several_caches_prints_a_line_per_cache_and_the_request_event(
        local_dir: Path, procs: Processes) -> None:
    procs.serve(local_dir, "--duration", "1")
    result = run_cli(["send", "--local", "--wait", "--json", "--timeout", "60",
                      "--resource-id", resource_id("multi-a"), "--resource-id",
                      resource_id("multi-b"), "--request-id", "e2e-multi-1"],
                     local_dir, timeout=90)
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["type"] == "RedisFlush.RequestCompleted"
    assert event["id"] == "e2e-multi-1:completed"
    assert event["data"]["counts"] == {"Succeeded": 2}
    for n, cache in enumerate(("multi-a", "multi-b"), 1):
        assert sum(f"[{n}/2] {cache}: Succeeded" in line
                   for line in result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.timeout(120)
def test_send_wait_a_tag_selector(local_dir: Path, procs: Processes, tmp_path: Path) -> None:
    config = write_config(tmp_path / "emulator.json", {"defaults": {"duration": 0.5}, "caches": {
        "shop-a": {"resourceGroup": "rg-e2e", "tags": {"app": "shop"}},
        "shop-b": {"resourceGroup": "rg-e2e", "tags": {"App": "other"}},
        "*": {}}})
    procs.serve(local_dir, "--config", str(config))
    result = run_cli(["send", "--local", "--wait", "--json", "--timeout", "60",
                      "--subscription", SUB, "--resource-group", "rg-e2e", "--tag", "app=shop",
                      "--kind", "redis"], local_dir, timeout=90)
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["type"] == "RedisFlush.RequestCompleted"
    assert [r["resourceId"].rsplit("/", 1)[1] for r in event["data"]["results"]] == ["shop-a"]
