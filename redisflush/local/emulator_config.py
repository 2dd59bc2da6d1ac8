"""Configuration of the ARM emulator: which caches exist, how their flush behaves, throttling
(and `TokenBucket`, ARM's throttling model those settings drive).

JSON/TOML keys are camelCase (`retryAfter`, `pollMode`); attributes are snake_case. Every
problem is a `ValueError` naming the field and the rule; unknown keys are rejected.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import re
import time
try:
    import tomllib
except ImportError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib  # type: ignore[no-redef]
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

OUTCOMES = ("Succeeded", "Failed", "Canceled")
POLL_MODES = ("both", "async", "location", "none")
DEFAULT_ERROR = {
    "code": "InternalServerError",
    "message": "The flush operation failed because of an internal error. Please try again later.",
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


@dataclass(frozen=True)
class Behaviour:
    """How one cache's flush behaves (defaults: the recorded real traffic)."""

    duration: float = 2.0
    outcome: str = "Succeeded"
    error: dict[str, Any] | None = None
    retry_after: int | None = None
    poll_mode: str = "both"
    location_done_no_content: bool = False
    immediate: bool = False
    immediate_empty_body: bool = False
    percent_complete: bool = False
    busy_seconds: float = 0.0
    throttle_first: int = 0
    throttle_retry_after: int = 1
    post_errors: tuple[int, ...] = ()
    poll_errors: tuple[int, ...] = ()
    invalid_json_polls: int = 0
    statusless_polls: int = 0
    latency: float = 0.0
    move_after_polls: int = 0
    foreign_host: str | None = None
    redis_db: int | None = None

    def failure(self) -> dict[str, Any]:
        return dict(self.error or DEFAULT_ERROR)

    def to_dict(self) -> dict[str, Any]:
        return {_camel(k): (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and v == v


def _number(lo: float, hi: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_num(v) and lo <= v <= hi), f"must be a number from {lo:g} to {hi:g}"


def _integer(lo: int, hi: int, optional: bool = False) -> tuple[Callable[[Any], bool], str]:
    rule = f"must be an integer from {lo} to {hi}" + (" or null" if optional else "")
    return (lambda v: (optional and v is None) or (_is_int(v) and lo <= v <= hi)), rule


def _one_of(options: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in options), "must be one of " + ", ".join(options)


_BOOL = ((lambda v: isinstance(v, bool)), "must be true or false")
_STATUS_LIST = ((lambda v: isinstance(v, list) and all(_is_int(x) and 400 <= x <= 599 for x in v)),
                "must be a list of HTTP status codes from 400 to 599")
_ERROR = ((lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("code"), str)
                                    and isinstance(v.get("message"), str))),
          "must be an ErrorDetail object with string code and message")
_HOST = ((lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"https?://[^/?#\s]+", v))),
         "must be 'https://host[:port]' (scheme and authority only)")

_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "duration": _number(0, 86400), "outcome": _one_of(OUTCOMES), "error": _ERROR,
    "retry_after": _integer(0, 3600, optional=True), "poll_mode": _one_of(POLL_MODES),
    "location_done_no_content": _BOOL, "immediate": _BOOL, "immediate_empty_body": _BOOL,
    "percent_complete": _BOOL, "busy_seconds": _number(0, 86400),
    "throttle_first": _integer(0, 10**6), "throttle_retry_after": _integer(0, 3600),
    "post_errors": _STATUS_LIST, "poll_errors": _STATUS_LIST,
    "invalid_json_polls": _integer(0, 10**6), "statusless_polls": _integer(0, 10**6),
    "latency": _number(0, 600), "move_after_polls": _integer(0, 10**6), "foreign_host": _HOST,
    "redis_db": _integer(0, 1023, optional=True),
}


def _behaviour_overrides(where: str, raw: Any) -> dict[str, Any]:
    """Validate a behaviour object; returns snake_case overrides."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be an object")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = _snake(key)
        if name not in _RULES:
            raise ValueError(f"{where}.{key}: unknown behaviour field (known: "
                             + ", ".join(_camel(n) for n in _RULES) + ")")
        check, rule = _RULES[name]
        if not check(value):
            raise ValueError(f"{where}.{key}: {rule}")
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


def behaviour_from_dict(raw: Mapping[str, Any], where: str = "behaviour") -> Behaviour:
    """A full Behaviour from camelCase fields (missing ones take the built-in defaults)."""
    return Behaviour(**_behaviour_overrides(where, raw))


@dataclass(frozen=True)
class Bucket:
    burst: int
    per_second: float


class TokenBucket:
    """ARM's throttling model: `burst` tokens, refilled at `per_second` (monotonic clock).
    Not thread-safe: callers hold their lock."""

    def __init__(self, burst: int, per_second: float) -> None:
        self.burst, self.rate, self.tokens, self.at = burst, per_second, float(burst), time.monotonic()

    def take(self) -> tuple[bool, int]:
        """(True, tokens left) after taking one, or (False, whole seconds until one is back)."""
        now = time.monotonic()
        self.tokens, self.at = min(self.burst, self.tokens + (now - self.at) * self.rate), now
        if self.tokens >= 1:
            self.tokens -= 1
            return True, int(self.tokens)
        return False, max(1, math.ceil((1 - self.tokens) / self.rate))


@dataclass(frozen=True)
class Throttling:
    enabled: bool = True
    writes: Bucket = Bucket(200, 10.0)
    reads: Bucket = Bucket(250, 25.0)


def _bucket(where: str, raw: Any, default: Bucket) -> Bucket:
    if raw is None:
        return default
    if not isinstance(raw, Mapping) or set(raw) - {"burst", "perSecond"}:
        raise ValueError(f"{where}: must be an object with only burst and perSecond")
    burst, rate = raw.get("burst", default.burst), raw.get("perSecond", default.per_second)
    if not _is_int(burst) or not 1 <= burst <= 10**6:
        raise ValueError(f"{where}.burst: must be an integer from 1 to 1000000")
    if not _is_num(rate) or not 0 < rate <= 10**6:
        raise ValueError(f"{where}.perSecond: must be a number > 0 and <= 1000000")
    return Bucket(burst, float(rate))


_TOP = {"token", "apiVersions", "location", "signedUrlBytes", "throttling", "defaults", "caches"}


@dataclass(frozen=True)
class EmulatorConfig:
    token: str = "local-emulator-token"
    api_versions: tuple[str, ...] = ("2023-08-01",)
    location: str = "West US 2"
    signed_url_bytes: int = 600
    throttling: Throttling = Throttling()
    defaults: Behaviour = Behaviour()
    # pattern (cache name or fnmatch glob, case-insensitive) -> snake_case overrides
    caches: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"*": {}})

    def behaviour_for(self, cache: str) -> Behaviour | None:
        """The cache's behaviour, or None when no `caches` key matches (the cache does not exist)."""
        name = cache.lower()
        for pattern, overrides in self.caches.items():
            if fnmatch.fnmatchcase(name, pattern.lower()):
                return dataclasses.replace(self.defaults, **overrides)
        return None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EmulatorConfig":
        if not isinstance(d, Mapping):
            raise ValueError("config: must be an object")
        unknown = set(d) - _TOP
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown config field (known: {', '.join(sorted(_TOP))})")
        base = cls()
        token = d.get("token", base.token)
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise ValueError("token: must be a non-empty string without spaces")
        versions = d.get("apiVersions", list(base.api_versions))
        if not isinstance(versions, list) or not versions or not all(
                isinstance(v, str) and re.fullmatch(r"[0-9A-Za-z.-]+", v) for v in versions):
            raise ValueError("apiVersions: must be a non-empty list of api-version strings")
        location = d.get("location", base.location)
        if not isinstance(location, str) or not location.strip() or "/" in location:
            raise ValueError("location: must be a non-empty region name without '/'")
        signed = d.get("signedUrlBytes", base.signed_url_bytes)
        if not _is_int(signed) or not 64 <= signed <= 16384:
            raise ValueError("signedUrlBytes: must be an integer from 64 to 16384")
        thr = d.get("throttling", {})
        if not isinstance(thr, Mapping) or set(thr) - {"enabled", "writes", "reads"}:
            raise ValueError("throttling: must be an object with only enabled, writes, reads")
        if not isinstance(thr.get("enabled", True), bool):
            raise ValueError("throttling.enabled: must be true or false")
        throttling = Throttling(thr.get("enabled", True),
                                _bucket("throttling.writes", thr.get("writes"), base.throttling.writes),
                                _bucket("throttling.reads", thr.get("reads"), base.throttling.reads))
        defaults = behaviour_from_dict(d.get("defaults", {}), "defaults")
        raw_caches = d.get("caches", {"*": {}})
        if not isinstance(raw_caches, Mapping):
            raise ValueError("caches: must be an object mapping cache names or globs to behaviours")
        caches: dict[str, dict[str, Any]] = {}
        for pattern, behaviour in raw_caches.items():
            if not isinstance(pattern, str) or not pattern:
                raise ValueError("caches: keys must be non-empty cache names or globs")
            caches[pattern] = _behaviour_overrides(f"caches[{pattern!r}]", behaviour if behaviour is not None else {})
        return cls(token, tuple(versions), location, signed, throttling, defaults, caches)

    def to_dict(self) -> dict[str, Any]:
        bucket = lambda b: {"burst": b.burst, "perSecond": b.per_second}  # noqa: E731
        return {
            "token": self.token, "apiVersions": list(self.api_versions), "location": self.location,
            "signedUrlBytes": self.signed_url_bytes,
            "throttling": {"enabled": self.throttling.enabled, "writes": bucket(self.throttling.writes),
                           "reads": bucket(self.throttling.reads)},
            "defaults": self.defaults.to_dict(),
            "caches": {p: {_camel(k): (list(v) if isinstance(v, tuple) else v) for k, v in o.items()}
                       for p, o in self.caches.items()},
        }


def load_config(path: str | Path) -> EmulatorConfig:
    """Read a JSON or TOML (`.toml`) config file; any problem is a ValueError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"config file {p}: cannot be read ({exc.strerror or exc})") from exc
    try:
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"config file {p}: must be valid {'TOML' if p.suffix.lower() == '.toml' else 'JSON'} ({exc})") from exc
    return EmulatorConfig.from_dict(data)
