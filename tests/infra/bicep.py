"""A light Bicep reader for structure tests (no compiler can be installed here).

It understands what infra/*.bicep uses: comments, single-quoted strings, `param`, `var`,
`resource`, `module`, decorators, and object/array literals (newline separated). Values that
are expressions stay as their source text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class BicepSyntaxError(ValueError):
    pass


def strip_comments(text: str) -> str:
    """Remove // and /* */ comments, leaving strings (which may hold '//') alone."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise BicepSyntaxError(f"unterminated string at {i}")
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise BicepSyntaxError("unterminated block comment")
            i = end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _skip_string(text: str, i: int) -> int:
    j = i + 1
    while text[j] != "'":
        j += 2 if text[j] == "\\" else 1
    return j + 1


def matching(text: str, start: int) -> int:
    """Index just past the bracket that closes text[start] ('{', '[' or '(')."""
    pairs = {"{": "}", "[": "]", "(": ")"}
    stack, i = [], start
    while i < len(text):
        c = text[i]
        if c == "'":
            i = _skip_string(text, i)
            continue
        if c in pairs:
            stack.append(pairs[c])
        elif c in ")]}":
            if not stack or stack.pop() != c:
                raise BicepSyntaxError(f"unbalanced {c!r} at {i}")
            if not stack:
                return i + 1
        i += 1
    raise BicepSyntaxError(f"unclosed {text[start]!r} at {start}")


def check_balanced(text: str) -> None:
    i, depth = 0, []
    pairs = {"{": "}", "[": "]", "(": ")"}
    while i < len(text):
        c = text[i]
        if c == "'":
            i = _skip_string(text, i)
            continue
        if c in pairs:
            depth.append(pairs[c])
        elif c in ")]}":
            if not depth or depth.pop() != c:
                raise BicepSyntaxError(f"unbalanced {c!r} at offset {i}")
        i += 1
    if depth:
        raise BicepSyntaxError(f"unclosed brackets: {depth}")


class Expr(str):
    """An expression kept as source text (a reference, a function call, a ternary...)."""


def _value(text: str, i: int) -> tuple[Any, int]:
    while text[i] in " \t":
        i += 1
    c = text[i]
    if c == "{":
        end = matching(text, i)
        return parse_object(text[i + 1:end - 1]), end
    if c == "[" and not re.match(r"\[\s*for\b", text[i:]):
        end = matching(text, i)
        rest = text[end:].split("\n", 1)[0].strip()
        if not rest:  # a plain array literal, not `[...]` followed by more expression
            return parse_array(text[i + 1:end - 1]), end
    # an expression: up to the end of the line at bracket depth 0
    j = i
    while j < len(text) and text[j] != "\n":
        if text[j] == "'":
            j = _skip_string(text, j)
        elif text[j] in "([{":
            j = matching(text, j)
        else:
            j += 1
    raw = text[i:j].strip()
    if re.fullmatch(r"'(?:[^'\\]|\\.)*'", raw) and "${" not in raw:
        return raw[1:-1].replace("\\'", "'"), j
    if raw in ("true", "false"):
        return raw == "true", j
    if re.fullmatch(r"-?\d+", raw):
        return int(raw), j
    return Expr(raw), j


def parse_object(body: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    i, n = 0, len(body)
    while i < n:
        m = re.compile(r"\s*(?:(\w+)|'([^']*)')\s*:").match(body, i)
        if not m:
            if body[i:].strip() == "":
                break
            if body[i] in " \t\n\r,":
                i += 1
                continue
            raise BicepSyntaxError(f"expected a key at: {body[i:i + 60]!r}")
        key = m.group(1) or m.group(2)
        value, i = _value(body, m.end())
        if key in result:
            raise BicepSyntaxError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_array(body: str) -> list[Any]:
    items, i, n = [], 0, len(body)
    while i < n:
        if body[i] in " \t\n\r,":
            i += 1
            continue
        value, i = _value(body, i)
        items.append(value)
    return items


@dataclass
class Param:
    name: str
    type: str
    default: Any = None
    has_default: bool = False
    decorators: list[str] = field(default_factory=list)


@dataclass
class Resource:
    symbol: str
    type: str
    api_version: str
    body: dict[str, Any]
    condition: str | None = None
    loop: str | None = None


@dataclass
class Module:
    symbol: str
    path: str
    body: dict[str, Any]
    loop: str | None = None


@dataclass
class BicepFile:
    path: Path
    text: str                     # without comments
    target_scope: str = "resourceGroup"
    params: dict[str, Param] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    modules: dict[str, Module] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.type == type_]


_DECL = re.compile(r"^(param|var|resource|module|output|targetScope)\b", re.M)


def load(path: Path) -> BicepFile:
    text = strip_comments(path.read_text(encoding="utf-8"))
    check_balanced(text)
    bf = BicepFile(path, text)
    decorators: list[str] = []
    i = 0
    while i < len(text):
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i >= len(text):
            break
        if text[i] == "@":
            m = re.compile(r"@\w+").match(text, i)
            assert m, text[i:i + 40]
            end = matching(text, m.end()) if text[m.end():m.end() + 1] == "(" else m.end()
            decorators.append(text[i:end])
            i = end
            continue
        line_end = text.find("\n", i)
        line = text[i:line_end if line_end >= 0 else len(text)]
        if m := re.match(r"targetScope\s*=\s*'(\w+)'", line):
            bf.target_scope = m.group(1)
            i += len(line)
        elif m := re.match(r"param\s+(\w+)\s+(\w+)(\s*=\s*)?", line):
            name, type_ = m.group(1), m.group(2)
            if m.group(3):
                value, i = _value(text, i + m.end())
                bf.params[name] = Param(name, type_, value, True, decorators)
            else:
                bf.params[name] = Param(name, type_, None, False, decorators)
                i += len(line)
            decorators = []
        elif m := re.match(r"var\s+(\w+)\s*=\s*", line):
            value, i = _value(text, i + m.end())
            bf.variables[m.group(1)] = value
        elif m := re.match(r"output\s+(\w+)\s+\w+\s*=\s*", line):
            value, i = _value(text, i + m.end())
            bf.outputs[m.group(1)] = value
        elif m := re.match(r"(resource|module)\s+(\w+)\s+'([^']+)'\s*=\s*", line):
            kind, symbol, ref = m.groups()
            j = i + m.end()
            condition = loop = None
            if text.startswith("if", j):
                paren = text.index("(", j)
                close = matching(text, paren)
                condition = text[paren + 1:close - 1].strip()
                j = close
                while text[j] in " \t":
                    j += 1
            if text[j] == "[":
                close = matching(text, j)
                inner = text[j + 1:close - 1]
                lm = re.match(r"\s*for\s+(.+?):\s*\{", inner, re.S)
                if not lm:
                    raise BicepSyntaxError(f"{symbol}: unsupported loop")
                loop = lm.group(1).strip()
                brace = j + 1 + inner.index("{", lm.start())
                body = parse_object(text[brace + 1:matching(text, brace) - 1])
                i = close
            else:
                if text[j] != "{":
                    raise BicepSyntaxError(f"{symbol}: expected '{{'")
                close = matching(text, j)
                body = parse_object(text[j + 1:close - 1])
                i = close
            if kind == "resource":
                type_, _, version = ref.partition("@")
                if symbol in bf.resources:
                    raise BicepSyntaxError(f"duplicate resource {symbol}")
                bf.resources[symbol] = Resource(symbol, type_, version, body, condition, loop)
            else:
                bf.modules[symbol] = Module(symbol, ref, body, loop)
            decorators = []
        else:
            raise BicepSyntaxError(f"{path.name}: cannot read {line[:80]!r}")
    return bf
