"""A ledger row as a Table storage entity and back: PartitionKey = requestId, RowKey =
"request" or "t-" + sha256 of the target's key, the key itself in `Key`, times as UTC."""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from .ledger import REQUEST_KEY, LedgerRow, decode_data

REQUEST_ROW_KEY = "request"


def row_key(key: str) -> str:
    """The RowKey of a ledger key: fixed for the request row, a hash for a target."""
    if key == REQUEST_KEY:
        return REQUEST_ROW_KEY
    return "t-" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime (naive counts as UTC: the SDK would read it as local time), as a
    plain datetime rather than the SDK's TablesEntityDatetime subclass."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    return dt.datetime(value.year, value.month, value.day, value.hour, value.minute,
                       value.second, value.microsecond, tzinfo=dt.UTC)


def to_entity(row: LedgerRow, text: str) -> dict[str, Any]:
    return {
        "PartitionKey": row.request_id,
        "RowKey": row_key(row.key),
        "Key": row.key,
        "State": row.state,
        "Data": text,
        "Posts": row.posts,
        "UpdatedAt": utc(row.updated_at),
        "ExpiresAt": utc(row.expires_at),
    }


def from_entity(entity: Mapping[str, Any]) -> LedgerRow:
    metadata: Mapping[str, Any] = getattr(entity, "metadata", {})
    return LedgerRow(request_id=entity["PartitionKey"], key=entity["Key"],
                     state=entity["State"], data=decode_data(entity["Data"]),
                     posts=int(entity["Posts"]), updated_at=utc(entity["UpdatedAt"]),
                     expires_at=utc(entity["ExpiresAt"]), etag=metadata["etag"])
