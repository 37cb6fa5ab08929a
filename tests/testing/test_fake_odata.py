"""REST/OData behaviour of the fake: endpoints, paging, query options, Accept, writes and sync/Deleted."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests

from airflow_provider_exactonline.clock import ScaledClock
from airflow_provider_exactonline.testing import FakeExactOnline

from .conftest import api_session

ENDPOINTS = [
    # (path, page size, needs $select)
    ("crm/Accounts", 60, False),
    ("bulk/CRM/Accounts", 1000, True),
    ("sync/CRM/Accounts", 1000, True),
    ("crm/Contacts", 60, False),
    ("bulk/CRM/Contacts", 1000, True),
    ("sync/CRM/Contacts", 1000, True),
    ("salesinvoice/SalesInvoices", 60, False),
    ("bulk/SalesInvoice/SalesInvoices", 1000, True),
    ("sync/SalesInvoice/SalesInvoices", 1000, True),
    ("salesinvoice/SalesInvoiceLines", 60, False),
    ("bulk/SalesInvoice/SalesInvoiceLines", 1000, True),
    ("financial/GLAccounts", 60, False),
    ("bulk/Financial/GLAccounts", 1000, True),
    ("sync/Financial/GLAccounts", 1000, True),
    ("financialtransaction/TransactionLines", 60, False),
    ("bulk/Financial/TransactionLines", 1000, True),
    ("sync/Financial/TransactionLines", 1000, True),
    ("logistics/Items", 60, False),
    ("bulk/Logistics/Items", 1000, True),
    ("sync/Logistics/Items", 1000, True),
]


def pages(session: requests.Session, url: str, params: dict[str, Any] | None = None) -> list[list[dict[str, Any]]]:
    out = []
    response = session.get(url, params=params)
    while True:
        assert response.status_code == 200, response.text
        d = response.json()["d"]
        out.append(d["results"])
        if not d.get("__next"):
            return out
        response = session.get(d["__next"])


@pytest.mark.parametrize(("path", "page", "needs_select"), ENDPOINTS)
def test_every_endpoint_pages_with_its_page_size(clock: ScaledClock, path: str, page: int, needs_select: bool) -> None:
    rows = 1001 if page == 1000 else 61
    entity = path.split("/")[-1]
    with FakeExactOnline(clock=clock, mandatory_filtering=False, rows={entity: rows}, minutely_limit=None) as fake:
        session = api_session(fake.issue_tokens()["access_token"])
        key = (
            "InvoiceID"
            if path.lower().startswith(("salesinvoice/salesinvoices", "bulk/salesinvoice/salesinvoices"))
            else "ID"
        )
        params = {"$select": f"{key},Division"} if needs_select else None
        got = pages(session, fake.api_url(path), params)
        assert [len(p) for p in got] == [page, 1]
        first = got[0][0]
        assert first["Division"] == 1001
        assert first["__metadata"]["uri"].startswith(fake.base_url)
        if "Created" in first:  # SalesInvoiceLines has no Created/Modified in Exact
            assert first["Created"].startswith("/Date(") and first["Created"].endswith(")/")
        assert len({r[key] for p in got for r in p}) == rows
        if needs_select:
            assert set(first) == {"__metadata", key, "Division"}


def test_sync_100000_rows_in_exactly_100_pages(clock: ScaledClock) -> None:
    with FakeExactOnline(
        clock=clock, mandatory_filtering=False, rows={"crm/Accounts": 100_000}, minutely_limit=None
    ) as fake:
        session = api_session(fake.issue_tokens()["access_token"])
        url = fake.api_url("sync/CRM/Accounts")
        got = pages(session, url, {"$select": "ID,Timestamp", "$filter": "Timestamp gt 1L"})
        assert len(got) == 100
        assert fake.count_requests("sync/CRM/Accounts") == 100
        ids = [r["ID"] for p in got for r in p]
        assert len(ids) == 100_000 and len(set(ids)) == 100_000
        stamps = [r["Timestamp"] for p in got for r in p]
        assert stamps == sorted(stamps) and len(set(stamps)) == 100_000
        # Resuming from the max Timestamp gives nothing new.
        again = session.get(url, params={"$select": "ID", "$filter": f"Timestamp gt {stamps[-1]}L"}).json()
        assert again["d"]["results"] == [] and "__next" not in again["d"]


def test_next_link_is_absolute_with_skiptoken(api: requests.Session, fake: FakeExactOnline) -> None:
    d = api.get(fake.api_url("crm/Accounts"), params={"$select": "ID,Name"}).json()["d"]
    assert d["__next"].startswith(fake.api_url("crm/Accounts") + "?")
    assert "$skiptoken=guid'" in d["__next"] and "$select=ID,Name" in d["__next"]
    d = api.get(fake.api_url("sync/CRM/Accounts"), params={"$select": "ID", "$top": 5}).json()["d"]
    assert len(d["results"]) == 5


def test_million_rows_are_lazy(clock: ScaledClock) -> None:
    started = time.perf_counter()
    with FakeExactOnline(
        clock=clock, mandatory_filtering=False, rows={"crm/Accounts": 1_000_000, "logistics/Items": 1_000_000}
    ) as fake:
        session = api_session(fake.issue_tokens()["access_token"])
        assert session.get(fake.api_url("crm/Accounts/$count")).text == "1000000"
        last_stamp = fake.records("crm/Accounts").__next__()["Timestamp"] + 999_998
        tail = session.get(
            fake.api_url("sync/CRM/Accounts"), params={"$select": "ID,Code", "$filter": f"Timestamp gt {last_stamp}L"}
        ).json()["d"]["results"]
        assert len(tail) == 1 and tail[0]["Code"] == f"{1_000_000:>18}"
        key = fake.key_of("crm/Accounts", 999_999)
        single = session.get(fake.api_url(f"crm/Accounts(guid'{key}')")).json()["d"]
        assert single["ID"] == key
    assert time.perf_counter() - started < 5


def test_deterministic_per_seed_and_division(clock: ScaledClock) -> None:
    def first_page(seed: int, division: int) -> list[dict[str, Any]]:
        with FakeExactOnline(clock=clock, mandatory_filtering=False, seed=seed) as fake:
            session = api_session(fake.issue_tokens()["access_token"])
            rows = session.get(fake.api_url("crm/Accounts", division)).json()["d"]["results"]
            return [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows]

    assert first_page(1, 1001) == first_page(1, 1001)
    assert first_page(1, 1001) != first_page(2, 1001)
    assert first_page(1, 1001)[0]["ID"] != first_page(1, 1002)[0]["ID"]


def test_realistic_fields(api: requests.Session, fake: FakeExactOnline) -> None:
    account = api.get(fake.api_url("crm/Accounts")).json()["d"]["results"][0]
    assert len(account["Code"]) == 18 and account["Code"].strip() == "1" and account["Code"].startswith(" ")
    assert account["Name"] and "@" in account["Email"] and account["City"]
    assert account["BankAccounts"] == {"__deferred": {"uri": account["__metadata"]["uri"] + "/BankAccounts"}}
    contact = api.get(fake.api_url("crm/Contacts"), params={"$top": 1}).json()["d"]["results"][0]
    linked = api.get(fake.api_url(f"crm/Accounts(guid'{contact['Account']}')")).json()["d"]
    assert linked["ID"] == contact["Account"]
    line = api.get(fake.api_url("salesinvoice/SalesInvoiceLines"), params={"$top": 1}).json()["d"]["results"][0]
    invoice = api.get(fake.api_url(f"salesinvoice/SalesInvoices(guid'{line['InvoiceID']}')")).json()["d"]
    assert invoice["InvoiceID"] == line["InvoiceID"]


def test_me_and_divisions(api: requests.Session, fake: FakeExactOnline) -> None:
    me = api.get(fake.base_url + "/api/v1/current/Me", params={"$select": "CurrentDivision,UserID"}).json()
    assert set(me["d"]["results"][0]) == {"__metadata", "CurrentDivision", "UserID"}
    divisions = api.get(fake.api_url("system/Divisions")).json()["d"]["results"]
    assert [(d["Code"], d["Description"], d["Current"]) for d in divisions] == [
        (1001, "Fake Company NL", True),
        (1002, "Fake Company BE", False),
    ]
    assert api.get(fake.base_url + "/api/v1/9999/crm/Accounts").status_code == 403


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Code eq '                 3'", [3]),
        ("trim(Code) eq '3'", [3]),
        ("Division eq 1001 and trim(Code) ne '1'", list(range(2, 131))),
        ("Created gt datetime'2021-01-04T09:05:00' and Created le datetime'2021-01-04T09:07:00'", [6, 7]),
        ("Created ge datetime'2021-01-04T09:05:00' and Created lt datetime'2021-01-04T09:07:00'", [6, 7]),
        ("Created lt datetime'2021-01-04'", []),
        ("trim(Code) eq '2' or trim(Code) eq '4'", [2, 4]),
        ("Created lt datetime'2021-01-04T09:02:00'", [1, 2]),
        ("startswith(trim(Code), '12') eq true", [12, *range(120, 130)]),
        ("substringof('@', Email) and trim(Code) eq '5'", [5]),
        ("not (Created ge datetime'2021-01-04T09:03:00')", [1, 2, 3]),
    ],
)
def test_filter_operators(api: requests.Session, fake: FakeExactOnline, expression: str, expected: list[int]) -> None:
    rows = [r for p in pages(api, fake.api_url("crm/Accounts"), {"$filter": expression, "$select": "Code"}) for r in p]
    assert [int(r["Code"]) for r in rows] == expected


def test_filter_by_guid_and_single_entity(api: requests.Session, fake: FakeExactOnline) -> None:
    key = fake.key_of("crm/Accounts", 41)
    rows = api.get(fake.api_url("crm/Accounts"), params={"$filter": f"ID eq guid'{key.upper()}'"}).json()["d"][
        "results"
    ]
    assert [r["ID"] for r in rows] == [key]
    single = api.get(fake.api_url(f"crm/Accounts(guid'{key}')"), params={"$select": "ID,Name"})
    assert set(single.json()["d"]) == {"__metadata", "ID", "Name"}
    missing = api.get(fake.api_url("crm/Accounts(guid'00000000-0000-4000-8000-000000000000')"))
    assert missing.status_code == 404
    assert missing.json()["error"]["message"]["value"]


def test_top_skip_orderby_count(api: requests.Session, fake: FakeExactOnline) -> None:
    top = api.get(fake.api_url("crm/Accounts"), params={"$top": 3, "$skip": 2, "$select": "Code"}).json()["d"]
    assert [int(r["Code"]) for r in top["results"]] == [3, 4, 5] and "__next" not in top
    ordered = pages(api, fake.api_url("crm/Accounts"), {"$orderby": "Code desc", "$select": "Code"})
    codes = [int(r["Code"]) for p in ordered for r in p]
    assert codes == list(range(130, 0, -1))
    assert api.get(fake.api_url("crm/Accounts/$count")).text == "130"
    count = api.get(fake.api_url("crm/Accounts/$count"), params={"$filter": "Created lt datetime'2021-01-04T09:10'"})
    assert count.text == "10" and count.headers["Content-Type"].startswith("text/plain")
    top70 = pages(api, fake.api_url("crm/Accounts"), {"$top": 70, "$select": "ID"})
    assert [len(p) for p in top70] == [60, 10]


@pytest.mark.parametrize(
    ("path", "params", "fragment"),
    [
        ("bulk/CRM/Accounts", {}, "$select is mandatory"),
        ("crm/Accounts", {"$select": "ID,Nope"}, "Could not find a property named 'Nope'"),
        ("crm/Accounts", {"$filter": "Nope eq 1"}, "Could not find a property named 'Nope'"),
        ("crm/Accounts", {"$filter": "Name eq"}, "Syntax error"),
        ("crm/Accounts", {"$filter": "ID eq guid'bad'"}, "Invalid guid literal"),
        ("sync/CRM/Accounts", {"$select": "ID", "$filter": "Name eq 'x'"}, "not allowed on this sync endpoint"),
        ("sync/CRM/Accounts", {}, "$select is mandatory"),
        ("crm/Accounts", {"$top": "x"}, "Invalid value"),
    ],
)
def test_bad_requests_use_exact_error_envelope(
    api: requests.Session, fake: FakeExactOnline, path: str, params: dict[str, str], fragment: str
) -> None:
    response = api.get(fake.api_url(path), params=params)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == ""
    assert fragment in body["error"]["message"]["value"]


def test_unknown_paths_are_404(api: requests.Session, fake: FakeExactOnline) -> None:
    assert api.get(fake.api_url("crm/Nothing")).status_code == 404
    assert api.get(fake.api_url("crm/Nothing")).json()["error"]["message"]["value"]
    assert requests.get(fake.base_url + "/elsewhere", timeout=10).status_code == 404


def test_no_json_without_accept(fake: FakeExactOnline) -> None:
    session = api_session(fake.issue_tokens()["access_token"], accept_json=False)
    response = session.get(fake.api_url("crm/Accounts"), params={"$select": "ID,Name"})
    assert response.status_code == 200
    assert "json" not in response.headers["Content-Type"]
    with pytest.raises(ValueError):
        response.json()
    ns = {
        "a": "http://www.w3.org/2005/Atom",
        "m": "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata",
        "d": "http://schemas.microsoft.com/ado/2007/08/dataservices",
    }
    feed = ET.fromstring(response.content)
    entries = feed.findall("a:entry", ns)
    assert len(entries) == 60
    assert entries[0].find("a:content/m:properties/d:Name", ns).text  # type: ignore[union-attr]
    assert "$skiptoken" in feed.find("a:link[@rel='next']", ns).attrib["href"]  # type: ignore[union-attr]
    error = session.get(fake.api_url("bulk/CRM/Accounts"))
    assert error.status_code == 400 and error.content.startswith(b"<?xml")


def test_writes_timestamps_and_deleted(api: requests.Session, fake: FakeExactOnline) -> None:
    sync = fake.api_url("sync/CRM/Accounts")
    watermark = max(r["Timestamp"] for p in pages(api, sync, {"$select": "Timestamp"}) for r in p)

    created = api.post(
        fake.api_url("crm/Accounts"),
        json={"Name": "New Customer BV", "Code": "900"},
        headers={"Prefer": "return=representation"},
    )
    assert created.status_code == 201
    row = created.json()["d"]
    assert row["Name"] == "New Customer BV" and row["Code"] == f"{'900':>18}" and "City" in row
    assert created.headers["Location"] == row["__metadata"]["uri"]
    minimal = api.post(fake.api_url("crm/Accounts"), json={"Name": "Short"}).json()["d"]
    assert set(minimal) == {"__metadata", "ID", "Name"}

    existing = fake.key_of("crm/Accounts", 0)
    put = api.put(fake.api_url(f"crm/Accounts(guid'{existing}')"), json={"City": "Zwolle"})
    assert put.status_code == 204 and put.content == b""
    delete_key = fake.key_of("crm/Accounts", 1)
    deleted = api.delete(fake.api_url(f"crm/Accounts(guid'{delete_key}')"))
    assert deleted.status_code == 204 and deleted.content == b""
    assert api.get(fake.api_url(f"crm/Accounts(guid'{delete_key}')")).status_code == 404
    assert api.delete(fake.api_url(f"crm/Accounts(guid'{delete_key}')")).status_code == 404

    changed = [
        r
        for p in pages(api, sync, {"$select": "ID,Timestamp,City", "$filter": f"Timestamp gt {watermark}L"})
        for r in p
    ]
    assert [r["ID"] for r in changed] == [row["ID"], minimal["ID"], existing]
    assert changed[-1]["City"] == "Zwolle"
    assert all(r["Timestamp"] > watermark for r in changed)
    assert [r["Timestamp"] for r in changed] == sorted(r["Timestamp"] for r in changed)

    gone = api.get(
        fake.api_url("sync/Deleted"),
        params={
            "$select": "EntityKey,EntityType,Timestamp",
            "$filter": f"Timestamp gt {watermark}L and EntityType eq 2",
        },
    ).json()["d"]["results"]
    assert [(g["EntityKey"], g["EntityType"]) for g in gone] == [(delete_key, 2)]
    assert gone[0]["Timestamp"] > changed[-1]["Timestamp"]
    assert fake.record_count("crm/Accounts") == 131
    full = [r for p in pages(api, fake.api_url("crm/Accounts"), {"$select": "ID"}) for r in p]
    assert len(full) == 131 and delete_key not in {r["ID"] for r in full}


@pytest.mark.parametrize(
    ("entity", "code"),
    [("crm/Contacts", 5), ("financial/GLAccounts", 7), ("logistics/Items", 9), ("salesinvoice/SalesInvoices", 13)],
)
def test_deleted_entity_types(api: requests.Session, fake: FakeExactOnline, entity: str, code: int) -> None:
    key = fake.key_of(entity, 3)
    assert api.delete(fake.api_url(f"{entity}(guid'{key}')")).status_code == 204
    rows = api.get(fake.api_url("sync/Deleted"), params={"$select": "EntityKey,EntityType"}).json()["d"]["results"]
    assert rows == [{"__metadata": rows[0]["__metadata"], "EntityKey": key, "EntityType": code}]


def test_write_errors(api: requests.Session, fake: FakeExactOnline) -> None:
    unknown = api.post(fake.api_url("crm/Accounts"), json={"Name": "x", "Colour": "red"})
    assert unknown.status_code == 400 and "Colour" in unknown.json()["error"]["message"]["value"]
    missing = api.post(fake.api_url("crm/Accounts"), json={"City": "Delft"})
    assert missing.status_code == 400 and missing.json()["error"]["message"]["value"] == "Mandatory: Name"
    assert api.post(fake.api_url("financialtransaction/TransactionLines"), json={}).status_code == 405
    assert api.post(fake.api_url("bulk/CRM/Accounts"), json={"Name": "x"}).status_code == 405
    assert api.put(fake.api_url("crm/Accounts"), json={"Name": "x"}).status_code == 405
    bad_json = api.post(fake.api_url("crm/Accounts"), data=b"{nope", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400


def test_server_side_mutation_helpers(fake: FakeExactOnline, api: requests.Session) -> None:
    before = fake.record_count("crm/Accounts")
    created = fake.create_record("crm/Accounts", data={"Name": "Made by test"})
    updated = fake.update_record("Accounts", key=created["ID"], data={"City": "Delft"})
    assert updated["Timestamp"] > created["Timestamp"] and updated["City"] == "Delft"
    entry = fake.delete_record("crm/Accounts", key=fake.key_of("crm/Accounts", 5))
    assert entry is not None and entry["EntityType"] == 2 and entry["Timestamp"] > updated["Timestamp"]
    assert fake.record_count("crm/Accounts") == before
    rows = list(fake.records("crm/Accounts"))
    assert len(rows) == before and rows[-1]["City"] == "Delft" and "Timestamp" in rows[0]
    got = api.get(fake.api_url(f"crm/Accounts(guid'{created['ID']}')")).json()["d"]
    assert got["Name"] == "Made by test"


def test_paging_survives_deleting_the_last_row_of_a_page(api: requests.Session, fake: FakeExactOnline) -> None:
    first = api.get(fake.api_url("crm/Accounts"), params={"$select": "ID"}).json()["d"]
    fake.delete_record("crm/Accounts", key=first["results"][-1]["ID"])
    rest = pages(api, first["__next"])
    ids = [r["ID"] for r in first["results"]] + [r["ID"] for p in rest for r in p]
    assert len(ids) == 130 and len(set(ids)) == 130


def test_concurrent_clients(fake: FakeExactOnline) -> None:
    from concurrent.futures import ThreadPoolExecutor

    token = fake.issue_tokens()["access_token"]

    def read_all(division: int) -> int:
        session = api_session(token)
        return sum(len(p) for p in pages(session, fake.api_url("bulk/CRM/Contacts", division), {"$select": "ID"}))

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(read_all, [1001, 1002] * 3)) == [150] * 6
