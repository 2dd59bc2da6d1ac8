"""The ledger commands carried out: conditional writes retried on contention, with the
decisions left to `core.ledger_rules` (docs/design.md, "Request ledger")."""
from __future__ import annotations

import datetime as dt

from .core import ledger_rules
from .core.commands import (
    Claimed,
    ClaimTarget,
    Opened,
    OpenRequest,
    ReadRows,
    RecordRequest,
    RecordTarget,
    StoreTargets,
)
from .ledger import REQUEST_KEY, Ledger, LedgerError, LedgerRow

ATTEMPTS = 8  # conditional writes that lost a race are re-read and tried again


def open_request(ledger: Ledger, request_id: str, command: OpenRequest, now: dt.datetime
                 ) -> Opened:
    names = ledger_rules.fingerprint_forms(command.fingerprint, command.also)
    data = {"fingerprint": names[0], **command.data}
    if ledger.insert(ledger_rules.fitted(LedgerRow(request_id, REQUEST_KEY, "open", data, 0,
                                                   now, command.expires_at))) is not None:
        return Opened("new")
    row = ledger.get(request_id, REQUEST_KEY)
    if row is None:  # expired between the two calls: a new request after all
        return open_request(ledger, request_id, command, now)
    return _as_found(ledger, request_id, row, names)


def _as_found(ledger: Ledger, request_id: str, row: LedgerRow, fingerprints: tuple[str, ...]
              ) -> Opened:
    if row.data.get("fingerprint") not in fingerprints:
        return Opened("reused", data=row.data)
    targets = {r.key: (r.state, r.data) for r in ledger.rows(request_id) if r.key}
    return Opened("same", row.state == "done", row.data, targets)


def read_rows(ledger: Ledger, request_id: str, command: ReadRows) -> Opened:
    row = ledger.get(request_id, REQUEST_KEY)
    if row is None:
        return Opened("gone")
    return _as_found(ledger, request_id, row,
                     ledger_rules.fingerprint_forms(command.fingerprint, command.also))


def store_targets(ledger: Ledger, request_id: str, command: StoreTargets, now: dt.datetime
                  ) -> Opened:
    names = ledger_rules.fingerprint_forms(command.fingerprint, command.also)
    for _ in range(ATTEMPTS):
        row = ledger.get(request_id, REQUEST_KEY)
        new = ledger_rules.stored_targets(row, request_id, names, list(command.targets),
                                          command.arm_requests, now, command.expires_at,
                                          command.ended)
        if new is None:  # the row holds a list or an end already (a missing row is written)
            assert row is not None
            return _as_found(ledger, request_id, row, names)
        stored = ledger.insert(new) if row is None else ledger.update(new)
        if stored is not None:
            return _as_found(ledger, request_id, stored, names)
    raise LedgerError(f"ledger row {request_id}/ kept changing under us")


def claim_target(ledger: Ledger, request_id: str, command: ClaimTarget, now: dt.datetime
                 ) -> Claimed:
    fresh = ledger_rules.new_target_row(request_id, command.key, now, command.expires_at)
    for _ in range(ATTEMPTS):
        if ledger.insert(fresh) is not None:
            return Claimed("post")
        row = ledger.get(request_id, command.key)
        if row is None:
            continue
        decision, data, until, write = ledger_rules.on_existing(row, now)
        if write is None or ledger.update(write) is not None:
            return Claimed(decision, data, until, now)
    raise LedgerError(f"ledger row {request_id}/{command.key} kept changing under us")


def record(ledger: Ledger, request_id: str, command: RecordTarget | RecordRequest,
           now: dt.datetime) -> None:
    key = command.key if isinstance(command, RecordTarget) else REQUEST_KEY
    for _ in range(ATTEMPTS):
        row = ledger.get(request_id, key)
        new = ledger_rules.recorded(row, request_id, key, command.state, command.data, now,
                                    command.expires_at)
        if new is None:
            return
        stored = ledger.insert(new) if row is None else ledger.update(new)
        if stored is not None:
            return
    raise LedgerError(f"ledger row {request_id}/{key} kept changing under us")
