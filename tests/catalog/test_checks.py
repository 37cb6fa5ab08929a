"""Mandatory filtering and payload checks: what Exact would refuse is refused before the call."""

from __future__ import annotations

import pytest

from airflow_provider_exactonline.catalog import all_entities, resolve_entity, sync_entities
from airflow_provider_exactonline.exceptions import (
    ExactOnlineCatalogError,
    ExactOnlineMandatoryFilterError,
    ExactOnlineUnknownField,
)

# -- mandatory filtering ----------------------------------------------------------------------------------


def test_the_rule_applies_to_standard_and_bulk_of_every_entity_with_a_sync_twin() -> None:
    for spec in all_entities():
        for variant in spec.variants:
            rule = spec.mandatory_filter_fields(variant)
            expected = spec.has_variant("sync") and variant in ("standard", "bulk")
            assert (rule is not None) is expected, (spec.qualified_name, variant)


def test_every_sync_twin_with_a_standard_or_bulk_endpoint_is_covered() -> None:
    covered = [s for s in sync_entities() if s.path or s.bulk_path]
    assert len(covered) == 44  # the other 15 of the 59 are sync-only
    for spec in covered:
        with pytest.raises(ExactOnlineMandatoryFilterError):
            spec.check_mandatory_filter(None, spec.primary_variant)


@pytest.mark.parametrize("variant", ["standard", "bulk"])
@pytest.mark.parametrize("empty", [None, "", "   "])
def test_unfiltered_read_of_accounts_raises_naming_fields_and_sync(variant: str, empty: str | None) -> None:
    accounts = resolve_entity("Accounts")
    with pytest.raises(ExactOnlineMandatoryFilterError) as caught:
        accounts.check_mandatory_filter(empty, variant)
    error = caught.value
    message = str(error)
    assert accounts.variant_path(variant) in message
    assert "has no $filter" in message
    assert "ChamberOfCommerce" in message and "VATNumber" in message
    assert "sync/CRM/Accounts" in message and "full mode" in message
    assert error.allowed_fields == accounts.mandatory_filter_fields(variant)
    assert error.sync_path == "sync/CRM/Accounts"
    assert isinstance(error, ExactOnlineCatalogError)


@pytest.mark.parametrize(
    "expr",
    [
        "Modified gt datetime'2025-01-01T00:00:00'",
        "code eq '  42'",  # any case
        "substringof('x', Name) and InvoiceAttachmentType eq 3",  # one allowed field is enough
        "ID eq guid'00000000-0000-0000-0000-000000000000'",
    ],
)
def test_filter_on_an_allowed_field_passes(expr: str) -> None:
    accounts = resolve_entity("crm/Accounts")
    accounts.check_mandatory_filter(expr, "standard")
    accounts.check_mandatory_filter(expr, "bulk")


def test_filter_on_a_field_outside_the_list_raises() -> None:
    accounts = resolve_entity("crm/Accounts")
    with pytest.raises(ExactOnlineMandatoryFilterError, match="references none of the allowed fields") as caught:
        accounts.check_mandatory_filter("InvoiceAttachmentType eq 3", "standard")
    assert "InvoiceAttachmentType eq 3" in str(caught.value)


def test_sync_and_entities_without_a_twin_have_no_rule() -> None:
    resolve_entity("Accounts").check_mandatory_filter(None, "sync")
    assert resolve_entity("Accounts").mandatory_filter_fields("sync") is None
    payments = resolve_entity("cashflow/Payments")  # bulk, no sync
    assert payments.mandatory_filter_fields("bulk") is None
    payments.check_mandatory_filter(None, "bulk")


def test_unknown_list_means_any_field_counts() -> None:
    contacts = resolve_entity("crm/Contacts")
    assert contacts.mandatory_filter_fields("standard") == ()
    contacts.check_mandatory_filter("Email eq 'a@b.nl'", "standard")
    with pytest.raises(ExactOnlineMandatoryFilterError, match="does not publish the list") as caught:
        contacts.check_mandatory_filter(None, "bulk")
    assert "sync/CRM/Contacts" in str(caught.value)
    with pytest.raises(ExactOnlineMandatoryFilterError):
        contacts.check_mandatory_filter("true", "standard")  # a filter that names no field


def test_items_list_accepts_the_quoted_fields_and_the_unquoted_tail() -> None:
    items = resolve_entity("logistics/Items")
    allowed = items.mandatory_filter_fields("standard")
    assert allowed is not None
    assert allowed[:3] == ("Barcode", "Class_01", "Class_02")
    assert "Modified" in allowed and "ID" in allowed  # after FreeBoolField_05, where the quote is cut off
    assert "AverageCost" not in allowed  # before it and not quoted
    items.check_mandatory_filter("Code eq 'X'", "standard")
    with pytest.raises(ExactOnlineMandatoryFilterError):
        items.check_mandatory_filter("AverageCost gt 1", "bulk")


def test_an_unreadable_filter_is_a_catalog_error() -> None:
    with pytest.raises(ExactOnlineCatalogError, match="Cannot read"):
        resolve_entity("Accounts").check_mandatory_filter("Name == 'x'", "standard")


# -- writes -----------------------------------------------------------------------------------------------


def test_writable_fields_and_accepts_writes() -> None:
    accounts = resolve_entity("Accounts")
    assert accounts.accepts_writes is True
    assert {"Name", "Status", "Code"} <= accounts.writable_fields
    me = resolve_entity("current/Me")
    assert me.accepts_writes is False
    assert me.writable_fields == frozenset()
    # picqer marks read/crm/AccountDocumentsCount Storable, but Exact takes only GET there
    assert resolve_entity("read/crm/AccountDocumentsCount").accepts_writes is False
    for spec in all_entities():
        assert spec.accepts_writes is bool(spec.writable_fields) or not spec.fields
        if spec.accepts_writes:
            assert spec.writable_fields <= set(spec.fields)


def test_validate_payload_accepts_writable_keys_in_any_case() -> None:
    accounts = resolve_entity("Accounts")
    accounts.validate_payload({"Name": "Acme", "status": "C"})
    accounts.validate_payload({"Name": "Acme"}, method="put")


def test_validate_payload_names_unknown_keys_with_closest_matches() -> None:
    accounts = resolve_entity("Accounts")
    with pytest.raises(ExactOnlineUnknownField) as caught:
        accounts.validate_payload({"Nmae": "Acme", "Name": "ok", "Bogus": 1})
    error = caught.value
    assert error.fields == ["Nmae", "Bogus"]
    assert error.suggestions["Nmae"][0] == "Name"
    assert "'Nmae' (closest: Name" in str(error)
    assert "crm/Accounts" in str(error)


def test_validate_payload_refuses_read_only_endpoints_and_missing_methods() -> None:
    with pytest.raises(ExactOnlineCatalogError, match="read-only") as caught:
        resolve_entity("current/Me").validate_payload({"FirstName": "x"})
    assert not isinstance(caught.value, ExactOnlineUnknownField)
    with pytest.raises(ExactOnlineCatalogError, match="does not take PUT"):
        resolve_entity("cashflow/ProcessPayments").validate_payload({}, method="PUT")
