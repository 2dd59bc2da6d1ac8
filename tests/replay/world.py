"""A synthetic world for replay tests: the step function driven as the shell drives it, with
ARM answers from a script, a MemoryLedger and a record of every command (Durable-style:
assert on the actions a history produces, no IO)."""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redisflush.core.answers import ArmAnswer, ArmFailure
from redisflush.core.cadence import ReadBudget
from redisflush.core.commands import (
    CallArm,
    ClaimTarget,
    Command,
    Deferred,
    OpenRequest,
    Publish,
    RecordRequest,
    RecordTarget,
    Result,
    Schedule,
    StoreTargets,
)
from redisflush.core.decision import Config, View
from redisflush.core.request import Delivery, FlushRequest, parse_request
from redisflush.core.state import RunState
from redisflush.core.step import begin, step
from redisflush.ledger import MemoryLedger
from redisflush.ledger_ops import claim_target, open_request, record, store_targets

ENDPOINT = "https://management.azure.com"
SUB = "6f1b1a3e-0c47-4a8e-9d56-2d2f8c1f0a11"
SUB2 = "11111111-2222-3333-4444-555555555555"
T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
CONFIG = Config(ENDPOINT, "2023-08-01", "2025-07-01", 50, (), "redis-flush-polls")


def rid(cache: str, rg: str = "rg", sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/Redis/{cache}"


def db_id(cluster: str, db: str = "default", rg: str = "rg", sub: str = SUB) -> str:
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Cache/"
            f"redisEnterprise/{cluster}/databases/{db}")


def answer(status: int, body: Any = b"", headers: Mapping[str, str] | None = None,
           url: str = "") -> ArmAnswer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ArmAnswer(status, {k.lower(): v for k, v in (headers or {}).items()}, raw, url)


def accepted(op: str = "op1", **extra: str) -> ArmAnswer:
    url = f"{ENDPOINT}/subscriptions/{SUB}/providers/Microsoft.Cache/locations/westus2/" \
          f"operationresults/{op}?api-version=2023-08-01"
    return answer(202, b"", {"Azure-AsyncOperation": url, "Location": url, **extra})


def running(status: str = "InProgress", code: int = 202, **op: Any) -> ArmAnswer:
    return answer(code, {"status": status, **op})


def succeeded() -> ArmAnswer:
    return answer(200, {"status": "Succeeded"})


Script = Callable[[CallArm, "World"], Result]


@dataclass
class World:
    """Drives one request through `step` like app.FlushApp does, with a fake clock."""

    script: Script
    now: dt.datetime = T0
    config: Config = CONFIG
    ledger: MemoryLedger = field(default_factory=MemoryLedger)
    budgets: dict[str, ReadBudget] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    calls: list[CallArm] = field(default_factory=list)
    scheduled: list[Schedule] = field(default_factory=list)
    invocations: int = 0

    def request(self, body: Mapping[str, Any], *, message_id: str = "req-1",
                enqueued_at: dt.datetime | None = None, reply_to: str | None = None
                ) -> FlushRequest:
        parsed = parse_request(Delivery(json.dumps(body).encode(), message_id,
                                        reply_to=reply_to, enqueued_at=enqueued_at or self.now),
                               default_timeout=1800, allowed_scopes=self.config.allowed_scopes,
                               max_targets=self.config.max_targets, now=self.now)
        assert isinstance(parsed, FlushRequest), parsed
        return parsed

    def invoke(self, state: RunState) -> RunState:
        """One invocation: step until no call is left."""
        self.invocations += 1
        answers: dict[str, Result] = {}
        for round_ in range(64):
            state, commands = step(state, answers, View(self.now, round_ < 62, self.budgets),
                                   self.config)
            self.commands.extend(commands)
            answers = {}
            for c in commands:
                if isinstance(c, CallArm):
                    self.calls.append(c)
                    answers[c.ref] = self.script(c, self)
                elif isinstance(c, OpenRequest):
                    answers[c.ref] = open_request(self.ledger, state.origin.request_id, c,
                                                  self.now)
                elif isinstance(c, StoreTargets):
                    answers[c.ref] = store_targets(self.ledger, state.origin.request_id, c,
                                                   self.now)
                elif isinstance(c, ClaimTarget):
                    answers[c.ref] = claim_target(self.ledger, state.origin.request_id, c,
                                                  self.now)
                elif isinstance(c, (RecordTarget, RecordRequest)):
                    record(self.ledger, state.origin.request_id, c, self.now)
                elif isinstance(c, Schedule):
                    self.scheduled.append(c)
            if not answers:
                return state
        raise AssertionError("the step function never settled")

    def run(self, request: FlushRequest, max_steps: int = 500) -> RunState:
        """From the request to its end, jumping the clock to each scheduled step."""
        state = self.invoke(begin(request, self.now))
        for _ in range(max_steps):
            if state.phase == "done":
                return state
            last = self.scheduled[-1]
            self.now = max(self.now, last.at)
            state = self.invoke(RunState.from_json(last.message.body))
        raise AssertionError("the request never ended")

    def published(self) -> list[dict[str, Any]]:
        return [json.loads(c.message.body) for c in self.commands if isinstance(c, Publish)]

    def arm_calls(self, method: str | None = None) -> list[CallArm]:
        return [c for c in self.calls if method is None or c.method == method]


def by_path(routes: Mapping[str, Callable[[CallArm, World], Result]]) -> Script:
    """A script that picks its answer by the first route whose text is in the call's URL."""
    def script(call: CallArm, world: World) -> Result:
        for text, route in routes.items():
            if text in call.url:
                return route(call, world)
        raise AssertionError(f"unscripted {call.method} {call.url}")
    return script


def deferred(wait: float) -> Deferred:
    return Deferred(wait)


def failure(code: str = "ConnectionError", sent: bool = True) -> ArmFailure:
    return ArmFailure(code, "boom", sent=sent)
