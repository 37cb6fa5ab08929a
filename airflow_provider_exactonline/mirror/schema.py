"""Table definitions from the catalog: one table per entity, all divisions, key (Division, entity key)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_exactonline.operators.writers import INTEGER_FIELDS

#: The catalog's coarse types -> Edm types, for catalogs without per-field Edm information.
_COARSE_TO_EDM = {"number": "Edm.Double", "boolean": "Edm.Boolean", "string": "Edm.String"}


@dataclass(frozen=True)
class Column:
    name: str
    edm_type: str
    description: str | None = None


@dataclass(frozen=True)
class Table:
    name: str
    key: str  # the entity's key field; the primary key is (Division, key)
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def table_name(label: str, prefix: str = "") -> str:
    """``crm/Accounts`` -> ``crm_accounts`` (with an optional prefix such as ``exact_``)."""
    return prefix + label.strip("/").replace("/", "_").lower()


def _variant(spec: Any) -> str:
    for variant in ("sync", "bulk", "standard"):
        if spec.has_variant(variant):
            return variant
    return str(spec.primary_variant)


def entity_key(spec: Any) -> str:
    """The entity's own key (``ID``), never the sync endpoint's ``Timestamp``."""
    for variant in ("standard", "bulk", "sync"):
        if spec.has_variant(variant):
            key = spec.key_for(variant)
            if key and key != "Timestamp":
                return str(key)
    return "ID"


def edm_columns(spec: Any, variant: str) -> list[Column]:
    """Columns with Edm types: the catalog's ``field_info`` when it has one, else from the coarse types."""
    field_info = getattr(spec, "field_info", None)
    if callable(field_info):
        info: Mapping[str, Any] = field_info(variant)
        return [
            Column(n, str(getattr(f, "edm_type", None) or "Edm.String"), getattr(f, "description", None))
            for n, f in info.items()
        ]
    columns = []
    for name, kind in spec.fields_for(variant).items():
        integer = name in INTEGER_FIELDS and kind == "number"
        edm = "Edm.Int64" if integer else _COARSE_TO_EDM.get(str(kind), "Edm.String")
        columns.append(Column(name, edm))
    return columns


def table_for(spec: Any, prefix: str = "", variant: str | None = None) -> Table:
    """The table an entity is mirrored into."""
    from airflow_provider_exactonline.operators.export import entity_label

    chosen = variant or _variant(spec)
    columns = edm_columns(spec, chosen)
    names = {c.name for c in columns}
    if "Division" not in names:
        columns.insert(0, Column("Division", "Edm.Int32", "Exact Online division number"))
    key = entity_key(spec)
    if key not in names:
        columns.insert(1, Column(key, "Edm.Guid", "Key"))
    return Table(table_name(entity_label(spec, spec.qualified_name), prefix), key, tuple(columns))
