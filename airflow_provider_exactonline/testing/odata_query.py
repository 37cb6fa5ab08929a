"""A small OData v2 ``$filter`` / ``$orderby`` engine for the fake Exact Online server.

Supports what Exact's clients send: ``eq ne gt ge lt le``, ``and or not``, parentheses,
literals ``'text'`` (quotes doubled), ``guid'..'``, ``datetime'..'``, ``123L``, ``1.5M``/``1.5``,
``true``/``false``/``null``, and the functions ``substringof startswith endswith trim tolower
toupper length year month day``. A filter is compiled once into a Python predicate.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Comparison",
    "FilterError",
    "Node",
    "compile_filter",
    "date_ms",
    "fields_in",
    "lower_bound",
    "parse_filter",
    "parse_orderby",
]


class FilterError(ValueError):
    """The ``$filter`` or ``$orderby`` text is not valid; the message is shown to the client."""


_DATE_RE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")


def date_ms(value: Any) -> int | None:
    """``/Date(ms)/`` -> ms, else ``None``."""
    if isinstance(value, str) and value.startswith("/Date("):
        match = _DATE_RE.match(value)
        if match:
            return int(match.group(1))
    return None


@dataclass(frozen=True)
class Literal:
    value: Any
    kind: str  # string guid datetime long number bool null


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Comparison:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class BoolOp:
    op: str  # and / or
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


Node = Literal | Field | Call | Comparison | BoolOp | Not

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<guid>guid'(?P<guidv>[^']*)')
  | (?P<datetime>datetime'(?P<dtv>[^']*)')
  | (?P<string>'(?P<strv>(?:[^']|'')*)')
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[LlMmDdFf]?)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_/.]*)
    """,
    re.VERBOSE,
)

_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCTIONS = {
    "substringof": 2,
    "startswith": 2,
    "endswith": 2,
    "trim": 1,
    "tolower": 1,
    "toupper": 1,
    "length": 1,
    "year": 1,
    "month": 1,
    "day": 1,
}


def _parse_datetime(text: str, position: int, source: str) -> int:
    value = text.strip()
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            parsed = dt.datetime.strptime(value.rstrip("Z"), fmt)
        except ValueError:
            continue
        # Exact's /Date(ms)/ values are wall-clock times encoded as if UTC; datetime'..' literals
        # are wall-clock times too, so both compare in the same frame.
        return calendar.timegm(parsed.timetuple()) * 1000 + parsed.microsecond // 1000
    raise FilterError(f"Invalid datetime literal datetime'{text}' at position {position} in '{source}'.")


def _tokenize(source: str) -> list[tuple[str, Any, int]]:
    tokens: list[tuple[str, Any, int]] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN_RE.match(source, pos)
        if not match:
            raise FilterError(f"Syntax error at position {pos} in '{source}'.")
        kind = match.lastgroup
        if kind in ("guidv", "dtv", "strv"):  # pragma: no cover - inner groups never last
            kind = None
        if match.group("guid") is not None:
            raw = match.group("guidv")
            try:
                tokens.append(("lit", Literal(str(uuid.UUID(raw)), "guid"), pos))
            except ValueError:
                raise FilterError(f"Invalid guid literal guid'{raw}' at position {pos} in '{source}'.") from None
        elif match.group("datetime") is not None:
            tokens.append(("lit", Literal(_parse_datetime(match.group("dtv"), pos, source), "datetime"), pos))
        elif match.group("string") is not None:
            tokens.append(("lit", Literal(match.group("strv").replace("''", "'"), "string"), pos))
        elif match.group("number") is not None:
            text = match.group("number")
            suffix = text[-1].upper() if text[-1].isalpha() else ""
            body = text[:-1] if suffix else text
            if suffix == "L" or (not suffix and "." not in body and "e" not in body.lower()):
                if "." in body:
                    raise FilterError(f"Invalid Int64 literal '{text}' at position {pos} in '{source}'.")
                tokens.append(("lit", Literal(int(body), "long" if suffix == "L" else "number"), pos))
            else:
                tokens.append(("lit", Literal(float(body), "number"), pos))
        elif match.group("ident") is not None:
            word = match.group("ident")
            lowered = word.lower()
            if lowered in ("true", "false"):
                tokens.append(("lit", Literal(lowered == "true", "bool"), pos))
            elif lowered == "null":
                tokens.append(("lit", Literal(None, "null"), pos))
            else:
                tokens.append(("ident", word, pos))
        elif kind != "ws":
            tokens.append((str(kind), match.group(0), pos))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.index = 0

    def error(self, message: str | None = None) -> FilterError:
        pos = self.tokens[self.index][2] if self.index < len(self.tokens) else len(self.source)
        return FilterError(message or f"Syntax error at position {pos} in '{self.source}'.")

    def peek(self) -> tuple[str, Any, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def peek_word(self) -> str | None:
        token = self.peek()
        return token[1].lower() if token and token[0] == "ident" else None

    def take(self, kind: str) -> tuple[str, Any, int]:
        token = self.peek()
        if token is None or token[0] != kind:
            raise self.error()
        self.index += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise FilterError("The $filter expression is empty.")
        node = self.parse_or()
        if self.index != len(self.tokens):
            raise self.error()
        return node

    def parse_or(self) -> Node:
        node = self.parse_and()
        while self.peek_word() == "or":
            self.index += 1
            node = BoolOp("or", node, self.parse_and())
        return node

    def parse_and(self) -> Node:
        node = self.parse_not()
        while self.peek_word() == "and":
            self.index += 1
            node = BoolOp("and", node, self.parse_not())
        return node

    def parse_not(self) -> Node:
        if self.peek_word() == "not":
            self.index += 1
            return Not(self.parse_not())
        return self.parse_comparison()

    def parse_comparison(self) -> Node:
        left = self.parse_operand()
        word = self.peek_word()
        if word in _COMPARISONS:
            self.index += 1
            return Comparison(word, left, self.parse_operand())
        return left

    def parse_operand(self) -> Node:
        token = self.peek()
        if token is None:
            raise self.error()
        kind, value, _ = token
        if kind == "lparen":
            self.index += 1
            node = self.parse_or()
            self.take("rparen")
            return node
        if kind == "lit":
            self.index += 1
            return value
        if kind == "ident":
            self.index += 1
            nxt = self.peek()
            if nxt is not None and nxt[0] == "lparen":
                name = value.lower()
                if name not in _FUNCTIONS:
                    raise self.error(f"Unknown function '{value}' in '{self.source}'.")
                self.index += 1
                args = [self.parse_or()]
                while self.peek() is not None and self.peek()[0] == "comma":  # type: ignore[index]
                    self.index += 1
                    args.append(self.parse_or())
                self.take("rparen")
                if len(args) != _FUNCTIONS[name]:
                    raise self.error(f"Function '{value}' takes {_FUNCTIONS[name]} argument(s).")
                return Call(name, tuple(args))
            return Field(value)
        raise self.error()


def parse_filter(source: str) -> Node:
    return _Parser(source).parse()


def fields_in(node: Node) -> set[str]:
    """Every field name a filter refers to."""
    if isinstance(node, Field):
        return {node.name}
    if isinstance(node, Literal):
        return set()
    if isinstance(node, Call):
        out: set[str] = set()
        for arg in node.args:
            out |= fields_in(arg)
        return out
    if isinstance(node, Not):
        return fields_in(node.operand)
    return fields_in(node.left) | fields_in(node.right)


def lower_bound(node: Node, field: str) -> tuple[int, bool] | None:
    """``(value, inclusive)`` when every match must have ``field`` >= / > a literal (top-level ANDs only)."""
    if isinstance(node, BoolOp) and node.op == "and":
        bounds = [b for b in (lower_bound(node.left, field), lower_bound(node.right, field)) if b]
        if not bounds:
            return None
        return max(bounds, key=lambda b: b[0] - 1 if b[1] else b[0])  # the tightest bound
    if (
        isinstance(node, Comparison)
        and node.op in ("gt", "ge")
        and isinstance(node.left, Field)
        and node.left.name.lower() == field.lower()
        and isinstance(node.right, Literal)
        and isinstance(node.right.value, int)
        and not isinstance(node.right.value, bool)
    ):
        return node.right.value, node.op == "ge"
    return None


def key_equals(node: Node, field: str) -> str | None:
    """The GUID when the filter pins ``field eq guid'..'`` at top level."""
    if isinstance(node, BoolOp) and node.op == "and":
        return key_equals(node.left, field) or key_equals(node.right, field)
    if (
        isinstance(node, Comparison)
        and node.op == "eq"
        and isinstance(node.left, Field)
        and node.left.name.lower() == field.lower()
        and isinstance(node.right, Literal)
        and node.right.kind in ("guid", "string")
    ):
        return str(node.right.value).lower()
    return None


def _norm(value: Any) -> Any:
    ms = date_ms(value)
    if ms is not None:
        return ms
    return value


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        if op == "eq":
            return left is None and right is None
        if op == "ne":
            return not (left is None and right is None)
        return False
    # GUID comparisons are case-insensitive in Exact.
    if isinstance(left, str) and isinstance(right, str) and len(left) == len(right) == 36 and left.count("-") == 4:
        left, right = left.lower(), right.lower()
    try:
        if op == "eq":
            return bool(left == right)
        if op == "ne":
            return bool(left != right)
        if op == "gt":
            return bool(left > right)
        if op == "ge":
            return bool(left >= right)
        if op == "lt":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        return False


Getter = Callable[[dict[str, Any]], Any]


def _compile_value(node: Node, resolve: Callable[[str], str]) -> Getter:
    if isinstance(node, Literal):
        value = node.value
        return lambda row: value
    if isinstance(node, Field):
        name = resolve(node.name)
        return lambda row: _norm(row.get(name))
    if isinstance(node, Call):
        args = [_compile_value(a, resolve) for a in node.args]
        fn = node.name

        def call(row: dict[str, Any]) -> Any:
            values = [a(row) for a in args]
            if fn in ("trim", "tolower", "toupper", "length"):
                v = values[0]
                if v is None:
                    return None
                s = str(v)
                return {"trim": s.strip, "tolower": s.lower, "toupper": s.upper}.get(fn, lambda: len(s))()
            if fn in ("year", "month", "day"):
                if not isinstance(values[0], int):
                    return None
                d = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=values[0])
                return getattr(d, fn)
            a, b = values
            if a is None or b is None:
                return False
            if fn == "substringof":
                return str(a).lower() in str(b).lower()
            if fn == "startswith":
                return str(a).lower().startswith(str(b).lower())
            return str(a).lower().endswith(str(b).lower())

        return call
    predicate = _compile_predicate(node, resolve)
    return predicate


def _compile_predicate(node: Node, resolve: Callable[[str], str]) -> Callable[[dict[str, Any]], bool]:
    if isinstance(node, BoolOp):
        left = _compile_predicate(node.left, resolve)
        right = _compile_predicate(node.right, resolve)
        if node.op == "and":
            return lambda row: left(row) and right(row)
        return lambda row: left(row) or right(row)
    if isinstance(node, Not):
        inner = _compile_predicate(node.operand, resolve)
        return lambda row: not inner(row)
    if isinstance(node, Comparison):
        lhs = _compile_value(node.left, resolve)
        rhs = _compile_value(node.right, resolve)
        op = node.op
        return lambda row: _compare(op, lhs(row), rhs(row))
    if isinstance(node, Call) and node.name in ("substringof", "startswith", "endswith"):
        fn = _compile_value(node, resolve)
        return lambda row: bool(fn(row))
    if isinstance(node, Field):
        name = resolve(node.name)
        return lambda row: row.get(name) is True
    if isinstance(node, Literal) and node.kind == "bool":
        value = bool(node.value)
        return lambda row: value
    raise FilterError("The $filter expression must be a boolean expression.")


def compile_filter(node: Node, resolve: Callable[[str], str]) -> Callable[[dict[str, Any]], bool]:
    """A predicate over rows; ``resolve`` maps a field name as written to the row's key (or raises)."""
    return _compile_predicate(node, resolve)


def parse_orderby(source: str) -> list[tuple[str, bool]]:
    """``"Name desc, Code"`` -> ``[("Name", True), ("Code", False)]``."""
    out: list[tuple[str, bool]] = []
    for part in source.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise FilterError(f"Syntax error in $orderby '{source}'.")
        out.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return out
