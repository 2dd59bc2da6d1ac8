"""ARM asynchronous-operation rules, sans IO: headers and bodies in, readings and delays out.

Follows the ARM RPC's async-operation contract (Azure-AsyncOperation and Location polling,
Retry-After) as azure-core's ARM poller does, with one deliberate difference: a non-2xx
status answer is classified rather than fatal. When to read again is core/cadence.py's rule.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from .answers import LowerCaseHeaders

# Trust rules live in core/trust.py; re-exported here for the modules that import them from lro.
from .trust import is_loopback_http as is_loopback_http
from .trust import is_trusted as is_trusted
from .trust import redact_url as redact_url

SUCCEEDED, FAILED, CANCELED = "Succeeded", "Failed", "Canceled"
_TERMINAL = {s.lower(): s for s in (SUCCEEDED, FAILED, CANCELED)}
# ARM's running statuses are words (InProgress, Running, Accepted...); a longer one is cut,
# since the status rides in every poll message and note (README, "Reliability": every
# message at most 192 KiB whatever ARM answered).
MAX_STATUS = 64



def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works on plain dicts too. An answer from arm.py
    carries LowerCaseHeaders: one lookup, where the scan lower-cased every name for each of
    the ~8 lookups made of an answer."""
    wanted = name.lower()
    if type(headers) is LowerCaseHeaders:
        return headers.get(wanted)
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def retry_after(headers: Mapping[str, str], now: dt.datetime) -> float | None:
    """Seconds ARM asks us to wait: retry-after-ms, x-ms-retry-after-ms, then Retry-After."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        millis = _number(header(headers, name))
        if millis is not None:
            return max(0.0, millis / 1000.0)
    value = header(headers, "retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None  # e.g. a year too large for a C long raises OverflowError
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _number(value: str | None) -> float | None:
    """A header's finite number; "nan", "inf" and "1e400" are garbage, not a wait."""
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def is_transient(status: int) -> bool:
    """408, 409 (busy), 429 and 5xx may succeed later; other errors will not."""
    return status in (408, 409, 429) or status >= 500


@dataclass(frozen=True)
class Reading:
    """What one status answer says: `state` is running, terminal or bad (with a `problem`)."""

    state: str
    status: str | None = None
    operation: Mapping[str, Any] | None = None
    problem: str | None = None


def terminal_status(status: object) -> str | None:
    """The canonical terminal status for any casing or surrounding whitespace, else None."""
    return _TERMINAL.get(status.strip().lower()) if isinstance(status, str) else None


class _Ambiguous(ValueError):
    """A JSON object names the same key twice: which value ARM meant is unknowable."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise _Ambiguous("duplicate key")
    return doc


def _finite_float(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


def _small_int(text: str) -> int | None:
    # CPython refuses ints over 4,300 digits (ValueError); no field of ours needs 30.
    return int(text) if len(text.lstrip("-")) <= 30 else None


def parse_json(body: bytes) -> Any:
    """json.loads for ARM's bodies: NaN/Infinity, overflowing floats and absurdly long ints
    become None (never an exception or a non-finite number in an event); a duplicate key
    anywhere raises `_Ambiguous` (a ValueError)."""
    return json.loads(body, object_pairs_hook=_pairs, parse_float=_finite_float,
                      parse_int=_small_int, parse_constant=lambda _: None)


def _percent(value: object) -> float | int | None:
    """percentComplete when it is a plain number in 0..100, else None (dropped, not fatal)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) and 0 <= value <= 100 else None


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    """The status document with an unusable percentComplete dropped (set to None)."""
    if "percentComplete" in doc and _percent(doc["percentComplete"]) is None:
        doc = {**doc, "percentComplete": None}
    return doc


def _reading_from_body(body: bytes, empty: Reading | None) -> Reading:
    if not body.strip():
        return empty or Reading("bad", problem="OperationStatusEmptyBody")
    try:
        doc = parse_json(body)
    except _Ambiguous:
        return Reading("bad", problem="OperationStatusAmbiguous")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Reading("bad", problem="OperationStatusInvalidJson")
    if not isinstance(doc, dict):
        return Reading("bad", problem="OperationStatusInvalidJson")
    doc = _clean(doc)
    status = doc.get("status")
    if not isinstance(status, str) or not status.strip():
        return Reading("bad", problem="OperationStatusMissingStatus", operation=doc)
    final = terminal_status(status)
    return Reading("terminal" if final else "running", final or _shown(status.strip()), doc)


def _shown(status: str) -> str:
    return status if len(status) <= MAX_STATUS else status[:MAX_STATUS - 1] + "…"


class AsyncOperationPolling:
    """Azure-AsyncOperation: every 2xx answer carries an operation resource with `status`."""

    kind = "azure-asyncoperation"
    header = "Azure-AsyncOperation"

    def read(self, status: int, body: bytes) -> Reading:
        return _reading_from_body(body, None)


class LocationPolling:
    """Location: 202 while running (body optional); 200/201/204 means done whatever the body
    (ARM's Location rule), a body that is an object with a terminal `status` still counts."""

    kind = "location"
    header = "Location"

    def read(self, status: int, body: bytes) -> Reading:
        reading = _reading_from_body(body, None)
        if status == 202:  # running, unless an object says it is over
            return reading if reading.state != "bad" else Reading("running", "InProgress")
        if reading.problem == "OperationStatusAmbiguous" or reading.state == "terminal":
            return reading  # "Failed" twice over "Succeeded": refuse to guess
        # The result itself, a non-object, no status or a non-terminal one: done.
        return Reading("terminal", SUCCEEDED, reading.operation)


# Ordered: ARM's RPC says Azure-AsyncOperation wins when both headers are present.
STRATEGIES: tuple[AsyncOperationPolling | LocationPolling, ...] = (
    AsyncOperationPolling(), LocationPolling())


def strategy(kind: str) -> AsyncOperationPolling | LocationPolling:
    for candidate in STRATEGIES:
        if candidate.kind == kind:
            return candidate
    raise ValueError(f"unknown poll kind {kind!r}")


def poll_target(headers: Mapping[str, str], answered_url: str) -> tuple[str, str] | None:
    """(kind, absolute URL) to poll next, from the first strategy whose header is present.

    The URL is used verbatim (percent-encoding and signed parameters kept); only a relative
    reference is resolved against the URL that returned it.
    """
    for candidate in STRATEGIES:
        value = header(headers, candidate.header)
        if value and value.strip():
            return candidate.kind, _absolute(value.strip(), answered_url)
    return None


def _absolute(reference: str, base: str) -> str:
    """An absolute URL exactly as sent (urljoin would drop an empty `?` or `#`, fold case)."""
    try:
        parts = urlsplit(reference)
        return reference if parts.scheme and parts.netloc else urljoin(base, reference)
    except ValueError:
        return reference  # unparseable: kept, and is_trusted refuses it

