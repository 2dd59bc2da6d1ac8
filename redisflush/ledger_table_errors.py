"""What an Azure Table storage failure says: one safe line for the log and the ledger's error
(no URL, key or signature), and the service's error code."""
from __future__ import annotations

import re

_SECRETS = re.compile(r"(?i)\b(accountkey|sharedaccesssignature|sig|signature)=[^;&\s'\"]+")


def describe(exc: BaseException) -> str:
    """One safe line for an azure.core error: its kind and status, no request URL (a SAS
    rides in its query), no multi-line service payload, no key or signature."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        text = f"HTTP {exc.status_code} {error_code(exc) or exc.reason or ''}"
    elif isinstance(exc, ClientAuthenticationError):
        text = f"no token: {_first_line(exc)}"
    elif isinstance(exc, ServiceRequestError):
        text = f"cannot connect: {_os_reason(exc) or 'connection failed'}"
    elif isinstance(exc, ServiceResponseError):
        text = f"no complete answer: {_os_reason(exc) or 'timed out or dropped'}"
    else:
        text = f"{type(exc).__name__}: {_first_line(exc)}"
    return _SECRETS.sub(r"\1=<redacted>", re.sub(r"[\x00-\x1f\x7f]", " ", text))[:300]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _os_reason(exc: BaseException) -> str | None:
    """The OS's words for a socket failure (e.g. 'Connection refused'), found down the
    cause chain; a timeout says so."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TimeoutError) or "timed out" in str(current).lower():
            return "timed out"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        inner = getattr(current, "inner_exception", None)
        current = inner if isinstance(inner, BaseException) else (
            current.__cause__ or current.__context__)
    return None


def error_code(exc: BaseException) -> str:
    """The service's error code ('' when none): the SDK's error_code when it set one (an
    enum or a str), else the x-ms-error-code header (create_entity re-raises without it)."""
    code = getattr(exc, "error_code", None)
    if not code:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None) or {}
        code = headers.get("x-ms-error-code")
    return str(getattr(code, "value", code) or "")


def table_missing(exc: BaseException) -> bool:
    return error_code(exc) == "TableNotFound"
