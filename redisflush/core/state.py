"""The poll state: the whole continuation of one request, carried in its poll message
(docs/design.md, "Poll message"). Version 2: one chain per request, one entry per target.

`TargetState.phase`: read (a Managed Redis database whose geo group is not known yet),
claim (its ledger row comes before the POST), post, poll, done. `due` is when the target next
needs ARM; `paced` means it already holds a pacer slot for that moment.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationError
from .events import Outcome, exact, parse_iso, parse_iso_or_none
from .frozen import replace
from .ledger_rules import carried
from .poll_fields import (
    optional_text,
    positive_count,
    positive_seconds,
    str_or_none,
    text_list,
    whole_number,
)
from .request import FlushRequest, Origin
from .request_id import is_request_id
from .selector import Selector, parse_selector
from .targets import ENTERPRISE, Target, parse_resource_id

VERSION = 2
PHASES = ("read", "claim", "post", "poll", "done")


@dataclass(frozen=True)
class TargetState:
    target: Target
    index: int
    phase: str
    due: dt.datetime
    linked: tuple[str, ...] | None = None
    poll_url: str | None = None
    poll_kind: str | None = None
    accepted_at: dt.datetime | None = None
    last_status: str | None = None
    last_operation: Mapping[str, Any] | None = None
    polls: int = 0
    failures: int = 0
    bad_polls: int = 0
    arm_requests: int = 0
    paced: bool = False
    outcome: Outcome | None = None
    reported: bool = False
    noted: bool = False
    running_at: dt.datetime | None = None  # when the last read that found it running was sent
    projected_end: float | None = None  # seconds from acceptance, from the last percentComplete
    busy: bool = False  # its claim was found held by a live delivery of the same request
    # the ARM error a Location poll answered, "{status}:{code}", and how often in a row
    location_error: str | None = None
    location_errors: int = 0
    # a POST of it went out with no answer of ARM's own (flush_steps._in_doubt): it may run
    in_doubt: bool = False
    # Its operation URL is not in the message but in the ledger's `accepted` row, whose
    # pollUrl has this SHA-256 (hex): the poll state did not fit one message with it
    # (docs/design.md, "Poll message"). The message carries `ledger:sha256:{hex}` as pollUrl.
    poll_ref: str | None = None
    # reads of the ledger for poll_ref that failed in a row (ARM's transient errors are
    # `failures`: a run of one does not shorten the tries the other gets)
    ref_failures: int = 0
    # this invocation knows the ledger's accepted row holds poll_url (read from it, or
    # recorded by it): carrying it by reference needs no record first. Never in a message.
    stored: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target.to_json(), "i": self.index, "phase": self.phase,
                "due": exact(self.due), "linked": None if self.linked is None else
                list(self.linked), "pollUrl": self.poll_url if self.poll_ref is None else
                BY_REFERENCE + self.poll_ref, "pollKind": self.poll_kind,
                "acceptedAt": exact(self.accepted_at), "lastStatus": self.last_status,
                "lastOperation": self.last_operation, "polls": self.polls,
                "failures": self.failures, "badPolls": self.bad_polls,
                "armRequests": self.arm_requests, "paced": self.paced,
                "outcome": self.outcome.to_json() if self.outcome else None,
                "reported": self.reported, "noted": self.noted,
                "runningAt": exact(self.running_at), "projectedEnd": self.projected_end,
                "busy": self.busy, "locationError": self.location_error,
                "locationErrors": self.location_errors, "inDoubt": self.in_doubt,
                "refFailures": self.ref_failures}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TargetState:
        phase = d["phase"]
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        if phase == "post":
            # written before a held claim was given back (or by a step that died before its
            # POST): its claim may have outlived the lease, so it claims again first
            phase = "claim"
        if phase == "poll" and not (isinstance(d.get("pollUrl"), str) and d.get("pollKind") in
                                    ("azure-asyncoperation", "location")):
            raise ValueError("a polling target needs pollUrl and a known pollKind")
        linked = text_list(d, "linked")
        poll_url, poll_ref = optional_text(d, "pollUrl"), None  # type: str | None, str | None
        if poll_url is not None and poll_url.startswith(BY_REFERENCE):
            poll_ref, poll_url = poll_url[len(BY_REFERENCE):], None
            if not _SHA256.fullmatch(poll_ref):
                raise ValueError("a pollUrl by reference must be ledger:sha256: and 64 hex")
        operation = d.get("lastOperation")
        if operation is not None and not isinstance(operation, dict):
            raise ValueError("lastOperation must be an object or null")
        outcome = d.get("outcome")
        if outcome and not isinstance(outcome, dict):
            raise ValueError("outcome must be an object or null")
        return cls(Target.from_json(d["target"]), whole_number(d, "i", None), phase,
                   parse_iso(d["due"]), linked,
                   poll_url, d.get("pollKind"),
                   parse_iso_or_none(d.get("acceptedAt")),
                   optional_text(d, "lastStatus"), operation, whole_number(d, "polls"),
                   whole_number(d, "failures"), whole_number(d, "badPolls"),
                   whole_number(d, "armRequests"), bool(d.get("paced", False)),
                   Outcome.from_json(outcome) if outcome else None,
                   bool(d.get("reported", False)), bool(d.get("noted", False)),
                   parse_iso_or_none(d.get("runningAt")), positive_seconds(d.get("projectedEnd")),
                   d.get("busy") is True, str_or_none(d.get("locationError")),
                   positive_count(d.get("locationErrors")), d.get("inDoubt") is True, poll_ref,
                   positive_count(d.get("refFailures")))


# A target's pollUrl when its URL is carried by reference to the ledger's accepted row. Not a
# URL any release follows: 65a10d8 and earlier refuse it as an untrusted operation URL (no
# token sent) and end that target Failed UntrustedOperationUrl (docs/design.md, "Upgrades
# and rollbacks").
BY_REFERENCE = "ledger:sha256:"
_SHA256 = re.compile("[0-9a-f]{64}")


@dataclass(frozen=True)
class ListCall:
    """One list page still to read while resolving a selector."""

    kind: str
    url: str
    of: str | None = None  # the cluster whose databases this lists

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "of": self.of}


@dataclass(frozen=True)
class RunState:
    """One request's chain. `step` numbers its messages (`{requestId}:poll:{step}`)."""

    origin: Origin
    deadline: dt.datetime
    fingerprint: str
    targets: tuple[TargetState, ...] = ()
    selector: Selector | None = None
    phase: str = "open"  # open (ledger first), resolve, run, done
    step: int = 0
    pending_lists: tuple[ListCall, ...] = ()
    found: tuple[str, ...] = ()  # resource ids a selector matched so far
    ignored: int = 0
    pages: int = 0
    list_failures: int = 0
    due: dt.datetime | None = None  # when resolving continues
    arm_requests: int = 0  # requests not tied to one target (list pages)
    note_status: str | None = None
    note_percent: Any = None
    reported: bool = False
    linked_request: tuple[str, ...] | None = None
    reply_tag: str | None = None  # a repeat's own reply ids (its MessageId differs)
    list_paced: bool = False  # the next list page already holds a pacer slot
    # when the bus was asked to deliver this message: it has come, whatever the reading
    # instance's clock says (docs/design.md, "Clocks")
    scheduled_at: dt.datetime | None = None
    # a redelivered step reads the ledger's rows first (not carried in messages)
    recheck: bool = False

    @property
    def message_id(self) -> str:
        """`{requestId}:poll:{step}`: duplicate detection keeps one chain per request. A
        repeat under a new MessageId that waits for a reply (ReplyTo) runs a chain of its own
        (`:{replyTag}` added): the first send's chain may have no ReplyTo to answer it, and
        the events both publish carry the same ids."""
        tag = f":{self.reply_tag}" if self.reply_tag and self.origin.reply_to else ""
        return f"{self.origin.request_id}:poll:{self.step}{tag}"

    @property
    def total_arm_requests(self) -> int:
        return self.arm_requests + sum(t.arm_requests for t in self.targets)

    def with_target(self, ts: TargetState) -> RunState:
        targets = list(self.targets)
        targets[ts.index] = ts
        return replace(self, targets=tuple(targets))

    def to_json(self) -> bytes:
        o = self.origin
        doc = {"v": VERSION, "requestId": o.request_id, "requestedAt": exact(o.requested_at),
               "correlationId": o.correlation_id, "replyTo": o.reply_to,
               "replyToSessionId": o.reply_to_session_id, "reason": o.reason,
               "requestedBy": o.requested_by, "messageId": o.message_id,
               "replyTag": self.reply_tag, "deadline": exact(self.deadline),
               "fingerprint": self.fingerprint, "phase": self.phase, "step": self.step,
               "selector": self.selector.to_json() if self.selector else None,
               "pendingLists": [c.to_json() for c in self.pending_lists],
               "found": list(self.found), "ignored": self.ignored, "pages": self.pages,
               "listFailures": self.list_failures, "due": exact(self.due),
               "armRequests": self.arm_requests, "noteStatus": self.note_status,
               "notePercent": self.note_percent, "reported": self.reported,
               "linkedRequest": None if self.linked_request is None else
               list(self.linked_request),
               "listPaced": self.list_paced, "at": exact(self.scheduled_at),
               "targets": [t.to_json() for t in self.targets]}
        # UTF-8, not JSON's ASCII escapes: a character outside ASCII (a resource group in
        # kana, a tag or reason in CJK or emoji) weighs 3-4 bytes, not 6-12, against the
        # message's 192 KiB. Half a surrogate pair (ARM's JSON may escape one) is no UTF-8:
        # it alone stays escaped, and reads back the same.
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()

    @classmethod
    def from_json(cls, body: bytes) -> RunState:
        """Parse our own poll message; ValueError for anything we did not write."""
        try:
            d = json.loads(body)
            if not isinstance(d, dict) or d.get("v") != VERSION:
                raise ValueError(f"unsupported poll state version {d.get('v')!r}"
                                 if isinstance(d, dict) else "poll state is not an object")
            if not is_request_id(d.get("requestId")):
                raise ValueError("requestId must be 1-80 characters of A-Z a-z 0-9 . _ : -")
            origin = Origin(d["requestId"], parse_iso(d["requestedAt"]),
                            optional_text(d, "correlationId"), optional_text(d, "replyTo"),
                            optional_text(d, "replyToSessionId"), optional_text(d, "reason"),
                            optional_text(d, "requestedBy"), optional_text(d, "messageId"))
            if d["phase"] not in ("open", "resolve", "run", "done"):
                raise ValueError(f"unknown phase {d['phase']!r}")
            if not isinstance(d["targets"], list):
                raise ValueError("targets must be a list")
            targets = tuple(TargetState.from_json(t) for t in d["targets"])
            if [t.index for t in targets] != list(range(len(targets))):
                raise ValueError("target indexes must be 0..n-1 in order")
            lists = d.get("pendingLists", [])
            if not isinstance(lists, list) or not all(
                    isinstance(c, dict) and isinstance(c.get("kind"), str)
                    and isinstance(c.get("url"), str) and isinstance(c.get("of"), (str, type(None)))
                    for c in lists):
                raise ValueError("pendingLists must be a list of {kind, url, of}")
            if d["phase"] == "resolve" and not d.get("selector"):
                raise ValueError("a resolving chain needs its selector")
            found = text_list(d, "found", []) or ()
            for resource_id in found:
                parse_resource_id(resource_id)  # ValidationError: unreadable
            if not isinstance(d["fingerprint"], str):
                raise ValueError("fingerprint must be a string")
            return cls(origin, parse_iso(d["deadline"]), d["fingerprint"],
                       targets, parse_selector(d["selector"]) if d.get("selector") else None,
                       d["phase"], whole_number(d, "step", None),
                       tuple(ListCall(c["kind"], c["url"], c.get("of")) for c in lists),
                       found, whole_number(d, "ignored"),
                       whole_number(d, "pages"), whole_number(d, "listFailures"),
                       parse_iso_or_none(d.get("due")), whole_number(d, "armRequests"),
                       optional_text(d, "noteStatus"), d.get("notePercent"),
                       bool(d.get("reported")), text_list(d, "linkedRequest"),
                       reply_tag=optional_text(d, "replyTag"),
                       list_paced=d.get("listPaced") is True,
                       scheduled_at=parse_iso_or_none(d.get("at")))
        except (KeyError, TypeError, AttributeError, ValidationError, ValueError,
                RecursionError, UnicodeDecodeError) as exc:
            raise ValueError(f"invalid poll state: {type(exc).__name__}: {exc}") from None


# a surrogate code point: json.dumps leaves it as it is, only ever inside a JSON string
_SURROGATE = re.compile("[\ud800-\udfff]")


def initial(request: FlushRequest, now: dt.datetime) -> RunState:
    """The first state of a valid request; the deadline was fixed from its enqueue time. The
    fingerprint as every message of the chain carries it (`ledger_rules.carried`)."""
    state = RunState(request.origin, request.deadline, carried(request.fingerprint),
                     selector=request.selector, linked_request=request.linked_ids)
    return with_targets(state, request.targets, now)


def with_targets(state: RunState, targets: tuple[Target, ...], now: dt.datetime) -> RunState:
    """Targets in their sorted order; a Managed Redis database starts by reading its group
    unless the request listed it (`linkedDatabaseIds`)."""
    linked = state.linked_request
    entries = []
    for i, t in enumerate(sorted(targets, key=lambda t: t.key)):
        known = linked if (linked is not None and len(targets) == 1) else None
        phase = "read" if t.kind == ENTERPRISE and known is None else "claim"
        entries.append(TargetState(t, i, phase, now,
                                   linked=known if t.kind == ENTERPRISE else ()))
    return replace(state, targets=tuple(entries))
