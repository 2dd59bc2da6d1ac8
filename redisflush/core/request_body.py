"""A request body's bytes to a JSON object, or a `ValidationError` naming the field: size,
BOM, UTF-8, duplicate keys, nesting, NaN, oversized integers and lone surrogates are found
here without ever raising (docs/design.md, "Flush request")."""
from __future__ import annotations

import json
import sys
from typing import Any

from ..errors import ValidationError
from .targets import json_type

MAX_BODY_BYTES = 64 * 1024


class _Duplicated(dict):  # type: ignore[type-arg]
    """An object in which `key` appeared twice (found, with its path, after parsing)."""

    key: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result and not isinstance(result, _Duplicated):
            result = _Duplicated(result)
            result.key = key
        result[key] = value
    return result


MAX_DEPTH = 32  # a request is a flat object; Python 3.12+ parses far deeper nesting


def first_problem(data: Any) -> ValidationError | None:
    """The first duplicated key (named by its path, e.g. `reason.x`) or nesting past
    MAX_DEPTH, found without recursion so no depth can raise RecursionError."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return ValidationError("body", f"must not nest more than {MAX_DEPTH} levels "
                                           f"(at {path[:60]}...)")
        if isinstance(value, _Unreadable):
            return ValidationError(_utf8_safe(path or "body")[:128], value.rule)
        if isinstance(value, _Duplicated):
            where = f"{path}.{value.key}" if path else value.key
            return ValidationError(_utf8_safe(where)[:128], "must appear only once")
        if isinstance(value, str) and not _encodes(value):
            return ValidationError(_utf8_safe(path or "body")[:128], _SURROGATE_RULE)
        if isinstance(value, dict):
            bad_key = next((k for k in value if not _encodes(str(k))), None)
            if bad_key is not None:
                where = f"{path}.{bad_key}" if path else str(bad_key)
                return ValidationError(_utf8_safe(where)[:128], _SURROGATE_RULE)
            children = [(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(value)]
        else:
            continue
        stack.extend((v, p, depth + 1) for v, p in reversed(children))
    return None


# JSON may escape half of a UTF-16 pair (\ud800-\udfff) on its own; Python keeps it as a
# lone surrogate that no UTF-8 encoder takes, so every event and poll message built from the
# text would fail to send after the POST went out (docs/design.md, "Flush request").
_SURROGATE_RULE = "must not contain an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)"


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_safe(text: str) -> str:
    """`text` with any lone surrogate written as its escape, so a field path can be named."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class _Unreadable:
    """A number the request cannot hold, left where it was so its path names it: NaN or
    Infinity (Python's json reads them, JSON has no such literal) or an integer past Python's
    digit limit (int() refuses it). README, "The flush request": the rejection names the
    field, not just the body."""

    def __init__(self, rule: str) -> None:
        self.rule = rule


def _constant(name: str) -> _Unreadable:
    return _Unreadable(f"must not be {name}: JSON has no NaN or Infinity")


def _integer(text: str) -> int | _Unreadable:
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        return _Unreadable(f"must not be a number of more than {sys.get_int_max_str_digits()} "
                           "digits (too many digits)")


def document(body: bytes) -> dict[str, Any] | ValidationError:
    if len(body) > MAX_BODY_BYTES:
        return ValidationError("body", f"must be at most {MAX_BODY_BYTES} bytes "
                                       f"(got {len(body)})")
    if body.startswith(b"\xef\xbb\xbf"):
        return ValidationError("body", "must be JSON without a byte order mark (BOM)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return ValidationError("body", "must be UTF-8 encoded JSON")
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant,
                          parse_int=_integer)
    except RecursionError:
        return ValidationError("body", "must be JSON nested at most a few hundred levels")
    except ValueError:
        return ValidationError("body", "must be valid JSON (a JSON object)")
    if isinstance(data, _Unreadable):
        return ValidationError("body", f"must be a JSON object, not a number ({data.rule})")
    if not isinstance(data, dict):
        return ValidationError("body", f"must be a JSON object, not {json_type(data)}")
    return data
