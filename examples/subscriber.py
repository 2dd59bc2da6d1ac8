"""React to redisflush completion events: warm a cache after each `Succeeded` flush.

    pip install azure-servicebus azure-identity
    python examples/subscriber.py --namespace NS --create            # once: subscription + rule
    python examples/subscriber.py --namespace NS --warmup-url https://my-app/api/warmup

The subscription (`warmup` by default) on topic `redis-flush-events` gets one SQL rule,
`status = 'Succeeded'`, on the application property the app sets on every event
(docs/design.md, "Completion events": type, status, cacheName, kind, resourceGroup,
subscriptionId, requestId, correlationId), so Service Bus delivers only successful flushes.
A request with several caches also publishes a per-request `RedisFlush.RequestCompleted`
event; `handle_event` ignores it (each cache has its own `RedisFlush.FlushCompleted`), and a
rule `status = 'Succeeded' AND type = 'RedisFlush.FlushCompleted'` keeps it out entirely.
`--create` makes the subscription with ServiceBusAdministrationClient,
which needs the *Azure Service Bus Data Owner* role (rules are management operations). Without
that role, declare it in Bicep next to the topic instead and run this program with *Data
Receiver* only:

    resource warmup 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2021-11-01' = {
      parent: eventsTopic
      name: 'warmup'
      properties: { maxDeliveryCount: 10, lockDuration: 'PT1M' }
    }
    resource succeededOnly 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2021-11-01' = {
      parent: warmup
      name: 'succeeded'
      properties: { filterType: 'SqlFilter', sqlFilter: { sqlExpression: 'status = \\'Succeeded\\'' } }
    }

(a new subscription also gets a `$Default` match-all rule when created through the data plane;
`ensure_subscription` removes it, Bicep-created subscriptions have only the rules declared.)

Identity: DefaultAzureCredential (az login, workload identity, managed identity). Handling:
an event is completed after `handle_event` returns; if the warm-up raises, the message is
abandoned and redelivered, and after the subscription's MaxDeliveryCount it is dead-lettered.
Nothing here needs Azure to be imported: the azure-* imports happen inside the functions.

Exit codes, as the redisflush CLI's (README, "CLI"): 0 after --max-events, 2 for a usage
error or when the bus fails (no such namespace or subscription, a missing role, the network:
one line naming the namespace, no traceback; `-v` keeps the SDK's own log lines), 130 on
Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

EVENT_TYPE = "RedisFlush.FlushCompleted"
DEFAULT_TOPIC = "redis-flush-events"
DEFAULT_SUBSCRIPTION = "warmup"
RULE_NAME = "succeeded"
SQL_FILTER = "status = 'Succeeded'"

log = logging.getLogger("subscriber")

Warm = Callable[[str, str, str], None]   # (cache name, resource id, request id)


def decode(body: bytes) -> dict[str, Any] | None:
    """The CloudEvents document of a message body, or None when it is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def handle_event(event: Mapping[str, Any], warm: Warm) -> bool:
    """Warm the cache of a Succeeded completion event; True when it did.

    The subscription's SQL rule already filters on `status`, but the body is what counts:
    anything that is not a Succeeded FlushCompleted event is ignored (progress notes,
    other event types, a rule someone widened)."""
    if event.get("type") != EVENT_TYPE:
        return False
    data = event.get("data")
    if not isinstance(data, Mapping) or data.get("status") != "Succeeded":
        return False
    cache = event.get("subject") or str(data.get("resourceId") or "").rsplit("/", 1)[-1]
    if not cache:
        return False
    warm(cache, str(data.get("resourceId") or event.get("source") or ""),
         str(data.get("requestId") or ""))
    return True


def http_warmer(url: str, timeout: float = 30.0) -> Warm:
    """A warm-up call: POST {"cacheName", "resourceId", "requestId"} to `url` (for example an
    HTTP-triggered function that preloads hot keys). Raises on a non-2xx answer so the event
    is redelivered."""
    def warm(cache: str, resource_id: str, request_id: str) -> None:
        payload = json.dumps({"cacheName": cache, "resourceId": resource_id,
                              "requestId": request_id}).encode()
        request = urllib.request.Request(url, data=payload, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise RuntimeError(f"warm-up answered {response.status}")
        log.info("warmed %s after flush %s", cache, request_id)
    return warm


def print_warmer(cache: str, resource_id: str, request_id: str) -> None:
    print(f"flushed {cache} (request {request_id}): warm it now", flush=True)


def ensure_subscription(admin: Any, topic: str, subscription: str) -> None:
    """Create `subscription` with the single rule `status = 'Succeeded'` (idempotent)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.servicebus.management import SqlRuleFilter

    try:
        admin.get_subscription(topic, subscription)
    except ResourceNotFoundError:
        admin.create_subscription(topic, subscription, max_delivery_count=10,
                                  lock_duration="PT1M")
    rules = {rule.name: rule for rule in admin.list_rules(topic, subscription)}
    if RULE_NAME not in rules:
        admin.create_rule(topic, subscription, RULE_NAME, filter=SqlRuleFilter(SQL_FILTER))
    for name in rules:
        if name != RULE_NAME:                     # `$Default` (1=1) would let everything in
            admin.delete_rule(topic, subscription, name)


def process(receiver: Any, messages: Sequence[Any], warm: Warm) -> int:
    """Handle and settle one batch; returns how many caches were warmed."""
    warmed = 0
    for message in messages:
        event = decode(b"".join(message.body))
        if event is None:
            receiver.dead_letter_message(message, reason="UnreadableEvent",
                                         error_description="not a JSON object")
            continue
        try:
            warmed += handle_event(event, warm)
        except Exception as exc:  # the warm-up failed: let Service Bus redeliver it
            log.warning("warm-up failed (%s); the event will be redelivered", exc)
            receiver.abandon_message(message)
            continue
        receiver.complete_message(message)
    return warmed


def run(namespace: str, topic: str, subscription: str, warm: Warm, *,
        create: bool = False, max_events: int | None = None) -> int:
    from azure.identity import DefaultAzureCredential
    from azure.servicebus import ServiceBusClient

    host = namespace if "." in namespace else f"{namespace}.servicebus.windows.net"
    credential = DefaultAzureCredential()
    if create:
        from azure.servicebus.management import ServiceBusAdministrationClient
        with ServiceBusAdministrationClient(host, credential) as admin:
            ensure_subscription(admin, topic, subscription)
    warmed = 0
    with ServiceBusClient(host, credential, retry_total=3) as client, \
            client.get_subscription_receiver(topic, subscription, max_wait_time=30) as receiver:
        while max_events is None or warmed < max_events:
            warmed += process(receiver, receiver.receive_messages(max_message_count=10,
                                                                  max_wait_time=30), warm)
    return warmed


EXIT_BUS_FAILED = 2     # the CLI's code for "the bus failed" (README, "CLI")


def first_line(exc: BaseException) -> str:
    """The exception's name and the first line of its message, for a one-line error."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else '(no message)'}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Warm caches after redisflush flushes them.")
    parser.add_argument("--namespace", required=True, help="NAME or NAME.servicebus.windows.net")
    parser.add_argument("--topic", default=DEFAULT_TOPIC)
    parser.add_argument("--subscription", default=DEFAULT_SUBSCRIPTION)
    parser.add_argument("--create", action="store_true",
                        help="create the subscription and its SQL rule (needs Data Owner)")
    parser.add_argument("--warmup-url", help="POST each flushed cache here (default: print)")
    parser.add_argument("--max-events", type=int, help="stop after this many warm-ups")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="keep the Azure SDK's own log lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.verbose:   # the SDK logs each retry, with tracebacks, before it raises
        logging.getLogger("azure").setLevel(logging.CRITICAL)
    warm = http_warmer(args.warmup_url) if args.warmup_url else print_warmer
    try:
        run(args.namespace, args.topic, args.subscription, warm, create=args.create,
            max_events=args.max_events)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # AzureError: every Service Bus and sign-in error
        from azure.core.exceptions import AzureError
        if not isinstance(exc, AzureError | OSError):
            raise
        print(f"error: cannot receive from {args.topic}/{args.subscription} on namespace "
              f"{args.namespace}: {first_line(exc)}", file=sys.stderr)
        return EXIT_BUS_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
