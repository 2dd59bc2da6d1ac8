"""Shared bits for the unit tests: fixed moments, sample identities, the JSON fixture loader."""
from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

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
