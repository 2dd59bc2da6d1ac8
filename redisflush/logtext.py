"""Values from a message or from ARM, made safe for one log line.

A newline, carriage return, ANSI escape or Unicode line separator inside a MessageId, a field
name or an ARM error would let whoever wrote it forge log lines (docs/design.md, "Security
rules"): every such value passes through `printable` before it reaches a log call.
"""
from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
# Cc: C0/C1 controls (ESC, NEL...); Cf: format (bidi overrides, zero-width); Zl/Zp: U+2028/9;
# Cs: lone surrogates; Cn: unassigned (may be a control in a newer Unicode).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})
ELLIPSIS = "…"


def printable(value: object, limit: int = 200) -> str:
    """`value` as text on one line: controls escaped (\\n, \\x1b, \\u2028 ...), backslashes
    doubled (so an escape cannot be faked either), at most `limit` characters, the cut
    marked with "…"."""
    text = _text(value)
    limit = max(1, limit)
    if len(text) <= limit and text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to escape, nothing to cut
    pieces: list[str] = []
    used = 0
    for char in text[:limit + 1]:  # each character becomes at least one
        piece = _escape(char)
        if used + len(piece) > limit:
            break
        pieces.append(piece)
        used += len(piece)
    else:
        if len(text) <= limit:
            return "".join(pieces)
    while pieces and used + len(ELLIPSIS) > limit:
        used -= len(pieces.pop())
    return "".join(pieces) + ELLIPSIS


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    try:
        return str(value)
    except Exception:  # a hostile __str__ must not break the log line that names it
        return f"<unprintable {type(value).__name__}>"


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    if char.isascii() and char.isprintable():
        return char
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def not_utf8(exc: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8, for the one-line error that names the file: the
    codec's own message names neither the file nor a fix."""
    bad = bytes(exc.object[exc.start:exc.start + 1]).hex()
    return f"byte 0x{bad} at offset {exc.start} is not UTF-8"
