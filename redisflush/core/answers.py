"""What came back from ARM, as plain values: the core decides on these, `arm.py` makes them."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

UNTRUSTED_URL = "UntrustedUrl"


class LowerCaseHeaders(dict[str, str]):
    """Header names already lower-cased by whoever built it (`arm.py`): `lro.header` looks a
    name up directly instead of lower-casing every name for each lookup."""


@dataclass(frozen=True)
class ArmAnswer:
    """One HTTP answer from ARM (sans-IO view): status, headers (lower-cased), body, URL."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str
    elapsed: float = 0.0


@dataclass(frozen=True)
class ArmFailure:
    """No HTTP answer: connection error, timeout, token error (transient), or a URL that
    must not get a token (`UNTRUSTED_URL`, permanent). `sent` is False when no request
    left this process (no token, refused connection), so it is not counted as an ARM request.
    """

    code: str
    message: str
    retry_after: float | None = None
    sent: bool = True


def error_detail(body: bytes) -> dict[str, Any] | None:
    """ARM's ErrorResponse `{"error": {...}}` (or a bare ErrorDetail) as a plain dict."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        doc = doc["error"]
    if not isinstance(doc, dict) or not ({"code", "message"} & doc.keys()):
        return None
    return {k: doc[k] for k in ("code", "message", "target", "details", "additionalInfo")
            if k in doc}


def text_or_none(value: object) -> str | None:
    """ARM's `code` or `message` when it is text a subscriber can read: an event's error has
    both as strings (README, "Events"), and ARM's JSON may hold any value there."""
    return value if isinstance(value, str) and value.strip() else None
