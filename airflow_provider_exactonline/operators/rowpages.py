"""Export pages decoded straight into compact rows, with the output of the record-by-record path.

An export reads thousands of pages of the same shape. For JSON Lines, :class:`PageDecoder` first
tries to keep a page as Exact's own JSON text (:mod:`~airflow_provider_exactonline.operators.textpages`:
no value is decoded at all). Otherwise it decodes the first page the usual way (orjson to dicts,
then :func:`~airflow_provider_exactonline.operators.writers.clean_record`) and learns its *layout*:
the field names in the order Exact sent them. Later pages are decoded by msgspec into a Struct of
that layout, without a dict per row (CSV and Parquet read columns of it; JSON Lines are written in
one ``encode_lines`` call). That path is taken only where it writes exactly what the dict path writes:

- every row has exactly the layout's fields (``__metadata`` aside, which is dropped);
- every value is a string, boolean, null, an integer that fits 64 bits, or a float below 1e16 in
  size (orjson writes ``1e+16`` where msgspec writes ``1e16``, and decodes larger integers as
  floats); an object such as ``{"__deferred": ...}`` or a list falls back too;
- ``convert_dates`` is off (dates become datetimes in the dict path only).

Any page that does not fit is decoded the usual way, so what a page holds never depends on which
path it took. Exact serializes one entity's rows with one fixed key order, which the layout keeps.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from operator import attrgetter, is_not
from typing import Annotated, Any

import msgspec
import orjson
import requests

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.hooks.errors import d_of
from airflow_provider_exactonline.hooks.reads import collection_of
from airflow_provider_exactonline.operators.textpages import TextPage, text_page

#: The values the Struct path accepts (see the module docstring for the bounds).
_Scalar = (
    str
    | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
    | Annotated[float, msgspec.Meta(gt=-1e16, lt=1e16)]
    | bool
    | None
)
_METADATA = "__metadata"
_NOT_NONE = partial(is_not, None)
_META_ATTR = "meta_"
#: After this many pages that did not fit the layout (or the text path), an export stops trying it.
MAX_LAYOUT_MISSES = 3
_ENCODER = msgspec.json.Encoder()


def json_default(value: Any) -> Any:
    """What orjson cannot write itself: datetimes as ``isoformat()``, anything else as ``str()``."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


#: Datetimes go through ``json_default`` (``isoformat()``), so output matches ``json.dumps`` in meaning.
_ORJSON_LINE = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def clean_record(record: Mapping[str, Any], *, convert_dates: bool, timezone: str) -> dict[str, Any]:
    """Drop OData plumbing (``__metadata``, deferred navigation properties); optionally turn
    ``/Date(ms)/`` strings into aware datetimes."""
    out = {
        key: value
        for key, value in record.items()
        if key != _METADATA and not (isinstance(value, dict) and "__deferred" in value)
    }
    if convert_dates:
        for key, value in out.items():
            if isinstance(value, str) and value.startswith("/Date(") and odata.is_date(value):
                out[key] = odata.parse_date(value, timezone)
    return out


class Layout:
    """One page shape: field names in Exact's order and the msgspec decoder for pages of it."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)
        attrs = [f"f{i}" for i in range(len(self.keys))]
        self.attr_of = dict(zip(self.keys, attrs, strict=True))
        row = msgspec.defstruct(
            "ExportRow",
            [(attr, _Scalar) for attr in attrs] + [(_META_ATTR, msgspec.Raw, None)],
            rename={**dict(zip(attrs, self.keys, strict=True)), _META_ATTR: _METADATA},
            forbid_unknown_fields=True,
            omit_defaults=True,  # only ``__metadata`` has a default: it is never written
            gc=False,  # scalars only, so no cycles: the collector need not track a page's thousand rows
        )
        rows: Any = list[row]  # type: ignore[valid-type]
        data = msgspec.defstruct("ExportD", [("results", rows), ("next", str | None, None)], rename={"next": "__next"})
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(msgspec.defstruct("ExportPage", [("d", data)]))
        self._values = attrgetter(*attrs) if len(attrs) > 1 else None

    def tuples(self, rows: Sequence[Any]) -> Iterable[tuple[Any, ...]]:
        if self._values is None:
            return ((r.f0,) for r in rows)
        return map(self._values, rows)

    @classmethod
    def of(cls, raw: Sequence[Mapping[str, Any]], cleaned: Sequence[Mapping[str, Any]]) -> Layout | None:
        """The layout shared by every row of a page, or None (rows differ, or a value was dropped)."""
        if not cleaned:
            return None
        keys = tuple(cleaned[0])
        if not keys or any(tuple(r) != keys for r in cleaned):
            return None
        if any(len(r) - (_METADATA in r) != len(keys) for r in raw):
            return None  # a deferred navigation property was dropped: keep the dict path
        return cls(keys)


class DictPage:
    """A page as cleaned dicts (the general path)."""

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.records = [r if type(r) is dict else dict(r) for r in records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: slice) -> DictPage:
        return DictPage(self.records[index])

    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for record in self.records:
            seen.update(dict.fromkeys(record))
        return list(seen)

    def column(self, name: str) -> list[Any]:
        return [r.get(name) for r in self.records]

    def jsonl(self) -> bytes:
        return b"".join([orjson.dumps(r, default=json_default, option=_ORJSON_LINE) for r in self.records])


class StructPage:
    """A page as msgspec Structs of one :class:`Layout`."""

    def __init__(self, layout: Layout, rows: list[Any]) -> None:
        self.layout = layout
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: slice) -> StructPage:
        return StructPage(self.layout, self.rows[index])

    def keys(self) -> list[str]:
        return list(self.layout.keys)

    @property
    def records(self) -> list[dict[str, Any]]:
        keys = self.layout.keys
        return [dict(zip(keys, values, strict=True)) for values in self.layout.tuples(self.rows)]

    def column(self, name: str) -> list[Any]:
        attr = self.layout.attr_of.get(name)
        if attr is None:
            return [None] * len(self.rows)
        return list(map(attrgetter(attr), self.rows))

    def jsonl(self) -> bytes:
        return _ENCODER.encode_lines(self.rows)


RowPage = DictPage | StructPage | TextPage


def as_page(records: RowPage | Sequence[Mapping[str, Any]]) -> RowPage:
    return records if isinstance(records, (DictPage, StructPage, TextPage)) else DictPage(records)


def max_int(page: RowPage, name: str, start: int) -> int:
    """The largest integer value of field ``name`` in ``page`` (None values skipped), at least ``start``."""
    values = list(filter(_NOT_NONE, page.column(name)))
    if not values:
        return start
    return max(start, max(values) if set(map(type, values)) == {int} else max(map(int, values)))


class PageDecoder:
    """``decode(response, path)`` for :meth:`ExactOnlineHook.iter_decoded_pages` (see the module docstring)."""

    def __init__(
        self,
        *,
        convert_dates: bool = False,
        timezone: str = odata.DEFAULT_EXACT_TIMEZONE,
        text: bool = False,
        links: bool = True,
    ) -> None:
        self.convert_dates = convert_dates
        self.timezone = timezone
        #: JSON Lines output: pages are kept as Exact's JSON text where they can be (``operators/textpages.py``).
        self.text = text and not convert_dates
        #: Whether pages may hold deferred navigation links (False: the query selected no navigation property).
        self.links = links
        self.layout: Layout | None = None
        self.misses = 0
        self.text_misses = 0
        self.text_pages = 0
        self.struct_pages = 0
        self.dict_pages = 0

    def __call__(self, response: requests.Response, path: str) -> tuple[RowPage, str | None]:
        if self.text and self.text_misses < MAX_LAYOUT_MISSES:
            found = text_page(response.content, links=self.links)
            if found is not None:
                self.text_pages += 1
                return found
            self.text_misses += 1
        if self.layout is not None:
            try:
                page = self.layout.decoder.decode(response.content)
            except (msgspec.ValidationError, msgspec.DecodeError):
                self.misses += 1
                self.layout = None  # learnt again from this page (up to MAX_LAYOUT_MISSES times)
            else:
                rows = page.d.results
                for row in rows:
                    row.meta_ = None
                self.struct_pages += 1
                return StructPage(self.layout, rows), page.d.next or None
        raw, next_url = collection_of(d_of(response, "GET", response.url), path)
        cleaned = [clean_record(r, convert_dates=self.convert_dates, timezone=self.timezone) for r in raw]
        self.dict_pages += 1
        if self.layout is None and not self.convert_dates and self.misses < MAX_LAYOUT_MISSES:
            self.layout = Layout.of(raw, cleaned)
        return DictPage(cleaned), next_url
