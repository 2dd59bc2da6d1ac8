"""Bearer tokens for ARM: azure-identity's credential in Azure, a fixed token for the local
emulator."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


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
        token = str(access.token)
        with self._lock:
            self._cache[scope] = (token, float(access.expires_on))
        return token
