"""Messages as Azure hands them to a v1 Python function, for every test fixture.

One builder for the local host and the tests: `redisflush.local.worker_message` (trigger
metadata shaped as the Service Bus extension 5.x sends it through the Functions host, decoded by
azure-functions' own `ServiceBusMessageInConverter.decode`). This module only re-exports it and
adds shortcuts from the shapes tests hold, so fixtures and the local host cannot drift apart.

Why both function.json files say `"dataType": "binary"`: without it the extension converts the
body to a string before the worker sees it, and two things follow that the app must not have.
1. Invalid UTF-8 is decoded leniently into U+FFFD (strict decode first, then a lossy one), so
   the app's "body must be UTF-8" rejection (docs/design.md, "Flush request") could never fire
   in Azure: a damaged body would be parsed as if it were text someone sent.
2. The host copies every top-level property of a JSON string body over the binding data it
   sends as trigger metadata (names compared case-insensitively): a request body with
   `"replyTo"`, `"messageId"`, `"deliveryCount"` or `"enqueuedTimeUtc"` would replace the
   broker's ReplyTo, MessageId, DeliveryCount or EnqueuedTimeUtc before the app reads them.
With "binary" the body arrives as the exact bytes that were sent and the metadata is the
broker's alone. `worker_message(..., data_type="string")` reproduces both effects, so a test can
show them.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import azure.functions as func

from redisflush.bus import OutboundMessage, ReceivedMessage
from redisflush.local.worker_message import (
    DATA_TYPES,
    NO_EXPIRY,
    apply_body_binding_data,
    body_datum,
    decode,
    dotnet_text,
    function_data_type,
    received_fields,
    received_worker_message,
    trigger_metadata,
    worker_message,
)

__all__ = ["DATA_TYPES", "NO_EXPIRY", "apply_body_binding_data", "body_datum", "decode",
           "dotnet_text", "from_received", "function_data_type", "outbound_fields",
           "outbound_worker_message", "received_fields", "received_worker_message",
           "trigger_metadata", "worker_message"]


def outbound_fields(message: OutboundMessage, *, delivery_count: int = 1,
                    sequence_number: int = 1, enqueued_at: dt.datetime,
                    lock_token: str = "00000000-0000-0000-0000-000000000001",
                    **extra: Any) -> dict[str, Any]:
    """`trigger_metadata` arguments for a message as sent, once the broker has taken it."""
    return dict(message_id=message.message_id, delivery_count=delivery_count,
                sequence_number=sequence_number, enqueued_at=enqueued_at,
                lock_token=lock_token, content_type=message.content_type,
                correlation_id=message.correlation_id, subject=message.subject,
                session_id=message.session_id, reply_to=message.reply_to,
                reply_to_session_id=message.reply_to_session_id,
                application_properties=dict(message.application_properties), **extra)


def outbound_worker_message(message: OutboundMessage, *, data_type: str = "binary",
                            enqueued_at: dt.datetime, **fields: Any) -> func.ServiceBusMessage:
    """`main`'s argument for a message a test (or the app) sent."""
    return worker_message(message.body, data_type=data_type,
                          **outbound_fields(message, enqueued_at=enqueued_at, **fields))


def from_received(message: ReceivedMessage, *, data_type: str = "binary"
                  ) -> func.ServiceBusMessage:
    """`main`'s argument for a message taken from a bus double."""
    return received_worker_message(message, data_type=data_type)
