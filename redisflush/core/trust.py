"""Where a bearer token may go, and how a URL is shown: pure string rules, no IO.

A poll URL or nextLink comes from ARM's headers or from a message; a token goes only to the
configured ARM endpoint's own scheme, host and port, plain http only when that endpoint is
an http loopback URL (the local emulator). docs/design.md, "Security rules".
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit


def is_loopback_http(url: str) -> bool:
    """True for an http URL on localhost or a loopback address (the local ARM emulator)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme != "http" or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# A chain polls the same URL again and again: each is parsed once. Sized for every operation
# a process follows at once (a fleet of hundreds): a cache smaller than that, read in turn,
# would miss on every read (bench/cpu.py).
@lru_cache(maxsize=4096)
def is_trusted(url: str, arm_endpoint: str) -> bool:
    """True when `url` has the ARM endpoint's own scheme, host and port (token may go there);
    plain http only when the endpoint itself is an http loopback URL (the local emulator)."""
    try:
        got, want = urlsplit(url), _endpoint(arm_endpoint)
        if got.scheme == "http" and not want.loopback_http:
            return False  # plain http only to the local emulator, never to a real host
        return (got.scheme == want.scheme and got.scheme in ("https", "http")
                and got.hostname is not None and got.hostname == want.hostname
                and _port(got) == want.port and not got.username and not got.password)
    except ValueError:
        return False


class _Endpoint(NamedTuple):
    scheme: str
    hostname: str | None
    port: int
    loopback_http: bool


@lru_cache(maxsize=16)
def _endpoint(arm_endpoint: str) -> _Endpoint:
    """What every URL checked against the endpoint is compared with, parsed once (ValueError
    for an endpoint urlsplit refuses)."""
    want = urlsplit(arm_endpoint)
    return _Endpoint(want.scheme, want.hostname, _port(want), is_loopback_http(arm_endpoint))


def _port(parts: Any) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def redact_url(url: str) -> str:
    """The URL without query or userinfo: signed parameters and passwords stay out of events."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")
