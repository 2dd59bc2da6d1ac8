"""A 50-cache selector end to end (issue 8's measure): 25 classic caches and 25 Managed Redis
clusters tagged app=shop, list pages of 10, 2 KiB signed operation URLs, 10 s flushes, one
`serve --local` runtime in this process. Prints the time from send to RequestCompleted, the ARM
requests by kind (the emulator's counts), 429s, and the largest message the app sent.

    .venv/bin/python bench/selector.py [--duration 10]

What it leaves out: Service Bus and ARM latency (both local), and other clients' throttling.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redisflush.client import LocalChannel, follow  # noqa: E402
from redisflush.local.emulator_config import EmulatorConfig  # noqa: E402
from redisflush.local.runtime import build_runtime  # noqa: E402
from redisflush.sender.prepare import Prepared, prepare  # noqa: E402

SUB = "00000000-0000-0000-0000-000000000000"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds each flush takes")
    args = parser.parse_args(argv)
    shop = {"tags": {"app": "shop"}, "resourceGroup": "rg-shop"}
    config = {"signedUrlBytes": 2048, "pageSize": 10, "defaults": {"duration": args.duration},
              "caches": {f"shop-c{i:02}": shop for i in range(25)},
              "clusters": {f"shop-e{i:02}": shop for i in range(25)}}
    work = Path(tempfile.mkdtemp(prefix="redisflush-selector-"))
    runtime = build_runtime(ROOT, emulator_config_obj=EmulatorConfig.from_dict(config),
                            overrides={"REDISFLUSH_LOCAL_DIR": str(work)})
    sizes: list[tuple[int, str]] = []
    send, publish = runtime.bus.send, runtime.bus.publish

    def sized_send(queue: str, messages: Any) -> None:
        sizes.extend((len(m.body), queue) for m in messages)
        send(queue, messages)

    def sized_publish(topic: str, messages: Any) -> None:
        sizes.extend((len(m.body), topic) for m in messages)
        publish(topic, messages)

    runtime.bus.send, runtime.bus.publish = sized_send, sized_publish  # type: ignore[method-assign]
    try:
        with runtime:
            prepared = prepare({"selector": {"subscriptionId": SUB, "tags": {"app": "shop"}}},
                               runtime.settings, request_id=str(uuid.uuid4()), reply=True,
                               now=dt.datetime.now(dt.UTC))
            assert isinstance(prepared, Prepared), prepared
            channel = LocalChannel(runtime.settings)
            started = time.monotonic()
            channel.send_request(prepared.message)
            event = follow(channel, prepared.request_id, started + args.duration + 120,
                           lambda note: None, session_id=prepared.message.reply_to_session_id)
            took = time.monotonic() - started
            stats = runtime.emulator.stats()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data = (event or {}).get("data", {})
    largest = max(sizes)
    rows = [("caches (25 classic + 25 Managed Redis)", "50"),
            ("status / counts", f"{data.get('status')} {json.dumps(data.get('counts'))}"),
            ("send -> RequestCompleted", f"{took:.1f} s ({args.duration:g} s flushes)"),
            ("ARM requests (event)", str(data.get("armRequests"))),
            ("  list pages / database GETs / POSTs / status reads",
             f"{stats.get('lists')} / {stats.get('databaseGets')} / {stats['posts']} / "
             f"{stats['polls']}"),
            ("429 answers", str(stats["throttled"])),
            ("largest message the app sent", f"{largest[0]:,} bytes ({largest[1]}); limit "
                                             "196,608"),
            ("messages the app sent", str(len(sizes)))]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return 0 if data.get("status") == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
