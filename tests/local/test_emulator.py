"""The ARM emulator over real HTTP on loopback: recorded shape, behaviours, checks, throttling,
persistence, Redis-backed keys, and the real Azure SDK against it.

Time moves with a `FakeClock` wherever waiting is not the point; the concurrency, latency, SDK
and sweep-thread tests keep real time."""
from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shutil
import socket
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from redisflush.errors import ConfigurationError
from redisflush.local.demo import throwaway_redis
from redisflush.local.emulator import ArmEmulator
from redisflush.local.emulator_clock import FakeClock
from redisflush.local.emulator_config import EmulatorConfig, load_config
from redisflush.local.keystore import MemoryKeyStore, RedisKeyStore, make_keystore
from tests.support.silent_peer import silent_listener

TOKEN = "local-emulator-token"
SUB = "00000000-0000-0000-0000-0000000000aa"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API = "2023-08-01"


def flush_url(arm: ArmEmulator, cache: str, *, sub: str = SUB, api: str | None = API,
              provider: str = "Microsoft.Cache/Redis") -> str:
    url = f"{arm.url}/subscriptions/{sub}/resourceGroups/rg-1/providers/{provider}/{cache}/flush"
    return url + (f"?api-version={api}" if api else "")


def post(s: requests.Session, arm: ArmEmulator, cache: str, **kw) -> requests.Response:
    headers = kw.pop("headers", AUTH)
    return s.post(flush_url(arm, cache, **kw), headers=headers, timeout=5)


def follow(s: requests.Session, url: str, limit: float = 5.0,
           clock: FakeClock | None = None) -> requests.Response:
    """Poll until the answer is not 202, moving `clock` (or real time) 0.05 s between polls."""
    for _ in range(int(limit / 0.05) + 1):
        r = s.get(url, headers=AUTH, timeout=5)
        if r.status_code != 202:
            return r
        clock.advance(0.05) if clock else time.sleep(0.05)
    return r


def keys(s: requests.Session, arm: ArmEmulator, cache: str) -> int:
    return s.get(f"{arm.url}/_emulator/keys/{cache}", timeout=5).json()["count"]


def seed(s: requests.Session, arm: ArmEmulator, cache: str, n: int) -> None:
    r = s.put(f"{arm.url}/_emulator/keys/{cache}", json={"count": n}, timeout=5)
    assert r.status_code == 200


@pytest.fixture
def s():
    with requests.Session() as session:
        yield session


def emulator(config: dict | None = None, **kw) -> ArmEmulator:
    return ArmEmulator(EmulatorConfig.from_dict(config) if config is not None else None, **kw)


BEHAVIOURS = {
    "defaults": {"duration": 0.2},
    "caches": {
        "failed": {"outcome": "Failed", "error": {"code": "FlushFailed", "message": "nope"}},
        "canceled": {"outcome": "Canceled"},
        "retry": {"retryAfter": 3},
        "async": {"pollMode": "async"},
        "loc": {"pollMode": "location"},
        "loc204": {"pollMode": "location", "locationDoneNoContent": True},
        "nohdr": {"pollMode": "none"},
        "now": {"immediate": True},
        "now-empty": {"immediate": True, "immediateEmptyBody": True},
        "pct": {"percentComplete": True, "duration": 0.5},
        "busy": {"busySeconds": 0.3},
        "thr": {"throttleFirst": 2, "throttleRetryAfter": 7},
        "perr": {"postErrors": [500, 503]},
        "gerr": {"pollErrors": [500, 409]},
        "badjson": {"invalidJsonPolls": 1, "statuslessPolls": 1},
        "slow": {"latency": 0.3},
        "move": {"moveAfterPolls": 2, "duration": 0.4},
        "foreign": {"foreignHost": "https://evil.example:8443"},
        "Known-*": {},
    },
}


@pytest.fixture(scope="module")
def arm():
    with emulator(BEHAVIOURS, clock=FakeClock()).start() as a:
        yield a


# ---- the recorded shape ----------------------------------------------------------------------
def test_recorded_shape_end_to_end(s):
    clock = FakeClock()
    with emulator({"defaults": {"duration": 0.3}}, clock=clock).start() as arm:
        seed(s, arm, "cache-1", 25)
        r = post(s, arm, "cache-1", headers={**AUTH, "x-ms-client-request-id": "cli-1"})
        assert r.status_code == 202 and r.content == b""
        assert "Retry-After" not in r.headers
        url = r.headers["Azure-AsyncOperation"]
        assert r.headers["Location"] == url
        assert r.headers["x-ms-request-id"] and r.headers["x-ms-correlation-request-id"]
        assert r.headers["x-ms-client-request-id"] == "cli-1"
        assert r.headers["x-ms-ratelimit-remaining-subscription-writes"] == "199"
        parts = urlsplit(url)
        assert url.startswith(f"{arm.url}/subscriptions/{SUB}/providers/Microsoft.Cache/"
                              "locations/West%20US%202/operationresults/")
        q = parse_qs(parts.query)
        assert q["api-version"] == [API] and all(q.get(k) for k in "tcsh")
        assert 550 <= len(parts.query) - len("api-version=2023-08-01&") <= 650
        op = parts.path.rsplit("/", 1)[1]

        r = s.get(url, headers=AUTH)
        assert r.status_code == 202
        assert r.headers["Azure-AsyncOperation"] == url and r.headers["Location"] == url
        assert r.headers["x-ms-ratelimit-remaining-subscription-reads"] == "249"
        body = r.json()
        assert body["status"] == "InProgress" and body["name"] == op
        assert body["id"] == (f"/subscriptions/{SUB}/providers/Microsoft.Cache/locations/"
                              f"West US 2/operationresults/{op}")
        assert "startTime" in body and "percentComplete" not in body
        assert keys(s, arm, "cache-1") == 25

        clock.advance(0.25)
        assert s.get(url, headers=AUTH).status_code == 202 and keys(s, arm, "cache-1") == 25
        clock.advance(0.051)   # a little past the end: seconds since 1970 are floats
        r = s.get(url, headers=AUTH)
        assert r.status_code == 200
        assert "Azure-AsyncOperation" not in r.headers and "Location" not in r.headers
        body = r.json()
        assert body["status"] == "Succeeded" and body["name"] == op
        assert body["endTime"] >= body["startTime"]
        assert keys(s, arm, "cache-1") == 0
        seed(s, arm, "cache-1", 3)   # later polls must not flush again
        assert s.get(url, headers=AUTH).json()["status"] == "Succeeded"
        assert keys(s, arm, "cache-1") == 3
        st = arm.stats()
        c = st["caches"]["cache-1"]
        assert (c["posts"], c["accepted"], c["flushes"], c["polls"]) == (1, 1, 1, 4)
        assert st["polls"] == 4
        assert st["posts"] == 1 and st["throttled"] == 0
        assert s.get(f"{arm.url}/_emulator/stats").json()["caches"]["cache-1"]["flushes"] == 1


def test_flush_happens_without_polls(s):
    clock = FakeClock()
    with emulator({"defaults": {"duration": 0.2}}, clock=clock).start() as arm:
        seed(s, arm, "c", 5)
        assert post(s, arm, "c").status_code == 202
        time.sleep(0.2)
        assert arm.keystore.count("c") == 5     # not before its time, though the sweeper ran
        clock.advance(0.2)
        end = time.monotonic() + 5      # the sweeper thread, not a poll or stats, flushes it
        while arm.keystore.count("c") and time.monotonic() < end:
            time.sleep(0.01)
        assert arm.keystore.count("c") == 0 and arm.stats()["caches"]["c"]["flushes"] == 1


def test_provider_segments_case_insensitive(s, arm):
    assert post(s, arm, "retry", provider="microsoft.cache/REDIS").status_code == 202


# ---- front-door checks -----------------------------------------------------------------------
def test_token_checks(s, arm):
    r = post(s, arm, "retry", headers={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "AuthenticationFailed"
    r = post(s, arm, "retry", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    url = post(s, arm, "retry").headers["Location"]
    assert s.get(url).json()["error"]["code"] == "AuthenticationFailed"
    assert s.get(url, headers={"Authorization": "Bearer x"}).status_code == 401


def test_api_version_checks(s, arm):
    r = post(s, arm, "retry", api=None)
    assert r.status_code == 400 and r.json()["error"]["code"] == "MissingApiVersionParameter"
    r = post(s, arm, "retry", api="2099-01-01")
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidApiVersionParameter"
    assert "2023-08-01" in r.json()["error"]["message"]


def test_unknown_cache_404_and_glob(s, arm):
    r = post(s, arm, "nosuch")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "ResourceNotFound", "message": (
        "The Resource 'Microsoft.Cache/Redis/nosuch' under resource group 'rg-1' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix")}}
    assert post(s, arm, "KNOWN-1").status_code == 202


def test_signed_url_must_be_used_verbatim(s, arm):
    url = post(s, arm, "retry").headers["Location"]
    assert s.get(url, headers=AUTH).status_code == 202
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    reencoded = url.replace("West%20US%202", "West%2520US%25202")
    dropped = "&".join(p for p in url.split("&") if not p.startswith("s="))
    other_op = url.replace("/operationresults/", "/operationresults/0")
    for bad in (tampered, reencoded, dropped, other_op):
        r = s.get(bad, headers=AUTH)
        assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidSignature", bad


def test_unknown_operation_404(s, arm):
    op = "11111111-2222-3333-4444-555555555555"
    h = arm._book.mac(op, "West%20US%202", API, "t1", "c1", "s1")
    url = (f"{arm.url}/subscriptions/{SUB}/providers/Microsoft.Cache/locations/West%20US%202/"
           "operationresults/"
           f"{op}?api-version={API}&t=t1&c=c1&s=s1&h={h}")
    assert s.get(url, headers=AUTH).status_code == 404


# ---- behaviours ------------------------------------------------------------------------------
@pytest.mark.parametrize("cache,status", [("failed", "Failed"), ("canceled", "Canceled")])
def test_failed_and_canceled_do_not_flush(s, arm, cache, status):
    seed(s, arm, cache, 4)
    body = follow(s, post(s, arm, cache).headers["Location"], clock=arm.clock).json()
    assert body["status"] == status
    assert ("error" in body) == (status == "Failed")
    if status == "Failed":
        assert body["error"] == {"code": "FlushFailed", "message": "nope"}
    assert keys(s, arm, cache) == 4 and arm.stats()["caches"][cache]["flushes"] == 0


def test_retry_after(s, arm):
    r = post(s, arm, "retry")
    assert r.headers["Retry-After"] == "3"
    assert s.get(r.headers["Location"], headers=AUTH).headers["Retry-After"] == "3"


def test_poll_modes(s, arm):
    r = post(s, arm, "async")
    assert "Azure-AsyncOperation" in r.headers and "Location" not in r.headers
    p = s.get(r.headers["Azure-AsyncOperation"], headers=AUTH)
    assert p.status_code == 202 and "Location" not in p.headers
    assert p.json()["status"] == "InProgress"
    done = follow(s, r.headers["Azure-AsyncOperation"], clock=arm.clock)
    assert done.json()["status"] == "Succeeded"

    r = post(s, arm, "loc")
    assert "Location" in r.headers and "Azure-AsyncOperation" not in r.headers
    p = s.get(r.headers["Location"], headers=AUTH)
    assert p.status_code == 202 and p.content == b""
    assert p.headers["Location"] == r.headers["Location"]
    done = follow(s, r.headers["Location"], clock=arm.clock)
    assert done.status_code == 200 and done.json()["status"] == "Succeeded"

    done = follow(s, post(s, arm, "loc204").headers["Location"], clock=arm.clock)
    assert done.status_code == 204 and done.content == b""

    r = post(s, arm, "nohdr")
    assert r.status_code == 202
    assert "Location" not in r.headers and "Azure-AsyncOperation" not in r.headers


def test_immediate(s, arm):
    seed(s, arm, "now", 9)
    r = post(s, arm, "now")
    assert r.status_code == 200 and r.json() == {"status": "Succeeded"} and keys(s, arm, "now") == 0
    r = post(s, arm, "now-empty")
    assert r.status_code == 200 and r.content == b""
    assert arm.stats()["caches"]["now"]["flushes"] == 1


def test_percent_complete_rises(s, arm):
    url = post(s, arm, "pct").headers["Location"]
    first = s.get(url, headers=AUTH).json()["percentComplete"]
    arm.clock.advance(0.15)
    second = s.get(url, headers=AUTH).json()["percentComplete"]
    assert first == 0 and second == 30.0
    arm.clock.advance(0.349)
    assert s.get(url, headers=AUTH).json()["percentComplete"] == 99.0   # never 100 while running
    assert follow(s, url, clock=arm.clock).json()["percentComplete"] == 100


def test_busy_conflict_then_accepts(s, arm):
    r = post(s, arm, "busy")
    assert r.status_code == 409 and r.json()["error"]["code"] == "Conflict"
    assert r.json()["error"]["message"].endswith("Please try again later.")
    message = r.json()["error"]["message"]
    assert "/Redis/busy' is busy processing a previous update request" in message
    arm.clock.advance(0.29)
    assert post(s, arm, "busy").status_code == 409
    arm.clock.advance(0.011)
    assert post(s, arm, "busy").status_code == 202


def test_throttle_first_and_post_errors(s, arm):
    before = arm.stats()["throttled"]
    for _ in range(2):
        r = post(s, arm, "thr")
        assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        assert r.json()["error"]["code"] == "TooManyRequests"
    assert post(s, arm, "thr").status_code == 202
    assert arm.stats()["throttled"] == before + 2
    got = [post(s, arm, "perr") for _ in range(3)]
    assert [r.status_code for r in got] == [500, 503, 202]
    codes = [r.json()["error"]["code"] for r in got[:2]]
    assert codes == ["InternalServerError", "ServiceUnavailable"]


def test_poll_errors_invalid_json_statusless(s, arm):
    url = post(s, arm, "gerr").headers["Location"]
    got = [s.get(url, headers=AUTH) for _ in range(2)]
    assert [r.status_code for r in got] == [500, 409]
    assert got[1].json()["error"]["code"] == "Conflict"
    assert follow(s, url, clock=arm.clock).json()["status"] == "Succeeded"

    url = post(s, arm, "badjson").headers["Location"]
    r = s.get(url, headers=AUTH)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        json.loads(r.text)
    r = s.get(url, headers=AUTH)
    assert r.status_code == 200 and r.json() == {}
    assert follow(s, url, clock=arm.clock).json()["status"] == "Succeeded"


def test_latency(s, arm):
    t0 = time.monotonic()
    r = post(s, arm, "slow")
    assert r.status_code == 202 and time.monotonic() - t0 >= 0.3
    with pytest.raises(requests.ReadTimeout):
        s.get(r.headers["Location"], headers=AUTH, timeout=0.1)


def test_move_after_polls(s, arm):
    seed(s, arm, "move", 2)
    url = post(s, arm, "move").headers["Location"]
    assert s.get(url, headers=AUTH).status_code == 202
    moved = s.get(url, headers=AUTH)
    assert moved.status_code == 202
    new = moved.headers["Location"]
    assert new == moved.headers["Azure-AsyncOperation"] and new != url
    assert urlsplit(new).path != urlsplit(url).path
    done = follow(s, new, clock=arm.clock).json()
    assert done["status"] == "Succeeded" and keys(s, arm, "move") == 0
    assert s.get(url, headers=AUTH).json()["status"] == "Succeeded"   # the old URL stays valid
    assert arm.stats()["caches"]["move"]["flushes"] == 1


def test_foreign_host(s, arm):
    r = post(s, arm, "foreign")
    assert r.headers["Location"].startswith("https://evil.example:8443/subscriptions/")
    assert r.headers["Azure-AsyncOperation"] == r.headers["Location"]


# ---- throttling ------------------------------------------------------------------------------
def test_throttling_buckets(s):
    cfg = {"defaults": {"duration": 0.1},
           "throttling": {"writes": {"burst": 3, "perSecond": 4},
                          "reads": {"burst": 2, "perSecond": 4}}}
    clock = FakeClock()
    with emulator(cfg, clock=clock).start() as arm:
        got = [post(s, arm, "c") for _ in range(3)]
        remaining = [r.headers["x-ms-ratelimit-remaining-subscription-writes"] for r in got]
        assert remaining == ["2", "1", "0"]
        r = post(s, arm, "c")
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "TooManyRequests"
        assert r.headers["x-ms-ratelimit-remaining-subscription-writes"] == "0"
        other_sub = "00000000-0000-0000-0000-0000000000bb"
        assert post(s, arm, "c", sub=other_sub).status_code == 202   # per subscription
        url = got[0].headers["Location"]
        reads = [s.get(url, headers=AUTH) for _ in range(3)]   # reads have their own bucket
        assert reads[0].status_code in (200, 202) and reads[1].status_code in (200, 202)
        assert reads[2].status_code == 429
        assert reads[0].headers["x-ms-ratelimit-remaining-subscription-reads"] == "1"
        assert arm.stats()["throttled"] == 2 and arm.stats()["throttledEarly"] == 0
        clock.advance(0.2)   # 4/s: not yet a whole token
        assert post(s, arm, "c").status_code == 429
        clock.advance(0.05)  # a token is back, but the 429's Retry-After (1 s) holds
        assert post(s, arm, "c").status_code == 429
        assert arm.stats()["throttledEarly"] == 2
        clock.advance(0.75)
        assert post(s, arm, "c").status_code == 202


def test_throttling_disabled(s):
    cfg = {"throttling": {"enabled": False, "writes": {"burst": 1, "perSecond": 1}}}
    with emulator(cfg).start() as arm:
        assert all(post(s, arm, "c").status_code == 202 for _ in range(5))


def test_many_concurrent_operations(s):
    with emulator({"defaults": {"duration": 0.3}, "throttling": {"enabled": False}}).start() as arm:
        for i in range(200):
            arm.keystore.seed(f"c{i}", 3)

        def run(i: int) -> str:
            with requests.Session() as sess:
                r = post(sess, arm, f"c{i}")
                assert r.status_code == 202
                return follow(sess, r.headers["Location"]).json()["status"]

        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            assert set(pool.map(run, range(200))) == {"Succeeded"}
        st = arm.stats()
        assert sum(c["flushes"] for c in st["caches"].values()) == 200 and st["maxConcurrent"] > 1
        assert all(arm.keystore.count(f"c{i}") == 0 for i in range(200))


# ---- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,field", [
    ({"token": ""}, "token"),
    ({"apiVersions": []}, "apiVersions"),
    ({"signedUrlBytes": 5}, "signedUrlBytes"),
    ({"throttling": {"writes": {"burst": 0}}}, "throttling.writes.burst"),
    ({"throttling": {"reads": {"perSecond": -1}}}, "throttling.reads.perSecond"),
    ({"defaults": {"duration": -1}}, "defaults.duration"),
    ({"defaults": {"outcome": "Done"}}, "defaults.outcome"),
    ({"caches": {"x": {"pollMode": "sometimes"}}}, "caches['x'].pollMode"),
    ({"caches": {"x": {"postErrors": [200]}}}, "caches['x'].postErrors"),
    ({"caches": {"x": {"throttleFirst": True}}}, "caches['x'].throttleFirst"),
    ({"caches": {"x": {"foreignHost": "evil.example"}}}, "caches['x'].foreignHost"),
    ({"caches": {"x": {"durration": 1}}}, "caches['x'].durration"),
    ({"caches": []}, "caches"),
    ({"tokn": "x"}, "tokn"),
])
def test_config_validation(bad, field):
    with pytest.raises(ValueError) as err:
        EmulatorConfig.from_dict(bad)
    assert str(err.value).startswith(field + ":") or str(err.value).startswith(field + " ")


def test_config_files_and_defaults(tmp_path):
    default = EmulatorConfig()
    assert default.behaviour_for("anything").duration == 2.0
    assert default.behaviour_for("x").poll_mode == "both"
    assert default.behaviour_for("x").retry_after is None
    (tmp_path / "c.json").write_text(json.dumps({"defaults": {"duration": 1},
                                                 "caches": {"a*": {"outcome": "Failed"}}}))
    cfg = load_config(tmp_path / "c.json")
    assert cfg.behaviour_for("ABC").outcome == "Failed" and cfg.behaviour_for("abc").duration == 1
    assert cfg.behaviour_for("b") is None
    (tmp_path / "c.toml").write_text(
        'token = "t"\n[caches."x-*"]\npollMode = "location"\nretryAfter = 2\n')
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.token == "t" and cfg.behaviour_for("x-1").retry_after == 2
    assert EmulatorConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        load_config(tmp_path / "bad.json")


def test_admin_routes(s):
    with emulator({"defaults": {"duration": 0.1}}).start() as arm:
        assert s.get(f"{arm.url}/_emulator/health").json()["status"] == "ok"
        only = {"caches": {"only": {}}, "defaults": {"duration": 0.1}}
        r = s.put(f"{arm.url}/_emulator/config", json=only)
        assert r.status_code == 200
        assert post(s, arm, "other").status_code == 404 and post(s, arm, "only").status_code == 202
        r = s.put(f"{arm.url}/_emulator/config", json={"defaults": {"latency": "slow"}})
        assert r.status_code == 400 and "defaults.latency" in r.json()["error"]["message"]
        assert s.put(f"{arm.url}/_emulator/keys/x", json={"count": -1}).status_code == 400
        seed(s, arm, "x", 7)
        assert keys(s, arm, "x") == 7


def test_logging_has_no_secrets(s, caplog):
    caplog.set_level(logging.INFO, logger="redisflush.emulator")
    with emulator({"defaults": {"duration": 0.1}}).start() as arm:
        url = post(s, arm, "c").headers["Location"]
        follow(s, url)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /subscriptions/" in text and "GET /subscriptions/" in text
    assert TOKEN not in text and "h=" not in text and "api-version" not in text


# ---- persistence -----------------------------------------------------------------------------
def test_persistence_across_restart(s, tmp_path):
    cfg = {"defaults": {"duration": 0.6}}
    state = str(tmp_path / "arm.sqlite")
    store = MemoryKeyStore()
    store.seed("c", 4)
    clock = FakeClock()
    first = emulator(cfg, keystore=store, state_path=state, clock=clock).start()
    url, port = post(s, first, "c").headers["Location"], int(urlsplit(first.url).port)
    assert s.get(url, headers=AUTH).status_code == 202
    first.close()
    with requests.Session() as s2, emulator(cfg, port=port, keystore=store, state_path=state,
                                            clock=clock).start() as second:
        assert second.url == first.url
        assert s2.get(url, headers=AUTH).status_code == 202 and store.count("c") == 4
        clock.advance(0.601)
        assert s2.get(url, headers=AUTH).json()["status"] == "Succeeded"
        assert store.count("c") == 0
        counters = second.stats()["caches"]["c"]
        assert (counters["posts"], counters["accepted"], counters["flushes"]) == (1, 1, 1)
        assert counters["polls"] == 3   # the poll before the restart was kept
    # no state: the URL is not valid any more
    with requests.Session() as s3, emulator(cfg, port=port).start():
        assert s3.get(url, headers=AUTH).json()["error"]["code"] == "InvalidSignature"


# ---- Redis-backed keys -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_url():
    if not shutil.which("redis-server"):
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (required when CI is set)")
        pytest.skip("redis-server is not installed")
    with throwaway_redis(timeout=10) as url:
        if url is None:
            pytest.fail("redis-server did not start")
        yield url


def test_redis_keystore_prefix_flush(redis_url):
    store = make_keystore(redis_url)
    assert isinstance(store, RedisKeyStore) and isinstance(make_keystore(None), MemoryKeyStore)
    import redis
    raw = redis.Redis.from_url(redis_url)
    raw.set("unrelated", "1")
    store.seed("Cache-A", 2500)
    store.seed("cache-b", 10)
    assert store.count("cache-a") == 2500 and raw.exists("redisflush:cache-a:0")
    assert store.flush("cache-a") == 2500
    assert store.count("cache-a") == 0 and store.count("cache-b") == 10
    assert raw.get("unrelated") == b"1"
    store.close()
    raw.close()


def test_emulator_with_redis_and_dedicated_db(s, redis_url):
    import redis
    store = RedisKeyStore(redis_url)
    cfg = {"defaults": {"duration": 0.1}, "caches": {"dedicated": {"redisDb": 3}, "*": {}}}
    with emulator(cfg, keystore=store).start() as arm:
        seed(s, arm, "shared", 5)
        seed(s, arm, "dedicated", 6)
        # not from_url(redis_url, db=3): the URL's own /0 would win
        db3 = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
        db3.set("other-key-in-dedicated-db", "1")
        assert keys(s, arm, "dedicated") == 7
        for cache in ("shared", "dedicated"):
            done = follow(s, post(s, arm, cache).headers["Location"])
            assert done.json()["status"] == "Succeeded"
        assert keys(s, arm, "shared") == 0 and keys(s, arm, "dedicated") == 0 and db3.dbsize() == 0
        db3.close()
    store.close()


def test_an_unreachable_redis_is_refused_at_start():
    """README "CLI": a bad option is one line and exit 2, not a server failing every flush."""
    with socket.socket() as taken:          # bound, never listening: connections are refused
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError) as refused:
            make_keystore(f"redis://:hunter2@127.0.0.1:{port}/0")
    message = str(refused.value)
    assert message.startswith(f"--redis-url redis://127.0.0.1:{port}/0: no answer from Redis (")
    assert "refused" in message and "hunter2" not in message and "\n" not in message
    with silent_listener() as (port, _):    # accepts, never answers: the ping's timeout ends it
        started = time.monotonic()
        with pytest.raises(ConfigurationError, match="--redis-url .*Timeout"):
            make_keystore(f"redis://127.0.0.1:{port}/0", ping_seconds=0.5)
        assert time.monotonic() - started < 5


class _SwitchableStore(MemoryKeyStore):
    """Counts, with flushes failing like a Redis that went away while `down` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down, self.tries = False, 0

    def flush(self, cache, *, db=None):
        self.tries += 1
        if self.down:
            import redis
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. "
                                        "Connection refused.")
        return super().flush(cache, db=db)


def test_a_redis_failing_later_is_logged_once_per_change_and_backed_off(s, caplog):
    caplog.set_level(logging.DEBUG, logger="redisflush.emulator")
    store = _SwitchableStore()
    store.down = True
    with emulator({"defaults": {"duration": 0}}, keystore=store).start() as arm:
        seed(s, arm, "web", 5)
        assert post(s, arm, "web").status_code == 202
        time.sleep(2.0)
        # every 50 ms would be ~40 tries; backing off to 2 s it is a handful
        assert 2 <= store.tries <= 10, store.tries
        store.down = False
        end = time.monotonic() + 5
        while store.count("web") and time.monotonic() < end:
            time.sleep(0.05)
        assert store.count("web") == 0 and arm.stats()["caches"]["web"]["flushes"] == 1
    said = [r for r in caplog.records if r.levelno >= logging.WARNING
            and r.name == "redisflush.emulator"]
    assert [r.levelname for r in said] == ["ERROR", "WARNING"], [r.getMessage() for r in said]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in said)
    assert said[0].getMessage().startswith("flush of web failed: ConnectionError: Error 111")
    assert said[1].getMessage() == "flushes work again"


# ---- the real Azure SDK ----------------------------------------------------------------------
def test_azure_sdk_completes_against_emulator():
    from azure.core.credentials import AccessToken
    from azure.mgmt.redis import RedisManagementClient

    class StubCredential:
        def get_token(self, *scopes, **kwargs):
            return AccessToken(TOKEN, int(time.time()) + 3600)

    with emulator({"defaults": {"duration": 0.3}}).start() as arm:
        arm.keystore.seed("sdk-cache", 5)
        client = RedisManagementClient(StubCredential(), SUB, base_url=arm.url, api_version=API)
        poller = client.redis.begin_flush_cache("rg-1", "sdk-cache", polling_interval=0.1,
                                                enforce_https=False)
        result = poller.result(timeout=10)
        assert poller.status() == "Succeeded" and result.status == "Succeeded"
        assert arm.keystore.count("sdk-cache") == 0
        assert arm.stats()["caches"]["sdk-cache"]["flushes"] == 1
        client.close()
