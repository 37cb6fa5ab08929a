"""One concrete endpoint (a variant of an entity) and its fields, built from ``catalog.json``."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

DESCRIPTIONS_FILE = Path(__file__).with_name("descriptions.json")

# One-letter type codes in catalog.json (see scripts/catalog_types.py for how they are derived).
EDM_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "g": "Edm.Guid",
        "s": "Edm.String",
        "h": "Edm.Int16",
        "i": "Edm.Int32",
        "l": "Edm.Int64",
        "d": "Edm.Double",
        "m": "Edm.Decimal",
        "b": "Edm.Boolean",
        "t": "Edm.DateTime",
        "y": "Edm.Byte",
        "x": "Edm.Binary",
    }
)
NAVIGATION_CODE = "n"
# The coarse kinds ``fields``/``fields_for`` report (kept from format 1).
_KINDS = {"g": "string", "s": "string", "t": "string", "x": "string", "b": "boolean", "n": "unknown"}


@dataclass(frozen=True)
class FieldInfo:
    """A scalar field of an endpoint: its name, Edm type (``Edm.Guid``…) and Exact's description."""

    name: str
    edm_type: str
    description: str | None


@dataclass(frozen=True)
class Endpoint:
    """One concrete endpoint (a variant of an entity)."""

    path: str  # relative to /api/v1/{division}/ (or /api/v1/beta/{division}/, or /api/v1/)
    methods: tuple[str, ...]
    doc_url: str
    model: str  # picqer's model name (SyncTimestamp, BulkAccount)
    names: Sequence[str] = field(repr=False)  # field names, in Exact's order
    codes: str = field(repr=False)  # one type code per field, in field order
    key: str | None
    beta: bool
    division_in_path: bool
    select_required: bool
    writable_names: Sequence[str] | None = field(repr=False)  # fillable fields (None: read-only)
    mandatory_filter: tuple[str, ...] | None
    deprecated: bool
    replacement: str | None
    deprecation_note: str | None
    descriptions_key: str = field(repr=False)  # whose descriptions these fields share (a path, lower case)

    # Field maps are built on first use: a task process touches a handful of the 451 endpoints.

    @functools.cached_property
    def fields(self) -> Mapping[str, str]:
        """Field name -> ``string`` | ``number`` | ``boolean`` | ``unknown``."""
        return MappingProxyType(
            {name: _KINDS.get(code, "number") for name, code in zip(self.names, self.codes, strict=True)}
        )

    @functools.cached_property
    def lower_fields(self) -> Mapping[str, str]:
        """Lower-case field name -> the catalog's spelling."""
        return MappingProxyType({name.lower(): name for name in self.names})

    @functools.cached_property
    def writable(self) -> frozenset[str]:
        return frozenset(self.writable_names or ())

    @functools.cached_property
    def field_info(self) -> Mapping[str, FieldInfo]:
        texts = _descriptions(self.descriptions_key)
        info: dict[str, FieldInfo] = {}
        for position, (name, code) in enumerate(zip(self.names, self.codes, strict=True)):
            if code == NAVIGATION_CODE:
                continue
            text = texts[position] if position < len(texts) else ""
            info[name] = FieldInfo(name, EDM_TYPES[code], text or None)
        return MappingProxyType(info)

    @property
    def navigation_fields(self) -> tuple[str, ...]:
        return tuple(name for name, code in zip(self.names, self.codes, strict=True) if code == NAVIGATION_CODE)


def endpoint_from(
    record: Mapping[str, Any], fallback: Mapping[str, Any] | None, doc_prefix: str, kind: str
) -> Endpoint:
    """Build an endpoint from its catalog.json record (``fallback``: the standard record sharing fields)."""
    source = record if "f" in record or fallback is None else fallback
    names: list[str] = source.get("f", [])
    codes: str = source.get("t", "")
    doc = str(record["d"])
    writable = record.get("w")
    mandatory = record.get("mf")
    return Endpoint(
        path=record["p"],
        methods=tuple(record["m"]),
        doc_url=doc if "://" in doc else doc_prefix + doc,
        model=record.get("mn", ""),
        names=names,
        codes=codes,
        key=record.get("k", names[0] if names else None),
        beta=bool(record.get("beta")),
        division_in_path=not record.get("nodiv"),
        select_required=kind != "std" or bool(record.get("sel")),
        writable_names=names if writable == 1 else writable,
        mandatory_filter=None if mandatory is None else tuple(mandatory),
        deprecated=bool(record.get("dep")),
        replacement=record.get("rep"),
        deprecation_note=record.get("note"),
        descriptions_key=str(source["p"]).lower(),
    )


@functools.cache
def _all_descriptions() -> tuple[list[str], dict[str, list[int]]]:
    data = json.loads(DESCRIPTIONS_FILE.read_text(encoding="utf-8"))
    return data["texts"], data["fields"]


def _descriptions(key: str) -> list[str]:
    """Exact's field descriptions for an endpoint, in field order (loaded on first use)."""
    texts, by_path = _all_descriptions()
    return [texts[index] for index in by_path.get(key, [])]
