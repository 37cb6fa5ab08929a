"""Field types (Edm) and Exact's descriptions per endpoint."""

from __future__ import annotations

import dataclasses

import pytest

from airflow_provider_exactonline.catalog import FieldInfo, all_entities, resolve_entity

EDM_TYPES = {
    "Edm.Guid", "Edm.String", "Edm.Int16", "Edm.Int32", "Edm.Int64", "Edm.Double", "Edm.Decimal",
    "Edm.Boolean", "Edm.DateTime", "Edm.Byte", "Edm.Binary",
}  # fmt: skip


def test_field_info_is_a_frozen_dataclass_with_edm_type_and_description() -> None:
    info = resolve_entity("Accounts").field_info()["ID"]
    assert info == FieldInfo("ID", "Edm.Guid", "Primary key")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("entity", "variant", "field", "edm_type"),
    [
        ("Accounts", "standard", "ID", "Edm.Guid"),
        ("Accounts", "standard", "Creator", "Edm.Guid"),  # "User ID of creator"
        ("Accounts", "standard", "Accountant", "Edm.Guid"),  # references another account
        ("Accounts", "standard", "Created", "Edm.DateTime"),
        ("Accounts", "standard", "StartDate", "Edm.DateTime"),
        ("Accounts", "standard", "Name", "Edm.String"),
        ("Accounts", "standard", "Code", "Edm.String"),
        ("Accounts", "standard", "Division", "Edm.Int32"),
        ("Accounts", "standard", "Blocked", "Edm.Boolean"),
        ("Accounts", "standard", "Logo", "Edm.Binary"),
        ("Accounts", "sync", "Timestamp", "Edm.Int64"),
        ("sync/Deleted", "sync", "EntityType", "Edm.Int16"),  # enumerated codes
        ("SalesInvoices", "standard", "AmountDC", "Edm.Double"),
        ("SalesInvoices", "standard", "InvoiceID", "Edm.Guid"),  # the key, named …ID
        ("read/sync/Sync/SyncTimestamp", "standard", "TimeStampAsBigInt", "Edm.Int64"),
        ("bulk/CRM/Accounts", "bulk", "Name", "Edm.String"),  # bulk fields filled from elsewhere
    ],
)
def test_derived_edm_types(entity: str, variant: str, field: str, edm_type: str) -> None:
    assert resolve_entity(entity).field_info(variant)[field].edm_type == edm_type


def test_every_scalar_field_has_an_edm_type_and_navigation_fields_are_apart() -> None:
    total = 0
    for spec in all_entities():
        for variant in spec.variants:
            info = spec.field_info(variant)
            navigation = spec.navigation_fields(variant)
            assert set(info) | set(navigation) == set(spec.fields_for(variant))
            assert not set(info) & set(navigation)
            for name, item in info.items():
                assert item.name == name
                assert item.edm_type in EDM_TYPES
            assert all(spec.fields_for(variant)[name] == "unknown" for name in navigation)
            total += len(info)
    assert total > 10_000


def test_coarse_kinds_follow_the_edm_types() -> None:
    accounts = resolve_entity("Accounts")
    kinds = {"Edm.Guid": "string", "Edm.String": "string", "Edm.DateTime": "string", "Edm.Binary": "string"}
    kinds |= {"Edm.Boolean": "boolean"}
    for name, info in accounts.field_info().items():
        assert accounts.fields[name] == kinds.get(info.edm_type, "number")
    assert "BankAccounts" in resolve_entity("Accounts").navigation_fields("bulk")


def test_descriptions_are_exacts() -> None:
    accounts = resolve_entity("Accounts")
    assert accounts.field_info()["Created"].description == "Creation date"
    entity_type = resolve_entity("sync/Deleted").field_info("sync")["EntityType"].description
    assert entity_type is not None and "2= Accounts" in entity_type
