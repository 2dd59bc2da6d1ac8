"""What every part of a step decides with: the settings (`Config`), what the shell read
(`View`), and each target's `Context` built from them; `Decision` is what a step returns."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import flush_steps
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


def target_context(state: RunState, view: View, config: Config, target: Target
             ) -> flush_steps.Context:
    return flush_steps.Context(view.now, state.deadline, config.arm_endpoint,
                               config.allowed_scopes, view.budgets.get(target.subscription_id))
