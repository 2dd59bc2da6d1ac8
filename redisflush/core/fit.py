"""Bounding ARM's own JSON by bytes (docs/design.md, "Poll message"): every message the app
sends stays under MAX_MESSAGE_BYTES whatever ARM answered, because a message Service Bus
refuses would make every later step fail into the dead-letter queue.

`fit` cuts the largest strings and lists first until the compact JSON fits; NaN, Infinity
and integers too long to print are dropped (they are not JSON, or not readable back).
"""
from __future__ import annotations

import json
import math
from typing import Any

MAX_MESSAGE_BYTES = 192 * 1024
_ELLIPSIS = "…"
_MAX_INT_DIGITS = 300


def size(value: Any) -> int:
    """Bytes of the compact JSON text, as the app sends it."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "backslashreplace"))


def clean(value: Any, depth: int = 0, limit: int | None = None) -> Any:
    """JSON-safe: no NaN/Infinity, no 5,000-digit integers, no nesting past 8 levels; with
    `limit`, no string longer and no list or object with more items than could ever fit
    (a cheap first cut, so the exact one below works on small values)."""
    if isinstance(value, str):
        return value if limit is None or len(value) <= limit else value[:limit] + _ELLIPSIS
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if abs(value) < 10 ** _MAX_INT_DIGITS else None
    if isinstance(value, (dict, list)) and depth >= 8:
        return _ELLIPSIS
    items = None if limit is None else max(1, limit // 8)
    if isinstance(value, dict):
        return {str(k)[:256]: clean(v, depth + 1, limit)
                for k, v in list(value.items())[:items]}
    if isinstance(value, list):
        return [clean(v, depth + 1, limit) for v in value[:items]]
    return value


def fit(value: Any, max_bytes: int) -> Any:
    """`value` cleaned and cut until its compact JSON is at most `max_bytes`."""
    value = clean(value)
    if size(value) > max_bytes:
        value = clean(value, limit=max_bytes)
    for _ in range(64):
        excess = size(value) - max_bytes
        if excess <= 0:
            return value
        value = _cut_largest(value, excess)
    return None if size(None) <= max_bytes else value


def _cut_largest(value: Any, excess: int) -> Any:
    """Shorten the single largest string or list somewhere in `value` by about `excess`."""
    path, best = None, 0
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        node, where = stack.pop()
        weight = size(node)
        cuttable = isinstance(node, str) and len(node) > 1 or \
            isinstance(node, list) and len(node) > 2
        if cuttable and weight > best:
            path, best = where, weight
        if isinstance(node, dict):
            stack.extend((v, where + (k,)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, where + (i,)) for i, v in enumerate(node))
    if path is None:
        return None  # only numbers and keys left: nothing sensible to cut
    return _replace(value, path, _shorter(_get(value, path), excess))


def _shorter(node: Any, excess: int) -> Any:
    if isinstance(node, str):
        total = size(node)
        # characters to keep, from the share of bytes to keep (multi-byte text is cut in
        # proportion, not by subtracting bytes from characters)
        keep = int(len(node) * max(0, total - max(excess, total // 4) - 8) / max(1, total))
        while keep and size(node[:keep]) > total - excess:
            keep = keep * 3 // 4
        return node[:keep] + _ELLIPSIS
    return node[: len(node) // 2] + [_ELLIPSIS]


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(value[head], rest, new)
    return copy
