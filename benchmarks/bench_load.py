"""Benchmark: MirrorLoader applying one export run of crm/Accounts rows (all catalog fields) into PostgreSQL.

Writes a synthetic run directory (JSON Lines parts + ``_manifest.json``), applies it to a fresh database on
127.0.0.1:5432 and prints rows/s and the peak of Python allocations per size.

    python benchmarks/bench_load.py [--rows 20000 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path


def write_run(root: Path, rows: int, columns: list[tuple[str, str]]) -> Path:
    run = root / f"run-{rows}"
    run.mkdir(parents=True)
    with (run / "part-00000.jsonl").open("w") as fh:
        for i in range(rows):
            record: dict[str, object] = {}
            for name, edm in columns:
                if name == "ID":
                    record[name] = str(uuid.UUID(int=i + 1))
                elif name == "Timestamp":
                    record[name] = 1000 + i
                elif edm.startswith("Edm.Int"):
                    record[name] = i % 30000
                elif edm in ("Edm.Double", "Edm.Decimal"):
                    record[name] = i / 7
                elif edm == "Edm.Boolean":
                    record[name] = i % 2 == 0
                elif edm == "Edm.DateTime":
                    record[name] = f"/Date({1700000000000 + i})/"
                elif edm == "Edm.Guid":
                    record[name] = None
                else:
                    record[name] = f"{name} {i}"
            fh.write(json.dumps(record) + "\n")
    manifest = {"format": "jsonl", "parts": [{"file": "part-00000.jsonl", "rows": rows}], "deleted_parts": []}
    manifest.update(fields=[c for c, _ in columns], started_at=time.time(), rows=rows)
    (run / "_manifest.json").write_text(json.dumps(manifest))
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000])
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
    import psycopg2
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.mirror.loader import MirrorLoader
    from airflow_provider_exactonline.mirror.schema import table_for

    table = table_for(resolve_entity("crm/Accounts"))
    columns = [(c.name, c.edm_type) for c in table.columns if c.name != "Division"]
    name = f"exactonline_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    os.environ["AIRFLOW_CONN_BENCH_DB"] = f"postgres://postgres@127.0.0.1:5432/{name}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"crm/Accounts, {len(columns)} fields per row, PostgreSQL batched upserts")
            for rows in args.rows:
                run = write_run(Path(tmp), rows, columns)
                loader = MirrorLoader(PostgresHook(postgres_conn_id="bench_db"), table)
                tracemalloc.start()
                started, cpu = time.perf_counter(), time.process_time()
                loader.apply_run(ObjectStoragePath(f"file://{run}"), 1)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                speed = f"{rows / wall:>9.0f} rows/s wall, {rows / cpu:>9.0f} rows/CPU-s"
                print(f"{rows:>9} rows: {speed}, peak {peak / 2**20:.1f} MiB")
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
