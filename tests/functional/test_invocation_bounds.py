"""An invocation ends inside its lock even when ARM is slow: no ARM call starts once
CALL_WINDOW has passed, also among calls queued on the shared threads in one round (README,
"Reliability": "every invocation").
"""
from __future__ import annotations

import threading
from typing import Any

from redisflush.app import CALL_WINDOW
from tests.support.harness import RG, SUB, Harness, resource_id
from tests.support.scripted_arm import Answer, flush_path

SLOW = 6.0  # seconds each ARM call takes, on the app's clock


class SlowArm:
    """The ARM client, each call taking SLOW seconds of the harness's clock."""

    def __init__(self, inner: Any, h: Harness) -> None:
        self.inner, self.h = inner, h
        self.started: list[float] = []
        self._lock = threading.Lock()

    @property
    def pacer(self) -> Any:
        return self.inner.pacer

    def call(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.started.append(self.h.clock.monotonic())
        result = self.inner.call(method, url, *args, **kwargs)
        with self._lock:
            self.h.clock.advance(SLOW)
        return result


def test_calls_queued_past_the_window_go_to_the_next_message(h: Harness) -> None:
    caches = [f"cache-{n:02d}" for n in range(40)]
    for cache in caches:
        h.arm.on_flush(SUB, RG, cache, then=Answer(200, {}, b""))
    rid = h.send_request({"resourceIds": [resource_id(cache=c) for c in caches]})
    slow = SlowArm(h.app.arm, h)
    h.app.arm = slow  # type: ignore[assignment]
    began = h.clock.monotonic()

    (first,) = h.bus.pump(h.app, limit=1)

    assert first.error is None
    in_first = [t - began for t in slow.started]
    assert 0 < len(in_first) < len(caches)
    assert max(in_first) < CALL_WINDOW  # none started past the window
    h.run()
    posts = [len(h.arm.route("POST", flush_path(SUB, RG, c)).requests) for c in caches]
    assert posts == [1] * len(caches)
    assert h.batch(rid, {resource_id(cache=c): "Succeeded" for c in caches}, "Succeeded")
