"""How a poll message's fields are read: each with its type, so a field the app never writes
is refused as the message is read rather than raising later in the step."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# A poll message is input too (anyone with send rights on the queue, another release):
# every field is read with its type, so one the app never writes is unreadable here
# (ValueError: dead-lettered for a person to look at, README "Reliability") rather than
# raising later in the step, after its ARM calls and ledger records.


def optional_text(d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} must be a string or null")
    return value


def whole_number(d: Mapping[str, Any], key: str, default: int | None = 0) -> int:
    value = d.get(key, default) if default is not None else d[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a whole number >= 0")
    return value


def text_list(d: Mapping[str, Any], key: str, default: list[str] | None = None
              ) -> tuple[str, ...] | None:
    value = d.get(key, default)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"{key} must be a list of strings or null")
    return tuple(value)


def str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def positive_count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def positive_seconds(value: object) -> float | None:
    """A finite, positive number of seconds, or None (a state written before the field
    existed, or one whose value cannot be used)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value < float("inf") else None
