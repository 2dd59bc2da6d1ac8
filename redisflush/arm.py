"""The HTTP side of ARM: `ArmClient`, its calls sent through the adapter of `arm_deadline.py`
(a time limit per call) with bearer tokens from `arm_tokens.py`.

Everything here is IO; what an answer *means* is decided in the core (`core/lro.py` and the
step function). Three rules shape this module (docs/design.md, "Reliability rules"):
- every call has a limit on its *whole* duration (connect + all reads), so an answer that
  trickles one byte at a time cannot outlive the Service Bus lock (each socket read waits at
  most the time left, see `arm_deadline.DeadlineAdapter`; only a DNS lookup is outside it,
  bounded by the resolver's own timeouts);
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
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests
import urllib3
from requests.utils import check_header_validity, get_environ_proxies, urldefragauth

from . import __version__
from .arm_deadline import (
    call_deadline,
    call_limits,
    is_timeout,
    never_connected,
    new_session,
    went_out,
)
from .arm_tokens import TokenSource
from .core.answers import UNTRUSTED_URL, ArmAnswer, ArmFailure, LowerCaseHeaders, error_detail
from .core.lro import retry_after
from .core.trust import is_trusted, redact_url
from .logtext import printable
from .pacing import Pacer, bucket_kind

__all__ = ["ArmAnswer", "ArmClient", "ArmFailure", "UNTRUSTED_URL", "error_detail"]

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
_TARGETS_KEPT = 4096  # request targets remembered per client (one per operation being read)


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
        self._session = session or new_session()
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
        """Send and read the answer against one monotonic deadline (see
        `arm_deadline.DeadlineAdapter`).

        The request goes straight to the urllib3 pool that requests' adapter would pick (proxy,
        TLS settings and all): Session.request and adapter.send would merge settings, build a
        PreparedRequest and a Response and scan for cookies on every call, for nothing here
        (no redirects, no cookies, proxies and TLS settings fixed at start): about half of
        this call's CPU (bench/cpu_arm.py).
        """
        started = time.monotonic()
        deadline = started + self.total_timeout
        connect, per_read = self._timeouts
        call_limits.sent = False
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
                                     LowerCaseHeaders({k.lower(): v for k, v
                                                       in response.headers.items()}),
                                     data, url, time.monotonic() - started)
                finally:
                    response.close()  # what requests does: a body left unread drops the
                    response.release_conn()  # connection; a read one went back to the pool
        except NETWORK_ERRORS as exc:
            timed_out = is_timeout(exc) or time.monotonic() >= deadline
            what = "timed out" if timed_out else "failed"
            return ArmFailure("Timeout" if timed_out else "ConnectionError",
                              f"{method} {printable(redact_url(url))} {what}: "
                              f"{type(exc).__name__}",
                              sent=went_out(pool) and not never_connected(exc))

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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
