"""The bus as the sender sees it: send one request, read one reply session, read a topic
subscription. Two implementations: `sender.azure.AzureChannel` (Service Bus) and
`sender.local.LocalChannel` (the local bus of `serve --local`).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.outbound import OutboundMessage


@dataclass(frozen=True)
class Delivered:
    """An event read from a subscription, still locked: `complete()` once it was handled,
    so a watcher that stops (`--count`) leaves nothing it did not print settled or locked."""

    event: dict[str, Any]
    complete: Callable[[], None]


class Channel(Protocol):
    """Where requests go and where their events come back from."""

    def send_request(self, message: OutboundMessage) -> None: ...

    def replies(self, session_id: str, until: float) -> Iterator[dict[str, Any]]:
        """The reply session's events (each completed as it is read) until `until`
        (time.monotonic())."""
        ...

    def events(self, subscription: str, timeout: float | None) -> Iterator[Delivered]:
        """The subscription's events, one at a time, for `timeout` seconds (None: forever)
        counted from when the subscription is open: connecting can take seconds (Azure, or
        a busy machine), and a timeout spent on it would end `watch` before its first look,
        printing none of the events already waiting."""
        ...

    def close(self) -> None: ...


def decode_event(body: bytes) -> dict[str, Any] | None:
    """A CloudEvent in structured mode (a JSON object), else None (never raises)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None
