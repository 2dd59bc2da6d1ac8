"""`python bench/serve_variant.py serve --local ...`: serve with the ARM client as it was.

REDISFLUSH_BENCH_ARM=before puts back the way redisflush/arm.py sent a request before the
change that resolves proxies once: `requests.Session.request` on a session with trust_env on
(requests' default), which re-reads the proxy variables, NO_PROXY, the CA bundle variables and
~/.netrc on every call and merges the session's settings into each request. Everything else
(status handling, the pacer, errors) is the current code, so the CPU difference is that
change alone. Without the variable this is plain `python -m redisflush`.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _before() -> None:
    import requests
    from requests.adapters import HTTPAdapter

    from redisflush import arm
    from redisflush.core.answers import ArmAnswer, ArmFailure
    from redisflush.core.trust import redact_url

    session = requests.Session()          # trust_env stays on, as before
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)

    def exchange(self: Any, method: str, url: str, headers: Mapping[str, str],
                 body: bytes | None) -> Any:
        started = time.monotonic()
        try:
            with session.request(method, url, headers=dict(headers), data=body,
                                 timeout=self._timeouts, allow_redirects=False,
                                 stream=True) as response:
                data = response.raw.read(arm.MAX_BODY + 1, decode_content=True) or b""
                return ArmAnswer(response.status_code,
                                 {k.lower(): v for k, v in response.headers.items()},
                                 data[:arm.MAX_BODY], url, time.monotonic() - started)
        except arm.NETWORK_ERRORS as exc:
            return ArmFailure("ConnectionError", f"{method} {redact_url(url)} failed: "
                              f"{type(exc).__name__}")

    arm.ArmClient._exchange = exchange  # type: ignore[method-assign]


def main() -> int:
    if os.environ.get("REDISFLUSH_BENCH_ARM") == "before":
        _before()
    from redisflush.cli import main as cli_main
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
