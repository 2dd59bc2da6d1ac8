"""The HTTP side of ARM: requests' transport adapter, bearer tokens, a time limit per call.

Everything here is IO; what an answer *means* is decided in the core (`core/lro.py` and the
step function). Three rules shape this module (docs/design.md, "Reliability rules"):
- every call has a limit on its *whole* duration (connect + all reads), so an answer that
  trickles one byte at a time cannot outlive the Service Bus lock (each socket read waits at
  most the time left, see `DeadlineAdapter`; only a DNS lookup is outside it, bounded by the
  resolver's own timeouts);
- only network and HTTP errors become an `ArmFailure` (transient); a programming error
  propagates, so it is seen rather than retried as a "connection error";
- proxy settings are resolved once per client: with `trust_env` on, requests re-reads the
  environment and ~/.netrc on every call, about a third of a call's CPU (bench/cpu_arm.py);
  each call then goes to the urllib3 pool requests' adapter picks for that proxy, without
  requests' per-call Session, PreparedRequest and Response machinery.
"""
from __future__ import annotations

import datetime as dt
import http.client
import io
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import check_header_validity, get_environ_proxies, urldefragauth

from . import __version__
from .core.answers import UNTRUSTED_URL, ArmAnswer, ArmFailure, error_detail
from .core.lro import retry_after
from .core.trust import is_trusted, redact_url
from .logtext import printable
from .pacing import Pacer, bucket_kind

__all__ = ["ArmAnswer", "ArmClient", "ArmFailure", "IdentityToken", "StaticToken",
           "TokenSource", "UNTRUSTED_URL", "error_detail"]

log = logging.getLogger("redisflush.arm")
# urllib3 logs each request's full path (signed query parameters included) at DEBUG: keep it
# above DEBUG even when a deployment turns DEBUG on for every logger.
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)
USER_AGENT = f"redisflush/{__version__} python-requests/{requests.__version__}"
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 20.0
# Whole-call limit: well below the Service Bus lock (60 s), so no invocation outlives it.
TOTAL_TIMEOUT = 25.0
MAX_BODY = 1024 * 1024  # an operation status or error body is small; refuse to buffer more
# A list page holds up to ARM's page size of whole resources (a few KB each)
MAX_LIST_BODY = 32 * 1024 * 1024

# What a network or HTTP problem looks like; anything else is a bug and propagates.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
    OSError)
_TIMEOUTS: tuple[type[BaseException], ...] = (
    requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
_TARGETS_KEPT = 4096  # request targets remembered per client (one per operation being read)


class TokenSource(Protocol):
    """Where bearer tokens come from (azure-identity in Azure, a fixed one for the emulator)."""

    def token(self, scope: str) -> str: ...


class StaticToken:
    """A fixed token: only for the local ARM emulator, which checks it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self, scope: str) -> str:
        return self._token


class IdentityToken:
    """azure-identity: DefaultAzureCredential, or the user-assigned managed identity.

    The credential is created on first use (importing and probing azure-identity costs
    time a cold start should not pay before the first message) and shared by all threads;
    tokens are reused until five minutes before they expire.
    """

    def __init__(self, client_id: str | None = None,
                 credential_factory: Callable[[], Any] | None = None) -> None:
        self._client_id = client_id
        self._factory = credential_factory or self._default_credential
        self._credential: Any = None
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @property
    def credential(self) -> Any:
        """The azure-identity credential, shared with the Service Bus client."""
        with self._lock:
            if self._credential is None:
                self._credential = self._factory()
            return self._credential

    def _default_credential(self) -> Any:
        if self._client_id:
            from azure.identity import ManagedIdentityCredential
            return ManagedIdentityCredential(client_id=self._client_id)
        from azure.identity import DefaultAzureCredential
        return DefaultAzureCredential()

    def token(self, scope: str) -> str:
        with self._lock:
            cached = self._cache.get(scope)
            if cached and cached[1] - 300 > time.time():
                return cached[0]
        access = self.credential.get_token(scope)
        token = str(access.token)
        with self._lock:
            self._cache[scope] = (token, float(access.expires_on))
        return token


class ArmClient:
    """Sends ARM requests (flush POSTs, status and list GETs); one Session per process.

    requests.Session is safe for concurrent requests from threads when, as here, nothing
    mutates the session after creation (the pool is sized for the worker's threads).
    `timeouts` is (connect, per socket read); `total_timeout` bounds the whole call (with
    the default session; a session of your own keeps its adapters and their limits).
    """

    def __init__(self, endpoint: str, api_version: str, tokens: TokenSource,
                 *, pacer: Pacer | None = None, session: requests.Session | None = None,
                 timeouts: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
                 total_timeout: float = TOTAL_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.api_version = api_version
        self.pacer = pacer or Pacer()
        self.total_timeout = total_timeout
        self._tokens = tokens
        self._timeouts = timeouts
        # Every URL that gets a token has the endpoint's scheme, host and port (is_trusted),
        # so the proxy decision for the endpoint (NO_PROXY included) holds for every call.
        self.proxies: dict[str, str] = dict(get_environ_proxies(endpoint, no_proxy=None))
        self._session = session or _new_session()
        adapter: Any = self._session.get_adapter(endpoint)  # every trusted URL's scheme
        self._adapter = adapter
        verify = self._session.verify
        self._verify: bool | str = True if verify is None else verify
        self._cert = self._session.cert
        # How requests would route a request to the endpoint, decided once (see `_pool`): the
        # request target is the absolute URL only through an HTTP proxy to an http endpoint
        # (requests' request_url).
        self._probe = requests.PreparedRequest()
        self._probe.prepare(method="GET", url=endpoint)
        self._absolute_target = self._adapter.request_url(self._probe, self.proxies) != \
            self._probe.path_url
        self._targets: dict[str, str] = {}
        self._kept_pool: Any = None
        self._in_flight: dict[tuple[str, str], int] = {}
        self._in_flight_lock = threading.Lock()

    def in_flight(self, subscription: str, kind: str) -> int:
        """Requests of this client now on the wire for (subscription, "reads"|"writes")."""
        with self._in_flight_lock:
            return self._in_flight.get((subscription.lower(), kind), 0)

    def post(self, url: str, subscription_id: str, client_request_id: str
             ) -> ArmAnswer | ArmFailure:
        return self.call("POST", url, subscription_id, client_request_id)

    def get(self, url: str, subscription_id: str, client_request_id: str
            ) -> ArmAnswer | ArmFailure:
        return self.call("GET", url, subscription_id, client_request_id)

    def call(self, method: str, url: str, subscription_id: str, client_request_id: str,
             body: bytes | None = None, *, content_type: str = "application/json",
             max_body: int = MAX_BODY) -> ArmAnswer | ArmFailure:
        """One ARM request with a bearer token, within `total_timeout`: the answer, or an
        ArmFailure for a refused URL, a token error or a network/HTTP failure."""
        if not is_trusted(url, self.endpoint):
            # Defence in depth: the orchestrator already refuses such URLs.
            return ArmFailure(UNTRUSTED_URL, "refusing to send a token to "
                              + printable(redact_url(url)), sent=False)
        try:
            token = self._tokens.token(self.endpoint + "/.default")
        except Exception as exc:  # azure-identity raises ClientAuthenticationError and kin
            return ArmFailure("TokenUnavailable",
                              f"could not get an ARM token: {type(exc).__name__}: "
                              f"{printable(_first_line(exc), 300)}", sent=False)
        headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT,
                   "x-ms-client-request-id": client_request_id, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        elif method.upper() in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = "0"
        key = (subscription_id.lower(), bucket_kind(method))
        with self._in_flight_lock:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            result = self._exchange(method, url, headers, body, max_body)
        finally:
            with self._in_flight_lock:
                self._in_flight[key] -= 1
        debug = log.isEnabledFor(logging.DEBUG)
        if isinstance(result, ArmFailure):
            if debug:
                log.debug("%s %s failed: %s", method, printable(redact_url(url)), result.code)
            return result
        self.pacer.observe(subscription_id, method, result.status, result.headers,
                           retry_after(result.headers, dt.datetime.now(dt.UTC)))
        if debug:
            log.debug("%s %s -> %s in %.0f ms", method, printable(redact_url(url)),
                      result.status, result.elapsed * 1000)
        return result

    def _exchange(self, method: str, url: str, headers: Mapping[str, str],
                  body: bytes | None, max_body: int = MAX_BODY) -> ArmAnswer | ArmFailure:
        """Send and read the answer against one monotonic deadline (see `DeadlineAdapter`).

        The request goes straight to the urllib3 pool that requests' adapter would pick (proxy,
        TLS settings and all): Session.request and adapter.send would merge settings, build a
        PreparedRequest and a Response and scan for cookies on every call, for nothing here
        (no redirects, no cookies, proxies and TLS settings fixed at start): about half of
        this call's CPU (bench/cpu_arm.py).
        """
        started = time.monotonic()
        deadline = started + self.total_timeout
        connect, per_read = self._timeouts
        _limits.sent = False
        pool: Any = None
        try:
            for name, value in headers.items():
                check_header_validity((name, value))  # as requests would: InvalidHeader
            target = self._target(url)
            pool = self._pool()
            with call_deadline(deadline, per_read):
                response = pool.urlopen(
                    method=method, url=target, body=body, headers=headers, redirect=False,
                    assert_same_host=False, preload_content=False, decode_content=False,
                    retries=self._adapter.max_retries, chunked=False,
                    timeout=urllib3.Timeout(connect=max(0.001, min(connect, self.total_timeout)),
                                            read=per_read))
                try:
                    data = response.read(max_body + 1, decode_content=True) or b""
                    if len(data) > max_body:
                        # cut, it would read as broken JSON: say what happened instead
                        return ArmFailure("AnswerTooLarge", f"{method} "
                                          f"{printable(redact_url(url))}: ARM's answer was "
                                          f"over {max_body} bytes")
                    return ArmAnswer(response.status,
                                     {k.lower(): v for k, v in response.headers.items()},
                                     data, url, time.monotonic() - started)
                finally:
                    response.close()  # what requests does: a body left unread drops the
                    response.release_conn()  # connection; a read one went back to the pool
        except NETWORK_ERRORS as exc:
            timed_out = _timed_out(exc) or time.monotonic() >= deadline
            what = "timed out" if timed_out else "failed"
            return ArmFailure("Timeout" if timed_out else "ConnectionError",
                              f"{method} {printable(redact_url(url))} {what}: "
                              f"{type(exc).__name__}",
                              sent=_went_out(pool) and not _never_connected(exc))

    def _pool(self) -> Any:
        """The urllib3 pool requests' adapter picks for the endpoint (and so for every trusted
        URL): direct, or through the proxy resolved when the client was built. Kept until it
        is closed (the adapter closed, or its pool manager dropped it)."""
        pool = self._kept_pool
        if pool is None or pool.pool is None:
            pool = self._kept_pool = self._pick_pool()
        return pool

    def _pick_pool(self) -> Any:
        adapter = self._adapter
        if hasattr(adapter, "get_connection_with_tls_context"):  # requests >= 2.32.2
            return adapter.get_connection_with_tls_context(self._probe, self._verify,
                                                           self.proxies, self._cert)
        pool = adapter.get_connection(self.endpoint, self.proxies)
        adapter.cert_verify(pool, self.endpoint, self._verify, self._cert)
        return pool

    def _target(self, url: str) -> str:
        """The request target requests would send for `url` (its URL quoting and IDNA),
        remembered: a status URL is read about once a second for the whole operation."""
        target = self._targets.get(url)
        if target is None:
            prepared = requests.PreparedRequest()
            prepared.prepare_url(url, None)
            target = urldefragauth(prepared.url or url) if self._absolute_target \
                else prepared.path_url
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()
            self._targets[url] = target
        return target


# --- the whole-call limit -------------------------------------------------------------------
# requests' read timeout applies to each socket read: an answer that sends a byte every few
# seconds never trips it. Here every read of the answer (status line, headers, body, a proxy's
# CONNECT answer) first sets the socket's timeout to the time left before the call's deadline,
# so the call ends by then whatever the server does. Connecting is bounded by the connect
# timeout (CPython bounds a TLS handshake as a whole by the socket timeout too).

_limits = threading.local()  # (deadline, per-read timeout) of the call on this thread


@contextmanager
def call_deadline(deadline: float, per_read: float) -> Iterator[None]:
    """Reads made by this thread inside the block end by `deadline` (time.monotonic)."""
    previous = getattr(_limits, "value", None)
    _limits.value = (deadline, per_read)
    try:
        yield
    finally:
        _limits.value = previous


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
        limit = getattr(_limits, "value", None)
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
            _limits.sent = False

    def send(self, data: Any) -> None:
        if getattr(self, "sock", None) is None:
            # what http.client would do first: a failure here sent nothing
            self.connect()
        _limits.sent = True
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


def _new_session() -> requests.Session:
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


def _timed_out(exc: BaseException) -> bool:
    """requests' reading: a refused connection (NewConnectionError, which urllib3 derives
    from ConnectTimeoutError) is a connection error, not a timeout."""
    reason = _reason(exc)
    return isinstance(exc, _TIMEOUTS) or (
        isinstance(reason, _TIMEOUTS)
        and not isinstance(reason, urllib3.exceptions.NewConnectionError))


def _went_out(pool: Any) -> bool:
    """Whether the request's bytes began to go out: known on our own connections (a
    `_MarksSent`); a pool of other connections (a SOCKS proxy, a session the caller gave)
    may have sent it, so a POST there stays in doubt."""
    if pool is None:  # it failed before a connection was picked
        return False
    if issubclass(getattr(pool, "ConnectionCls", object), _MarksSent):
        return bool(getattr(_limits, "sent", False))
    return True


def _never_connected(exc: BaseException) -> bool:
    """True when the connection was never made (refused, unresolvable, connect timeout)."""
    never = (requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError,
             urllib3.exceptions.NewConnectionError)
    return isinstance(exc, never) or isinstance(_reason(exc), never)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
