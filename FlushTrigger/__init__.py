"""FlushTrigger: a flush request arrives on the request queue.

Thin on purpose: all logic is in redisflush.app. Returning completes the message; the only
exception that escapes is a bus failure, so the host redelivers.
"""
import azure.functions as func

from redisflush.functions import handle_request


def main(msg: func.ServiceBusMessage) -> None:
    handle_request(msg)
