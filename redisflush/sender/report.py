"""Lines for people: one per completion event (`describe`), and `send --wait`'s progress on
stderr (`Progress`): a line as the status changes, a line per cache as it finishes.

Every value comes from a message, so each is cut short and has its control characters
escaped before it is printed: an event cannot forge a line or flood the terminal.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, TextIO

FLUSH_COMPLETED = "RedisFlush.FlushCompleted"
REQUEST_COMPLETED = "RedisFlush.RequestCompleted"
MAX_FAILURES_SHOWN = 3


def clean(value: Any, limit: int = 200) -> str:
    """`value` as one short printable line."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def number(value: Any) -> float | None:
    """A finite JSON number, else None (bools, strings, 4,000-digit integers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def _seconds(value: Any) -> str:
    seconds = number(value)
    return f" in {seconds:.1f} s" if seconds is not None else ""


def _error(error: Any) -> str:
    if not isinstance(error, Mapping):
        return ""
    return f" - {clean(error.get('code'), 80)}: {clean(error.get('message'))}"


def _counts(counts: Any) -> str:
    if not isinstance(counts, Mapping):
        return ""
    return ", ".join(f"{clean(k, 20)} {clean(v, 10)}" for k, v in counts.items())


def describe(event: Mapping[str, Any]) -> str:
    """One human line for a completion event of either type."""
    data = _map(event.get("data"))
    arm = number(data.get("armRequests"))
    tail = f", {arm:.0f} ARM requests" if arm is not None else ""
    if event.get("type") == REQUEST_COMPLETED:
        results = _list(data.get("results"))
        counts = _counts(data.get("counts"))
        line = (f"{clean(data.get('status'), 20)}: {len(results)} caches"
                f"{f' ({counts})' if counts else ''} request={clean(data.get('requestId'), 130)}"
                f"{_seconds(data.get('durationSeconds'))}{tail}{_error(data.get('error'))}")
        failed = [r for r in results if isinstance(r, Mapping) and r.get("status") != "Succeeded"]
        for result in failed[:MAX_FAILURES_SHOWN]:
            line += (f"; {clean(_name(result.get('resourceId')), 90)} "
                     f"{clean(result.get('status'), 20)}{_error(result.get('error'))}")
        if len(failed) > MAX_FAILURES_SHOWN:
            line += f"; and {len(failed) - MAX_FAILURES_SHOWN} more"
        return line
    subject = event.get("subject") or "(unknown cache)"
    return (f"{clean(data.get('status'), 20)}: {clean(subject, 130)} "
            f"request={clean(data.get('requestId'), 130)}{_seconds(data.get('durationSeconds'))}"
            f"{tail or ', 0 ARM requests'}{_error(data.get('error'))}")


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _name(resource_id: Any) -> str:
    """`cache` or `cluster/database` from a resource id."""
    parts = str(resource_id or "").strip("/").split("/")
    if len(parts) >= 4 and parts[-2].lower() == "databases":
        return f"{parts[-3]}/{parts[-1]}"
    return parts[-1] if parts else ""


class Progress:
    """`send --wait`'s stderr: a line when the status changes, a line per finished cache."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.started = stream, time.monotonic()
        self._last: str | None = None
        self._finished: set[str] = set()

    def note(self, data: Mapping[str, Any]) -> None:
        """A FlushProgress note: its finished caches, then the status if it changed."""
        for item in _list(data.get("finished")):
            if isinstance(item, Mapping):
                self.finished(item, data.get("targets"))
        percent = number(data.get("percentComplete"))
        counts = _map(data.get("counts"))
        text = clean(data.get("status"), 30)
        if percent is not None and 0 <= percent <= 100:
            text += f" {percent:.0f}%"
        if counts:
            text += f" ({_counts(counts)} of {clean(data.get('targets'), 10)})"
        if text != self._last:
            self._last = text
            self._line(text)

    def cache_event(self, event: Mapping[str, Any]) -> None:
        """A per-cache FlushCompleted of a multi-target request, seen on the reply session."""
        data, batch = _map(event.get("data")), _map(_map(event.get("data")).get("batch"))
        self.finished({"index": batch.get("index"), "resourceId": data.get("resourceId"),
                       "name": event.get("subject"), "status": data.get("status"),
                       "error": data.get("error"),
                       "durationSeconds": data.get("durationSeconds")}, batch.get("count"))

    def final(self, event: Mapping[str, Any]) -> None:
        """The caches of a RequestCompleted that no note told of (those that ended in the
        last step): their lines still come before the final event."""
        if event.get("type") != REQUEST_COMPLETED:
            return
        results = _list(_map(event.get("data")).get("results"))
        for index, result in enumerate(results):
            if isinstance(result, Mapping):
                self.finished({**result, "index": index}, len(results))

    def finished(self, item: Mapping[str, Any], total: Any = None) -> None:
        """One line per cache, once, however many notes or events tell of it."""
        key = str(item.get("resourceId") or item.get("index")).lower()
        if key in self._finished:
            return
        self._finished.add(key)
        index = number(item.get("index"))
        where = f"[{index + 1:.0f}/{clean(total, 10)}] " if index is not None and total else ""
        name = item.get("name") or _name(item.get("resourceId")) or "(unknown cache)"
        self._line(f"{where}{clean(name, 90)}: {clean(item.get('status'), 20)}"
                   f"{_seconds(item.get('durationSeconds'))}{_error(item.get('error'))}")

    def _line(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"  {text}  {elapsed:5.1f}s", file=self.stream, flush=True)
