"""The shell's ledger calls that must not raise: a redelivered step's read of its rows, and the
records a step makes once its calls are made. A failure is logged and the invocation goes on
(README, "Reliability"); the calls that must raise (opening a request, storing a list,
claiming a target) are `ledger_ops`'s, carried out by `app.py` as they are.

Kept apart from `app.py`: the retry pauses, the window and when the table is taken to be
down are rules of their own (docs/design.md, "Request ledger")."""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from .app_invocation import Invocation
from .core.commands import Opened, ReadRows, RecordRequest, RecordTarget
from .ledger import Ledger, LedgerError
from .ledger_ops import read_rows, record
from .logtext import printable

log = logging.getLogger("redisflush")
# A failed ledger record is tried again after these pauses, while the invocation is younger
# than RECORD_WINDOW; once one has failed for good, the table is taken to be down and the
# invocation's other records are skipped untried: it must end inside its one-minute lock.
RECORD_PAUSES = (0.5, 2.0)
RECORD_WINDOW = 45.0


def read_rows_or_unknown(ledger: Ledger, command: ReadRows, request_id: str,
                         run: Invocation) -> Opened:
    """A redelivered step's look at what its first try recorded: best effort. A ledger
    that fails answers `unknown`, and the step reads ARM again as it would have; raising
    would spend the message's deliveries on a table outage and lose the chain."""
    if not run.ledger_down:
        try:
            return read_rows(ledger, request_id, command)
        except LedgerError as exc:
            run.ledger_down = True
            log.warning("request %s: the ledger's rows could not be read for a redelivered "
                        "step, so it reads ARM again: %s", printable(request_id),
                        printable(exc, 300))
    return Opened("unknown")


def record_or_skip(ledger: Ledger, command: RecordTarget | RecordRequest, request_id: str,
                   run: Invocation, *, clock: Callable[[], dt.datetime],
                   monotonic: Callable[[], float], sleep: Callable[[float], None]) -> None:
    """A ledger record, tried again after RECORD_PAUSES. One that still fails is logged
    and skipped: the step has made its calls, and raising would have the redelivery find
    each answered target still claimed and POST it again. What it costs: a repeat of the
    request finds the row as it was (docs/design.md, "Request ledger"). A row the ledger
    refuses as too long (ValueError: a bug, not an outage) is skipped the same way, at
    once: raising would POST again just the same."""
    problem = "the ledger failed an earlier record of this invocation"
    for pause in (*RECORD_PAUSES, None):
        if run.ledger_down:
            break
        try:
            record(ledger, request_id, command, clock())
            return
        except ValueError as exc:
            problem = f"the ledger refuses the row: {exc}"
            break
        except LedgerError as exc:
            problem = str(exc)
            if pause is None or monotonic() - run.started >= RECORD_WINDOW:
                run.ledger_down = True
                break
            sleep(pause)
    what = f"target {command.key}" if isinstance(command, RecordTarget) else "the request"
    log.error("request %s: %s not recorded %s in the ledger, skipped (a repeat of the "
              "request finds its row as it was): %s", printable(request_id),
              printable(what, 300), command.state, printable(problem, 300))
