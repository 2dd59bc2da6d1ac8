"""Every app setting, read once from the environment and validated.

The same names are app settings in Azure, `Values` in local.settings.json and `%NAME%`
placeholders in function.json, so they are spelled exactly as the README documents them
(docs/design.md, "Settings"). A setting that breaks its rule raises ConfigurationError with
one line naming the setting and the rule, so the app stops before it takes a message.
"""
from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

# is_loopback_http lives in core/trust.py; re-exported here for its old importers.
from .core.trust import is_loopback_http as is_loopback_http
from .errors import ConfigurationError
from .logtext import printable
from .sender.settings import MAX_TARGETS_LIMIT as MAX_TARGETS_LIMIT
from .sender.settings import (
    distinct_entities,
    entity_name,
    plain_reply_queue,
    whole_setting,
)

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_API_VERSION = "2023-08-01"
DEFAULT_ENTERPRISE_API_VERSION = "2025-07-01"
DEFAULT_LEDGER_TABLE = "redisflushrequests"
DEFAULT_MAX_TARGETS = 50
MIN_TIMEOUT_SECONDS = 30
MAX_TIMEOUT_SECONDS = 86400
_API_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?")
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")  # Azure Table service naming rule
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")  # Azure storage account naming rule
# A URL setting's authority (README, "Settings"): a DNS name or bracketed IP address and an
# optional port 1-65535, nothing else. No user info (any '@', even `https://:pw@host`, whose
# username is empty), no empty port (`host:`, which would become the token scope
# `https://host:/.default`), no spaces, escapes or backslashes.
_AUTHORITY = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])"
                        r"(?::[1-9][0-9]{0,4})?", re.ASCII)

# name -> default, the README table and local.settings.sample.json list exactly these.
DEFAULTS: dict[str, str | None] = {
    "ServiceBusConnection": None,
    "ServiceBusConnection__fullyQualifiedNamespace": None,
    "REDISFLUSH_REQUEST_QUEUE": "redis-flush-requests",
    "REDISFLUSH_POLL_QUEUE": "redis-flush-polls",
    "REDISFLUSH_EVENTS_TOPIC": "redis-flush-events",
    "REDISFLUSH_REPLY_QUEUE": "redis-flush-replies",
    "AzureWebJobsStorage": None,
    "AzureWebJobsStorage__accountName": None,
    "AzureWebJobsStorage__tableServiceUri": None,
    "REDISFLUSH_LEDGER_TABLE": DEFAULT_LEDGER_TABLE,
    "REDISFLUSH_ARM_ENDPOINT": DEFAULT_ARM_ENDPOINT,
    "REDISFLUSH_API_VERSION": DEFAULT_API_VERSION,
    "REDISFLUSH_ENTERPRISE_API_VERSION": DEFAULT_ENTERPRISE_API_VERSION,
    "REDISFLUSH_MAX_TARGETS": str(DEFAULT_MAX_TARGETS),
    "AZURE_CLIENT_ID": None,
    "REDISFLUSH_TIMEOUT_SECONDS": "1800",
    "REDISFLUSH_ALLOWED_SCOPES": None,
    "REDISFLUSH_LOCAL_DIR": None,
}


@dataclass(frozen=True)
class Settings:
    """The validated settings; build with `Settings.from_env`."""

    request_queue: str = "redis-flush-requests"
    poll_queue: str = "redis-flush-polls"
    events_topic: str = "redis-flush-events"
    reply_queue: str = "redis-flush-replies"
    arm_endpoint: str = DEFAULT_ARM_ENDPOINT
    api_version: str = DEFAULT_API_VERSION
    enterprise_api_version: str = DEFAULT_ENTERPRISE_API_VERSION
    ledger_table: str = DEFAULT_LEDGER_TABLE
    max_targets: int = DEFAULT_MAX_TARGETS
    storage_connection: str | None = field(default=None, repr=False)
    storage_account_name: str | None = None
    storage_table_service_uri: str | None = None
    client_id: str | None = None
    timeout_seconds: int = 1800
    allowed_scopes: tuple[str, ...] = ()
    service_bus_connection: str | None = field(default=None, repr=False)
    service_bus_namespace: str | None = None
    local_dir: Path = Path(".redisflush")

    @property
    def token_scope(self) -> str:
        return self.arm_endpoint + "/.default"

    @property
    def is_local_endpoint(self) -> bool:
        """True for an http loopback ARM endpoint: the ARM emulator, never real Azure."""
        return is_loopback_http(self.arm_endpoint)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 app_root: Path | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "")
            value = value.strip() if isinstance(value, str) else value
            return value or DEFAULTS[name]

        endpoint = _endpoint(get("REDISFLUSH_ARM_ENDPOINT") or DEFAULT_ARM_ENDPOINT)
        timeout = whole_setting("REDISFLUSH_TIMEOUT_SECONDS",
                                get("REDISFLUSH_TIMEOUT_SECONDS") or "1800",
                                MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS)
        scopes = _scopes(get("REDISFLUSH_ALLOWED_SCOPES"))
        for scope in scopes:
            if not scope.lower().startswith("/subscriptions/"):
                raise ConfigurationError(
                    f"REDISFLUSH_ALLOWED_SCOPES: {_shown(scope)} must be a resource id prefix "
                    "starting with /subscriptions/")
        local_dir = get("REDISFLUSH_LOCAL_DIR")
        root = app_root or Path.cwd()
        names = {}
        for key, attr in (("REDISFLUSH_REQUEST_QUEUE", "request_queue"),
                          ("REDISFLUSH_POLL_QUEUE", "poll_queue"),
                          ("REDISFLUSH_EVENTS_TOPIC", "events_topic"),
                          ("REDISFLUSH_REPLY_QUEUE", "reply_queue")):
            names[attr] = entity_name(key, get(key) or "")
        plain_reply_queue(names["reply_queue"])
        distinct_entities(names)
        return cls(
            **names,
            arm_endpoint=endpoint,
            api_version=_api_version("REDISFLUSH_API_VERSION",
                                     get("REDISFLUSH_API_VERSION") or DEFAULT_API_VERSION),
            enterprise_api_version=_api_version(
                "REDISFLUSH_ENTERPRISE_API_VERSION",
                get("REDISFLUSH_ENTERPRISE_API_VERSION") or DEFAULT_ENTERPRISE_API_VERSION),
            ledger_table=_table_name(get("REDISFLUSH_LEDGER_TABLE") or DEFAULT_LEDGER_TABLE),
            max_targets=whole_setting("REDISFLUSH_MAX_TARGETS",
                                      get("REDISFLUSH_MAX_TARGETS") or "50",
                                      1, MAX_TARGETS_LIMIT),
            storage_connection=_storage_connection(get("AzureWebJobsStorage")),
            storage_account_name=_optional(
                "AzureWebJobsStorage__accountName", get("AzureWebJobsStorage__accountName"),
                _ACCOUNT_NAME, "must be 3-24 lowercase letters or digits (storage account name)"),
            storage_table_service_uri=_service_uri(get("AzureWebJobsStorage__tableServiceUri")),
            client_id=get("AZURE_CLIENT_ID"),
            timeout_seconds=timeout,
            allowed_scopes=scopes,
            service_bus_connection=get("ServiceBusConnection"),
            service_bus_namespace=get("ServiceBusConnection__fullyQualifiedNamespace"),
            local_dir=Path(local_dir) if local_dir else root / ".redisflush",
        )


def _scopes(value: str | None) -> tuple[str, ...]:
    """REDISFLUSH_ALLOWED_SCOPES: unset (or empty) is no restriction (README, "Settings"), so
    a value that is set must name at least one prefix: `,` or ` , ` would otherwise parse to
    no scope and fail open. A stray comma beside a prefix is harmless and ignored."""
    if value is None:
        return ()
    scopes = tuple(s.strip().rstrip("/") for s in value.split(",") if s.strip())
    if not scopes:
        raise ConfigurationError(
            f"REDISFLUSH_ALLOWED_SCOPES: {_shown(value)} must name at least one resource id "
            "prefix starting with /subscriptions/ (leave it unset for no restriction)")
    return scopes


def _url(name: str, value: str, says: str) -> SplitResult:
    """One rule for the URL settings' scheme and authority (README, "Settings"): https (plain
    http only on loopback), `_AUTHORITY`'s host[:port], and no query or fragment, not even
    an empty `?` or `#`."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError:
        raise ConfigurationError(f"{name}: {_shown(value)} must be a valid URL "
                                 "(host, port 1-65535)") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(f"{name}: {_shown(value)} must be an absolute https URL")
    if not _AUTHORITY.fullmatch(parts.netloc):
        raise ConfigurationError(f"{name}: {_shown(value)} must have a host that is a "
                                 "DNS name or IP address, a port 1-65535 if any, and no user "
                                 "info")
    if parts.scheme == "http" and not is_loopback_http(value):
        raise ConfigurationError(f"{name}: {_shown(value)} must use https "
                                 "(plain http only on loopback)")
    if "?" in value or "#" in value:
        raise ConfigurationError(f"{name}: {_shown(value)} must have no query or fragment "
                                 f"('?' or '#'): {says}")
    return parts


def _endpoint(value: str) -> str:
    parts = _url("REDISFLUSH_ARM_ENDPOINT", value.rstrip("/"), "scheme://host[:port]")
    if parts.path:
        raise ConfigurationError(
            f"REDISFLUSH_ARM_ENDPOINT: {_shown(value)} must be scheme://host[:port] with no path")
    return f"{parts.scheme}://{parts.netloc}"


def _shown(value: str) -> str:
    """A setting's value inside the one-line error (escaped: it may hold a newline)."""
    return f"'{printable(value, 80)}'"


def _matching(name: str, value: str, rule: re.Pattern[str], says: str) -> str:
    if not rule.fullmatch(value):
        raise ConfigurationError(f"{name}: {_shown(value)} {says}")
    return value


def _table_name(value: str) -> str:
    """The ledger's table: the service's name rule, and not its reserved name `tables` (any
    case), which it refuses with a bare 400 on every call."""
    name = "REDISFLUSH_LEDGER_TABLE"
    _matching(name, value, _TABLE_NAME, "must be 3-63 letters or digits, starting with a "
                                        "letter (Azure table name)")
    if value.lower() == "tables":
        raise ConfigurationError(f"{name}: {_shown(value)} must not be 'tables', a name Table "
                                 "storage reserves")
    return value


def _optional(name: str, value: str | None, rule: re.Pattern[str], says: str) -> str | None:
    return None if value is None else _matching(name, value, rule, says)


def _api_version(name: str, value: str) -> str:
    """YYYY-MM-DD[-preview] naming a real date: ARM's api-versions are dates, and a month 13
    would only come back from ARM as a 400 on every flush and listing."""
    says = "must be an api-version like 2023-08-01 or 2024-01-01-preview"
    _matching(name, value, _API_VERSION, says)
    try:
        dt.date.fromisoformat(value[:10])
    except ValueError:
        raise ConfigurationError(f"{name}: {_shown(value)} {says} (a real date)") from None
    return value


def _storage_connection(value: str | None) -> str | None:
    """A storage connection string: `Key=Value` pairs separated by `;` (never echoed: it
    holds the account key)."""
    if value is None:
        return None
    parts = [p for p in value.split(";") if p.strip()]
    if not parts or not all("=" in p and p.split("=", 1)[0].strip() for p in parts):
        raise ConfigurationError(
            "AzureWebJobsStorage: must be a storage connection string of Key=Value pairs "
            "separated by ';' (e.g. UseDevelopmentStorage=true); value not shown")
    return value


def _service_uri(value: str | None) -> str | None:
    if value is None:
        return None
    _url("AzureWebJobsStorage__tableServiceUri", value, "an https URL like "
         "https://ACCOUNT.table.core.windows.net")
    return value.rstrip("/")


