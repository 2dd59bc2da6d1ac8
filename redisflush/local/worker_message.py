"""The `func.ServiceBusMessage` a v1 Python function is handed, built the way Azure builds it.

In Azure three parties make it. The Service Bus extension 5.x turns the received message into
binding data; the Functions host sends that to the worker as trigger metadata (gRPC TypedData:
strings as strings, every other value as Json.NET text, nulls left out); the worker passes it
with the body to azure-functions' `ServiceBusMessageInConverter.decode`. This module plays the
first two and calls the third, so the local host and every test fixture give `main` exactly
what Azure gives it (docs/design.md, "Platform"):

- `EnqueuedTimeUtc` and `ExpiresAtUtc` are a .NET DateTime without offset, so the worker returns
  naive datetimes (the app must read them as UTC); `EnqueuedTime` and `ExpiresAt` carry +00:00.
- `ApplicationProperties` and `UserProperties` are the same JSON object; `Label` = `Subject`.
- `LockedUntil`, `ScheduledEnqueueTimeUtc`, `State`, `EnqueuedSequenceNumber` and `TimeToLive`
  are never sent (the extension has no such binding data), so those attributes are None.
- The body is bytes with `"dataType": "binary"` in function.json. Otherwise it is a string:
  strict UTF-8, else a lossy decode with U+FFFD, and the host also copies the top-level
  properties of a JSON body over the binding data (a body field `replyTo` replaces ReplyTo).
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any

import azure.functions as func
from azure.functions import meta
from azure.functions.servicebus import ServiceBusMessageInConverter

from ..bus import ReceivedMessage

DATA_TYPES = ("binary", "string")
DEFAULT_DATA_TYPE = "string"  # what the host binds when function.json names no dataType
NO_EXPIRY = "9999-12-31T23:59:59.9999999"  # DateTimeOffset.MaxValue: a message without TTL
_UTC = dt.UTC
# The settlement objects (MessageReceiver, MessageActions, ...) are .NET objects the worker
# cannot use: Json.NET writes what public properties they have.
_ACTIONS = ("MessageReceiver", "MessageSession", "MessageActions", "SessionActions",
            "ReceiveActions")


def function_data_type(binding: Mapping[str, Any]) -> str:
    """The body's type for a function.json serviceBusTrigger binding: "binary" or "string"."""
    value = binding.get("dataType") or DEFAULT_DATA_TYPE
    if value not in DATA_TYPES:
        raise ValueError(f"dataType {value!r}: a serviceBusTrigger takes 'binary' or 'string'")
    return str(value)


def dotnet_text(moment: dt.datetime, *, offset: bool) -> str:
    """Json.NET's ISO text of a UTC time: a DateTime (no offset) or a DateTimeOffset (+00:00),
    seven fractional digits at most with trailing zeros dropped."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(_UTC)
    # fields formatted directly: strftime costs more than the rest of this function
    text = (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
            f"{moment.minute:02d}:{moment.second:02d}")
    fraction = f"{moment.microsecond:06d}0".rstrip("0")
    return text + (f".{fraction}" if fraction else "") + ("+00:00" if offset else "")


def _json(value: Any) -> meta.Datum:
    return meta.Datum(json.dumps(value, separators=(",", ":")), "json")


# Json.NET text built without json.dumps per field (the host runs this for every message):
# `_quoted(s)` is json.dumps(s) for a str, byte for byte (the same C encoder, ASCII-escaped).
_quoted: Any = getattr(json.encoder, "c_encode_basestring_ascii", None) or \
    json.encoder.encode_basestring_ascii


def _json_text(text: str) -> meta.Datum:
    return meta.Datum(_quoted(text), "json")


def _json_int(value: int) -> meta.Datum:
    return meta.Datum(str(value) if type(value) is int else json.dumps(value), "json")


# ServiceBusClient.Identifier is "{namespace}-{a new GUID}" made once per client, and the
# extension keeps one client per connection for the host's life: one GUID per process (a new
# one per message cost a uuid4 and its getrandom call on every execution).
_CLIENT_ID = str(uuid.uuid4())


def trigger_metadata(*, message_id: str, delivery_count: int, sequence_number: int,
                     enqueued_at: dt.datetime, lock_token: str,
                     content_type: str | None = None, correlation_id: str | None = None,
                     subject: str | None = None, session_id: str | None = None,
                     reply_to: str | None = None, reply_to_session_id: str | None = None,
                     to: str | None = None, partition_key: str | None = None,
                     transaction_partition_key: str | None = None,
                     dead_letter_source: str | None = None,
                     application_properties: Mapping[str, Any] | None = None,
                     time_to_live: dt.timedelta | None = None,
                     namespace: str = "localhost") -> dict[str, meta.Datum]:
    """The trigger metadata the worker receives for one message (single dispatch), as the
    Service Bus extension 5.x binding data reaches it through the Functions host (which drops
    the `sys` entry: ScriptInvocationContextExtensions.ShouldSkipBindingData)."""
    enqueued = enqueued_at if enqueued_at.tzinfo else enqueued_at.replace(tzinfo=_UTC)
    enqueued_text = dotnet_text(enqueued, offset=False)
    expires_text = NO_EXPIRY if time_to_live is None \
        else dotnet_text(enqueued + time_to_live, offset=False)
    props = _quoted_json(application_properties)
    fields: dict[str, meta.Datum] = {}
    for name, value in (
            ("MessageId", message_id), ("LockToken", lock_token), ("ContentType", content_type),
            ("CorrelationId", correlation_id), ("Subject", subject), ("Label", subject),
            ("SessionId", session_id), ("ReplyTo", reply_to),
            ("ReplyToSessionId", reply_to_session_id), ("To", to),
            ("PartitionKey", partition_key),
            ("TransactionPartitionKey", transaction_partition_key),
            ("DeadLetterSource", dead_letter_source)):
        # the host drops a null: a message sent without a MessageId has none
        if value is not None and (value or name != "MessageId"):
            fields[name] = meta.Datum(value, "string")
    # Key order as json.dumps writes these dicts; the strings through the same encoder.
    fields.update({
        "DeliveryCount": _json_int(delivery_count),
        "SequenceNumber": _json_int(sequence_number),
        "EnqueuedTimeUtc": _json_text(enqueued_text),
        "EnqueuedTime": _json_text(enqueued_text + "+00:00"),
        "ExpiresAtUtc": _json_text(expires_text),
        "ExpiresAt": _json_text(expires_text + "+00:00"),
        "ApplicationProperties": meta.Datum(props, "json"),
        "UserProperties": meta.Datum(props, "json"),
        "Client": meta.Datum(
            '{"FullyQualifiedNamespace":' + _quoted(namespace) + ',"IsClosed":false,'
            '"TransportType":0,"Identifier":' + _quoted(f"{namespace}-{_CLIENT_ID}") + "}",
            "json"),
    })
    for name in _ACTIONS:
        fields[name] = meta.Datum("{}", "json")
    return fields


def _quoted_json(properties: Mapping[str, Any] | None) -> str:
    """json.dumps of the application properties (compact): "{}" without any."""
    return json.dumps(dict(properties), separators=(",", ":")) if properties else "{}"


def body_datum(body: bytes, data_type: str) -> meta.Datum:
    """The body as the worker receives it: bytes, or the extension's string conversion."""
    if data_type == "binary":
        return meta.Datum(bytes(body), "bytes")
    if data_type != "string":
        raise ValueError(f"data_type {data_type!r}: 'binary' or 'string'")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        text = bytes(body).decode("utf-8", errors="replace")
    return meta.Datum(text, "string")


def _dotnet_string(value: Any) -> str:
    """`(string)JToken` for a JSON scalar."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else repr(value)


def apply_body_binding_data(metadata: dict[str, meta.Datum], text: str) -> None:
    """What the host does with a string trigger value that looks like a JSON object: every
    top-level property that is not an array or null replaces the binding data of the same name
    (names compare case-insensitively) or is added."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return
    try:
        parsed = json.loads(stripped)
    except ValueError:
        return
    if not isinstance(parsed, dict):
        return
    by_lower = {key.lower(): key for key in metadata}
    for name, value in parsed.items():
        if value is None or isinstance(value, list):
            continue
        datum = _json(value) if isinstance(value, dict) \
            else meta.Datum(_dotnet_string(value), "string")
        metadata[by_lower.setdefault(name.lower(), name)] = datum


def decode(body: bytes, metadata: Mapping[str, meta.Datum], *,
           data_type: str) -> func.ServiceBusMessage:
    """What the worker does: the body datum and the metadata through azure-functions' own
    converter (with a string body, after the host copied its JSON properties over)."""
    datum = body_datum(body, data_type)
    fields = dict(metadata)
    if data_type == "string":
        apply_body_binding_data(fields, datum.value)
    message = ServiceBusMessageInConverter.decode(datum, trigger_metadata=fields)
    if not isinstance(message, func.ServiceBusMessage):
        raise TypeError("expected one message (cardinality one)")
    return message


def worker_message(body: bytes, *, data_type: str, **fields: Any) -> func.ServiceBusMessage:
    """`main`'s argument for one message; `fields` are `trigger_metadata`'s arguments."""
    return decode(body, trigger_metadata(**fields), data_type=data_type)


def received_fields(msg: ReceivedMessage) -> dict[str, Any]:
    """`trigger_metadata` arguments from a receiver's view of the message."""
    return dict(message_id=msg.message_id, delivery_count=msg.delivery_count,
                sequence_number=msg.sequence_number, enqueued_at=msg.enqueued_at,
                lock_token=msg.lock_token, content_type=msg.content_type,
                correlation_id=msg.correlation_id, subject=msg.subject,
                session_id=msg.session_id, reply_to=msg.reply_to,
                reply_to_session_id=msg.reply_to_session_id,
                application_properties=dict(msg.application_properties))


def received_worker_message(msg: ReceivedMessage, *, data_type: str
                            ) -> func.ServiceBusMessage:
    """`main`'s argument for a message taken from a bus (the local host's path)."""
    return worker_message(msg.body, data_type=data_type, **received_fields(msg))
