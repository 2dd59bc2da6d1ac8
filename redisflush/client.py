"""The sender's old import path, kept for bench/: it moved to `redisflush.sender`."""
from __future__ import annotations

from .sender.channel import Channel, decode_event
from .sender.commands import WAIT_MARGIN
from .sender.follow import EXIT_CODES, follow
from .sender.local import LocalChannel
from .sender.prepare import Invalid, Prepared, prepare
from .sender.report import describe

__all__ = ["EXIT_CODES", "WAIT_MARGIN", "Channel", "Invalid", "LocalChannel", "Prepared",
           "decode_event", "describe", "follow", "prepare"]
