"""The HTTP side of ARM: one requests.Session, bearer tokens, timeouts, error bodies.

Everything here is IO; what an answer *means* is decided in `lro` and `orchestrator`.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import requests
import urllib3
from requests.adapters import HTTPAdapter

from . import __version__
from .core.lro import is_trusted, redact_url, retry_after
from .pacing import Pacer

log = logging.getLogger("redisflush.arm")
# urllib3 logs each request's full path (signed query parameters included) at DEBUG: keep it
# above DEBUG even when a deployment turns DEBUG on for every logger.
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)
USER_AGENT = f"redisflush/{__version__} python-requests/{requests.__version__}"
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 20.0
MAX_BODY = 1024 * 1024  # an operation status or error body is small; refuse to buffer more


@dataclass(frozen=True)
class ArmAnswer:
    """One HTTP answer from ARM (sans-IO view): status, headers (lower-cased), body, URL."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str
    elapsed: float = 0.0


UNTRUSTED_URL = "UntrustedUrl"


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
        with self._lock:
            self._cache[scope] = (access.token, float(access.expires_on))
        return access.token


class ArmClient:
    """Sends the flush POST and status GETs; one Session per process, thread-safe use.

    requests.Session is safe for concurrent requests from threads when, as here, nothing
    mutates the session after creation (the pool is sized for the worker's threads).
    """

    def __init__(self, endpoint: str, api_version: str, tokens: TokenSource,
                 *, pacer: Pacer | None = None, session: requests.Session | None = None,
                 timeouts: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)) -> None:
        self.endpoint = endpoint
        self.api_version = api_version
        self.pacer = pacer or Pacer()
        self._tokens = tokens
        self._timeouts = timeouts
        self._session = session or _new_session()

    def post(self, url: str, subscription_id: str, client_request_id: str
             ) -> ArmAnswer | ArmFailure:
        return self._send("POST", url, subscription_id, client_request_id)

    def get(self, url: str, subscription_id: str, client_request_id: str
            ) -> ArmAnswer | ArmFailure:
        return self._send("GET", url, subscription_id, client_request_id)

    def _send(self, method: str, url: str, subscription_id: str,
              client_request_id: str) -> ArmAnswer | ArmFailure:
        if not is_trusted(url, self.endpoint):
            # Defence in depth: the orchestrator already refuses such URLs.
            return ArmFailure(UNTRUSTED_URL, f"refusing to send a token to {redact_url(url)}",
                              sent=False)
        try:
            token = self._tokens.token(self.endpoint + "/.default")
        except Exception as exc:  # azure-identity raises ClientAuthenticationError and kin
            return ArmFailure("TokenUnavailable",
                              f"could not get an ARM token: {type(exc).__name__}: "
                              f"{_first_line(exc)}", sent=False)
        headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT,
                   "x-ms-client-request-id": client_request_id, "Accept": "application/json"}
        if method == "POST":
            headers["Content-Length"] = "0"
        started = time.monotonic()
        try:
            with self._session.request(method, url, headers=headers, timeout=self._timeouts,
                                       allow_redirects=False, stream=True) as response:
                body = response.raw.read(MAX_BODY + 1, decode_content=True) or b""
                answer = ArmAnswer(response.status_code,
                                   {k.lower(): v for k, v in response.headers.items()},
                                   body[:MAX_BODY], url, time.monotonic() - started)
        except requests.Timeout as exc:
            return ArmFailure("Timeout", f"{method} {redact_url(url)} timed out: "
                                         f"{type(exc).__name__}", sent=not _never_connected(exc))
        except requests.RequestException as exc:
            return ArmFailure("ConnectionError", f"{method} {redact_url(url)} failed: "
                                                 f"{type(exc).__name__}",
                              sent=not _never_connected(exc))
        except Exception as exc:  # urllib3 protocol errors surfacing from raw.read
            return ArmFailure("ConnectionError", f"{method} {redact_url(url)} failed: "
                                                 f"{type(exc).__name__}")
        self.pacer.observe(subscription_id, method, answer.status, answer.headers,
                           retry_after(answer.headers, dt.datetime.now(dt.timezone.utc)))
        log.debug("%s %s -> %s in %.0f ms", method, redact_url(url), answer.status,
                  answer.elapsed * 1000)
        return answer


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
    detail: dict[str, Any] = {k: doc[k] for k in ("code", "message", "target", "details",
                                                  "additionalInfo") if k in doc}
    return detail


def _new_session() -> requests.Session:
    session = requests.Session()
    # No retries here: a failed request becomes a scheduled retry message, never a sleep.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _never_connected(exc: requests.RequestException) -> bool:
    """True when the connection was never made (refused, unresolvable, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
