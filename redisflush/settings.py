"""Every app setting, read once from the environment and validated.

The same names are app settings in Azure, `Values` in local.settings.json and `%NAME%`
placeholders in function.json, so they are spelled exactly as the README documents them.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from .errors import ConfigurationError

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_API_VERSION = "2023-08-01"
MIN_TIMEOUT_SECONDS = 30
MAX_TIMEOUT_SECONDS = 86400

# name -> default, the README table and local.settings.sample.json list exactly these.
DEFAULTS: dict[str, str | None] = {
    "ServiceBusConnection": None,
    "ServiceBusConnection__fullyQualifiedNamespace": None,
    "REDISFLUSH_REQUEST_QUEUE": "redis-flush-requests",
    "REDISFLUSH_POLL_QUEUE": "redis-flush-polls",
    "REDISFLUSH_EVENTS_TOPIC": "redis-flush-events",
    "REDISFLUSH_REPLY_QUEUE": "redis-flush-replies",
    "REDISFLUSH_ARM_ENDPOINT": DEFAULT_ARM_ENDPOINT,
    "REDISFLUSH_API_VERSION": DEFAULT_API_VERSION,
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
                 app_root: Path | None = None) -> "Settings":
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "")
            value = value.strip() if isinstance(value, str) else value
            return value or DEFAULTS[name]

        endpoint = _endpoint(get("REDISFLUSH_ARM_ENDPOINT") or DEFAULT_ARM_ENDPOINT)
        timeout = _int_in_range("REDISFLUSH_TIMEOUT_SECONDS",
                                get("REDISFLUSH_TIMEOUT_SECONDS") or "1800",
                                MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS)
        scopes = tuple(s.strip().rstrip("/") for s in (get("REDISFLUSH_ALLOWED_SCOPES") or "")
                       .split(",") if s.strip())
        for scope in scopes:
            if not scope.lower().startswith("/subscriptions/"):
                raise ConfigurationError(
                    f"REDISFLUSH_ALLOWED_SCOPES: {scope!r} must be a resource id prefix "
                    "starting with /subscriptions/")
        local_dir = get("REDISFLUSH_LOCAL_DIR")
        root = app_root or Path.cwd()
        names = {}
        for key, attr in (("REDISFLUSH_REQUEST_QUEUE", "request_queue"),
                          ("REDISFLUSH_POLL_QUEUE", "poll_queue"),
                          ("REDISFLUSH_EVENTS_TOPIC", "events_topic"),
                          ("REDISFLUSH_REPLY_QUEUE", "reply_queue")):
            names[attr] = _entity_name(key, get(key) or "")
        return cls(
            **names,
            arm_endpoint=endpoint,
            api_version=get("REDISFLUSH_API_VERSION") or DEFAULT_API_VERSION,
            client_id=get("AZURE_CLIENT_ID"),
            timeout_seconds=timeout,
            allowed_scopes=scopes,
            service_bus_connection=get("ServiceBusConnection"),
            service_bus_namespace=get("ServiceBusConnection__fullyQualifiedNamespace"),
            local_dir=Path(local_dir) if local_dir else root / ".redisflush",
        )


def is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _endpoint(value: str) -> str:
    try:
        parts = urlsplit(value.rstrip("/"))
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError:
        raise ConfigurationError(
            f"REDISFLUSH_ARM_ENDPOINT: {value!r} is not a valid URL (host or port)") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(
            f"REDISFLUSH_ARM_ENDPOINT: {value!r} must be an absolute https URL")
    if parts.scheme == "http" and not is_loopback_http(value):
        raise ConfigurationError(
            f"REDISFLUSH_ARM_ENDPOINT: {value!r} must use https (plain http only on loopback)")
    if parts.path or parts.query or parts.fragment or parts.username:
        raise ConfigurationError(
            f"REDISFLUSH_ARM_ENDPOINT: {value!r} must be scheme://host[:port] with no path")
    return f"{parts.scheme}://{parts.netloc}"


def _int_in_range(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{name}: {value!r} must be a whole number") from None
    if not low <= number <= high:
        raise ConfigurationError(f"{name}: {number} must be between {low} and {high}")
    return number


def _entity_name(name: str, value: str) -> str:
    # Service Bus entity names: letters, digits, '.', '-', '_', '/', up to 260 characters.
    if not value or len(value) > 260 or not all(c.isalnum() or c in "._-/" for c in value) \
            or not value.isascii():
        raise ConfigurationError(f"{name}: {value!r} must be 1-260 characters of letters, "
                                 "digits, '.', '-', '_' or '/'")
    return value
