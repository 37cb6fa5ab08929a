"""Entity resolution, bulk/sync linking, keys, Deleted EntityType codes and the export-mode rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_provider_exactonline.catalog import (
    EntitySpec,
    all_entities,
    deleted_entity_types,
    find_entity,
    resolve,
    resolve_entity,
    resolve_path,
)
from airflow_provider_exactonline.exceptions import (
    ExactOnlineCatalogError,
    ExactOnlineUnknownEntity,
)


def _variant_paths(variant: str) -> set[str]:
    return {spec.variant_path(variant) for spec in all_entities() if spec.has_variant(variant)}


# -- every entry resolves -------------------------------------------------------------------------------


def test_every_entity_resolves_by_every_name_it_has() -> None:
    entities = all_entities()
    assert len(entities) == 387
    assert sum(len(spec.variants) for spec in entities) == 451
    for spec in entities:
        assert resolve_entity(spec.qualified_name) is spec
        assert resolve_entity(spec.qualified_name.upper()) is spec
        for variant in spec.variants:
            path = spec.variant_path(variant)
            assert resolve_entity(path) is spec
            assert resolve_entity(path.lower()) is spec
            assert resolve_path(path) == (spec, variant)
            assert resolve_path(spec.url_path(variant, division=123)) == (spec, variant)
            assert resolve(spec.url_path(variant, division=1)) == (spec, variant, path)
            assert spec.url_path(variant).endswith("/" + path)
        assert spec.fields is spec.fields_for(spec.primary_variant)


def test_bare_names_resolve_or_list_every_candidate() -> None:
    by_bare: dict[str, list[EntitySpec]] = {}
    for spec in all_entities():
        by_bare.setdefault(spec.name.lower(), []).append(spec)
    ambiguous = set()
    for bare, specs in by_bare.items():
        try:
            found = resolve_entity(bare)
        except ExactOnlineUnknownEntity as error:
            ambiguous.add(bare)
            assert len(specs) > 1
            for spec in specs:
                assert spec.qualified_name in str(error)
            assert sorted(error.suggestions) == sorted(s.qualified_name for s in specs)
        else:
            assert found in specs
    assert ambiguous == {"reasoncodes", "timetransactions", "users"}


@pytest.mark.parametrize(
    ("name", "qualified"),
    [
        ("accounts", "crm/Accounts"),
        ("Accounts", "crm/Accounts"),
        ("crm/Accounts", "crm/Accounts"),
        ("CRM/Accounts", "crm/Accounts"),
        ("sync/CRM/Accounts", "crm/Accounts"),
        ("bulk/crm/accounts", "crm/Accounts"),
        ("/api/v1/{division}/crm/Accounts", "crm/Accounts"),
        ("https://start.exactonline.nl/api/v1/123/crm/Accounts?$top=1", "crm/Accounts"),
        ("crm/Accounts(guid'00000000-0000-0000-0000-000000000000')", "crm/Accounts"),
        ("SalesInvoices", "salesinvoice/SalesInvoices"),
        ("TransactionLines", "financialtransaction/TransactionLines"),
        ("Financial/TransactionLines", "financialtransaction/TransactionLines"),
        ("Divisions", "system/Divisions"),  # explicit choice (picqer #229)
        ("hrm/Divisions", "hrm/Divisions"),
        ("Documents", "documents/Documents"),  # the only one with bulk/sync
        ("crm/Documents", "read/crm/Documents"),
        ("Me", "current/Me"),
        ("Deleted", "sync/Deleted"),
        ("QuotationHeaders", "crm/QuotationHeaders"),
        ("ProjectWBS", "project/ProjectWBS"),
        ("BudgetScenarios", "budget/BudgetScenarios"),
        ("beta/budget/BudgetScenarios", "budget/BudgetScenarios"),
        ("openingbalance/CurrentYear/AfterEntry", "openingbalance/CurrentYear/AfterEntry"),
    ],
)
def test_friendly_names(name: str, qualified: str) -> None:
    spec = resolve_entity(name)
    assert spec.qualified_name == qualified
    assert find_entity(name) is spec


def test_unknown_entity_names_the_closest_matches() -> None:
    with pytest.raises(ExactOnlineUnknownEntity) as caught:
        resolve_entity("Acounts")
    message = str(caught.value)
    assert "'Acounts'" in message
    assert caught.value.suggestions[0] == "crm/Accounts"
    assert 1 <= len(caught.value.suggestions) <= 5
    assert "leading '/'" in message
    assert find_entity("Acounts") is None
    with pytest.raises(ExactOnlineUnknownEntity, match="crm/ReasonCodes, logistics/ReasonCodes"):
        resolve_entity("reasoncodes")


def test_resolve_path_passes_unknown_paths_through() -> None:
    accounts = resolve_entity("crm/Accounts")
    assert resolve_path("crm/Accounts(guid'00000000-0000-0000-0000-000000000000')") == (accounts, "standard")
    assert resolve_path("/api/v1/123/crm/Accounts/$count") == (accounts, "standard")
    assert resolve_path("sync/crm/accounts?$filter=Timestamp gt 1L") == (accounts, "sync")
    assert resolve_path("crm/SomethingNew") == (None, "standard")
    assert resolve_path("sync/Foo/Bars") == (None, "sync")
    assert resolve_path("/api/v1/7/bulk/Foo/Bars") == (None, "bulk")


def test_resolve_distinguishes_raw_paths_from_names() -> None:
    assert resolve("/crm/SomethingNew") == (None, "standard", "crm/SomethingNew")
    assert resolve("https://start.exactonline.nl/api/v1/9/sync/X/Y") == (None, "sync", "sync/X/Y")
    accounts = resolve_entity("Accounts")
    assert resolve("Accounts") == (accounts, "standard", "crm/Accounts")
    assert resolve("SYNC/crm/Accounts") == (accounts, "sync", "sync/CRM/Accounts")
    assert resolve("/crm/accounts") == (accounts, "standard", "crm/Accounts")
    assert resolve("PaymentTerms").path == "sync/Cashflow/PaymentTerms"  # sync-only: primary variant
    with pytest.raises(ExactOnlineUnknownEntity):
        resolve("crm/SomethingNew")


# -- bulk / sync linking --------------------------------------------------------------------------------


def test_bulk_and_sync_counts() -> None:
    assert len(_variant_paths("bulk")) == 21
    assert len(_variant_paths("sync")) == 60  # 59 sync entities + sync/Deleted


def test_linking_matches_the_reference_data(reference_endpoints: list[dict]) -> None:
    def relative(uri: str) -> str:
        return uri.removeprefix("beta/{division}/")

    assert len(reference_endpoints) == 451
    for kind in ("bulk", "sync"):
        expected = {relative(e["uri"]) for e in reference_endpoints if relative(e["uri"]).startswith(kind + "/")}
        assert _variant_paths(kind) == expected
    standard = {relative(e["uri"]) for e in reference_endpoints} - _variant_paths("bulk") - _variant_paths("sync")
    assert {spec.path for spec in all_entities() if spec.path} == standard

    by_uri = {relative(e["uri"]): e for e in reference_endpoints}
    for spec in all_entities():
        for variant in spec.variants:
            source = by_uri[spec.variant_path(variant)]
            if source["fields"]:  # else filled from the older reference or the standard twin
                assert list(spec.fields_for(variant)) == [f["name"] for f in source["fields"]]
            if source["doc"]:  # else the older reference's page
                assert spec.doc_url_for(variant) == source["doc"]
            assert spec.model_for(variant) == source["model"]
            assert spec.deprecated_for(variant) is source["deprecated"]
            expected_url = "/api/v1/" + source["uri"] if source["uri"].startswith("beta/") else None
            if expected_url is None:
                prefix = "/api/v1/{division}/" if spec.division_in_path else "/api/v1/"
                expected_url = prefix + source["uri"]
            assert spec.url_path(variant) == expected_url


@pytest.mark.parametrize(
    ("name", "path", "bulk", "sync"),
    [
        ("crm/Accounts", "crm/Accounts", "bulk/CRM/Accounts", "sync/CRM/Accounts"),
        # the service segment differs between standard and bulk/sync: explicit link rule
        ("TransactionLines", "financialtransaction/TransactionLines", "bulk/Financial/TransactionLines",
         "sync/Financial/TransactionLines"),
        ("SalesInvoices", "salesinvoice/SalesInvoices", "bulk/SalesInvoice/SalesInvoices",
         "sync/SalesInvoice/SalesInvoices"),
        ("GLAccounts", "financial/GLAccounts", "bulk/Financial/GLAccounts", "sync/Financial/GLAccounts"),
        ("crm/Quotations", "crm/Quotations", "bulk/CRM/Quotations", "sync/CRM/Quotations"),
        ("Payments", "cashflow/Payments", "bulk/Cashflow/Payments", None),
        ("PurchaseOrders", "purchaseorder/PurchaseOrders", None, "sync/PurchaseOrder/PurchaseOrders"),
        ("ProjectWBS", None, "bulk/Project/ProjectWBS", "sync/Project/ProjectWBS"),
        ("sync/Deleted", None, None, "sync/Deleted"),
        ("SalesOrderHeaders", None, None, "sync/SalesOrder/SalesOrderHeaders"),
        ("crm/Opportunities", "crm/Opportunities", None, None),
    ],
)  # fmt: skip
def test_link_rules(name: str, path: str | None, bulk: str | None, sync: str | None) -> None:
    spec = resolve_entity(name)
    assert (spec.path, spec.bulk_path, spec.sync_path) == (path, bulk, sync)


def test_variant_only_entities_have_no_standard_path() -> None:
    variant_only = {spec.qualified_name for spec in all_entities() if spec.path is None}
    assert variant_only == {
        "sync/Deleted",
        "cashflow/PaymentTerms",
        "crm/QuotationHeaders",
        "hrm/ScheduleEntries",
        "inventory/ItemStorageLocations",
        "inventory/SerialBatchNumbers",
        "inventory/StockPositions",
        "inventory/StockSerialBatchNumbers",
        "inventory/StorageLocationStockPositions",
        "logistics/PurchaseItemPrices",
        "manufacturing/ShopOrderPurchasePlanning",
        "manufacturing/ShopOrderSubOrders",
        "payroll/BankAccounts",
        "payroll/EmploymentCLAs",
        "project/ProjectWBS",
        "project/TimeCostTransactions",
        "salesorder/SalesOrderHeaders",
    }
    deleted = resolve_entity("sync/Deleted")
    assert deleted.service == ""
    assert deleted.key == "Timestamp"
    assert set(deleted.fields) == {"Timestamp", "DeletedBy", "DeletedDate", "Division", "EntityKey", "EntityType", "ID"}
    with pytest.raises(ExactOnlineCatalogError, match="has no standard endpoint"):
        deleted.url_path("standard")


# -- keys, paths, Deleted codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("crm/Accounts", "ID"),
        ("current/Me", "UserID"),
        ("system/Divisions", "Code"),
        ("crm/Quotations", "QuotationID"),
        ("SalesInvoices", "InvoiceID"),
        ("salesorder/SalesOrders", "OrderID"),
        ("GeneralJournalEntries", "EntryID"),
        ("PaymentTerms", "Timestamp"),  # sync-only
    ],
)
def test_keys(name: str, key: str) -> None:
    assert resolve_entity(name).key == key


def test_variant_keys_and_methods() -> None:
    accounts = resolve_entity("Accounts")
    assert accounts.methods == ("GET", "POST", "PUT", "DELETE")
    assert accounts.key_for("sync") == "Timestamp"
    assert accounts.key_for("bulk") == "ID"
    assert accounts.methods_for("bulk") == ("GET",)
    assert "Timestamp" in accounts.fields_for("sync")
    assert "Timestamp" not in accounts.fields
    assert accounts.fields["ID"] == "string"
    assert accounts.fields["Division"] == "number"
    assert accounts.doc_url.endswith("name=CRMAccounts")


def test_url_paths() -> None:
    assert resolve_entity("Accounts").url_path() == "/api/v1/{division}/crm/Accounts"
    assert resolve_entity("Accounts").url_path("bulk", division=42) == "/api/v1/42/bulk/CRM/Accounts"
    me = resolve_entity("current/Me")
    assert me.division_in_path is False
    assert me.url_path(division=42) == "/api/v1/current/Me"
    scenarios = resolve_entity("BudgetScenarios")
    assert scenarios.beta is True
    assert scenarios.url_path(division=7) == "/api/v1/beta/7/budget/BudgetScenarios"
    without_division = [spec.qualified_name for spec in all_entities() if not spec.division_in_path]
    assert without_division == ["current/Me", "system/Users"]


def test_deleted_entity_types() -> None:
    codes = deleted_entity_types()
    assert set(codes) == set(range(1, 60)) - {11, 52}
    assert codes[1] == "TransactionLines"
    assert codes[59] == "AbsenceRegistrations"
    expected = {
        "crm/Accounts": 2,
        "TransactionLines": 1,
        "crm/Addresses": 3,
        "documents/DocumentAttachments": 4,
        "crm/Contacts": 5,
        "documents/Documents": 6,
        "GLAccounts": 7,
        "logistics/Items": 9,
        "PaymentTerms": 10,
        "SalesInvoices": 13,
        "SalesOrderHeaders": 32,
        "QuotationHeaders": 34,
        "hrm/AbsenceRegistrations": 59,
        "crm/Quotations": None,  # line-level sync; Exact's codes are QuotationHeaders/QuotationLines
        "crm/Opportunities": None,
    }
    for name, code in expected.items():
        assert resolve_entity(name).deleted_entity_type == code, name
    linked = [spec for spec in all_entities() if spec.deleted_entity_type is not None]
    assert all(codes[spec.deleted_entity_type] for spec in linked)  # type: ignore[index]
    # Every entity with a sync endpoint has a deletion code, except these (no confirmed code).
    sync_without_code = {s.qualified_name for s in all_entities() if s.sync_path and s.deleted_entity_type is None}
    assert sync_without_code == {
        "sync/Deleted",
        "crm/Quotations",
        "logistics/SupplierItem",
        "manufacturing/MaterialIssues",
        "sales/SalesPriceListVolumeDiscounts",
    }


# -- export mode -> variant -----------------------------------------------------------------------------


def test_variant_for_full_prefers_sync_then_bulk_then_standard() -> None:
    assert resolve_entity("Accounts").variant_for("full") == "sync"
    assert resolve_entity("PurchaseOrders").variant_for("full") == "sync"  # standard has mandatory filtering
    assert resolve_entity("Opportunities").variant_for("full") == "standard"
    assert resolve_entity("PaymentTerms").variant_for("full") == "sync"
    assert resolve_entity("ProjectWBS").variant_for("full") == "sync"
    assert resolve_entity("cashflow/Payments").variant_for("full") == "bulk"
    with pytest.raises(ExactOnlineCatalogError, match="does not allow GET"):
        resolve_entity("ProcessPayments").variant_for("full")


def test_variant_for_incremental_needs_sync_and_names_the_alternative() -> None:
    assert resolve_entity("Accounts").variant_for("incremental") == "sync"
    assert resolve_entity("sync/Deleted").variant_for("incremental") == "sync"
    with pytest.raises(ExactOnlineCatalogError) as caught:
        resolve_entity("cashflow/Payments").variant_for("incremental")
    assert str(caught.value) == (
        "cashflow/Payments has no sync endpoint, so mode='incremental' cannot work; "
        "use mode='full' (bulk/Cashflow/Payments)."
    )
    with pytest.raises(ExactOnlineCatalogError, match=r"use mode='full' \(crm/Opportunities\)"):
        resolve_entity("Opportunities").variant_for("incremental")
    with pytest.raises(ExactOnlineCatalogError, match="Unknown export mode"):
        resolve_entity("Accounts").variant_for("fast")
    assert resolve_entity("Accounts").variant_for("standard") == "standard"
    with pytest.raises(ExactOnlineCatalogError, match="no bulk endpoint"):
        resolve_entity("Opportunities").variant_for("bulk")


def test_every_entity_answers_variant_for() -> None:
    for spec in all_entities():
        for mode in ("full", "incremental"):
            try:
                variant = spec.variant_for(mode)
            except ExactOnlineCatalogError as error:
                assert spec.qualified_name in str(error)
            else:
                assert spec.has_variant(variant)
                assert "GET" in spec.methods_for(variant)


# -- import cost -------------------------------------------------------------------------------------------


def test_import_is_lazy_and_airflow_free() -> None:
    """The catalog (used by the Airflow-free fake server) loads without Airflow; errors bring it in."""
    code = (
        "import sys\n"
        "import airflow_provider_exactonline.catalog as c\n"
        "assert c.index._index.cache_info().currsize == 0, 'catalog.json read at import time'\n"
        "spec, variant = c.resolve_path('sync/CRM/Accounts')\n"
        "assert variant == 'sync' and spec.fields_for(variant)['Timestamp'] == 'number'\n"
        "c.resolve_entity('Accounts').validate_select('ID,Name', 'bulk')\n"
        "info = c.index._index.cache_info()\n"
        "assert (info.misses, info.currsize) == (1, 1), info\n"
        "assert not [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')], 'airflow imported'\n"
        "try:\n"
        "    c.resolve_entity('Acounts')\n"
        "except Exception as error:\n"
        "    from airflow.exceptions import AirflowException\n"
        "    assert isinstance(error, AirflowException)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
