"""Configuration of the ARM emulator: which caches, clusters and databases exist, how their
flush behaves, listing, throttling and a second client's read load.

JSON/TOML keys are camelCase (`retryAfter`, `pollMode`); attributes are snake_case. Every
problem is a `ValueError` naming the field and the rule; unknown keys are rejected. Behaviours
are `emulator_behaviour`; clusters, databases and geo groups are `emulator_clusters`.

Top-level fields: `token`, `apiVersions` (classic `Microsoft.Cache/redis`, default
`["2023-08-01"]`), `enterpriseApiVersions` (`Microsoft.Cache/redisEnterprise`, default
`["2025-07-01"]`), `location`, `signedUrlBytes`, `throttling`, `defaults`, `caches`, `clusters`,
`geoGroups`, `defaultResourceGroup` (where list APIs show caches and clusters that pin no
resource group; default `rg-emulator`), `pageSize` (list page size, default 100),
`nextLinkHost` (list nextLinks point at this `https://host[:port]` instead of the emulator, to
test that a client refuses them), `outOfScopeItems` (each list also shows one resource whose id
is in another subscription or resource group than the one asked for) and `readLoad`
(`{subscriptionId: readsPerSecond}`: a second client spending that subscription's read budget).

`caches` keys are cache names or globs (case-insensitive, first match wins): a glob makes a
cache exist for every name it matches, for the flush; list APIs show only the caches named
explicitly (keys without `*?[` that are valid cache names), since a glob names no cache.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..logtext import not_utf8

# Behaviour and its helpers were defined here first: importable from here, as before.
from .emulator_behaviour import (  # noqa: F401
    DEFAULT_ERROR,
    HOST,
    OUTCOMES,
    POLL_MODES,
    RG_RULE,
    SUB_RULE,
    Behaviour,
    behaviour_from_dict,
    behaviour_overrides,
    camel,
    is_int,
    is_name,
    is_num,
    valid_location,
    valid_resource_group,
    valid_subscription,
)
from .emulator_clusters import Cluster, database_id, member_ref, parse_clusters, parse_geo_groups
from .emulator_throttle import TokenBucket  # noqa: F401 - importable from here, as before

if sys.version_info >= (3, 11):  # noqa: UP036 - the README still promises 3.10
    import tomllib
else:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib


@dataclass(frozen=True)
class Bucket:
    burst: int
    per_second: float


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
    if not is_int(burst) or not 1 <= burst <= 10**6:
        raise ValueError(f"{where}.burst: must be an integer from 1 to 1000000")
    if not is_num(rate) or not 0 < rate <= 10**6:
        raise ValueError(f"{where}.perSecond: must be a number > 0 and <= 1000000")
    return Bucket(burst, float(rate))


def _throttling(raw: Any, base: Throttling) -> Throttling:
    if not isinstance(raw, Mapping) or set(raw) - {"enabled", "writes", "reads"}:
        raise ValueError("throttling: must be an object with only enabled, writes, reads")
    if not isinstance(raw.get("enabled", True), bool):
        raise ValueError("throttling.enabled: must be true or false")
    return Throttling(raw.get("enabled", True),
                      _bucket("throttling.writes", raw.get("writes"), base.writes),
                      _bucket("throttling.reads", raw.get("reads"), base.reads))


_TOP = {"token", "apiVersions", "enterpriseApiVersions", "location", "signedUrlBytes",
        "throttling", "defaults", "caches", "clusters", "geoGroups", "defaultResourceGroup",
        "pageSize", "nextLinkHost", "outOfScopeItems", "readLoad"}
_GLOB = re.compile(r"[*?\[]")
_SCALARS: dict[str, tuple[Any, str]] = {   # camelCase key -> (check, rule)
    "token": (lambda v: isinstance(v, str) and bool(v) and not any(c.isspace() for c in v),
              "must be a non-empty string without spaces"),
    "location": (valid_location, "must be a non-empty region name without '/'"),
    "signedUrlBytes": (lambda v: is_int(v) and 64 <= v <= 16384,
                       "must be an integer from 64 to 16384"),
    "defaultResourceGroup": (valid_resource_group, RG_RULE),
    "pageSize": (lambda v: is_int(v) and 1 <= v <= 1000, "must be an integer from 1 to 1000"),
    "nextLinkHost": HOST,
    "outOfScopeItems": (lambda v: isinstance(v, bool), "must be true or false"),
}


def _versions(d: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    versions = d.get(key, list(default))
    if not isinstance(versions, list) or not versions or not all(
            isinstance(v, str) and re.fullmatch(r"[0-9A-Za-z.-]+", v) for v in versions):
        raise ValueError(f"{key}: must be a non-empty list of api-version strings")
    return tuple(versions)


def _caches(raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, Mapping):
        raise ValueError("caches: must be an object mapping cache names or globs to behaviours")
    caches: dict[str, dict[str, Any]] = {}
    for pattern, behaviour in raw.items():
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("caches: keys must be non-empty cache names or globs")
        caches[pattern] = behaviour_overrides(f"caches[{pattern!r}]",
                                              behaviour if behaviour is not None else {})
    return caches


def _read_load(raw: Any) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise ValueError("readLoad: must be an object mapping subscription ids to reads per "
                         "second")
    for sub, rate in raw.items():
        if not valid_subscription(sub):
            raise ValueError(f"readLoad[{sub!r}]: the key {SUB_RULE}")
        if not is_num(rate) or not 0 <= rate <= 10**6:
            raise ValueError(f"readLoad[{sub!r}]: must be a number of reads per second "
                             "from 0 to 1000000")
    return {sub: float(rate) for sub, rate in raw.items()}


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
    enterprise_api_versions: tuple[str, ...] = ("2025-07-01",)
    clusters: Mapping[str, Cluster] = field(default_factory=dict)
    geo_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_resource_group: str = "rg-emulator"
    page_size: int = 100
    next_link_host: str | None = None
    out_of_scope_items: bool = False
    read_load: Mapping[str, float] = field(default_factory=dict)

    # ---- classic caches --------------------------------------------------------------------
    def behaviour_for(self, cache: str) -> Behaviour | None:
        """The cache's behaviour, or None when no `caches` key matches (no such cache)."""
        name = cache.lower()
        for pattern, overrides in self.caches.items():
            if fnmatch.fnmatchcase(name, pattern.lower()):
                return dataclasses.replace(self.defaults, **overrides)
        return None

    def listed_caches(self) -> list[tuple[str, Behaviour]]:
        """The caches list APIs show: keys naming one cache (not globs), with their behaviour."""
        out = []
        for name in self.caches:
            beh = self.behaviour_for(name) if is_name(name) and not _GLOB.search(name) else None
            if beh is not None:
                out.append((name, beh))
        return out

    # ---- Managed Redis ---------------------------------------------------------------------
    def cluster(self, name: str) -> Cluster | None:
        return next((c for n, c in self.clusters.items() if n.lower() == name.lower()), None)

    def cluster_rg(self, cluster: Cluster) -> str:
        return cluster.resource_group or self.default_resource_group

    def cluster_at(self, sub: str, rg: str, name: str) -> Cluster | None:
        """The cluster, if it exists in this subscription and resource group."""
        c = self.cluster(name)
        here = c is not None and c.in_subscription(sub) and self.cluster_rg(c).lower() == rg.lower()
        return c if here else None

    def database_behaviour(self, cluster: str, db: str) -> Behaviour | None:
        c = self.cluster(cluster)
        name = c.database(db) if c else None
        return dataclasses.replace(self.defaults, **c.databases[name]) if c and name else None

    def geo_group(self, cluster: Cluster, db: str,
                  sub: str) -> tuple[str, list[tuple[str, Cluster, str]]] | None:
        """(nickname, [(member id, its cluster, its database name)]) of the database's group,
        ids as `GET .../databases/{db}` shows them to subscription `sub`; None outside any."""
        for nick, members in self.geo_groups.items():
            resolved = [(m, *self._member(m)) for m in members]
            if any(c.name.lower() == cluster.name.lower() and d.lower() == db.lower()
                   for _, c, d in resolved):
                return nick, [(raw if raw.startswith("/") else database_id(
                    c.subscription_id or sub, self.cluster_rg(c), c.name, d), c, d)
                    for raw, c, d in resolved]
        return None

    def _member(self, member: str) -> tuple[Cluster, str]:
        """A geo group member's cluster and database (checked to exist when read)."""
        ref = member_ref(member)
        c = self.cluster(ref[0]) if ref else None
        db = c.database(ref[1]) if c and ref else None
        if c is None or db is None:
            raise ValueError(f"geoGroups: {member!r} names no configured database")
        return c, db

    # ---- load and save ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EmulatorConfig:
        if not isinstance(d, Mapping):
            raise ValueError("config: must be an object")
        unknown = set(d) - _TOP
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown config field "
                             f"(known: {', '.join(sorted(_TOP))})")
        base = cls()
        for key, (check, rule) in _SCALARS.items():
            if key in d and not check(d[key]):
                raise ValueError(f"{key}: {rule}")
        default_rg = d.get("defaultResourceGroup", base.default_resource_group)
        clusters = parse_clusters(d.get("clusters", {}))
        return cls(
            token=d.get("token", base.token),
            api_versions=_versions(d, "apiVersions", base.api_versions),
            location=d.get("location", base.location),
            signed_url_bytes=d.get("signedUrlBytes", base.signed_url_bytes),
            throttling=_throttling(d.get("throttling", {}), base.throttling),
            defaults=behaviour_from_dict(d.get("defaults", {}), "defaults"),
            caches=_caches(d.get("caches", {"*": {}})),
            enterprise_api_versions=_versions(d, "enterpriseApiVersions",
                                              base.enterprise_api_versions),
            clusters=clusters,
            geo_groups=parse_geo_groups(d.get("geoGroups", {}), clusters, default_rg),
            default_resource_group=default_rg,
            page_size=d.get("pageSize", base.page_size),
            next_link_host=d.get("nextLinkHost"),
            out_of_scope_items=d.get("outOfScopeItems", False),
            read_load=_read_load(d.get("readLoad", {})))

    def to_dict(self) -> dict[str, Any]:
        def bucket(b: Bucket) -> dict[str, Any]:
            return {"burst": b.burst, "perSecond": b.per_second}

        thr = self.throttling
        return {
            "token": self.token, "apiVersions": list(self.api_versions),
            "enterpriseApiVersions": list(self.enterprise_api_versions),
            "location": self.location, "signedUrlBytes": self.signed_url_bytes,
            "throttling": {"enabled": thr.enabled, "writes": bucket(thr.writes),
                           "reads": bucket(thr.reads)},
            "defaults": self.defaults.to_dict(),
            "caches": {p: {camel(k): (list(v) if isinstance(v, tuple) else v)
                           for k, v in o.items()} for p, o in self.caches.items()},
            "clusters": {n: c.to_dict() for n, c in self.clusters.items()},
            "geoGroups": {n: list(m) for n, m in self.geo_groups.items()},
            "defaultResourceGroup": self.default_resource_group, "pageSize": self.page_size,
            "nextLinkHost": self.next_link_host, "outOfScopeItems": self.out_of_scope_items,
            "readLoad": dict(self.read_load),
        }


def load_config(path: str | Path) -> EmulatorConfig:
    """Read a JSON or TOML (`.toml`) config file; any problem is a ValueError."""
    p = Path(path)
    toml = p.suffix.lower() == ".toml"
    kind = "TOML" if toml else "JSON"
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"config file {p}: cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:   # a ValueError too: without the file's name otherwise
        raise ValueError(f"config file {p}: must be UTF-8 {kind} ({not_utf8(exc)})") from exc
    try:
        data = tomllib.loads(text) if toml else json.loads(text)
    except ValueError as exc:   # json.JSONDecodeError and tomllib.TOMLDecodeError both are
        raise ValueError(f"config file {p}: must be valid {kind} ({exc})") from exc
    return EmulatorConfig.from_dict(data)
