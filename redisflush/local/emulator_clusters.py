"""Azure Managed Redis (`Microsoft.Cache/redisEnterprise`) in the emulator's config: clusters,
their databases, and geo-replication groups.

```json
"clusters": {"shop-eu": {"resourceGroup": "rg-eu", "location": "West Europe",
                         "tags": {"app": "shop"}, "databases": {"default": {"duration": 1}}}},
"geoGroups": {"shop-geo": ["shop-eu/default",
                           "/subscriptions/.../resourceGroups/rg-us/providers/
                            Microsoft.Cache/redisEnterprise/shop-us/databases/default"]}
```

A cluster lives in one resource group: its `resourceGroup`, else the config's
`defaultResourceGroup`; under any other one it does not exist (404). It exists in every
subscription unless it pins `subscriptionId`. Cluster fields: `resourceGroup`,
`subscriptionId`, `location` (default: the config's), `tags`, `sku` (default `Balanced_B5`),
`databases` (name -> behaviour, default `{"default": {}}`; behaviour fields as for caches,
without the placement ones). Names are exact (no globs): list APIs show every cluster and
database.

`geoGroups` maps a group nickname to its members, each `cluster/database` or a full database
id. A short member's id is rendered for the subscription of the request (or the cluster's
pinned one); a full id is used verbatim, as configured. ARM compares these ids
case-sensitively (docs/design.md, "What ARM really does"), and so does the flush's `ids` check.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .emulator_behaviour import (
    LOCATION_RULE,
    RG_RULE,
    SUB_RULE,
    TAGS_RULE,
    behaviour_overrides,
    camel,
    is_name,
    valid_location,
    valid_resource_group,
    valid_subscription,
    valid_tags,
)

PROVIDER = "Microsoft.Cache/redisEnterprise"
_DATABASE_ID = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/"
                          r"Microsoft\.Cache/redisEnterprise/([^/]+)/databases/([^/]+)$", re.I)
_NICKNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
_CLUSTER_FIELDS = ("resourceGroup", "subscriptionId", "location", "tags", "sku", "databases")
_CLUSTER_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("resourceGroup", valid_resource_group, RG_RULE),
    ("subscriptionId", valid_subscription, SUB_RULE),
    ("location", valid_location, LOCATION_RULE),
    ("tags", valid_tags, TAGS_RULE),
    ("sku", lambda v: isinstance(v, str) and 0 < len(v) <= 64,
     "must be a SKU name (1-64 characters)"),
)


def cluster_id(sub: str, rg: str, cluster: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{PROVIDER}/{cluster}"


def database_id(sub: str, rg: str, cluster: str, db: str) -> str:
    return f"{cluster_id(sub, rg, cluster)}/databases/{db}"


def database_key(cluster: str, db: str) -> str:
    """The key namespace of a database (the keystore's name for it): `cluster/db`, lower-cased.
    Classic cache names cannot hold a `/`, so the two never collide."""
    return f"{cluster}/{db}".lower()


@dataclass(frozen=True)
class Cluster:
    name: str
    resource_group: str | None = None
    subscription_id: str | None = None
    location: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    sku: str = "Balanced_B5"
    databases: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"default": {}})

    def database(self, name: str) -> str | None:
        """The database's configured name (names compare case-insensitively), or None."""
        return next((d for d in self.databases if d.lower() == name.lower()), None)

    def in_subscription(self, sub: str) -> bool:
        return not self.subscription_id or self.subscription_id.lower() == sub.lower()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resourceGroup": self.resource_group,
                               "subscriptionId": self.subscription_id, "location": self.location}
        out = {k: v for k, v in out.items() if v is not None}
        out.update(tags=dict(self.tags), sku=self.sku)
        out["databases"] = {
            d: {camel(k): (list(v) if isinstance(v, tuple) else v) for k, v in o.items()}
            for d, o in self.databases.items()}
        return out


def _cluster(where: str, name: str, body: Mapping[str, Any]) -> Cluster:
    for key in body:
        if key not in _CLUSTER_FIELDS:
            raise ValueError(f"{where}.{key}: unknown cluster field "
                             f"(known: {', '.join(_CLUSTER_FIELDS)})")
    for key, check, rule in _CLUSTER_RULES:
        if body.get(key) is not None and not check(body[key]):
            raise ValueError(f"{where}.{key}: {rule}")
    dbs = body.get("databases", {"default": {}})
    if not isinstance(dbs, Mapping) or not dbs:
        raise ValueError(f"{where}.databases: must be a non-empty object mapping database "
                         "names to behaviours")
    databases: dict[str, dict[str, Any]] = {}
    for db, beh in dbs.items():
        at = f"{where}.databases[{db!r}]"
        if not is_name(db) or any(d.lower() == db.lower() for d in databases):
            raise ValueError(f"{at}: the key must be a database name, once")
        databases[db] = behaviour_overrides(at, {} if beh is None else beh, placement=False)
    return Cluster(name, body.get("resourceGroup"), body.get("subscriptionId"),
                   body.get("location"), dict(body.get("tags") or {}),
                   body.get("sku") or "Balanced_B5", databases)


def parse_clusters(raw: Any) -> dict[str, Cluster]:
    if not isinstance(raw, Mapping):
        raise ValueError("clusters: must be an object mapping cluster names to clusters")
    out: dict[str, Cluster] = {}
    for name, body in raw.items():
        where = f"clusters[{name!r}]"
        if not is_name(name):
            raise ValueError(f"{where}: the key must be a cluster name (1-63 letters, digits and "
                             "hyphens, starting and ending with a letter or digit)")
        if any(n.lower() == name.lower() for n in out):
            raise ValueError(f"{where}: the same cluster twice (names compare case-insensitively)")
        body = {} if body is None else body
        if not isinstance(body, Mapping):
            raise ValueError(f"{where}: must be an object")
        out[name] = _cluster(where, name, body)
    return out


def member_ref(member: str) -> tuple[str, str] | None:
    """(cluster, database) a geo group member names, full id or `cluster/db`; None if neither."""
    m = _DATABASE_ID.match(member)
    if m:
        return m.group(3), m.group(4)
    cluster, slash, db = member.partition("/")
    return (cluster, db) if slash and is_name(cluster) and is_name(db) else None


def parse_geo_groups(raw: Any, clusters: Mapping[str, Cluster],
                     default_rg: str) -> dict[str, tuple[str, ...]]:
    """Validate `geoGroups`: every member an existing database, in one group at most; a full
    id must agree with its cluster's resource group and pinned subscription."""
    if not isinstance(raw, Mapping):
        raise ValueError("geoGroups: must be an object mapping group nicknames to lists of "
                         "databases")
    seen: dict[str, str] = {}
    out: dict[str, tuple[str, ...]] = {}
    for nick, members in raw.items():
        where = f"geoGroups[{nick!r}]"
        if not isinstance(nick, str) or not _NICKNAME.fullmatch(nick):
            raise ValueError(f"{where}: the key must be a group nickname "
                             "(1-63 letters, digits and hyphens)")
        if not isinstance(members, list) or not members:
            raise ValueError(f"{where}: must be a non-empty list of 'cluster/database' names "
                             "or database ids")
        for i, member in enumerate(members):
            ref = member_ref(member) if isinstance(member, str) else None
            if ref is None:
                raise ValueError(f"{where}[{i}]: must be 'cluster/database' or a "
                                 "redisEnterprise database id")
            cluster = next((c for n, c in clusters.items() if n.lower() == ref[0].lower()), None)
            if cluster is None or cluster.database(ref[1]) is None:
                raise ValueError(f"{where}[{i}]: no database {ref[1]!r} in a cluster "
                                 f"{ref[0]!r} under clusters")
            full = _DATABASE_ID.match(member)
            home = (cluster.resource_group or default_rg).lower()
            elsewhere = full and (full.group(2).lower() != home
                                  or not cluster.in_subscription(full.group(1)))
            if elsewhere:
                raise ValueError(f"{where}[{i}]: the id's subscription or resource group is not "
                                 "the cluster's")
            key = database_key(*ref)
            if key in seen:
                raise ValueError(f"{where}[{i}]: {ref[0]}/{ref[1]} is already in group "
                                 f"{seen[key]!r}")
            seen[key] = nick
        out[nick] = tuple(members)
    return out
