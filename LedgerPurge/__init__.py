"""LedgerPurge: once an hour, delete the ledger rows of requests a day past their deadline.

Thin on purpose: all logic is in redisflush.app. A failure raises; the next hour tries again
(rows only wait longer, nothing else depends on them going).
"""
import azure.functions as func

from redisflush.functions import check_settings, handle_purge

# At load, not per run: a broken setting stops the function here with one line.
check_settings()


def main(timer: func.TimerRequest) -> None:
    handle_purge(timer)
