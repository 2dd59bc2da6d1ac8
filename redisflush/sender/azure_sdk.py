"""Small pieces around azure-servicebus and azure-identity that `sender.azure` uses: the
message on the wire, a body in any of the SDK's shapes, a token cache that asks once up front
(so credential problems are reported before any connection is tried).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..core.outbound import OutboundMessage


def service_bus_message(message: OutboundMessage) -> Any:
    """The azure-servicebus message for one OutboundMessage (ids, reply session)."""
    from azure.servicebus import ServiceBusMessage

    properties: dict[str | bytes, Any] = {k: v for k, v in
                                          message.application_properties.items()}
    return ServiceBusMessage(
        message.body,
        message_id=message.message_id,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        subject=message.subject,
        session_id=message.session_id,
        reply_to=message.reply_to,
        reply_to_session_id=message.reply_to_session_id,
        application_properties=properties or None,
        scheduled_enqueue_time_utc=message.scheduled_at,
    )


class TokenCache:
    """Wraps an azure-identity credential: fetch once up front (so credential problems are
    reported before any connection is tried) and reuse the token until near its expiry."""

    def __init__(self, credential: Any) -> None:
        self.credential = credential
        self._tokens: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        with self._lock:
            token = self._tokens.get(scopes)
            if token is not None and token.expires_on - 300 > time.time():
                return token
            token = self.credential.get_token(*scopes, **kwargs)
            self._tokens[scopes] = token
            return token

    def close(self) -> None:
        close = getattr(self.credential, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # closing a credential must never hide the real outcome
                pass


def body_bytes(msg: Any) -> bytes:
    body = msg.body
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    try:
        return b"".join(bytes(part) for part in body)  # data body: a generator of sections
    except TypeError:
        return str(body).encode()


T = TypeVar("T")


class Stuck(Exception):
    """An SDK call gave no answer within its bound; its thread is left behind, blocked."""

    def __init__(self, message: str, thread: threading.Thread) -> None:
        super().__init__(message)
        self.thread = thread


def within(seconds: float, fn: Callable[[], T], name: str = "servicebus-call") -> T:
    """`fn()` on a daemon thread, waited for at most `seconds`: the SDK's own timeouts do not
    cover a peer that accepts the connection and then says nothing (a TLS handshake or AMQP
    login that never completes blocks in a socket read for as long as the socket lives)."""
    done = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # handed back to the caller's thread as it is
            outcome.append((False, exc))
        finally:
            done.set()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    if not done.wait(seconds):
        raise Stuck(f"no answer within {seconds:g} s", thread)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:  # closing must never hide the outcome the user is waiting for
        pass
