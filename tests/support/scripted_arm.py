"""A real HTTP server on 127.0.0.1 that plays ARM from a per-test script.

Each route (method + raw path and query, exactly as the client must send it) has a queue of
answers; every request that arrives is recorded (method, raw request target, headers, body)
before it is answered, so a request the client gave up on (read timeout) still counts.
A request for a route with no script left is answered 404 and kept in `unexpected`, which
the fixtures assert is empty at the end of each test.

Operation URLs handed out by `new_operation` are absolute URLs on this server, shaped like
recorded ARM traffic: `.../providers/Microsoft.Cache/locations/West%20US%202/operationresults/
{guid}?api-version=2023-08-01&t=...&c=...&s=...&h=...`, with long signed parameters whose
values keep reserved characters percent-encoded (%2B %2F %3D), so that a client that
re-encodes or decodes the URL instead of using it verbatim misses the scripted route.
`new_enterprise_operation` gives the two URLs of an Azure Managed Redis flush
(`operationsStatus` and the resource-scoped signed `operationresults` Location), and the
list helpers give the list routes and items of docs/design.md, "Listing".
"""
from __future__ import annotations

import base64
import json
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

API_VERSION = "2023-08-01"
ENTERPRISE_API_VERSION = "2025-07-01"


@dataclass
class Answer:
    """One scripted HTTP answer; `delay` seconds pass before anything is written."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str | Mapping[str, Any] | list | None = None
    delay: float = 0.0

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        body = self.body
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = json.dumps(body).encode("utf-8")
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json; charset=utf-8"
        return data, headers


def answer(status: int, body: Any = None, *, delay: float = 0.0, **headers: str) -> Answer:
    """Shorthand: `answer(202, None, Location=url)`; underscores in header names become '-'."""
    return Answer(status, {k.replace("_", "-"): v for k, v in headers.items()}, body, delay)


@dataclass(frozen=True)
class Recorded:
    """One request as it reached the server."""

    method: str
    raw_path: str  # the request target exactly as sent: path and query, no normalisation
    headers: tuple[tuple[str, str], ...]
    body: bytes
    server: str  # host:port that received it
    at: float  # time.monotonic() on arrival
    when: Any = None  # the test's fake clock on arrival, when the server has one

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def client_request_id(self) -> str | None:
        return self.header("x-ms-client-request-id")

    @property
    def request_id(self) -> str | None:
        """The redisflush request this belongs to (client id `{requestId}:{target}.{step}` or
        `{requestId}:list.{page}.{step}`)."""
        cid = self.client_request_id
        return cid.rsplit(":", 1)[0] if cid and ":" in cid else None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Route:
    """The scripted answers of one (method, raw path) and the requests it received."""

    def __init__(self, method: str, raw_path: str) -> None:
        self.method = method
        self.raw_path = raw_path
        self.answers: deque[Answer] = deque()
        self.then: Answer | None = None  # answered forever once the queue is empty
        self.requests: list[Recorded] = []

    def next_answer(self) -> Answer | None:
        if self.answers:
            return self.answers.popleft()
        return self.then


@dataclass(frozen=True)
class Operation:
    """An operation URL this server answers: `path` (raw, verbatim) and absolute `url`."""

    path: str
    url: str
    name: str
    resource_id: str  # the `id` an OperationStatusResult carries (decoded location)

    def status(self, status: str, **extra: Any) -> dict[str, Any]:
        """An OperationStatusResult body for this operation."""
        return {"id": self.resource_id, "name": self.name, "status": status, **extra}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ScriptedArm

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.owner._lock:
            self.owner.connections += 1
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _handle(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        recorded = Recorded(self.command, self.path, tuple(self.headers.items()), body,
                            f"{self.server.server_address[0]}:{self.server.server_address[1]}",
                            time.monotonic(), owner.clock.now() if owner.clock else None)
        scripted = owner._take(recorded)
        if scripted is None:
            scripted = Answer(404, {}, {"error": {"code": "UnscriptedRequest",
                                                  "message": "no scripted answer"}})
        data, headers = scripted.encoded()
        if scripted.delay:
            time.sleep(scripted.delay)
        try:
            self.send_response(scripted.status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if data and self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass  # the client gave up (read timeout): nothing to answer
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


class ScriptedArm:
    """ARM played from a script, on a real socket on `host` (127.0.0.1 by default)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, seed: int = 7) -> None:
        self.host = host
        self.port = port
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[Recorded] = []
        self.unexpected: list[Recorded] = []
        self.connections = 0
        self.clock: Any = None  # anything with now(): stamps each Recorded.when
        self._lock = threading.Lock()
        # notified on each recorded request: a request the client gave up on (read timeout)
        # is recorded by its handler thread later, when a loaded machine schedules it
        self._recorded = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._random = random.Random(seed)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> ScriptedArm:
        server = _Server((self.host, self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name=f"scripted-arm-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: the port is closed (connection refused) until `start` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- script ---------------------------------------------------------------------------

    def on(self, method: str, raw_path: str, *answers: Answer, then: Answer | None = None
           ) -> Route:
        """Queue answers for `method raw_path`; `then` answers once the queue is used up."""
        key = (method.upper(), raw_path)
        with self._lock:
            route = self.routes.get(key)
            if route is None:
                route = self.routes[key] = Route(method.upper(), raw_path)
            route.answers.extend(answers)
            if then is not None:
                route.then = then
        return route

    def on_flush(self, sub: str, rg: str, cache: str, *answers: Answer,
                 then: Answer | None = None) -> Route:
        return self.on("POST", flush_path(sub, rg, cache), *answers, then=then)

    def on_operation(self, op: Operation, *answers: Answer, then: Answer | None = None
                     ) -> Route:
        return self.on("GET", op.path, *answers, then=then)

    def on_database(self, sub: str, rg: str, cluster: str, database: str, *answers: Answer,
                    then: Answer | None = None) -> Route:
        """GET of a Managed Redis database resource (it lists its geo-replication group)."""
        return self.on("GET", f"{database_id(sub, rg, cluster, database)}"
                              f"?api-version={ENTERPRISE_API_VERSION}", *answers, then=then)

    def on_enterprise_flush(self, sub: str, rg: str, cluster: str, database: str,
                            *answers: Answer, then: Answer | None = None) -> Route:
        return self.on("POST", enterprise_flush_path(sub, rg, cluster, database), *answers,
                       then=then)

    def on_list(self, path: str, *answers: Answer, then: Answer | None = None) -> Route:
        """A list page: `path` from `list_path`/`database_list_path`, or a nextLink's path."""
        return self.on("GET", path, *answers, then=then)

    def new_enterprise_operation(self, sub: str, rg: str, cluster: str, database: str, *,
                                 location: str = "West US 3") -> tuple[Operation, Operation]:
        """(Azure-AsyncOperation, Location) of one Managed Redis flush, as the published spec
        shapes them: `.../locations/{region}/operationsStatus/{id}` and the database's own
        signed `.../operationresults/{id}`; both OperationStatusResult ids name the former."""
        name = str(uuid.UUID(int=self._random.getrandbits(128), version=4))
        signed = (f"&t={self._random.randrange(10**17, 10**18)}&c={self._signed(1200)}"
                  f"&s={self._signed(344)}&h={self._signed(43)}")
        status_path = (f"/subscriptions/{sub}/providers/Microsoft.Cache/locations/"
                       f"{quote(location, safe='')}/operationsStatus/{name}"
                       f"?api-version={ENTERPRISE_API_VERSION}{signed}")
        result_path = (f"{database_id(sub, rg, cluster, database)}/operationresults/{name}"
                       f"?api-version={ENTERPRISE_API_VERSION}{signed}")
        rid = (f"/subscriptions/{sub}/providers/Microsoft.Cache/locations/"
               f"{location.replace(' ', '').lower()}/operationsStatus/{name}")
        return (Operation(status_path, self.endpoint + status_path, name, rid),
                Operation(result_path, self.endpoint + result_path, name, rid))

    def new_operation(self, sub: str, *, signed: bool = True, huge: bool = False,
                      location: str = "West US 2") -> Operation:
        """A fresh operation URL on this server, shaped like the recorded ARM traffic."""
        name = str(uuid.UUID(int=self._random.getrandbits(128), version=4))
        path = (f"/subscriptions/{sub}/providers/Microsoft.Cache/locations/"
                f"{quote(location, safe='')}/operationresults/{name}?api-version={API_VERSION}")
        if signed:
            path += (f"&t={self._random.randrange(10**17, 10**18)}"
                     f"&c={self._signed(4600 if huge else 1200)}"
                     f"&s={self._signed(344)}&h={self._signed(43)}")
        rid = (f"/subscriptions/{sub}/providers/Microsoft.Cache/locations/{location}"
               f"/operationresults/{name}")
        return Operation(path, self.endpoint + path, name, rid)

    def _signed(self, length: int) -> str:
        """A base64 signature-like value, percent-encoded as ARM sends it (%2B %2F %3D)."""
        raw = base64.b64encode(self._random.randbytes(length * 3 // 4 + 3)).decode()
        raw = raw[:length - 1] + "="
        return quote(raw, safe="")

    # -- what happened --------------------------------------------------------------------

    def _take(self, recorded: Recorded) -> Answer | None:
        with self._lock:
            self.requests.append(recorded)
            self._recorded.notify_all()
            route = self.routes.get((recorded.method, recorded.raw_path))
            if route is None:
                self.unexpected.append(recorded)
                return None
            route.requests.append(recorded)
            scripted = route.next_answer()
            if scripted is None:
                self.unexpected.append(recorded)
            return scripted

    def requests_for(self, request_id: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.request_id == request_id]

    def wait_requests(self, request_id: str, at_least: int, timeout: float) -> None:
        """Until `at_least` requests of `request_id` are recorded, or `timeout` passed."""
        with self._recorded:
            self._recorded.wait_for(lambda: sum(r.request_id == request_id
                                                for r in self.requests) >= at_least, timeout)

    def route(self, method: str, raw_path: str) -> Route:
        return self.routes[(method.upper(), raw_path)]


def flush_path(sub: str, rg: str, cache: str) -> str:
    """The raw path of the flush action, written out independently of redisflush.target."""
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/Redis/"
            f"{cache}/flush?api-version={API_VERSION}")


def cache_id(sub: str, rg: str, cache: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/Redis/{cache}"


def cluster_id(sub: str, rg: str, cluster: str) -> str:
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/"
            f"redisEnterprise/{cluster}")


def database_id(sub: str, rg: str, cluster: str, database: str = "default") -> str:
    return f"{cluster_id(sub, rg, cluster)}/databases/{database}"


def enterprise_flush_path(sub: str, rg: str, cluster: str, database: str = "default") -> str:
    """The raw path of a Managed Redis database flush (body `{"ids": [...]}`)."""
    return (f"{database_id(sub, rg, cluster, database)}/flush"
            f"?api-version={ENTERPRISE_API_VERSION}")


def database_body(sub: str, rg: str, cluster: str, database: str = "default", *,
                  linked: Iterable[str] = ()) -> dict[str, Any]:
    """A database resource as GET answers it; `linked` are the other members of its
    geo-replication group (the list ARM gives includes the database itself)."""
    own = database_id(sub, rg, cluster, database)
    members = [own, *linked]
    body: dict[str, Any] = {
        "id": own, "name": database, "type": "Microsoft.Cache/redisEnterprise/databases",
        "properties": {"provisioningState": "Succeeded", "resourceState": "Running",
                       "clientProtocol": "Encrypted", "port": 10000}}
    if linked:
        body["properties"]["geoReplication"] = {
            "groupNickname": "group-1",
            "linkedDatabases": [{"id": m, "state": "Linked"} for m in members]}
    return body


def list_path(sub: str, rg: str | None = None, kind: str = "redis") -> str:
    """The first page of a list: classic caches (`redis`) or clusters (`redisEnterprise`)."""
    scope = f"/subscriptions/{sub}" + (f"/resourceGroups/{rg}" if rg else "")
    version = ENTERPRISE_API_VERSION if kind == "redisEnterprise" else API_VERSION
    return f"{scope}/providers/Microsoft.Cache/{kind}?api-version={version}"


def database_list_path(sub: str, rg: str, cluster: str) -> str:
    return f"{cluster_id(sub, rg, cluster)}/databases?api-version={ENTERPRISE_API_VERSION}"


def cache_item(sub: str, rg: str, cache: str, tags: Mapping[str, str] | None = None
               ) -> dict[str, Any]:
    return {"id": cache_id(sub, rg, cache), "name": cache, "type": "Microsoft.Cache/Redis",
            "location": "West US 2", "tags": dict(tags or {}),
            "properties": {"provisioningState": "Succeeded"}}


def cluster_item(sub: str, rg: str, cluster: str, tags: Mapping[str, str] | None = None
                 ) -> dict[str, Any]:
    return {"id": cluster_id(sub, rg, cluster), "name": cluster,
            "type": "Microsoft.Cache/redisEnterprise", "location": "West US 3",
            "tags": dict(tags or {}), "sku": {"name": "Balanced_B5"},
            "properties": {"provisioningState": "Succeeded"}}


def database_item(sub: str, rg: str, cluster: str, database: str = "default"
                  ) -> dict[str, Any]:
    return {"id": database_id(sub, rg, cluster, database), "name": database,
            "type": "Microsoft.Cache/redisEnterprise/databases",
            "properties": {"provisioningState": "Succeeded"}}


def page(items: Iterable[Mapping[str, Any]], next_link: str | None = None) -> dict[str, Any]:
    """One list answer: `{"value": [...], "nextLink"?: URL}`."""
    body: dict[str, Any] = {"value": list(items)}
    if next_link is not None:
        body["nextLink"] = next_link
    return body


def closed_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def statuses(op: Operation, *names: str, code: int = 202,
             headers: Mapping[str, str] | None = None) -> Iterable[Answer]:
    """A run of status answers, e.g. `statuses(op, "InProgress", "InProgress")`."""
    return [Answer(code, dict(headers or {}), op.status(n)) for n in names]
