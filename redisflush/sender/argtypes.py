"""argparse value types with their ranges, so a bad value is argparse's own one-line usage
error (exit 2) rather than a traceback deep inside a socket or a loop."""
from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path

_SUBSCRIPTION_NAME = re.compile(r"[A-Za-z0-9._-]{1,50}", re.ASCII)


def given(text: str) -> str:
    """A flag's value, never empty or only spaces (README, "CLI"): `--resource-group "$RG"`
    with RG unset must not read as a flag left out, which would widen a selector from the
    group to the whole subscription (or send `--database ""` to `default`)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty or only spaces (an unset "
                                         "variable?): give a value or leave the flag out")
    return text


def folder(text: str) -> Path:
    """A folder path that was given (an empty one would quietly mean the current folder)."""
    return Path(given(text))


def whole(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value
    return parse


def seconds(low: float, high: float) -> Callable[[str], float]:
    """A finite number of seconds in [low, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text[:40]} is not between {_plain(low)} and "
                                             f"{_plain(high)}")
        return value
    return parse


def _plain(number: float) -> str:
    return f"{number:.0f}" if float(number).is_integer() else f"{number:g}"


def subscription_name(text: str) -> str:
    """A topic subscription's own name (no path, no `$deadletterqueue`)."""
    if not _SUBSCRIPTION_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r} is not a subscription name (1-50 letters, digits, '.', '-', '_')")
    return text


port = whole(0, 65535)


STATUSES = ("Succeeded", "Failed", "Canceled", "TimedOut", "Rejected")


def statuses(text: str) -> frozenset[str]:
    """A comma list of event statuses (any case), each one the events can carry."""
    wanted = {s.strip() for s in text.split(",") if s.strip()}
    known = {s.lower() for s in STATUSES}
    unknown = sorted(w for w in wanted if w.lower() not in known)
    if not wanted or unknown:
        raise argparse.ArgumentTypeError(
            f"{(unknown or [text])[0][:40]!r} is not a status (one or more of "
            f"{', '.join(STATUSES)})")
    return frozenset(w.lower() for w in wanted)
