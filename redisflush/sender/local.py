"""The sender on the local bus that `serve --local` reads (SQLite under REDISFLUSH_LOCAL_DIR).

Loaded only for `--local` and the demo: the Azure path never imports `redisflush.local`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ..core.outbound import OutboundMessage
from .channel import Delivered, decode_event
from .errors import ChannelError


class LocalChannel:
    """sender.channel.Channel over the local bus; `settings` are the app's (`Settings`)."""

    def __init__(self, settings: Any) -> None:
        from ..local.runtime import open_bus

        self.settings = settings
        self.bus = open_bus(settings)

    def send_request(self, message: OutboundMessage) -> None:
        self._guard(self.bus.send, self.settings.request_queue, [message])

    def replies(self, session_id: str, until: float) -> Iterator[dict[str, Any]]:
        for message in self._receive(self.settings.reply_queue, until, session_id):
            self._guard(self.bus.complete, message)
            event = decode_event(message.body)
            if event is not None:
                yield event

    def events(self, subscription: str, timeout: float | None) -> Iterator[Delivered]:
        topic = self.settings.events_topic
        self._guard(self.bus.ensure_subscription, topic, subscription)
        until = None if timeout is None else time.monotonic() + timeout  # open: the clock runs
        for message in self._receive(f"{topic}/subscriptions/{subscription}", until, None):
            event = decode_event(message.body)
            if event is None:
                self._guard(self.bus.dead_letter, message, "UnreadableEvent",
                            "body is not a JSON object")
                continue
            yield Delivered(event, self._completer(message))

    def _completer(self, message: Any) -> Callable[[], None]:
        return lambda: self._guard(self.bus.complete, message)

    def _receive(self, entity: str, until: float | None,
                 session_id: str | None) -> Iterator[Any]:
        """One message at a time: whatever the caller does not take stays unlocked."""
        while until is None or (remaining := until - time.monotonic()) > 0:
            wait = 1.0 if until is None else min(1.0, remaining)
            # 10 ms between looks: a waiting pipeline learns of its event within a few ms
            yield from self._guard(self.bus.receive_wait, entity, wait, max_count=1,
                                   session_id=session_id, poll_interval=0.01)

    def _guard(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The local bus's BusError (a lock lost, a broken file) as the sender's one line."""
        from ..bus import BusError

        try:
            return fn(*args, **kwargs)
        except BusError as exc:
            raise ChannelError(str(exc)) from None

    def close(self) -> None:
        self.bus.close()
