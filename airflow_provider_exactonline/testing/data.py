"""Entities and deterministic, lazily generated data for the fake Exact Online server.

Row ``i`` of an entity in a division is computed on demand from ``(seed, division, entity, i)``;
only mutations (created, updated, deleted rows) are kept in memory, so a division with a
million rows costs nothing until it is read. GUIDs of generated rows carry their row index
(XOR-masked in the last 12 hex digits), so a ``$skiptoken`` or a key lookup seeks directly.
Generated row ``i`` has ``Timestamp = base + i``; every write takes the next value of a
division-wide counter that starts above all generated timestamps.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import functools
import hashlib
import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_exactonline.catalog import resolve_path

MAX_ROWS = 1_000_000
WRITE_TIMESTAMP_START = 1_000_000_000
_TS_SLOT = 10_000_000
_TS_START = 1_000_000
# The row index is stored in a GUID's last 48 bits as (i * _MIX mod 2**48) XOR mask: a bijection,
# so neighbouring rows do not share GUID tails and the index can be recovered exactly.
_M48 = (1 << 48) - 1
_MIX = 0x5DEECE66D
_MIX_INV = pow(_MIX, -1, 1 << 48)

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

    @property
    def deleted_type(self) -> int | None:
        return DELETED_ENTITY_TYPES.get(self.name)


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
_BY_PATH: dict[str, tuple[EntityDef, str]] = {}
for _e in ENTITIES:
    _BY_PATH[_e.path.lower()] = (_e, "standard")
    if _e.bulk_path:
        _BY_PATH[_e.bulk_path.lower()] = (_e, "bulk")
    if _e.sync_path:
        _BY_PATH[_e.sync_path.lower()] = (_e, "sync")


def entity_for_path(path: str) -> tuple[EntityDef, str] | None:
    """``"sync/crm/accounts"`` -> ``(Accounts, "sync")`` (case-insensitive)."""
    return _BY_PATH.get(path.strip("/").lower())


def resolve_entity(name: str) -> EntityDef:
    """``"Accounts"``, ``"crm/Accounts"``, ``"bulk/CRM/Accounts"`` -> the entity; ``KeyError`` otherwise."""
    found = entity_for_path(name)
    if found:
        return found[0]
    entity = _BY_NAME.get(name.strip("/").split("/")[-1].lower())
    if entity is None:
        raise KeyError(f"the fake serves no entity {name!r}; it serves {', '.join(e.name for e in ENTITIES)}")
    return entity


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
    if (found and entity.key in found) or (found and variant == "sync" and "ID" in found):
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


# --------------------------------------------------------------------------------------------------
# Deterministic values


_ADJ = (
    "Blue",
    "Noord",
    "Royal",
    "Green",
    "Dutch",
    "Quick",
    "Solid",
    "Bright",
    "Delta",
    "Polder",
    "Golden",
    "Frisian",
    "Central",
    "Nordic",
    "Zuid",
    "Oak",
)
_NOUN = (
    "Bakery",
    "Logistics",
    "Tulip",
    "Bikes",
    "Consulting",
    "Windmill",
    "Dairy",
    "Software",
    "Shipping",
    "Garden",
    "Printing",
    "Coffee",
    "Metals",
    "Textiles",
    "Foods",
    "Energy",
)
_SUFFIX = ("B.V.", "N.V.", "BV", "VOF", "Holding B.V.", "GmbH", "BVBA", "& Zn.")
_CITY = (
    ("Amsterdam", "NL", "Netherlands"),
    ("Rotterdam", "NL", "Netherlands"),
    ("Utrecht", "NL", "Netherlands"),
    ("Eindhoven", "NL", "Netherlands"),
    ("Groningen", "NL", "Netherlands"),
    ("Delft", "NL", "Netherlands"),
    ("Antwerpen", "BE", "Belgium"),
    ("Gent", "BE", "Belgium"),
    ("Brussel", "BE", "Belgium"),
    ("Düsseldorf", "DE", "Germany"),
    ("Zwolle", "NL", "Netherlands"),
    ("Leiden", "NL", "Netherlands"),
)
_FIRST = (
    "Jan",
    "Sanne",
    "Pieter",
    "Emma",
    "Daan",
    "Lotte",
    "Bram",
    "Fleur",
    "Joost",
    "Anouk",
    "Ruben",
    "Noor",
    "Sem",
    "Julia",
    "Thijs",
    "Eva",
)
_LAST = (
    "de Vries",
    "Jansen",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "de Boer",
    "Mulder",
    "de Groot",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "Dekker",
    "Brouwer",
    "O'Neill",
)
_STREET = ("Kerkstraat", "Dorpsstraat", "Molenweg", "Stationsplein", "Havenkade", "Prinsengracht")
_JOB = ("Director", "Controller", "Purchaser", "Sales manager", "Bookkeeper", "Owner")
_ITEMS = (
    "Stroopwafel box",
    "Bike bell",
    "Wooden clog",
    "Gouda 1kg",
    "Tulip bulbs",
    "Delft plate",
    "Coffee beans",
    "Rain jacket",
    "Windmill model",
    "Herring tin",
)
_GL = (
    ("1000", "Kas", "B", "D"),
    ("1100", "Bank", "B", "D"),
    ("1300", "Debiteuren", "B", "D"),
    ("1600", "Crediteuren", "B", "C"),
    ("1800", "Te betalen BTW", "B", "C"),
    ("4000", "Personeelskosten", "W", "D"),
    ("4300", "Huisvestingskosten", "W", "D"),
    ("8000", "Omzet hoog", "W", "C"),
    ("8100", "Omzet laag", "W", "C"),
)

#: 2021-01-04 09:00 as Exact encodes wall-clock times (ms, as if UTC).
_CREATED_BASE_MS = calendar.timegm((2021, 1, 4, 9, 0, 0)) * 1000
_USER_NAME = "Fake User"


def date_value(ms: int) -> str:
    return f"/Date({ms})/"


def wall_ms(epoch_seconds: float) -> int:
    """A real instant -> Exact's ``/Date(ms)/`` milliseconds (Europe/Amsterdam wall time encoded as UTC)."""
    try:
        from zoneinfo import ZoneInfo

        local = dt.datetime.fromtimestamp(epoch_seconds, ZoneInfo("Europe/Amsterdam"))
        offset = local.utcoffset() or dt.timedelta(0)
    except Exception:  # pragma: no cover - no tz database
        offset = dt.timedelta(0)
    return int((epoch_seconds + offset.total_seconds()) * 1000)


class Generator:
    """Computes generated rows; pure functions of the seed and the arguments."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._masks: dict[tuple[int, str], int] = {}
        self.user_id = str(
            uuid.UUID(bytes=hashlib.blake2b(f"{seed}:user".encode(), digest_size=16).digest(), version=4)
        )

    def _mask(self, division: int, entity: str) -> int:
        key = (division, entity)
        mask = self._masks.get(key)
        if mask is None:
            digest = hashlib.blake2b(f"{self.seed}:{division}:{entity}:mask".encode(), digest_size=6).digest()
            mask = self._masks[key] = int.from_bytes(digest, "big")
        return mask

    def digest(self, division: int, entity: str, i: int) -> bytes:
        return hashlib.blake2b(f"{self.seed}:{division}:{entity}:{i}".encode(), digest_size=24).digest()

    def guid(self, division: int, entity: str, i: int, digest: bytes | None = None) -> str:
        h = (digest or self.digest(division, entity, i)).hex()
        low = ((i * _MIX) & _M48) ^ self._mask(division, entity)
        return f"{h[0:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{low:012x}"

    def index_of(self, division: int, entity: str, guid: str) -> int | None:
        """The row index a generated GUID encodes, or None when it is not one of ours."""
        text = guid.strip().lower()
        if len(text) != 36:
            return None
        try:
            i = ((int(text[24:], 16) ^ self._mask(division, entity)) * _MIX_INV) & _M48
        except ValueError:
            return None
        if i >= MAX_ROWS or self.guid(division, entity, i) != text:
            return None
        return i

    def row(self, entity: EntityDef, division: int, i: int, counts: Mapping[str, int], ts: int) -> dict[str, Any]:
        """The important fields of generated row ``i`` (other fields take type defaults)."""
        d = self.digest(division, entity.name, i)
        n = int.from_bytes(d[12:20], "big")
        key = self.guid(division, entity.name, i, d)
        created = _CREATED_BASE_MS + i * 60_000 + (d[20] * 200)
        modified = created + (n % (20 * 86_400)) * 1000
        row: dict[str, Any] = {
            entity.key: key,
            "Timestamp": ts,
            "Division": division,
            "Created": date_value(created),
            "Modified": date_value(modified),
            "Creator": self.user_id,
            "CreatorFullName": _USER_NAME,
            "Modifier": self.user_id,
            "ModifierFullName": _USER_NAME,
        }
        make = getattr(self, "_" + entity.name.lower())
        make(row, division, i, n, d, counts)
        return row

    def _ref(self, division: int, entity: str, i: int, counts: Mapping[str, int]) -> str | None:
        total = counts.get(entity, 0)
        if total <= 0:
            return None
        return self.guid(division, entity, i % total)

    def account_name(self, division: int, j: int) -> str:
        n = int.from_bytes(self.digest(division, "Accounts", j)[12:20], "big")
        return f"{_ADJ[n % 16]} {_NOUN[(n >> 4) % 16]} {_SUFFIX[(n >> 8) % 8]}"

    def _accounts(self, row: dict[str, Any], division: int, i: int, n: int, d: bytes, counts: Any) -> None:
        name = f"{_ADJ[n % 16]} {_NOUN[(n >> 4) % 16]} {_SUFFIX[(n >> 8) % 8]}"
        city, country, country_name = _CITY[(n >> 12) % len(_CITY)]
        slug = name.split()[0].lower() + name.split()[1].lower()
        status = "C" if n % 5 else "S"
        row.update(
            Code=f"{i + 1:>18}",  # Exact pads account codes to 18 characters with leading spaces
            Name=name,
            SearchCode=name[:10].upper(),
            City=city,
            Country=country,
            CountryName=country_name,
            Postcode=f"{1000 + (n >> 16) % 8999} {chr(65 + (n >> 30) % 26)}{chr(65 + (n >> 35) % 26)}",
            AddressLine1=f"{_STREET[(n >> 20) % 6]} {1 + (n >> 24) % 200}",
            Email=f"info{i + 1}@{slug}.example",
            Phone=f"+31 20 {(n >> 28) % 10_000_000:07d}",
            Website=f"www.{slug}.example",
            VATNumber=f"{country}{(n >> 8) % 1_000_000_000:09d}B01",
            Status=status,
            IsSales=status == "C",
            IsSupplier=status == "S",
            Blocked=False,
            Language="NL",
            SalesCurrency="EUR",
            Type="A",
        )

    def _contacts(self, row: dict[str, Any], division: int, i: int, n: int, d: bytes, counts: Any) -> None:
        first, last = _FIRST[n % 16], _LAST[(n >> 4) % 16]
        total = counts.get("Accounts", 0)
        account_index = i % total if total else None
        city, country, _ = _CITY[(n >> 12) % len(_CITY)]
        email = f"{first.lower()}.{last.replace(' ', '').replace(chr(39), '').lower()}{i + 1}@example.com"
        row.update(
            Account=None if account_index is None else self.guid(division, "Accounts", account_index),
            AccountName=None if account_index is None else self.account_name(division, account_index),
            FirstName=first,
            LastName=last,
            FullName=f"{first} {last}",
            Email=email,
            BusinessEmail=email,
            Phone=f"+31 6 {(n >> 20) % 100_000_000:08d}",
            BusinessPhone=f"+31 20 {(n >> 28) % 10_000_000:07d}",
            City=city,
            Country=country,
            IsMainContact=total > 0 and i < total,
            JobTitleDescription=_JOB[(n >> 8) % 6],
        )

    def _salesinvoices(self, row: dict[str, Any], division: int, i: int, n: int, d: bytes, counts: Any) -> None:
        total = counts.get("Accounts", 0)
        account = self._ref(division, "Accounts", (n >> 4), counts)
        account_name = self.account_name(division, (n >> 4) % total) if total else None
        amount = round(50 + (n % 500_000) / 100, 2)
        vat = round(amount * 0.21, 2)
        invoice_date = _CREATED_BASE_MS + i * 3_600_000
        invoice_date -= invoice_date % 86_400_000
        row.update(
            ID=row["InvoiceID"],  # the sync endpoint's key
            InvoiceNumber=21_000_001 + i,
            InvoiceTo=account,
            InvoiceToName=account_name,
            OrderedBy=account,
            OrderedByName=account_name,
            InvoiceDate=date_value(invoice_date),
            DueDate=date_value(invoice_date + 30 * 86_400_000),
            AmountDC=round(amount + vat, 2),
            AmountFC=round(amount + vat, 2),
            VATAmountDC=vat,
            VATAmountFC=vat,
            Currency="EUR",
            Description=f"Invoice {21_000_001 + i}",
            Journal="70",
            Status=50,
            StatusDescription="Processed",
            Type=8020,
            YourRef=f"PO-{(n >> 20) % 100000:05d}",
        )

    def _salesinvoicelines(self, row: dict[str, Any], division: int, i: int, n: int, d: bytes, counts: Any) -> None:
        invoices = counts.get("SalesInvoices", 0)
        items = counts.get("Items", 0)
        item_index = (n >> 8) % items if items else None
        quantity = float(1 + n % 20)
        price = round(1 + (n >> 12) % 20_000 / 100, 2)
        amount = round(quantity * price, 2)
        row.update(
            InvoiceID=self._ref(division, "SalesInvoices", i, counts),
            LineNumber=(i // invoices + 1) if invoices else 1,
            Item=None if item_index is None else self.guid(division, "Items", item_index),
            ItemCode=None if item_index is None else f"ITEM-{item_index + 1:05d}",
            ItemDescription=None if item_index is None else _ITEMS[item_index % len(_ITEMS)],
            Description=_ITEMS[(n >> 8) % len(_ITEMS)],
            Quantity=quantity,
            UnitPrice=price,
            AmountDC=amount,
            AmountFC=amount,
            VATAmountDC=round(amount * 0.21, 2),
            VATCode="2",
            GLAccount=self._ref(division, "GLAccounts", 7, counts),
        )

    def _glaccounts(self, row: dict[str, Any], division: int, i: int, n: int, d: bytes, counts: Any) -> None:
        code, description, balance_type, side = _GL[i % len(_GL)]
        row.update(
            Code=f"{int(code) + i // len(_GL)}",
            Description=description if i < len(_GL) else f"{description} {i // len(_GL) + 1}",
            BalanceType=balance_type,
            BalanceSide=side,
            IsBlocked=False,
            Type=12 if balance_type == "B" else 110,
            TypeDescription="Balance sheet" if balance_type == "B" else "Profit & loss",
        )

    def _transactionlines(self, row: dict[str, Any], division: int, i: int, n: int, d: bytes, counts: Any) -> None:
        total = counts.get("Accounts", 0)
        gl_total = counts.get("GLAccounts", 0)
        amount = round(((n % 2_000_000) - 1_000_000) / 100, 2)
        date = _CREATED_BASE_MS + i * 1_800_000
        date -= date % 86_400_000
        year = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=date)
        gl_index = (n >> 8) % gl_total if gl_total else None
        row.update(
            Account=self._ref(division, "Accounts", n >> 4, counts),
            AccountCode=f"{(n >> 4) % total + 1:>18}" if total else None,
            AccountName=self.account_name(division, (n >> 4) % total) if total else None,
            AmountDC=amount,
            AmountFC=amount,
            Currency="EUR",
            Date=date_value(date),
            Description=f"Boeking {i + 1}",
            EntryNumber=22_000_001 + i // 2,
            FinancialYear=year.year,
            FinancialPeriod=year.month,
            GLAccount=None if gl_index is None else self.guid(division, "GLAccounts", gl_index),
            GLAccountCode=None if gl_index is None else str(int(_GL[gl_index % len(_GL)][0]) + gl_index // len(_GL)),
            JournalCode="70",
            Type=20,
        )

    def _items(self, row: dict[str, Any], division: int, i: int, n: int, d: bytes, counts: Any) -> None:
        row.update(
            Code=f"ITEM-{i + 1:05d}",
            Description=_ITEMS[i % len(_ITEMS)] if i < len(_ITEMS) else f"{_ITEMS[i % len(_ITEMS)]} {i + 1}",
            CostPriceStandard=round(1 + (n % 10_000) / 100, 2),
            IsSalesItem=True,
            IsStockItem=n % 3 != 0,
            ItemGroupCode="DEFAULT",
            SalesVatCode="2",
            Unit="pc",
            UnitDescription="Piece",
        )


# --------------------------------------------------------------------------------------------------
# Per-division state


@dataclass
class EntityStore:
    """Generated rows plus an overlay of mutations for one (division, entity)."""

    entity: EntityDef
    division: int
    count: int
    ts_base: int
    overlay: dict[int, dict[str, Any]] = field(default_factory=dict)  # position -> full row
    deleted: set[int] = field(default_factory=set)
    created: int = 0
    created_keys: dict[str, int] = field(default_factory=dict)
    sync_log: list[tuple[int, int]] = field(default_factory=list)  # (Timestamp, position), ascending

    @property
    def positions(self) -> int:
        return self.count + self.created

    def live_count(self) -> int:
        return self.positions - len(self.deleted)


class DivisionData:
    def __init__(self, division: int, name: str, rows: Mapping[str, int], generator: Generator) -> None:
        self.division = division
        self.name = name
        self.generator = generator
        self.counts = {e.name: int(rows.get(e.name, e.default_rows)) for e in ENTITIES}
        self.stores = {
            e.name: EntityStore(e, division, self.counts[e.name], _TS_START + e.slot * _TS_SLOT) for e in ENTITIES
        }
        self._next_ts = WRITE_TIMESTAMP_START
        self.deleted_log: list[dict[str, Any]] = []
        self.rng = random.Random(f"{generator.seed}:{division}:writes")

    def next_timestamp(self) -> int:
        self._next_ts += 1
        return self._next_ts

    def new_guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # -- reading ---------------------------------------------------------------------------------

    def generated(self, store: EntityStore, i: int) -> dict[str, Any]:
        return self.generator.row(store.entity, self.division, i, self.counts, store.ts_base + i)

    def row_at(self, store: EntityStore, pos: int) -> dict[str, Any] | None:
        if pos in store.deleted or pos < 0 or pos >= store.positions:
            return None
        row = store.overlay.get(pos)
        if row is not None:
            return row
        return self.generated(store, pos)

    def position_of(self, store: EntityStore, key: str) -> int | None:
        key = key.strip().strip("{}").lower()
        pos = store.created_keys.get(key)
        if pos is None:
            i = self.generator.index_of(self.division, store.entity.name, key)
            if i is None or i >= store.count:
                return None
            pos = i
        return None if pos in store.deleted else pos

    def iter_natural(self, store: EntityStore, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """Rows in creation order from position ``start``."""
        for pos in range(max(0, start), store.positions):
            if pos in store.deleted:
                continue
            row = store.overlay.get(pos)
            yield pos, (row if row is not None else self.generated(store, pos))

    def iter_sync(self, store: EntityStore, after: int) -> Iterator[dict[str, Any]]:
        """Rows with ``Timestamp > after`` in Timestamp order, seeking directly to the first one."""
        start = max(0, after - store.ts_base + 1)
        for i in range(start, store.count):
            if i in store.overlay or i in store.deleted:
                continue  # an updated row reappears later with its new Timestamp
            yield self.generated(store, i)
        index = bisect.bisect_right(store.sync_log, (after, 1 << 62))
        for ts, pos in store.sync_log[index:]:
            row = store.overlay.get(pos)
            if row is not None and pos not in store.deleted and row.get("Timestamp") == ts:
                yield row

    def iter_deleted(self, after: int) -> Iterator[dict[str, Any]]:
        index = bisect.bisect_right([r["Timestamp"] for r in self.deleted_log], after)
        yield from self.deleted_log[index:]

    # -- writing ---------------------------------------------------------------------------------

    def _stamp(self, row: dict[str, Any], now: float) -> int:
        ts = self.next_timestamp()
        row["Timestamp"] = ts
        row["Modified"] = date_value(wall_ms(now))
        row["Modifier"] = self.generator.user_id
        row["ModifierFullName"] = _USER_NAME
        return ts

    def full_row(self, store: EntityStore, row: dict[str, Any]) -> dict[str, Any]:
        full = {name: default_value(kind) for name, kind in field_types(store.entity, "standard").items()}
        for name, kind in field_types(store.entity, "sync").items():
            full.setdefault(name, default_value(kind))
        full.update(row)
        return full

    def create(self, store: EntityStore, data: Mapping[str, Any], now: float) -> dict[str, Any]:
        key = str(data.get(store.entity.key) or self.new_guid()).lower()
        if store.entity.name == "Accounts" and isinstance(data.get("Code"), str) and data["Code"].strip():
            data = {**data, "Code": f"{data['Code'].strip():>18}"}
        row = self.full_row(store, {k: v for k, v in data.items() if k != "Timestamp"})
        row[store.entity.key] = key
        if store.entity.name == "SalesInvoices":
            row["ID"] = key
            if row.get("InvoiceNumber") in (None, 0):
                row["InvoiceNumber"] = 21_000_001 + store.positions
        row["Division"] = self.division
        row["Created"] = date_value(wall_ms(now))
        row["Creator"] = self.generator.user_id
        row["CreatorFullName"] = _USER_NAME
        pos = store.positions
        store.created += 1
        store.created_keys[key] = pos
        store.overlay[pos] = row
        store.sync_log.append((self._stamp(row, now), pos))
        return row

    def update(self, store: EntityStore, pos: int, data: Mapping[str, Any], now: float) -> dict[str, Any]:
        current = self.row_at(store, pos)
        assert current is not None
        row = self.full_row(store, current)
        for name, value in data.items():
            if name in (store.entity.key, "ID", "Timestamp", "Division", "Created", "Creator"):
                continue
            if name == "Code" and store.entity.name == "Accounts" and isinstance(value, str):
                value = f"{value.strip():>18}"
            row[name] = value
        store.overlay[pos] = row
        store.sync_log.append((self._stamp(row, now), pos))
        return row

    def delete(self, store: EntityStore, pos: int, now: float) -> dict[str, Any] | None:
        row = self.row_at(store, pos)
        assert row is not None
        store.deleted.add(pos)
        store.overlay.pop(pos, None)
        code = store.entity.deleted_type
        if code is None:
            self.next_timestamp()
            return None
        entry = {
            "Timestamp": self.next_timestamp(),
            "DeletedBy": self.generator.user_id,
            "DeletedDate": date_value(wall_ms(now)),
            "Division": self.division,
            "EntityKey": row[store.entity.key],
            "EntityType": code,
            "ID": self.new_guid(),
        }
        self.deleted_log.append(entry)
        return entry


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
