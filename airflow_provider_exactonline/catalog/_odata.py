"""Find the field names in OData ``$filter`` and ``$orderby`` expressions (no evaluation, no Airflow)."""

from __future__ import annotations

import re
from typing import NamedTuple

# Typed literals Exact accepts: 'text' (quotes doubled inside), guid'…', datetime'…', X'…' and friends.
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>(?:guid|datetime|datetimeoffset|time|binary|X)?'(?:[^']|'')*')
  | (?P<number>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[LlMmDdFf]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:[./][A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<punct>[(),])
    """,
    re.VERBOSE | re.IGNORECASE,
)

KEYWORDS = frozenset(
    {
        "and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "null", "true", "false",
        "add", "sub", "mul", "div", "mod", "asc", "desc",
    }
)  # fmt: skip


class FieldRef(NamedTuple):
    """A field reference in an expression: its span and the first path segment (the entity's own field)."""

    start: int
    end: int
    field: str


class ODataSyntaxError(ValueError):
    """The expression cannot be tokenized (e.g. an unterminated string literal or ``=`` for ``eq``)."""


def filter_fields(expr: str) -> list[FieldRef]:
    """Return the field references in a ``$filter`` expression.

    Skips string and typed literals (``'…'``, ``guid'…'``, ``datetime'…'``), numbers (``123L``),
    operators and keywords, and function names (any identifier followed by ``(``, e.g. ``substringof``,
    ``trim``, ``startswith``). For navigation paths (``Account/Name``) the first segment is reported.
    """
    tokens: list[tuple[str, int, int]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            char = expr[pos]
            if char == "'":
                raise ODataSyntaxError(f"unterminated string literal at position {pos} in {expr!r}")
            hint = " (OData uses eq, ne, gt, ge, lt, le, and, or, not)" if char in "=<>!&|" else ""
            raise ODataSyntaxError(f"unexpected character {char!r} at position {pos} in {expr!r}{hint}")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, match.start(), match.end()))
        pos = match.end()

    refs: list[FieldRef] = []
    for index, (kind, start, end) in enumerate(tokens):
        if kind != "ident":
            continue
        text = expr[start:end]
        if text.lower() in KEYWORDS:
            continue
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if following is not None and following[0] == "punct" and expr[following[1]] == "(":
            continue  # a function call such as substringof(…)
        first = re.split(r"[./]", text, maxsplit=1)[0]
        refs.append(FieldRef(start, start + len(first), first))
    return refs


def orderby_fields(expr: str) -> list[FieldRef]:
    """Return the field references in an ``$orderby`` expression (``Name desc, Modified``)."""
    refs: list[FieldRef] = []
    offset = 0
    for part in expr.split(","):
        words = list(re.finditer(r"\S+", part))
        if not words:
            raise ODataSyntaxError(f"empty item in $orderby {expr!r}")
        if len(words) > 2 or (len(words) == 2 and words[1].group().lower() not in ("asc", "desc")):
            raise ODataSyntaxError(f"cannot read $orderby item {part.strip()!r}: expected 'Field [asc|desc]'")
        word = words[0]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(?:[./][A-Za-z_][A-Za-z0-9_]*)*", word.group()):
            raise ODataSyntaxError(f"cannot read $orderby item {part.strip()!r}: {word.group()!r} is not a field name")
        first = re.split(r"[./]", word.group(), maxsplit=1)[0]
        start = offset + word.start()
        refs.append(FieldRef(start, start + len(first), first))
        offset += len(part) + 1
    return refs


def replace_fields(expr: str, refs: list[FieldRef], names: list[str]) -> str:
    """Rewrite ``expr`` with each reference replaced by the matching name (same order as ``refs``)."""
    out: list[str] = []
    last = 0
    for ref, name in zip(refs, names, strict=True):
        out.append(expr[last : ref.start])
        out.append(name)
        last = ref.end
    out.append(expr[last:])
    return "".join(out)
