"""What may be flushed: a cache's identity, its validation, and the ARM URLs built from it.

Only segments that passed these rules ever reach an ARM URL, and they are percent-encoded
there: a queue sender must not be able to steer the POST anywhere but one cache's flush.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

from .errors import ValidationError

# Seed rules from ARM's own validation (resource group, Microsoft.Cache name rules).
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_RESOURCE_GROUP = re.compile(r"[-\w._()]{1,90}")
_CACHE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]|[a-zA-Z0-9]", re.ASCII)


@dataclass(frozen=True)
class CacheTarget:
    """One Azure Cache for Redis, by its three validated path segments."""

    subscription_id: str
    resource_group: str
    cache_name: str

    @property
    def resource_id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Cache/Redis/{self.cache_name}")

    def flush_url(self, arm_endpoint: str, api_version: str) -> str:
        path = "/".join(quote(part, safe="()") for part in self.resource_id.split("/"))
        return f"{arm_endpoint}{path}/flush?api-version={quote(api_version, safe='')}"

    def to_json(self) -> dict[str, str]:
        return {"subscriptionId": self.subscription_id, "resourceGroup": self.resource_group,
                "cacheName": self.cache_name}


def make_target(subscription_id: object, resource_group: object, cache_name: object
                ) -> CacheTarget:
    """Validate the three segments of the request's second form."""
    sub = _text("subscriptionId", subscription_id)
    rg = _text("resourceGroup", resource_group)
    cache = _text("cacheName", cache_name)
    if not _GUID.fullmatch(sub):
        raise ValidationError("subscriptionId",
                              "must be a GUID like 00000000-0000-0000-0000-000000000000")
    if not _RESOURCE_GROUP.fullmatch(rg) or rg.endswith("."):
        raise ValidationError("resourceGroup",
                              "must be 1-90 letters, digits, '-', '_', '.', '(' or ')' "
                              "and not end with '.'")
    if unicodedata.normalize("NFKC", rg) != rg:
        # Full-width and other compatibility look-alikes: ARM would fold them, we refuse.
        raise ValidationError("resourceGroup",
                              "must not contain compatibility look-alike characters")
    if len(cache) > 63 or not _CACHE.fullmatch(cache):
        raise ValidationError("cacheName",
                              "must be 1-63 ASCII letters, digits or '-', starting and ending "
                              "with a letter or digit")
    return CacheTarget(sub.lower(), rg, cache)


def parse_resource_id(value: object, field: str = "resourceId") -> CacheTarget:
    """Parse `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/redis/{c}`."""
    text = _text(field, value)
    parts = text.split("/")
    shape = ("", "subscriptions", None, "resourcegroups", None, "providers", "microsoft.cache",
             "redis", None)
    if len(parts) != len(shape) or any(
            want is not None and part.lower() != want for part, want in zip(parts, shape)):
        raise ValidationError(field, "must be /subscriptions/{subscriptionId}/resourceGroups/"
                                     "{resourceGroup}/providers/Microsoft.Cache/redis/{cacheName}")
    try:
        return make_target(parts[2], parts[4], parts[8])
    except ValidationError as exc:
        raise ValidationError(field, f"{_segment_name(exc.field)} {exc.rule}") from None


def in_scopes(target: CacheTarget, scopes: tuple[str, ...]) -> bool:
    """True when no scopes are set or the resource id lies under one of them."""
    if not scopes:
        return True
    rid = target.resource_id.lower()
    for scope in scopes:
        s = scope.lower().rstrip("/")
        if rid == s or rid.startswith(s + "/"):
            return True
    return False


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {_json_type(value)}")
    return value


def _segment_name(field: str) -> str:
    return {"subscriptionId": "subscription segment", "resourceGroup": "resource group segment",
            "cacheName": "cache name segment"}.get(field, field)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
