"""arm.py ArmClient against real loopback servers: the general call, the whole-call time limit
(arm_deadline.py), which exceptions become ArmFailure, proxies resolved once, in-flight counts,
escaped logs (and logtext.printable, which escapes them)."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import urllib3
from hypothesis import given, settings
from hypothesis import strategies as st

from redisflush import arm
from redisflush.arm import (
    MAX_BODY,
    MAX_LIST_BODY,
    TOTAL_TIMEOUT,
    UNTRUSTED_URL,
    ArmAnswer,
    ArmClient,
    ArmFailure,
)
from redisflush.arm_tokens import StaticToken
from redisflush.core import answers
from redisflush.core.answers import LowerCaseHeaders
from redisflush.core.lro import header
from redisflush.logtext import printable

SUB = "00000000-1111-2222-3333-444444444444"
LOCK_SECONDS = 60  # the Service Bus lock every invocation must finish within


# --- servers ----------------------------------------------------------------------------------

@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    url: str
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))


@pytest.fixture
def server() -> Iterator[Server]:
    """A threaded HTTP/1.1 server: 200 + JSON; `/hold` waits for `release` before answering."""
    state = Server("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.seen.append(Seen(self.command, self.path,
                                   {k.lower(): v for k, v in self.headers.items()}, body))
            if self.path.startswith("/hold"):
                state.arrived.release()
                state.release.wait(10)
            payload = b'{"status":"Succeeded"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()


class RawServer:
    """A loopback TCP server that plays `script(conn)` for each connection (a hostile ARM)."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._script = script
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._play, args=(conn,), daemon=True).start()

    def _play(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            self._script(conn)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    made: list[RawServer] = []

    def make(script: Callable[[socket.socket], None]) -> RawServer:
        made.append(RawServer(script))
        return made[-1]
    yield make
    for s in made:
        s.close()


def trickle(head: bytes, body: bytes, every: float) -> Callable[[socket.socket], None]:
    """Send `head` at once, then `body` one byte every `every` seconds."""
    def script(conn: socket.socket) -> None:
        conn.sendall(head)
        for byte in body:
            conn.sendall(bytes([byte]))
            time.sleep(every)
    return script


def client(url: str, **kwargs: Any) -> ArmClient:
    return ArmClient(url, "2023-08-01", StaticToken("tok"), **kwargs)


# --- the general call -------------------------------------------------------------------------

def test_post_with_a_json_body_sends_it_with_its_content_type(server: Server) -> None:
    body = json.dumps({"ids": []}).encode()
    answer = client(server.url).call("POST", f"{server.url}/flush?api-version=1", SUB, "rid-1",
                                     body)
    assert isinstance(answer, ArmAnswer) and answer.status == 200
    (seen,) = server.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/flush?api-version=1", body)
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["content-length"] == str(len(body))
    assert seen.headers["authorization"] == "Bearer tok"
    assert seen.headers["x-ms-client-request-id"] == "rid-1"


def test_content_type_can_be_chosen(server: Server) -> None:
    client(server.url).call("PUT", f"{server.url}/x", SUB, "r", b"<a/>",
                            content_type="application/xml")
    assert server.seen[0].headers["content-type"] == "application/xml"


def test_post_without_a_body_sends_content_length_zero(server: Server) -> None:
    arm_client = client(server.url)
    assert isinstance(arm_client.post(f"{server.url}/flush", SUB, "r"), ArmAnswer)
    assert isinstance(arm_client.call("POST", f"{server.url}/flush", SUB, "r"), ArmAnswer)
    for seen in server.seen:
        assert seen.headers["content-length"] == "0" and "content-type" not in seen.headers
        assert seen.body == b""


def test_get_sends_no_body_headers(server: Server) -> None:
    answer = client(server.url).get(f"{server.url}/op?api-version=1", SUB, "r")
    assert isinstance(answer, ArmAnswer)
    assert answer.body == b'{"status":"Succeeded"}'
    assert answer.headers["content-type"] == "application/json"
    # lower-cased and marked so: lro.header looks names up directly
    assert type(answer.headers) is LowerCaseHeaders and header(answer.headers, "Content-Type")
    (seen,) = server.seen
    assert seen.method == "GET"
    assert "content-length" not in seen.headers and "content-type" not in seen.headers


def test_answer_types_live_in_the_core_and_are_re_exported() -> None:
    assert arm.ArmAnswer is answers.ArmAnswer and arm.ArmFailure is answers.ArmFailure
    assert arm.UNTRUSTED_URL is answers.UNTRUSTED_URL and arm.error_detail is answers.error_detail


def test_an_untrusted_url_gets_no_token_and_no_request(server: Server) -> None:
    result = client(server.url).get("http://127.0.0.2:1/x", SUB, "r")
    assert isinstance(result, ArmFailure)
    assert (result.code, result.sent) == (UNTRUSTED_URL, False)
    assert server.seen == []


# --- the whole-call limit ---------------------------------------------------------------------

def test_the_call_limit_stays_below_the_service_bus_lock() -> None:
    assert TOTAL_TIMEOUT + arm.CONNECT_TIMEOUT < LOCK_SECONDS
    assert client("https://management.azure.com").total_timeout == TOTAL_TIMEOUT


def test_a_body_that_trickles_is_cut_at_the_limit(raw_server) -> None:
    # One byte a second: each socket read succeeds, so a per-read timeout never trips.
    hostile = raw_server(trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                                 b"x" * 100, every=1.0))
    started = time.monotonic()
    result = client(hostile.url, total_timeout=2.0, timeouts=(2.0, 5.0)).get(
        f"{hostile.url}/op", SUB, "r")
    took = time.monotonic() - started
    assert isinstance(result, ArmFailure)
    assert result.code == "Timeout" and result.sent is True
    assert 1.9 <= took < 3.0


def test_an_answer_over_the_size_limit_is_a_failure_not_a_cut_body(raw_server) -> None:
    """A body cut at the limit would read as broken JSON (a list page as ListInvalidJson):
    the failure says what happened; a list page may be larger than a status body."""
    page = b'{"value": [' + b",".join([b'{"id": "x"}'] * 120_000) + b"]}"
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(page)}\r\n\r\n").encode()

    def script(conn: socket.socket) -> None:
        conn.sendall(head + page)

    arm = raw_server(script)
    assert len(page) > MAX_BODY
    cut = client(arm.url).get(f"{arm.url}/list", SUB, "r1")
    assert isinstance(cut, ArmFailure) and cut.code == "AnswerTooLarge" and cut.sent
    whole = client(arm.url).call("GET", f"{arm.url}/list", SUB, "r2", max_body=MAX_LIST_BODY)
    assert isinstance(whole, ArmAnswer) and whole.body == page


def test_headers_that_trickle_are_cut_at_the_limit(raw_server) -> None:
    hostile = raw_server(trickle(b"", b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200, every=0.2))
    started = time.monotonic()
    result = client(hostile.url, total_timeout=1.5, timeouts=(2.0, 5.0)).get(
        f"{hostile.url}/op", SUB, "r")
    assert isinstance(result, ArmFailure) and result.code == "Timeout"
    assert time.monotonic() - started < 2.5


def test_a_chunked_body_that_trickles_is_cut_at_the_limit(raw_server) -> None:
    hostile = raw_server(trickle(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                 b"1\r\nx\r\n" * 100, every=0.2))
    started = time.monotonic()
    result = client(hostile.url, total_timeout=1.5, timeouts=(2.0, 5.0)).get(
        f"{hostile.url}/op", SUB, "r")
    assert isinstance(result, ArmFailure) and result.code == "Timeout"
    assert time.monotonic() - started < 2.5


def test_an_arm_that_never_answers_is_a_timeout(raw_server) -> None:
    silent = raw_server(lambda conn: time.sleep(10))
    started = time.monotonic()
    result = client(silent.url, total_timeout=1.0).get(f"{silent.url}/op", SUB, "r")
    assert isinstance(result, ArmFailure) and result.code == "Timeout"
    assert time.monotonic() - started < 2.0


def test_the_connection_is_reused_after_a_call_within_the_limit(server: Server) -> None:
    arm_client = client(server.url, total_timeout=5.0)
    for _ in range(3):
        assert isinstance(arm_client.get(f"{server.url}/op", SUB, "r"), ArmAnswer)
    # the socket timeout left by the deadline reads does not break the next call
    time.sleep(0.05)
    assert isinstance(arm_client.get(f"{server.url}/op", SUB, "r"), ArmAnswer)


def test_kept_connections_probe_an_idle_flow_so_azures_nat_does_not_drop_it(
        server: Server) -> None:
    """Azure's outbound NAT drops a flow idle for 4 minutes without a reset: a POST on such
    a kept connection would wait out its limit and be in doubt (docs/azure.md)."""
    arm_client = client(server.url)
    assert isinstance(arm_client.get(f"{server.url}/op", SUB, "r"), ArmAnswer)
    manager = arm_client._session.get_adapter(server.url).poolmanager
    kept = [conn.sock for key in list(manager.pools.keys())
            for conn in list(manager.pools[key].pool.queue)
            if conn is not None and conn.sock is not None]
    assert kept, "the call's connection is kept for the next one"
    for sock in kept:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # urllib3's own
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 20
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3


# --- what becomes an ArmFailure ---------------------------------------------------------------

def test_refused_connection_is_a_failure_that_was_never_sent() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    result = client(url).get(f"{url}/op", SUB, "r")
    assert isinstance(result, ArmFailure)
    assert (result.code, result.sent) == ("ConnectionError", False)


def test_a_garbage_answer_is_a_connection_error(raw_server) -> None:
    hostile = raw_server(lambda conn: (conn.sendall(b"NOT HTTP AT ALL\r\n\r\n"), conn.close()))
    result = client(hostile.url).get(f"{hostile.url}/op", SUB, "r")
    assert isinstance(result, ArmFailure) and result.code == "ConnectionError"
    assert result.sent  # the request went out: ARM may have acted on it


def test_a_proxy_that_refuses_the_tunnel_sent_nothing(raw_server, monkeypatch) -> None:
    """The CONNECT line goes to the proxy, not to ARM: a refused tunnel is a request that
    never left."""
    def refuse(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    proxy = raw_server(refuse)
    _proxy_env(monkeypatch, None, None)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    endpoint = "https://management.example.invalid"
    result = client(endpoint).call("POST", f"{endpoint}/flush", SUB, "r")
    assert isinstance(result, ArmFailure) and result.sent is False
    assert proxy.connections  # it did go through the proxy


def test_a_session_of_the_callers_own_counts_a_timeout_as_sent(raw_server) -> None:
    """Its connections do not say when bytes went out: a POST that timed out there stays in
    doubt (it may have reached ARM), as the default session's would."""
    silent = raw_server(lambda conn: time.sleep(5))
    own = requests.Session()
    own.trust_env = False
    for kwargs in ({}, {"session": own}):
        result = client(silent.url, total_timeout=0.5, timeouts=(0.5, 0.5), **kwargs).call(
            "POST", f"{silent.url}/flush", SUB, "r")
        assert isinstance(result, ArmFailure) and result.code == "Timeout" and result.sent


def test_a_tls_handshake_that_fails_sent_nothing(raw_server) -> None:
    """A certificate-inspecting proxy or a plain-HTTP port: no request reached ARM, so a
    POST that failed so is not in doubt (core.flush_steps)."""
    plain = raw_server(lambda conn: (conn.sendall(b"HTTP/1.1 400 Bad Request\r\n"
                                                  b"Content-Length: 0\r\n\r\n"), conn.close()))
    url = plain.url.replace("http://", "https://")
    result = client(url).call("POST", f"{url}/flush", SUB, "r")
    assert isinstance(result, ArmFailure) and result.code == "ConnectionError"
    assert result.sent is False


class RaisingAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose pool raises `error` when the request is sent."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def urlopen(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def raising_client(error: BaseException) -> ArmClient:
    session = requests.Session()
    session.mount("https://", RaisingAdapter(error))
    return ArmClient("https://management.azure.com", "1", StaticToken("t"), session=session)


@pytest.mark.parametrize("error, code", [
    (requests.ConnectionError("reset"), "ConnectionError"),
    (requests.ReadTimeout("slow"), "Timeout"),
    (urllib3.exceptions.ProtocolError("broken"), "ConnectionError"),
    (urllib3.exceptions.ReadTimeoutError(None, "/", "slow"), "Timeout"),
    (ConnectionResetError("reset by peer"), "ConnectionError"),
    (OSError("network is unreachable"), "ConnectionError"),
    (TimeoutError("timed out"), "Timeout"),
])
def test_network_errors_become_failures(error: BaseException, code: str) -> None:
    result = raising_client(error).get("https://management.azure.com/op", SUB, "r")
    assert isinstance(result, ArmFailure) and result.code == code


@pytest.mark.parametrize("error", [TypeError("bad call"), AttributeError("no such thing"),
                                   KeyError("k"), ZeroDivisionError()])
def test_programming_errors_propagate(error: BaseException) -> None:
    with pytest.raises(type(error)):
        raising_client(error).get("https://management.azure.com/op", SUB, "r")


def test_a_token_error_is_a_failure_that_was_never_sent(server: Server) -> None:
    class NoToken:
        def token(self, scope: str) -> str:
            raise RuntimeError("no identity\nFORGED line")

    result = ArmClient(server.url, "1", NoToken()).get(f"{server.url}/op", SUB, "r")
    assert isinstance(result, ArmFailure)
    assert (result.code, result.sent) == ("TokenUnavailable", False)
    assert "\n" not in result.message
    assert server.seen == []


# --- proxies: resolved once, still honoured ---------------------------------------------------

def test_the_session_never_reads_the_environment_per_call(server: Server,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"proxies": 0, "netrc": 0}
    real_proxies, real_netrc = requests.utils.get_environ_proxies, requests.utils.get_netrc_auth

    def counting_proxies(*args: Any, **kwargs: Any) -> Any:
        calls["proxies"] += 1
        return real_proxies(*args, **kwargs)

    def counting_netrc(*args: Any, **kwargs: Any) -> Any:
        calls["netrc"] += 1
        return real_netrc(*args, **kwargs)

    for module in (requests.utils, requests.sessions):
        monkeypatch.setattr(module, "get_environ_proxies", counting_proxies, raising=False)
        monkeypatch.setattr(module, "get_netrc_auth", counting_netrc, raising=False)
    monkeypatch.setattr(arm, "get_environ_proxies", counting_proxies)
    arm_client = client(server.url)
    assert calls == {"proxies": 1, "netrc": 0}  # once, when the client is built
    for _ in range(5):
        assert isinstance(arm_client.get(f"{server.url}/op", SUB, "r"), ArmAnswer)
    assert calls == {"proxies": 1, "netrc": 0}


@pytest.fixture
def proxy() -> Iterator[Server]:
    """An HTTP proxy stand-in: records the absolute-form request line and answers itself."""
    state = Server("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state.seen.append(Seen(self.command, self.path, dict(self.headers), b""))
            payload = b'{"status":"Succeeded","via":"proxy"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _proxy_env(monkeypatch: pytest.MonkeyPatch, proxy_url: str | None,
               no_proxy: str | None) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                 "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
    if no_proxy:
        monkeypatch.setenv("NO_PROXY", no_proxy)


def test_an_environment_proxy_is_used(server: Server, proxy: Server,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _proxy_env(monkeypatch, proxy.url, None)
    arm_client = client(server.url)
    assert arm_client.proxies.get("http") == proxy.url
    answer = arm_client.get(f"{server.url}/op?api-version=1", SUB, "r")
    assert isinstance(answer, ArmAnswer) and b"proxy" in answer.body
    assert proxy.seen[0].path == f"{server.url}/op?api-version=1"  # absolute form: a proxy
    assert server.seen == []


def test_no_proxy_is_honoured_for_the_endpoint(server: Server, proxy: Server,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _proxy_env(monkeypatch, proxy.url, "localhost,127.0.0.1")
    arm_client = client(server.url)
    assert arm_client.proxies == {}
    assert isinstance(arm_client.get(f"{server.url}/op", SUB, "r"), ArmAnswer)
    assert proxy.seen == [] and len(server.seen) == 1


def test_proxy_settings_are_read_when_the_client_is_built(server: Server, proxy: Server,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _proxy_env(monkeypatch, None, None)
    arm_client = client(server.url)
    _proxy_env(monkeypatch, proxy.url, None)  # changed afterwards: not seen by this client
    assert isinstance(arm_client.get(f"{server.url}/op", SUB, "r"), ArmAnswer)
    assert proxy.seen == [] and len(server.seen) == 1


def test_the_deadline_also_holds_through_a_proxy(raw_server,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    hostile_proxy = raw_server(trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                                       b"x" * 100, every=0.3))
    _proxy_env(monkeypatch, hostile_proxy.url, None)
    endpoint = "http://127.0.0.1:9"  # never reached: the proxy answers
    started = time.monotonic()
    result = client(endpoint, total_timeout=1.0).get(f"{endpoint}/op", SUB, "r")
    assert isinstance(result, ArmFailure) and result.code == "Timeout"
    assert time.monotonic() - started < 2.0


# --- in-flight counts -------------------------------------------------------------------------

def test_in_flight_counts_reads_and_writes_per_subscription(server: Server) -> None:
    arm_client = client(server.url)
    other = "00000000-0000-0000-0000-00000000000b"
    jobs = [("GET", SUB)] * 4 + [("POST", SUB)] * 2 + [("GET", other)]
    threads = [threading.Thread(target=arm_client.call,
                                args=(method, f"{server.url}/hold", sub, "r"))
               for method, sub in jobs]
    for thread in threads:
        thread.start()
    for _ in jobs:
        assert server.arrived.acquire(timeout=5)
    assert arm_client.in_flight(SUB, "reads") == 4
    assert arm_client.in_flight(SUB.upper(), "writes") == 2
    assert arm_client.in_flight(other, "reads") == 1
    assert arm_client.in_flight(other, "writes") == 0
    server.release.set()
    for thread in threads:
        thread.join(5)
    assert [arm_client.in_flight(s, k) for s in (SUB, other) for k in ("reads", "writes")] == \
        [0, 0, 0, 0]


def test_in_flight_goes_back_down_after_a_failure_or_an_exception() -> None:
    refused = raising_client(requests.ConnectionError("x"))
    refused.get("https://management.azure.com/op", SUB, "r")
    assert refused.in_flight(SUB, "reads") == 0
    broken = raising_client(TypeError("bug"))
    with pytest.raises(TypeError):
        broken.post("https://management.azure.com/op", SUB, "r")
    assert broken.in_flight(SUB, "writes") == 0


# --- log lines --------------------------------------------------------------------------------

FORGED = "/op\u2028FORGED 2030-01-01 INFO flushed\x1b[2K\r\nINFO more"


def test_log_lines_escape_urls(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="redisflush.arm")
    arm_client = client(server.url)
    arm_client.get(server.url + FORGED, SUB, "r")
    arm_client.get("https://evil.example" + FORGED, SUB, "r")
    raising_client(OSError("down")).get("https://management.azure.com" + FORGED, SUB, "r")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    for line in lines:
        assert not any(c in line for c in "\u2028\x1b\r\n"), line
        assert "\\u2028FORGED" in line


def test_failure_messages_are_one_line() -> None:
    untrusted = client("https://management.azure.com").get("https://evil.example" + FORGED,
                                                           SUB, "r")
    failed = raising_client(OSError("down")).get("https://management.azure.com" + FORGED,
                                                 SUB, "r")
    for result in (untrusted, failed):
        assert isinstance(result, ArmFailure)
        assert not any(c in result.message for c in "\u2028\x1b\r\n"), result.message


# --- logtext.printable: any value from a message or ARM, on one line ------------------------------

@pytest.mark.parametrize("value, expected", [
    ("req-1", "req-1"),
    ("a\nb", "a\\nb"),
    ("a\r\nINFO forged", "a\\r\\nINFO forged"),
    ("tab\there", "tab\\there"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("line\u2028sep\u2029para\x85nel", "line\\u2028sep\\u2029para\\x85nel"),
    ("bidi\u202eevil\u200bzw\ufeffbom", "bidi\\u202eevil\\u200bzw\\ufeffbom"),
    ("\x00\x07\x7f", "\\x00\\x07\\x7f"),
    ("vt\x0bff\x0c", "vt\\x0bff\\x0c"),
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
    ("tag \U000e0041", "tag \\U000e0041"),
    ("already \\n escaped", "already \\\\n escaped"),  # an escape cannot be faked either
    ("café ü 日本", "café ü 日本"),  # printable text stays readable
    (b"bytes\n\xff", "bytes\\n\\\\xff"),
    (None, "None"),
    (42, "42"),
])
def test_printable_escapes_every_line_and_format_control(value, expected):
    assert printable(value) == expected


def test_printable_cuts_at_the_limit_with_an_ellipsis_and_never_mid_escape():
    assert printable("x" * 500) == "x" * 199 + "…"
    assert len(printable("x" * 500, 50)) == 50
    assert printable("abc", 3) == "abc"
    assert printable("abcd", 3) == "ab…"
    assert printable("ab\ncd", 4) == "ab…"  # "\n" would straddle the cut
    assert printable("\n" * 10, 7) == "\\n\\n\\n…"


def test_printable_survives_a_hostile_str():
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert printable(Hostile()) == "<unprintable Hostile>"


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(1, 300))
def test_printable_output_is_one_line_of_bounded_length(text: str, limit: int) -> None:
    shown = printable(text, limit)
    assert len(shown) <= limit
    assert "\n" not in shown and "\r" not in shown and len(shown.splitlines() or [""]) == 1
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp", "Cs") for c in shown)


def test_a_closed_pool_is_picked_again(server: Server) -> None:
    arm_client = client(server.url)
    assert isinstance(arm_client.get(f"{server.url}/op", SUB, "r"), ArmAnswer)
    arm_client._session.close()  # closes the adapter's pools
    assert isinstance(arm_client.get(f"{server.url}/op", SUB, "r"), ArmAnswer)
    assert len(server.seen) == 2


def test_a_status_url_is_sent_as_requests_would_quote_it(server: Server) -> None:
    arm_client = client(server.url)
    url = f"{server.url}/locations/West US 2/op?api-version=1&t=a b"
    for _ in range(2):  # the second time from the remembered target
        assert isinstance(arm_client.get(url, SUB, "r"), ArmAnswer)
    quoted = "/locations/West%20US%202/op?api-version=1&t=a%20b"
    assert [s.path for s in server.seen] == [quoted, quoted]
