"""Fixtures for the contract suite: the three ledgers, and Azurite on loopback.

Azurite (the npm `azurite` storage emulator, package.json) is started once per session by the
tests themselves. Missing node_modules is a failure, not a skip: CI runs .ci/install-azurite
(`npm ci`), so a silently skipped Table adapter would hide a broken ledger. Set
REDISFLUSH_SKIP_AZURITE=1 to skip those tests on purpose.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from redisflush.ledger import Ledger, MemoryLedger
from redisflush.ledger_tables import TableLedger
from redisflush.local.demo import free_loopback_port
from redisflush.local.ledger import SqliteLedger

ROOT = Path(__file__).resolve().parents[2]
AZURITE_TABLE = ROOT / "node_modules" / ".bin" / "azurite-table"
# The emulator's well-known account and key (public, the same in every Azurite).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr"
           "/KBHBeksoGMGw==")
START_SECONDS = 20.0


def connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"TableEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _start(workdir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Azurite's table service on a free loopback port, ready to accept connections.
    --inMemoryPersistence refuses --location, so the workspace is the process's cwd.
    Ready when this process said it started on the port (not merely when something accepts
    there: the port, free when picked, may have been taken by another process meanwhile,
    and then it is that one that accepts while this Azurite exits). Without --silent it says
    so; the access log it then writes is small."""
    port = free_loopback_port()
    started = f"successfully started on 127.0.0.1:{port}"
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(AZURITE_TABLE), "--tableHost", "127.0.0.1", "--tablePort", str(port),
             "--skipApiVersionCheck", "--inMemoryPersistence", "--disableTelemetry"],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        said = log.read_bytes()[offset:].decode(errors="replace")
        if started in said and _accepts(port):
            return process, port
        time.sleep(0.1)
    _stop(process)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"azurite-table did not accept connections on 127.0.0.1:{port} "
                       f"within {START_SECONDS:.0f} s (exit code {process.returncode}):\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The connection string of a session-wide Azurite table service."""
    if os.environ.get("REDISFLUSH_SKIP_AZURITE") == "1":
        pytest.skip("REDISFLUSH_SKIP_AZURITE=1: Table adapter tests skipped on purpose")
    if not AZURITE_TABLE.exists():
        pytest.fail(f"{AZURITE_TABLE.relative_to(ROOT)} is missing: run `npm ci` in "
                    f"{ROOT} (or .ci/install-azurite) to install the Azurite emulator the "
                    "Table ledger is tested against; REDISFLUSH_SKIP_AZURITE=1 skips these "
                    "tests on purpose", pytrace=False)
    workdir = tmp_path_factory.mktemp("azurite")
    log = workdir / "azurite.log"
    last: Exception | None = None
    for _ in range(3):  # the free port may be taken between probe and bind
        try:
            process, port = _start(workdir, log)
            break
        except RuntimeError as exc:
            last = exc
    else:
        pytest.fail(str(last), pytrace=False)
    try:
        yield connection_string(port)
    finally:
        _stop(process)


def _table_ledger(azurite: str) -> TableLedger:
    """A fresh table per test, so tests cannot see each other's rows."""
    return TableLedger.from_settings("t" + uuid.uuid4().hex[:20], connection_string=azurite)


@pytest.fixture(params=["memory", "sqlite", "table"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """Each adapter in turn; the contract suite runs once per adapter."""
    if request.param == "memory":
        yield MemoryLedger()
    elif request.param == "sqlite":
        sqlite = SqliteLedger(tmp_path / "ledger.sqlite3")
        yield sqlite
        sqlite.close()
    else:
        table = _table_ledger(request.getfixturevalue("azurite"))
        yield table
        table.close()


@pytest.fixture
def table_ledger(azurite: str) -> Iterator[TableLedger]:
    table = _table_ledger(azurite)
    yield table
    table.close()
