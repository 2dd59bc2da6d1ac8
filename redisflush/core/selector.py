"""Selectors: "every cache of these kinds in this scope whose tags all match", resolved by
the app through ARM's list APIs (docs/design.md, "Flush request" and "Listing").

Pure: the list URLs to read, and what one page of a list answer contributes. Tag names
compare without case and values exactly, as Azure does; an item whose id lies outside the
selector's scope is ignored (a list answer is input too).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ..errors import ValidationError
from .targets import (
    ENTERPRISE,
    KINDS,
    REDIS,
    Target,
    check_resource_group,
    check_subscription,
    json_type,
    parse_resource_id,
)

SELECTOR_FIELDS = ("subscriptionId", "resourceGroup", "tags", "all", "kinds")
MAX_TAGS = 15  # Azure allows 50 tags per resource; a selector needs few


@dataclass(frozen=True)
class Selector:
    """Which caches a selector names; `tags` empty means `all`."""

    subscription_id: str
    resource_group: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    kinds: tuple[str, ...] = KINDS

    @property
    def scope(self) -> str:
        base = f"/subscriptions/{self.subscription_id}"
        return base + (f"/resourceGroups/{self.resource_group}" if self.resource_group else "")

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"subscriptionId": self.subscription_id}
        if self.resource_group:
            doc["resourceGroup"] = self.resource_group
        if self.tags:
            doc["tags"] = dict(self.tags)
        else:
            doc["all"] = True
        doc["kinds"] = list(self.kinds)
        return doc

    def identity(self) -> dict[str, Any]:
        """What the selector names, as ARM compares it: resource groups and tag names
        without case, tag values exactly (a request's fingerprint)."""
        doc = self.to_json()
        doc["subscriptionId"] = self.subscription_id.lower()
        if self.resource_group:
            doc["resourceGroup"] = self.resource_group.lower()
        if self.tags:
            doc["tags"] = {name.lower(): value for name, value in self.tags}
        return doc

    def matches_tags(self, tags: Any) -> bool:
        if not self.tags:
            return True
        if not isinstance(tags, Mapping):
            return False
        folded = {str(k).lower(): v for k, v in tags.items()}
        return all(folded.get(name.lower()) == value for name, value in self.tags)

    def in_scope(self, resource_id: str) -> bool:
        rid, scope = resource_id.lower(), self.scope.lower()
        return rid.startswith(scope + "/")

    def list_paths(self) -> list[tuple[str, str]]:
        """(kind, path) of the first list page per kind (a query string is added by the app)."""
        return [(kind, f"{_quoted(self.scope)}/providers/Microsoft.Cache/"
                       f"{'redis' if kind == REDIS else 'redisEnterprise'}")
                for kind in self.kinds]


def _quoted(path: str) -> str:
    return "/".join(quote(part, safe="()") for part in path.split("/"))


def database_list_path(cluster_id: str) -> str:
    """The databases of one Managed Redis cluster (a list, like the cluster list)."""
    return f"{_quoted(cluster_id)}/databases"


@dataclass
class PageReading:
    """What one list page gave: matching targets, clusters whose databases to list next,
    ignored items (out of scope or unreadable) and the nextLink, if any."""

    targets: list[Target] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)
    ignored: int = 0
    next_link: str | None = None
    problem: str | None = None


def read_page(selector: Selector, kind: str, body: bytes, *, databases_of: str | None = None
              ) -> PageReading:
    """One page of `{"value": [...], "nextLink"?}`: classic caches match by their tags,
    clusters by theirs (their databases follow); databases carry no tags of their own."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return PageReading(problem="ListInvalidJson")
    if not isinstance(doc, dict) or not isinstance(doc.get("value"), list):
        return PageReading(problem="ListInvalidJson")
    reading = PageReading()
    link = doc.get("nextLink")
    reading.next_link = link if isinstance(link, str) and link.strip() else None
    for item in doc["value"]:
        rid = item.get("id") if isinstance(item, dict) else None
        if not isinstance(rid, str) or not selector.in_scope(rid):
            reading.ignored += 1
            continue
        try:
            target = parse_resource_id(rid)
        except ValidationError:
            reading.ignored += 1
            continue
        if databases_of is not None:  # a database of a cluster that matched already
            if target.kind == ENTERPRISE and rid.lower().startswith(databases_of.lower() + "/"):
                reading.targets.append(target)
            else:
                reading.ignored += 1
        elif kind == REDIS and target.kind == REDIS:
            if selector.matches_tags(item.get("tags")):
                reading.targets.append(target)
        elif kind == ENTERPRISE and target.kind == ENTERPRISE and \
                rid.rstrip("/").count("/") == 8:
            if selector.matches_tags(item.get("tags")):
                reading.clusters.append(rid.rstrip("/"))
        else:
            reading.ignored += 1
    return reading


def parse_selector(value: object) -> Selector:
    if not isinstance(value, dict):
        raise ValidationError("selector", f"must be an object, not {json_type(value)}")
    unknown = sorted(k for k in value if k not in SELECTOR_FIELDS)
    if unknown:
        raise ValidationError(f"selector.{unknown[0][:64]}", "is not a known field (known: "
                              + ", ".join(SELECTOR_FIELDS) + ")")
    null = next((k for k in SELECTOR_FIELDS if k in value and value[k] is None), None)
    if null is not None:
        # a template's unset variable: left out, resourceGroup means the whole subscription
        raise ValidationError(f"selector.{null}", "must not be null (leave it out to mean "
                                                  "absent: a selector field left out widens "
                                                  "what matches)")
    if "subscriptionId" not in value:
        raise ValidationError("selector.subscriptionId", "is required")
    sub = check_subscription(value["subscriptionId"], "selector.subscriptionId")
    rg = value.get("resourceGroup")
    if rg is not None:
        if not isinstance(rg, str):
            raise ValidationError("selector.resourceGroup", f"must be a string, not "
                                                            f"{json_type(rg)}")
        check_resource_group(rg, "selector.resourceGroup")
    tags, every = value.get("tags"), value.get("all")
    if every is not None and every is not True:
        raise ValidationError("selector.all", "must be true when given")
    if tags is None and every is None:
        raise ValidationError("selector.tags", "is required (or \"all\": true): a selector "
                                               "never flushes everything by omission")
    if tags is not None and every:
        raise ValidationError("selector.all", "must not be given together with tags")
    pairs: tuple[tuple[str, str], ...] = ()
    if tags is not None:
        if not isinstance(tags, dict) or not tags:
            raise ValidationError("selector.tags", "must be a non-empty object of tag "
                                                   "name -> value")
        if len(tags) > MAX_TAGS:
            raise ValidationError("selector.tags", f"must have at most {MAX_TAGS} tags")
        seen: set[str] = set()
        for name, tag_value in tags.items():
            if not name or len(name) > 512 or name.lower() in seen:
                raise ValidationError("selector.tags", "names must be 1-512 characters and "
                                                       "differ without case")
            seen.add(name.lower())
            if not isinstance(tag_value, str) or len(tag_value) > 256:
                raise ValidationError(f"selector.tags.{name[:64]}",
                                      "must be a string of at most 256 characters")
        pairs = tuple(sorted(tags.items()))
    kinds = value.get("kinds", list(KINDS))
    if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds) \
            or len(set(kinds)) != len(kinds):
        raise ValidationError("selector.kinds", "must be a non-empty list of distinct kinds "
                                                "from: redis, redisEnterprise")
    return Selector(sub, rg, pairs, tuple(k for k in KINDS if k in kinds))
