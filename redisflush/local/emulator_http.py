"""The ARM emulator's HTTP plumbing: the reply shape, the threaded loopback server and how a
reply is written (with the x-ms-* request headers ARM always sends back).

Kept apart from the routes so that `emulator_arm` and the admin routes only build `Reply`
values and never touch sockets.
"""
from __future__ import annotations

import http.server
import json
import logging
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("redisflush.emulator")


@dataclass
class Reply:
    status: int
    body: Any = None                      # dict -> JSON; bytes verbatim; None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def error_reply(status: int, code: str, message: str, **headers: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}}, dict(headers))


class EmulatorHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms per answer with a body, which real ARM does not add).
    disable_nagle_algorithm = True
    server: EmulatorServer

    def version_string(self) -> str:
        return "ArmEmulator/1.0"

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self.server.respond(self, self.command)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # one line per request is ours
        pass


class EmulatorServer(http.server.ThreadingHTTPServer):
    """Hands every request to `respond(handler, method)`; tracks open connections so that
    stopping also ends the kept-alive ones."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int],
                 respond: Callable[[EmulatorHandler, str], None]) -> None:
        self.connections: set[socket.socket] = set()
        self.respond = respond
        super().__init__(address, EmulatorHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:  # e.g. client went away
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


def read_body(h: EmulatorHandler) -> bytes:
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length > 0 else b""


def write_reply(h: EmulatorHandler, reply: Reply) -> None:
    payload = reply.body if isinstance(reply.body, bytes) else (
        b"" if reply.body is None else json.dumps(reply.body).encode())
    rid, client_rid = str(uuid.uuid4()), h.headers.get("x-ms-client-request-id")
    headers = {"x-ms-request-id": rid,
               "x-ms-correlation-request-id": h.headers.get("x-ms-correlation-request-id") or rid,
               **({"x-ms-client-request-id": client_rid} if client_rid else {}),
               **({"Content-Type": "application/json; charset=utf-8"} if payload else {}),
               **reply.headers, "Content-Length": str(len(payload))}
    h.send_response(reply.status)
    for name, value in headers.items():
        h.send_header(name, value)
    h.end_headers()
    h.wfile.write(payload)
