"""Exactly once on real PostgreSQL: kill -9 mid-load then rerun; the same run twice; shared sync/Deleted runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from airflow_db import ctx
from support import assert_equal, state_rows, table_rows

from airflow_provider_exactonline.catalog import resolve_entity
from airflow_provider_exactonline.mirror.loader import MirrorLoader
from airflow_provider_exactonline.mirror.schema import table_for
from airflow_provider_exactonline.operators.exactonline import ExactOnlineToObjectStorageOperator
from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore

DIVISION = 1001

#: The load in a child process. Its log handler waits a little after each batch sent (a slow network),
#: so the parent can kill it between batches, with the transaction open.
CHILD = textwrap.dedent(
    """
    import logging, sys, time
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from airflow.sdk import ObjectStoragePath
    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.mirror.loader import MirrorLoader
    from airflow_provider_exactonline.mirror.schema import table_for

    class Slow(logging.Handler):
        def emit(self, record):
            print(record.getMessage(), flush=True)
            if record.getMessage().startswith("Sent"):
                time.sleep(0.5)

    log = logging.getLogger("mirror-child")
    log.setLevel(logging.INFO)
    log.addHandler(Slow())
    loader = MirrorLoader(PostgresHook(postgres_conn_id="mirror_db"), table_for(resolve_entity("crm/Accounts")),
                          log=log, batch_rows=500)
    print("result", loader.apply_run(ObjectStoragePath(sys.argv[1]), int(sys.argv[2])), flush=True)
    """
)


def export(conn: dict[str, Any], tmp_path: Any, store: MemoryWatermarkStore, run: str) -> Any:
    from airflow.sdk import ObjectStoragePath

    op = ExactOnlineToObjectStorageOperator(
        task_id="export",
        entity="crm/Accounts",
        divisions=DIVISION,
        mode="incremental",
        path=str(tmp_path / "exports"),
        rows_per_part=1000,
        watermark_store=store,
        **conn,
    )
    return ObjectStoragePath(op.execute(ctx(run))["divisions"][0]["path"])


def relation_exists(hook: Any, name: str) -> bool:
    conn = hook.get_conn()
    try:
        cur = conn.cursor()
        cur.execute("SELECT to_regclass(%s)", (name,))
        return cur.fetchone()[0] is not None
    finally:
        conn.close()


@pytest.mark.fake_exact_online(rows={"crm/Accounts": 4000, "crm/Contacts": 10})
def test_kill_9_mid_load_then_rerun_equals_the_fake(fake, conn, tmp_path, pg_target):
    store = MemoryWatermarkStore()
    run_dir = export(conn, tmp_path, store, "run0")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir), str(DIVISION)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"},
    )
    assert child.stdout is not None
    sent = []
    for line in child.stdout:
        if line.startswith("Sent"):
            sent.append(line)
            if len(sent) == 3:  # 1500 of 4000 rows are in the staging table, the transaction is open
                child.send_signal(signal.SIGKILL)
                break
        assert not line.startswith("result"), "the load finished before it could be killed"
    assert child.wait(timeout=60) == -signal.SIGKILL
    child.stdout.close()

    # Nothing of the killed load is visible: not the table (created in the same transaction), not the state.
    assert not relation_exists(pg_target.hook, "crm_accounts")
    loader = MirrorLoader(pg_target.hook, table_for(resolve_entity("crm/Accounts")), batch_rows=500)
    assert loader.applied_runs(DIVISION) == set()

    rerun = loader.apply_pending(run_dir.parent, DIVISION)
    assert rerun["runs"] == 1 and rerun["rows"] == 4000
    assert_equal(pg_target.hook, fake, loader)  # no duplicate key (checked), no lost row, every field
    assert len(state_rows(pg_target.hook, "crm_accounts")) == 1

    # The same run again: no change, and the state still has it once.
    before = table_rows(pg_target.hook, loader)
    assert loader.apply_run(run_dir, DIVISION)["applied"] is False
    assert loader.apply_pending(run_dir.parent, DIVISION)["skipped"] == 1
    assert table_rows(pg_target.hook, loader) == before
    assert len(state_rows(pg_target.hook, "crm_accounts")) == 1
