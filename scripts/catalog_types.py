"""Derive each field's OData (Edm) type from the reference data, which gives PHP-ish types only.

The 2025-12 reference types fields as picqer's docblocks do: ``string``, ``int``, ``float``, ``bool``,
or a class/collection name (``SalesInvoiceLine[]``, ``DivisionClass``). Exact's own types are Edm types;
the rules below recover them (first match wins) and are documented in docs/endpoints.md:

``bool``
    ``Edm.Boolean``.
``float``
    ``Edm.Double``. Exact itself types amounts (``AmountDC``) as ``Edm.Double``; nothing in the data
    tells a decimal apart, so ``Edm.Decimal`` is never derived.
``int``
    ``Edm.Int64`` for ``Timestamp`` and ``…AsBigInt`` (sync row versions are 64-bit);
    ``Edm.Int16`` when the description enumerates codes (``1 = Quality, 2 = Advice``);
    else ``Edm.Int32``.
``string``
    ``Edm.Binary`` when the description speaks of bytes, binary or Base64 content;
    ``Edm.DateTime`` for ``Created``/``Modified``, names ending in ``Date``, or a description with the
    word "date"/"datetime" (not on ``…Description``/``…Name``/``…Code`` fields);
    ``Edm.Guid`` for the endpoint's own key when its name ends in ``ID``/``Id``, a description with
    "GUID", "Primary key" or the word "ID" (``User ID of creator``, ``ID of account``), a name ending in
    ``ID``/``Id``, or a name in :data:`GUID_REFERENCES` (fields that hold another entity's ID:
    ``Account``, ``Item``, ``Creator``…) — never on ``…Code``/``…Name``/``…Description``/``…Number``;
    else ``Edm.String``.
anything else
    a navigation property or collection (code ``n``): not a scalar, so no Edm type.

Fields only the older reference lists (its types: ``string``/``number``/``boolean``) go through the
same string rules; ``number`` becomes ``Edm.Int32`` for names ending in Number/Year/Period/Line/Division,
else ``Edm.Double``.
"""

from __future__ import annotations

import re

# One-letter codes stored in catalog.json; the package maps them back (catalog/endpoint.py).
EDM_CODES: dict[str, str] = {
    "Edm.Guid": "g",
    "Edm.String": "s",
    "Edm.Int16": "h",
    "Edm.Int32": "i",
    "Edm.Int64": "l",
    "Edm.Double": "d",
    "Edm.Decimal": "m",
    "Edm.Boolean": "b",
    "Edm.DateTime": "t",
    "Edm.Byte": "y",
    "Edm.Binary": "x",
}
NAVIGATION = "n"

# Fields named after the entity whose ID they hold (Exact types them Edm.Guid).
GUID_REFERENCES: frozenset[str] = frozenset(
    {
        "Account", "Accountant", "Activity", "Asset", "BankAccount", "Contact", "ContactPerson", "Creator",
        "Customer", "InvoiceAccount", "MainContact", "Parent", "Reseller",
        "DeliverTo", "DeliveryAccount", "DeliveryAddress", "Document", "Employee", "Employment", "Entry",
        "GLAccount", "Invoice", "InvoiceTo", "Item", "ItemGroup", "Modifier", "Opportunity", "OrderedBy",
        "Project", "PurchaseOrder", "Quotation", "SalesInvoice", "SalesOrder", "Subscription", "Supplier",
        "User", "Warehouse",
    }
)  # fmt: skip

_NOT_GUID_SUFFIXES = ("Code", "Name", "Description", "Number", "Url", "URL", "Text", "Email", "Remarks")
_ENUMERATION = re.compile(r"\b\d+\s*=\s*\S")
_DATE_WORD = re.compile(r"\bdate(?:time)?s?\b", re.IGNORECASE)
_BINARY_WORD = re.compile(r"\b(?:bytes|binary|binaries|base64)\b", re.IGNORECASE)
_GUID_WORD = re.compile(r"\bguids?\b|^primary key$", re.IGNORECASE)
_ID_WORD = re.compile(r"\b(?:ID|Id)\b")


def _string_type(name: str, description: str, key: str | None) -> str:
    describes_text = name.endswith(_NOT_GUID_SUFFIXES)
    if _BINARY_WORD.search(description) and not describes_text:
        return "Edm.Binary"
    if name in ("Created", "Modified") or name.endswith("Date"):
        return "Edm.DateTime"
    if _DATE_WORD.search(description) and not describes_text:
        return "Edm.DateTime"
    if describes_text:
        return "Edm.String"
    if name == key and name.lower().endswith("id"):
        return "Edm.Guid"
    if _GUID_WORD.search(description) or _ID_WORD.search(description):
        return "Edm.Guid"
    if name.endswith(("ID", "Id")) or name in GUID_REFERENCES:
        return "Edm.Guid"
    return "Edm.String"


def edm_type(name: str, php_type: str | None, description: str, key: str | None) -> str | None:
    """Edm type of a field from the 2025-12 reference (None: navigation property or collection)."""
    if php_type == "bool":
        return "Edm.Boolean"
    if php_type == "float":
        return "Edm.Double"
    if php_type == "int":
        if name == "Timestamp" or name.endswith("AsBigInt"):
            return "Edm.Int64"
        if _ENUMERATION.search(description):
            return "Edm.Int16"
        return "Edm.Int32"
    if php_type == "string":
        return _string_type(name, description, key)
    return None


def edm_type_from_old(name: str, old_type: str | None, key: str | None) -> str | None:
    """Edm type of a field only the older reference lists (types string/number/boolean/null)."""
    if old_type == "boolean":
        return "Edm.Boolean"
    if old_type == "number":
        if name.endswith(("Number", "Year", "Period", "Line", "Division")) or name == "Division":
            return "Edm.Int32"
        return "Edm.Double"
    if old_type == "string":
        return _string_type(name, "", key)
    return None
