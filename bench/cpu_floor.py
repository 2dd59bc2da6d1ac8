"""Section 3's floor: the CPU of the parts a flush cannot do without in this design, with no
app logic between them, against the CPU per flush that halving the baseline's would allow.

In this design (docs/design.md, "Flow") every read of an operation is one function execution
fed by a scheduled Service Bus message: the host receives the poll message, the Python worker
turns it into `azure.functions.ServiceBusMessage` with azure-functions' own converter, the step
makes one HTTP GET, sends the next poll as a scheduled message, and the host completes the
message it received. A flush also writes the ledger (at least a claim before its POST and a
record of its end: exactly once, docs/design.md "Request ledger") and publishes one event.
This measures each of those parts alone, in one thread of one process, repeated `calls`
times after a warm-up (time.process_time(): the client's side only; the HTTP server is
bench/cpu_arm.py's trivial keep-alive server in another process):

- bus: `LocalBus` send of a real-sized poll message (scheduled now) + receive + complete;
- worker: `received_worker_message` of that message (the binding's dataType, binary);
- state: the poll state read from that message and the next one written (`RunState.from_json`
  and `poll_message`): the least a step can do to carry its state on;
- HTTP GET, three ways: `http.client` alone (keep-alive, nothing else; no proxy support),
  urllib3's pool called directly, and `ArmClient` (the app's: proxies, deadline, pacing);
  the floor takes the cheapest of the three;
- ledger: a `SqliteLedger` insert of a real-sized row (the claim) and an update (the record);
- event: a `LocalBus` publish of a real-sized event to one subscription.

floor per flush = R x (bus + worker + cheapest GET) + 2 ledger writes + 1 publish, with R the
ARM requests (= executions) per flush that section 3 measured for "now". What it leaves out
is everything else a step does (the step itself, the poll state's JSON, the host's dispatch
and its threads, the log lines, the ledger's reads): that is what the target leaves for them.

    python bench/cpu_floor.py [--calls 2000] [--rounds 3] [--json]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import http.client
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import urllib3  # noqa: E402
from cpu_arm import SERVER, SUB, measure  # noqa: E402

from redisflush.arm import ArmClient  # noqa: E402
from redisflush.arm_tokens import StaticToken  # noqa: E402
from redisflush.bus import OutboundMessage  # noqa: E402
from redisflush.core.next_message import poll_message  # noqa: E402
from redisflush.core.request import Delivery, FlushRequest, parse_request  # noqa: E402
from redisflush.core.state import RunState, initial  # noqa: E402
from redisflush.functions import keep_strptime_formats  # noqa: E402
from redisflush.ledger import LedgerRow  # noqa: E402
from redisflush.local.bus import LocalBus  # noqa: E402
from redisflush.local.ledger import SqliteLedger  # noqa: E402
from redisflush.local.worker_message import received_worker_message  # noqa: E402

RESOURCE = (f"/subscriptions/{SUB}/resourceGroups/rg-bench/providers/Microsoft.Cache/Redis/"
            "cache-0001")
OPERATION = (f"/subscriptions/{SUB}/providers/Microsoft.Cache/locations/westus2/"
             "operationresults/00000000-aaaa-bbbb-cccc-000000000001?api-version=2024-11-01")
HTTP_WAYS = ("http.client alone", "urllib3 pool", "ArmClient")
STATE = "state: decode + encode"
PARTS = ("bus: send + receive + complete", "worker: message conversion", STATE, *HTTP_WAYS,
         "ledger: one write", "event: one publish")


def poll_state(endpoint: str, now: dt.datetime) -> RunState:
    """A one-cache request's state while its operation runs, as a poll message carries it."""
    parsed = parse_request(Delivery(json.dumps({"resourceId": RESOURCE}).encode(),
                                    "floor-0001", enqueued_at=now),
                           default_timeout=1800, allowed_scopes=(), max_targets=50, now=now)
    assert isinstance(parsed, FlushRequest), parsed
    state = initial(parsed, now)
    (target,) = state.targets
    running = dataclasses.replace(
        target, phase="poll", poll_kind="azure-asyncoperation", poll_url=endpoint + OPERATION,
        accepted_at=now, last_status="InProgress", polls=5, arm_requests=6, running_at=now,
        due=now)
    return dataclasses.replace(state, phase="run", step=6, targets=(running,))


def event_body(now: dt.datetime) -> bytes:
    """A FlushCompleted event of the size the app publishes (docs/design.md, "Completion
    events")."""
    stamp = now.isoformat().replace("+00:00", "Z")
    return json.dumps({
        "specversion": "1.0", "type": "RedisFlush.FlushCompleted", "source": "redisflush",
        "id": "floor-0001:0", "time": stamp, "subject": RESOURCE,
        "datacontenttype": "application/json",
        "data": {"requestId": "floor-0001", "status": "Succeeded", "resourceId": RESOURCE,
                 "kind": "redis", "linkedDatabaseIds": [], "error": None,
                 "operation": {"id": OPERATION, "name": "00000000-aaaa-bbbb-cccc-000000000001",
                               "status": "Succeeded", "startTime": stamp, "endTime": stamp},
                 "requestedAt": stamp, "acceptedAt": stamp, "completedAt": stamp,
                 "durationSeconds": 10.1, "armRequests": 11, "reason": None,
                 "requestedBy": None}}).encode()


class Parts:
    """Each part as a call of no arguments, on its own files and connections."""

    def __init__(self, endpoint: str, folder: Path) -> None:
        now = dt.datetime.now(dt.UTC)
        self.message = poll_message(poll_state(endpoint, now), now)
        self.body_bytes = len(self.message.body)
        self._ids = itertools.count()  # every message id once (duplicate detection)
        self.bus = LocalBus(folder / "bus.sqlite")
        self.bus.ensure_queue("poll", max_delivery_count=10)
        self.bus.ensure_topic("events")
        self.bus.ensure_subscription("events", "all")
        self.received = self._cycle()
        self.event = event_body(now)
        self.ledger = SqliteLedger(folder / "ledger.sqlite")
        self.row = LedgerRow("floor", "", "done", json.loads(self.event)["data"], 1, now,
                             now + dt.timedelta(days=7))
        self.stored: LedgerRow | None = None  # the last claim, which the next write records
        url = endpoint + OPERATION
        host, port = endpoint.removeprefix("http://").split(":")
        self.raw = http.client.HTTPConnection(host, int(port))
        self.pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=1)
        self.arm = ArmClient(endpoint, "2024-11-01", StaticToken("t"))
        headers = {"Authorization": "Bearer t", "Accept": "application/json",
                   "x-ms-client-request-id": "floor"}
        self.calls: dict[str, Callable[[], object]] = {
            PARTS[0]: self._cycle,
            PARTS[1]: lambda: received_worker_message(self.received, data_type="binary"),
            STATE: lambda: poll_message(RunState.from_json(self.received.body), now),
            "http.client alone": lambda: self._raw_get(OPERATION, headers),
            "urllib3 pool": lambda: self.pool.urlopen("GET", OPERATION, headers=headers,
                                                      retries=False).data,
            "ArmClient": lambda: self.arm.get(url, SUB, "floor"),
            "ledger: one write": self._ledger_write,
            "event: one publish": lambda: self.bus.publish("events", [OutboundMessage(
                self.event, f"event-{next(self._ids)}")]),
        }

    def _cycle(self) -> Any:
        msg = dataclasses.replace(self.message, message_id=f"poll-{next(self._ids)}",
                                  scheduled_at=dt.datetime.now(dt.UTC))
        self.bus.send("poll", [msg])
        (received,) = self.bus.receive("poll", max_count=1)
        self.bus.complete(received)
        return received

    def _raw_get(self, path: str, headers: dict[str, str]) -> bytes:
        self.raw.request("GET", path, headers=headers)
        return self.raw.getresponse().read()

    def _ledger_write(self) -> object:
        """A claim (insert), then the record of its end (update), in turn."""
        if self.stored is None:
            self.stored = self.ledger.insert(dataclasses.replace(
                self.row, request_id=f"r{next(self._ids)}"))
            return self.stored
        recorded, self.stored = self.ledger.update(self.stored), None
        return recorded

    def close(self) -> None:
        self.raw.close()
        self.pool.close()
        self.bus.close()
        self.ledger.close()


def run(calls: int, rounds: int) -> dict[str, Any]:
    """Median CPU ms per call of each part over `rounds` alternating rounds."""
    keep_strptime_formats()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        endpoint = f"http://127.0.0.1:{int(server.stdout.readline())}"
        with tempfile.TemporaryDirectory(prefix="floor-") as folder:
            parts = Parts(endpoint, Path(folder))
            try:
                for call in parts.calls.values():  # warm-up: connections, caches, imports
                    measure(call, 200)
                runs: dict[str, list[float]] = {name: [] for name in parts.calls}
                for _ in range(rounds):
                    for name, call in parts.calls.items():
                        runs[name].append(measure(call, calls)[0])
                body_bytes = parts.body_bytes
            finally:
                parts.close()
    finally:
        server.terminate()
        server.wait(5)
    return {"calls": calls, "rounds": rounds, "poll_body_bytes": body_bytes,
            "ms": {name: statistics.median(values) for name, values in runs.items()},
            "runs": runs}


def floor(ms: dict[str, float], requests: float, http: str | None = None) -> dict[str, float]:
    """The floor per request and per flush from the parts, with one way of GET (the
    cheapest when `http` is None)."""
    http_ms = ms[http] if http else min(ms[way] for way in HTTP_WAYS)
    per_request = ms[PARTS[0]] + ms[PARTS[1]] + ms[STATE] + http_ms
    per_flush = requests * per_request + 2 * ms["ledger: one write"] + ms["event: one publish"]
    return {"http": http_ms, "per_request": per_request, "per_flush": per_flush}


def table(result: dict[str, Any], requests: float, target: float) -> list[list[str]]:
    """Section 3's floor table: each part, then the floor per flush with each way of GET
    against `target` (half the baseline's CPU per flush)."""
    ms = result["ms"]
    rows = [["the parts no step can skip, each alone (bench/cpu_floor.py, "
             f"{result['calls']} calls x {result['rounds']} rounds, median)",
             "CPU per call"]]
    rows += [[name, f"{ms[name]:.3f} ms"] for name in PARTS]
    for way in HTTP_WAYS:
        low = floor(ms, requests, way)
        rows.append([f"floor per flush, GET by {way}: {requests:g} x {low['per_request']:.3f} "
                     "ms + 2 ledger writes + 1 publish",
                     f"{low['per_flush']:.2f} ms = {low['per_flush'] / target:.2f}x the "
                     f"{target:.2f} ms allowed"])
    return rows


def note(result: dict[str, Any], ledger_writes: float | None) -> str:
    """What the floor table is and what it leaves out, for section 3's notes
    (`ledger_writes`: the app's per flush in section 3's runs of "now", when known)."""
    app = (f"the app's serve stored {ledger_writes:.2f} rows per flush in this section's "
           "runs: the request's row opened and closed, the target's claim, acceptance and "
           "end" if ledger_writes is not None else "the app writes more")
    return (
        "The floor table: each part a poll step cannot skip, measured alone in one thread "
        f"(bench/cpu_floor.py, {result['calls']} calls per round after a warm-up, the median "
        f"of {result['rounds']} rounds; time.process_time(), the HTTP server in another "
        f"process): the local bus's send of a real poll message ({result['poll_body_bytes']} "
        "bytes, scheduled now), its receive and complete; the worker's conversion of it "
        "(azure-functions' own converter, as in Azure); the poll state read from it and the "
        "next one written; one GET three ways: http.client alone (one keep-alive connection, "
        "nothing else), urllib3's pool called directly, and ArmClient (proxies resolved once, "
        "a deadline on every read, the pacer's bookkeeping). Per flush it adds two ledger "
        f"writes (a claim and the record of the end, the least exactly-once needs; {app}) "
        "and one event publish. It leaves out everything else an execution does: "
        "the step's decisions, the host's dispatch and its threads, the log lines, the "
        "ledger's reads. Alone and in one thread, each part runs warmer than inside the "
        "serve, where ten threads share the GIL: the floor is what these parts cost at best, "
        "with this local bus and the worker's converter; a bus cheaper than one SQLite "
        "transaction per send, receive and complete would lower it.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=float, default=11.0,
                        help="ARM requests (executions) per flush (section 3's 'now')")
    parser.add_argument("--target", type=float, default=None,
                        help="CPU ms per flush allowed (half the baseline's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.calls, args.rounds)
    if args.json:
        print(json.dumps(result))
        return 0
    ms = result["ms"]
    print(f"CPU of the parts, {args.calls} calls x {args.rounds} rounds (median), "
          f"poll body {result['poll_body_bytes']} bytes")
    for name in PARTS:
        print(f"| {name:<32} | {ms[name]:7.3f} ms |")
    for way in HTTP_WAYS:
        low = floor(ms, args.requests, way)
        print(f"floor with {way}: {low['per_request']:.3f} ms per request, "
              f"{low['per_flush']:.2f} ms per flush of {args.requests:g} requests"
              + (f" = {low['per_flush'] / args.target:.2f}x the target {args.target:.2f} ms"
                 if args.target else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
