"""Fixtures for the functional tests: fake clock, memory bus, scripted ARM, the installed app."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from redisflush.functions import install
from tests.support.harness import Harness
from tests.support.memory_bus import FakeClock, MemoryBus
from tests.support.scripted_arm import ScriptedArm


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def bus(clock: FakeClock) -> MemoryBus:
    return MemoryBus(clock)


@pytest.fixture
def servers() -> Iterator[Callable[..., ScriptedArm]]:
    """Start scripted ARM servers; each is stopped and checked (nothing unscripted) after."""
    started: list[ScriptedArm] = []

    def start(host: str = "127.0.0.1", port: int = 0, *, run: bool = True) -> ScriptedArm:
        server = ScriptedArm(host, port, seed=len(started) + 7)
        if run:
            server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for server in started:
        assert not server.unexpected, (
            f"{server.endpoint} got unscripted requests: "
            f"{[(r.method, r.raw_path[:120]) for r in server.unexpected]}")


@pytest.fixture
def arm(servers: Callable[..., ScriptedArm]) -> ScriptedArm:
    return servers()


@pytest.fixture
def make_harness(clock: FakeClock, bus: MemoryBus, arm: ScriptedArm
                 ) -> Iterator[Callable[..., Harness]]:
    def make(**kwargs: Any) -> Harness:
        return Harness.create(clock, bus, arm, **kwargs)

    yield make
    install(None)


@pytest.fixture
def h(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


@pytest.fixture(scope="module")
def fuzz_arm() -> Iterator[ScriptedArm]:
    """One scripted ARM for a fuzz module's many examples (a server per example is slow)."""
    server = ScriptedArm().start()
    yield server
    server.stop()
    install(None)
