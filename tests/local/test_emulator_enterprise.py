"""The ARM emulator's Azure Managed Redis routes over real HTTP on loopback: the database
resource as `arm-enterprise-flush.json` shows it, the flush with the linked databases of its
geo-replication group, both polling URLs, signatures, behaviours and keys. Time moves with a
`FakeClock`: no test here sleeps."""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import requests

from redisflush.local.demo import throwaway_redis
from redisflush.local.emulator import ArmEmulator
from redisflush.local.emulator_clock import FakeClock
from redisflush.local.emulator_config import EmulatorConfig
from redisflush.local.keystore import RedisKeyStore

from .test_emulator import AUTH, SUB

OTHER_SUB = "00000000-0000-0000-0000-0000000000bb"
NEW, OLD, NEWEST = "2025-07-01", "2025-04-01", "2026-09-01"
PROVIDER = "Microsoft.Cache/redisEnterprise"
HOMES = {"shop-eu": "rg-eu", "shop-us": "rg-us", "far": "rg-far"}   # others: rg-emulator
VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"


def db_id(cluster: str, db: str = "default", rg: str | None = None, sub: str = SUB) -> str:
    rg = rg or HOMES.get(cluster, "rg-emulator")
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{PROVIDER}/{cluster}/databases/{db}"


ELSEWHERE = db_id("far")
# The database body of arm-enterprise-flush.json, placeholders filled in.
VECTOR_DATABASE = {
    "id": db_id("shop-eu"), "name": "default", "type": "Microsoft.Cache/redisEnterprise/databases",
    "properties": {"provisioningState": "Succeeded", "resourceState": "Running",
                   "clientProtocol": "Encrypted", "port": 10000,
                   "geoReplication": {"groupNickname": "shop", "linkedDatabases": [
                       {"id": db_id("shop-eu"), "state": "Linked"},
                       {"id": db_id("shop-us"), "state": "Linked"},
                       {"id": ELSEWHERE, "state": "Linked"}]}}}
FAILED = {"outcome": "Failed", "error": {"code": "FlushFailed", "message": "nope"}}
SOLO = {"default": {}, "now": {"immediate": True}, "retry": {"retryAfter": 5}, "failed": FAILED,
        "canceled": {"outcome": "Canceled", "failureStatus": 409}, "busy": {"busySeconds": 3},
        "thr": {"throttleFirst": 1, "postErrors": [503]},
        "gerr": {"pollErrors": [500], "invalidJsonPolls": 1, "percentComplete": True},
        "async": {"pollMode": "async"},
        "loc": {"pollMode": "location", "locationDoneNoContent": True},
        "none": {"pollMode": "none"}, "move": {"moveAfterPolls": 1},
        "foreign": {"foreignHost": "https://evil.example:8443"}}
CONFIG = {
    "enterpriseApiVersions": [OLD, NEW, NEWEST],
    "defaults": {"duration": 1},
    "clusters": {
        "shop-eu": {"resourceGroup": "rg-eu", "location": "West Europe", "tags": {"app": "shop"}},
        "shop-us": {"resourceGroup": "rg-us", "location": "West US 3"},
        "far": {"resourceGroup": "rg-far", "subscriptionId": SUB},
        "solo": {"databases": SOLO},
        "pair-a": {"databases": {"db1": {"immediate": True}}},
        "pair-b": {"databases": {"db1": {}}},
    },
    # short members render for the caller's subscription; a full id is used verbatim
    "geoGroups": {"shop": ["shop-eu/default", "shop-us/default", ELSEWHERE],
                  "pair": ["pair-a/db1", "pair-b/db1"]},
}


def db_url(arm: ArmEmulator, cluster: str, db: str = "default", *, rg: str | None = None,
           sub: str = SUB, tail: str = "", api: str | None = NEW) -> str:
    url = arm.url + db_id(cluster, db, rg, sub) + tail
    return url + (f"?api-version={api}" if api else "")


def flush(s: requests.Session, arm: ArmEmulator, cluster: str, db: str = "default", *,
          ids: list[str] | None = None, body: object = "ids", **kw: object) -> requests.Response:
    url = db_url(arm, cluster, db, tail="/flush", **kw)  # type: ignore[arg-type]
    if body == "ids":
        return s.post(url, json={"ids": ids or []}, headers=AUTH, timeout=5)
    return s.post(url, data=body, headers=AUTH, timeout=5)  # type: ignore[arg-type]


def keys(s: requests.Session, arm: ArmEmulator, name: str) -> int:
    return s.get(f"{arm.url}/_emulator/keys/{name}", timeout=5).json()["count"]


def seed(s: requests.Session, arm: ArmEmulator, name: str, n: int) -> None:
    r = s.put(f"{arm.url}/_emulator/keys/{name}", json={"count": n}, timeout=5)
    assert r.status_code == 200


def get(s: requests.Session, url: str) -> requests.Response:
    return s.get(url, headers=AUTH, timeout=5)


@pytest.fixture
def s() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if not shutil.which("redis-server"):
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (required when CI is set)")
        pytest.skip("redis-server is not installed")
    with throwaway_redis(timeout=10) as url:
        if url is None:
            pytest.fail("redis-server did not start")
        yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def arm(clock: FakeClock):
    with ArmEmulator(EmulatorConfig.from_dict(CONFIG), clock=clock).start() as a:
        yield a


def shape(value: object) -> object:
    """A JSON value's structure: keys and types, not the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


# ---- the database resource -------------------------------------------------------------------
def test_database_get_matches_vector(s, arm):
    r = get(s, db_url(arm, "shop-eu"))
    assert r.status_code == 200 and r.json() == VECTOR_DATABASE
    assert r.headers["x-ms-ratelimit-remaining-subscription-reads"] == "249"
    vector = VECTORS / "arm-enterprise-flush.json"
    if vector.exists():   # the shared vectors sit beside the clone: same keys, same types
        body = json.loads(vector.read_text())["database"]["response"]["body"]
        ours = r.json()
        del ours["properties"]["geoReplication"]["linkedDatabases"][2:]
        assert shape(ours) == shape(body)
    # provider segments and names are case-insensitive in the path; the id keeps its case
    url = db_url(arm, "SHOP-EU", "DEFAULT", rg="RG-EU")
    url = url.replace(PROVIDER, "microsoft.cache/REDISENTERPRISE")
    assert get(s, url).json()["id"] == VECTOR_DATABASE["id"]
    st = arm.stats()
    assert st["databaseGets"] == 2 and st["databases"]["shop-eu/default"]["gets"] == 2


def test_short_members_follow_the_subscription_full_ids_do_not(s, arm):
    body = get(s, db_url(arm, "shop-us", sub=OTHER_SUB)).json()
    linked = body["properties"]["geoReplication"]["linkedDatabases"]
    assert [d["id"] for d in linked] == [db_id("shop-eu", sub=OTHER_SUB),
                                         db_id("shop-us", sub=OTHER_SUB), ELSEWHERE]
    assert get(s, db_url(arm, "far", sub=OTHER_SUB)).status_code == 404   # pinned subscription


def test_database_outside_any_group_has_no_geo_replication(s, arm):
    body = get(s, db_url(arm, "solo")).json()
    assert body["id"] == db_id("solo") and "geoReplication" not in body["properties"]


@pytest.mark.parametrize("cluster,db,rg", [
    ("nosuch", "default", None), ("shop-eu", "nosuch", None), ("shop-eu", "default", "rg-us"),
    ("solo", "default", "rg-1")])
def test_unknown_database_404(s, arm, cluster, db, rg):
    for r in (get(s, db_url(arm, cluster, db, rg=rg)), flush(s, arm, cluster, db, rg=rg)):
        assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceNotFound"
    assert arm.stats()["databases"] == {}


def test_enterprise_api_versions(s, arm):
    r = get(s, db_url(arm, "shop-eu", api="2023-08-01"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidApiVersionParameter"
    assert "2025-04-01,2025-07-01,2026-09-01" in r.json()["error"]["message"]
    r = get(s, db_url(arm, "shop-eu", api=None))
    assert r.status_code == 400 and r.json()["error"]["code"] == "MissingApiVersionParameter"
    assert s.get(db_url(arm, "shop-eu"), headers={}).status_code == 401


# ---- the flush and its polls -----------------------------------------------------------------
SIGNED = r"\?api-version=2025-07-01&t=[^&]+&c=[^&]+&s=[^&]+&h=[^&]+"


def test_flush_with_ids_flushes_every_linked_database_once(s, arm, clock):
    names = ("shop-eu/default", "shop-us/default", "far/default", "solo/default")
    for name, n in zip(names, (10, 20, 30, 5), strict=True):
        seed(s, arm, name, n)
    r = flush(s, arm, "shop-eu", ids=[db_id("shop-us"), ELSEWHERE])
    assert r.status_code == 202 and r.json() == {"StatusCode": 202}
    assert "Retry-After" not in r.headers
    assert r.headers["x-ms-ratelimit-remaining-subscription-writes"] == "199"
    status, location = r.headers["Azure-AsyncOperation"], r.headers["Location"]
    op = urlsplit(status).path.rsplit("/", 1)[1]
    base = re.escape(f"{arm.url}/subscriptions/{SUB}")
    assert re.fullmatch(rf"{base}/providers/Microsoft\.Cache/locations/West%20Europe/"
                        rf"operationsStatus/{op}{SIGNED}", status)
    assert re.fullmatch(rf"{base}/resourceGroups/rg-eu/providers/Microsoft\.Cache/redisEnterprise/"
                        rf"shop-eu/databases/default/operationresults/{op}{SIGNED}", location)

    running = get(s, status)
    assert running.status_code == 200 and running.headers.get("Retry-After") is None
    assert running.json() == {
        "id": f"/subscriptions/{SUB}/providers/Microsoft.Cache/locations/westeurope/"
              f"operationsStatus/{op}",
        "name": op, "status": "InProgress", "startTime": "2026-01-01T00:00:00.000000Z"}
    r = get(s, location)
    assert r.status_code == 202 and r.content == b""
    assert keys(s, arm, "shop-eu/default") == 10 and keys(s, arm, "shop-us/default") == 20

    clock.advance(1)
    done = get(s, status)
    assert done.status_code == 200
    assert done.json() == {**running.json(), "status": "Succeeded",
                           "endTime": "2026-01-01T00:00:01.000000Z"}
    r = get(s, location)
    assert r.status_code == 200 and r.content == b""
    assert [keys(s, arm, n) for n in names] == [0, 0, 0, 5]
    seed(s, arm, "shop-us/default", 3)        # later polls must not flush again
    assert get(s, status).json()["status"] == "Succeeded"
    assert keys(s, arm, "shop-us/default") == 3
    st = arm.stats()
    dbs = st["databases"]
    assert {n: dbs[n]["flushes"] for n in names[:3]} == dict.fromkeys(names[:3], 1)
    eu = dbs["shop-eu/default"]
    assert (eu["posts"], eu["accepted"], eu["polls"]) == (1, 1, 5)
    assert "solo/default" not in dbs and st["caches"] == {}
    assert st["posts"] == 1 and st["polls"] == 5


def test_ids_may_repeat_and_name_the_database_itself(s, arm, clock):
    seed(s, arm, "shop-eu/default", 1)
    seed(s, arm, "shop-us/default", 1)
    ids = [db_id("shop-us"), db_id("shop-us"), db_id("shop-eu")]
    assert flush(s, arm, "shop-eu", ids=ids).status_code == 202
    clock.advance(1)
    st = arm.stats()["databases"]   # stats sweeps: keys go when the operation ends, polled or not
    assert st["shop-eu/default"]["flushes"] == 1 and st["shop-us/default"]["flushes"] == 1
    assert keys(s, arm, "shop-eu/default") == 0 and keys(s, arm, "shop-us/default") == 0


def test_empty_ids_flush_the_database_alone(s, arm, clock):
    seed(s, arm, "shop-eu/default", 4)
    seed(s, arm, "shop-us/default", 4)
    status = flush(s, arm, "shop-eu", ids=[]).headers["Azure-AsyncOperation"]
    clock.advance(1)
    assert get(s, status).json()["status"] == "Succeeded"
    assert keys(s, arm, "shop-eu/default") == 0 and keys(s, arm, "shop-us/default") == 4
    assert "shop-us/default" not in arm.stats()["databases"]


@pytest.mark.parametrize("ids", [
    [db_id("solo")],                                    # a database of no group
    [db_id("pair-a", "db1")],                           # a database of another group
    [db_id("shop-us").replace("shop-us", "SHOP-US")],   # ids are case-sensitive
    [db_id("shop-us").replace("Microsoft.Cache", "microsoft.cache")],
    [db_id("shop-us", sub=OTHER_SUB)],                  # the group as another subscription sees it
    ["shop-us/default"],
])
def test_ids_outside_the_group_400(s, arm, ids):
    r = flush(s, arm, "shop-eu", ids=ids)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "BadRequest" and r.json()["error"]["target"] == "ids"
    assert ids[0] in r.json()["error"]["message"]
    assert "shop-eu/default" not in arm.stats()["databases"]


def test_ids_on_a_database_outside_any_group_400(s, arm):
    assert flush(s, arm, "solo", ids=[db_id("shop-eu")]).status_code == 400
    assert flush(s, arm, "solo", ids=[]).status_code == 202


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"ids": "x"}', b'{"ids": [1]}'])
def test_invalid_body_400(s, arm, body):
    r = flush(s, arm, "shop-eu", body=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequestContent"


def test_body_required_up_to_2025_04_01(s, arm, clock):
    r = flush(s, arm, "shop-eu", body=None, api=OLD)
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequestContent"
    assert OLD in r.json()["error"]["message"]
    # ids are optional in the body
    assert flush(s, arm, "shop-eu", body=b"{}", api=OLD).status_code == 202
    seed(s, arm, "shop-eu/default", 2)
    seed(s, arm, "shop-us/default", 2)
    r = flush(s, arm, "shop-eu", body=None, api=NEW)      # the body is optional from 2025-07-01
    assert r.status_code == 202 and "api-version=2025-07-01" in r.headers["Location"]
    clock.advance(1)
    assert keys(s, arm, "shop-eu/default") == 0 and keys(s, arm, "shop-us/default") == 2


def test_signatures_verified(s, arm):
    r = flush(s, arm, "shop-eu")
    status, location = r.headers["Azure-AsyncOperation"], r.headers["Location"]
    op = urlsplit(status).path.rsplit("/", 1)[1]
    # each query signs its own path
    swapped_a = status.split("?")[0] + "?" + urlsplit(location).query
    swapped_b = location.split("?")[0] + "?" + urlsplit(status).query
    classic = status.replace("/operationsStatus/", "/operationresults/")
    classic = classic.replace(NEW, "2023-08-01")
    other_db = location.replace("/shop-eu/", "/shop-us/").replace("rg-eu", "rg-us")
    no_c = "&".join(p for p in location.split("&") if not p.startswith("c="))
    other_op = status.replace(op, op[:-1] + ("1" if op.endswith("0") else "0"))
    bad = [status[:-2] + "zz", location[:-2] + "zz", no_c, swapped_a, swapped_b, classic,
           other_db, other_op, status.replace("West%20Europe", "West%2520Europe")]
    for url in bad:
        got = get(s, url)
        assert got.status_code == 401 and got.json()["error"]["code"] == "InvalidSignature", url
    assert get(s, status).status_code == 200 and get(s, location).status_code == 202
    assert s.get(status).status_code == 401                        # and the token is still required
    # the provider segments are case-insensitive and not signed
    lowered = location.replace("Microsoft.Cache/redisEnterprise", "microsoft.cache/redisenterprise")
    assert get(s, lowered).status_code == 202


def test_retry_after_only_when_the_behaviour_sets_it(s, arm):
    r = flush(s, arm, "solo", "retry", api=NEWEST)
    assert r.headers["Retry-After"] == "5"
    assert get(s, r.headers["Azure-AsyncOperation"]).headers["Retry-After"] == "5"
    assert get(s, r.headers["Location"]).headers["Retry-After"] == "5"
    assert "Retry-After" not in flush(s, arm, "solo", api=NEWEST).headers


@pytest.mark.parametrize("db,http,error", [
    ("failed", 500, FAILED["error"]),
    ("canceled", 409, {"code": "OperationCanceled",
                       "message": "The flush operation was canceled."}),
])
def test_failed_and_canceled(s, arm, clock, db, http, error):
    seed(s, arm, f"solo/{db}", 3)
    r = flush(s, arm, "solo", db)
    clock.advance(1)
    body = get(s, r.headers["Azure-AsyncOperation"]).json()
    assert body["status"] == db.title() and ("error" in body) == (db == "failed")
    if db == "failed":  # an ErrorResponse, as the RedisEnterprise spec's OperationStatus has it
        assert body["error"] == {"error": error}
    got = get(s, r.headers["Location"])                # Location: the operation's error
    assert got.status_code == http and got.json() == {"error": error}
    assert keys(s, arm, f"solo/{db}") == 3
    assert arm.stats()["databases"][f"solo/{db}"]["flushes"] == 0


def test_immediate_flushes_linked_databases_at_once(s, arm):
    seed(s, arm, "pair-a/db1", 2)
    seed(s, arm, "pair-b/db1", 2)
    r = flush(s, arm, "pair-a", "db1", ids=[db_id("pair-b", "db1")])
    assert r.status_code == 200 and r.content == b"" and "Location" not in r.headers
    assert keys(s, arm, "pair-a/db1") == 0 and keys(s, arm, "pair-b/db1") == 0
    assert arm.stats()["databases"]["pair-b/db1"]["flushes"] == 1
    assert flush(s, arm, "solo", "now").status_code == 200


def test_post_behaviours(s, arm, clock):
    got = [flush(s, arm, "solo", "thr") for _ in range(3)]
    assert [r.status_code for r in got] == [429, 503, 202] and got[0].headers["Retry-After"] == "1"
    r = flush(s, arm, "solo", "busy")
    assert r.status_code == 409
    assert "/redisEnterprise/solo/databases/busy' is busy" in r.json()["error"]["message"]
    clock.advance(3)
    assert flush(s, arm, "solo", "busy").status_code == 202
    assert arm.stats()["databases"]["solo/thr"]["posts"] == 3


def test_poll_behaviours(s, arm, clock):
    status = flush(s, arm, "solo", "gerr").headers["Azure-AsyncOperation"]
    assert get(s, status).status_code == 500
    bad = get(s, status)
    assert bad.status_code == 200 and bad.content.startswith(b"<html>")
    clock.advance(0.5)
    assert get(s, status).json()["percentComplete"] == 50.0
    clock.advance(0.5)
    assert get(s, status).json()["percentComplete"] == 100.0


def test_poll_modes_move_and_foreign_host(s, arm, clock):
    r = flush(s, arm, "solo", "async")
    assert "Azure-AsyncOperation" in r.headers and "Location" not in r.headers
    r = flush(s, arm, "solo", "loc")
    assert "Location" in r.headers and "Azure-AsyncOperation" not in r.headers
    loc = r.headers["Location"]
    assert get(s, loc).headers["Location"] == loc
    r = flush(s, arm, "solo", "none")
    assert r.status_code == 202 and r.json() == {"StatusCode": 202}
    assert "Location" not in r.headers
    clock.advance(1)
    assert get(s, loc).status_code == 204

    r = flush(s, arm, "solo", "move")
    moved = get(s, r.headers["Location"])
    assert moved.status_code == 202 and moved.content == b""
    assert moved.headers["Location"] != r.headers["Location"]
    assert moved.headers["Azure-AsyncOperation"] != r.headers["Azure-AsyncOperation"]
    clock.advance(1)
    assert get(s, moved.headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded"
    assert get(s, r.headers["Location"]).status_code == 200        # the old URL stays valid

    r = flush(s, arm, "solo", "foreign")
    assert r.headers["Location"].startswith("https://evil.example:8443/subscriptions/")
    assert r.headers["Azure-AsyncOperation"].startswith("https://evil.example:8443/subscriptions/")


# ---- keys, persistence, Redis ----------------------------------------------------------------
def test_keys_admin_for_databases(s, arm):
    r = s.put(f"{arm.url}/_emulator/keys/shop-eu/default", json={"count": 7})
    assert r.json() == {"count": 7}
    assert keys(s, arm, quote("Shop-EU/Default", safe="")) == 7
    assert arm.keystore.count("shop-eu/default") == 7 and arm.keystore.count("shop-eu") == 0
    assert s.get(f"{arm.url}/_emulator/keys/shop-eu/default/extra").status_code == 404
    assert s.get(f"{arm.url}/_emulator/keys/{quote('a//b', safe='')}").status_code == 400


def test_enterprise_operation_survives_restart(s, tmp_path, clock):
    cfg, state = EmulatorConfig.from_dict(CONFIG), str(tmp_path / "arm.sqlite")
    first = ArmEmulator(cfg, state_path=state, clock=clock).start()
    store = first.keystore
    store.seed("shop-eu/default", 2)
    store.seed("shop-us/default", 2)
    r = flush(s, first, "shop-eu", ids=[db_id("shop-us")])
    status, port = r.headers["Azure-AsyncOperation"], urlsplit(first.url).port
    first.close()
    again = ArmEmulator(cfg, port=port, keystore=store, state_path=state, clock=clock)
    with again.start():
        clock.advance(1)
        assert get(s, status).json()["status"] == "Succeeded"
        assert get(s, r.headers["Location"]).status_code == 200
        assert store.count("shop-eu/default") == 0 and store.count("shop-us/default") == 0
        assert again.stats()["databases"]["shop-us/default"]["flushes"] == 1


def test_databases_in_redis(s, redis_url, clock):
    import redis
    store = RedisKeyStore(redis_url)
    clusters = {"pair-a": {"databases": {"db1": {}}},
                "pair-b": {"databases": {"db1": {"redisDb": 5}}}}
    cfg = {**CONFIG, "clusters": clusters, "geoGroups": {"pair": ["pair-a/db1", "pair-b/db1"]}}
    with ArmEmulator(EmulatorConfig.from_dict(cfg), keystore=store, clock=clock).start() as arm:
        seed(s, arm, "pair-a/db1", 30)
        seed(s, arm, "pair-b/db1", 40)
        raw = redis.Redis.from_url(redis_url)
        db5 = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/5")
        db5.set("other-key-in-dedicated-db", "1")
        assert raw.exists("redisflush:pair-a/db1:0") and keys(s, arm, "pair-a/db1") == 30
        assert keys(s, arm, "pair-b/db1") == 41 and raw.dbsize() == 30
        assert flush(s, arm, "pair-a", "db1", ids=[db_id("pair-b", "db1")]).status_code == 202
        clock.advance(1)
        assert keys(s, arm, "pair-a/db1") == 0 and keys(s, arm, "pair-b/db1") == 0
        assert db5.dbsize() == 0
        raw.close()
        db5.close()
    store.close()


# ---- config ----------------------------------------------------------------------------------
BAD_FULL_ID = f"/subscriptions/{SUB}/resourceGroups/rg-b/providers/{PROVIDER}/a/databases/default"


@pytest.mark.parametrize("bad,field", [
    ({"enterpriseApiVersions": []}, "enterpriseApiVersions"),
    ({"clusters": []}, "clusters"),
    ({"clusters": {"bad_name": {}}}, "clusters['bad_name']"),
    ({"clusters": {"a": {}, "A": {}}}, "clusters['A']"),
    ({"clusters": {"a": {"zone": 1}}}, "clusters['a'].zone"),
    ({"clusters": {"a": {"tags": {"app": 1}}}}, "clusters['a'].tags"),
    ({"clusters": {"a": {"resourceGroup": "rg."}}}, "clusters['a'].resourceGroup"),
    ({"clusters": {"a": {"subscriptionId": "sub"}}}, "clusters['a'].subscriptionId"),
    ({"clusters": {"a": {"databases": {}}}}, "clusters['a'].databases"),
    ({"clusters": {"a": {"databases": {"d": {"durration": 1}}}}},
     "clusters['a'].databases['d'].durration"),
    ({"clusters": {"a": {"databases": {"d": {"tags": {}}}}}}, "clusters['a'].databases['d'].tags"),
    ({"geoGroups": {"g": ["a/default"]}}, "geoGroups['g'][0]"),
    ({"clusters": {"a": {}}, "geoGroups": {"g": "a/default"}}, "geoGroups['g']"),
    ({"clusters": {"a": {}}, "geoGroups": {"g": ["a"]}}, "geoGroups['g'][0]"),
    ({"clusters": {"a": {}}, "geoGroups": {"g": ["a/default"], "h": ["a/default"]}},
     "geoGroups['h'][0]"),
    ({"clusters": {"a": {"resourceGroup": "rg-a"}}, "geoGroups": {"g": [BAD_FULL_ID]}},
     "geoGroups['g'][0]"),
    ({"caches": {"x": {"tags": ["app"]}}}, "caches['x'].tags"),
    ({"caches": {"x": {"subscriptionId": "nope"}}}, "caches['x'].subscriptionId"),
    ({"caches": {"x": {"failureStatus": 200}}}, "caches['x'].failureStatus"),
])
def test_config_validation(bad, field):
    with pytest.raises(ValueError) as err:
        EmulatorConfig.from_dict(bad)
    assert str(err.value).startswith(field + ":"), str(err.value)


def test_config_round_trip():
    cfg = EmulatorConfig.from_dict(CONFIG)
    assert EmulatorConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["clusters"]["shop-eu"] == {
        "resourceGroup": "rg-eu", "location": "West Europe", "tags": {"app": "shop"},
        "sku": "Balanced_B5", "databases": {"default": {}}}
    assert EmulatorConfig().enterprise_api_versions == ("2025-07-01",)
