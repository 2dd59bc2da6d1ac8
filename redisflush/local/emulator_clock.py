"""The ARM emulator's clocks: wall time (operation start/end times, which must survive a restart)
and monotonic time (throttling buckets, which must not jump with the wall clock).

Everything in the emulator that reads the time takes a `Clock`, so that tests can move time
forward with a `FakeClock` instead of sleeping. Replies that are slow on purpose (`latency`) still
sleep for real: they exist to exercise the client's socket timeouts.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "FakeClock", "SYSTEM_CLOCK"]


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""


class SystemClock:
    """The real clocks (the default)."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when told to; both readings advance together. Thread-safe,
    because the emulator's server threads read it while a test advances it.

    Wall time is float seconds since 1970, exact only to about 0.25 µs: to cross a deadline,
    advance a little past it (`advance(0.301)` for a 0.3 s operation), or by binary fractions."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:   # 2026-01-01T00:00:00Z
        self._lock = threading.Lock()
        self._wall, self._mono = float(start), 1000.0

    def time(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("seconds: a clock never goes back")
        with self._lock:
            self._wall += seconds
            self._mono += seconds
