"""The request ledger's contract (docs/design.md, "Request ledger"), run against every adapter:
MemoryLedger, SqliteLedger and TableLedger on Azurite. What the orchestrator relies on is
that two invocations racing on one row can never both win a write."""
from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

from redisflush import ledger_tables
from redisflush.errors import ConfigurationError
from redisflush.ledger import REQUEST_KEY, Ledger, LedgerError, LedgerRow
from redisflush.ledger_tables import TableLedger
from redisflush.local.ledger import SqliteLedger

from .conftest import DEV_KEY, ROOT

T = TypeVar("T")
UTC = dt.UTC
NOW = dt.datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
TARGET = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-1"
          "/providers/microsoft.cache/redis/cache-a")
OTHER_TARGET = TARGET[:-1] + "b"


def row(key: str = TARGET, request_id: str = "req-1", state: str = "Pending",
        **fields: Any) -> LedgerRow:
    fields.setdefault("updated_at", NOW)
    fields.setdefault("expires_at", NOW + dt.timedelta(days=1))
    return LedgerRow(request_id=request_id, key=key, state=state, **fields)


def race(count: int, work: Callable[[int], T]) -> list[T]:
    """Run work(0..count-1) on `count` threads released together."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = work(index)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


# -- conditional insert ------------------------------------------------------------------

def test_insert_returns_the_stored_row_and_a_second_insert_finds_it(ledger: Ledger) -> None:
    stored = ledger.insert(row(data={"n": 1}))
    assert stored is not None and stored.etag
    assert (stored.state, dict(stored.data)) == ("Pending", {"n": 1})
    assert ledger.insert(row(state="Other", data={"n": 2})) is None
    assert ledger.get("req-1", TARGET) == stored


def test_the_same_key_in_another_request_is_another_row(ledger: Ledger) -> None:
    assert ledger.insert(row(request_id="req-1")) is not None
    assert ledger.insert(row(request_id="req-2")) is not None


# -- conditional update --------------------------------------------------------------------

def test_update_with_the_current_etag_stores_and_returns_a_new_etag(ledger: Ledger) -> None:
    first = ledger.insert(row())
    assert first is not None
    second = ledger.update(replace(first, state="Accepted", posts=1, data={"url": "u"}))
    assert second is not None
    assert second.etag and second.etag != first.etag
    assert ledger.get("req-1", TARGET) == second
    third = ledger.update(replace(second, state="Succeeded"))
    assert third is not None and third.etag not in (first.etag, second.etag)


def test_update_with_a_stale_etag_changes_nothing(ledger: Ledger) -> None:
    first = ledger.insert(row())
    assert first is not None
    second = ledger.update(replace(first, state="Accepted"))
    assert second is not None
    assert ledger.update(replace(first, state="Stale")) is None
    assert ledger.get("req-1", TARGET) == second


def test_update_of_a_missing_row_is_none(ledger: Ledger) -> None:
    other = ledger.insert(row(key=OTHER_TARGET))
    assert other is not None
    assert ledger.update(replace(other, key=TARGET)) is None  # an etag, but not this row's
    assert ledger.update(row()) is None                       # never stored: etag ''
    assert ledger.update(row(etag="1")) is None
    assert ledger.get("req-1", TARGET) is None


def test_an_etag_from_before_a_purge_never_matches_the_row_inserted_again(
        ledger: Ledger) -> None:
    old = ledger.insert(row(expires_at=NOW))
    assert old is not None
    assert ledger.purge(NOW) == 1
    again = ledger.insert(row(expires_at=NOW + dt.timedelta(days=1)))
    assert again is not None
    assert ledger.update(replace(old, state="Stale")) is None
    assert ledger.get("req-1", TARGET) == again


# -- reads ---------------------------------------------------------------------------------

def test_get_returns_every_field_or_none(ledger: Ledger) -> None:
    assert ledger.get("req-1", TARGET) is None
    stored = ledger.insert(row(state="Accepted", posts=2, data={"operation": "https://x/y"},
                               updated_at=NOW, expires_at=NOW + dt.timedelta(hours=25)))
    got = ledger.get("req-1", TARGET)
    assert got == stored
    assert got is not None
    assert (got.request_id, got.key, got.state, got.posts) == ("req-1", TARGET, "Accepted", 2)
    assert got.updated_at == NOW and got.expires_at == NOW + dt.timedelta(hours=25)
    assert ledger.get("req-1", OTHER_TARGET) is None
    assert ledger.get("req-2", TARGET) is None


def test_rows_lists_the_request_row_first_then_by_key(ledger: Ledger) -> None:
    keys = [TARGET + "-3", TARGET + "-1", REQUEST_KEY, TARGET + "-2", "/a", "z"]
    for key in keys:
        assert ledger.insert(row(key=key)) is not None
    assert ledger.insert(row(key=TARGET, request_id="req-other")) is not None
    listed = ledger.rows("req-1")
    assert [r.key for r in listed] == [REQUEST_KEY, "/a", TARGET + "-1", TARGET + "-2",
                                       TARGET + "-3", "z"]
    assert all(r.request_id == "req-1" and r.etag for r in listed)
    assert listed[1] == ledger.get("req-1", "/a")
    assert ledger.rows("req-none") == []


def test_rows_read_back_are_copies(ledger: Ledger) -> None:
    stored = ledger.insert(row(data={"list": [1]}))
    assert stored is not None
    got = ledger.get("req-1", TARGET)
    assert got is not None
    got.data["list"].append(2)
    stored.data["list"].append(3)
    assert dict(ledger.rows("req-1")[0].data) == {"list": [1]}


# -- purge ---------------------------------------------------------------------------------

def test_purge_takes_requests_whose_rows_have_all_expired_and_no_part_of_others(
        ledger: Ledger) -> None:
    """A request goes whole or not at all: req-1 has a row a microsecond from expiring (a
    repeat may write a later ExpiresAt), so none of its rows go; req-2 and req-3 go whole."""
    micro = dt.timedelta(microseconds=1)
    ledger.insert(row(key="past", expires_at=NOW - dt.timedelta(days=3)))
    ledger.insert(row(key="now", expires_at=NOW))
    ledger.insert(row(key="just-future", expires_at=NOW + micro))
    ledger.insert(row(key=REQUEST_KEY, request_id="req-2", expires_at=NOW - micro))
    ledger.insert(row(key="a", request_id="req-2", expires_at=NOW - dt.timedelta(days=1)))
    ledger.insert(row(key="b", request_id="req-3", expires_at=NOW))
    assert ledger.purge(NOW) == 3
    assert [r.key for r in ledger.rows("req-1")] == ["just-future", "now", "past"]
    assert ledger.rows("req-2") == [] and ledger.rows("req-3") == []
    assert ledger.purge(NOW) == 0
    assert ledger.purge(NOW + micro) == 3
    assert ledger.rows("req-1") == []


def test_purge_takes_a_whole_request_of_51_rows_and_leaves_its_id_new(ledger: Ledger) -> None:
    """The request row and its 50 target rows go together (one transaction on Table storage),
    and the requestId is then free: a new request row inserts."""
    expired = NOW - dt.timedelta(seconds=1)
    assert ledger.insert(row(key=REQUEST_KEY, expires_at=expired)) is not None
    for i in range(50):
        assert ledger.insert(row(key=f"{TARGET}-{i:02d}", expires_at=expired)) is not None
    assert ledger.insert(row(request_id="req-live", expires_at=NOW + dt.timedelta(hours=1)))
    assert ledger.purge(NOW) == 51
    assert ledger.rows("req-1") == []
    assert [r.request_id for r in ledger.rows("req-live")] == ["req-live"]
    assert ledger.insert(row(key=REQUEST_KEY, expires_at=NOW + dt.timedelta(days=1)))


def test_table_purge_leaves_a_request_changed_since_its_read_whole(
        azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the purge's read of a request and its transaction, another writer updates one
    row (or inserts one): the transaction fails on the changed etag and no row goes."""
    from tests.contract.conftest import _table_ledger

    ledger = _table_ledger(azurite)
    expired = NOW - dt.timedelta(seconds=1)
    stored = ledger.insert(row(key=REQUEST_KEY, expires_at=expired))
    assert stored is not None and ledger.insert(row(key="t1", expires_at=expired))
    table = ledger._table()
    original = table.submit_transaction

    def racing(operations: Any, **kwargs: Any) -> Any:
        assert ledger.update(replace(stored, state="done")) is not None
        return original(operations, **kwargs)

    monkeypatch.setattr(table, "submit_transaction", racing)
    assert ledger.purge(NOW) == 0
    assert sorted(r.key for r in ledger.rows("req-1")) == ["", "t1"]
    monkeypatch.setattr(table, "submit_transaction", original)
    assert ledger.purge(NOW) == 2


def test_table_purge_stops_at_its_time_budget(azurite: str) -> None:
    from tests.contract.conftest import _table_ledger

    ledger = _table_ledger(azurite)
    for i in range(3):
        assert ledger.insert(row(request_id=f"req-{i}", expires_at=NOW - dt.timedelta(1)))
    assert ledger.purge(NOW, budget=0.0) == 0  # out of time before the first request
    assert ledger.purge(NOW) == 3


def test_table_purge_stops_at_its_budget_while_the_scan_returns_empty_pages() -> None:
    """Table storage may answer a filtered scan of a large table with empty pages and a
    continuation for as long as the scan takes: the budget is checked on every page, so the
    purge ends inside the function's 2-minute timeout (a loopback table that only ever
    answers so: the real SDK follows its continuations)."""
    pages = []

    class EmptyPages(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # create_table on first use: it is there already
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(409, {"odata.error": {"code": "TableAlreadyExists",
                                               "message": {"value": "exists"}}}, {})

        def do_GET(self) -> None:
            pages.append(self.path)
            time.sleep(0.05)  # the service's time on a page of nothing
            self._answer(200, {"value": []}, {
                "x-ms-continuation-NextPartitionKey": f"1!8!{len(pages)}",
                "x-ms-continuation-NextRowKey": "1!8!x"})

        def _answer(self, status: int, body: Any, headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json;odata=minimalmetadata")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), EmptyPages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        ledger = TableLedger.from_settings("scantable", connection_string=(
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
            f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1"))
        began = time.monotonic()
        assert ledger.purge(NOW, budget=1.0) == 0
        assert time.monotonic() - began < 3
        assert len(pages) > 3  # it did follow the continuations until its time was up
    finally:
        server.shutdown()
        server.server_close()


# -- what a row holds ----------------------------------------------------------------------

def test_data_round_trips_unicode_nesting_and_a_29000_character_string(ledger: Ledger) -> None:
    data = {
        "text": "Grüße, 東京, مرحبا, 🧹 flush\u200d, quote \" back\\slash, nul \x00 end",
        "nested": {"list": [1, 2.5, None, True, False, {"deep": ["x", {"y": []}]}],
                   "empty": {}, "ünïcode-key": "v"},
        "big": "é" + "x" * 29_000,
        "number": 2**53,
    }
    stored = ledger.insert(row(data=data))
    assert stored is not None and dict(stored.data) == data
    got = ledger.get("req-1", TARGET)
    assert got is not None and dict(got.data) == data
    updated = ledger.update(replace(got, data={"big": "y" * 29_000}))
    assert updated is not None
    again = ledger.get("req-1", TARGET)
    assert again is not None and dict(again.data) == {"big": "y" * 29_000}


def test_data_with_half_a_surrogate_pair_round_trips(ledger: Ledger) -> None:
    """ARM's JSON may escape a lone surrogate ("\\ud800"), which json.loads keeps in an error
    message: no UTF-16 or UTF-8 store takes that text as it is (encode_data raised
    UnicodeEncodeError), so it is stored escaped and read back the same."""
    data = {"outcome": {"error": {"message": "lone \ud800 and \udfff, pair 🧹, Grüße"}}}
    stored = ledger.insert(row(data=data))
    assert stored is not None and dict(stored.data) == data
    got = ledger.get("req-1", TARGET)
    assert got is not None and dict(got.data) == data
    assert ledger.update(replace(got, state="done")) is not None


def test_half_a_surrogate_pair_costs_its_own_escape_only(ledger: Ledger) -> None:
    """Escaping the whole row for one lone surrogate counted every other non-ASCII
    character 6 times: 20,000 kana, within the limit, were refused as 120,000."""
    data = {"message": "カ" * 20_000 + "\ud800"}
    stored = ledger.insert(row(data=data))
    assert stored is not None and dict(stored.data) == data
    got = ledger.get("req-1", TARGET)
    assert got is not None and dict(got.data) == data


def test_data_that_is_not_json_or_too_long_is_refused_alike(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="MAX_DATA_CHARS"):
        ledger.insert(row(data={"big": "x" * 30_001}))
    with pytest.raises(ValueError, match="not JSON"):
        ledger.insert(row(data={"when": NOW}))
    with pytest.raises(ValueError, match="MAX_DATA_CHARS"):  # UTF-16 units, as Azure counts
        ledger.insert(row(data={"emoji": "🧹" * 15_000}))
    assert ledger.get("req-1", TARGET) is None


def test_datetimes_keep_their_microseconds_and_instant(ledger: Ledger) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    updated = dt.datetime(2031, 1, 2, 5, 4, 5, 999999, tzinfo=plus_two)
    expires = dt.datetime(2031, 1, 3, 3, 4, 5, 1, tzinfo=UTC)
    ledger.insert(row(updated_at=updated, expires_at=expires))
    got = ledger.get("req-1", TARGET)
    assert got is not None
    assert got.updated_at == updated and got.updated_at.microsecond == 999999
    assert got.expires_at == expires and got.expires_at.microsecond == 1
    assert got.updated_at.utcoffset() is not None


def test_request_ids_and_resource_id_keys_with_awkward_characters(ledger: Ledger) -> None:
    request_id = "crm:order.4711-retry_2"
    keys = [TARGET,
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.cache/redisenterprise/"
            "c/databases/default",
            "key with ? and # and \\ and spaces", "ключ/ü"]
    for key in keys:
        stored = ledger.insert(row(key=key, request_id=request_id))
        assert stored is not None
        assert ledger.update(replace(stored, state="Accepted")) is not None
    assert ledger.insert(row(key=REQUEST_KEY, request_id=request_id)) is not None
    assert [r.key for r in ledger.rows(request_id)] == [REQUEST_KEY] + sorted(keys)
    for key in keys:
        got = ledger.get(request_id, key)
        assert got is not None and got.key == key and got.state == "Accepted"


# -- races ---------------------------------------------------------------------------------

def test_concurrent_inserts_one_wins(ledger: Ledger) -> None:
    results = race(8, lambda i: ledger.insert(row(state=f"writer-{i}")))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert ledger.get("req-1", TARGET) == winners[0]


def test_concurrent_updates_with_one_etag_one_wins(ledger: Ledger) -> None:
    base = ledger.insert(row())
    assert base is not None
    results = race(8, lambda i: ledger.update(replace(base, state=f"writer-{i}")))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert ledger.get("req-1", TARGET) == winners[0]


def test_concurrent_rounds_of_read_modify_write_lose_no_update(ledger: Ledger) -> None:
    """Each thread adds 1 to `posts` five times through get + update retries: the total
    is exact only if no two updates ever both won from one etag."""
    assert ledger.insert(row(posts=0)) is not None

    def bump(_: int) -> int:
        done = 0
        while done < 5:
            current = ledger.get("req-1", TARGET)
            assert current is not None
            if ledger.update(replace(current, posts=current.posts + 1)) is not None:
                done += 1
        return done

    race(4, bump)
    final = ledger.get("req-1", TARGET)
    assert final is not None and final.posts == 20


# -- SQLite across processes -----------------------------------------------------------------

def _insert_in_process(path: str, keys: list[str], start: Any, out: Any) -> None:
    """Child process: insert every key once, report the keys this process won (or why
    it failed, so the parent does not wait for an answer that never comes)."""
    try:
        ledger = SqliteLedger(path)
        start.wait(timeout=30)
        out.put([key for key in keys if ledger.insert(row(key=key))])
    except BaseException as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def test_sqlite_two_processes_inserting_the_same_keys_one_wins_each(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    path = str(tmp_path / "shared.sqlite3")
    keys = [f"{TARGET}-{i}" for i in range(60)]
    start, out = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_insert_in_process, args=(path, keys, start, out))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    won = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert all(isinstance(w, list) for w in won), won
    assert not set(won[0]) & set(won[1])
    assert sorted(won[0] + won[1]) == sorted(keys)
    assert len(SqliteLedger(path).rows("req-1")) == len(keys)


# -- SqliteLedger specifics ------------------------------------------------------------------

def test_sqlite_failure_is_a_ledger_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.sqlite3"
    path.write_bytes(b"this is not SQLite " * 100)
    with pytest.raises(LedgerError, match="not-a-database.sqlite3"):
        SqliteLedger(path).get("req-1", TARGET)


def test_sqlite_rows_survive_reopening(tmp_path: Path) -> None:
    first = SqliteLedger(tmp_path / "ledger.sqlite3")
    stored = first.insert(row(data={"k": "v"}))
    first.close()
    assert SqliteLedger(tmp_path / "ledger.sqlite3").get("req-1", TARGET) == stored


# -- TableLedger specifics -------------------------------------------------------------------

def test_table_dead_endpoint_fails_fast_with_a_safe_message() -> None:
    # kept bound without listen(): refused, and no other process can listen there meanwhile
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        _dead_endpoint_fails_fast(dead.getsockname()[1])


def _dead_endpoint_fails_fast(port: int) -> None:
    secret_sig = "c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
    for conn in (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                 f"AccountKey={DEV_KEY};TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1",
                 f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
                 f"SharedAccessSignature=sv=2019-02-02&ss=t&sig={secret_sig}"):
        ledger = TableLedger.from_settings("deadtable", connection_string=conn)
        began = time.monotonic()
        with pytest.raises(LedgerError) as caught:
            ledger.insert(row())
        assert time.monotonic() - began < 10
        message = str(caught.value)
        assert "\n" not in message
        assert "AccountKey" not in message and DEV_KEY not in message
        assert DEV_KEY[:20] not in message and secret_sig not in message
        assert f"127.0.0.1:{port}" in message and "deadtable" in message
        assert "Connection refused" in message or "cannot connect" in message


def test_table_ledger_serves_a_busy_worker_on_its_kept_connections(
        table_ledger: TableLedger, caplog: pytest.LogCaptureFixture) -> None:
    """16 invocations (host.json's maxConcurrentCalls) and 8 ARM threads write at once:
    azure-core's default pool keeps 10 connections and opens, then drops, one more per call
    past them, logging urllib3's "Connection pool is full" each time."""
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")

    def write(i: int) -> int:
        for n in range(5):
            assert table_ledger.insert(row(key=f"t-{i}-{n}", request_id=f"busy-{i}")) is not None
        return i

    assert sorted(race(24, write)) == list(range(24))
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_table_read_limit_holds_on_a_peer_that_never_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's time limits reach the transport it is given: a peer that takes the
    connection and never answers fails the call at the read limit, not azure-core's 300 s."""
    monkeypatch.setitem(ledger_tables.CLIENT_OPTIONS, "read_timeout", 0.5)
    monkeypatch.setitem(ledger_tables.CLIENT_OPTIONS, "retry_total", 0)
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                f"AccountKey={DEV_KEY};TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1")
        ledger = TableLedger.from_settings("silenttable", connection_string=conn)
        began = time.monotonic()
        with pytest.raises(LedgerError):
            ledger.get("req-1", TARGET)
        assert time.monotonic() - began < 5
    finally:
        listener.close()


def test_table_from_settings_chooses_the_endpoint() -> None:
    class Token:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise AssertionError("no call is made while building the ledger")

    by_name = TableLedger.from_settings("ledger", account_name="mystorage1", credential=Token())
    assert by_name.endpoint == "https://mystorage1.table.core.windows.net"
    by_uri = TableLedger.from_settings(
        "ledger", account_name="ignored", credential=Token(),
        table_service_uri="https://mystorage1.table.core.usgovcloudapi.net/")
    assert by_uri.endpoint == "https://mystorage1.table.core.usgovcloudapi.net"
    dev = TableLedger.from_settings("ledger", connection_string="UseDevelopmentStorage=true")
    assert dev.endpoint == "http://127.0.0.1:10002/devstoreaccount1"
    cloud = TableLedger.from_settings(
        "ledger", connection_string="DefaultEndpointsProtocol=https;AccountName=acct1;"
        f"AccountKey={DEV_KEY};EndpointSuffix=core.windows.net",
        account_name="ignored")  # a connection string wins, as with the Functions host
    assert cloud.endpoint == "https://acct1.table.core.windows.net"
    assert cloud.table_name == "ledger"


@pytest.mark.parametrize("settings, names", [
    ({}, "AzureWebJobsStorage"),
    ({"account_name": "Not_Valid"}, "AzureWebJobsStorage__accountName"),
    ({"table_service_uri": "http://acct.table.core.windows.net"},
     "AzureWebJobsStorage__tableServiceUri"),
    ({"connection_string": f"AccountKey={DEV_KEY};Nonsense"}, "AzureWebJobsStorage"),
])
def test_table_from_settings_refuses_bad_settings_naming_them(
        settings: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names) as caught:
        TableLedger.from_settings("ledger", **settings)
    assert DEV_KEY not in str(caught.value)


def test_table_name_must_follow_the_service_rule() -> None:
    with pytest.raises(ConfigurationError, match="REDISFLUSH_LEDGER_TABLE"):
        TableLedger.from_settings("redis-flush", connection_string="UseDevelopmentStorage=true")
    # reserved by the service: every call failed with a bare "HTTP 400 Bad Request"
    with pytest.raises(ConfigurationError, match="REDISFLUSH_LEDGER_TABLE: 'Tables' must not "
                                                 "be 'tables'"):
        TableLedger.from_settings("Tables", connection_string="UseDevelopmentStorage=true")


def test_table_deleted_under_the_ledger_fails_once_then_is_created_again(
        table_ledger: TableLedger, azurite: str) -> None:
    from azure.data.tables import TableServiceClient

    assert table_ledger.insert(row()) is not None
    with TableServiceClient.from_connection_string(azurite) as service:
        service.delete_table(table_ledger.table_name)
    with pytest.raises(LedgerError, match="TableNotFound"):
        table_ledger.insert(row(key=OTHER_TARGET))
    assert table_ledger.insert(row(key=OTHER_TARGET)) is not None


def test_table_module_imports_without_the_sdk() -> None:
    probe = ("import sys, redisflush.ledger_tables, redisflush.local.ledger; "
             "print(sorted(m for m in sys.modules if m.startswith('azure')))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.strip() == "[]"

