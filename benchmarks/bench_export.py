"""Benchmark: export rows per client CPU-second, all fields vs 10 fields, and peak RSS.

Runs the fake Exact Online server in a *separate process* (its CPU is not counted), then exports
crm/Accounts of one division to JSON Lines with ``DivisionExport`` (a first incremental run, i.e. a full
load through ``sync/``) and measures ``time.process_time()`` of this process only. Each size runs in a
fresh child process so its peak RSS (``ru_maxrss``) is its own.

    python benchmarks/bench_export.py            # 100,000 rows
    python benchmarks/bench_export.py 1000000    # and 1,000,000 rows

Prints rows per CPU-second, peak RSS and the ratios (all / 10 fields, largest / smallest size).
Exit status 1 if an export does not write every row.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_iter_records import _hook, start_fake  # the same fake (sync/CRM/Accounts rows) and hook

ENTITY = "crm/Accounts"
SELECT_10 = ["ID", "Code", "Name", "City", "Country", "Email", "Phone", "Status", "Modified", "Timestamp"]


def export_once(base_url: str, select: list[str] | None, root: Path) -> dict[str, Any]:
    """One export in this process; returns rows, client CPU-seconds and peak RSS (KiB)."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.operators.export import DivisionExport
    from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore

    hook = _hook(base_url, "bench_export")  # a connection to division 1001 with fresh tokens
    job = DivisionExport(
        hook=hook,
        conn_id="bench_export",
        spec=resolve_entity(ENTITY),
        entity=ENTITY,
        mode="incremental",  # no watermark yet: a full load through sync/
        division=1001,
        base=ObjectStoragePath(f"file://{root}"),
        run_name="bench",
        run_id="bench",
        try_number=1,
        select=select or "*",
        rows_per_part=1_000_000,
        include_deletes=False,
        watermark_store=MemoryWatermarkStore(),
        watermark_id="bench.export",
    )
    started, cpu = time.perf_counter(), time.process_time()
    result = job.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - started
    return {
        "rows": int(result.get("rows") or 0),
        "cpu": cpu,
        "wall": wall,
        "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def child(base_url: str, fields: str) -> None:
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-home-"))
    with tempfile.TemporaryDirectory() as root:
        print(json.dumps(export_once(base_url, None if fields == "all" else SELECT_10, Path(root))))


def measure(base_url: str, fields: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", base_url, fields], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2])
        return 0
    sizes = [100_000] + [int(a) for a in argv if a.isdigit() and int(a) != 100_000]
    results: dict[tuple[int, str], dict[str, Any]] = {}
    ok = True
    for rows in sizes:
        proc, base_url = start_fake(rows)
        try:
            for fields in ("all", "10"):
                result = results[rows, fields] = measure(base_url, fields)
                if result["rows"] != rows:
                    print(f"  FAIL: {rows} rows expected, {result['rows']} exported", file=sys.stderr)
                    ok = False
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"{ENTITY} -> JSON Lines, client process only (the fake runs in another process)")
    print(f"{'rows':>10} {'fields':>6} {'CPU s':>7} {'wall s':>7} {'rows/CPU-s':>11} {'peak RSS MiB':>13}")
    for (rows, fields), r in results.items():
        print(
            f"{rows:>10,} {fields:>6} {r['cpu']:>7.2f} {r['wall']:>7.2f} "
            f"{r['rows'] / r['cpu']:>11,.0f} {r['rss_kib'] / 1024:>13.0f}"
        )

    def speed(r: dict[str, Any]) -> float:
        return float(r["rows"] / r["cpu"])

    for rows in sizes:
        a, b = results[rows, "all"], results[rows, "10"]
        print(
            f"{rows:,} rows: 10 fields vs all fields: rows/CPU-s x{speed(b) / speed(a):.1f}, "
            f"peak RSS x{b['rss_kib'] / a['rss_kib']:.2f}"
        )
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        for fields in ("all", "10"):
            s, lg = results[small, fields], results[large, fields]
            print(
                f"{fields} fields, {large:,} vs {small:,} rows: rows/CPU-s "
                f"x{speed(lg) / speed(s):.2f}, peak RSS x{lg['rss_kib'] / s['rss_kib']:.2f}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
