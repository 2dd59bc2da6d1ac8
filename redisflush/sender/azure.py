"""`send` and `watch` over Azure Service Bus: the `sender.channel.Channel` on azure-servicebus.

`AzureChannel.open` picks the connection the way docs/design.md ("CLI") says: `--namespace`
(Entra ID through DefaultAzureCredential), else `--connection-string`, else the
`ServiceBusConnection` setting, else `ServiceBusConnection__fullyQualifiedNamespace`.

Everything that can go wrong on the way (no credential, a wrong key, an unknown namespace or
entity, a missing role, no network) becomes one `ConfigurationError` or `ChannelError` line
that says what to check (`sender.azure_errors`); the CLI prints it and exits 2. Every network
step is bounded: the SDK retries at most `RETRY_TOTAL` times, each attempt at most `TRY_TIMEOUT`
seconds, receivers wait at most `RECEIVE_WAIT` seconds per call, so an unreachable namespace
fails in well under `FAIL_WITHIN` seconds instead of hanging; and every call is given up after
`FAIL_WITHIN` seconds whatever the SDK does (a peer that accepts and never answers).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..core.outbound import OutboundMessage
from ..errors import ConfigurationError
from .azure_errors import first_line, quiet_sdk_logs, translate
from .azure_sdk import Stuck, TokenCache, body_bytes, quietly, service_bus_message, within
from .channel import Delivered, decode_event
from .errors import ChannelError
from .namespace import DEFAULT_SUFFIX, SAMPLE_PLACEHOLDER, namespace_host
from .settings import SenderSettings

log = logging.getLogger("redisflush.sender")

# Bounded failure: (RETRY_TOTAL + 1) attempts of at most TRY_TIMEOUT s, plus the backoffs
# (0.5 s, 1 s), stay under FAIL_WITHIN. pyamqp's own TCP connect timeout is 1 s.
RETRY_TOTAL = 2
RETRY_BACKOFF_FACTOR = 0.5
RETRY_BACKOFF_MAX = 4.0
RETRY_MODE = "exponential"
TRY_TIMEOUT = 8.0
SEND_TIMEOUT = 25.0           # the whole send_messages call, retries included
RECEIVE_WAIT = 5.0            # max_wait_time of one receive call
SESSION_RENEW_EVERY = 20.0    # the reply queue's lock is PT1M: renew well before
FAIL_WITHIN = 30.0
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": RETRY_TOTAL,
    "retry_backoff_factor": RETRY_BACKOFF_FACTOR,
    "retry_backoff_max": RETRY_BACKOFF_MAX,
    "retry_mode": RETRY_MODE,
    "try_timeout": TRY_TIMEOUT,
}
# The scope azure-servicebus asks tokens for (its own constant, double slash included).
SERVICE_BUS_SCOPE = "https://servicebus.azure.net//.default"
SENDER, RECEIVER = "Azure Service Bus Data Sender", "Azure Service Bus Data Receiver"


class AzureChannel:
    """sender.channel.Channel over Azure Service Bus (azure-servicebus, pure-Python AMQP)."""

    def __init__(self, settings: SenderSettings, client: Any, where: str,
                 token_cache: TokenCache | None = None) -> None:
        self.settings = settings
        self.client = client
        self.where = where                  # "namespace NAME.servicebus.windows.net"
        self._tokens = token_cache
        self._reply: tuple[str, Any] | None = None   # (session id, opened receiver)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def open(cls, settings: SenderSettings, *, namespace: str | None = None,
             connection_string: str | None = None,
             credential: Any = None) -> AzureChannel:
        from azure.servicebus import ServiceBusClient

        quiet_sdk_logs()
        if namespace and connection_string:
            raise ConfigurationError("give --namespace or --connection-string, not both")
        if namespace:
            return cls._with_identity(settings, namespace_host(namespace), credential)
        for source, value in (("--connection-string", connection_string),
                              ("ServiceBusConnection", settings.service_bus_connection)):
            if value:
                try:
                    client = ServiceBusClient.from_connection_string(value, **CLIENT_OPTIONS)
                except (ValueError, TypeError) as exc:
                    # The SDK's message names the problem, never the key; we add no value.
                    raise ConfigurationError(
                        f"{source}: not a usable Service Bus connection string "
                        f"({first_line(exc)}); expected Endpoint=sb://NAME"
                        f"{DEFAULT_SUFFIX}/;SharedAccessKeyName=...;SharedAccessKey=...") \
                        from None
                return cls(settings, client, f"namespace {client.fully_qualified_namespace}")
        configured = settings.service_bus_namespace
        if configured and SAMPLE_PLACEHOLDER not in configured:
            host = namespace_host(configured, "ServiceBusConnection__fullyQualifiedNamespace")
            return cls._with_identity(settings, host, credential)
        raise ConfigurationError(
            "no Service Bus given: pass --namespace NS (Entra ID) or --connection-string, or "
            "set ServiceBusConnection__fullyQualifiedNamespace / ServiceBusConnection "
            "(or use --local for the local bus)")

    @classmethod
    def _with_identity(cls, settings: SenderSettings, host: str, credential: Any) -> AzureChannel:
        from azure.servicebus import ServiceBusClient

        if credential is None:
            from azure.identity import DefaultAzureCredential
            credential = (DefaultAzureCredential(managed_identity_client_id=settings.client_id)
                          if settings.client_id else DefaultAzureCredential())
        tokens = TokenCache(credential)
        where = f"namespace {host}"
        try:
            tokens.get_token(SERVICE_BUS_SCOPE)
        except Exception as exc:
            tokens.close()
            raise translate(exc, where, "get an Entra ID token for Service Bus") from None
        client = ServiceBusClient(host, tokens, **CLIENT_OPTIONS)
        return cls(settings, client, where, tokens)

    # -- Channel -----------------------------------------------------------------------------

    def send_request(self, message: OutboundMessage) -> None:
        queue = self.settings.request_queue
        if message.reply_to and message.reply_to_session_id:
            # Listen first: a reply queue we cannot read fails before a request is sent.
            self._open_reply(message.reply_to_session_id)
        what = f"send to queue {queue!r}"
        sender = self._call(what, self.client.get_queue_sender, queue,
                            role=SENDER)
        try:
            self._call(what, lambda: sender.send_messages(service_bus_message(message),
                                                          timeout=SEND_TIMEOUT),
                       role=SENDER)
        finally:
            quietly(sender.close)

    def replies(self, session_id: str, until: float) -> Iterator[dict[str, Any]]:
        receiver = self._open_reply(session_id)
        what = f"receive from session {session_id!r} of queue {self.settings.reply_queue!r}"
        renew_at = time.monotonic() + SESSION_RENEW_EVERY
        try:
            for msg in self._receive(receiver, what, until):
                event = self._readable(receiver, msg, what)
                if event is not None:
                    self._call(what, receiver.complete_message, msg, role=RECEIVER)
                    yield event
                if time.monotonic() >= renew_at:
                    self._call(what, receiver.session.renew_lock, role=RECEIVER)
                    renew_at = time.monotonic() + SESSION_RENEW_EVERY
        finally:
            self._close_reply()

    def events(self, subscription: str, timeout: float | None) -> Iterator[Delivered]:
        from azure.servicebus import ServiceBusReceiveMode

        topic = self.settings.events_topic
        what = f"receive from subscription {subscription!r} of topic {topic!r}"
        receiver = self._call(what, self.client.get_subscription_receiver, topic,
                              subscription, receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                              max_wait_time=RECEIVE_WAIT, role=RECEIVER)
        try:
            self._call(what, receiver.__enter__, role=RECEIVER)
            until = None if timeout is None else time.monotonic() + timeout  # link open
            for msg in self._receive(receiver, what, until):
                event = self._readable(receiver, msg, what)
                if event is not None:
                    yield Delivered(event, self._completer(receiver, msg, what))
        finally:
            quietly(receiver.close)

    def _receive(self, receiver: Any, what: str, until: float | None) -> Iterator[Any]:
        """Messages until `until` (None: forever), one per call: a watcher that stops
        (--count) leaves nothing locked behind. Yields None after an empty wait, so the
        caller gets a turn (lock renewal) while nothing arrives."""
        while until is None or (remaining := until - time.monotonic()) > 0:
            wait = RECEIVE_WAIT if until is None else max(0.1, min(RECEIVE_WAIT, remaining))
            batch = self._call(what, receiver.receive_messages, max_message_count=1,
                               max_wait_time=wait, role=RECEIVER)
            yield from batch or [None]

    def close(self) -> None:
        self._close_reply()
        quietly(self.client.close)
        if self._tokens is not None:
            self._tokens.close()

    # -- helpers -----------------------------------------------------------------------------

    def _open_reply(self, session_id: str) -> Any:
        if self._reply is not None and self._reply[0] == session_id:
            return self._reply[1]
        self._close_reply()
        queue = self.settings.reply_queue
        what = f"listen on session {session_id!r} of queue {queue!r}"
        receiver = self._call(what, self.client.get_queue_receiver, queue,
                              session_id=session_id, max_wait_time=RECEIVE_WAIT,
                              role=RECEIVER)
        self._call(what, receiver.__enter__, role=RECEIVER)
        self._reply = (session_id, receiver)
        return receiver

    def _close_reply(self) -> None:
        if self._reply is not None:
            quietly(self._reply[1].close)
            self._reply = None

    def _completer(self, receiver: Any, msg: Any, what: str) -> Callable[[], None]:
        return lambda: self._call(what, receiver.complete_message, msg, role=RECEIVER)

    def _readable(self, receiver: Any, msg: Any, what: str) -> dict[str, Any] | None:
        """The event in `msg`; a message that is not a JSON object is dead-lettered (so
        someone can look at it) and None returned; None stays None (an empty wait)."""
        if msg is None:
            return None
        event = decode_event(body_bytes(msg))
        if event is None:
            self._call(what, lambda: receiver.dead_letter_message(
                msg, reason="UnreadableEvent",
                error_description="body is not a JSON object (CloudEvents structured mode)"),
                role=RECEIVER)
        return event

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, role: str = "",
              **kwargs: Any) -> Any:
        try:
            # the SDK's retries and try_timeout do not cover a peer that accepts the
            # connection and never answers (a TLS handshake or login that hangs)
            return within(FAIL_WITHIN, lambda: fn(*args, **kwargs), "servicebus-sender")
        except (ConfigurationError, ChannelError):
            raise
        except Stuck:
            raise ChannelError(f"cannot {what} ({self.where}): no answer within "
                               f"{FAIL_WITHIN:g} s; check the network path to the namespace "
                               "(a proxy or firewall that accepts the connection and then "
                               "says nothing)") from None
        except Exception as exc:
            raise translate(exc, self.where, what, role) from None
