"""Benchmark: ExactOnlineHook.iter_records over sync/CRM/Accounts streams in constant memory.

Runs the fake Exact Online server in a *separate process* (so its row generation is not in this
process's memory), then iterates 10,000 and 100,000 sync rows through the hook under ``tracemalloc``
and reports API calls (counted by the fake), the peak of Python allocations, and throughput.

    python benchmarks/bench_iter_records.py [--rows 10000 100000] [--cpu-rows 20000]

Then, against one fake, the client's CPU-seconds per 1,000-row page with every Account field
(158) and with 10 fields, for the read path as it was ("before": stdlib ``json`` and requests
scanning the environment on every call) and as it is ("after": orjson, settings resolved once
per session), with the ratios.

Exit status 1 if a run does not make exactly ceil(rows / 1000) API calls or if the peak memory of the
largest run is more than 1.5x that of the smallest (i.e. memory grows with the row count).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import requests

ENTITY = "sync/CRM/Accounts"
SELECT = "ID,Code,Name,City,Country,Email,Phone,Status,Created,Modified,Timestamp"
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-client-secret-0123456789"
PAGE = 1000


def start_fake(rows: int, extra: dict[str, int] | None = None) -> tuple[subprocess.Popen[str], str]:
    """The fake in its own process with ``rows`` Accounts (and ``extra`` rows of other entities) per division."""
    more = [arg for entity, count in (extra or {}).items() for arg in ("--rows", f"{entity}={count}")]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_exactonline.testing",
            "serve",
            "--port",
            "0",
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
            "--rows",
            f"{ENTITY}={rows}",
            *more,
            "--minutely-limit",
            "1000000",
            "--daily-limit",
            "1000000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    if not base_url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"the fake did not start (got {base_url!r})")
    return proc, base_url


def _hook(base_url: str, conn_id: str) -> Any:
    from airflow_provider_exactonline.auth.token_state import TokenState
    from airflow_provider_exactonline.auth.token_stores import InMemoryTokenStore
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    tokens = requests.post(f"{base_url}/_fake/issue_tokens", timeout=10).json()
    now = time.time()
    extras = {
        "division": 1001,
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "token_expires_at": now + float(tokens["expires_in"]),
        "token_obtained_at": now,
    }
    connection = {"conn_type": "exactonline", "host": base_url, "login": CLIENT_ID, "password": CLIENT_SECRET}
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(connection | {"extra": extras})
    return ExactOnlineHook(conn_id, token_store=InMemoryTokenStore(TokenState.from_extras(extras)))


def run(rows: int) -> dict[str, Any]:
    proc, base_url = start_fake(rows)
    try:
        hook = _hook(base_url, f"bench_{rows}")
        # Warm up (connection, config, token manager, catalog, HTTP pool, JSON decoder): one page.
        list(hook.iter_pages(ENTITY, select=SELECT, top=PAGE))

        # Pass 1, untraced: calls and throughput.
        requests.post(f"{base_url}/_fake/reset_counters", timeout=10)
        calls_before = hook.api_calls
        started = time.perf_counter()
        count = sum(1 for record in hook.iter_records(ENTITY, select=SELECT) if record["ID"])
        elapsed = time.perf_counter() - started
        calls = requests.get(f"{base_url}/_fake/stats", timeout=10).json()["requests"]
        hook_calls = hook.api_calls - calls_before

        # Pass 2, under tracemalloc: peak of Python allocations while streaming every row.
        requests.post(f"{base_url}/_fake/reset_counters", timeout=10)
        tracemalloc.start()
        traced = sum(1 for record in hook.iter_records(ENTITY, select=SELECT) if record["ID"])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        traced_calls = requests.get(f"{base_url}/_fake/stats", timeout=10).json()["requests"]
        assert traced == count and traced_calls == calls, "the two passes differ"
        return {
            "rows": count,
            "fake_calls": calls,
            "hook_calls": hook_calls,
            "peak_kib": peak / 1024,
            "seconds": elapsed,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def cpu_per_page(rows: int) -> dict[str, float]:
    """Client CPU-seconds per 1,000-row page: {(fields, mode): seconds}."""
    import types

    from airflow_provider_exactonline.hooks import errors

    proc, base_url = start_fake(rows)
    fast_json = errors.orjson
    results: dict[str, float] = {}
    try:
        for mode in ("before", "after"):
            for label, select in (("all", None), ("10", SELECT)):
                hook = _hook(base_url, f"bench_cpu_{mode}_{label}")
                if mode == "before":
                    errors.orjson = types.SimpleNamespace(loads=json.loads)  # type: ignore[assignment]
                    hook.session.trust_env = True
                    hook.session.proxies.clear()
                list(hook.iter_pages(ENTITY, select=select, top=PAGE))  # warm-up
                started = time.process_time()
                pages = sum(1 for _ in hook.iter_pages(ENTITY, select=select))
                results[f"{label}/{mode}"] = (time.process_time() - started) / pages
                errors.orjson = fast_json
    finally:
        errors.orjson = fast_json
        proc.terminate()
        proc.wait(timeout=10)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--cpu-rows", type=int, default=20_000, help="rows per CPU measurement (0: skip)")
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-home-"))

    results = [run(rows) for rows in args.rows]
    print(f"{'rows':>9} {'API calls':>9} {'peak KiB':>9} {'seconds':>8} {'rows/s':>9}")
    ok = True
    for result in results:
        print(
            f"{result['rows']:>9,} {result['fake_calls']:>9} {result['peak_kib']:>9.0f} "
            f"{result['seconds']:>8.2f} {result['rows'] / result['seconds']:>9,.0f}"
        )
        expected = math.ceil(result["rows"] / PAGE)
        if result["fake_calls"] != expected or result["hook_calls"] != expected:
            print(f"  FAIL: expected exactly {expected} API calls", file=sys.stderr)
            ok = False
    small, large = results[0], results[-1]
    ratio = large["peak_kib"] / small["peak_kib"]
    print(
        f"rows x{large['rows'] / small['rows']:.0f} -> peak memory x{ratio:.2f}, "
        f"time x{large['seconds'] / small['seconds']:.1f}"
    )
    if len(results) > 1 and ratio > 1.5:
        print("  FAIL: peak memory grows with the row count", file=sys.stderr)
        ok = False
    if args.cpu_rows:
        cpu = cpu_per_page(args.cpu_rows)
        print(f"client CPU-seconds per {PAGE}-row page ({args.cpu_rows:,} rows each):")
        for label, name in (("all", "all fields"), ("10", "10 fields")):
            before, after = cpu[f"{label}/before"], cpu[f"{label}/after"]
            print(f"  {name:>10}: before {before:.4f}  after {after:.4f}  after/before x{after / before:.2f}")
        print(f"  all/10 fields after: x{cpu['all/after'] / cpu['10/after']:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
