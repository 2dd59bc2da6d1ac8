"""Section 1: time from sending a flush request to receiving its completion event.

Ours: the request goes on the local bus with ReplyTo (as `send --wait` does) and a
`serve --local` process handles it; the clock stops when the completion event arrives in the
reply session. The SDK way: `begin_flush_cache(...).result()` with the SDK's default polling,
in threads of this process, against the same ARM emulator process. Every (duration, repeat)
pair uses its own cache, so all of them run at once without touching each other.
"""
from __future__ import annotations

import concurrent.futures as cf
import time
from pathlib import Path
from typing import Any

from common import (Emulator, Section, Serve, median, request_message, sdk_client, sdk_flush,
                    sub_id)
from redisflush.client import LocalChannel, follow

SUB = sub_id(1)


def _ours(channel: LocalChannel, settings: Any, cache: str, limit: float) -> tuple[float, str]:
    rid, message = request_message(settings, SUB, cache, reply=True)
    started = time.monotonic()
    channel.send_request(message)
    event = follow(channel, rid, started + limit, lambda data: None)
    elapsed = time.monotonic() - started
    status = (event or {}).get("data", {}).get("status") if event else "(no event)"
    return elapsed, str(status)


def run(workdir: Path, durations: tuple[float, ...], repeats: int) -> Section:
    config = {"caches": {f"tte-{d:g}-*": {"duration": d} for d in durations}}
    emulator = Emulator(workdir, config, "tte")
    serve = None
    try:
        serve = Serve(workdir, emulator.url, "tte")
        channel = LocalChannel(serve.settings)
        client = sdk_client(emulator.url, SUB)
        jobs: dict[tuple[str, float, int], cf.Future] = {}
        with cf.ThreadPoolExecutor(2 * len(durations) * repeats) as pool:
            for d in durations:
                for r in range(repeats):
                    limit = d + 120
                    jobs["ours", d, r] = pool.submit(_ours, channel, serve.settings,
                                                     f"tte-{d:g}-ours-{r}", limit)
                    jobs["sdk", d, r] = pool.submit(sdk_flush, client, f"tte-{d:g}-sdk-{r}")
            results = {k: f.result() for k, f in jobs.items()}
        stats = emulator.stats()["caches"]
        channel.close()
    finally:
        if serve is not None:
            serve.stop()
        emulator.stop()

    def requests(way: str, d: float, r: int) -> int:
        c = stats.get(f"tte-{d:g}-{way}-{r}", {})
        return int(c.get("posts", 0)) + int(c.get("polls", 0))

    s = Section("1. Time to event (no Retry-After, the recorded ARM shape)")
    s.table = [["flush takes", "redisflush: send -> event", "SDK: begin_flush_cache().result()",
                "time ratio (target <= 0.4)", "ARM requests ours / SDK (target <= 2x)",
                "status ours / SDK"]]
    rows: dict[float, dict[str, float]] = {}
    for d in durations:
        ours_t = median(results["ours", d, r][0] for r in range(repeats))
        sdk_t = median(results["sdk", d, r][0] for r in range(repeats))
        ours_n = median(requests("ours", d, r) for r in range(repeats))
        sdk_n = median(requests("sdk", d, r) for r in range(repeats))
        ours_s = sorted({results["ours", d, r][1] for r in range(repeats)})
        sdk_s = sorted({results["sdk", d, r][1] for r in range(repeats)})
        ratio, req_ratio = ours_t / sdk_t, ours_n / sdk_n
        rows[d] = {"ours": ours_t, "sdk": sdk_t, "ratio": ratio, "ours_n": ours_n,
                   "sdk_n": sdk_n, "req_ratio": req_ratio}
        s.table.append([f"{d:g} s", f"{ours_t:.1f} s", f"{sdk_t:.1f} s",
                        f"{ratio:.2f}x {'met' if ratio <= 0.4 else 'MISSED'}",
                        f"{ours_n:g} / {sdk_n:g} = {req_ratio:.2f}x "
                        f"{'met' if req_ratio <= 2 else 'MISSED'}",
                        f"{'/'.join(ours_s)} / {'/'.join(sdk_s)}"])
    s.notes.append(f"Median of {repeats} run(s) per cell; every request, ours and the SDK's, ran "
                   "at once on its own cache against one emulator process; ours through one "
                   "`serve --local` process (default concurrency) with the request on the local "
                   "bus and the event read from its reply session. ARM requests are the "
                   "emulator's per-cache counts (POST + status GETs).")
    import report
    s.notes.append("Without Retry-After the app polls at " + ", ".join(
        f"{m:g}" for m in report.poll_moments(max(durations) + 1)) + " s after ARM accepted "
        "the flush (redisflush/lro.py POLL_GAPS), so a flush is seen at the first of those at "
        "or after its end; the SDK waits its default 30 s polling interval between polls and "
        "then GETs the final result.")
    s.headline = ["Time to event: " + "; ".join(
        f"{d:g} s flush {v['ours']:.1f} s vs SDK {v['sdk']:.1f} s ({v['ratio']:.2f}x, "
        f"{v['ours_n']:g} vs {v['sdk_n']:g} ARM requests)" for d, v in rows.items()) + "."]
    s.data = rows
    return s
