"""Azure SDK failures as one line: `translate` turns whatever azure-identity or
azure-servicebus raised into a `ConfigurationError` or `ChannelError` that says what failed and
what to check (never the connection string), so the CLI can print it and exit 2.
"""
from __future__ import annotations

import logging
from typing import Any

from ..errors import ConfigurationError
from .errors import ChannelError

SIGN_IN_HINT = ("sign in with `az login`, use azure/login (OIDC) or a managed identity in CI, "
                "or pass --connection-string")


def quiet_sdk_logs() -> None:
    """The SDKs log multi-line errors (with tracebacks) on their way to raising: the CLI
    prints one line instead. `-v` (root logger at INFO) keeps them."""
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        for name in ("azure", "azure.servicebus", "azure.identity", "uamqp"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def first_line(text: Any, limit: int = 200) -> str:
    line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _reason(exc: BaseException) -> str:
    """The most telling line: the exception's own message, else its cause's."""
    for candidate in (exc, exc.__cause__, getattr(exc, "inner_exception", None)):
        if candidate is not None:
            text = first_line(getattr(candidate, "message", None) or str(candidate))
            if text:
                return text
    return type(exc).__name__


def translate(exc: BaseException, where: str, what: str,
              role: str = "") -> ConfigurationError | ChannelError:
    """One line that says what failed and what to check; never the connection string."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.servicebus import exceptions as sbx

    reason = _reason(exc)
    lowered = f"{reason} {exc!r}".lower()
    try:
        from azure.identity import CredentialUnavailableError
    except ImportError:  # pragma: no cover - azure-identity is a requirement
        CredentialUnavailableError = ClientAuthenticationError  # type: ignore[misc,assignment]
    if isinstance(exc, CredentialUnavailableError) or (
            isinstance(exc, ClientAuthenticationError)
            and "failed to retrieve a token from the included credentials" in lowered):
        tried = "; ".join(line.strip() for line in str(exc).splitlines()
                          if line.startswith(("\t", "    ")) and ":" in line)
        tried = f" (tried: {first_line(tried, 300)})" if tried else ""
        return ConfigurationError(f"no Azure credential to {what} ({where}): "
                                  f"{SIGN_IN_HINT}{tried}")
    if isinstance(exc, ClientAuthenticationError):
        return ConfigurationError(f"Azure sign-in failed, cannot {what} ({where}): {reason}; "
                                  f"check the credentials: {SIGN_IN_HINT}")
    if isinstance(exc, sbx.ServiceBusAuthorizationError) or (
            isinstance(exc, sbx.ServiceBusError) and "unauthorized" in lowered
            and "claim" in lowered):
        needed = f"'{role}' on it (or on the namespace)" if role else "a Service Bus data role"
        return ConfigurationError(f"not authorized to {what} ({where}): the identity needs "
                                  f"{needed}; role assignments take a few minutes to apply")
    if isinstance(exc, sbx.ServiceBusAuthenticationError):
        return ConfigurationError(f"Service Bus rejected the credentials, cannot {what} "
                                  f"({where}): check the SharedAccessKeyName/SharedAccessKey "
                                  "or the Entra ID sign-in (and that local auth is enabled "
                                  "when you use a key)")
    if isinstance(exc, sbx.MessagingEntityNotFoundError):
        return ConfigurationError(f"cannot {what}: it does not exist in {where}; check the "
                                  "entity name (REDISFLUSH_* settings, --subscription-name) "
                                  "and that infra/main.bicep was deployed there")
    if isinstance(exc, sbx.MessagingEntityDisabledError):
        return ConfigurationError(f"cannot {what}: the entity is disabled in {where}")
    if isinstance(exc, sbx.SessionCannotBeLockedError):
        return ChannelError(f"cannot {what} ({where}): another receiver holds that session; "
                        "is a second `send --wait` with the same --request-id running?")
    if isinstance(exc, sbx.OperationTimeoutError):
        return ChannelError(f"cannot {what}: {where} did not answer in time ({reason}); check the "
                        "namespace name and the network (outbound TCP 5671 for AMQP)")
    if isinstance(exc, (sbx.ServiceBusConnectionError, sbx.ServiceBusCommunicationError,
                        OSError)):
        if any(s in lowered for s in ("name or service not known", "getaddrinfo",
                                      "nodename nor servname", "no address associated",
                                      "temporary failure in name resolution", "gaierror")):
            return ConfigurationError(f"cannot {what}: {where} does not resolve (DNS); check "
                                      "the namespace name")
        return ChannelError(f"cannot {what}: no connection to {where} ({reason}); check the "
                        "namespace name and the network (outbound TCP 5671 for AMQP, "
                        "proxy/firewall)")
    if isinstance(exc, sbx.ServiceBusQuotaExceededError):
        return ChannelError(f"cannot {what} ({where}): quota exceeded ({reason})")
    if isinstance(exc, sbx.ServiceBusServerBusyError):
        return ChannelError(f"cannot {what} ({where}): the service is busy; try again shortly")
    if isinstance(exc, sbx.ServiceBusError):
        return ChannelError(f"cannot {what} ({where}): {type(exc).__name__}: {reason}")
    if isinstance(exc, ValueError):
        return ConfigurationError(f"cannot {what} ({where}): {reason}")
    return ChannelError(f"cannot {what} ({where}): {type(exc).__name__}: {reason}")
