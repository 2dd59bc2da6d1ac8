"""The limit on an ARM call's whole duration (docs/design.md, "Reliability rules"): requests'
transport adapter whose connections read against one deadline, mark when a request's bytes
went out, and keep TCP keep-alive on; and how a failed call is read (timeout, never
connected)."""
from __future__ import annotations

import http.client
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

_TIMEOUTS: tuple[type[BaseException], ...] = (
    requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)

# requests' read timeout applies to each socket read: an answer that sends a byte every few
# seconds never trips it. Here every read of the answer (status line, headers, body, a proxy's
# CONNECT answer) first sets the socket's timeout to the time left before the call's deadline,
# so the call ends by then whatever the server does. Connecting is bounded by the connect
# timeout (CPython bounds a TLS handshake as a whole by the socket timeout too).

call_limits = threading.local()  # (deadline, per-read timeout) of the call on this thread


@contextmanager
def call_deadline(deadline: float, per_read: float) -> Iterator[None]:
    """Reads made by this thread inside the block end by `deadline` (time.monotonic)."""
    previous = getattr(call_limits, "value", None)
    call_limits.value = (deadline, per_read)
    try:
        yield
    finally:
        call_limits.value = previous


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each waiting at most min(per-read timeout, time left)."""

    def __init__(self, sock: Any, deadline: float, per_read: float) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # keeps the socket open while we read
        self._deadline = deadline
        self._per_read = per_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the ARM call's total time limit passed")
        self._sock.settimeout(min(left, self._per_read))
        read: int | None = self._raw.readinto(buffer)
        return read

    def fileno(self) -> int:
        return int(self._raw.fileno())

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _SocketView:
    """What http.client.HTTPResponse needs of a socket (makefile), with the deadline."""

    def __init__(self, sock: Any, deadline: float, per_read: float) -> None:
        self._args = (sock, deadline, per_read)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(*self._args))


class _DeadlineResponse(http.client.HTTPResponse):
    """http.client's response, reading through `_DeadlineReader` inside `call_deadline`."""

    def __init__(self, sock: Any, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None) -> None:
        limit = getattr(call_limits, "value", None)
        view: Any = _SocketView(sock, *limit) if limit else sock  # only makefile() is used
        super().__init__(view, debuglevel, method, url)


def _keepalive_options() -> list[tuple[int, int, int]]:
    """TCP keep-alive on every ARM connection (docs/azure.md, "Outbound connections").

    Azure's outbound NAT drops a flow idle for 4 minutes without a word; a kept connection
    reused after that sends into the void, and a POST sent there waits out its read limit
    and is then in doubt. A probe after 60 s idle keeps the flow alive; a flow dropped anyway
    fails its probes within 2 minutes, and urllib3 sees the socket dead before reusing it.
    """
    options = list(urllib3.connection.HTTPConnection.default_socket_options)
    options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 20), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):  # Linux (Azure's workers); other systems keep their own
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


KEEPALIVE_OPTIONS = _keepalive_options()


class _MarksSent:
    """Notes on this thread when the request's first bytes go to the server, once the
    connection (a TLS handshake, a proxy's tunnel) is up: a failure before that is a request
    that never left, one after may have reached ARM (a POST then is in doubt)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("socket_options", KEEPALIVE_OPTIONS)
        super().__init__(*args, **kwargs)

    def connect(self) -> None:
        try:
            super().connect()  # type: ignore[misc]
        finally:
            # a proxy's CONNECT line went out through send(): nothing of the request did
            call_limits.sent = False

    def send(self, data: Any) -> None:
        if getattr(self, "sock", None) is None:
            # what http.client would do first: a failure here sent nothing
            self.connect()
        call_limits.sent = True
        super().send(data)  # type: ignore[misc]


class _Connection(_MarksSent, urllib3.connection.HTTPConnection):
    response_class = _DeadlineResponse


class _TlsConnection(_MarksSent, urllib3.connection.HTTPSConnection):
    response_class = _DeadlineResponse


class _Pool(urllib3.HTTPConnectionPool):
    ConnectionCls = _Connection


class _TlsPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TlsConnection


_POOLS = {"http": _Pool, "https": _TlsPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections read through `_DeadlineResponse` (direct or via
    an HTTP(S) proxy; a SOCKS proxy keeps its own connections and per-read timeouts)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = _POOLS
        return manager


def new_session() -> requests.Session:
    """A Session that never reads the environment per call (proxies come from the client).

    It only holds the adapters and TLS settings: calls go to the adapter directly."""
    session = requests.Session()
    session.trust_env = False
    # What trust_env would have found for TLS, resolved once: a corporate CA bundle.
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or \
        os.environ.get("CURL_CA_BUNDLE") or True
    # No retries here: a failed request becomes a scheduled retry message, never a sleep.
    adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _reason(exc: BaseException) -> BaseException | None:
    """What urllib3 gave up on: MaxRetryError.reason, directly or inside requests' error."""
    for candidate in (exc, exc.args[0] if exc.args else None):
        reason = getattr(candidate, "reason", None)
        if isinstance(reason, BaseException):
            return reason
    return None


def is_timeout(exc: BaseException) -> bool:
    """requests' reading: a refused connection (NewConnectionError, which urllib3 derives
    from ConnectTimeoutError) is a connection error, not a timeout."""
    reason = _reason(exc)
    return isinstance(exc, _TIMEOUTS) or (
        isinstance(reason, _TIMEOUTS)
        and not isinstance(reason, urllib3.exceptions.NewConnectionError))


def went_out(pool: Any) -> bool:
    """Whether the request's bytes began to go out: known on our own connections (a
    `_MarksSent`); a pool of other connections (a SOCKS proxy, a session the caller gave)
    may have sent it, so a POST there stays in doubt."""
    if pool is None:  # it failed before a connection was picked
        return False
    if issubclass(getattr(pool, "ConnectionCls", object), _MarksSent):
        return bool(getattr(call_limits, "sent", False))
    return True


def never_connected(exc: BaseException) -> bool:
    """True when the connection was never made (refused, unresolvable, connect timeout)."""
    never = (requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError,
             urllib3.exceptions.NewConnectionError)
    return isinstance(exc, never) or isinstance(_reason(exc), never)
