"""`demo` from a clean state: the whole flow on this machine, exit 0, keys gone."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .conftest import run_cli

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(90)
def test_demo_from_a_clean_state(local_dir: Path) -> None:
    result = run_cli(["demo"], local_dir, timeout=80)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    before = re.search(r"^cache demo-cache: (\d+) keys before the flush$", result.stderr, re.M)
    after = re.search(r"^cache demo-cache: (\d+) keys after the flush$", result.stderr, re.M)
    assert before and after, result.stderr
    assert int(before.group(1)) > 0 and int(after.group(1)) == 0
    event = json.loads(result.stdout)             # pretty-printed event on stdout
    assert event["type"] == "RedisFlush.FlushCompleted"
    assert event["data"]["status"] == "Succeeded" and event["subject"] == "demo-cache"
    assert re.search(r"ARM emulator saw 1 POST", result.stderr)
    # it kept its state under REDISFLUSH_LOCAL_DIR, not in the checkout
    assert (local_dir / "demo" / "bus.sqlite").is_file()


@pytest.mark.timeout(90)
def test_demo_json_one_line(local_dir: Path) -> None:
    result = run_cli(["demo", "--json", "--duration", "0.5", "--keys", "25"], local_dir,
                     timeout=80)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["data"]["status"] == "Succeeded"
    assert "demo-cache: 25 keys before" in result.stderr
    assert "demo-cache: 0 keys after" in result.stderr
