"""Azure Managed Redis through the CLI and `serve --local` (issue 8, "Tests"): a geo-replicated
pair flushed through one member (keys gone in both databases, the event names the partner),
the same pair with `--no-linked` (the partner keeps its keys), and one tag selector over both
kinds of cache flushing classic caches and Managed Redis databases in one request.

Keys are seeded through the emulator's admin route (`PUT /_emulator/keys/{cluster}/{db}`),
in a throwaway redis-server when one is installed, and read back the same way.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    SUB,
    Processes,
    Serve,
    http_json,
    one_event,
    run_cli,
    topic_events,
    write_config,
)

pytestmark = pytest.mark.e2e
ENTERPRISE = "Microsoft.Cache/redisEnterprise"


def database_id(rg: str, cluster: str, db: str = "default") -> str:
    return (f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/{ENTERPRISE}/{cluster}"
            f"/databases/{db}")


def cache_id(rg: str, cache: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Cache/redis/{cache}"


def keys_url(serve: Serve, name: str) -> str:
    """`name` is a classic cache or `cluster/db`."""
    return f"{serve.arm_url}/_emulator/keys/{name}"


def seed(serve: Serve, counts: dict[str, int]) -> None:
    for name, n in counts.items():
        assert http_json(keys_url(serve, name), "PUT", {"count": n}) == {"count": n}


def key_counts(serve: Serve, names: list[str]) -> dict[str, int]:
    return {name: http_json(keys_url(serve, name))["count"] for name in names}


def serve_args(config: Path, redis_url: str | None) -> list[str]:
    return ["--config", str(config), *(["--redis-url", redis_url] if redis_url else [])]


def database_stats(serve: Serve, name: str) -> dict[str, int]:
    return serve.stats()["databases"].get(name.lower(), {})


GEO_CONFIG: dict[str, Any] = {
    "defaults": {"duration": 0.5},
    "clusters": {"geo-eu": {"resourceGroup": "rg-eu", "location": "West Europe"},
                 "geo-us": {"resourceGroup": "rg-us", "location": "East US"}},
    "geoGroups": {"geo-pair": ["geo-eu/default", "geo-us/default"]},
}


@pytest.mark.timeout(120)
def test_geo_replicated_pair_flushed_through_one_member(procs: Processes, local_dir: Path,
                                                        tmp_path: Path,
                                                        redis_url: str | None) -> None:
    config = write_config(tmp_path / "emulator.json", GEO_CONFIG)
    serve = procs.serve(local_dir, *serve_args(config, redis_url))
    pair = ["geo-eu/default", "geo-us/default"]
    seed(serve, {"geo-eu/default": 120, "geo-us/default": 80})

    # one member named: the app reads its group and flushes both with one POST
    result = run_cli(["send", "--local", "--wait", "--json", "--subscription", SUB,
                      "--resource-group", "rg-eu", "--cluster", "geo-eu",
                      "--request-id", "e2e-geo-linked"], local_dir, timeout=90)
    assert result.returncode == 0, result.stderr
    event = one_event(result.stdout)
    data = event["data"]
    assert event["type"] == "RedisFlush.FlushCompleted"
    assert event["id"] == "e2e-geo-linked:completed"
    assert event["subject"] == "geo-eu/default"
    assert event["source"] == database_id("rg-eu", "geo-eu")
    assert data["status"] == "Succeeded" and data["error"] is None
    assert data["kind"] == "redisEnterprise"
    assert data["resourceId"] == database_id("rg-eu", "geo-eu")
    assert data["linkedDatabaseIds"] == [database_id("rg-us", "geo-us")]
    assert data["armRequests"] == 3                 # database GET, flush POST, one status read
    assert key_counts(serve, pair) == {"geo-eu/default": 0, "geo-us/default": 0}
    assert database_stats(serve, "geo-eu/default") == \
        {"posts": 1, "accepted": 1, "flushes": 1, "polls": 1, "gets": 1}
    # the partner was flushed by its member's operation: never POSTed or read itself
    assert database_stats(serve, "geo-us/default") == \
        {"posts": 0, "accepted": 0, "flushes": 1, "polls": 0, "gets": 0}

    # --no-linked: linkedDatabaseIds [] flushes the named database alone, without reading it
    seed(serve, {"geo-eu/default": 50, "geo-us/default": 30})
    alone = run_cli(["send", "--local", "--wait", "--json", "--subscription", SUB,
                     "--resource-group", "rg-us", "--cluster", "geo-us", "--no-linked",
                     "--request-id", "e2e-geo-alone"], local_dir, timeout=90)
    assert alone.returncode == 0, alone.stderr
    event = one_event(alone.stdout)
    assert event["subject"] == "geo-us/default"
    assert event["data"]["status"] == "Succeeded"
    assert event["data"]["linkedDatabaseIds"] == []
    assert event["data"]["armRequests"] == 2        # flush POST, one status read
    assert key_counts(serve, pair) == {"geo-eu/default": 50, "geo-us/default": 0}
    assert database_stats(serve, "geo-us/default") == \
        {"posts": 1, "accepted": 1, "flushes": 2, "polls": 1, "gets": 0}
    assert database_stats(serve, "geo-eu/default")["flushes"] == 1   # untouched this time
    assert "Traceback" not in serve.stderr()


FLEET_CONFIG: dict[str, Any] = {
    "defaults": {"duration": 0.5},
    "caches": {
        "shop-web-1": {"resourceGroup": "rg-web", "tags": {"app": "shop"}},
        # tag names compare without case, values exactly (as in Azure)
        "shop-web-2": {"resourceGroup": "rg-web-2", "tags": {"App": "shop", "tier": "2"}},
        "shop-web-3": {"resourceGroup": "rg-web", "tags": {"app": "Shop"}},
        "blog-web": {"resourceGroup": "rg-web", "tags": {"app": "blog"}},
    },
    "clusters": {
        "shop-eu": {"resourceGroup": "rg-eu", "tags": {"app": "shop"}},
        "shop-us": {"resourceGroup": "rg-us", "tags": {"app": "shop"},
                    "databases": {"default": {"duration": 1.5}, "sessions": {}}},
        "blog-eu": {"resourceGroup": "rg-eu", "tags": {"app": "blog"}},
    },
    # both members are targets: each is flushed once, by its own POST
    "geoGroups": {"shop-geo": ["shop-eu/default", "shop-us/default"]},
}
FLEET_TARGETS = {  # name as the per-cache line and event say it -> resource id
    "shop-web-1": cache_id("rg-web", "shop-web-1"),
    "shop-web-2": cache_id("rg-web-2", "shop-web-2"),
    "shop-eu/default": database_id("rg-eu", "shop-eu"),
    "shop-us/default": database_id("rg-us", "shop-us"),
    "shop-us/sessions": database_id("rg-us", "shop-us", "sessions"),
}
FLEET_OTHERS = ["shop-web-3", "blog-web", "blog-eu/default"]


@pytest.mark.timeout(120)
def test_tag_selector_over_both_kinds(procs: Processes, local_dir: Path, tmp_path: Path,
                                      redis_url: str | None) -> None:
    config = write_config(tmp_path / "emulator.json", FLEET_CONFIG)
    serve = procs.serve(local_dir, *serve_args(config, redis_url))
    names = [*FLEET_TARGETS, *FLEET_OTHERS]
    seed(serve, {name: 10 + i for i, name in enumerate(names)})

    result = run_cli(["send", "--local", "--wait", "--json", "--timeout", "60",
                      "--subscription", SUB, "--tag", "app=shop",
                      "--request-id", "e2e-fleet-1"], local_dir, timeout=150)
    assert result.returncode == 0, result.stderr + serve.stderr()[-3000:]
    event = one_event(result.stdout)
    data = event["data"]
    assert event["type"] == "RedisFlush.RequestCompleted"
    assert event["id"] == "e2e-fleet-1:completed"
    assert data["status"] == "Succeeded" and data["error"] is None
    assert data["counts"] == {"Succeeded": 5}
    assert sorted(r["resourceId"].lower() for r in data["results"]) == \
        sorted(i.lower() for i in FLEET_TARGETS.values())
    assert all(r["status"] == "Succeeded" and r["error"] is None for r in data["results"])

    # stderr: one line per cache, each exactly once
    lines = [line for line in result.stderr.splitlines() if re.search(r"\[\d/5\] ", line)]
    assert len(lines) == 5, result.stderr
    for name in FLEET_TARGETS:
        assert sum(f"] {name}: Succeeded" in line for line in lines) == 1, result.stderr

    # keys gone in every target, kept everywhere else
    after = key_counts(serve, names)
    assert {n: after[n] for n in FLEET_TARGETS} == dict.fromkeys(FLEET_TARGETS, 0), after
    assert {n: after[n] for n in FLEET_OTHERS} == \
        {n: 10 + names.index(n) for n in FLEET_OTHERS}, after

    # one POST per target (the geo pair's members are not flushed again through each other)
    stats = serve.stats()
    for name in FLEET_TARGETS:
        book = stats["databases" if "/" in name else "caches"].get(name.lower(), {})
        assert book.get("posts") == 1 and book.get("flushes") == 1, (name, stats)
    for name in FLEET_OTHERS:
        book = stats["databases" if "/" in name else "caches"].get(name.lower(), {})
        assert not book.get("posts") and not book.get("flushes"), (name, stats)

    # the topic: one event per cache and one for the request
    events = topic_events(local_dir, 6)
    per_cache = [e for e in events if e["type"] == "RedisFlush.FlushCompleted"]
    assert sorted(e["subject"] for e in per_cache) == sorted(FLEET_TARGETS)
    assert sorted(e["id"] for e in per_cache) == [f"e2e-fleet-1:completed:{i}" for i in range(5)]
    for e in per_cache:
        assert e["data"]["batch"]["count"] == 5
        # a linked database that is a target itself is left out of its partner's ids
        assert e["data"]["linkedDatabaseIds"] == [], e["data"]
    assert [e["id"] for e in events if e["type"] == "RedisFlush.RequestCompleted"] == \
        ["e2e-fleet-1:completed"]


@pytest.mark.timeout(90)
def test_linked_database_outside_the_allowed_scopes_is_rejected(
        procs: Processes, local_dir: Path, tmp_path: Path) -> None:
    """REDISFLUSH_ALLOWED_SCOPES covers the named database but not its geo partner: the flush
    would clear the partner too, so nothing is flushed."""
    config = write_config(tmp_path / "emulator.json", GEO_CONFIG)
    scope = f"/subscriptions/{SUB}/resourceGroups/rg-eu"
    serve = procs.serve(local_dir, "--config", str(config),
                        env={"REDISFLUSH_ALLOWED_SCOPES": scope})
    pair = ["geo-eu/default", "geo-us/default"]
    seed(serve, {"geo-eu/default": 12, "geo-us/default": 34})
    result = run_cli(["send", "--local", "--wait", "--json", "--subscription", SUB,
                      "--resource-group", "rg-eu", "--cluster", "geo-eu"], local_dir, timeout=60)
    assert result.returncode == 1, result.stderr
    data = one_event(result.stdout)["data"]
    assert data["status"] == "Rejected"
    assert data["error"]["code"] == "LinkedDatabaseNotAllowed"
    assert data["error"]["target"] == "linkedDatabaseIds"
    assert database_id("rg-us", "geo-us") in data["error"]["message"]
    assert data["armRequests"] == 1 and data["linkedDatabaseIds"] == []   # the GET alone
    assert key_counts(serve, pair) == {"geo-eu/default": 12, "geo-us/default": 34}
    assert database_stats(serve, "geo-eu/default") == \
        {"posts": 0, "accepted": 0, "flushes": 0, "polls": 0, "gets": 1}
    assert serve.stats()["posts"] == 0


@pytest.mark.timeout(90)
def test_linked_id_named_outside_the_allowed_scopes_is_rejected(
        procs: Processes, local_dir: Path, tmp_path: Path) -> None:
    """The same partner named outright with --linked-id: refused before any ARM call."""
    config = write_config(tmp_path / "emulator.json", GEO_CONFIG)
    scope = f"/subscriptions/{SUB}/resourceGroups/rg-eu"
    serve = procs.serve(local_dir, "--config", str(config),
                        env={"REDISFLUSH_ALLOWED_SCOPES": scope})
    pair = ["geo-eu/default", "geo-us/default"]
    seed(serve, {"geo-eu/default": 12, "geo-us/default": 34})
    named = run_cli(["send", "--local", "--wait", "--json", "--subscription", SUB,
                     "--resource-group", "rg-eu", "--cluster", "geo-eu",
                     "--linked-id", database_id("rg-us", "geo-us")], local_dir, timeout=60)
    assert key_counts(serve, pair) == {"geo-eu/default": 12, "geo-us/default": 34}
    assert serve.stats()["posts"] == 0
    assert named.returncode == 1, named.stderr
    data = one_event(named.stdout)["data"]
    assert data["status"] == "Rejected" and data["armRequests"] == 0, data
    assert data["error"]["target"].startswith("linkedDatabaseIds")
    assert "REDISFLUSH_ALLOWED_SCOPES" in data["error"]["message"]
