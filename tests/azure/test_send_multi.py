"""`send --wait` for several caches and selectors, and a pipeline's settings, at the SDK's
network edge (see conftest): the right final event, a line per cache, one exit code."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage

from redisflush.cli import main

from .conftest import (
    CONNECTION,
    SETTINGS,
    SUBSCRIPTION,
    FakeBus,
    cache_rid,
    completion_body,
    completion_event,
    progress_body,
    request_body,
)


def run(app_root: Path, *args: str) -> int:
    return main(["--app-root", str(app_root), *args])


def body_of(message: ServiceBusMessage) -> dict[str, Any]:
    return json.loads(b"".join(message.body))


TWO = ["--resource-id", cache_rid("cache-a"), "--resource-id", cache_rid("cache-b")]


def test_several_caches_end_with_the_request_event_and_a_line_per_cache(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    finished = [{"index": 0, "resourceId": cache_rid("cache-a"), "name": "cache-a",
                 "status": "Succeeded", "error": None, "durationSeconds": 2.5}]
    fake_bus.deliver(
        progress_body("m-1", None, status="Accepted", targets=2),
        progress_body("m-1", None, status="Running", targets=2, counts={"Succeeded": 1},
                      finished=finished, step=2),
        completion_body("m-1", "Succeeded", cache="cache-a", index=0, count=2),  # said already
        completion_body("m-1", "Failed", cache="cache-b", index=1, count=2,
                        error={"code": "Boom", "message": "cache-b broke"}),
        request_body("m-1", "Failed", [("cache-a", "Succeeded"), ("cache-b", "Failed")]))
    code = run(app_root, "send", "--connection-string", CONNECTION, *TWO, "--wait", "--json",
               "--request-id", "m-1")
    out, err = capsys.readouterr()
    assert code == 1, err
    (_, message, _), = fake_bus.sent
    assert body_of(message)["resourceIds"] == [cache_rid("cache-a"), cache_rid("cache-b")]
    assert dict(message.application_properties) == {"requestId": "m-1"}   # no cacheName
    [line] = out.splitlines()
    assert json.loads(line)["type"] == "RedisFlush.RequestCompleted"
    lines = err.splitlines()
    assert sum("cache-a: Succeeded in 2.5 s" in x for x in lines) == 1      # once, not twice
    assert sum("cache-b: Failed" in x and "Boom: cache-b broke" in x for x in lines) == 1
    assert any(x.strip().startswith("Accepted") for x in lines)
    assert any("Running (Succeeded 1 of 2)" in x for x in lines)


def test_several_caches_without_json_print_the_summary_and_first_failures(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    fake_bus.deliver(request_body("m-2", "Failed", [("cache-a", "Succeeded"),
                                                     ("cache-b", "Failed")]))
    assert run(app_root, "send", "--connection-string", CONNECTION, *TWO, "--wait",
               "--request-id", "m-2") == 1
    out, err = capsys.readouterr()
    assert out.startswith("Failed: 2 caches (Succeeded 1, Failed 1) request=m-2 in 9.0 s")
    assert "7 ARM requests" in out and "cache-b Failed - Boom: cache-b broke" in out
    # caches that ended in the last step, which no note told of, still get their line
    assert "[1/2] cache-a: Succeeded in 4.0 s" in err
    assert "[2/2] cache-b: Failed in 4.0 s - Boom: cache-b broke" in err


def test_a_selector_waits_for_the_request_event_not_a_per_cache_one(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    # A selector that resolved to one cache: its per-cache event may carry `{id}:completed`.
    fake_bus.deliver(completion_body("s-1", "Succeeded", cache="cache-a"),
                     request_body("s-1", "Succeeded", [("cache-a", "Succeeded")]))
    code = run(app_root, "send", "--connection-string", CONNECTION, "--subscription",
               SUBSCRIPTION, "--tag", "app=shop", "--kind", "redis", "--wait", "--json",
               "--request-id", "s-1")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["type"] == "RedisFlush.RequestCompleted"
    (_, message, _), = fake_bus.sent
    assert body_of(message)["selector"] == {"subscriptionId": SUBSCRIPTION,
                                            "tags": {"app": "shop"}, "kinds": ["redis"]}
    assert "cache-a: Succeeded" in err


def test_a_rejected_multi_target_request_ends_the_wait(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    rejected = completion_event("m-3", "Rejected", error={"code": "InvalidRequest",
                                                          "message": "no"})
    fake_bus.deliver(json.dumps(rejected).encode())
    assert run(app_root, "send", "--connection-string", CONNECTION, *TWO, "--wait",
               "--request-id", "m-3") == 1
    assert capsys.readouterr().out.startswith("Rejected: cache-one request=m-3")


def test_event_values_cannot_forge_lines(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    event = completion_event("f-1", "Failed", error={"code": "X\nerror: forged",
                                                     "message": "m\r\x1b[2J"})
    event["subject"] = "cache\nSucceeded: all good"
    event["data"]["durationSeconds"] = 10 ** 400 // 10 ** 395       # a big, finite number
    fake_bus.deliver(json.dumps(event).encode(),
                     progress_body("f-1", 9e99))                       # ignored: already over
    assert run(app_root, "send", "--connection-string", CONNECTION, "--resource-id",
               cache_rid("cache-one"), "--wait", "--request-id", "f-1") == 1
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and "\\n" in out and "\x1b" not in out


# -- a pipeline: no host.json, the environment only ------------------------------------------

@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "pipeline"
    folder.mkdir()
    monkeypatch.chdir(folder)
    for name in ("ServiceBusConnection", "ServiceBusConnection__fullyQualifiedNamespace",
                 "AZURE_CLIENT_ID", "REDISFLUSH_TIMEOUT_SECONDS", "REDISFLUSH_MAX_TARGETS",
                 *SETTINGS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDISFLUSH_REQUEST_QUEUE", "env-requests")
    monkeypatch.setenv("REDISFLUSH_REPLY_QUEUE", "env-replies")
    monkeypatch.setenv("ServiceBusConnection", CONNECTION)
    return folder


def test_a_pipeline_needs_no_host_json(pipeline: Path, fake_bus: FakeBus,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    fake_bus.deliver(completion_body("p-1"))
    assert main(["send", "--resource-id", cache_rid("cache-one"), "--wait",
                 "--request-id", "p-1"]) == 0
    (queue, message, _), = fake_bus.sent
    assert queue == "env-requests" and message.reply_to == "env-replies"
    assert fake_bus.receivers[0].args == ("env-replies",)


def test_the_environment_wins_over_local_settings(
        app_root: Path, fake_bus: FakeBus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDISFLUSH_REQUEST_QUEUE", "env-requests")
    assert run(app_root, "send", "--connection-string", CONNECTION, "--resource-id",
               cache_rid("cache-one")) == 0
    assert fake_bus.sent[0][0] == "env-requests"


def test_max_targets_comes_from_the_environment(
        pipeline: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDISFLUSH_MAX_TARGETS", "2")
    three = [*TWO, "--resource-id", cache_rid("cache-c")]
    assert main(["send", *three]) == 2
    assert "resourceIds" in capsys.readouterr().err and fake_bus.sent == []
    monkeypatch.setenv("REDISFLUSH_MAX_TARGETS", "many")
    assert main(["send", *TWO]) == 2
    assert "REDISFLUSH_MAX_TARGETS" in capsys.readouterr().err
