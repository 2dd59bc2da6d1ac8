"""PollOrchestrator: a scheduled poll message wakes the chain for its next step.

Thin on purpose: all logic is in redisflush.app. Returning completes the message; the only
exceptions that escape are a bus failure, the ledger failing before a POST could go, and an
unreadable poll state, so the host abandons the message and Service Bus redelivers it
(docs/design.md, "Platform").
"""
import azure.functions as func

from redisflush.functions import check_settings, handle_poll

# At load, not per message: a broken setting stops the function here with one line.
check_settings()


def main(msg: func.ServiceBusMessage) -> None:
    handle_poll(msg)
