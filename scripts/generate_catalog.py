#!/usr/bin/env python3
"""Generate the endpoint catalog (``catalog/catalog.json``) and ``docs/endpoints.md``.

    python scripts/generate_catalog.py [--source ../shared/data/exact-online-endpoints.json] [--check]

The reference file (399 endpoints scraped from Exact's API reference) stays outside the repository;
this script reduces it to a compact catalog in the package. One catalog *entity* groups a standard
endpoint (``/api/v1/{division}/crm/Accounts``) with its ``bulk/`` and ``sync/`` variants. Where the
names do not line up, :data:`LINK_OVERRIDES` says where a variant belongs; variants with no standard
endpoint must be listed in :data:`VARIANT_ONLY` so that a changed reference file fails loudly instead
of silently creating new entities. ``--check`` exits 1 when the checked-in files differ.

Only the standard library is used, so CI can run it before installing anything.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "exact-online-endpoints.json"
CATALOG_JSON = REPO_ROOT / "airflow_provider_exactonline" / "catalog" / "catalog.json"
ENDPOINTS_MD = REPO_ROOT / "docs" / "endpoints.md"

FORMAT_VERSION = 1
EXPECTED_BULK = 21
EXPECTED_SYNC = 36

TYPE_CODES = {"string": "s", "number": "n", "boolean": "b", None: "u"}
# Documentation links share this prefix; the catalog stores only the rest.
DOC_PREFIX = "https://start.exactonline.nl/docs/HlpRestAPIResourcesDetails.aspx?name="

# bulk/sync variants whose (service, name) does not match a standard endpoint path.
# Key: variant path (case-insensitive); value: standard path it belongs to.
LINK_OVERRIDES: dict[str, str] = {
    # Exact files transaction lines under "financialtransaction" for the standard endpoint but under
    # "Financial" for bulk and sync.
    "bulk/financial/transactionlines": "financialtransaction/TransactionLines",
    "sync/financial/transactionlines": "financialtransaction/TransactionLines",
}

# Variants that have no standard endpoint in the reference data: each becomes its own entity with
# ``path = None``. Listed explicitly so a new unmatched variant makes the generator fail.
VARIANT_ONLY: frozenset[str] = frozenset(
    {
        "sync/deleted",  # the deletion log itself
        "sync/cashflow/paymentterms",  # no standard cashflow/PaymentTerms in the reference
        "sync/crm/quotationheaders",  # header-only rows; sync/CRM/Quotations is one row per line
        "sync/salesorder/salesorderheaders",  # header-only rows; sync/SalesOrder/SalesOrders is per line
        "sync/inventory/serialbatchnumbers",  # standard has SerialNumbers / BatchNumbers separately
        "sync/inventory/stockserialbatchnumbers",  # standard has StockSerialNumbers / StockBatchNumbers
        "sync/inventory/stockpositions",  # standard read/logistics/StockPosition is a function
        "sync/inventory/storagelocationstockpositions",
        "sync/logistics/purchaseitemprices",
        "sync/project/timecosttransactions",  # standard has TimeTransactions / CostTransactions apart
        "bulk/project/projectwbs",  # standard has only read/project/ProjectWBSByProject functions
        "sync/project/projectwbs",
    }
)

# Bare names that occur in several services: which one a bare name means. Names not listed here
# and not settled by the rule in the package (the one candidate with bulk/sync, else the one that
# is not a ``read/`` function or beta endpoint) are ambiguous and must be qualified.
CANONICAL_BARE_NAMES: dict[str, str] = {
    # "Use system/Divisions, not hrm/Divisions" (picqer issue 229).
    "divisions": "system/Divisions",
}

# Standard endpoints that answer 400 "Please add a $select or a $top=1 statement" without $select
# (picqer README / issue 315, ruby client issue 22). bulk/ and sync/ always need $select.
SELECT_REQUIRED: frozenset[str] = frozenset({"generaljournalentry/generaljournalentries", "salesorder/goodsdeliveries"})

# sync/Deleted EntityType codes (Exact's SyncDeleted reference, as modelled by the picqer and
# ExactOnline.Api.Client sources; see ../shared/research/exact-online-api.md section 4).
# code -> (Exact's name, catalog entity paths it is linked to). An empty tuple means the code is
# known but no catalog entity is linked (not in the reference data, or the endpoint it covers is
# unconfirmed). Codes 11 and 52 are retired.
DELETED_ENTITY_TYPES: dict[int, tuple[str, tuple[str, ...]]] = {
    1: ("TransactionLines", ("financialtransaction/TransactionLines",)),
    2: ("Accounts", ("crm/Accounts",)),
    3: ("Addresses", ("crm/Addresses",)),
    4: ("Attachments", ("documents/DocumentAttachments",)),
    5: ("Contacts", ("crm/Contacts",)),
    6: ("Documents", ("documents/Documents",)),
    7: ("GLAccounts", ("financial/GLAccounts",)),
    8: ("ItemPrices", ("logistics/SalesItemPrices", "logistics/PurchaseItemPrices")),
    9: ("Items", ("logistics/Items",)),
    10: ("PaymentTerms", ("cashflow/PaymentTerms",)),
    12: ("SalesOrders", ("salesorder/SalesOrders",)),
    13: ("SalesInvoices", ("salesinvoice/SalesInvoices",)),
    14: ("TimeCostTransactions", ("project/TimeCostTransactions",)),
    15: ("StockPositions", ("inventory/StockPositions",)),
    16: ("GoodsDeliveries", ("salesorder/GoodsDeliveries",)),
    17: ("GoodsDeliveryLines", ("salesorder/GoodsDeliveryLines",)),
    18: ("GLClassifications", ("financial/GLClassifications",)),
    19: ("ItemWarehouses", ("inventory/ItemWarehouses",)),
    20: ("StorageLocationStockPositions", ("inventory/StorageLocationStockPositions",)),
    21: ("Projects", ("project/Projects",)),
    22: ("PurchaseOrders", ("purchaseorder/PurchaseOrders",)),
    23: ("Subscriptions", ("subscription/Subscriptions",)),
    24: ("SubscriptionLines", ("subscription/SubscriptionLines",)),
    25: ("ProjectWBS", ("project/ProjectWBS",)),
    26: ("ProjectPlanning", ("project/ProjectPlanning",)),
    27: ("LeaveAbsenceHoursByDay", ()),
    28: ("SerialBatchNumbers", ("inventory/SerialBatchNumbers",)),
    29: ("StockSerialBatchNumbers", ("inventory/StockSerialBatchNumbers",)),
    30: ("ItemAccounts", ()),
    31: ("DiscountTables", ()),
    32: ("SalesOrderHeaders", ("salesorder/SalesOrderHeaders",)),
    33: ("SalesOrderLines", ("salesorder/SalesOrderLines",)),
    34: ("QuotationHeaders", ("crm/QuotationHeaders",)),
    35: ("QuotationLines", ("crm/QuotationLines",)),
    36: ("ShopOrders", ("manufacturing/ShopOrders",)),
    37: ("ShopOrderMaterialPlans", ("manufacturing/ShopOrderMaterialPlans",)),
    38: ("ShopOrderRoutingStepPlans", ("manufacturing/ShopOrderRoutingStepPlans",)),
    39: ("Schedules", ("hrm/Schedules",)),
    40: ("ScheduleEntries", ()),
    41: ("ItemStorageLocations", ()),
    42: ("Employees", ("payroll/Employees",)),
    43: ("Employments", ("payroll/Employments",)),
    44: ("EmploymentContracts", ("payroll/EmploymentContracts",)),
    45: ("EmploymentOrganizations", ("payroll/EmploymentOrganizations",)),
    46: ("EmploymentCLAs", ()),
    47: ("EmploymentSalaries", ("payroll/EmploymentSalaries",)),
    48: ("BankAccounts", ()),
    49: ("EmploymentTaxAuthoritiesGeneral", ("payroll/EmploymentTaxAuthoritiesGeneral",)),
    50: ("ShopOrderPurchasePlanning", ()),
    51: ("ShopOrderSubOrders", ()),
    53: ("RequirementIssues", ()),
    54: ("BillOfMaterialMaterials", ("manufacturing/BillOfMaterialMaterials",)),
    55: ("BillOfMaterialVersions", ("manufacturing/BillOfMaterialVersions",)),
    56: ("LeaveRegistrations", ("hrm/LeaveRegistrations",)),
    57: ("LeaveBuildUpRegistrations", ("hrm/LeaveBuildUpRegistrations",)),
    58: ("AbsenceRegistrationTransactions", ("hrm/AbsenceRegistrationTransactions",)),
    59: ("AbsenceRegistrations", ("hrm/AbsenceRegistrations",)),
}

# Shown beside the codes in docs/endpoints.md.
DELETED_NOTES: dict[int, str] = {
    8: "inferred from Exact's name; not confirmed which price endpoints it covers",
    12: "Exact: being replaced by 32 and 33",
    48: "probably payroll bank accounts (sync/Payroll, not in the reference data); crm/BankAccounts unconfirmed",
}

_URI = re.compile(r"^/api/v1/(?P<beta>beta/)?(?P<division>\{division\}/)?(?P<path>.+)$")


class CatalogBuildError(Exception):
    """The reference data does not fit the link rules; fix the rules above, never the data."""


def _parse_uri(uri: str) -> tuple[str, bool, bool]:
    match = _URI.match(uri)
    if not match:
        raise CatalogBuildError(f"unexpected uri template {uri!r}")
    return match["path"], bool(match["beta"]), bool(match["division"])


def _fields(raw: list[list[Any]]) -> tuple[list[str], str]:
    names: list[str] = []
    types: list[str] = []
    seen: set[str] = set()
    for name, typ in raw:
        if not name:  # function endpoints that return a bare scalar carry one nameless field
            continue
        if name.lower() in seen:
            raise CatalogBuildError(f"duplicate field {name!r}")
        seen.add(name.lower())
        names.append(name)
        types.append(TYPE_CODES[typ])
    return names, "".join(types)


def _variant_record(path: str, endpoint: dict[str, Any], beta: bool, division: bool) -> dict[str, Any]:
    names, types = _fields(endpoint["fields"])
    doc = endpoint["doc"]
    doc = doc[len(DOC_PREFIX) :] if doc.startswith(DOC_PREFIX) else doc
    record: dict[str, Any] = {"p": path, "m": endpoint["methods"], "d": doc, "f": names, "t": types}
    if beta:
        record["beta"] = 1
    if not division:
        record["nodiv"] = 1
    return record


def build_catalog(reference: dict[str, Any]) -> dict[str, Any]:
    """Reduce the reference data to the catalog structure (see the package docstring for the format)."""
    standard: dict[str, dict[str, Any]] = {}  # lower path -> entity
    variants: list[tuple[str, str, dict[str, Any]]] = []  # (kind, path, record)
    for endpoint in reference["endpoints"]:
        path, beta, division = _parse_uri(endpoint["uri"])
        kind = path.split("/", 1)[0].lower()
        record = _variant_record(path, endpoint, beta, division)
        if kind in ("bulk", "sync"):
            variants.append((kind, path, record))
            continue
        segments = path.split("/")
        if segments[0].lower() == "read":
            service, name = segments[1].lower(), "/".join(segments[2:])
        else:
            service, name = segments[0].lower(), "/".join(segments[1:])
        if path.lower() in standard:
            raise CatalogBuildError(f"duplicate standard endpoint {path!r}")
        standard[path.lower()] = {"n": name, "s": service, "std": record}

    entities: dict[str, dict[str, Any]] = dict(standard)
    bulk_count = sync_count = 0
    for kind, path, record in variants:
        lower = path.lower()
        segments = path.split("/")
        if lower in LINK_OVERRIDES:
            target = LINK_OVERRIDES[lower].lower()
            if target not in standard:
                raise CatalogBuildError(f"LINK_OVERRIDES sends {path!r} to unknown {LINK_OVERRIDES[lower]!r}")
        elif len(segments) == 3 and f"{segments[1]}/{segments[2]}".lower() in standard:
            target = f"{segments[1]}/{segments[2]}".lower()
        elif lower in VARIANT_ONLY:
            if len(segments) == 3:
                service, name = segments[1].lower(), segments[2]
            else:  # sync/Deleted: no service segment
                service, name = "", segments[-1]
            target = f"{service}/{name}".lower() if service else lower
            entities.setdefault(target, {"n": name, "s": service})
        else:
            raise CatalogBuildError(f"{path!r} matches no standard endpoint: add it to LINK_OVERRIDES or VARIANT_ONLY")
        entity = entities[target]
        if kind in entity:
            raise CatalogBuildError(f"two {kind} endpoints for {target!r}")
        entity[kind] = record
        bulk_count += kind == "bulk"
        sync_count += kind == "sync"
    for lower in VARIANT_ONLY | set(LINK_OVERRIDES):
        if not any(path.lower() == lower for _, path, _ in variants):
            raise CatalogBuildError(f"link rule for {lower!r} matches nothing in the reference data")
    if (bulk_count, sync_count) != (EXPECTED_BULK, EXPECTED_SYNC):
        raise CatalogBuildError(
            f"expected {EXPECTED_BULK} bulk / {EXPECTED_SYNC} sync endpoints, found {bulk_count} / {sync_count}"
        )

    deleted_types: dict[str, str] = {}
    for code, (exact_name, targets) in sorted(DELETED_ENTITY_TYPES.items()):
        deleted_types[str(code)] = exact_name
        for target in targets:
            linked = entities.get(target.lower())
            if linked is None:
                raise CatalogBuildError(f"EntityType {code} links to unknown entity {target!r}")
            if "del" in linked:
                raise CatalogBuildError(f"{target!r} has two EntityType codes")
            linked["del"] = code

    for bare, target in CANONICAL_BARE_NAMES.items():
        if target.lower() not in entities or entities[target.lower()]["n"].lower() != bare:
            raise CatalogBuildError(f"CANONICAL_BARE_NAMES: {bare!r} -> {target!r} is not an entity of that name")
    for lower in SELECT_REQUIRED:
        if lower not in standard:
            raise CatalogBuildError(f"SELECT_REQUIRED names unknown endpoint {lower!r}")
        standard[lower]["std"]["sel"] = 1

    ordered = [entities[key] for key in sorted(entities, key=lambda k: (entities[k]["s"], entities[k]["n"].lower(), k))]
    for entity in ordered:
        std = entity.get("std")
        for kind in ("bulk", "sync"):
            same = entity.get(kind)
            # Keep the file small: a variant with exactly the standard field list stores none.
            if std is not None and same is not None and same["f"] == std["f"] and same["t"] == std["t"]:
                del same["f"], same["t"]
    return {
        "version": FORMAT_VERSION,
        "source": reference.get("source", ""),
        "doc_prefix": DOC_PREFIX,
        "canonical": dict(sorted(CANONICAL_BARE_NAMES.items())),
        "deleted_types": deleted_types,
        "entities": ordered,
    }


def render_catalog_json(catalog: dict[str, Any]) -> str:
    return json.dumps(catalog, separators=(",", ":"), ensure_ascii=False, sort_keys=False) + "\n"


def _qualified(entity: dict[str, Any]) -> str:
    if "std" in entity:
        return str(entity["std"]["p"])
    return f"{entity['s']}/{entity['n']}" if entity["s"] else str(entity["sync"]["p"])


def _doc(record: dict[str, Any]) -> str:
    doc = str(record["d"])
    return doc if "://" in doc else DOC_PREFIX + doc


def render_endpoints_md(catalog: dict[str, Any]) -> str:
    entities = catalog["entities"]
    n_bulk = sum("bulk" in e for e in entities)
    n_sync = sum("sync" in e for e in entities)
    n_del = sum("del" in e for e in entities)
    lines = [
        "# Exact Online endpoint catalog",
        "",
        "<!-- Generated by scripts/generate_catalog.py from ../shared/data/exact-online-endpoints.json. "
        "Do not edit; run the script. -->",
        "",
        f"{len(entities)} entities: {sum('std' in e for e in entities)} standard endpoints, "
        f"{n_bulk} with a `bulk/` variant, {n_sync} with a `sync/` variant, {n_del} with a `sync/Deleted` "
        "EntityType. Pass any of these names to the hook and operators (`crm/Accounts`, `Accounts`, "
        "`sync/CRM/Accounts`; case-insensitive). A path the catalog lacks still works when written with a "
        "leading `/` (for example `/crm/SomethingNew`).",
        "",
        "Paths are relative to `/api/v1/{division}/`; *beta* endpoints live under `/api/v1/beta/{division}/`, "
        "and endpoints marked *no division* under `/api/v1/`. `bulk/` and `sync/` return 1,000 rows per page "
        'and require `$select` (`select="*"` expands to every field listed here). Full exports use `bulk/` '
        "when it exists, incremental exports need `sync/`.",
        "",
        "| Entity | Service | Path | Bulk | Sync | Deleted type | Methods |",
        "|---|---|---|---|---|---|---|",
    ]

    for entity in entities:
        std = entity.get("std")
        path = "—"
        methods = "GET"
        if std is not None:
            path = f"[`{std['p']}`]({_doc(std)})"
            if std.get("beta"):
                path += " *beta*"
            if std.get("nodiv"):
                path += " *no division*"
            methods = ", ".join(std["m"])
        bulk = f"[`{entity['bulk']['p']}`]({_doc(entity['bulk'])})" if "bulk" in entity else ""
        sync = f"[`{entity['sync']['p']}`]({_doc(entity['sync'])})" if "sync" in entity else ""
        deleted = str(entity["del"]) if "del" in entity else ""
        lines.append(f"| {entity['n']} | {entity['s'] or '—'} | {path} | {bulk} | {sync} | {deleted} | {methods} |")

    linked: dict[int, list[str]] = defaultdict(list)
    for entity in entities:
        if "del" in entity:
            linked[entity["del"]].append(_qualified(entity))
    lines += [
        "",
        "## `sync/Deleted` EntityType codes",
        "",
        "Read deletions with `sync/Deleted?$filter=Timestamp gt {n}L and EntityType eq {code}`. Codes without an "
        "entity are known to Exact but their endpoint is not in the catalog or not confirmed.",
        "",
        "| Code | Exact name | Catalog entities | Note |",
        "|---|---|---|---|",
    ]
    for code, exact_name in catalog["deleted_types"].items():
        targets = ", ".join(f"`{t}`" for t in linked.get(int(code), []))
        lines.append(f"| {code} | {exact_name} | {targets} | {DELETED_NOTES.get(int(code), '')} |")
    lines += [
        "",
        "## Name rules",
        "",
        "- An entity groups a standard endpoint with its `bulk/` and `sync/` variants by service and name "
        "(case-insensitive). Exceptions: "
        + "; ".join(f"`{k}` belongs to `{v}`" for k, v in sorted(LINK_OVERRIDES.items()))
        + ".",
        "- Variants without a standard endpoint are entities of their own (no standard path): "
        + ", ".join(f"`{v}`" for v in sorted(VARIANT_ONLY))
        + ".",
        "- A bare name used in several services resolves to the explicitly chosen one ("
        + ", ".join(f"`{k}` → `{v}`" for k, v in sorted(CANONICAL_BARE_NAMES.items()))
        + "), else to the only candidate with a `bulk/` or `sync/` variant, else to the only candidate that is "
        "neither a `read/` function nor a beta endpoint; otherwise it is ambiguous and must be qualified.",
        "",
    ]
    return "\n".join(lines)


def generate(source: Path) -> tuple[str, str]:
    """Return (catalog.json text, endpoints.md text) for a reference file."""
    reference = json.loads(source.read_text(encoding="utf-8"))
    catalog = build_catalog(reference)
    return render_catalog_json(catalog), render_endpoints_md(catalog)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="reference endpoints JSON")
    parser.add_argument("--check", action="store_true", help="fail if the checked-in files are out of date")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"reference file not found: {args.source} (clone the shared/ data beside the repo)")
    try:
        catalog_text, md_text = generate(args.source)
    except CatalogBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    outputs = {CATALOG_JSON: catalog_text, ENDPOINTS_MD: md_text}
    if args.check:
        stale = [str(p) for p, text in outputs.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
        if stale:
            print("out of date (run scripts/generate_catalog.py): " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO_ROOT)} ({len(text.encode()):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
