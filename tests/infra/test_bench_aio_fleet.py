"""bench/sdk_side.py's asyncio SDK fleet (AioSdkFleet), which sections 2 and 6 compare ours
against: a handful of caches through azure.mgmt.redis.aio against the real ARM emulator on
loopback, throttled so azure-core's retries of a 429 run too. A broken asyncio fleet (an
import, the client's transport, the poller) fails here, not minutes into a benchmark run."""
from __future__ import annotations

import gc
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from redisflush.local.emulator import ArmEmulator
from redisflush.local.emulator_config import EmulatorConfig

SDK_SIDE = Path(__file__).resolve().parents[2] / "bench" / "sdk_side.py"
SUB = "00000000-0000-0000-0000-000000000401"
CACHES = 6
DURATION = 0.5
# a write burst below the fleet: some POSTs get 429 + Retry-After and must be retried
CONFIG = {"throttling": {"enabled": True, "writes": {"burst": 3, "perSecond": 10},
                         "reads": {"burst": 50, "perSecond": 25}},
          "caches": {"*": {"duration": DURATION}}}


def _sdk_side() -> ModuleType:
    """bench/sdk_side.py by its path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_sdk_side", SDK_SIDE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(fig: dict, stats: dict) -> None:
    assert fig["kind"] == "asyncio"
    assert fig["outcomes"] == {"Succeeded": CACHES}, fig
    assert fig["done"] == CACHES and fig["failures"] == 0 and fig["finished"], fig
    assert fig["how"] == "measured"
    # every call lasts at least its flush; the last ends after it, well inside the window
    assert DURATION <= fig["mean_call"] <= fig["total"] < 15, fig
    assert stats["posts"] >= CACHES and stats["throttled"] >= 1, stats


def test_asyncio_fleet_flushes_every_cache_through_the_emulator() -> None:
    sdk_side = _sdk_side()
    with ArmEmulator(EmulatorConfig.from_dict(CONFIG)).start() as arm:
        fleet = sdk_side.AioSdkFleet(arm.url, SUB, CACHES, interval=0.2, limit=2)
        fleet.start()
        assert fleet.all_done.wait(15), fleet.figures(15)
        fig = fleet.figures(15)
        stats = arm.stats()
    assert fig["limit"] == 2 and fig["interval"] == 0.2 and fig["name"] == "aio2i0.2"
    _check(fig, stats)


def test_asyncio_fleet_process_for_section_6() -> None:
    """`python bench/sdk_side.py --fleet URL --aio LIMIT`: "ready" at rest, the fleet on
    "go", its figures as one JSON line (the process section 6 samples)."""
    with ArmEmulator(EmulatorConfig.from_dict(CONFIG)).start() as arm:
        proc = subprocess.Popen(
            [sys.executable, str(SDK_SIDE), "--fleet", arm.url, "--sub", SUB, "--caches",
             str(CACHES), "--aio", "0", "--interval", "0.2", "--window", "15"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            proc.stdin.write("go\n")
            proc.stdin.flush()
            fig = json.loads(proc.stdout.readline())
            proc.stdin.close()
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        stats = arm.stats()
    assert fig["limit"] == 0
    _check(fig, stats)


def _live(type_name: str) -> int:
    """How many objects of that class name the collector tracks now (no reference kept)."""
    return sum(1 for o in gc.get_objects() if type(o).__name__ == type_name)


def _live_flush_frames(code: object) -> int:
    """aio_flush coroutines still holding a frame (suspended or running)."""
    return sum(1 for o in gc.get_objects()
               if type(o).__name__ == "coroutine" and o.cr_code is code and o.cr_frame)


def test_asyncio_fleet_keeps_nothing_of_a_finished_call() -> None:
    """Section 6 reads this fleet's RSS as the SDK's: the harness may hold a call's poller
    (with its responses and azure-core's retry history of 429s) only while the call is in
    flight, as a user's `await poller.result()` does, and keep only (end, seconds, status)
    once it ends; a poller, response, exception or coroutine frame kept past its call would
    count against the SDK."""
    sdk_side = _sdk_side()
    with ArmEmulator(EmulatorConfig.from_dict(CONFIG)).start() as arm:
        fleet = sdk_side.AioSdkFleet(arm.url, SUB, CACHES, interval=0.2, limit=2)
        fleet.start()
        seen: list[tuple[int, int, int]] = []  # (calls done, pollers alive, frames alive)
        while not fleet.all_done.wait(0.1):
            done = len(fleet.results)
            seen.append((done, _live("AsyncLROPoller"),
                         _live_flush_frames(sdk_side.aio_flush.__code__)))
        time.sleep(0.3)  # the loop closes the client and ends
        after = (_live("AsyncLROPoller"), _live("RequestHistory"),
                 _live_flush_frames(sdk_side.aio_flush.__code__))
        fig = fleet.figures(15)
        stats = arm.stats()
    _check(fig, stats)
    # in flight: at most one poller and one frame per call not yet done
    assert all(p <= CACHES - d + 1 and f <= CACHES - d + 1 for d, p, f in seen), seen
    assert after == (0, 0, 0), after
    assert all(type(e) is float and type(s) is float and type(st) is str
               for e, s, st in fleet.results), fleet.results
