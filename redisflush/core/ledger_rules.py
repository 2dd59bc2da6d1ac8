"""The ledger's rules (docs/design.md, "Request ledger"): when a target may be POSTed, and
what a row found from an earlier delivery means.

A target row is `posting` from just before its POST until the answer is recorded: `accepted`
(ARM took it; the operation URL is kept), `retry` (ARM refused it for now: 409 busy, 429,
5xx), or `done` (its outcome is kept so a repeat re-publishes it). A `posting` row whose
writer is gone (older than LEASE) is the one window left: the POST may or may not have
reached ARM. It is sent once more (and again after each refusal of ARM's own, which
starts nothing), never after a second POST without an answer.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from ..ledger import LedgerRow, fits
from .frozen import replace

# Longer than one ARM call may last (its whole-duration limit) plus the records after it, so a
# live invocation's row is never taken for a dead one's.
LEASE = dt.timedelta(seconds=90)
REPOSTED = "reposted"


def digest(fingerprint: str) -> str:
    """The form a request row keeps of a fingerprint it cannot hold whole."""
    return "sha256:" + hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprint_forms(fingerprint: str, also: tuple[str, ...]) -> tuple[str, ...]:
    """Every value a request row of this request may hold, the one a new row gets first: the
    whole fingerprint, its digest (a row that could not hold it whole), and `also`."""
    return tuple(dict.fromkeys((fingerprint, digest(fingerprint), *also)))


def carried(fingerprint: str) -> str:
    """The fingerprint as a poll message carries it: whole, unless no request row could ever
    hold it whole (it alone passes ledger.MAX_DATA_CHARS, e.g. 15 tags of 512 characters
    outside ASCII, each escaped to six or twelve): then its digest, which that row holds too
    (`fitted`), so either form still matches. Whole, such a fingerprint alone outgrew Service
    Bus's 256 KB and the request was dead-lettered with no event (docs/design.md, "Poll
    message")."""
    if fingerprint.startswith("sha256:") or fits({"fingerprint": fingerprint}):
        return fingerprint
    return digest(fingerprint)


def fitted(row: LedgerRow) -> LedgerRow:
    """A request row as it is written: its fingerprint whole, as every release has written
    and matched it, unless the row would then pass the ledger's limit (ledger.MAX_DATA_CHARS:
    e.g. 40 linked ids in a resource group named in kana, each character escaped to six):
    then its digest. So a row holds a digest only for a request no earlier release could
    record at all, and a rollback still finds every other request its own (docs/design.md,
    "Request ledger")."""
    fingerprint = row.data.get("fingerprint")
    if row.key or not isinstance(fingerprint, str) or fingerprint.startswith("sha256:") or \
            fits(row.data):
        return row
    return replace(row, data={**row.data, "fingerprint": digest(fingerprint)})


def new_target_row(request_id: str, key: str, now: dt.datetime, expires_at: dt.datetime
                   ) -> LedgerRow:
    return LedgerRow(request_id, key, "posting", {}, 1, now, expires_at)


def on_existing(row: LedgerRow, now: dt.datetime
                ) -> tuple[str, Mapping[str, Any], dt.datetime | None, LedgerRow | None]:
    """(decision, data, busy-until, row to write first or None) for a row found at claim."""
    if row.state == "accepted":
        return "adopt-poll", row.data, None, None
    if row.state == "done":
        return "adopt-done", row.data, None, None
    if row.state == "retry":
        return "post", row.data, None, replace(row, state="posting", posts=row.posts + 1,
                                               updated_at=now)
    until = row.updated_at + LEASE
    if now < until:
        return "busy", row.data, until, None
    if not row.data.get(REPOSTED):
        return "post", row.data, None, replace(row, posts=row.posts + 1, updated_at=now,
                                               data={**row.data, REPOSTED: True})
    return "in-doubt", row.data, None, None


def recorded(row: LedgerRow | None, request_id: str, key: str, state: str,
             data: Mapping[str, Any], now: dt.datetime, expires_at: dt.datetime
             ) -> LedgerRow | None:
    """The row after a record: the new state, data merged over what it had. None: the row
    stays as it is. The first `done` is kept (a late redelivery's step must not rewrite an
    outcome the topic already has), and `retry` gives back only a claim (`posting`), never
    an operation another delivery got accepted. A target's `done` keeps its outcome alone:
    nothing reads the operation it followed once it ended, and the outcome repeats its
    linked ids, so with both, 50 long ones passed the row's limit (ledger.MAX_DATA_CHARS)."""
    if row is not None and (row.state == "done" or
                            (state == "retry" and row.state not in ("posting", "retry"))):
        return None
    if row is None:
        return fitted(LedgerRow(request_id, key, state, dict(data), 0, now, expires_at))
    kept = dict(data) if key and state == "done" else {**row.data, **data}
    return fitted(replace(row, state=state, data=kept, updated_at=now,
                          expires_at=max(row.expires_at, expires_at)))


def stored_targets(row: LedgerRow | None, request_id: str, fingerprints: tuple[str, ...],
                   targets: list[str], arm_requests: int, now: dt.datetime,
                   expires_at: dt.datetime, ended: Mapping[str, Any] | None = None
                   ) -> LedgerRow | None:
    """The request row once a selector's targets are kept on it, or (`ended`) once the
    request ended as a whole; None: it stays as it is (a list is kept, the request ended
    already, or it names other caches: the chain adopts what it holds). `fingerprints`: the
    request's, then any an earlier version wrote for it."""
    state, data = ("done", {"ended": dict(ended)}) if ended is not None else \
        ("open", {"targets": targets, "armRequests": arm_requests})
    if row is None:
        return fitted(LedgerRow(request_id, "", state, {"fingerprint": fingerprints[0], **data},
                                0, now, expires_at))
    if row.data.get("fingerprint") not in fingerprints or row.state == "done" or \
            isinstance(row.data.get("targets"), list):
        return None
    return fitted(replace(row, state=state, data={**row.data, **data}, updated_at=now,
                          expires_at=max(row.expires_at, expires_at)))


def expiry(deadline: dt.datetime) -> dt.datetime:
    """Rows outlive the request's deadline by a day (a late redelivery still finds them)."""
    return deadline + dt.timedelta(days=1)
