"""The host's one line per invocation names a scheduled step's time as HH:MM:SS.mmm."""
from __future__ import annotations

import datetime as dt

from redisflush.app_invocation import describe as _describe
from redisflush.bus import OutboundMessage
from redisflush.core.commands import Schedule


def test_a_scheduled_step_is_described_to_the_millisecond_cut_not_rounded() -> None:
    at = dt.datetime(2030, 1, 2, 3, 4, 5, 678999, tzinfo=dt.UTC)
    message = OutboundMessage(body=b"{}", message_id="r:poll:2", scheduled_at=at)
    assert _describe([Schedule(message, at)]) == "scheduled r:poll:2 at 03:04:05.678"
    early = at.replace(hour=0, minute=0, second=0, microsecond=999)
    assert _describe([Schedule(message, early)]) == "scheduled r:poll:2 at 00:00:00.000"
    assert _describe([Schedule(message, early)]) == \
        f"scheduled r:poll:2 at {early:%H:%M:%S.%f}"[:-3]
