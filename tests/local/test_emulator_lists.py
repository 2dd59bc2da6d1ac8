"""The ARM emulator's list APIs over real HTTP: paging by nextLink and $skiptoken, tags,
subscription vs resource group scope, the misbehaviours a selector must survive (a nextLink on
a foreign host, an item out of scope) and read throttling."""
from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from redisflush.local.emulator import ArmEmulator
from redisflush.local.emulator_clock import FakeClock
from redisflush.local.emulator_config import EmulatorConfig

from .test_emulator import AUTH, SUB

OTHER_SUB = "00000000-0000-0000-0000-0000000000bb"
API, EAPI = "2023-08-01", "2025-07-01"
SHOP = {"app": "shop"}
AMR = "Microsoft.Cache/redisEnterprise"


def amr(i: int) -> dict[str, object]:
    """Clusters amr-1..4 in rg-a, amr-5..7 in rg-b; the odd ones tagged app=shop."""
    return {"resourceGroup": "rg-a" if i < 5 else "rg-b", "tags": SHOP if i % 2 else {},
            "location": "West US 3"}


CONFIG = {
    "pageSize": 3,
    "defaultResourceGroup": "rg-home",
    "caches": {
        "web-1": {"tags": SHOP, "resourceGroup": "rg-a"},
        "web-2": {"tags": SHOP, "resourceGroup": "rg-a"},
        "web-3": {"tags": SHOP, "resourceGroup": "rg-a", "location": "North Europe"},
        "web-4": {"tags": {"app": "blog"}, "resourceGroup": "rg-b"},
        "web-5": {"resourceGroup": "rg-b"}, "web-6": {}, "web-7": {"tags": SHOP},
        "pinned": {"subscriptionId": OTHER_SUB, "resourceGroup": "rg-a"},
        "web-*": {"tags": {"glob": "never listed"}}, "*": {},
    },
    "clusters": {f"amr-{i}": amr(i) for i in range(1, 8)}
    | {"big": {"databases": {f"db{i}": {} for i in range(1, 8)}}},
    "geoGroups": {"g": ["amr-1/default", "amr-5/default"]},
}


def list_url(arm: ArmEmulator, what: str = "redis", *, sub: str = SUB, rg: str | None = None,
             api: str | None = None) -> str:
    scope = f"/subscriptions/{sub}" + (f"/resourceGroups/{rg}" if rg else "")
    api = api or (API if what == "redis" else EAPI)
    return f"{arm.url}{scope}/providers/Microsoft.Cache/{what}?api-version={api}"


def cluster_url(arm: ArmEmulator, rg: str, cluster: str, tail: str = "") -> str:
    return (f"{arm.url}/subscriptions/{SUB}/resourceGroups/{rg}/providers/{AMR}/{cluster}{tail}"
            f"?api-version={EAPI}")


def pages(s: requests.Session, url: str) -> list[dict]:
    """Every page, following nextLink."""
    out = []
    while url:
        r = s.get(url, headers=AUTH, timeout=5)
        assert r.status_code == 200, r.text
        out.append(r.json())
        url = r.json().get("nextLink")
    return out


def items(s: requests.Session, url: str) -> list[dict]:
    return [i for page in pages(s, url) for i in page["value"]]


def names(s: requests.Session, url: str) -> list[str]:
    return [i["name"] for i in items(s, url)]


def post(s: requests.Session, arm: ArmEmulator, sub: str, rg: str, cache: str) -> int:
    return s.post(f"{arm.url}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/"
                  f"redis/{cache}/flush?api-version={API}", headers=AUTH, timeout=5).status_code


@pytest.fixture
def s() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def arm():
    with ArmEmulator(EmulatorConfig.from_dict(CONFIG), clock=FakeClock()).start() as a:
        yield a


def test_caches_three_pages_with_tags(s, arm):
    got = pages(s, list_url(arm))
    assert [len(p["value"]) for p in got] == [3, 3, 1] and "nextLink" not in got[-1]
    for page in got[:-1]:
        link = urlsplit(page["nextLink"])
        assert f"{link.scheme}://{link.netloc}" == arm.url
        assert link.path == f"/subscriptions/{SUB}/providers/Microsoft.Cache/redis"
        assert parse_qs(link.query)["api-version"] == [API] and parse_qs(link.query)["$skiptoken"]
    listed = [i for p in got for i in p["value"]]
    assert [i["name"] for i in listed] == [f"web-{i}" for i in range(1, 8)]
    assert [i["id"] for i in listed] == sorted((i["id"] for i in listed), key=str.lower)
    first = listed[0]
    assert first["id"] == (f"/subscriptions/{SUB}/resourceGroups/rg-a/providers/"
                           "Microsoft.Cache/Redis/web-1")
    assert (first["type"], first["location"], first["tags"]) == ("Microsoft.Cache/Redis",
                                                                 "West US 2", SHOP)
    assert first["properties"]["provisioningState"] == "Succeeded"
    assert set(first) == {"id", "name", "type", "location", "tags", "properties"}
    assert listed[2]["location"] == "North Europe" and listed[4]["tags"] == {}
    home = f"/subscriptions/{SUB}/resourceGroups/rg-home/"
    assert listed[5]["id"].startswith(home)                   # no group pinned
    # the glob made no cache appear, but still makes every name flush-able
    assert post(s, arm, SUB, "rg-x", "anything") == 202
    assert arm.stats()["lists"] == 3


def test_resource_group_vs_subscription_scope(s, arm):
    assert names(s, list_url(arm, rg="rg-a")) == ["web-1", "web-2", "web-3"]
    assert names(s, list_url(arm, rg="RG-B")) == ["web-4", "web-5"]
    assert names(s, list_url(arm, rg="rg-home")) == ["web-6", "web-7"]
    assert items(s, list_url(arm, rg="rg-none")) == []
    # caches that pin no subscription are in every one
    in_other = names(s, list_url(arm, sub=OTHER_SUB, rg="rg-a"))
    assert in_other == ["pinned", "web-1", "web-2", "web-3"]
    assert "pinned" not in names(s, list_url(arm))
    # a pinned cache exists only where it is pinned, for the flush too
    assert post(s, arm, SUB, "rg-a", "pinned") == 404
    assert post(s, arm, OTHER_SUB, "rg-a", "pinned") == 202
    assert post(s, arm, OTHER_SUB, "rg-b", "pinned") == 404


def test_clusters_and_databases(s, arm):
    got = pages(s, list_url(arm, "redisEnterprise"))
    assert [len(p["value"]) for p in got] == [3, 3, 2]
    listed = [i for p in got for i in p["value"]]
    assert [i["name"] for i in listed] == [f"amr-{i}" for i in range(1, 8)] + ["big"]
    assert listed[0] == {
        "id": f"/subscriptions/{SUB}/resourceGroups/rg-a/providers/{AMR}/amr-1",
        "name": "amr-1", "type": AMR, "location": "West US 3", "tags": SHOP,
        "sku": {"name": "Balanced_B5"}, "properties": {"provisioningState": "Succeeded"}}
    assert names(s, list_url(arm, "redisEnterprise", rg="rg-b")) == ["amr-5", "amr-6", "amr-7"]

    # big pins no group: it lives in defaultResourceGroup only
    elsewhere = cluster_url(arm, "rg-emulator", "big", "/databases")
    assert s.get(elsewhere, headers=AUTH).status_code == 404
    got = pages(s, cluster_url(arm, "rg-home", "big", "/databases"))
    assert [len(p["value"]) for p in got] == [3, 3, 1]
    dbs = [i for p in got for i in p["value"]]
    assert [d["name"] for d in dbs] == [f"db{i}" for i in range(1, 8)]
    db1 = s.get(cluster_url(arm, "rg-home", "big", "/databases/db1"), headers=AUTH)
    assert dbs[0] == db1.json()
    one = items(s, cluster_url(arm, "rg-a", "amr-1", "/databases"))
    assert [d["properties"]["geoReplication"]["groupNickname"] for d in one] == ["g"]
    st = arm.stats()
    assert st["lists"] == 3 + 1 + 1 + 3 + 1 and st["databaseGets"] == 1


def test_api_versions_per_provider(s, arm):
    r = s.get(list_url(arm, "redisEnterprise", api=API), headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidApiVersionParameter"
    assert s.get(list_url(arm, "redis", api=EAPI), headers=AUTH).status_code == 400
    assert s.get(list_url(arm), headers={}).status_code == 401
    assert s.post(list_url(arm), headers=AUTH).status_code == 405


def test_invalid_skiptoken_400(s, arm):
    link = s.get(list_url(arm), headers=AUTH).json()["nextLink"]
    token = parse_qs(urlsplit(link).query)["$skiptoken"][0]
    offset, sig = token.split(".")
    bad = [link.replace(token, f"{int(offset) + 1}.{sig}"), link.replace(token, "garbage"),
           link.replace(token, sig), link.replace(token, f"{offset}."),
           # the token of another listing
           link.replace("/providers/", "/resourceGroups/rg-a/providers/"),
           link.replace(f"/subscriptions/{SUB}", f"/subscriptions/{OTHER_SUB}"),
           link.replace("Microsoft.Cache/redis", AMR).replace(API, EAPI)]
    for url in bad:
        r = s.get(url, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidSkipToken", url
    assert s.get(link, headers=AUTH).status_code == 200
    lowered = link.replace("Microsoft.Cache", "microsoft.cache")
    assert s.get(lowered, headers=AUTH).status_code == 200


def test_foreign_next_link(s):
    cfg = {**CONFIG, "nextLinkHost": "https://evil.example:8443"}
    with ArmEmulator(EmulatorConfig.from_dict(cfg)).start() as arm:
        for what in ("redis", "redisEnterprise"):
            link = s.get(list_url(arm, what), headers=AUTH).json()["nextLink"]
            assert link.startswith(f"https://evil.example:8443/subscriptions/{SUB}/providers/"
                                   f"Microsoft.Cache/{what}?")
            # the rest of the link is genuine: only the host is foreign
            page = s.get(link.replace("https://evil.example:8443", arm.url), headers=AUTH)
            assert page.status_code == 200 and page.json()["value"]


def test_out_of_scope_item(s):
    with ArmEmulator(EmulatorConfig.from_dict({**CONFIG, "outOfScopeItems": True})).start() as arm:
        listed = items(s, list_url(arm))
        strays = [i for i in listed if not i["id"].startswith(f"/subscriptions/{SUB}/")]
        assert len(listed) == 8 and len(strays) == 1
        assert strays[0]["name"] == "out-of-scope"
        assert strays[0]["tags"] == SHOP                       # those of the first real item
        listed = items(s, list_url(arm, "redisEnterprise", rg="rg-a"))
        strays = [i for i in listed if "/resourceGroups/rg-a/" not in i["id"]]
        assert len(listed) == 5 and len(strays) == 1
        assert strays[0]["id"].startswith(f"/subscriptions/{SUB}/")
        dbs = items(s, cluster_url(arm, "rg-home", "big", "/databases"))
        strays = [d for d in dbs if "/resourceGroups/rg-home/" not in d["id"]]
        assert len(dbs) == 8 and len(strays) == 1
        assert strays[0]["type"] == "Microsoft.Cache/redisEnterprise/databases"


def test_list_reads_are_throttled(s):
    clock = FakeClock()
    cfg = {**CONFIG, "throttling": {"reads": {"burst": 3, "perSecond": 2},
                                    "writes": {"burst": 5, "perSecond": 1}}}
    with ArmEmulator(EmulatorConfig.from_dict(cfg), clock=clock).start() as arm:
        got = [s.get(list_url(arm, what), headers=AUTH)
               for what in ("redis", "redisEnterprise", "redis")]
        remaining = [r.headers["x-ms-ratelimit-remaining-subscription-reads"] for r in got]
        assert remaining == ["2", "1", "0"]
        r = s.get(got[0].json()["nextLink"], headers=AUTH)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.headers["x-ms-ratelimit-remaining-subscription-reads"] == "0"
        db = cluster_url(arm, "rg-home", "big", "/databases/db1")
        assert s.get(db, headers=AUTH).status_code == 429                  # every GET reads
        flush = db.replace("/db1?", "/db1/flush?")
        assert s.post(flush, headers=AUTH).status_code == 202              # writes apart
        assert s.get(list_url(arm, sub=OTHER_SUB), headers=AUTH).status_code == 200  # per sub
        clock.advance(0.5)   # a token is back, but the 429's Retry-After (1 s) holds
        assert s.get(got[0].json()["nextLink"], headers=AUTH).status_code == 429
        clock.advance(0.5)
        assert s.get(got[0].json()["nextLink"], headers=AUTH).status_code == 200
        st = arm.stats()
        assert st["throttled"] == 3 and st["throttledEarly"] == 2
        assert st["lists"] == 7 and st["databaseGets"] == 1
