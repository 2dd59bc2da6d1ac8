"""Which Service Bus namespace `--namespace` (or the setting) names: `namespace_host` turns a
namespace name or host into the host name to connect to, rejecting anything else up front with
a `ConfigurationError` instead of a DNS failure later.
"""
from __future__ import annotations

import re

from ..errors import ConfigurationError

DEFAULT_SUFFIX = ".servicebus.windows.net"
SAMPLE_PLACEHOLDER = "your-namespace"   # local.settings.sample.json's value: not configured
_NAMESPACE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9]$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*"
                   r"[A-Za-z0-9])?)+$")


def namespace_host(value: str, source: str = "--namespace") -> str:
    """`NAME` -> `NAME.servicebus.windows.net`; a host name (sovereign clouds) stays as is.
    `source`: where the value came from, for the error (the flag or the setting)."""
    text = value.strip()
    for prefix in ("sb://", "amqps://", "https://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    text = text.rstrip("/")
    if "." not in text:
        if not _NAMESPACE_NAME.match(text):
            raise ConfigurationError(
                f"{source}: {value!r} is not a Service Bus namespace name (6-50 letters, "
                "digits and hyphens, starting with a letter) or host "
                "(NAME.servicebus.windows.net)")
        return text + DEFAULT_SUFFIX
    if not _HOST.match(text):
        raise ConfigurationError(f"{source}: {value!r} is not a host name like "
                                 "NAME.servicebus.windows.net")
    return text.lower()
