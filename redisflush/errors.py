"""The project's exceptions: one base, one class per way things go wrong."""
from __future__ import annotations


class RedisFlushError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(RedisFlushError):
    """An app setting or CLI option is missing or breaks its rule (exit code 2)."""


class ValidationError(RedisFlushError):
    """A request field breaks its rule; `field` and `rule` go into the Rejected event."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
