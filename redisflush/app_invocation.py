"""One invocation of the shell: what it keeps while it runs, the line it logs when it is done,
and the line it logs when it raises.

Kept apart from `app.py` so the shell reads as the loop and the effects it carries out; the
host's log lines are a contract of their own (docs/azure.md, "Application Insights queries")."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from .core.commands import Command, Publish, Schedule
from .logtext import printable

log = logging.getLogger("redisflush")


@contextlib.contextmanager
def raising_logged(request_id: str) -> Iterator[None]:
    """An invocation that raises (the bus or the ledger failed) logs one line naming its
    request before the exception leaves: the host's exception names no request, and the
    engineer on call looks a dead-lettered request up by its id (docs/azure.md,
    "Application Insights queries")."""
    try:
        yield
    except Exception as exc:
        log.error("request %s: raised, so the message is delivered again (dead-lettered "
                  "after MaxDeliveryCount): %s: %s", printable(request_id),
                  type(exc).__name__, printable(exc, 300))
        raise


@dataclass
class Invocation:
    """One invocation: when it began (no ARM call starts CALL_WINDOW after it, no failed
    ledger record is tried again RECORD_WINDOW after it), and whether a record failed for
    good (the table is taken to be down: the rest are skipped)."""

    started: float
    ledger_down: bool = False


def describe(commands: list[Command]) -> str | None:
    """What a decision did, for the host's one log line per invocation."""
    done = [c for c in commands if isinstance(c, Publish)]
    scheduled = [c for c in commands if isinstance(c, Schedule)]
    parts = [f"completed {c.message.application_properties.get('status')} "
             f"({c.message.application_properties.get('cacheName') or 'request'})"
             for c in done]
    # HH:MM:SS.mmm (microseconds cut, as "%H:%M:%S.%f"[:-3] did) without strftime's cost
    parts += [f"scheduled {c.message.message_id} at {c.at.hour:02d}:{c.at.minute:02d}:"
              f"{c.at.second:02d}.{c.at.microsecond // 1000:03d}" for c in scheduled]
    return "; ".join(parts) or None
