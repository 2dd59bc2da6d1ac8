"""Property-based fuzzing of ARM's answers, end to end: the real HTTP client against a raw
loopback server written here (so a status line, a repeated header or a body can be anything
that fits HTTP/1.1), the app on the memory bus and a fake clock.

Whatever ARM answers (any status, Location / Azure-AsyncOperation anywhere, Retry-After as a
number, a date, negative, huge or garbage, any body: not JSON, JSON of any type, `status` and
`percentComplete` of any type, error shapes), every cache ends with one completion event of a
documented status, no function raises, the chain ends within its deadline (no retry
forever), the POST goes out at most twice (README, "Reliability") and `armRequests` counts
the requests the server saw.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from redisflush.functions import install
from tests.support.harness import RG, SCOPE, SUB, Harness, check_event
from tests.support.memory_bus import FakeClock, MemoryBus

EXPLORE = bool(os.environ.get("FUZZ_RANDOM"))
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
                derandomize=not EXPLORE, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
STATUSES = ("Succeeded", "Failed", "Canceled", "TimedOut", "Rejected")


class RawArm:
    """An HTTP/1.1 server on 127.0.0.1 answering each request with the next scripted raw
    answer of its kind (`post`, `op`, `db`), the last one again once the script is used up."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.scripts: dict[str, deque[bytes]] = {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.posts: list[int] = []  # the status each POST was answered
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def script(self, kind: str, answers: list[bytes]) -> None:
        with self._lock:
            self.scripts[kind] = deque(answers)

    def reset(self) -> None:
        with self._lock:
            self.scripts.clear()
            self.seen.clear()
            self.posts.clear()

    def stop(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:])}
                length = int(headers.get("content-length") or 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                kind = ("post" if method == "POST" else "op" if path.startswith("/op/")
                        else "db")
                with self._lock:
                    self.seen.append((method, path, headers))
                    queue = self.scripts.get(kind) or deque([_response(404, [], b"")])
                    answer = queue.popleft() if len(queue) > 1 else queue[0]
                    if method == "POST":
                        self.posts.append(int(answer.split(b" ", 2)[1]))
                conn.sendall(answer)
            except OSError:
                return


def _response(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers] + [
        f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body


# --- what ARM may answer --------------------------------------------------------------------

NUMBER_TEXT = st.sampled_from([
    "0", "1", "7", "-5", "1.5", "99999999999", "1e400", "inf", "nan", "-0", " 3 ", "0x10",
    "9" * 400, "", "soon", "\u0661"]) | st.integers(-10 ** 6, 10 ** 12).map(str)
DATES = st.sampled_from([
    "Wed, 01 May 2024 12:00:05 GMT", "Wed, 01 May 2024 11:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT", "Thu, 01 Jan 1970 00:00:00 GMT",
    "Mon, 01 Jan 99999 00:00:00 GMT", "Wed, 01 May 2024 12:00:05 +9999",
    "2024-05-01T12:00:05Z", "Wed, 32 May 2024 12:00:05 GMT"])
URLS = st.sampled_from(["{op}", "{op}", "{op}&second=1", "/op/relative?x=1", "",
                        "http://127.0.0.2:1/op/evil", "https://evil.example/op/1",
                        "http://user:pw@{host}/op/1", "not a url", "{op}#frag",
                        "http://[::1/op", "{op} trailing"])


@st.composite
def headers(draw: st.DrawFn, host: str, op: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["Location", "Azure-AsyncOperation", "Retry-After",
                                     "retry-after-ms", "x-ms-retry-after-ms", "Content-Type"]))
        if name in ("Location", "Azure-AsyncOperation"):
            value = draw(URLS).format(op=op, host=host)
        elif name == "Content-Type":
            value = draw(st.sampled_from(["application/json", "text/html", "x"]))
        else:
            value = draw(NUMBER_TEXT | DATES)
        found.append((name, value))
    return found


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6)
STATUS_VALUES = st.sampled_from(["Succeeded", "succeeded", "Failed", "Canceled", "InProgress",
                                 "Running", "Accepted", "", "x" * 100]) | ANY_JSON
ERRORS = st.none() | ANY_JSON | st.fixed_dictionaries(
    {"code": st.none() | st.text(max_size=10) | st.integers(),
     "message": st.none() | st.text(max_size=20) | st.just("\ud800")},
    optional={"details": ANY_JSON, "target": ANY_JSON})


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["status", "status", "error", "json", "raw", "empty"]))
    if how == "status":
        doc: dict[str, Any] = {"status": draw(STATUS_VALUES)}
        if draw(st.booleans()):
            doc["percentComplete"] = draw(st.sampled_from([0, 50, 100, 101, -1, 1e308, "50"])
                                          | ANY_JSON)
        if draw(st.booleans()):
            doc["error"] = draw(ERRORS)
        return json.dumps(doc).encode("utf-8", "surrogatepass")
    if how == "error":
        return json.dumps({"error": draw(ERRORS)}).encode("utf-8", "surrogatepass")
    if how == "json":
        return json.dumps(draw(ANY_JSON)).encode()
    if how == "raw":
        return draw(st.binary(max_size=64) | st.sampled_from(
            [b"<html>", b"{", b"\xff\xfe", b'{"status": NaN}', b'{"status":"Succeeded"' * 3,
             b'{"percentComplete": 1e999, "status": "InProgress"}']))
    return b""


STATUS_CODES = st.sampled_from([200, 200, 201, 202, 202, 204, 400, 404, 409, 429, 500, 503,
                                504, 301, 302]) | st.integers(100, 599)


@st.composite
def answers(draw: st.DrawFn, host: str, op: str, *, most: int = 4) -> list[bytes]:
    return [_response(draw(STATUS_CODES), draw(headers(host, op)), draw(bodies()))
            for _ in range(draw(st.integers(1, most)))]


# --- the property ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def raw_arm() -> Iterator[RawArm]:
    server = RawArm()
    yield server
    server.stop()
    install(None)


CACHE_ID = f"{SCOPE}/providers/Microsoft.Cache/Redis/cache-01"
DATABASE_ID = f"{SCOPE}/providers/Microsoft.Cache/redisEnterprise/amr-1/databases/default"


def _database(raw_arm: RawArm, draw: Any) -> list[bytes]:
    alone = {"id": DATABASE_ID, "name": "default", "properties": {}}
    grouped = {"id": DATABASE_ID, "properties": {"geoReplication": {"linkedDatabases": [
        {"id": DATABASE_ID}, {"id": DATABASE_ID.replace("amr-1", "amr-2")}]}}}
    other = DATABASE_ID.replace("amr-1", "amr-2")
    linked = st.lists(st.sampled_from([DATABASE_ID, DATABASE_ID.upper(), other, other.upper(),
                                       other.replace(RG, "rg-elsewhere"), "", "/x"])
                      | ANY_JSON.map(lambda v: {"id": v}) | ANY_JSON, max_size=4)
    fuzzed = st.builds(lambda ids: {"id": DATABASE_ID, "properties": {"geoReplication": {
        "linkedDatabases": [i if isinstance(i, dict) else {"id": i, "state": "Linked"}
                            for i in ids] if isinstance(ids, list) else ids}}}, linked)
    body = draw(st.sampled_from([json.dumps(alone).encode(), json.dumps(grouped).encode()])
                | fuzzed.map(lambda d: json.dumps(d).encode()) | bodies())
    first = _response(draw(st.sampled_from([200, 200, 200, 404, 429, 500])), [], body)
    return [first, _response(200, [], json.dumps(alone).encode())]


@FUZZ
@given(data=st.data(), enterprise=st.booleans(), timeout=st.sampled_from([30, 60, 300]))
def test_any_arm_answers_end_each_cache_once_within_its_deadline(
        raw_arm: RawArm, data: st.DataObject, enterprise: bool, timeout: int) -> None:
    raw_arm.reset()
    op = f"{raw_arm.endpoint}/op/1?api-version=2023-08-01"
    host = f"127.0.0.1:{raw_arm.port}"
    raw_arm.script("post", data.draw(answers(host, op, most=3)))
    raw_arm.script("op", data.draw(answers(host, op, most=6)))
    if enterprise:
        raw_arm.script("db", _database(raw_arm, data.draw))
    clock = FakeClock()
    h = Harness.create(clock, MemoryBus(clock), _Endpoint(raw_arm.endpoint),  # type: ignore[arg-type]
                       timeouts=(1.0, 2.0))
    try:
        rid = DATABASE_ID if enterprise else CACHE_ID
        body: dict[str, Any] = {"resourceId": rid, "requestId": "fz", "timeoutSeconds": timeout}
        h.send_request(body)
        started = clock.now()
        done = h.run(allow_errors=True, max_steps=5000)
        # about one status read a second at most, retries spaced wider (docs/design.md)
        assert len(done) <= timeout + 30, (len(done), [d.at for d in done[-5:]])
        errors = [d.error for d in done if d.error is not None]
        assert not errors, f"a function raised: {errors[0]!r}"
        (event,) = h.events()
        doc = json.loads(event.message.body)
        status = doc["data"]["status"]
        assert status in STATUSES
        note(status)
        check_event(event.message, "fz", status, rid)
        # ARM refused every POST but the last (a transient status of its own) or its answer
        # was lost; at most two may have started a flush (README, "The one window left")
        posts = raw_arm.posts
        assert all(_refused(status) for status in posts[:-1]), posts
        assert sum(1 for status in posts if _lost(status) or 200 <= status < 300) <= 2, posts
        assert doc["data"]["armRequests"] == len(raw_arm.seen)
        # the deadline wins: the chain ends at it at the latest (plus one call's bound)
        assert clock.now() <= started + dt.timedelta(seconds=timeout + 60)
        assert h.bus.active.get(h.settings.poll_queue, []) == []
    finally:
        install(None)


def _refused(status: int) -> bool:
    """ARM's own transient refusal (408, 409, 429, 5xx), after which the POST is sent again,
    or a lost answer, sent again once."""
    return status in (408, 409, 429) or status >= 500 or _lost(status)


def _lost(status: int) -> bool:
    """No answer of ARM's own: a gateway's 502 or 504, or only an interim 1xx before the
    connection closed (the client sees no answer at all)."""
    return status < 200 or status in (502, 504)


class _Endpoint:
    """What Harness.create reads of a scripted server: its endpoint and a clock slot."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.clock: Any = None


# --- a selector's list pages ------------------------------------------------------------------

def _item(sub: str, rg: str, kind: str, name: str, tags: Any) -> dict[str, Any]:
    provider = "Redis" if kind == "redis" else "redisEnterprise"
    return {"id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/"
                  f"{provider}/{name}", "name": name, "tags": tags}


MATCHING = st.builds(_item, st.just(SUB), st.sampled_from([RG, RG.upper()]),
                     st.sampled_from(["redis", "redisEnterprise"]),
                     st.sampled_from(["c1", "c2", "C1", "amr-1"]), st.just({"app": "shop"}))
ITEMS = st.one_of(
    MATCHING, MATCHING, MATCHING,
    st.builds(_item, st.just(SUB), st.sampled_from([RG, RG.upper(), "rg-other"]),
              st.sampled_from(["redis", "redisEnterprise"]),
              st.sampled_from(["c1", "c2", "C1", "amr-1", "bad name", ""]),
              st.sampled_from([{"app": "shop"}, {"APP": "shop"}, {"app": "Shop"}, None, [],
                               "app=shop", {"app": 1}])),
    st.builds(_item, st.sampled_from(["00000000-0000-0000-0000-000000000000", "x"]),
              st.just(RG), st.just("redis"), st.just("c9"), st.just({"app": "shop"})),
    st.fixed_dictionaries({"id": ANY_JSON, "tags": ANY_JSON}),
    ANY_JSON)
LINKS = st.sampled_from([None, None, "{base}/list/2?api-version=2023-08-01", "/list/3",
                         "{base}/list/2?api-version=2023-08-01&$skiptoken=x",
                         "https://evil.example/list", "", 7, ["x"], "{self}"])


@st.composite
def pages(draw: st.DrawFn, base: str) -> bytes:
    how = draw(st.sampled_from(["page"] * 6 + ["raw"]))
    if how == "raw":
        return draw(bodies())
    items = st.lists(ITEMS, max_size=4)
    doc: dict[str, Any] = {"value": draw(st.one_of(items, items, items, ANY_JSON))}
    link = draw(LINKS)
    if isinstance(link, str):
        link = link.format(base=base, self=f"{base}/list/self")
    if link is not None:
        doc["nextLink"] = link
    return json.dumps(doc).encode()


@FUZZ
@given(data=st.data(), tags=st.booleans())
def test_any_list_pages_end_a_selector_request_once(raw_arm: RawArm, data: st.DataObject,
                                                    tags: bool) -> None:
    raw_arm.reset()
    base = raw_arm.endpoint
    host = f"127.0.0.1:{raw_arm.port}"
    raw_arm.script("db", [_response(data.draw(st.sampled_from([200] * 12 + [429, 503, 404])),
                                    data.draw(st.just([]) | headers(host, base)),
                                    data.draw(pages(base)))
                          for _ in range(data.draw(st.integers(1, 5)))])
    raw_arm.script("post", [_response(200, [], b"")])
    clock = FakeClock()
    h = Harness.create(clock, MemoryBus(clock), _Endpoint(base),  # type: ignore[arg-type]
                       timeouts=(1.0, 2.0))
    try:
        selector: dict[str, Any] = {"subscriptionId": SUB, "resourceGroup": RG}
        selector.update({"tags": {"app": "shop"}} if tags else {"all": True})
        h.send_request({"selector": selector, "requestId": "fz", "timeoutSeconds": 120})
        done = h.run(allow_errors=True, max_steps=2000)
        errors = [d.error for d in done if d.error is not None]
        assert not errors, f"a function raised: {errors[0]!r}"
        events = [json.loads(e.message.body) for e in h.events()]
        finals = [e for e in events if e["type"] == "RedisFlush.RequestCompleted"]
        assert len(finals) == 1, [e["id"] for e in events]
        request = finals[0]["data"]
        assert request["status"] in STATUSES
        note(f"{request['status']} {(request['error'] or {}).get('code')} "
             f"with {len(request['results'])} caches")
        caches = [e for e in events if e["type"] == "RedisFlush.FlushCompleted"]
        assert len(caches) == len(request["results"])
        assert request["armRequests"] == len(raw_arm.seen)
        for method, path, _ in raw_arm.seen:
            if method == "POST":
                assert path.lower().startswith(SCOPE.lower() + "/"), path
    finally:
        install(None)
