"""core/frozen.py: `replace` builds what `dataclasses.replace` builds, and leaves to it every
class whose `__init__` does more than store its arguments."""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from dataclasses import InitVar, dataclass, field
from typing import Any, ClassVar

import pytest

from redisflush.core.answers import ArmAnswer
from redisflush.core.decision import View
from redisflush.core.frozen import _plain_fields, replace
from redisflush.core.request import Origin
from redisflush.core.state import RunState, TargetState
from redisflush.core.targets import make_target


@dataclass(frozen=True)
class Plain:
    x: int
    y: tuple[int, ...] = ()
    z: list[int] = field(default_factory=list)
    K: ClassVar[int] = 3


@dataclass(frozen=True)
class PostInit:
    x: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "x", self.x * 2)


@dataclass(frozen=True, slots=True)
class Slotted:
    x: int


@dataclass(frozen=True)
class Cached:
    x: int

    @functools.cached_property
    def square(self) -> int:
        return self.x * self.x


@dataclass(frozen=True)
class WithInitVar:
    x: int
    y: InitVar[int] = 0


@dataclass(frozen=True)
class NotInInit:
    x: int
    y: int = field(init=False, default=5)


@dataclass
class Mutable:
    x: int


def test_a_plain_frozen_dataclass_is_copied_as_dataclasses_replace_would() -> None:
    a = Plain(1, (2,), [3])
    copy = replace(a, x=2)
    assert copy == dataclasses.replace(a, x=2) and type(copy) is Plain
    assert copy.z is a.z and a.x == 1  # shallow, and the original untouched
    assert _plain_fields(Plain) == {"x", "y", "z"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.x = 5  # type: ignore[misc]


@pytest.mark.parametrize("cls", [PostInit, Slotted, Cached, WithInitVar, NotInInit, Mutable])
def test_a_class_whose_init_does_more_goes_to_dataclasses_replace(cls: type) -> None:
    assert _plain_fields(cls) is None
    obj = cls(1)
    assert replace(obj, x=3) == dataclasses.replace(obj, x=3)


def test_post_init_and_cached_values_are_not_carried_over() -> None:
    assert replace(PostInit(1), x=3).x == 6
    cached = Cached(2)
    assert cached.square == 4
    assert replace(cached, x=3).square == 9


def test_a_name_that_is_no_field_raises_as_dataclasses_replace_does() -> None:
    with pytest.raises(TypeError):
        replace(Plain(1), nope=1)


def test_the_core_states_take_the_fast_copy_and_equal_dataclasses_replace() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    target = make_target("00000000-0000-0000-0000-000000000001", "rg", "cache")
    ts = TargetState(target, 0, "poll", now, poll_url="https://management.azure.com/op")
    origin = Origin("req-1", now)
    state = RunState(origin, now, "fp", (ts,))
    answer = ArmAnswer(200, {}, b"{}", "https://management.azure.com/op", 0.1)
    for obj, changes in ((ts, {"polls": 3, "failures": 0}), (state, {"step": 4}),
                         (View(now), {"can_call": False}), (answer, {"elapsed": 0.5}),
                         (origin, {"reason": "x"})):
        assert _plain_fields(type(obj)) is not None
        fast: Any = replace(obj, **changes)
        assert fast == dataclasses.replace(obj, **changes)  # type: ignore[type-var]
