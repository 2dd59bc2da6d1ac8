"""TableLedger: the request ledger on Azure Table storage, in the app's own storage account
(docs/design.md, "Request ledger").

Layout: PartitionKey = requestId (its rule, [A-Za-z0-9._:-]{1,80}, holds no character a key
may not), RowKey = "request" for the request row, else "t-" + sha256 of the key (a target's
resource id holds '/', which a key may not); the real key is the `Key` property. Conditional
writes are the service's own: insert fails on an existing row (409), replace carries If-Match
with the etag read (412 when it changed). azure.data.tables is imported only when a ledger is
built, so importing this module costs nothing on a cold start that never uses it.
The entity a row becomes is in ledger_table_rows.py; how a failure is read, in
ledger_table_errors.py.
"""
from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .ledger import LedgerError, LedgerRow, decode_data, encode_data, row_order
from .ledger_table_errors import describe, error_code, table_missing
from .ledger_table_rows import from_entity, row_key, to_entity, utc

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient

# A dead or stuck endpoint must fail the invocation in seconds, not minutes (the SDK's
# defaults retry for minutes); the message is then redelivered.
CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": 5,
    "read_timeout": 10,
    "retry_total": 2,
    "retry_backoff_factor": 0.5,
    "retry_backoff_max": 4,
}
# Kept connections: at least host.json's maxConcurrentCalls (16) plus the ARM threads (8)
# that record outcomes; azure-core's default keeps 10 and opens (and logs) one more each
# time a busy worker passes that.
POOL_SIZE = 32
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_BAD_KEY_CHARS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
_MILLISECOND = dt.timedelta(milliseconds=1)
MAX_BATCH = 100  # operations in one entity-group transaction (the service's limit)
PURGE_BUDGET = 90.0  # seconds of one purge run, inside host.json's 2-minute functionTimeout


def _transport() -> Any:
    """azure-core's requests transport on a session whose pool holds POOL_SIZE connections.

    Given a session, the transport uses it as it is: it gets what azure-core would have set
    up itself (proxies and CA bundle from the environment, no urllib3 retries: the pipeline's
    retry policy retries) plus the larger pool, and the client's time limits."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from urllib3.util.retry import Retry

    session = requests.Session()
    session.trust_env = True
    adapter = requests.adapters.HTTPAdapter(
        pool_maxsize=POOL_SIZE,
        max_retries=Retry(total=False, redirect=False, raise_on_status=False))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(session=session, session_owner=True,
                             connection_timeout=CLIENT_OPTIONS["connection_timeout"],
                             read_timeout=CLIENT_OPTIONS["read_timeout"])


class TableLedger:
    """The Ledger on one table; thread-safe (one TableClient shared by the worker's threads).
    The table is created on first use; every azure.core failure is LedgerError (one line,
    naming the table and endpoint, never a key or signature)."""

    def __init__(self, client: TableClient, endpoint: str) -> None:
        self._client = client
        self.table_name: str = client.table_name
        self.endpoint = endpoint
        self._ready = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, table_name: str, *, connection_string: str | None = None,
                      account_name: str | None = None, table_service_uri: str | None = None,
                      credential: TokenCredential | None = None) -> TableLedger:
        """From the app's storage settings: `AzureWebJobsStorage` (a connection string, or
        UseDevelopmentStorage=true), else identity-based `AzureWebJobsStorage__tableServiceUri`
        or `__accountName` with `credential` (DefaultAzureCredential when None; pass the
        app's shared one). ConfigurationError names the setting that breaks its rule."""
        from azure.data.tables import TableClient

        if not _TABLE_NAME.fullmatch(table_name or ""):
            raise ConfigurationError(
                f"REDISFLUSH_LEDGER_TABLE: {table_name!r} is not a table name "
                "(a letter, then 2-62 letters or digits)")
        if table_name.lower() == "tables":  # the service refuses it with a bare 400
            raise ConfigurationError(f"REDISFLUSH_LEDGER_TABLE: {table_name!r} must not be "
                                     "'tables', a name Table storage reserves")
        if connection_string:
            try:
                client = TableClient.from_connection_string(
                    connection_string, table_name, transport=_transport(), **CLIENT_OPTIONS)
            except (ValueError, TypeError):
                raise ConfigurationError(
                    "AzureWebJobsStorage: not a storage connection string with a table "
                    "endpoint") from None  # the value holds a key: never repeat it
            return cls(client, _public_url(client.url))
        endpoint = identity_endpoint(account_name=account_name,
                                     table_service_uri=table_service_uri)
        if credential is None:
            from azure.identity import DefaultAzureCredential
            credential = DefaultAzureCredential()
        client = TableClient(endpoint=endpoint, table_name=table_name, credential=credential,
                             transport=_transport(), **CLIENT_OPTIONS)
        return cls(client, endpoint)

    # -- the Ledger port ---------------------------------------------------------------

    def insert(self, row: LedgerRow) -> LedgerRow | None:
        from azure.core.exceptions import ResourceExistsError

        text = encode_data(row.data)
        with self._calling("insert", row.request_id) as table:
            try:
                answer = table.create_entity(to_entity(row, text),
                                             response_preference="return-no-content")
            except ResourceExistsError as exc:
                if error_code(exc) not in ("EntityAlreadyExists", ""):
                    raise  # another 409 (e.g. TableBeingDeleted) is a failure, not a loss
                return None
        return replace(row, data=decode_data(text), etag=answer["etag"])

    def update(self, row: LedgerRow) -> LedgerRow | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        text = encode_data(row.data)
        if not row.etag.startswith('W/"'):
            return None  # not an etag the service issued ('' = never stored): never current
        with self._calling("update", row.request_id) as table:
            try:
                answer = table.update_entity(to_entity(row, text), mode=UpdateMode.REPLACE,
                                             etag=row.etag,
                                             match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError:
                return None
            except ResourceNotFoundError as exc:
                if table_missing(exc):
                    raise
                return None
        return replace(row, data=decode_data(text), etag=answer["etag"])

    def get(self, request_id: str, key: str) -> LedgerRow | None:
        from azure.core.exceptions import ResourceNotFoundError

        with self._calling("get", request_id) as table:
            try:
                entity = table.get_entity(request_id, row_key(key))
            except ResourceNotFoundError as exc:
                if table_missing(exc):
                    raise
                return None
        return from_entity(entity)

    def rows(self, request_id: str) -> list[LedgerRow]:
        with self._calling("rows", request_id) as table:
            found = [from_entity(e) for e in table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": request_id})]
        return sorted(found, key=row_order)

    def purge(self, now: dt.datetime, budget: float = PURGE_BUDGET) -> int:
        """The rows of every request whose rows have all expired (ExpiresAt <= now), a whole
        request at a time: its partition is read whole and deleted in one entity-group
        transaction, each delete only if the row is unchanged since that read. A request with
        any row not yet expired (a repeat may have written a later ExpiresAt), or changed
        under the purge, is left whole for a later run, so no request is left half-purged
        (docs/design.md, "Request ledger"). Requests are taken as the scan finds them, and
        the run stops after `budget` seconds (the function timeout is 2 minutes); the next
        run goes on. The scan asks for a millisecond more and the exact test is made here:
        Azurite compares datetimes in filters at millisecond precision."""
        from azure.core import MatchConditions
        from azure.data.tables import TableTransactionError

        now = utc(now)
        upper = now.replace(microsecond=now.microsecond // 1000 * 1000) + _MILLISECOND
        stop_at = time.monotonic() + budget
        gone = 0
        with self._calling("purge", None) as table:
            pages = table.query_entities("ExpiresAt le @upper", parameters={"upper": upper},
                                         select=["PartitionKey"]).by_page()
            for request_id in _new_partitions(pages, stop_at):
                rows = list(table.query_entities("PartitionKey eq @pk",
                                                 parameters={"pk": request_id},
                                                 select=["PartitionKey", "RowKey", "ExpiresAt"]))
                if not rows or len(rows) > MAX_BATCH or \
                        any(utc(r["ExpiresAt"]) > now for r in rows):
                    continue
                try:
                    table.submit_transaction([
                        ("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]},
                         {"etag": r.metadata["etag"],
                          "match_condition": MatchConditions.IfNotModified})
                        for r in rows])
                except TableTransactionError:
                    continue  # a row changed or went since the read: not ours to judge now
                gone += len(rows)
        return gone

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _calling(self, doing: str, request_id: str | None) -> Iterator[TableClient]:
        """The client (table created on first use), with every azure.core failure turned
        into one LedgerError line."""
        from azure.core.exceptions import AzureError

        if request_id is not None and (not request_id or _BAD_KEY_CHARS.search(request_id)):
            raise ValueError(f"request id {request_id!r} cannot be a Table PartitionKey")
        try:
            yield self._table()
        except AzureError as exc:
            if table_missing(exc):
                self._ready = False  # deleted under us: create it again on the next call
            raise LedgerError(f"ledger table {self.table_name} at {self.endpoint}: "
                              f"{doing} failed: {describe(exc)}") from None

    def _table(self) -> TableClient:
        from azure.core.exceptions import ResourceExistsError

        if not self._ready:
            with self._lock:
                if not self._ready:
                    try:
                        self._client.create_table()
                    except ResourceExistsError as exc:
                        if error_code(exc) not in ("TableAlreadyExists", ""):
                            raise  # TableBeingDeleted: not usable yet
                    self._ready = True
        return self._client


def _new_partitions(pages: Iterator[Iterator[Any]], stop_at: float) -> Iterator[str]:
    """Each PartitionKey of the scan once, until time.monotonic() passes stop_at: checked on
    every page, since the service may answer a scan of a large table with empty pages (and
    a continuation) for as long as it takes, and on every hit."""
    seen: set[str] = set()
    for page in pages:
        if time.monotonic() > stop_at:
            return
        for hit in page:
            request_id = str(hit["PartitionKey"])
            if request_id in seen:
                continue
            if time.monotonic() > stop_at:
                return
            seen.add(request_id)
            yield request_id


def identity_endpoint(*, account_name: str | None, table_service_uri: str | None) -> str:
    """The table service URL of an identity-based connection: tableServiceUri as given, else
    https://{accountName}.table.core.windows.net."""
    if table_service_uri:
        parts = urlsplit(table_service_uri.strip())
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.username:
            raise ConfigurationError(  # the SDK sends a token over https only
                "AzureWebJobsStorage__tableServiceUri: must be an absolute https URL "
                "with no query or user")
        return _public_url(table_service_uri.strip())
    if account_name:
        if not _ACCOUNT_NAME.fullmatch(account_name):
            raise ConfigurationError(
                f"AzureWebJobsStorage__accountName: {account_name!r} is not a storage "
                "account name (3-24 lower-case letters and digits)")
        return f"https://{account_name}.table.core.windows.net"
    raise ConfigurationError(
        "AzureWebJobsStorage: none of AzureWebJobsStorage, AzureWebJobsStorage__accountName "
        "or AzureWebJobsStorage__tableServiceUri is set (the ledger's storage account)")


def _public_url(url: str) -> str:
    """scheme://host[:port][/path] of a service URL: no query (a SAS), no trailing slash."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (
        f":{parts.port}" if parts.port else "") + parts.path.rstrip("/")
