"""examples/subscriber.py: importable without Azure, reacts only to Succeeded events."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.servicebus.management import SqlRuleFilter

from .conftest import RESOURCE_ID, FakeReceived, completion_body, progress_body

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "subscriber.py"


@pytest.fixture(scope="module")
def subscriber() -> ModuleType:
    spec = importlib.util.spec_from_file_location("redisflush_example_subscriber", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_importing_it_loads_no_azure_package() -> None:
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('s', "
            f"{str(EXAMPLE)!r}); m = importlib.util.module_from_spec(spec); "
            "spec.loader.exec_module(m); "
            "print(sorted(n for n in sys.modules if n.split('.')[0] == 'azure'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    assert out.strip() == "[]"


@pytest.mark.timeout(120)
def test_a_bus_it_cannot_reach_is_one_line_and_exit_2() -> None:
    """Like the CLI's bus errors (README, "CLI": exit 2, one line, no traceback); a loopback
    port that refuses connections, so no network or DNS is needed."""
    with socket.socket() as taken:          # bound, never listening: connections are refused
        taken.bind(("127.0.0.1", 0))
        namespace = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
        run = subprocess.run([sys.executable, str(EXAMPLE), "--namespace", namespace,
                              "--max-events", "1"], capture_output=True, text=True,
                             timeout=100, env=env)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith(f"error: cannot receive from redis-flush-events/warmup on "
                                 f"namespace {namespace}: ServiceBusConnectionError: ")
    assert "Connection refused" in run.stderr and run.stdout == ""


def test_a_succeeded_event_warms_its_cache(subscriber: ModuleType) -> None:
    calls: list[tuple[str, str, str]] = []
    event = json.loads(completion_body("req-9", "Succeeded"))
    assert subscriber.handle_event(event, lambda *a: calls.append(a)) is True
    assert calls == [("cache-one", RESOURCE_ID, "req-9")]


@pytest.mark.parametrize("body", [completion_body("r", "Failed"),
                                  completion_body("r", "TimedOut"),
                                  completion_body("r", "Rejected"),
                                  progress_body("r")])
def test_other_events_are_ignored(subscriber: ModuleType, body: bytes) -> None:
    calls: list[Any] = []
    assert subscriber.handle_event(json.loads(body), lambda *a: calls.append(a)) is False
    assert calls == []


def test_process_settles_each_message(subscriber: ModuleType) -> None:
    class Receiver:
        def __init__(self) -> None:
            self.done: list[tuple[str, bytes]] = []

        def complete_message(self, m: FakeReceived) -> None:
            self.done.append(("complete", m.raw))

        def abandon_message(self, m: FakeReceived) -> None:
            self.done.append(("abandon", m.raw))

        def dead_letter_message(self, m: FakeReceived, **kwargs: Any) -> None:
            self.done.append(("dead-letter", m.raw))

    ok, failed, other = (completion_body("a"), completion_body("boom"),
                         completion_body("c", "Failed"))

    def warm(cache: str, resource_id: str, request_id: str) -> None:
        if request_id == "boom":
            raise RuntimeError("warm-up endpoint down")

    receiver = Receiver()
    warmed = subscriber.process(receiver, [FakeReceived(b) for b in (ok, failed, other,
                                                                     b"junk")], warm)
    assert warmed == 1
    assert receiver.done == [("complete", ok), ("abandon", failed), ("complete", other),
                             ("dead-letter", b"junk")]


def test_ensure_subscription_creates_the_sql_rule_and_drops_the_default(
        subscriber: ModuleType) -> None:
    class Rule:
        def __init__(self, name: str) -> None:
            self.name = name

    class Admin:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, ...]] = []
            self.exists = False

        def get_subscription(self, topic: str, name: str) -> None:
            if not self.exists:
                raise ResourceNotFoundError("no such subscription")

        def create_subscription(self, topic: str, name: str, **kwargs: Any) -> None:
            self.exists = True
            self.calls.append(("create_subscription", topic, name, kwargs))

        def list_rules(self, topic: str, name: str) -> list[Rule]:
            return [Rule("$Default")]

        def create_rule(self, topic: str, name: str, rule: str, *, filter: Any) -> None:
            self.calls.append(("create_rule", topic, name, rule, filter))

        def delete_rule(self, topic: str, name: str, rule: str) -> None:
            self.calls.append(("delete_rule", topic, name, rule))

    admin = Admin()
    subscriber.ensure_subscription(admin, "redis-flush-events", "warmup")
    kinds = [c[0] for c in admin.calls]
    assert kinds == ["create_subscription", "create_rule", "delete_rule"]
    rule_filter = admin.calls[1][4]
    assert isinstance(rule_filter, SqlRuleFilter)
    assert rule_filter.sql_expression == "status = 'Succeeded'"
    assert admin.calls[2][3] == "$Default"
