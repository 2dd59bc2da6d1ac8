"""Shared bits for the unit tests: fixed moments, sample identities of both cache kinds, the
JSON fixture loader, and what a URL built from a valid target must look like."""
from __future__ import annotations

import datetime as dt
import json
import unicodedata
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from hypothesis import strategies as st

from redisflush.core.targets import ENTERPRISE, REDIS, Target

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
SUB = "00000000-1111-2222-3333-444444444444"
SUB2 = "00000000-1111-2222-3333-555555555555"
RG = "rg-prod"
CACHE = "cache-1"
CLUSTER = "amr-1"
DATABASE = "default"
ENDPOINT = "https://management.azure.com"
API_VERSION = "2023-08-01"
ENTERPRISE_API_VERSION = "2025-07-01"
RESOURCE_ID = (f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/"
               f"{CACHE}")
CLUSTER_ID = (f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/"
              f"redisEnterprise/{CLUSTER}")
DATABASE_ID = f"{CLUSTER_ID}/databases/{DATABASE}"


def rid(cache: str = CACHE, rg: str = RG, sub: str = SUB) -> str:
    """A classic cache's resource id."""
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/Redis/{cache}"


def db_id(cluster: str = CLUSTER, database: str = DATABASE, rg: str = RG, sub: str = SUB
          ) -> str:
    """A Managed Redis database's resource id."""
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/"
            f"redisEnterprise/{cluster}/databases/{database}")


def cluster_id(cluster: str = CLUSTER, rg: str = RG, sub: str = SUB) -> str:
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/"
            f"redisEnterprise/{cluster}")


@cache
def _load_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def load_fixture(name: str) -> Any:
    """A fresh copy of tests/fixtures/{name} (parsed JSON), so tests can mutate it freely."""
    return json.loads(_load_text(name))


def at(seconds: float) -> dt.datetime:
    """T0 plus `seconds`."""
    return T0 + dt.timedelta(seconds=seconds)


# --- valid segments, and what a URL built from them must look like -------------------------

RG_TEXT = st.from_regex(r"[-\w._()]{1,90}", fullmatch=True).filter(
    lambda s: not s.endswith(".") and unicodedata.normalize("NFKC", s) == s)
NAME_TEXT = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?", fullmatch=True)
CACHE_TEXT = NAME_TEXT
SUB_TEXT = st.uuids().map(str)


def assert_url_confined(url: str, target: Target, endpoint: str, api_version: str = API_VERSION,
                        action: str | None = "flush") -> None:
    """`url` is exactly one target's own route (its flush action, or the resource itself when
    `action` is None) under the configured endpoint, whatever its segments held."""
    prefix = f"{endpoint}/subscriptions/{target.subscription_id}/resourceGroups/"
    assert url.startswith(prefix)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == endpoint
    assert url.count("?") == 1 and "#" not in url
    assert parts.query == f"api-version={api_version}"
    segments = parts.path.split("/")
    tail = [action] if action else []
    if target.kind == REDIS:
        assert segments[5:8] == ["providers", "Microsoft.Cache", "Redis"]
        assert segments[9:] == tail
        names = [segments[8]]
        assert unquote(segments[8]) == target.name
    else:
        assert target.kind == ENTERPRISE
        assert segments[5:8] == ["providers", "Microsoft.Cache", "redisEnterprise"]
        assert segments[9] == "databases"
        assert segments[11:] == tail
        names = [segments[8], segments[10]]
        assert unquote(segments[8]) == target.name
        assert unquote(segments[10]) == target.database
    assert segments[:4] == ["", "subscriptions", target.subscription_id, "resourceGroups"]
    assert unquote(segments[4]) == target.resource_group
    for segment in [segments[4], *names]:
        assert segment not in ("", ".", "..") and "/" not in unquote(segment)
