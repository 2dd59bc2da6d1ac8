"""Shared bits for the unit tests: fixed moments, sample identities, the JSON fixture loader."""
from __future__ import annotations

import datetime as dt
import json
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from hypothesis import strategies as st

from redisflush.target import CacheTarget

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
SUB = "00000000-1111-2222-3333-444444444444"
RG = "rg-prod"
CACHE = "cache-1"
ENDPOINT = "https://management.azure.com"
API_VERSION = "2023-08-01"
RESOURCE_ID = (f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/Redis/"
               f"{CACHE}")


@lru_cache(maxsize=None)
def _load_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def load_fixture(name: str) -> Any:
    """A fresh copy of tests/fixtures/{name} (parsed JSON), so tests can mutate it freely."""
    return json.loads(_load_text(name))


def at(seconds: float) -> dt.datetime:
    """T0 plus `seconds`."""
    return T0 + dt.timedelta(seconds=seconds)


# --- valid segments, and what a flush URL built from them must look like ---------------------

RG_TEXT = st.from_regex(r"[-\w._()]{1,90}", fullmatch=True).filter(
    lambda s: not s.endswith(".") and unicodedata.normalize("NFKC", s) == s)
CACHE_TEXT = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?", fullmatch=True)
SUB_TEXT = st.uuids().map(str)


def assert_url_confined(url: str, target: CacheTarget, endpoint: str) -> None:
    """The flush URL is exactly one cache's flush action under the configured endpoint."""
    prefix = f"{endpoint}/subscriptions/{target.subscription_id}/resourceGroups/"
    assert url.startswith(prefix)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == endpoint
    assert url.count("?") == 1 and "#" not in url
    assert parts.query == f"api-version={API_VERSION}"
    segments = parts.path.split("/")
    assert len(segments) == 10
    assert segments[:4] == ["", "subscriptions", target.subscription_id, "resourceGroups"]
    assert segments[5:8] == ["providers", "Microsoft.Cache", "Redis"]
    assert segments[9] == "flush"
    assert unquote(segments[4]) == target.resource_group
    assert unquote(segments[8]) == target.cache_name
    assert segments[4] not in ("", ".", "..") and segments[8] not in ("", ".", "..")
