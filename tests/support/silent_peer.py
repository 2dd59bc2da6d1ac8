"""A loopback listener that accepts connections and never says a word: a stuck frontend or a
middlebox, against which a TLS handshake or an AMQP login waits for as long as the socket
lives (what the Service Bus sends' own bounds are for)."""
from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def silent_listener() -> Iterator[tuple[int, list[socket.socket]]]:
    """(port, the connections it took so far); closing them at the end frees any caller
    still blocked on one."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        for conn in accepted:
            conn.close()
        server.close()
