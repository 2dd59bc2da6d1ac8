"""What `send` and `watch` need to know, from the environment a pipeline sets.

A pipeline has no host.json: the settings it needs (docs/design.md, "Settings") come from the
environment. In an app root (a folder holding host.json: given by --app-root, or the current
one) or with --local, local.settings.json (else local.settings.sample.json) adds its `Values`
underneath, with the environment winning, as Core Tools does. Only the sender's settings are
read and checked: an app-only setting (ARM endpoint, ledger) never stops a pipeline.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigurationError
from ..logtext import not_utf8, printable

MIN_TIMEOUT, MAX_TIMEOUT = 30, 86400
DEFAULT_MAX_TARGETS = 50
# Poll messages are sized for 50 targets with 2 KiB signed URLs (docs/design.md, "Poll
# message"): more would not fit one Service Bus message. The app's settings and the sender's
# share it, so --dry-run never passes what the app refuses.
MAX_TARGETS_LIMIT = 50
SETTINGS_FILES = ("local.settings.json", "local.settings.sample.json")
_PREFIXES = ("REDISFLUSH_", "ServiceBusConnection", "AZURE_")
_ENTITIES = (("REDISFLUSH_REQUEST_QUEUE", "redis-flush-requests"),
             ("REDISFLUSH_POLL_QUEUE", "redis-flush-polls"),
             ("REDISFLUSH_EVENTS_TOPIC", "redis-flush-events"),
             ("REDISFLUSH_REPLY_QUEUE", "redis-flush-replies"))


def distinct_entities(names: Mapping[str, str]) -> None:
    """The request, poll and reply queues and the events topic are four entities (the app's
    settings and the sender's alike): one queue under two names would hand poll messages to
    FlushTrigger, which rejects them, and no outcome would be published. Service Bus compares
    names without case. `names`: attribute (request_queue, ...) -> entity name."""
    seen: dict[str, str] = {}
    for attr, name in names.items():
        setting = f"REDISFLUSH_{attr.upper()}"
        if name.lower() in seen:
            raise ConfigurationError(f"{setting}: {name!r} is already the name of "
                                     f"{seen[name.lower()]}; the four entities must differ")
        seen[name.lower()] = setting


@dataclass(frozen=True)
class SenderSettings:
    """The sender's view of the app's settings (same names, same defaults, same rules)."""

    request_queue: str = "redis-flush-requests"
    poll_queue: str = "redis-flush-polls"
    events_topic: str = "redis-flush-events"
    reply_queue: str = "redis-flush-replies"
    timeout_seconds: int = 1800
    max_targets: int = DEFAULT_MAX_TARGETS
    client_id: str | None = None
    service_bus_connection: str | None = field(default=None, repr=False)
    service_bus_namespace: str | None = None

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> SenderSettings:
        def get(name: str) -> str | None:
            value = values.get(name)
            return value.strip() or None if isinstance(value, str) else None

        request, poll, events, reply = (entity_name(name, get(name) or default)
                                        for name, default in _ENTITIES)
        plain_reply_queue(reply)
        distinct_entities({"request_queue": request, "poll_queue": poll,
                           "events_topic": events, "reply_queue": reply})
        return cls(request, poll, events, reply,
                   timeout_seconds=whole_setting("REDISFLUSH_TIMEOUT_SECONDS",
                                                 get("REDISFLUSH_TIMEOUT_SECONDS") or "1800",
                                                 MIN_TIMEOUT, MAX_TIMEOUT),
                   max_targets=whole_setting("REDISFLUSH_MAX_TARGETS",
                                             get("REDISFLUSH_MAX_TARGETS")
                                             or str(DEFAULT_MAX_TARGETS), 1, MAX_TARGETS_LIMIT),
                   client_id=get("AZURE_CLIENT_ID"),
                   service_bus_connection=get("ServiceBusConnection"),
                   service_bus_namespace=get("ServiceBusConnection__fullyQualifiedNamespace"))


def app_root_of(given: Path | None) -> Path | None:
    """The app root: `--app-root` (which must hold host.json: never a silent fallback), else
    the current folder when it holds one, else None (a pipeline: environment only)."""
    if given is not None:
        if not given.is_dir():
            raise ConfigurationError(f"--app-root: {given} is not a folder")
        if not (given / "host.json").is_file():
            raise ConfigurationError(f"--app-root: {given} has no host.json")
        return given.resolve()
    here = Path.cwd()
    return here if (here / "host.json").is_file() else None


def read_values(app_root: Path | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The app root's local.settings.json (else the sample) `Values`, the environment winning;
    with no app root, the environment alone."""
    env = os.environ if env is None else env
    values: dict[str, str] = {}
    for path in [app_root / name for name in SETTINGS_FILES] if app_root else []:
        if path.is_file():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError as exc:   # a ValueError: say what the file must be
                raise ConfigurationError(f"{path}: must be UTF-8 JSON ({not_utf8(exc)})") \
                    from None
            except (ValueError, OSError) as exc:
                raise ConfigurationError(f"{path}: not readable JSON ({exc})") from None
            raw = doc.get("Values", {}) if isinstance(doc, dict) else {}
            if not isinstance(raw, dict):
                raise ConfigurationError(f"{path}: Values must be an object")
            values = {str(k): str(v) for k, v in raw.items() if v is not None}
            break
    values.update({k: v for k, v in env.items() if k in values or k.startswith(_PREFIXES)})
    return values


def entity_name(name: str, value: str) -> str:
    """Service Bus entity names: letters, digits, '.', '-', '_', '/', up to 260 characters."""
    if not value or len(value) > 260 or not value.isascii() \
            or not all(c.isalnum() or c in "._-/" for c in value):
        raise ConfigurationError(f"{name}: '{printable(value, 80)}' must be 1-260 characters of "
                                 "letters, digits, '.', '-', '_' or '/'")
    return value


def plain_reply_queue(value: str) -> str:
    """The reply queue goes out as every waiting request's ReplyTo, which the app takes only
    as a plain queue name: a path would fail every `send --wait`, so it fails here, once."""
    if "/" in value:
        raise ConfigurationError(f"REDISFLUSH_REPLY_QUEUE: '{printable(value, 80)}' must be a "
                                 "plain queue name (no '/')")
    return value


_WHOLE = re.compile(r"-?[0-9]{1,12}")


def whole_setting(name: str, value: str, low: int, high: int) -> int:
    """A whole-number setting, by one rule for the app and the sender: ASCII digits with an
    optional minus (not `1_800`, `+60` or other scripts' digits, which int() takes)."""
    text = value.strip()
    if not _WHOLE.fullmatch(text):
        raise ConfigurationError(f"{name}: '{printable(value, 80)}' must be a whole number "
                                 f"between {low} and {high}")
    number = int(text)
    if not low <= number <= high:
        raise ConfigurationError(f"{name}: {number} must be between {low} and {high}")
    return number
