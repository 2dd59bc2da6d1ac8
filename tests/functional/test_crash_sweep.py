"""The crash-point sweep (docs/design.md, "Request ledger" and "Reliability rules"): the host
is killed at every point between "POST sent" and "message completed", Service Bus delivers the
message again when its lock expires, and the request runs to its end on a new host.

The real FlushApp, MemoryBus and ScriptedArm on loopback, with the MemoryLedger and the SQLite
ledger of the local default. A kill is an exception raised by a wrapper around the ledger,
the bus or the ARM client at that point, after which the invocation does nothing more; the
message is not abandoned (a dead host cannot) but becomes visible again a lock duration
later, and a fresh app (new ARM client, pacer, SQLite connection) takes over.

What must hold for every point, for a 1-target and a 3-target request:
- ARM sees exactly one flush POST per target once a POST was accepted and recorded; two only
  for a target whose POST was in flight at the kill (sent, its answer not yet recorded:
  nothing can tell whether ARM took it, so it is sent once more after the ledger's lease);
- exactly one event per target and one per request reach the topic (after its duplicate
  detection), all Succeeded.

The same holds on the paths of long and huge text (VARIANTS: a digest fingerprint, a cut
running status, a digest error code in the poll message, an accepted record skipped as too
long, a poll state too large to carry whole: an operation URL carried by reference to its
ledger row), each shown to be taken; and on a deadline that passes before the redelivery (no
POST after it; a cache whose flush went out is never said NotStarted), for Azure Cache for
Redis and Managed Redis. `pytest -s` prints the table.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from redisflush.bus import OutboundMessage
from redisflush.core import ledger_rules, next_message
from redisflush.functions import install
from redisflush.ledger import REQUEST_KEY, Ledger, LedgerRow, MemoryLedger, encode_data
from redisflush.local.bus_schema import DEFAULT_LOCK_SECONDS
from redisflush.local.ledger import SqliteLedger
from tests.support.harness import RG, SUB, Harness, resource_id
from tests.support.harness import database_id as amr_id
from tests.support.memory_bus import START, FakeClock, MemoryBus
from tests.support.scripted_arm import (
    Answer,
    ScriptedArm,
    database_body,
    enterprise_flush_path,
    flush_path,
)

REQUEST_COMPLETED = "RedisFlush.RequestCompleted"

# (name, what the kill interrupts); the order is the order a request passes them.
POINTS: Sequence[tuple[str, str]] = (
    ("before-claim", "before the ledger claim"),
    ("after-claim", "after the claim, before the POST"),
    ("post-in-flight", "POST in flight (ARM got it, no answer)"),
    ("accepted-unrecorded", "after ARM accepted, before the record"),
    ("between-records", "after the first target's record only"),
    ("after-record", "after the record"),
    ("after-schedule", "after the poll message was scheduled"),
    ("after-poll-schedule", "after a poll step scheduled the next"),
    ("after-event", "after the (first) event was published"),
    ("after-last-event", "after the request's last event"),
    ("before-complete", "before the request message completed"),
)
# The targets (by index) that see a second POST when the host dies at a point: their POST
# was sent and its acceptance not yet recorded. At every other point, every target: one.
REPOSTED: dict[str, Callable[[int], bool]] = {
    "post-in-flight": lambda i: True,
    "accepted-unrecorded": lambda i: True,
    "between-records": lambda i: i > 0,
}


class Crash(Exception):
    """The host died here."""


@dataclass
class Trip:
    """Where to kill the host: fires once, at the point's `nth` occurrence (1 = first)."""

    point: str
    targets: int
    fired: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    barrier: threading.Barrier = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.barrier = threading.Barrier(self.targets, timeout=10)

    def alive(self) -> None:
        """A dead host does nothing more in the invocation that was killed."""
        if self.fired:
            raise Crash(f"host already dead ({self.point})")

    def reached(self, event: str, at: dict[str, int]) -> None:
        """Count `event`; kill the host when the trip's point is in `at` and this is its
        `at[point]`-th occurrence."""
        with self._lock:
            self.counts[event] = self.counts.get(event, 0) + 1
            if self.fired or self.counts[event] != at.get(self.point):
                return
            self.fired = True
        raise Crash(f"killed {self.point}")

    def posts_in_flight(self) -> None:
        """Every POST of the invocation has reached ARM (they run side by side); the host dies
        before any answer is read."""
        if self.point != "post-in-flight" or self.fired:
            return
        self.barrier.wait()  # no thread passes until all `targets` POSTs were sent
        self.fired = True
        raise Crash("killed with the POSTs in flight")


class CrashingLedger:
    """The ledger port, killed at a claim (a target row's insert) or an accepted record."""

    def __init__(self, inner: Ledger, trip: Trip) -> None:
        self.inner, self.trip = inner, trip

    def insert(self, row: LedgerRow) -> LedgerRow | None:
        self.trip.alive()
        claim = row.key != REQUEST_KEY
        if claim:
            self.trip.reached("claiming", {"before-claim": 1})
        stored = self.inner.insert(row)
        if claim and stored is not None:
            self.trip.reached("claimed", {"after-claim": self.trip.targets})
        return stored

    def update(self, row: LedgerRow) -> LedgerRow | None:
        self.trip.alive()
        accepted = row.key != REQUEST_KEY and row.state == "accepted"
        if accepted:
            self.trip.reached("recording", {"accepted-unrecorded": 1})
        stored = self.inner.update(row)
        if accepted and stored is not None:
            self.trip.reached("recorded", {"between-records": 1,
                                           "after-record": self.trip.targets})
        return stored

    def get(self, request_id: str, key: str) -> LedgerRow | None:
        self.trip.alive()
        return self.inner.get(request_id, key)

    def rows(self, request_id: str) -> list[LedgerRow]:
        self.trip.alive()
        return self.inner.rows(request_id)

    def purge(self, now: Any) -> int:
        self.trip.alive()
        return self.inner.purge(now)


class CrashingBus:
    """The bus port, killed after the poll message was scheduled or an event published."""

    def __init__(self, inner: MemoryBus, trip: Trip, poll_queue: str) -> None:
        self.inner, self.trip, self.poll_queue = inner, trip, poll_queue

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        self.trip.alive()
        self.inner.send(queue, messages)
        if queue == self.poll_queue:
            self.trip.reached("scheduled", {"after-schedule": 1, "after-poll-schedule": 2})

    def publish(self, topic: str, messages: Sequence[OutboundMessage]) -> None:
        self.trip.alive()
        self.inner.publish(topic, messages)
        self.trip.reached("published", {"after-event": 1})
        if self.trip.targets == 1 or any(m.subject == REQUEST_COMPLETED for m in messages):
            self.trip.reached("published last", {"after-last-event": 1})


class CrashingArm:
    """The ARM client: a POST is sent, then the host dies before its answer is used."""

    def __init__(self, inner: Any, trip: Trip) -> None:
        self.inner, self.trip = inner, trip

    @property
    def pacer(self) -> Any:
        return self.inner.pacer

    def call(self, method: str, url: str, subscription_id: str, client_request_id: str,
             body: bytes | None = None, **kwargs: Any) -> Any:
        self.trip.alive()
        result = self.inner.call(method, url, subscription_id, client_request_id, body,
                                 **kwargs)
        if method == "POST":
            self.trip.posts_in_flight()
        return result


@dataclass
class Row:
    """One cell of the table: what one (point, ledger, request size) run gave."""

    posts: list[int]
    events: list[int]  # per target, then the request's (3 targets only)
    ended_at: float  # seconds from the request to its last event on the topic
    problems: list[str]


def both(url: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": url, "Location": url}


# The paths of today's fixes, each swept over the crash points (plain: the table above):
# - long-names: 3 caches in a resource group named in kana, with the request row's limit
#   lowered to 2,048 characters (ROW_LIMIT_FOR_LONG_NAMES) so that row keeps its fingerprint
#   as a digest, as it does past the real limit (docs/design.md, "Request ledger"; reaching
#   the real 30,000 takes about 43 such caches, too many to sweep);
# - huge-status: ARM's running status is 600 KB, cut to 64 characters in the poll message;
# - huge-code: Location polling whose 404 error code is 600 KB, kept as a digest in the poll
#   message's run of errors, before the operation's end;
# - too-long-record: an operation URL of 31,000 characters, so the `accepted` record is refused
#   as too long and skipped (README, "Reliability");
# - shed: operation URLs of 10,000 characters with the poll message's limit lowered to 30,000
#   bytes (SHED_LIMIT), so three followed targets do not fit: the longest URL is carried by
#   reference to its ledger row and read back when due, every cache followed to Succeeded
#   (docs/design.md, "Poll message"; 50 caches with 5.5 KB URLs against the real 192 KiB
#   are too many to sweep);
# - past-deadline: timeoutSeconds 45, less than the lock (60 s), so every redelivery of a killed
#   message comes after the deadline and reads the ledger before timing out: no POST then,
#   a flush ARM accepted read once, a claim never recorded accepted TimedOut in doubt;
# - past-deadline-amr: the same for Managed Redis databases, which read their geo group
#   before their claim.
VARIANTS = ("long-names", "huge-status", "huge-code", "too-long-record", "shed",
            "past-deadline", "past-deadline-amr")
SHED_URL, SHED_LIMIT = 10_000, 30_000
ROW_LIMIT_FOR_LONG_NAMES = 2_048
HUGE = 600_000
# The points a variant cannot reach: a record refused never counts as recorded.
UNREACHED: dict[str, tuple[str, ...]] = {"too-long-record": ("between-records", "after-record")}


def _post_path(variant: str, rg: str, cache: str) -> str:
    """The flush POST's path of one cache (a cluster's default database for Managed Redis)."""
    if variant == "past-deadline-amr":
        return enterprise_flush_path(SUB, rg, cache)
    return quote(flush_path(SUB, rg, cache), safe="/?=-")


def _arm_for(arm: ScriptedArm, variant: str, rg: str, cache: str, at_once: bool) -> None:
    """ARM's script for one cache: a flush accepted, one running read, then Succeeded."""
    flush = _post_path(variant, rg, cache)
    if variant == "past-deadline-amr":
        arm.on_database(SUB, rg, cache, "default",
                        then=Answer(200, {}, database_body(SUB, rg, cache)))
    if at_once:
        arm.on("POST", flush, then=Answer(200, {}, b""))
        return
    op = arm.new_operation(SUB)
    if variant == "huge-code":
        arm.on("POST", flush, then=Answer(202, {"Location": op.url}, b""))
        gone = Answer(404, {}, {"error": {"code": "E" * HUGE, "message": "not yet"}})
        arm.on_operation(op, gone, gone, then=Answer(200, {}, b""))
        return
    path, url = op.path, op.url
    if variant in ("too-long-record", "shed"):
        pad = "&pad=" + "p" * (31_000 if variant == "too-long-record" else SHED_URL)
        path, url = path + pad, url + pad
    arm.on("POST", flush, then=Answer(202, both(url), b""))
    running = {"status": "Running" + "x" * HUGE} if variant == "huge-status" else \
        op.status("InProgress")
    arm.on("GET", path, Answer(200, {}, running), then=Answer(200, {}, op.status("Succeeded")))


def run_point(point: str, targets: int, ledger_kind: str, tmp: Path, *, at_once: bool = False,
              variant: str = "plain") -> Row:
    """One request through a host killed at `point`, then redelivered to its end; `at_once`:
    ARM answers each flush 200 (done, no operation to follow) instead of 202."""
    clock, arm = FakeClock(), ScriptedArm(seed=11).start()
    bus = MemoryBus(clock)
    sqlite_path, memory = tmp / f"{point}-{targets}-{variant}.sqlite", MemoryLedger()

    def open_ledger() -> Ledger:
        """The ledger's storage as a new host opens it: the same memory, the same file."""
        return SqliteLedger(sqlite_path) if ledger_kind == "sqlite" else memory

    try:
        rg = "リソース" * 22 if variant == "long-names" else RG
        h = Harness.create(clock, bus, arm, ledger=open_ledger(),
                           allowed_scopes=(f"/subscriptions/{SUB}/resourceGroups/{rg}",))
        caches = ["cache-01"] if targets == 1 else ["cache-a", "cache-b", "cache-c"]
        if variant == "long-names":
            caches = [f"{'c' * 60}-{i:02d}" for i in range(targets)]
        for cache in caches:
            _arm_for(arm, variant, rg, cache, at_once)
        trip = Trip(point, targets)
        app = h.app
        app.ledger = CrashingLedger(app.ledger, trip)
        app.bus = CrashingBus(bus, trip, h.settings.poll_queue)
        app.arm = CrashingArm(app.arm, trip)  # type: ignore[assignment]
        ids = [amr_id(c) if variant == "past-deadline-amr" else resource_id(rg=rg, cache=c)
               for c in caches]
        body: dict[str, Any] = (
            {"resourceId": ids[0]} if targets == 1 else {"resourceIds": ids})
        if variant.startswith("past-deadline"):
            body["timeoutSeconds"] = PAST_DEADLINE_TIMEOUT
        rid = h.send_request(body, message_id=f"crash-{point}-{targets}")
        refusals = _Refusals()
        logging.getLogger("redisflush").addHandler(refusals)
        try:
            problems = drive(h, trip, open_ledger)
        finally:
            logging.getLogger("redisflush").removeHandler(refusals)
        if not trip.fired:
            problems.append("the crash point was never reached")
        posts = [len(arm.route("POST", _post_path(variant, rg, c)).requests) for c in caches]
        ids = [f"{rid}:completed"] if targets == 1 else \
            [f"{rid}:completed:{i}" for i in range(targets)] + [f"{rid}:completed"]
        published = [e for e in bus.messages(h.settings.events_topic)
                     if e.message.correlation_id == rid]
        events = [sum(1 for e in published if e.message_id == i) for i in ids]
        problems += _statuses_wrong(variant, point, targets, posts,
                                    [json.loads(e.message.body)["data"] for e in published
                                     if e.message_id != f"{rid}:completed" or targets == 1])
        if bus.dead_letters:
            problems.append(f"dead letters {list(bus.dead_letters)}")
        ledger = h.app.ledger
        states = {r.key: r.state for r in ledger.rows(rid)}
        if set(states.values()) != {"done"} or len(states) != targets + 1:
            problems.append(f"ledger rows {states}")
        problems += _variant_seen(variant, targets, refusals.lines,
                                  bus.messages(h.settings.poll_queue), point)
        request_row = ledger.get(rid, REQUEST_KEY)
        digest = bool(request_row and str(request_row.data.get("fingerprint")).startswith(
            "sha256:"))
        if digest != (variant == "long-names" and targets > 1):
            problems.append(f"request row's fingerprint digest: {digest}")
        ended = max(e.sent_at for e in published) if published else clock.now()
        if isinstance(ledger, SqliteLedger):
            ledger.close()
        return Row(posts, events, (ended - START).total_seconds(), problems)
    finally:
        install(None)
        arm.stop()


class _Refusals(logging.Handler):
    """The records a ledger refused as too long, as the app logs them (skipped, at error)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "not recorded accepted" in record.getMessage() and \
                "refuses the row" in record.getMessage():
            self.lines.append(record.getMessage()[:80])


PAST_DEADLINE_TIMEOUT = 45


def _statuses_wrong(variant: str, point: str, targets: int, posts: list[int],
                    events: list[dict[str, Any]]) -> list[str]:
    """Each cache's event: Succeeded, but for the variants that end some otherwise."""
    if variant.startswith("past-deadline"):
        problems = []
        for d, sent in zip(sorted(events, key=lambda d: d["resourceId"]), posts, strict=True):
            message = (d.get("error") or {}).get("message", "")
            name = d["resourceId"].split("/providers/")[-1]
            if d["status"] == "Succeeded" and sent:
                continue
            if d["status"] != "TimedOut":
                problems.append(f"{name}: {d['status']}")
            elif sent and "NotStarted" in message:
                # its flush went out: the event must not say it never started
                problems.append(f"{name}: POSTed, yet {message!r}")
            elif not sent and "NotStarted" not in message and "may or may not" not in message:
                # a claim whose POST never went out reads in the ledger as one in flight:
                # in doubt is all the app can say of it
                problems.append(f"{name}: never POSTed, yet {message!r}")
        return problems
    statuses = {d["status"] for d in events}
    return [] if statuses == {"Succeeded"} else [f"statuses {sorted(statuses)}"]


def _variant_seen(variant: str, targets: int, refused: list[str], polls: Sequence[Any],
                  point: str = "") -> list[str]:
    """What shows the variant's path was taken (else the sweep proves nothing of it)."""
    states = [json.loads(e.message.body) for e in polls]
    problems = [f"a poll message of {len(e.message.body)} bytes" for e in polls
                if variant.startswith("huge") and len(e.message.body) > 16_000]
    seen = {str(t.get("lastStatus")) for s in states for t in s["targets"]}
    codes = {str(t.get("locationError")) for s in states for t in s["targets"]}
    if variant == "huge-status" and not any(v.startswith("Runningxxx") and v.endswith("…")
                                            and len(v) == 64 for v in seen):
        problems.append(f"no poll message with the cut status: {sorted(seen)}")
    if variant == "huge-code" and not any(c.startswith("404:sha256:") for c in codes):
        problems.append(f"no poll message with the code's digest: {sorted(codes)}")
    if variant == "too-long-record" and len(refused) < targets:
        problems.append(f"accepted records refused as too long: {refused}")
    # killed between the records, the first cache is followed alone while the other two wait
    # out their claims' lease: three operation URLs are never carried at once
    by_reference = [t for s in states for t in s["targets"]
                    if str(t.get("pollUrl")).startswith("ledger:sha256:")]
    if variant == "shed" and targets > 1 and point != "between-records" and not by_reference:
        problems.append("no poll message carried an operation URL by reference")
    if variant == "shed" and any(len(e.message.body) > SHED_LIMIT for e in polls):
        problems.append("a poll message over the lowered limit")
    return problems


def drive(h: Harness, trip: Trip, open_ledger: Callable[[], Ledger]) -> list[str]:
    """Pump one delivery at a time; a killed host's message comes back when its lock
    expires, to a new host."""
    problems: list[str] = []
    lock = dt.timedelta(seconds=DEFAULT_LOCK_SECONDS)
    lost_completion = trip.point == "before-complete"
    for _ in range(500):
        done = h.bus.pump(h.app, limit=1)
        if not done:
            return problems
        (d,) = done
        if isinstance(d.error, Crash) and d.outcome == "abandoned":
            (envelope,) = [e for e in h.bus.active[d.queue] if e.message_id == d.message_id]
            envelope.visible_at = d.at + lock  # no abandon: the lock runs out
            restart(h, open_ledger)
        elif d.error is not None:
            problems.append(f"{d.message_id}: {d.outcome} {d.error!r}")
            restart(h, open_ledger)
        elif lost_completion and d.queue == h.settings.request_queue:
            # the function returned; the host died before the completion reached the broker
            lost_completion, trip.fired = False, True
            (envelope,) = [e for e in h.bus.accepted[d.queue] if e.message_id == d.message_id]
            envelope.visible_at = d.at + lock
            h.bus.active[d.queue].append(envelope)
            restart(h, open_ledger)
    problems.append("still running after 500 deliveries")
    return problems


def restart(h: Harness, open_ledger: Callable[[], Ledger]) -> None:
    """A new host: the old SQLite connection is gone with its process, the file stays."""
    old = h.app.ledger
    inner = getattr(old, "inner", old)
    if isinstance(inner, SqliteLedger):
        inner.close()
    h.restart(open_ledger())


# Past the deadline nothing is POSTed: a POST in flight at the kill is not sent again, and a
# claim made before it never goes out.
NOT_POSTED_PAST_DEADLINE = ("before-claim", "after-claim")


def expected_posts(point: str, targets: int, variant: str = "plain") -> list[int]:
    if variant.startswith("past-deadline"):
        return [0 if point in NOT_POSTED_PAST_DEADLINE else 1] * targets
    again = REPOSTED.get(point)
    return [2 if again and again(i) else 1 for i in range(targets)]


def test_every_crash_point_gives_one_post_per_accepted_target_and_one_event_each(
        tmp_path: Path) -> None:
    lines = [f"{'crash point':<40} {'ledger':<6} | {'1 target':<18} | 3 targets",
             f"{'':<40} {'':<6} | {'POSTs events end s':<18} | "
             "POSTs/cache  events/cache+request  end s"]
    failures: list[str] = []
    for point, label in POINTS:
        for ledger_kind in ("memory", "sqlite"):
            cells = []
            for targets in (1, 3):
                if point == "between-records" and targets == 1:
                    cells.append("(n/a)")
                    continue
                row = run_point(point, targets, ledger_kind, tmp_path)
                want_posts = expected_posts(point, targets)
                want_events = [1] * (targets + (1 if targets > 1 else 0))
                if row.posts != want_posts:
                    failures.append(f"{point}/{ledger_kind}/{targets}: POSTs {row.posts}, "
                                    f"want {want_posts}")
                if row.events != want_events:
                    failures.append(f"{point}/{ledger_kind}/{targets}: events {row.events}, "
                                    f"want {want_events}")
                failures += [f"{point}/{ledger_kind}/{targets}: {p}" for p in row.problems]
                if targets == 1:
                    cells.append(f"{row.posts[0]:<5} {row.events[0]:<6} {row.ended_at:>5.0f}")
                else:
                    per_cache = ",".join(map(str, row.events[:-1]))
                    cells.append(f"{','.join(map(str, row.posts)):<12} "
                                 f"{per_cache + ' + ' + str(row.events[-1]):<21} "
                                 f"{row.ended_at:>5.0f}")
            lines.append(f"{label:<40} {ledger_kind:<6} | {cells[0]:<18} | {cells[1]}")
    print("\n" + "\n".join(lines))
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_crash_point_holds_on_the_paths_of_long_and_huge_text(
        tmp_path: Path, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same sweep over a digest fingerprint, a cut running status, a digest error code
    and a record skipped as too long: one POST per cache (two only for a POST in flight at
    the kill), one event per cache and per request, nothing dead-lettered."""
    if variant == "long-names":
        monkeypatch.setattr(ledger_rules, "fits", lambda data: len(
            encode_data(data)) <= ROW_LIMIT_FOR_LONG_NAMES)
    if variant == "shed":
        monkeypatch.setattr(next_message, "MAX_MESSAGE_BYTES", SHED_LIMIT)
    failures: list[str] = []
    for point, _ in POINTS:
        if point in UNREACHED.get(variant, ()):
            continue
        for ledger_kind in ("memory", "sqlite"):
            for targets in (1, 3):
                if point == "between-records" and targets == 1:
                    continue
                row = run_point(point, targets, ledger_kind, tmp_path, variant=variant)
                where = f"{variant}/{point}/{ledger_kind}/{targets}"
                want_posts = expected_posts(point, targets, variant)
                if row.posts != want_posts:
                    failures.append(f"{where}: POSTs {row.posts}, want {want_posts}")
                want_events = [1] * (targets + (1 if targets > 1 else 0))
                if row.events != want_events:
                    failures.append(f"{where}: events {row.events}, want {want_events}")
                failures += [f"{where}: {p}" for p in row.problems]
    assert failures == [], "\n".join(failures)


# With a 200 there is no acceptance to record and no chain: the points that remain.
AT_ONCE_POINTS = ("before-claim", "after-claim", "post-in-flight", "after-event",
                  "after-last-event", "before-complete")


@pytest.mark.parametrize("ledger_kind", ["memory", "sqlite"])
@pytest.mark.parametrize("point", AT_ONCE_POINTS)
def test_flushes_answered_at_once_are_recorded_before_any_event_goes_out(
        tmp_path: Path, point: str, ledger_kind: str) -> None:
    """Every target's outcome is recorded before the first event: a host killed after an
    event never POSTs a later target again."""
    for targets in (1, 3):
        row = run_point(point, targets, ledger_kind, tmp_path, at_once=True)
        assert row.problems == [], row.problems
        assert row.posts == expected_posts(point, targets), row.posts
        assert row.events == [1] * (targets + (1 if targets > 1 else 0)), row.events


@pytest.mark.parametrize("point", ["after-event", "after-last-event"])
def test_every_copy_of_an_event_says_what_the_ledger_keeps(tmp_path: Path, point: str) -> None:
    """A host killed between a step's events: the redelivery reads the rows the step
    recorded and announces them, so a repeat after the duplicate window re-publishes the
    very same content under each id."""
    clock, arm = FakeClock(), ScriptedArm(seed=11).start()
    bus = MemoryBus(clock)
    memory = MemoryLedger()
    try:
        h = Harness.create(clock, bus, arm, ledger=memory)
        caches = ["cache-a", "cache-b", "cache-c"]
        for cache in caches:
            op = arm.new_operation(SUB)
            arm.on_flush(SUB, RG, cache, then=Answer(202, both(op.url), b""))
            arm.on_operation(op, Answer(200, {}, op.status("InProgress")),
                             then=Answer(200, {}, op.status("Succeeded")))
        trip = Trip(point, 3)
        h.app.ledger = CrashingLedger(h.app.ledger, trip)
        h.app.bus = CrashingBus(bus, trip, h.settings.poll_queue)
        body = {"resourceIds": [resource_id(cache=c) for c in caches], "requestId": "same"}
        h.send_request(body, message_id="first")
        assert drive(h, trip, lambda: memory) == [] and trip.fired
        clock.advance(11 * 60)  # past the duplicate window: the repeat publishes again
        h.send_request(body, message_id="repeat")
        h.run()
        copies: dict[str, list[bytes]] = {}
        for e in bus.messages(h.settings.events_topic):
            copies.setdefault(e.message_id, []).append(e.message.body)
        assert sorted(copies) == ["same:completed", *(f"same:completed:{i}" for i in range(3))]
        assert all(len(c) == 2 and c[0] == c[1] for c in copies.values()), copies
    finally:
        install(None)
        arm.stop()
