"""The entities the fake serves: their paths, keys and methods, and the fields each variant serves."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from airflow_provider_exactonline.catalog import all_entities, find_entity, resolve_path

MAX_ROWS = 1_000_000

#: Exact's ``sync/Deleted`` EntityType codes (picqer SyncDeleted.php); SalesInvoiceLines has no
#: sync endpoint and no code, so deleting a line leaves no ``sync/Deleted`` row.
DELETED_ENTITY_TYPES = {
    "TransactionLines": 1,
    "Accounts": 2,
    "Contacts": 5,
    "GLAccounts": 7,
    "Items": 9,
    "SalesInvoices": 13,
}


@dataclass(frozen=True)
class EntityDef:
    name: str
    service: str
    path: str
    bulk_path: str | None
    sync_path: str | None
    key: str
    methods: tuple[str, ...]
    default_rows: int
    slot: int
    model: str
    required: tuple[str, ...]
    fallback_fields: tuple[str, ...]
    numbers: frozenset[str] = frozenset()
    booleans: frozenset[str] = frozenset()
    navigation: tuple[str, ...] = ()
    #: The catalog's name (``crm/Accounts``); generated rows of catalog-only entities are generic.
    qualified_name: str = ""
    generic: bool = False
    deleted_code: int | None = None
    int_key: bool = False

    @property
    def deleted_type(self) -> int | None:
        return self.deleted_code if self.generic else DELETED_ENTITY_TYPES.get(self.name)

    @property
    def label(self) -> str:
        """The catalog's qualified name (what write events carry)."""
        return self.qualified_name or self.path


_AUDIT = ("Created", "Creator", "CreatorFullName", "Division", "Modified", "Modifier", "ModifierFullName")
_CRUD = ("GET", "POST", "PUT", "DELETE")

ENTITIES: tuple[EntityDef, ...] = (
    EntityDef(
        "Accounts",
        "crm",
        "crm/Accounts",
        "bulk/CRM/Accounts",
        "sync/CRM/Accounts",
        "ID",
        _CRUD,
        130,
        0,
        "CRM.Account",
        ("Name",),
        (
            "ID",
            "AddressLine1",
            "Blocked",
            "City",
            "Code",
            "Country",
            "CountryName",
            "Email",
            "IsSales",
            "IsSupplier",
            "Language",
            "Name",
            "Phone",
            "Postcode",
            "SalesCurrency",
            "SearchCode",
            "Status",
            "VATNumber",
            "Website",
            "BankAccounts",
            *_AUDIT,
        ),
        numbers=frozenset({"Division"}),
        booleans=frozenset({"Blocked", "IsSales", "IsSupplier"}),
        navigation=("BankAccounts",),
    ),
    EntityDef(
        "Contacts",
        "crm",
        "crm/Contacts",
        "bulk/CRM/Contacts",
        "sync/CRM/Contacts",
        "ID",
        _CRUD,
        150,
        1,
        "CRM.Contact",
        ("Account",),
        (
            "ID",
            "Account",
            "AccountName",
            "BusinessEmail",
            "BusinessPhone",
            "City",
            "Country",
            "Email",
            "FirstName",
            "FullName",
            "IsMainContact",
            "JobTitleDescription",
            "LastName",
            "Phone",
            *_AUDIT,
        ),
        numbers=frozenset({"Division"}),
        booleans=frozenset({"IsMainContact"}),
    ),
    EntityDef(
        "SalesInvoices",
        "salesinvoice",
        "salesinvoice/SalesInvoices",
        "bulk/SalesInvoice/SalesInvoices",
        "sync/SalesInvoice/SalesInvoices",
        "InvoiceID",
        _CRUD,
        60,
        2,
        "SalesInvoice.SalesInvoice",
        ("OrderedBy",),
        (
            "InvoiceID",
            "AmountDC",
            "AmountFC",
            "Currency",
            "Description",
            "DueDate",
            "InvoiceDate",
            "InvoiceNumber",
            "InvoiceTo",
            "InvoiceToName",
            "Journal",
            "OrderedBy",
            "OrderedByName",
            "Status",
            "StatusDescription",
            "Type",
            "VATAmountDC",
            "VATAmountFC",
            "YourRef",
            "SalesInvoiceLines",
            *_AUDIT,
        ),
        numbers=frozenset(
            {"AmountDC", "AmountFC", "InvoiceNumber", "Status", "Type", "VATAmountDC", "VATAmountFC", "Division"}
        ),
        navigation=("SalesInvoiceLines", "SalesInvoiceOrderChargeLines"),
    ),
    EntityDef(
        "SalesInvoiceLines",
        "salesinvoice",
        "salesinvoice/SalesInvoiceLines",
        "bulk/SalesInvoice/SalesInvoiceLines",
        None,
        "ID",
        _CRUD,
        150,
        3,
        "SalesInvoice.SalesInvoiceLine",
        ("InvoiceID",),
        (
            "ID",
            "AmountDC",
            "AmountFC",
            "Description",
            "GLAccount",
            "InvoiceID",
            "Item",
            "ItemCode",
            "ItemDescription",
            "LineNumber",
            "Quantity",
            "UnitPrice",
            "VATAmountDC",
            "VATCode",
            *_AUDIT,
        ),
        numbers=frozenset({"AmountDC", "AmountFC", "LineNumber", "Quantity", "UnitPrice", "VATAmountDC", "Division"}),
    ),
    EntityDef(
        "GLAccounts",
        "financial",
        "financial/GLAccounts",
        "bulk/Financial/GLAccounts",
        "sync/Financial/GLAccounts",
        "ID",
        _CRUD,
        60,
        4,
        "Financial.GLAccount",
        ("Code", "Description"),
        ("ID", "BalanceSide", "BalanceType", "Code", "Description", "IsBlocked", "Type", "TypeDescription", *_AUDIT),
        numbers=frozenset({"Type", "Division"}),
        booleans=frozenset({"IsBlocked"}),
    ),
    EntityDef(
        "TransactionLines",
        "financialtransaction",
        "financialtransaction/TransactionLines",
        "bulk/Financial/TransactionLines",
        "sync/Financial/TransactionLines",
        "ID",
        ("GET",),
        150,
        5,
        "FinancialTransaction.TransactionLine",
        (),
        (
            "ID",
            "Account",
            "AccountCode",
            "AccountName",
            "AmountDC",
            "AmountFC",
            "Currency",
            "Date",
            "Description",
            "EntryNumber",
            "FinancialPeriod",
            "FinancialYear",
            "GLAccount",
            "GLAccountCode",
            "JournalCode",
            "Type",
            *_AUDIT,
        ),
        numbers=frozenset(
            {"AmountDC", "AmountFC", "EntryNumber", "FinancialPeriod", "FinancialYear", "Type", "Division"}
        ),
    ),
    EntityDef(
        "Items",
        "logistics",
        "logistics/Items",
        "bulk/Logistics/Items",
        "sync/Logistics/Items",
        "ID",
        _CRUD,
        80,
        6,
        "Logistics.Item",
        ("Code", "Description"),
        (
            "ID",
            "Code",
            "CostPriceStandard",
            "Description",
            "IsSalesItem",
            "IsStockItem",
            "ItemGroupCode",
            "SalesVatCode",
            "Unit",
            "UnitDescription",
            *_AUDIT,
        ),
        numbers=frozenset({"CostPriceStandard", "Division"}),
        booleans=frozenset({"IsSalesItem", "IsStockItem"}),
    ),
)

_BY_NAME = {e.name.lower(): e for e in ENTITIES}
_BY_QUALIFIED = {e.path.lower(): e for e in ENTITIES}
_BY_PATH: dict[str, tuple[EntityDef, str]] = {}
for _e in ENTITIES:
    _BY_PATH[_e.path.lower()] = (_e, "standard")
    if _e.bulk_path:
        _BY_PATH[_e.bulk_path.lower()] = (_e, "bulk")
    if _e.sync_path:
        _BY_PATH[_e.sync_path.lower()] = (_e, "sync")
#: Generated rows of an entity nobody asked a count for: few, so serving every endpoint stays cheap.
DEFAULT_ROWS = 5
_WRITE_METHODS = ("POST", "PUT", "DELETE")
#: Served by ``resources.py`` itself, not as catalog entities.
SPECIAL_PATHS = frozenset({"sync/deleted", "read/sync/sync/synctimestamp", "current/me", "system/divisions"})


def _key_field(spec: Any) -> str:
    for variant in ("standard", "bulk"):
        if spec.has_variant(variant) and spec.key_for(variant):
            return str(spec.key_for(variant))
    fields = list(spec.fields_for(spec.primary_variant))
    return "ID" if "ID" in fields else (fields[0] if fields else "ID")


@functools.cache
def _from_spec(spec: Any) -> EntityDef:
    """An ``EntityDef`` for a catalog entity; the seven built-in ones keep their realistic rows."""
    builtin = _BY_QUALIFIED.get(spec.qualified_name.lower())
    if builtin is not None:
        return builtin
    key = _key_field(spec)
    methods: tuple[str, ...] = ("GET",)
    if spec.has_variant("standard"):
        methods = tuple(spec.methods_for("standard"))
        if getattr(spec, "accepts_writes", True) is False:
            methods = tuple(m for m in methods if m not in _WRITE_METHODS)
    standard = spec.fields_for("standard") if spec.has_variant("standard") else {}
    edm = edm_type_of(spec, spec.primary_variant, key)
    return EntityDef(
        spec.qualified_name,
        spec.service,
        spec.path or spec.variant_path(spec.primary_variant),
        spec.bulk_path,
        spec.sync_path,
        key,
        methods,
        DEFAULT_ROWS,
        7,
        f"{spec.service}.{spec.name}".strip("."),
        (),
        (),
        navigation=tuple(n for n, kind in standard.items() if kind == "unknown"),
        qualified_name=spec.qualified_name,
        generic=True,
        deleted_code=spec.deleted_entity_type,
        int_key=edm in ("Edm.Int16", "Edm.Int32", "Edm.Int64"),
    )


def spec_of(entity: EntityDef) -> Any | None:
    """The catalog's ``EntitySpec`` of ``entity`` (None when the catalog lacks it)."""
    return resolve_path(entity.path)[0]


def catalog_entities() -> list[EntityDef]:
    """Every entity the fake serves: one per catalog entity (the special endpoints excepted)."""
    return [_from_spec(s) for s in all_entities() if s.qualified_name.lower() not in SPECIAL_PATHS]


def entity_for_path(path: str) -> tuple[EntityDef, str] | None:
    """``"sync/crm/accounts"`` -> ``(Accounts, "sync")`` (case-insensitive); any catalog endpoint path."""
    text = path.strip("/").lower()
    found = _BY_PATH.get(text)
    if found is not None or text in SPECIAL_PATHS:
        return found
    spec, variant = resolve_path(text)
    if spec is None or spec.variant_path(variant).lower() != text:
        return None
    return _from_spec(spec), variant


def resolve_entity(name: str) -> EntityDef:
    """``"Accounts"``, ``"crm/Accounts"``, ``"bulk/CRM/Accounts"`` or any catalog name -> the entity.

    Raises ``KeyError`` for a name the catalog lacks."""
    found = entity_for_path(name)
    if found:
        return found[0]
    spec = find_entity(name)
    if spec is not None and spec.qualified_name.lower() not in SPECIAL_PATHS:
        return _from_spec(spec)
    entity = _BY_NAME.get(name.strip("/").split("/")[-1].lower())
    if entity is None:
        raise KeyError(
            f"the fake serves no entity {name!r}; use a catalog name such as crm/Accounts (docs/endpoints.md)"
        )
    return entity


_NUMBER_EDM = {"number": "Edm.Int32", "boolean": "Edm.Boolean", "string": "Edm.String"}


def edm_type_of(spec: Any, variant: str, name: str) -> str | None:
    """The Edm type of one field: the catalog's ``field_info`` when it has one, else guessed from its kind."""
    return edm_types(spec, variant).get(name)


@functools.cache
def edm_types(spec: Any, variant: str) -> dict[str, str | None]:
    """``{field: "Edm.Guid" | "Edm.Int32" | ... | None}`` of a catalog endpoint (None: navigation/unknown)."""
    info = getattr(spec, "field_info", None)
    if info is not None:
        return {n: getattr(f, "edm_type", None) for n, f in info(variant).items()}
    out: dict[str, str | None] = {}
    for name, kind in spec.fields_for(variant).items():
        edm = _NUMBER_EDM.get(kind)
        if kind == "string" and (name in ("ID", "Creator", "Modifier") or name.endswith("ID")):
            edm = "Edm.Guid"
        elif kind == "string" and (name in ("Created", "Modified") or name.endswith("Date")):
            edm = "Edm.DateTime"
        elif name == "Timestamp":
            edm = "Edm.Int64"
        out[name] = edm
    return out


# --------------------------------------------------------------------------------------------------
# Field sets: from the endpoint catalog's data file when present (read as JSON, so the fake never
# imports Airflow), else the small built-in lists above.


def _catalog_types(path: str) -> dict[str, str | None]:
    """``{field: type}`` the endpoint catalog lists for ``path`` (``{}`` when it lists none).

    The catalog does not import Airflow, so the fake stays fast to start.
    """
    spec, variant = resolve_path(path)
    if spec is None:
        return {}
    return {name: (None if kind == "unknown" else kind) for name, kind in spec.fields_for(variant).items()}


@functools.cache
def field_types(entity: EntityDef, variant: str) -> dict[str, str | None]:
    """``{field: "string"|"number"|"boolean"|None}`` served on ``variant`` (None: navigation/unknown).

    Cached: do not mutate the result.
    """
    path = {"standard": entity.path, "bulk": entity.bulk_path, "sync": entity.sync_path}[variant] or entity.path
    found = _catalog_types(path)
    if entity.generic or (found and entity.key in found) or (found and variant == "sync" and "ID" in found):
        types = dict(found)
    else:
        types = {}
        for name in entity.fallback_fields:
            if name in entity.navigation:
                types[name] = None
            elif name in entity.numbers:
                types[name] = "number"
            elif name in entity.booleans:
                types[name] = "boolean"
            else:
                types[name] = "string"
        if variant == "sync":
            types = {"Timestamp": "number", **types}
            if entity.key != "ID":
                types["ID"] = "string"
    if variant != "standard":
        types = {k: v for k, v in types.items() if k not in entity.navigation}
    return types


DELETED_FIELDS: dict[str, str | None] = {
    "Timestamp": "number",
    "DeletedBy": "string",
    "DeletedDate": "string",
    "Division": "number",
    "EntityKey": "string",
    "EntityType": "number",
    "ID": "string",
}


def default_value(kind: str | None) -> Any:
    if kind == "number":
        return 0
    if kind == "boolean":
        return False
    return None
