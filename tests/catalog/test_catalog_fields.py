"""$select / $filter / $orderby checks: typos raise before any call, with the closest valid names."""

from __future__ import annotations

import pytest

from airflow_provider_exactonline.catalog import all_entities, resolve_entity
from airflow_provider_exactonline.catalog._odata import ODataSyntaxError, filter_fields, orderby_fields
from airflow_provider_exactonline.exceptions import (
    ExactOnlineCatalogError,
    ExactOnlineUnknownField,
)


@pytest.fixture(scope="module")
def accounts():
    return resolve_entity("crm/Accounts")


# -- $select ---------------------------------------------------------------------------------------------


def test_select_accepts_lists_and_comma_strings_in_any_case(accounts) -> None:
    assert accounts.validate_select("id, name ,Code,name", "bulk") == ["ID", "Name", "Code"]
    assert accounts.validate_select(["ID", "Timestamp"], "sync") == ["ID", "Timestamp"]
    assert accounts.validate_select(["accountmanager/FullName"], "standard") == ["AccountManager/FullName"]


def test_misspelled_select_field_names_field_entity_and_closest(accounts) -> None:
    with pytest.raises(ExactOnlineUnknownField) as caught:
        accounts.validate_select(["ID", "Nmae"], "bulk")
    error = caught.value
    message = str(error)
    assert "'Nmae'" in message
    assert "crm/Accounts (bulk/CRM/Accounts)" in message
    assert "closest: Name" in message
    assert error.fields == ["Nmae"]
    assert error.suggestions["Nmae"][0] == "Name"
    assert error.entity == "crm/Accounts"
    assert error.variant == "bulk"
    assert isinstance(error, ExactOnlineCatalogError)


def test_select_error_lists_every_bad_field_and_at_most_five_suggestions(accounts) -> None:
    with pytest.raises(ExactOnlineUnknownField) as caught:
        accounts.validate_select("Foo, Adress, Code", "standard")
    assert caught.value.fields == ["Foo", "Adress"]
    assert all(len(close) <= 5 for close in caught.value.suggestions.values())
    assert caught.value.suggestions["Foo"] == []
    assert "Unknown fields in $select" in str(caught.value)


def test_field_that_exists_only_on_another_variant_says_where(accounts) -> None:
    with pytest.raises(ExactOnlineUnknownField, match="it exists on sync/CRM/Accounts"):
        accounts.validate_select(["Timestamp"], "standard")
    quotations = resolve_entity("crm/Quotations")
    with pytest.raises(ExactOnlineUnknownField, match="it exists on crm/Quotations"):
        quotations.validate_select(["QuotationLines"], "bulk")


def test_star_is_not_a_field_for_validate_select(accounts) -> None:
    with pytest.raises(ExactOnlineCatalogError, match="expand_select"):
        accounts.validate_select("*", "bulk")


def test_expand_select_lists_all_fields_where_exact_demands_select(accounts) -> None:
    bulk_fields = accounts.expand_select("*", "bulk")
    # every field except navigation collections (unknown type), which are links, not data
    assert bulk_fields == [f for f, kind in accounts.fields_for("bulk").items() if kind != "unknown"]
    assert "BankAccounts" in accounts.fields_for("bulk") and "BankAccounts" not in bulk_fields
    assert len(bulk_fields) == 157
    sync_fields = accounts.expand_select(None, "sync")
    assert sync_fields[0] == "Timestamp"
    assert len(sync_fields) == 144
    assert accounts.expand_select(["*"], "sync") == sync_fields
    # standard endpoints return every field without $select: send none
    assert accounts.expand_select("*", "standard") == []
    assert accounts.expand_select(None, "standard") == []
    assert accounts.expand_select("id,name", "standard") == ["ID", "Name"]
    # ... except those Exact refuses without $select
    journal = resolve_entity("GeneralJournalEntries")
    assert journal.select_required("standard")
    assert journal.expand_select(None) == [f for f, kind in journal.fields.items() if kind != "unknown"]
    assert resolve_entity("salesorder/GoodsDeliveries").select_required()
    with pytest.raises(ExactOnlineUnknownField, match="'Nmae'"):
        accounts.expand_select("*, Nmae", "bulk")


def test_select_required_flags() -> None:
    for spec in all_entities():
        for variant in ("bulk", "sync"):
            if spec.has_variant(variant):
                assert spec.select_required(variant)
    required_standard = {s.qualified_name for s in all_entities() if s.path and s.select_required("standard")}
    assert required_standard == {"generaljournalentry/GeneralJournalEntries", "salesorder/GoodsDeliveries"}


def test_entities_without_a_field_list_are_not_checked() -> None:
    count = resolve_entity("read/crm/AccountDocumentsCount")
    assert dict(count.fields) == {}
    assert count.validate_select("Anything") == ["Anything"]
    count.validate_filter("Anything eq 1")


# -- $filter ---------------------------------------------------------------------------------------------


def test_filter_normalizes_field_case_and_skips_literals_keywords_and_functions(accounts) -> None:
    expr = (
        "trim(code) eq 'ABC''s and Nmae' and Modified gt datetime'2024-01-01T00:00:00' "
        "and id eq guid'00000000-0000-0000-0000-000000000000' and substringof('x', Name) "
        "and Timestamp gt 123L and Status ne null and not IsSupplier and startswith(Name,'A') eq true"
    )
    assert accounts.normalize_filter(expr, "sync") == expr.replace("trim(code)", "trim(Code)").replace(
        "and id eq", "and ID eq"
    )


def test_misspelled_filter_field_raises(accounts) -> None:
    with pytest.raises(ExactOnlineUnknownField) as caught:
        accounts.validate_filter("Modifed gt datetime'2024-01-01' and Name eq 'x'", "bulk")
    assert caught.value.fields == ["Modifed"]
    assert caught.value.suggestions["Modifed"][0] == "Modified"
    assert "$filter" in str(caught.value)
    with pytest.raises(ExactOnlineUnknownField, match="it exists on sync/CRM/Accounts"):
        accounts.validate_filter("Timestamp gt 1L", "standard")


def test_navigation_paths_check_the_first_segment(accounts) -> None:
    accounts.validate_filter("AccountManager/FullName eq 'x'")
    with pytest.raises(ExactOnlineUnknownField, match="'AcountManager'"):
        accounts.validate_filter("AcountManager/FullName eq 'x'")


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("Name = 'x'", "unexpected character '='"),
        ("Name eq 'x", "unterminated string literal"),
        ("Name eq 'x' && Code eq 'y'", "OData uses eq"),
    ],
)
def test_unreadable_filter_raises_before_the_call(accounts, expr: str, message: str) -> None:
    with pytest.raises(ExactOnlineCatalogError, match=message):
        accounts.validate_filter(expr)


@pytest.mark.parametrize(
    ("expr", "fields"),
    [
        ("Timestamp gt 12345L", ["Timestamp"]),
        ("EntityType eq 2 and Timestamp gt 1L", ["EntityType", "Timestamp"]),
        ("(A eq 1 or B ne -2.5) and not C", ["A", "B", "C"]),
        ("substringof('eq and or', Name) eq true", ["Name"]),
        ("Amount ge 1.5M and Qty lt 2d and Count le 1e3", ["Amount", "Qty", "Count"]),
        ("tolower(trim(Code)) eq 'x' and year(Date) eq 2024", ["Code", "Date"]),
        ("Account/Name eq 'x' and Item.Code eq X'00ff'", ["Account", "Item"]),
        ("Modified gt datetimeoffset'2024-01-01T00:00:00Z' and ID eq guid'a'", ["Modified", "ID"]),
        ("Guidance eq 'x'", ["Guidance"]),
        ("Value eq null", ["Value"]),
        ("", []),
    ],
)
def test_filter_field_extraction(expr: str, fields: list[str]) -> None:
    assert [ref.field for ref in filter_fields(expr)] == fields


# -- $orderby --------------------------------------------------------------------------------------------


def test_orderby(accounts) -> None:
    assert accounts.normalize_orderby("name desc, modified", "standard") == "Name desc, Modified"
    assert [ref.field for ref in orderby_fields("A asc,B/C desc")] == ["A", "B"]
    with pytest.raises(ExactOnlineUnknownField, match="'Nme'"):
        accounts.normalize_orderby("Nme desc")
    with pytest.raises(ODataSyntaxError):
        orderby_fields("Name sideways")
    with pytest.raises(ExactOnlineCatalogError, match=r"\$orderby"):
        accounts.normalize_orderby("Name,,Code")
