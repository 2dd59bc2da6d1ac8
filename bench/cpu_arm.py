"""CPU per ARM call of `redisflush.arm.ArmClient`, before and after.

- before: the client as it was (`BeforeClient`, the same code): `Session.request` with
  trust_env on, which re-reads the environment (proxies, NO_PROXY, CA bundle) and ~/.netrc
  on every call;
- the same code with trust_env off and the proxies passed explicitly (what the environment
  re-reading alone cost);
- after: `ArmClient` now (proxies resolved once when it is built, the urllib3 pool that
  requests' adapter picks called directly, every read against the call's deadline).

The server is a trivial keep-alive HTTP/1.1 server in another *process*, so
time.process_time() counts only the client's CPU. Each variant runs `--calls` GETs (after a
warm-up), alternating variants over `--rounds` rounds; the table shows the median round.

    python bench/cpu_arm.py [--calls 2000] [--rounds 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import datetime as dt  # noqa: E402
import logging  # noqa: E402

import requests  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402
from requests.utils import get_environ_proxies  # noqa: E402

from redisflush.arm import MAX_BODY, USER_AGENT, ArmClient  # noqa: E402
from redisflush.arm_tokens import StaticToken  # noqa: E402
from redisflush.core.answers import ArmAnswer  # noqa: E402
from redisflush.core.lro import retry_after  # noqa: E402
from redisflush.core.trust import is_trusted, redact_url  # noqa: E402
from redisflush.pacing import Pacer  # noqa: E402

log = logging.getLogger("bench.cpu_arm")

SUB = "00000000-0000-0000-0000-0000000000c1"
BEFORE, AFTER = "before (trust_env on)", "after (ArmClient now)"
SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b'{"status":"Succeeded"}'

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as ARM
    disable_nagle_algorithm = True  # headers and body leave at once
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("x-ms-ratelimit-remaining-subscription-reads", "249")
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def old_session(trust_env: bool = True) -> requests.Session:
    """The Session as arm.py built it before: trust_env left on (requests' default)."""
    session = requests.Session()
    session.trust_env = trust_env
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class BeforeClient:
    """ArmClient.get as it was before this change (redisflush/arm.py `_send`), line for line."""

    def __init__(self, endpoint: str, trust_env: bool = True) -> None:
        self.endpoint = endpoint
        self.pacer = Pacer()
        self._tokens = StaticToken("t")
        self._session = old_session(trust_env)
        self._proxies = None if trust_env else get_environ_proxies(endpoint, no_proxy=None)

    def get(self, url: str, subscription_id: str, client_request_id: str) -> ArmAnswer:
        assert is_trusted(url, self.endpoint)
        token = self._tokens.token(self.endpoint + "/.default")
        headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT,
                   "x-ms-client-request-id": client_request_id, "Accept": "application/json"}
        started = time.monotonic()
        with self._session.request("GET", url, headers=headers, timeout=(5.0, 20.0),
                                   allow_redirects=False, stream=True,
                                   proxies=self._proxies) as response:
            body = response.raw.read(MAX_BODY + 1, decode_content=True) or b""
            answer = ArmAnswer(response.status_code,
                               {k.lower(): v for k, v in response.headers.items()},
                               body[:MAX_BODY], url, time.monotonic() - started)
        self.pacer.observe(subscription_id, "GET", answer.status, answer.headers,
                           retry_after(answer.headers, dt.datetime.now(dt.UTC)))
        log.debug("%s %s -> %s in %.0f ms", "GET", redact_url(url), answer.status,
                  answer.elapsed * 1000)
        return answer


def measure(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """(CPU ms per call, wall ms per call) over `calls` calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        call()
    return ((time.process_time() - cpu) * 1000 / calls,
            (time.perf_counter() - wall) * 1000 / calls)


def run(calls: int, rounds: int) -> dict[str, dict[str, float]]:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        endpoint = f"http://127.0.0.1:{port}"
        url = f"{endpoint}/subscriptions/{SUB}/providers/Microsoft.Cache/locations/x/" \
              "operationresults/op-1?api-version=2023-08-01"
        clients: dict[str, BeforeClient | ArmClient] = {
            BEFORE: BeforeClient(endpoint),
            "before, trust_env off": BeforeClient(endpoint, trust_env=False),
            AFTER: ArmClient(endpoint, "2023-08-01", StaticToken("t")),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        for client in clients.values():  # warm-up: connections, imports, caches
            for _ in range(200):
                answer = client.get(url, SUB, "warm")
                assert isinstance(answer, ArmAnswer) and answer.status == 200, answer
        for _ in range(rounds):
            for name, client in clients.items():
                def one_call(c: BeforeClient | ArmClient = client) -> object:
                    return c.get(url, SUB, "bench")
                results[name].append(measure(one_call, calls))
        return {name: {"cpu_ms": statistics.median(r[0] for r in rows),
                       "wall_ms": statistics.median(r[1] for r in rows)}
                for name, rows in results.items()}
    finally:
        server.terminate()
        server.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    table = run(args.calls, args.rounds)
    before, after = table[BEFORE], table[AFTER]
    ratio = before["cpu_ms"] / after["cpu_ms"]
    if args.json:
        print(json.dumps({"calls": args.calls, "rounds": args.rounds, "variants": table,
                          "cpu_ratio": ratio}))
        return 0
    proxy_env = sorted(k for k in os.environ if k.lower().endswith("_proxy"))
    print(f"ARM client CPU per call: {args.calls} GETs x {args.rounds} rounds (median round), "
          f"server in another process; Python {sys.version.split()[0]}, requests "
          f"{requests.__version__}; proxy variables set: {', '.join(proxy_env) or 'none'}")
    print(f"| {'variant':<30} | CPU ms/call | wall ms/call |")
    print(f"|{'-' * 32}|------------:|-------------:|")
    for name, row in table.items():
        print(f"| {name:<30} | {row['cpu_ms']:11.3f} | {row['wall_ms']:12.3f} |")
    print(f"CPU ratio before/after: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
