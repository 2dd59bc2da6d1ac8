"""throwaway_redis (the demo's and the tests' redis-server) when its free port is taken between
picking and binding, as on a busy machine: it must hand out its own server, never the
listener that took the port."""
from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator

import pytest
import redis

from redisflush.local.demo import free_loopback_port, throwaway_redis

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed")


def picks(first: int) -> Iterator[int]:
    yield first
    while True:
        yield free_loopback_port()


def test_a_port_taken_by_another_redis_is_not_handed_out() -> None:
    with throwaway_redis(timeout=10) as other:
        assert other is not None
        other_port = int(other.rsplit(":", 1)[1].split("/")[0])
        redis.Redis.from_url(other).set("theirs", "1")
        ports = picks(other_port)
        with throwaway_redis(timeout=10, pick_port=lambda: next(ports)) as mine:
            assert mine is not None and mine != other
            assert redis.Redis.from_url(mine).get("theirs") is None
        assert redis.Redis.from_url(other).get("theirs") == b"1"  # theirs left running


def test_a_port_taken_by_something_else_is_not_handed_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        ports = picks(busy.getsockname()[1])
        with throwaway_redis(timeout=10, pick_port=lambda: next(ports)) as mine:
            assert mine is not None and f":{busy.getsockname()[1]}/" not in mine
            assert redis.Redis.from_url(mine).ping()


def test_no_port_that_works_is_none_after_the_tries() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with throwaway_redis(timeout=10, tries=2, pick_port=lambda: port) as url:
            assert url is None
