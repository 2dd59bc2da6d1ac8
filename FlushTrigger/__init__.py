"""FlushTrigger: a flush request arrives on the request queue.

Thin on purpose: all logic is in redisflush.app. Returning completes the message; the only
exceptions that escape are a bus failure and the ledger failing before a POST could go, so
the host abandons the message and Service Bus redelivers it (docs/design.md, "Platform").
"""
import azure.functions as func

from redisflush.functions import check_settings, handle_request

# At load, not per message: a broken setting stops the function here with one line.
check_settings()


def main(msg: func.ServiceBusMessage) -> None:
    handle_request(msg)
