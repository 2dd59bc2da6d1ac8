"""Which caches a request names: one of its forms (resourceId, resourceIds, selector,
subscriptionId + resourceGroup + cacheName / clusterName), and a Managed Redis database's
linkedDatabaseIds, each checked against its rule."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ValidationError
from .selector import Selector, parse_selector
from .targets import (
    ENTERPRISE,
    Target,
    in_scopes,
    make_enterprise,
    make_target,
    parse_database_id,
    parse_resource_id,
    scope_overlaps,
)

MAX_LINKED = 50


_FORMS = ("resourceId", "resourceIds", "selector", "cacheName", "clusterName")


def parse_targets(data: Mapping[str, Any], max_targets: int
                  ) -> tuple[tuple[Target, ...], Selector | None]:
    forms = [f for f in _FORMS if data.get(f) is not None]
    parts = [p for p in ("subscriptionId", "resourceGroup", "databaseName")
             if data.get(p) is not None]
    if len(forms) > 1:
        raise ValidationError(forms[1], f"must not be given together with {forms[0]} "
                                        "(use one form)")
    if not forms:
        if parts:
            raise ValidationError("cacheName", "is required with " + " and ".join(parts)
                                  + " (or clusterName for Managed Redis)")
        raise ValidationError("resourceId", "is required (or resourceIds, selector, or "
                                            "subscriptionId + resourceGroup + cacheName / "
                                            "clusterName)")
    form = forms[0]
    if form in ("resourceId", "resourceIds", "selector") and parts:
        raise ValidationError(parts[0], f"must not be given together with {form} "
                                        "(use one form)")
    if form == "resourceId":
        return (parse_resource_id(data["resourceId"]),), None
    if form == "selector":
        return (), parse_selector(data["selector"])
    if form == "resourceIds":
        return _resource_ids(data["resourceIds"], max_targets), None
    for needed in ("subscriptionId", "resourceGroup"):
        if needed not in parts:
            raise ValidationError(needed, f"is required with {form}")
    if form == "cacheName":
        if "databaseName" in parts:
            raise ValidationError("databaseName", "goes with clusterName, not cacheName")
        return (make_target(data["subscriptionId"], data["resourceGroup"],
                            data["cacheName"]),), None
    if "databaseName" in data and data["databaseName"] is None:
        raise ValidationError("databaseName", "must not be null (leave it out for the "
                                              "database named default)")
    return (make_enterprise(data["subscriptionId"], data["resourceGroup"], data["clusterName"],
                            data.get("databaseName")),), None


def check_selector_scope(selector: Selector, scopes: tuple[str, ...]) -> None:
    """A selector none of whose caches could be flushed is refused before it is listed:
    the app's identity reads no scope REDISFLUSH_ALLOWED_SCOPES keeps it out of, and no
    rejection names a cache found there (docs/design.md, "Security rules")."""
    if scope_overlaps(selector.scope, scopes):
        return
    field = "selector.subscriptionId"
    if selector.resource_group and scope_overlaps(f"/subscriptions/{selector.subscription_id}",
                                                  scopes):
        field = "selector.resourceGroup"  # its subscription holds allowed scopes: not that group
    raise ValidationError(field, f"{selector.scope} lies outside the scopes this app may flush "
                                 "(REDISFLUSH_ALLOWED_SCOPES): no cache it matches could be "
                                 "flushed, so it is not listed")


def _resource_ids(value: Any, max_targets: int) -> tuple[Target, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= max_targets:
        raise ValidationError("resourceIds", f"must be a list of 1 to {max_targets} resource "
                              f"ids (REDISFLUSH_MAX_TARGETS)"
                              + (f", got {len(value)}" if isinstance(value, list) else ""))
    targets: dict[str, Target] = {}
    for index, item in enumerate(value):
        target = parse_resource_id(item, f"resourceIds[{index}]")
        if target.key in targets:
            raise ValidationError(f"resourceIds[{index}]", "repeats an earlier id (ids compare "
                                                           "without case)")
        targets[target.key] = target
    return tuple(sorted(targets.values(), key=lambda t: t.key))


def parse_linked(data: Mapping[str, Any], targets: tuple[Target, ...],
                 scopes: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    value = data.get("linkedDatabaseIds")
    if value is None:
        if "linkedDatabaseIds" in data and len(targets) == 1 and \
                targets[0].kind == ENTERPRISE:
            # left out it means the whole group: a template's null must not pass for that
            raise ValidationError("linkedDatabaseIds", "must not be null (leave it out to "
                                                       "flush the whole geo-replication "
                                                       "group, [] for the database alone)")
        return None
    if len(targets) != 1 or targets[0].kind != ENTERPRISE:
        raise ValidationError("linkedDatabaseIds", "goes only with one Managed Redis database "
                                                   "(resourceId or clusterName)")
    if not isinstance(value, list) or len(value) > MAX_LINKED:
        raise ValidationError("linkedDatabaseIds", f"must be a list of at most {MAX_LINKED} "
                                                   "database ids ([] flushes the database alone)")
    ids: dict[str, str] = {}  # key -> the id as given
    for index, item in enumerate(value):
        field = f"linkedDatabaseIds[{index}]"
        text = parse_database_id(item, field)
        linked = parse_resource_id(text)
        if linked.key == targets[0].key:
            raise ValidationError(field, "is the database being flushed: list only the other "
                                         "databases of its geo-replication group")
        if linked.key in ids:
            raise ValidationError(field, "repeats an earlier id (ids compare without case)")
        if not in_scopes(linked, scopes):
            raise ValidationError(field, "is outside the scopes this app may flush "
                                         "(REDISFLUSH_ALLOWED_SCOPES); a linked database is "
                                         "flushed too")
        ids[linked.key] = text
    return tuple(ids.values())
