"""`replace` for the core's frozen dataclasses, without `dataclasses.replace`'s generic work.

Why: a poll step copies its states about a dozen times (TargetState has 24 fields), and
`dataclasses.replace` walks every field, builds the keyword arguments and runs `__init__`,
which sets each field through `object.__setattr__`: about 5 us a copy against under 1 us for
copying the instance's `__dict__` (bench/cpu.py, section 3 of docs/benchmarks.md). The result
is the same object `dataclasses.replace` would build whenever `__init__` only stores its
arguments: a frozen dataclass with its generated `__init__`, no `__post_init__`, no
`__slots__`, no `cached_property`, no `InitVar` and no field left out of `__init__`. Any
other class, or a name that is not a field, goes to `dataclasses.replace` itself (which
raises its own TypeError for the unknown name).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

T = TypeVar("T")

# class -> its field names when the fast copy is exact, else None
_PLAIN: dict[type, frozenset[str] | None] = {}


def _plain_fields(cls: type) -> frozenset[str] | None:
    declared: dict[str, Any] = getattr(cls, "__dataclass_fields__", {})
    params = getattr(cls, "__dataclass_params__", None)
    if not declared or params is None or not params.frozen or not params.init or \
            hasattr(cls, "__post_init__"):
        return None
    for klass in cls.__mro__[:-1]:
        # slots: no instance __dict__; a cached_property's value in __dict__ must not be copied
        if "__slots__" in vars(klass) or any(isinstance(v, functools.cached_property)
                                             for v in vars(klass).values()):
            return None
    names = []
    for f in declared.values():
        # a ClassVar is no field of the instance; an InitVar or init=False one needs __init__
        if f._field_type is dataclasses._FIELD_CLASSVAR:  # type: ignore[attr-defined]
            continue
        if f._field_type is not dataclasses._FIELD or not f.init:  # type: ignore[attr-defined]
            return None
        names.append(f.name)
    return frozenset(names)


def replace(obj: T, /, **changes: Any) -> T:
    """`dataclasses.replace(obj, **changes)`: a new instance with `changes` applied."""
    cls = type(obj)
    try:
        names = _PLAIN[cls]
    except KeyError:
        names = _PLAIN[cls] = _plain_fields(cls)
    if names is None or not names.issuperset(changes):
        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    new = object.__new__(cls)
    values = new.__dict__
    values.update(obj.__dict__)
    values.update(changes)
    return new
