"""What every part of a step decides with: the settings (`Config`), what the shell read
(`View`), and each target's `Context` built from them; `Decision` is what a step returns."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import cadence, lro
from .answers import ArmAnswer
from .cadence import ReadBudget
from .commands import Command
from .state import RunState
from .targets import Target


@dataclass(frozen=True)
class Config:
    """The settings the decisions need (a pure copy of `Settings`)."""

    arm_endpoint: str
    api_version: str
    enterprise_api_version: str
    max_targets: int
    allowed_scopes: tuple[str, ...]
    poll_queue: str


@dataclass(frozen=True)
class View:
    """What the shell reads for a decision: now, whether this invocation has time for another
    round of calls, and each subscription's read budget."""

    now: dt.datetime
    can_call: bool = True
    budgets: Mapping[str, ReadBudget] = field(default_factory=dict)


Decision = tuple[RunState, list[Command]]


class Context:
    """What a target's answer is judged with: now, the deadline, settings, the read budget."""

    def __init__(self, now: dt.datetime, deadline: dt.datetime, endpoint: str,
                 scopes: tuple[str, ...], budget: cadence.ReadBudget | None) -> None:
        self.now, self.deadline, self.endpoint = now, deadline, endpoint
        self.scopes, self.budget = scopes, budget
        self.records: list[Command] = []

    def at(self, delay: float, retry_after: float | None = None) -> dt.datetime:
        return cadence.next_time(self.now, delay, retry_after, self.deadline)

    def sent(self, answer: ArmAnswer) -> dt.datetime:
        """When the request behind `answer` left (its answer came back now)."""
        return self.now - dt.timedelta(seconds=max(0.0, min(answer.elapsed, 60.0)))

    def read_gap_from(self, answer: ArmAnswer, gap: float | None = None) -> dt.datetime:
        """The next status read one gap after this one was *sent* (not after its answer came
        back), so reads keep their cadence whatever ARM's latency, never sooner than
        Retry-After (counted from the answer)."""
        wait = cadence.poll_gap(self.budget) if gap is None else gap
        due = cadence.next_time(self.sent(answer), wait, None, self.deadline)
        after = lro.retry_after(answer.headers, self.now)
        return max(due, self.at(0.0, after)) if after is not None else max(due, self.now)

    def first_read_from(self, answer: ArmAnswer, kind: str) -> dt.datetime:
        """A new operation's first status read (cadence.first_read_gap), counted like every
        other read from when the POST was sent, never sooner than Retry-After."""
        return self.read_gap_from(answer, cadence.first_read_gap(self.budget, kind))


def target_context(state: RunState, view: View, config: Config, target: Target
                   ) -> Context:
    return Context(view.now, state.deadline, config.arm_endpoint, config.allowed_scopes,
                   view.budgets.get(target.subscription_id))
