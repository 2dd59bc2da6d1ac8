"""CLI contracts: usage and configuration errors are one line on stderr and exit 2 (never a
traceback, nothing sent); `send --dry-run` prints the request and sends nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import SUB, cache_args, resource_id, run_cli, write_config

pytestmark = pytest.mark.e2e

USAGE_ERRORS = {
    "send-no-cache": (["send", "--local", "--wait"], "the cache is required"),
    "send-both-forms": (["send", "--local", "--resource-id", resource_id("c1"),
                         "--cache", "c1"], "not both"),
    "send-partial-form": (["send", "--local", "--subscription", SUB, "--cache", "c1"],
                          "the cache is required"),
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
    args = [command, "--local"] if command == "serve" else [command]
    for config, mentions in ((bad, "outcom"), (tmp_path / "missing.json", "missing.json")):
        result = run_cli([*args, "--config", str(config)], local_dir, timeout=25)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and mentions in lines[0], result.stderr
        assert "Traceback" not in result.stderr


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


def test_send_without_wait_prints_the_request_id(local_dir: Path) -> None:
    result = run_cli(["send", "--local", *cache_args("c1"), "--request-id", "e2e-nowait-1"],
                     local_dir, timeout=25)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "e2e-nowait-1"
    from redisflush.local.bus import LocalBus
    with LocalBus(local_dir / "bus.sqlite") as bus:
        [message] = bus.peek("redis-flush-requests")
    assert message.message_id == "e2e-nowait-1" and message.reply_to is None
    assert json.loads(message.body)["cacheName"] == "c1"
