"""JSON Lines straight from Exact's own page text: each row as Exact wrote it, ``__metadata`` cut out.

A JSON Lines export need not turn 144 values a row into Python objects and back into JSON. msgspec
validates the page and hands over each row as its JSON text (``msgspec.Raw``); a second, typed pass
over the same body reads only each row's ``__metadata`` (to cut it out) and ``Timestamp`` (for the
watermark). The page is then written with one join. For wide rows this costs about half of decoding
and encoding the values (``operators/rowpages.py``); docs/operators.md, "Performance", has the figures.

A page takes this path only where the result is certain to be one JSON object a line with the
values Exact sent:

- the body has no line break (a row of a pretty-printed page would span lines) and no
  ``"__deferred":`` (deferred navigation links are dropped from exports, which the other paths do);
- every row starts with its ``__metadata`` object, written as Exact writes it (``{"__metadata":{…},``),
  or no row has one;
- every ``Timestamp`` is an integer or null.

Any other page is decoded by :class:`~airflow_provider_exactonline.operators.rowpages.PageDecoder`'s
other paths. The lines are the JSON values the record-by-record path writes; they are the same bytes
too where Exact's text is compact and has no escapes (``\\/``, ``\\u00fc``), which this path keeps.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

_ROW_WITH_METADATA = b'{"__metadata":{'
_METADATA_VALUE_AT = len(b'{"__metadata":')
_HEAD = slice(0, len(_ROW_WITH_METADATA))
_COMMA = ord(",")
_NOT_ON_THIS_PATH = (b"\n", b"\r", b'"__deferred":')


class _RowsText(msgspec.Struct):
    results: list[msgspec.Raw]
    next: str | None = msgspec.field(default=None, name="__next")


class _PageText(msgspec.Struct):
    d: _RowsText


class _Head(msgspec.Struct, gc=False):
    """What the second pass reads of a row (every other field is skipped, not decoded)."""

    metadata: msgspec.Raw = msgspec.field(default=msgspec.Raw(), name="__metadata")
    timestamp: int | None = msgspec.field(default=None, name="Timestamp")


class _Heads(msgspec.Struct):
    results: list[_Head]


class _PageHeads(msgspec.Struct):
    d: _Heads


_TEXT = msgspec.json.Decoder(_PageText)
_HEADS = msgspec.json.Decoder(_PageHeads)


class TextPage:
    """A page as JSON text: each row's text after its ``__metadata`` (``opener`` puts back the ``{``)."""

    def __init__(self, bodies: list[Any], opener: bytes, timestamps: list[int | None]) -> None:
        self.bodies = bodies
        self.opener = opener
        self.timestamps = timestamps

    def __len__(self) -> int:
        return len(self.bodies)

    def __getitem__(self, index: slice) -> TextPage:
        return TextPage(self.bodies[index], self.opener, self.timestamps[index])

    def jsonl(self) -> bytes:
        """``{row}\\n{row}\\n…`` in one join (no copy per row)."""
        count = len(self.bodies)
        if not count:
            return b""
        pieces: list[Any] = [b"\n" + self.opener] * (2 * count + 1)
        pieces[0], pieces[-1] = self.opener, b"\n"
        pieces[1::2] = self.bodies
        return b"".join(pieces)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.jsonl().splitlines()]

    def keys(self) -> list[str]:
        return list(orjson.loads(self.opener + bytes(self.bodies[0]))) if self.bodies else []

    def column(self, name: str) -> list[Any]:
        if name == "Timestamp":
            return self.timestamps
        return [record.get(name) for record in self.records]


def text_page(body: bytes) -> tuple[TextPage, str | None] | None:
    """The page in ``body`` as a :class:`TextPage` and its ``__next`` link, or None where this path does
    not apply (see the module docstring)."""
    if any(marker in body for marker in _NOT_ON_THIS_PATH):
        return None
    try:
        page = _TEXT.decode(body)
        heads = _HEADS.decode(body).d.results
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    rows = page.d.results
    timestamps = [head.timestamp for head in heads]
    if not any(len(head.metadata) for head in heads):
        return TextPage(rows, b"", timestamps), page.d.next or None
    bodies = []
    for row, head in zip(rows, heads, strict=True):
        view = memoryview(row)
        comma = _METADATA_VALUE_AT + len(head.metadata)
        # The row opens with its metadata object and nothing between it and the next field.
        if len(view) <= comma or view[_HEAD] != _ROW_WITH_METADATA or view[comma] != _COMMA:
            return None
        bodies.append(view[comma + 1 :])
    return TextPage(bodies, b"{", timestamps), page.d.next or None
