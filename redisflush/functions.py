"""Binding glue shared by the function folders: the process's app, and binding -> Delivery.

The Functions host keeps one worker process warm for many invocations, so the app (its ARM
session, token cache, pacer, Service Bus client and ledger) is built once, on first use.
`check_settings` runs when the worker loads a function folder: a broken setting fails the
load with one line naming it. (The Azure host still starts that function's trigger and fails
each invocation, so its messages are dead-lettered: docs/design.md, "Settings".) The local
host installs its own app with `install`.
"""
from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from .app import FlushApp
from .arm import ArmClient
from .arm_tokens import IdentityToken, StaticToken
from .bus import AzureServiceBus
from .core.request import Delivery
from .core.request_id import stand_in_message_id
from .errors import ConfigurationError
from .settings import Settings

EMULATOR_TOKEN = "local-emulator-token"
_app: FlushApp | None = None
_lock = threading.Lock()
_outcome = threading.local()
# The worker's azure-functions parses each of a message's four trigger-metadata times by
# trying a dozen strptime formats in turn; CPython keeps the compiled regexes of only 5
# formats, so every invocation recompiled about 25 of them. Room for all of them, set when
# a function folder imports this module (the Azure worker and the local host alike).
STRPTIME_FORMATS_KEPT = 64


def keep_strptime_formats(count: int = STRPTIME_FORMATS_KEPT) -> None:
    """Let `time.strptime` keep `count` compiled formats (a process-wide cache, never
    shrunk here; a Python without that cache is left alone)."""
    cache: Any = importlib.import_module("_strptime")
    if getattr(cache, "_CACHE_MAX_SIZE", count) < count:
        cache._CACHE_MAX_SIZE = count


keep_strptime_formats()

# The Azure SDKs the app calls log at INFO: azure-core's HTTP logging policy a request and a
# response line for every ledger call, azure-identity every token it hands out. The worker
# sends every INFO line to Application Insights (host.json keeps all traces), where they
# would name no request and outnumber the app's own lines (docs/azure.md, "Application
# Insights queries"). Their warnings and errors still pass.
QUIET_SDK_LOGGERS = ("azure.core", "azure.identity", "azure.servicebus", "azure.data.tables")


def quiet_sdk_loggers(names: tuple[str, ...] = QUIET_SDK_LOGGERS) -> None:
    """Raise these loggers to WARNING, leaving alone one whose level was already set."""
    for name in names:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


quiet_sdk_loggers()


# The settings function.json names as %...% in the triggers' queueName. The Functions host
# resolves them from the app settings alone (no default): one missing leaves that function "in
# error", never reading its queue, while the others run (docs/design.md, "Settings").
TRIGGER_QUEUE_SETTINGS = ("REDISFLUSH_REQUEST_QUEUE", "REDISFLUSH_POLL_QUEUE")
# The worker libraries that load function folders in Azure (and `func start`): below 3.13 the
# Python worker, from 3.13 the v1 runtime library. The local host is neither: it resolves the
# queue names itself and refuses to start without them.
WORKER_MODULES = ("azure_functions_worker", "azure_functions_runtime_v1")


def check_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Validate every setting now (at function load), raising ConfigurationError. Under the
    Functions worker the trigger queue settings must be set too: without
    REDISFLUSH_POLL_QUEUE the host would run FlushTrigger, whose POSTs no poll step follows."""
    env = os.environ if env is None else env
    settings = Settings.from_env(env)
    if any(name in sys.modules for name in WORKER_MODULES):
        for name in TRIGGER_QUEUE_SETTINGS:
            if not str(env.get(name) or "").strip():
                raise ConfigurationError(
                    f"{name}: not set; function.json names its trigger's queue as %{name}%, "
                    "which the Functions host reads from the app settings only (set it to "
                    "the queue's name)")
    return settings


def install(app: FlushApp | None) -> None:
    """Use this app for every invocation in this process (the local host, tests)."""
    global _app
    with _lock:
        _app = app


def get_app() -> FlushApp:
    global _app
    with _lock:
        if _app is None:
            _app = app_for_environment(Settings.from_env())
        return _app


def app_for_environment(settings: Settings) -> FlushApp:
    """Azure: managed identity for ARM, Service Bus and Table storage. With the ARM emulator
    as endpoint and no Service Bus configured, the local bus and ledger of the local dir
    (how the real worker runs against the embedded default)."""
    if settings.is_local_endpoint and not (settings.service_bus_connection or
                                           settings.service_bus_namespace):
        from .local.app import local_app
        return local_app(settings)
    identity = IdentityToken(settings.client_id)
    tokens = StaticToken(EMULATOR_TOKEN) if settings.is_local_endpoint else identity
    bus = AzureServiceBus.from_settings(settings.service_bus_connection,
                                        settings.service_bus_namespace,
                                        lambda: identity.credential)
    return FlushApp(settings, ArmClient(settings.arm_endpoint, settings.api_version, tokens),
                    bus, _table_ledger(settings, identity))


def _table_ledger(settings: Settings, identity: IdentityToken) -> Any:
    from .ledger_tables import TableLedger

    if not (settings.storage_connection or settings.storage_account_name or
            settings.storage_table_service_uri):
        raise ConfigurationError("AzureWebJobsStorage: not set; the request ledger needs the "
                                 "app's storage account (AzureWebJobsStorage__accountName "
                                 "or a connection string)")
    return TableLedger.from_settings(settings.ledger_table,
                                     connection_string=settings.storage_connection,
                                     account_name=settings.storage_account_name,
                                     table_service_uri=settings.storage_table_service_uri,
                                     credential=identity.credential
                                     if not settings.storage_connection else None)


def delivery(msg: Any) -> Delivery:
    """What the worker gives a Python function, reduced to what the app reads. The body is
    bytes with `"dataType": "binary"` in function.json (see docs/design.md, "Platform")."""
    body = msg.get_body()
    if isinstance(body, str):
        body = body.encode("utf-8")
    enqueued_at = _utc(msg.enqueued_time_utc)
    return Delivery(body=body, message_id=msg.message_id or stand_in_message_id(
                        msg.sequence_number, enqueued_at),
                    correlation_id=msg.correlation_id, reply_to=msg.reply_to,
                    reply_to_session_id=msg.reply_to_session_id,
                    enqueued_at=enqueued_at,
                    delivery_count=msg.delivery_count or 1)


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    """EnqueuedTimeUtc is UTC, but the host sends it without an offset, so the worker returns
    a naive datetime; comparing that with aware times would raise on every delivery."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment


def handle_request(msg: Any) -> None:
    _outcome.text = get_app().on_request(delivery(msg))


def handle_poll(msg: Any) -> None:
    _outcome.text = get_app().on_poll(delivery(msg))


def handle_purge(timer: Any) -> None:
    _outcome.text = f"purged {get_app().purge_ledger()} ledger rows"


def last_outcome() -> str | None:
    """What this thread's last invocation decided (for the local host's log line): `main`
    itself must return None, as a function without a $return binding does."""
    text = getattr(_outcome, "text", None)
    _outcome.text = None
    return text
