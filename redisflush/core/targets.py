"""What may be flushed: a cache's identity, its validation, and the ARM URLs built from it.

Two kinds (docs/design.md, "Flush request"): a classic Azure Cache for Redis
(`Microsoft.Cache/redis/{cache}`) and an Azure Managed Redis database
(`Microsoft.Cache/redisEnterprise/{cluster}/databases/{db}`). Only segments that passed these
rules ever reach an ARM URL, and they are percent-encoded there: a queue sender must not be
able to steer a request anywhere but one cache's own routes.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..errors import ValidationError

REDIS, ENTERPRISE = "redis", "redisEnterprise"
KINDS = (REDIS, ENTERPRISE)
DEFAULT_DATABASE = "default"

# Seed rules from ARM's own validation (resource group, Microsoft.Cache name rules).
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_RESOURCE_GROUP = re.compile(r"[-\w._()]{1,90}")
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]|[a-zA-Z0-9]", re.ASCII)
_NAME_RULE = "must be 1-63 ASCII letters, digits or '-', starting and ending with a letter or digit"
RESOURCE_ID_FORMS = ("/subscriptions/{subscriptionId}/resourceGroups/{resourceGroup}/providers/"
                     "Microsoft.Cache/redis/{cacheName} or .../Microsoft.Cache/redisEnterprise/"
                     "{clusterName}[/databases/{databaseName}]")


@dataclass(frozen=True)
class Target:
    """One cache: a classic cache (`database` None) or one Managed Redis database."""

    kind: str
    subscription_id: str
    resource_group: str
    name: str
    database: str | None = None

    @property
    def resource_id(self) -> str:
        scope = (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                 "/providers/Microsoft.Cache")
        if self.kind == REDIS:
            return f"{scope}/Redis/{self.name}"
        return f"{scope}/redisEnterprise/{self.name}/databases/{self.database}"

    @property
    def key(self) -> str:
        """Identity for duplicates, sorting and the ledger: ARM compares ids without case."""
        return self.resource_id.lower()

    @property
    def display_name(self) -> str:
        """The event's `subject`: the cache, or `{cluster}/{database}`."""
        return self.name if self.kind == REDIS else f"{self.name}/{self.database}"

    @property
    def scope(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"

    def _path(self) -> str:
        return "/".join(quote(part, safe="()") for part in self.resource_id.split("/"))

    def flush_url(self, arm_endpoint: str, api_version: str) -> str:
        return f"{arm_endpoint}{self._path()}/flush?api-version={quote(api_version, safe='')}"

    def resource_url(self, arm_endpoint: str, api_version: str) -> str:
        """GET of the resource itself (a Managed Redis database lists its geo group)."""
        return f"{arm_endpoint}{self._path()}?api-version={quote(api_version, safe='')}"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "subscriptionId": self.subscription_id,
                               "resourceGroup": self.resource_group, "name": self.name}
        if self.database is not None:
            doc["database"] = self.database
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> Target:
        """Our own poll state's target (validated again: a message is input too)."""
        if not isinstance(doc, dict):
            raise ValidationError("target", "must be an object")
        if doc.get("kind") == ENTERPRISE:
            return make_enterprise(doc.get("subscriptionId"), doc.get("resourceGroup"),
                                   doc.get("name"), doc.get("database"))
        if doc.get("kind") != REDIS:
            raise ValidationError("target.kind", "must be redis or redisEnterprise")
        return make_target(doc.get("subscriptionId"), doc.get("resourceGroup"), doc.get("name"))


def _scope_parts(subscription_id: object, resource_group: object) -> tuple[str, str]:
    sub = _text("subscriptionId", subscription_id)
    rg = _text("resourceGroup", resource_group)
    if not _GUID.fullmatch(sub):
        raise ValidationError("subscriptionId",
                              "must be a GUID like 00000000-0000-0000-0000-000000000000")
    check_resource_group(rg)
    return sub.lower(), rg


def check_resource_group(rg: str, field: str = "resourceGroup") -> None:
    if not _RESOURCE_GROUP.fullmatch(rg) or rg.endswith("."):
        raise ValidationError(field, "must be 1-90 letters, digits, '-', '_', '.', '(' or ')' "
                                     "and not end with '.'")
    if unicodedata.normalize("NFKC", rg) != rg:
        # Full-width and other compatibility look-alikes: ARM would fold them, we refuse.
        raise ValidationError(field, "must not contain compatibility look-alike characters")


def check_subscription(value: object, field: str = "subscriptionId") -> str:
    sub = _text(field, value)
    if not _GUID.fullmatch(sub):
        raise ValidationError(field, "must be a GUID like 00000000-0000-0000-0000-000000000000")
    return sub.lower()


def _name(field: str, value: object) -> str:
    name = _text(field, value)
    if len(name) > 63 or not _NAME.fullmatch(name):
        raise ValidationError(field, _NAME_RULE)
    return name


def make_target(subscription_id: object, resource_group: object, cache_name: object,
                field: str = "cacheName") -> Target:
    """A classic cache from its three segments (the request's by-parts form)."""
    sub, rg = _scope_parts(subscription_id, resource_group)
    return Target(REDIS, sub, rg, _name(field, cache_name))


def make_enterprise(subscription_id: object, resource_group: object, cluster: object,
                    database: object = None) -> Target:
    """A Managed Redis database by parts; no database means `default`."""
    sub, rg = _scope_parts(subscription_id, resource_group)
    db = DEFAULT_DATABASE if database is None else _name("databaseName", database)
    return Target(ENTERPRISE, sub, rg, _name("clusterName", cluster), db)


_SEGMENT_NAMES = {"subscriptionId": "subscription segment",
                  "resourceGroup": "resource group segment", "cacheName": "cache name segment",
                  "clusterName": "cluster name segment", "databaseName": "database name segment"}


def parse_resource_id(value: object, field: str = "resourceId") -> Target:
    """Either kind's resource id; provider segments compare without case, as in ARM."""
    text = _text(field, value)
    parts = text.split("/")
    head = ("", "subscriptions", None, "resourcegroups", None, "providers", "microsoft.cache")
    if len(parts) < 9 or any(want is not None and part.lower() != want
                             for part, want in zip(parts, head, strict=False)):
        raise ValidationError(field, f"must be {RESOURCE_ID_FORMS}")
    provider = parts[7].lower()
    try:
        if provider == "redis" and len(parts) == 9:
            return make_target(parts[2], parts[4], parts[8])
        if provider == "redisenterprise" and len(parts) == 9:
            return make_enterprise(parts[2], parts[4], parts[8])
        if provider == "redisenterprise" and len(parts) == 11 and parts[9].lower() == "databases":
            return make_enterprise(parts[2], parts[4], parts[8], parts[10])
    except ValidationError as exc:
        raise ValidationError(field, f"{_SEGMENT_NAMES.get(exc.field, exc.field)} "
                                     f"{exc.rule}") from None
    raise ValidationError(field, f"must be {RESOURCE_ID_FORMS}")


def parse_database_id(value: object, field: str) -> str:
    """A linked database id, kept exactly as given: Azure compares these ids with case."""
    target = parse_resource_id(value, field)
    if target.kind != ENTERPRISE or not isinstance(value, str) or \
            value.rstrip("/").lower().split("/")[-2:-1] != ["databases"]:
        raise ValidationError(field, "must be a Managed Redis database id .../Microsoft.Cache/"
                                     "redisEnterprise/{cluster}/databases/{database}")
    return value


def in_scopes(target: Target, scopes: tuple[str, ...]) -> bool:
    """True when no scopes are set or the resource id lies under one of them."""
    return not scopes or any(_within(target.key, _scope_key(s)) for s in scopes)


def scope_overlaps(scope: str, scopes: tuple[str, ...]) -> bool:
    """True when no scopes are set or some cache under `scope` (a subscription or resource
    group) could lie inside one of them: one of the two contains the other."""
    mine = _scope_key(scope)
    return not scopes or any(_within(mine, s) or _within(s, mine)
                             for s in map(_scope_key, scopes))


def _scope_key(scope: str) -> str:
    return scope.lower().rstrip("/")


def _within(inner: str, outer: str) -> bool:
    """`inner` is `outer` or a path below it (ids compared as `_scope_key` gives them)."""
    return inner == outer or inner.startswith(outer + "/")


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {json_type(value)}")
    return value


def json_type(value: object) -> str:
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
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
