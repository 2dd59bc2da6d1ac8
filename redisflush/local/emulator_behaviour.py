"""How one emulated cache or database behaves (`Behaviour`), and the validation of its camelCase
fields: every problem is a `ValueError` naming the field and the rule; unknown keys are rejected.

A behaviour has two parts. The flush fields (`duration`, `outcome`, `pollErrors`, ...) say what
ARM answers, for classic caches and Managed Redis databases alike. The placement fields (`tags`,
`resourceGroup`, `subscriptionId`, `location`) say where a classic cache lives: a cache that
pins `resourceGroup` or `subscriptionId` exists only there (404 elsewhere); one that does not is
found under any of them, as before. Databases take their placement from their cluster.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

OUTCOMES = ("Succeeded", "Failed", "Canceled")
POLL_MODES = ("both", "async", "location", "none")
PLACEMENT = ("tags", "resource_group", "subscription_id", "location")
DEFAULT_ERROR = {
    "code": "InternalServerError",
    "message": "The flush operation failed because of an internal error. Please try again later.",
}
# The rules for names are ARM's (docs/design.md, "Flush request").
NAME = re.compile(r"^([a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]|[a-zA-Z0-9])$")
RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}$")
SUBSCRIPTION = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def is_name(v: Any) -> bool:
    """A valid cache, cluster or database name."""
    return isinstance(v, str) and len(v) <= 63 and bool(NAME.match(v))


@dataclass(frozen=True)
class Behaviour:
    """How one cache's or database's flush behaves (defaults: the recorded real traffic)."""

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
    # Location-only: a Failed operation's answer (a Canceled one's too for Managed Redis)
    failure_status: int = 500
    tags: dict[str, str] | None = None
    resource_group: str | None = None
    subscription_id: str | None = None
    location: str | None = None

    def failure(self) -> dict[str, Any]:
        return dict(self.error or DEFAULT_ERROR)

    def placed_in(self, sub: str, rg: str | None = None) -> bool:
        """Whether the cache exists in this subscription (and resource group, when given)."""
        if self.subscription_id and self.subscription_id.lower() != sub.lower():
            return False
        pinned = self.resource_group
        return rg is None or not pinned or pinned.lower() == rg.lower()

    def to_dict(self) -> dict[str, Any]:
        return {camel(k): (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return (is_int(v) or isinstance(v, float)) and v == v


def _number(lo: float, hi: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: is_num(v) and lo <= v <= hi), f"must be a number from {lo:g} to {hi:g}"


def _integer(lo: int, hi: int, optional: bool = False) -> tuple[Callable[[Any], bool], str]:
    rule = f"must be an integer from {lo} to {hi}" + (" or null" if optional else "")
    return (lambda v: (optional and v is None) or (is_int(v) and lo <= v <= hi)), rule


def _one_of(options: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in options), "must be one of " + ", ".join(options)


def valid_tags(v: Any) -> bool:
    """ARM's tag limits: at most 50, names 1-512 characters, values at most 256."""
    return isinstance(v, Mapping) and len(v) <= 50 and all(
        isinstance(k, str) and 1 <= len(k) <= 512 and isinstance(x, str) and len(x) <= 256
        for k, x in v.items())


def valid_location(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip()) and "/" not in v


def valid_subscription(v: Any) -> bool:
    return isinstance(v, str) and bool(SUBSCRIPTION.match(v))


def valid_resource_group(v: Any) -> bool:
    return isinstance(v, str) and bool(RESOURCE_GROUP.match(v)) and not v.endswith(".")


TAGS_RULE = ("must be an object of at most 50 string tags "
             "(names 1-512 characters, values at most 256)")
RG_RULE = ("must be a resource group name "
           "(1-90 characters of letters, digits, -._(), not ending in '.')")
SUB_RULE = "must be a subscription id (a GUID)"
LOCATION_RULE = "must be a non-empty region name without '/'"
_BOOL = ((lambda v: isinstance(v, bool)), "must be true or false")
_STATUS_LIST = ((lambda v: isinstance(v, list) and all(is_int(x) and 400 <= x <= 599 for x in v)),
                "must be a list of HTTP status codes from 400 to 599")
_ERROR = ((lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("code"), str)
                                    and isinstance(v.get("message"), str))),
          "must be an ErrorDetail object with string code and message")
HOST: tuple[Callable[[Any], bool], str] = (
    lambda v: v is None or (isinstance(v, str) and bool(re.fullmatch(r"https?://[^/?#\s]+", v))),
    "must be 'https://host[:port]' (scheme and authority only)")

_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "duration": _number(0, 86400), "outcome": _one_of(OUTCOMES), "error": _ERROR,
    "retry_after": _integer(0, 3600, optional=True), "poll_mode": _one_of(POLL_MODES),
    "location_done_no_content": _BOOL, "immediate": _BOOL, "immediate_empty_body": _BOOL,
    "percent_complete": _BOOL, "busy_seconds": _number(0, 86400),
    "throttle_first": _integer(0, 10**6), "throttle_retry_after": _integer(0, 3600),
    "post_errors": _STATUS_LIST, "poll_errors": _STATUS_LIST,
    "invalid_json_polls": _integer(0, 10**6), "statusless_polls": _integer(0, 10**6),
    "latency": _number(0, 600), "move_after_polls": _integer(0, 10**6), "foreign_host": HOST,
    "redis_db": _integer(0, 1023, optional=True), "failure_status": _integer(400, 599),
    "tags": ((lambda v: v is None or valid_tags(v)), TAGS_RULE),
    "resource_group": ((lambda v: v is None or valid_resource_group(v)), RG_RULE),
    "subscription_id": ((lambda v: v is None or valid_subscription(v)), SUB_RULE),
    "location": ((lambda v: v is None or valid_location(v)), LOCATION_RULE),
}


def behaviour_overrides(where: str, raw: Any, *, placement: bool = True) -> dict[str, Any]:
    """Validate a behaviour object; returns snake_case overrides. `placement=False` (databases)
    refuses the placement fields, which belong to the cluster."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be an object")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = snake(key)
        if name not in _RULES:
            raise ValueError(f"{where}.{key}: unknown behaviour field (known: "
                             + ", ".join(camel(n) for n in _RULES) + ")")
        if not placement and name in PLACEMENT:
            raise ValueError(f"{where}.{key}: set on the cluster, not on its database")
        check, rule = _RULES[name]
        if not check(value):
            raise ValueError(f"{where}.{key}: {rule}")
        if isinstance(value, list):
            value = tuple(value)
        out[name] = dict(value) if isinstance(value, Mapping) else value
    return out


def behaviour_from_dict(raw: Mapping[str, Any], where: str = "behaviour") -> Behaviour:
    """A full Behaviour from camelCase fields (missing ones take the built-in defaults)."""
    return Behaviour(**behaviour_overrides(where, raw))
