"""Deterministic generated rows: row ``i`` of an entity in a division is a pure function of
``(seed, division, entity, i)``. GUIDs of generated rows carry their row index (XOR-masked in the
last 12 hex digits), so a ``$skiptoken`` or a key lookup seeks directly.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from airflow_provider_exactonline.testing.entities import MAX_ROWS, EntityDef
from airflow_provider_exactonline.testing.typed_values import fill_generic

# The row index is stored in a GUID's last 48 bits as (i * _MIX mod 2**48) XOR mask: a bijection,
# so neighbouring rows do not share GUID tails and the index can be recovered exactly.
_M48 = (1 << 48) - 1
_MIX = 0x5DEECE66D
_MIX_INV = pow(_MIX, -1, 1 << 48)


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
CREATED_BASE_MS = calendar.timegm((2021, 1, 4, 9, 0, 0)) * 1000
USER_NAME = "Fake User"


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
        created = CREATED_BASE_MS + i * 60_000 + (d[20] * 200)
        modified = created + (n % (20 * 86_400)) * 1000
        row: dict[str, Any] = {
            entity.key: key,
            "Timestamp": ts,
            "Division": division,
            "Created": date_value(created),
            "Modified": date_value(modified),
            "Creator": self.user_id,
            "CreatorFullName": USER_NAME,
            "Modifier": self.user_id,
            "ModifierFullName": USER_NAME,
        }
        if entity.int_key:
            row[entity.key] = i + 1
        if entity.generic:
            fill_generic(row, entity, i, n)
        else:
            getattr(self, "_" + entity.name.lower())(row, division, i, n, d, counts)
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
        invoice_date = CREATED_BASE_MS + i * 3_600_000
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
        date = CREATED_BASE_MS + i * 1_800_000
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
