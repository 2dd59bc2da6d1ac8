"""Kill -9 `serve --local` while it follows an operation, start it again on the same local dir:
the waiting `send --wait` still gets its event, the cache was flushed by one POST, and the
topic carries exactly one event for the request."""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import (
    Processes,
    cache_args,
    http_json,
    one_event,
    topic_events,
    write_config,
)

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(120)
def test_kill9_serve_during_polling_then_restart(procs: Processes, local_dir: Path,
                                                 tmp_path: Path,
                                                 redis_url: str | None) -> None:
    cache, rid = "kill-me", "e2e-kill9-1"
    cfg = write_config(tmp_path / "emulator.json", {"caches": {cache: {"duration": 5}}})
    # with a redis-server the cache's keys live outside serve and survive the kill
    serve_args = ("--config", str(cfg), *(("--redis-url", redis_url) if redis_url else ()))
    serve = procs.serve(local_dir, *serve_args)
    assert http_json(f"{serve.arm_url}/_emulator/keys/{cache}", "PUT", {"count": 50}) == \
        {"count": 50}

    def keys() -> int | None:
        if redis_url is None:
            return None
        import redis
        with redis.Redis.from_url(redis_url) as client:
            return len(client.keys(f"redisflush:{cache}:*"))
    assert keys() in (50, None)

    sender = procs.spawn(["send", "--local", "--wait", "--json", *cache_args(cache),
                          "--request-id", rid], local_dir, name="send")
    # the POST was accepted and the first status poll finished: the chain now lives only
    # in a scheduled message on the poll queue and in the emulator's state file
    serve.wait_stderr(rf"PollOrchestrator request={rid} .* completed \d+ ms: scheduled ", 20)
    before = serve.cache_stats(cache)
    assert before["posts"] == 1 and before["polls"] >= 1 and before["flushes"] == 0, before
    serve.kill9()
    assert serve.popen.returncode == -9
    assert sender.alive(), "send --wait gave up when serve died"
    assert keys() in (50, None)                                   # not flushed yet

    again = procs.serve(local_dir, *serve_args)
    assert again.arm_url == serve.arm_url     # same port: poll URLs in messages stay valid
    assert sender.wait(60) == 0, sender.stderr()
    event = one_event(sender.stdout())
    assert event["data"]["requestId"] == rid
    assert event["data"]["status"] == "Succeeded"

    stats = again.cache_stats(cache)
    assert stats["posts"] == 1 and stats["accepted"] == 1, stats     # flushed by one POST
    assert stats["flushes"] == 1, stats
    assert keys() in (0, None)
    assert http_json(f"{again.arm_url}/_emulator/keys/{cache}") == {"count": 0}
    assert "Traceback" not in serve.stderr() + again.stderr()

    events = topic_events(local_dir, 1)
    assert [e["data"]["requestId"] for e in events] == [rid]   # exactly one on the topic
    assert events[0]["id"] == f"{rid}:completed"
