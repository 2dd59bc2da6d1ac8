"""FlushTrigger: a flush request arrives on the request queue.

Thin on purpose: all logic is in redisflush.app. Returning completes the message; the only
exception that escapes is a bus failure, so the host redelivers.
"""
import azure.functions as func

from redisflush.functions import check_settings, handle_request

# At load, not per message: a broken setting stops the function here with one line.
check_settings()


def main(msg: func.ServiceBusMessage) -> None:
    handle_request(msg)
