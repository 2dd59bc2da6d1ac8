"""What the step function asks the shell to do, and what comes back.

The shell (`redisflush.app`) carries commands out in the order given and feeds the answers of
the calls (ARM, ledger) back into the next `step`. Effects without an answer (publish, reply,
note, schedule) come last in a decision; a step that returns no call is finished for this
invocation.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .answers import ArmAnswer, ArmFailure
from .outbound import OutboundMessage


@dataclass(frozen=True)
class CallArm:
    """One ARM request. `paced`: this call already holds a pacer slot; otherwise the shell
    takes one and sends inline when it is at most `max_inline_wait` seconds away, else it
    answers `Deferred` and the core schedules the call for when the slot comes."""

    ref: str
    method: str
    url: str
    subscription_id: str
    client_request_id: str
    body: bytes | None = None
    paced: bool = False
    max_inline_wait: float = 0.0
    large: bool = False  # a list page: its answer may be far larger than a status body


@dataclass(frozen=True)
class Deferred:
    """The pacer's slot for a call is `wait` seconds away (held for it)."""

    wait: float


@dataclass(frozen=True)
class OpenRequest:
    """Record the request (conditional insert) or find the record an earlier delivery made."""

    ref: str
    fingerprint: str
    expires_at: dt.datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    also: tuple[str, ...] = ()  # fingerprints an earlier version wrote for the same request


@dataclass(frozen=True)
class Opened:
    """`status`: new (first delivery), same (a redelivery or a repeat), reused (this requestId
    named other targets). For `same`: whether it ended, the targets it resolved to, and each
    target row's state and data, keyed by target key."""

    status: str
    done: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)
    targets: Mapping[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReadRows:
    """A redelivered step's first call: the request's rows as the ledger keeps them, so what
    an earlier try of the step recorded is announced as recorded (`Opened`; `gone` when the
    row expired)."""

    ref: str
    fingerprint: str
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreTargets:
    """A selector resolved: keep its targets on the request row unless another delivery
    stored its own first; or, with `ended`, end the request as a whole unless a list is
    stored. Answered with the row as `Opened` (`same`, or `reused`), so the chain adopts
    whatever the row holds: a requestId names one set of caches."""

    ref: str
    fingerprint: str
    targets: tuple[str, ...]
    arm_requests: int
    expires_at: dt.datetime
    also: tuple[str, ...] = ()
    ended: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ClaimTarget:
    """Before a POST: claim the target's ledger row under the rules of `ledger_rules`."""

    ref: str
    key: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class Claimed:
    """`decision`: post, adopt-poll / adopt-done (an earlier delivery got there first, `data`
    says how far), busy (another invocation is POSTing until `until`), in-doubt. `judged_at`:
    the clock reading `until` was judged against (the shell's clock, which may be behind the
    bus's: docs/design.md, "Clocks")."""

    decision: str
    data: Mapping[str, Any] = field(default_factory=dict)
    until: dt.datetime | None = None
    judged_at: dt.datetime | None = None


@dataclass(frozen=True)
class RecordTarget:
    """Write a target's row: state `retry`, `accepted` (with its operation) or `done`."""

    key: str
    state: str
    data: Mapping[str, Any]
    expires_at: dt.datetime


@dataclass(frozen=True)
class RecordRequest:
    """Write the request row: its resolved targets, or that it ended."""

    state: str
    data: Mapping[str, Any]
    expires_at: dt.datetime


@dataclass(frozen=True)
class Publish:
    """An event on the topic: every subscriber's copy. Failure raises (redelivery)."""

    message: OutboundMessage


@dataclass(frozen=True)
class Reply:
    """The final event to the request's ReplyTo queue: a missing queue is logged, skipped."""

    queue: str
    message: OutboundMessage


@dataclass(frozen=True)
class Note:
    """A progress note to the ReplyTo session: best-effort, never a reason to redeliver."""

    queue: str
    message: OutboundMessage


@dataclass(frozen=True)
class Schedule:
    """The chain's next step: the poll message, visible at `at`."""

    message: OutboundMessage
    at: dt.datetime


@dataclass(frozen=True)
class Learn:
    """A flush ended within ages (lo, hi] seconds of its acceptance (lo None: no read found
    it running): the shell's duration estimate for (subscription, kind) learns from it."""

    subscription_id: str
    kind: str
    lo: float | None
    hi: float


@dataclass(frozen=True)
class Log:
    """A line for the host's log (values escaped by the shell)."""

    level: str
    text: str


Command = (CallArm | OpenRequest | ReadRows | StoreTargets | ClaimTarget | RecordTarget
           | RecordRequest | Publish | Reply | Note | Schedule | Learn | Log)
Result = ArmAnswer | ArmFailure | Deferred | Opened | Claimed
CALLS = (CallArm, OpenRequest, ReadRows, StoreTargets, ClaimTarget)
