"""A request's id: the body's requestId, else one derived from the Service Bus MessageId
(or, without one, from its SequenceNumber), stable across redeliveries."""
from __future__ import annotations

import datetime as dt
import hashlib
import re

# 80: the longest id the app derives from it (a repeat's reply copy of a RequestIdReused
# event, `{requestId}:reused:{12 hex}:completed:{12 hex}`, 43 more) stays within Service
# Bus's 128-character MessageId, with room for long step numbers.
MAX_REQUEST_ID = 80


_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID}}}", re.ASCII)


def stand_in_message_id(sequence_number: object, enqueued_at: dt.datetime | None) -> str:
    """An id for a message sent without a MessageId (the .NET SDK's ServiceBusMessage sets
    none unless told to): its SequenceNumber and enqueue time, which the broker assigns once
    and every redelivery repeats, so such requests neither collapse into one requestId (each
    but the first answered as a repeat, unflushed) nor lose exactly-once across redeliveries
    (README, "The flush request"). "" when the worker gave no sequence number either."""
    if isinstance(sequence_number, bool) or not isinstance(sequence_number, int):
        return ""
    moment = "" if enqueued_at is None else \
        f"-{enqueued_at.astimezone(dt.UTC):%Y%m%dT%H%M%S%f}Z"
    return f"sb-seq-{sequence_number}{moment}"


def request_id_from_message_id(message_id: str) -> str:
    """The MessageId when it is a valid requestId, else a stable digest of it."""
    if _REQUEST_ID.fullmatch(message_id or ""):
        return message_id
    return "msg-" + hashlib.sha256((message_id or "").encode("utf-8", "replace")).hexdigest()[:32]


def is_request_id(value: object) -> bool:
    return isinstance(value, str) and _REQUEST_ID.fullmatch(value) is not None
