"""ARM's list APIs as the emulator plays them, what selectors resolve through (docs/design.md,
"What ARM really does", Listing):

- `GET /subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.Cache/redis`
- `GET /subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.Cache/redisEnterprise`
- `GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/redisEnterprise/
  {cluster}/databases`

Each answers `{"value": [...], "nextLink"?: URL}`, items sorted by id (case-insensitively),
`pageSize` a page. Caches and clusters come as `{id, name, type, location, tags, properties}`
(clusters with their `sku`, as in `arm-enterprise-flush.json`); databases as
`GET .../databases/{db}` shows them, without location or tags, as in Azure, where a database
is a proxy resource. Classic caches are listed only when named explicitly in `caches` (a glob
names no cache), and caches and clusters that pin no resource group are listed in
`defaultResourceGroup`.

The nextLink carries `$skiptoken={offset}.{HMAC}`, bound to the listing it came from; any
other skiptoken is 400 InvalidSkipToken. Two config options make a listing misbehave on
purpose: `nextLinkHost` points every nextLink at another host, and `outOfScopeItems` adds one
item (tags copied from the first real one) whose id is in another subscription (a
subscription-wide list) or another resource group (a resource group's list).
"""
from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from .emulator_clusters import PROVIDER, Cluster, cluster_id, database_id
from .emulator_config import EmulatorConfig
from .emulator_enterprise import database_resource
from .emulator_http import Reply, error_reply
from .emulator_operations import OperationBook
from .emulator_replies import ArmRequest, not_found

_OTHER_SUBS = ("ffffffff-ffff-ffff-ffff-ffffffffffff", "eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee")
_OTHER_RGS = ("rg-out-of-scope", "rg-out-of-scope-2")
OUT_OF_SCOPE_NAME = "out-of-scope"
# (subscription, resource group, tags) -> an item of the listing outside its scope
Intruder = Callable[[str, str, dict[str, str]], dict[str, Any]]


def _other(mine: str, options: tuple[str, str]) -> str:
    return options[1] if mine.lower() == options[0] else options[0]


def _classic_item(sub: str, rg: str, name: str, location: str,
                  tags: dict[str, str]) -> dict[str, Any]:
    return {"id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/Redis/"
                  + name,
            "name": name, "type": "Microsoft.Cache/Redis", "location": location, "tags": tags,
            "properties": {"provisioningState": "Succeeded",
                           "hostName": f"{name}.redis.cache.windows.net", "port": 6379,
                           "sslPort": 6380, "enableNonSslPort": False, "redisVersion": "6.0",
                           "sku": {"name": "Premium", "family": "P", "capacity": 1}}}


def _cluster_item(sub: str, rg: str, name: str, location: str, tags: dict[str, str],
                  sku: str) -> dict[str, Any]:
    return {"id": cluster_id(sub, rg, name), "name": name, "type": PROVIDER, "location": location,
            "tags": tags, "sku": {"name": sku}, "properties": {"provisioningState": "Succeeded"}}


def _database_intruder(cfg: EmulatorConfig, sub: str, cluster: Cluster) -> Intruder:
    def intruder(s: str, g: str, tags: dict[str, str]) -> dict[str, Any]:
        first = database_resource(cfg, sub, cluster, next(iter(cluster.databases)))
        return {**first, "id": database_id(s, g, cluster.name, OUT_OF_SCOPE_NAME),
                "name": OUT_OF_SCOPE_NAME}
    return intruder


class ListRoutes:
    """The three list routes; the front door has run (`emulator_arm`)."""

    def __init__(self, book: OperationBook) -> None:
        self._book = book

    def caches(self, req: ArmRequest) -> Reply:
        cfg, sub, rg = req.cfg, req.seg(0), req.seg(1) if req.groups[1] else None
        items = []
        for name, beh in cfg.listed_caches():
            home = beh.resource_group or cfg.default_resource_group
            if beh.placed_in(sub) and (rg is None or home.lower() == rg.lower()):
                items.append(_classic_item(beh.subscription_id or sub, home, name,
                                           beh.location or cfg.location, dict(beh.tags or {})))
        return self._page(req, "redis", items, lambda s, g, tags: _classic_item(
            s, g, OUT_OF_SCOPE_NAME, cfg.location, tags))

    def clusters(self, req: ArmRequest) -> Reply:
        cfg, sub, rg = req.cfg, req.seg(0), req.seg(1) if req.groups[1] else None
        items = []
        for c in cfg.clusters.values():
            home = cfg.cluster_rg(c)
            if c.in_subscription(sub) and (rg is None or home.lower() == rg.lower()):
                items.append(_cluster_item(c.subscription_id or sub, home, c.name,
                                           c.location or cfg.location, dict(c.tags), c.sku))
        return self._page(req, "redisEnterprise", items, lambda s, g, tags: _cluster_item(
            s, g, OUT_OF_SCOPE_NAME, cfg.location, tags, "Balanced_B5"))

    def databases(self, req: ArmRequest) -> Reply:
        sub, rg, name = req.seg(0), req.seg(1), req.seg(2)
        c = req.cfg.cluster_at(sub, rg, name)
        if c is None:
            return not_found("Microsoft.Cache/redisEnterprise", name, rg)
        items = [database_resource(req.cfg, sub, c, db) for db in c.databases]
        return self._page(req, f"redisEnterprise/{c.name}/databases", items,
                          _database_intruder(req.cfg, sub, c))

    # ---- paging ----------------------------------------------------------------------------
    def _page(self, req: ArmRequest, what: str, items: list[dict[str, Any]],
              intruder: Intruder) -> Reply:
        """One page of `items` (sorted by id) for the listing the request names."""
        sub, rg = req.seg(0), req.seg(1) if len(req.groups) > 1 and req.groups[1] else None
        items.sort(key=lambda i: i["id"].lower())
        if req.cfg.out_of_scope_items:
            tags = dict(items[0].get("tags") or {}) if items else {}
            stray = (intruder(_other(sub, _OTHER_SUBS), req.cfg.default_resource_group, tags)
                     if rg is None else intruder(sub, _other(rg, _OTHER_RGS), tags))
            items = sorted([*items, stray], key=lambda i: i["id"].lower())
        scope = f"{sub}/{rg or ''}/{what}".lower()
        token = req.params.get("$skiptoken")
        offset = self._offset(token[0], scope) if token is not None else 0
        if offset < 0:
            return error_reply(400, "InvalidSkipToken",
                               "The $skiptoken is invalid: use the nextLink exactly as given.")
        size = req.cfg.page_size
        body: dict[str, Any] = {"value": items[offset:offset + size]}
        if offset + size < len(items):
            path = f"/subscriptions/{quote(sub, safe='')}"
            path += f"/resourceGroups/{quote(rg, safe='')}" if rg else ""
            path += "/providers/Microsoft.Cache/"
            path += "/".join(quote(p, safe="") for p in what.split("/"))
            nxt = offset + size
            token_text = f"{nxt}.{self._book.sign(f'{scope}|{nxt}')}"
            body["nextLink"] = (f"{req.cfg.next_link_host or req.base}{path}"
                                f"?api-version={quote(req.api, safe='')}&$skiptoken={token_text}")
        return Reply(200, body)

    def _offset(self, token: str, scope: str) -> int:
        """The offset a skiptoken carries, or -1 when it is not one this listing handed out."""
        offset, _, sig = token.partition(".")
        if not (offset.isascii() and offset.isdigit()) or len(offset) > 9:
            return -1
        expected = self._book.sign(f"{scope}|{int(offset)}")
        return int(offset) if hmac.compare_digest(sig.encode(), expected.encode()) else -1
