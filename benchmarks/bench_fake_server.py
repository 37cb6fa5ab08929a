"""How fast does the fake Exact Online serve 1,000-row sync pages? (``python benchmarks/bench_fake_server.py``)

Pages through ``sync/CRM/Accounts`` over loopback HTTP with a plain ``requests`` client, latency and
rate limits off, and prints pages/s, rows/s and peak RSS. For scale: Exact itself allows 60 calls a
minute per division, so anything well above 1 page/s means the fake is never the bottleneck.
It also times the same rows generated and JSON-encoded in-process, to show what the HTTP layer adds.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import requests

from airflow_provider_exactonline.testing import FakeExactOnline
from airflow_provider_exactonline.testing.entities import ENTITIES, field_types


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_pages(fake: FakeExactOnline, select: str, max_pages: int) -> tuple[int, int, float]:
    session = requests.Session()
    session.headers.update(
        {"Authorization": f"Bearer {fake.issue_tokens()['access_token']}", "Accept": "application/json"}
    )
    url: str | None = fake.api_url("sync/CRM/Accounts") + f"?$select={select}&$filter=Timestamp gt 1L"
    pages = rows = 0
    started = time.perf_counter()
    while url and pages < max_pages:
        response = session.get(url)
        response.raise_for_status()
        d = response.json()["d"]
        pages += 1
        rows += len(d["results"])
        url = d.get("__next")
    return pages, rows, time.perf_counter() - started


def serialisation_only(fake: FakeExactOnline, fields: list[str], pages: int) -> float:
    """Seconds per page to build and json.dumps 1,000 rows in-process (no HTTP, no parsing)."""
    division = fake._data[fake.current_division]
    store = division.stores["Accounts"]
    types = field_types(store.entity, "sync")
    started = time.perf_counter()
    for page in range(pages):
        rows = []
        for i in range(page * 1000, page * 1000 + 1000):
            row = division.generated(store, i)
            rows.append({n: row.get(n, None if types.get(n) != "number" else 0) for n in fields})
        json.dumps({"d": {"results": rows}}, separators=(",", ":"))
    return (time.perf_counter() - started) / pages


def memory_for_rows(rows: int) -> int:
    """Peak traced bytes of a fake holding ``rows`` accounts and reading its first and last sync page."""
    import tracemalloc

    tracemalloc.start()
    with FakeExactOnline(rows={"crm/Accounts": rows}, minutely_limit=None, daily_limit=None) as fake:
        session = requests.Session()
        session.headers.update(
            {"Authorization": f"Bearer {fake.issue_tokens()['access_token']}", "Accept": "application/json"}
        )
        url = fake.api_url("sync/CRM/Accounts") + "?$select=ID,Timestamp,Name&$filter=Timestamp gt {}L"
        first = fake.records("crm/Accounts")
        base = next(first)["Timestamp"] - 1
        for after in (base, base + rows - 1000):
            response = session.get(url.format(after))
            response.raise_for_status()
            assert len(response.json()["d"]["results"]) == 1000
        peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--pages", type=int, default=100, help="pages per run (max)")
    args = parser.parse_args()

    accounts = next(e for e in ENTITIES if e.name == "Accounts")
    all_fields = list(field_types(accounts, "sync"))
    with FakeExactOnline(rows={"crm/Accounts": args.rows}, minutely_limit=None, daily_limit=None) as fake:
        print(f"fake at {fake.base_url}, {args.rows:,} accounts, latency off, rate limits off")
        for label, select in (
            (f"all {len(all_fields)} fields", ",".join(all_fields)),
            ("3 fields (ID,Timestamp,Name)", "ID,Timestamp,Name"),
        ):
            pages, rows, seconds = run_pages(fake, select, args.pages)
            per_page = seconds / pages
            fields = select.split(",")
            raw = serialisation_only(fake, fields, min(pages, 10))
            print(
                f"sync pages, {label:<28}: {pages:4d} pages, {rows:7,d} rows in {seconds:6.2f} s = "
                f"{pages / seconds:7.1f} pages/s, {rows / seconds:9,.0f} rows/s; "
                f"generate+json.dumps alone {raw * 1000:5.1f} ms/page, full HTTP page {per_page * 1000:5.1f} ms "
                f"({per_page / raw:3.1f}x)"
            )
    print(f"peak RSS (server + client in one process): {_peak_rss_mb():.0f} MB")
    small, large = memory_for_rows(100_000), memory_for_rows(1_000_000)
    print(
        f"memory (traced peak, first + last sync page): 100,000 rows {small / 1e6:.1f} MB, "
        f"1,000,000 rows {large / 1e6:.1f} MB, ratio {large / small:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
