"""Benchmark: the SQL mirror's load into PostgreSQL, and the API calls of one hourly mirror run.

1. Rows/s: a real export run of crm/Accounts (every catalog field, JSON Lines, from the fake through
   ``DivisionExport``) is replicated to N rows (new ID and Timestamp per row, 100,000 rows per part) and
   applied by ``MirrorLoader`` (COPY path) to a fresh database on 127.0.0.1:5432, dropped afterwards. Each
   size runs in a child process so its peak RSS (``ru_maxrss``) is its own. Prints wall rows/s, client
   and server (the PostgreSQL backend's) CPU-seconds, peak RSS, and the RSS ratio largest / smallest size.
2. API calls: a fake with every sync entity in two divisions; a full mirror, a few changes, then one
   hourly incremental run counted at the fake's request log, with one shared ``sync/Deleted`` read per
   division vs each entity reading its own deletions.

    python benchmarks/bench_load.py                      # 100,000 rows, then the API calls
    python benchmarks/bench_load.py --rows 100000 1000000
    python benchmarks/bench_load.py --skip-calls --rows 20000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench_iter_records import _hook

PART_ROWS = 100_000


def _admin() -> Any:
    import psycopg2

    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    return admin


class Database:
    """A database of its own for the benchmark (``AIRFLOW_CONN_BENCH_DB``), dropped on exit."""

    def __enter__(self) -> str:
        self.name = f"exactonline_bench_load_{uuid.uuid4().hex[:8]}"
        admin = _admin()
        admin.cursor().execute(f'CREATE DATABASE "{self.name}"')
        admin.close()
        os.environ["AIRFLOW_CONN_BENCH_DB"] = f"postgres://postgres@127.0.0.1:5432/{self.name}"
        return self.name

    def __exit__(self, *exc: object) -> None:
        admin = _admin()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        admin.close()


def sample_run(fake: Any, root: Path) -> Path:
    """A real export run (a full load of crm/Accounts, every field) from the fake."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.operators.export import DivisionExport
    from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore

    job = DivisionExport(
        hook=_hook(fake.base_url, "bench_load_sample"),
        conn_id="bench_load_sample",
        spec=resolve_entity("crm/Accounts"),
        entity="crm/Accounts",
        mode="incremental",
        division=1001,
        base=ObjectStoragePath(f"file://{root}"),
        run_name="sample",
        run_id="sample",
        try_number=1,
        include_deletes=False,
        watermark_store=MemoryWatermarkStore(),
        watermark_id="bench.sample",
    )
    job.run()
    return Path(str(job.final_dir.path))


def replicate(sample: Path, rows: int, root: Path) -> Path:
    """A run of ``rows`` rows: the sample's records cycled, each with a new ID and Timestamp."""
    import orjson

    records = [orjson.loads(line) for p in sorted(sample.glob("part-*.jsonl")) for line in p.open("rb")]
    manifest = json.loads((sample / "_manifest.json").read_text())
    run = root / f"run-{rows}"
    run.mkdir(parents=True)
    parts = []
    for start in range(0, rows, PART_ROWS):
        name = f"part-{len(parts):05d}.jsonl"
        count = min(PART_ROWS, rows - start)
        with (run / name).open("wb") as fh:
            for i in range(start, start + count):
                record = records[i % len(records)]
                record["ID"], record["Timestamp"] = str(uuid.UUID(int=i + 1)), 1000 + i
                fh.write(orjson.dumps(record) + b"\n")
        parts.append({"file": name, "rows": count})
    manifest.update(parts=parts, rows=rows, deleted_parts=[], started_at=f"bench-{rows}")
    (run / "_manifest.json").write_text(json.dumps(manifest))
    return run


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_once(run: str) -> dict[str, Any]:
    """In a child process: apply one run; wall time, client CPU, the backend's CPU, peak RSS."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.mirror.loader import MirrorLoader
    from airflow_provider_exactonline.mirror.schema import table_for

    server = {"pids": [], "cpu": {}}

    class Hook(PostgresHook):  # notes its backends' pids; a thread samples their CPU while they live
        def get_conn(self) -> Any:
            conn = super().get_conn()
            server["pids"].append(conn.info.backend_pid)
            return conn

    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in list(server["pids"]):
                with contextlib.suppress(OSError):
                    server["cpu"][pid] = _cpu_seconds(pid)
            done.wait(0.1)

    threading.Thread(target=sample, daemon=True).start()
    loader = MirrorLoader(Hook(postgres_conn_id="bench_db"), table_for(resolve_entity("crm/Accounts")))
    started, cpu = time.perf_counter(), time.process_time()
    result = loader.apply_run(ObjectStoragePath(f"file://{run}"), 1001)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    done.set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rows": result["rows"], "wall": wall, "cpu": cpu, "server_cpu": sum(server["cpu"].values()), "rss": peak}


def bench_rows(sizes: list[int]) -> None:
    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.mirror.schema import table_for
    from airflow_provider_exactonline.testing import FakeExactOnline

    fields = len(table_for(resolve_entity("crm/Accounts")).columns)
    print(f"crm/Accounts, {fields} columns, COPY into staging + one INSERT ... ON CONFLICT (PostgreSQL)")
    with tempfile.TemporaryDirectory() as tmp:
        with FakeExactOnline(rows={"crm/Accounts": 1000}, minutely_limit=None, daily_limit=None) as fake:
            sample = sample_run(fake, Path(tmp) / "sample")
        peaks = {}
        for rows in sizes:
            run = replicate(sample, rows, Path(tmp))
            mib = sum(p.stat().st_size for p in run.iterdir()) / 2**20
            with Database():
                child = subprocess.run(
                    [sys.executable, __file__, "--one", str(run)], capture_output=True, text=True, check=False
                )
            if child.returncode != 0:
                raise SystemExit(child.stderr[-3000:])
            out = json.loads(child.stdout.strip().splitlines()[-1])
            peaks[rows] = out["rss"]
            print(
                f"{rows:>9} rows ({mib:,.0f} MiB JSON Lines): {rows / out['wall']:>7.0f} rows/s wall, "
                f"client {rows / out['cpu']:>7.0f} rows/CPU-s, server {rows / max(out['server_cpu'], 1e-9):>6.0f} "
                f"rows/CPU-s, peak RSS {out['rss'] / 1024:.0f} MiB"
            )
            for path in run.iterdir():
                path.unlink()
            run.rmdir()
        if len(peaks) > 1:
            small, large = min(peaks), max(peaks)
            print(f"peak RSS {large:,} / {small:,} rows: {peaks[large] / peaks[small]:.2f}x")


def bench_calls() -> None:
    """API calls of one hourly run of every sync entity in two divisions: shared vs per-entity deletions."""
    from airflow_provider_exactonline.mirror.dag import mirror_deletions, mirror_one, sync_entity_names
    from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore
    from airflow_provider_exactonline.testing import FakeExactOnline

    entities = sync_entity_names()
    divisions = [1001, 1002]
    rows = {e: 5 for e in entities}
    fake_server = FakeExactOnline(rows=rows, minutely_limit=None, daily_limit=None)
    with tempfile.TemporaryDirectory() as tmp, Database(), fake_server as fake:
        hook = _hook(fake.base_url, "bench_load_calls")

        def run(dag_id: str, shared: bool, store: Any, run_id: str) -> None:
            common = {"exactonline_conn_id": "bench_load_calls", "path": f"file://{tmp}", "run_id": run_id}
            for division in divisions:
                if shared:
                    mirror_deletions(
                        **common,
                        division=division,
                        entities=entities,
                        watermark_id=f"{dag_id}.deletions",
                        watermark_store=store,
                        hook=hook,
                    )
                for entity in entities:
                    mirror_one(
                        **common,
                        db_conn_id="bench_db",
                        entity=entity,
                        division=division,
                        watermark_id=f"{dag_id}.mirror",
                        table_prefix=f"{dag_id}_",
                        watermark_store=store,
                        deletions_watermark_id=f"{dag_id}.deletions" if shared else None,
                        hook=hook,
                    )

        stores = {"shared": MemoryWatermarkStore(), "own": MemoryWatermarkStore()}
        for mode, store in stores.items():
            run(mode, mode == "shared", store, "full")  # the first run: a full mirror
        accounts = [r["ID"] for r in fake.records("crm/Accounts", 1001)]
        fake.create_record("crm/Accounts", 1001, {"Name": "Bench Nieuw BV"})
        fake.update_record("crm/Accounts", 1001, accounts[0], {"Name": "Renamed"})
        fake.delete_record("crm/Accounts", 1001, accounts[1])
        fake.delete_record("crm/Contacts", 1002, next(iter(fake.records("crm/Contacts", 1002)))["ID"])
        calls = {}
        for mode, store in stores.items():
            fake.reset_counters()
            run(mode, mode == "shared", store, "hourly")
            per_endpoint = Counter(fake.stats()["requests_per_endpoint"])
            deleted = sum(n for e, n in per_endpoint.items() if e.lower().endswith("/sync/deleted"))
            calls[mode] = (sum(per_endpoint.values()), deleted)
    n = len(entities)
    print(f"One hourly run, {n} sync entities x {len(divisions)} divisions (a create, an update, two deletes):")
    for mode, label in (("shared", "one sync/Deleted per division"), ("own", "sync/Deleted per entity")):
        total, deleted = calls[mode]
        print(f"  {label:30}: {total:>4} API calls ({deleted} of them sync/Deleted)")
    saved = calls["own"][0] - calls["shared"][0]
    print(f"  saved: {saved} calls per run ({saved / len(divisions):.0f} per division)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000], help="sizes (e.g. 100000 1000000)")
    parser.add_argument("--skip-calls", action="store_true", help="only the rows/s part")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child: load this run directory
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")
    if args.one:
        print(json.dumps(load_once(args.one)))
        return
    bench_rows(sorted(args.rows))
    if not args.skip_calls:
        bench_calls()


if __name__ == "__main__":
    main()
