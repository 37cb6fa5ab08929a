"""The fake serves every catalog entity: sync paging, Edm types, each entity's key, writes where writable."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_exactonline.testing import FakeExactOnline
from airflow_provider_exactonline.testing.entities import catalog_entities, edm_types, field_types, spec_of
from tests.testing.conftest import api_session

SYNC_ENTITIES = [e for e in catalog_entities() if e.sync_path]
#: A few entities page through two sync pages (1,001 rows: one full page and one row); the rest a handful.
BIG = {"crm/Accounts", "logistics/Items", SYNC_ENTITIES[-1].name}
ROWS = {e.label: (1001 if e.label in BIG or e.name in BIG else 3) for e in SYNC_ENTITIES}
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeExactOnline, requests.Session]]:
    with FakeExactOnline(rows=ROWS, minutely_limit=None, daily_limit=None) as fake:
        yield fake, api_session(fake.issue_tokens()["access_token"])


def _pages(session: requests.Session, url: str) -> list[list[dict[str, Any]]]:
    pages = []
    next_url: str | None = url
    while next_url:
        response = session.get(next_url, timeout=30)
        assert response.status_code == 200, response.text
        d = response.json()["d"]
        pages.append(d["results"])
        next_url = d.get("__next")
    return pages


def test_the_catalog_has_many_sync_entities() -> None:
    assert len(SYNC_ENTITIES) >= 30


@pytest.mark.parametrize("entity", SYNC_ENTITIES, ids=lambda e: e.label)
def test_every_sync_entity_pages_correctly(served: tuple[FakeExactOnline, requests.Session], entity: Any) -> None:
    fake, session = served
    rows = ROWS[entity.label]
    select = ",".join(field_types(entity, "sync"))
    pages = _pages(session, fake.api_url(entity.sync_path) + f"?$select={select}&$filter=Timestamp gt 1L")
    assert [len(p) for p in pages] == ([1000, 1] if rows == 1001 else [rows])
    stamps = [r["Timestamp"] for page in pages for r in page]
    assert stamps == sorted(stamps) and len(set(stamps)) == rows
    assert set(pages[0][0]) == {"__metadata", *field_types(entity, "sync")}
    assert fake.record_count(entity.label) == rows


_CHECKS = {
    "Edm.Guid": lambda v: isinstance(v, str) and GUID.match(v),
    "Edm.Int16": lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**15,
    "Edm.Int32": lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**31,
    "Edm.Int64": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "Edm.Double": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "Edm.Decimal": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "Edm.Boolean": lambda v: isinstance(v, bool),
    "Edm.DateTime": lambda v: isinstance(v, str) and re.fullmatch(r"/Date\(-?\d+\)/", v),
    "Edm.String": lambda v: isinstance(v, str),
}


def test_generated_values_are_typed_from_the_catalog() -> None:
    seen: set[str] = set()
    with FakeExactOnline() as fake:
        for entity in catalog_entities():
            spec = spec_of(entity)
            if not entity.generic or spec is None:
                continue
            row = next(fake.records(entity.label), None)
            assert row is not None, entity.label
            for name, edm in edm_types(spec, spec.primary_variant).items():
                if edm in _CHECKS and name in row:
                    assert _CHECKS[edm](row[name]), f"{entity.label}.{name} ({edm}) = {row[name]!r}"
                    seen.add(edm)
    assert {"Edm.Guid", "Edm.Boolean", "Edm.DateTime", "Edm.String"} <= seen


def test_an_entity_is_read_by_its_own_key(served: tuple[FakeExactOnline, requests.Session]) -> None:
    fake, session = served
    entity = next(e for e in catalog_entities() if e.generic and e.key != "ID" and e.path and "GET" in e.methods)
    row = next(fake.records(entity.label))
    key = row[entity.key]
    literal = str(key) if entity.int_key else f"guid'{key}'"
    response = session.get(fake.api_url(f"{entity.path}({literal})"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["d"][entity.key] == key


def test_writes_only_where_the_catalog_allows_them(served: tuple[FakeExactOnline, requests.Session]) -> None:
    fake, session = served
    read_only = next(e for e in catalog_entities() if e.generic and e.path and "POST" not in e.methods)
    assert session.post(fake.api_url(read_only.path), json={}, timeout=10).status_code == 405
    assert session.post(fake.api_url("bulk/CRM/Accounts"), json={"Name": "x"}, timeout=10).status_code == 405
    created = session.post(fake.api_url("webhooks/WebhookSubscriptions"), json={"CallbackURL": "http://x"}, timeout=10)
    assert created.status_code == 201, created.text
    key = created.json()["d"]["ID"]
    assert fake.get_record("webhooks/WebhookSubscriptions", key)["CallbackURL"] == "http://x"
    refused = session.post(fake.api_url("webhooks/WebhookSubscriptions"), json={"NoSuchField": 1}, timeout=10)
    assert refused.status_code == 400 and "NoSuchField" in refused.text


def test_memory_stays_flat_with_row_count() -> None:
    import tracemalloc

    def traced(rows: int) -> int:
        tracemalloc.start()
        with FakeExactOnline(rows={e.label: rows for e in SYNC_ENTITIES}) as fake:
            for entity in SYNC_ENTITIES:
                assert fake.record_count(entity.label) == rows
            size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    small, large = traced(1_000), traced(1_000_000)
    assert large < small * 1.5 + 200_000, (small, large)
