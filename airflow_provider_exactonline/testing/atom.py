"""Atom/XML serialisation of the fake's OData documents, for clients that do not ask for JSON."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from airflow_provider_exactonline.testing.odata_query import date_ms


def _atom_value(name: str, value: Any) -> str:
    if value is None:
        return f'<d:{name} m:null="true" />'
    if isinstance(value, dict):
        return ""
    if isinstance(value, bool):
        return f'<d:{name} m:type="Edm.Boolean">{"true" if value else "false"}</d:{name}>'
    if isinstance(value, int):
        kind = "Edm.Int64" if abs(value) > 2**31 else "Edm.Int32"
        return f'<d:{name} m:type="{kind}">{value}</d:{name}>'
    if isinstance(value, float):
        return f'<d:{name} m:type="Edm.Double">{value!r}</d:{name}>'
    ms = date_ms(value)
    if ms is not None:
        stamp = (dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
        return f'<d:{name} m:type="Edm.DateTime">{stamp}</d:{name}>'
    return f"<d:{name}>{xml_escape(str(value))}</d:{name}>"


def _atom_entry(row: Mapping[str, Any]) -> str:
    meta = row.get("__metadata") or {}
    uri = xml_escape(str(meta.get("uri", "")))
    props = "".join(_atom_value(k, v) for k, v in row.items() if k != "__metadata")
    return (
        f'<entry><id>{uri}</id><title type="text" /><updated>{_utc_iso()}</updated>'
        f"<author><name /></author><category term={quoteattr(str(meta.get('type', '')))} "
        'scheme="http://schemas.microsoft.com/ado/2007/08/dataservices/scheme" />'
        f'<content type="application/xml"><m:properties>{props}</m:properties></content></entry>'
    )


def _utc_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_ATOM_NS = (
    'xmlns="http://www.w3.org/2005/Atom" '
    'xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" '
    'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"'
)


def atom_document(document: dict[str, Any], title: str) -> str:
    d = document.get("d")
    head = '<?xml version="1.0" encoding="utf-8" standalone="yes"?>'
    if isinstance(d, dict) and "results" in d:
        entries = "".join(_atom_entry(r) for r in d["results"])
        link = f'<link rel="next" href={quoteattr(d["__next"])} />' if d.get("__next") else ""
        return (
            f'{head}<feed {_ATOM_NS}><title type="text">{xml_escape(title)}</title><id />'
            f"<updated>{_utc_iso()}</updated>{entries}{link}</feed>"
        )
    entry = _atom_entry(d if isinstance(d, dict) else {})
    return head + entry.replace("<entry>", f"<entry {_ATOM_NS}>", 1)
