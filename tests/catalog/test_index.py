"""The 2025-12 catalog: every endpoint by its friendly names, sync twins, SyncTimestamp, codes, deprecations."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_exactonline.catalog import (
    all_entities,
    deleted_entity_types,
    find_entity,
    resolve,
    resolve_entity,
    sync_entities,
)

LOGGER = "airflow_provider_exactonline.catalog"


def test_every_one_of_the_451_endpoints_resolves_by_its_friendly_names(reference_endpoints: list[dict]) -> None:
    assert len(reference_endpoints) == 451
    for endpoint in reference_endpoints:
        path = endpoint["uri"].removeprefix("beta/{division}/")
        for name in (path, endpoint["model"]):
            found = resolve(name)
            assert found.spec is not None, name
            assert found.path == path, (name, found)
            assert resolve_entity(name) is found.spec
            assert find_entity(name) is found.spec
            assert found.spec.model_for(found.variant) == endpoint["model"]


def test_sync_entities_are_linked_to_their_twins() -> None:
    entities = sync_entities()
    assert len(entities) == 59
    assert all(spec.sync_path and spec.sync_path != "sync/Deleted" for spec in entities)
    with_standard = [spec for spec in entities if spec.path]
    with_bulk = [spec for spec in entities if spec.bulk_path]
    assert (len(with_standard), len(with_bulk)) == (43, 18)
    for spec in entities:
        for variant in spec.variants:
            assert resolve_entity(spec.variant_path(variant)) is spec
    accounts = resolve_entity("SyncAccount")
    assert (accounts.path, accounts.bulk_path, accounts.sync_path) == (
        "crm/Accounts",
        "bulk/CRM/Accounts",
        "sync/CRM/Accounts",
    )
    employees = resolve_entity("sync/Payroll/Employees")
    assert employees.path == "payroll/Employees"
    assert employees.deleted_entity_type == 42


def test_sync_timestamp_resolves_by_name() -> None:
    found = resolve("SyncTimestamp")
    assert found.path == "read/sync/Sync/SyncTimestamp"
    spec = resolve_entity("synctimestamp")
    assert spec is found.spec
    assert set(spec.fields) == {"Modified", "API", "TimeStampAsBigInt"}
    assert spec.url_path(division=5) == "/api/v1/5/read/sync/Sync/SyncTimestamp"


def test_system_me_is_current_me() -> None:
    me = resolve_entity("System/Me")
    assert me is find_entity("system/me") is resolve_entity("current/Me")
    assert me.url_path(division=1) == "/api/v1/current/Me"
    assert resolve("System/Me").path == "current/Me"


def test_model_names_pick_their_variant() -> None:
    assert resolve("BulkAccount").path == "bulk/CRM/Accounts"
    assert resolve("SyncAccount").variant == "sync"
    assert resolve("Account").path == "crm/Accounts"


def test_every_entity_with_a_deleted_code_has_one_and_codes_match_exact() -> None:
    codes = deleted_entity_types()
    assert set(codes) == set(range(1, 60)) - {11, 52}
    linked = {spec.qualified_name: spec.deleted_entity_type for spec in all_entities() if spec.deleted_entity_type}
    assert len(linked) == 55
    assert linked["payroll/BankAccounts"] == 48
    assert linked["manufacturing/ShopOrders"] == 36
    assert linked["hrm/ScheduleEntries"] == 40
    assert linked["manufacturing/BillOfMaterialVersions"] == 55
    for name, code in linked.items():
        assert code in codes, name
    with_sync = {spec.qualified_name for spec in sync_entities() if spec.deleted_entity_type is None}
    assert with_sync == {
        "crm/Quotations",
        "logistics/SupplierItem",
        "manufacturing/MaterialIssues",
        "sales/SalesPriceListVolumeDiscounts",
    }


def test_deprecated_endpoints_are_flagged_and_warn_with_their_replacement(caplog: pytest.LogCaptureFixture) -> None:
    deprecated = [spec.variant_path(v) for spec in all_entities() for v in spec.variants if spec.deprecated_for(v)]
    assert sorted(deprecated) == [
        "financialtransaction/Transactions",
        "sales/PriceLists",
        "sales/SalesPriceListDetails",
        "sync/CRM/Quotations",
        "sync/SalesOrder/SalesOrders",
    ]
    orders = resolve_entity("salesorder/SalesOrders")
    assert orders.deprecated is False  # the standard endpoint is fine
    assert orders.replacement_for("sync") == "sync/SalesOrder/SalesOrderHeaders"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        caplog.clear()
        resolve_entity("SalesOrders")
        resolve("bulk/SalesOrder/SalesOrders")
        assert caplog.records == []
        resolve("sync/SalesOrder/SalesOrders")
        resolve_entity("SyncQuotation")
        resolve("/api/v1/1/sync/CRM/Quotations?$top=1")
    messages = [record.getMessage() for record in caplog.records]
    assert all(record.name == LOGGER for record in caplog.records)
    assert len(messages) == 3
    assert "use sync/SalesOrder/SalesOrderHeaders instead" in messages[0]
    assert "sync/SalesOrder/SalesOrderLines" in messages[0]
    assert "use sync/CRM/QuotationHeaders instead" in messages[1]


def test_deprecated_without_a_named_replacement(caplog: pytest.LogCaptureFixture) -> None:
    price_lists = resolve_entity("sales/PriceLists")
    assert price_lists.deprecated is True
    assert price_lists.replacement is None
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        caplog.clear()
        resolve_entity("sales/PriceLists")
    assert "names no replacement" in caplog.records[0].getMessage()
    caplog.clear()
    assert find_entity("sales/PriceLists") is price_lists
    assert caplog.records == []
