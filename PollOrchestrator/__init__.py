"""PollOrchestrator: a scheduled poll message wakes the chain for its next step.

Thin on purpose: all logic is in redisflush.app. Returning completes the message; the only
exception that escapes is a bus failure (or an unreadable poll state), so the host redelivers.
"""
import azure.functions as func

from redisflush.functions import check_settings, handle_poll

# At load, not per message: a broken setting stops the function here with one line.
check_settings()


def main(msg: func.ServiceBusMessage) -> None:
    handle_poll(msg)
