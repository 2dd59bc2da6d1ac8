"""Binding glue shared by the function folders: the process's app, and binding -> Delivery.

The Functions host keeps one worker process warm for many invocations, so the app (its
ARM session, token cache, pacer and Service Bus client) is built once, on first use.
The local host installs its own app (local bus, emulator token) with `install`.
"""
from __future__ import annotations

import datetime as dt
import threading

import azure.functions as func

from .app import FlushApp
from .arm import ArmClient, IdentityToken, StaticToken
from .bus import AzureServiceBus
from .messages import Delivery
from .settings import Settings

EMULATOR_TOKEN = "local-emulator-token"
_app: FlushApp | None = None
_lock = threading.Lock()
_outcome = threading.local()


def install(app: FlushApp | None) -> None:
    """Use this app for every invocation in this process (the local host, tests)."""
    global _app
    with _lock:
        _app = app


def get_app() -> FlushApp:
    global _app
    with _lock:
        if _app is None:
            _app = app_for_azure(Settings.from_env())
        return _app


def app_for_azure(settings: Settings) -> FlushApp:
    """Managed identity for ARM and (identity-based connection) for Service Bus."""
    identity = IdentityToken(settings.client_id)
    tokens = StaticToken(EMULATOR_TOKEN) if settings.is_local_endpoint else identity
    bus = AzureServiceBus.from_settings(settings.service_bus_connection,
                                        settings.service_bus_namespace,
                                        lambda: identity.credential)
    return FlushApp(settings, ArmClient(settings.arm_endpoint, settings.api_version, tokens),
                    bus)


def delivery(msg: func.ServiceBusMessage) -> Delivery:
    """What the worker gives a Python function, reduced to what the app reads."""
    return Delivery(body=msg.get_body(), message_id=msg.message_id or "",
                    correlation_id=msg.correlation_id, reply_to=msg.reply_to,
                    reply_to_session_id=msg.reply_to_session_id,
                    enqueued_at=_utc(msg.enqueued_time_utc),
                    delivery_count=msg.delivery_count or 1)


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    """EnqueuedTimeUtc is UTC, but the worker returns a naive datetime when the host's text
    has no offset; comparing that with aware times would raise on every delivery."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment


def handle_request(msg: func.ServiceBusMessage) -> None:
    _outcome.text = get_app().on_request(delivery(msg))


def handle_poll(msg: func.ServiceBusMessage) -> None:
    _outcome.text = get_app().on_poll(delivery(msg))


def last_outcome() -> str | None:
    """What this thread's last invocation decided (for the local host's log line): `main`
    itself must return None, as a function without a $return binding does."""
    text = getattr(_outcome, "text", None)
    _outcome.text = None
    return text
