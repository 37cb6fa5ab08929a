"""A task killed (SIGKILL) mid-export and retried: exactly the changes since the committed watermark, none lost,
none twice, and the watermark untouched by the killed try.

The export runs as a real Airflow task in a separate process (``dag.test()`` of a one-task DAG, so
tokens and the watermark go through the Task SDK into Variables of that process's metadata DB),
against the fake server running in this test process:

1. run 1, an incremental run without a watermark (a full load through sync), commits W1;
2. Exact changes: 900 updates and 300 creates (two sync pages) and 3 deletes;
3. run 2 starts with latency switched on and is killed after its first page was written;
4. the retry, try 2 of the same task instance in the same DAG run (the scheduler's step of
   failing the dead try for retry is done by ``dag_subprocess``), exports exactly the changes
   since W1.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from dag_subprocess import DagProcess

from airflow_provider_exactonline.operators.export import iter_output_records, safe_run_name

DAG_FILE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_exactonline.operators.exactonline import ExactOnlineToObjectStorageOperator

with DAG("exactonline_kill_test", schedule=None, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)) as dag:
    ExactOnlineToObjectStorageOperator(
        task_id="export", exactonline_conn_id="exactonline_kill", entity="crm/Accounts", divisions=1001,
        mode="incremental", path="{out}", rows_per_part=500, select="ID,Code,Name,Timestamp",
        retries=1, retry_delay=dt.timedelta(0),
    )
"""
KEY = "exactonline_watermark__exactonline_kill_test.export__exactonline_kill__crm_Accounts__1001"
RUN_1, RUN_2 = "2024-06-01T00:00:00+00:00", "2024-06-01T01:00:00+00:00"


def _records(run_dir, kind="part"):
    from airflow.sdk import ObjectStoragePath

    return list(iter_output_records(ObjectStoragePath(f"file://{run_dir}"), kind))


@pytest.mark.fake_exact_online(rows={"crm/Accounts": 1500}, minutely_limit=None)
def test_killed_incremental_export_is_retried_exactly_once(fake, tmp_path):
    from airflow_db import connection_json

    out = tmp_path / "out"
    division_dir = out / "crm" / "Accounts" / "division=1001"
    tmp_root = division_dir / "_tmp"
    runner = DagProcess(tmp_path, "exactonline_kill", connection_json(fake), DAG_FILE.format(out=f"file://{out}"))

    # 1. The first incremental run: no watermark yet, so a full load through sync; commits W1.
    first = runner.run(RUN_1, [KEY])
    assert first["state"] == "success", first["output"][-4000:]
    w1 = first["after"][KEY]
    assert w1 is not None and json.loads(w1)["timestamp"] == max(
        r["Timestamp"] for r in fake.records("crm/Accounts", 1001)
    )
    first_dir = division_dir / f"{safe_run_name(first['run_id'])}__exactonline_kill_test.export"

    # 2. Changes in Exact after W1: two sync pages of rows, and deletions of rows that did not change.
    ids = [r["ID"] for r in fake.records("crm/Accounts", 1001)]
    for key in ids[:900]:
        fake.update_record("crm/Accounts", 1001, key, {"Name": "Changed after W1"})
    created = {fake.create_record("crm/Accounts", 1001, {"Name": f"New {i}"})["ID"] for i in range(300)}
    deleted = ids[-3:]
    for key in deleted:
        fake.delete_record("crm/Accounts", 1001, key)
    changed = set(ids[:900]) | created

    # 3. Run 2, killed once its first page (parts 0 and 1) is written and it waits for the second.
    fake.set_latency(0.6)
    killed = runner.start(RUN_2, [KEY])
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if list(tmp_root.glob("*.try-*/part-00001.jsonl")):
                break
            assert killed.poll() is None, killed.stdout.read()[-3000:] if killed.stdout else ""
            time.sleep(0.05)
        else:
            pytest.fail("the export never wrote its first page")
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
    assert killed.returncode == -signal.SIGKILL
    assert [p for p in division_dir.iterdir() if p.name != "_tmp"] == [first_dir]  # nothing new under a final name
    (killed_try,) = list(tmp_root.glob("*.try-*"))
    assert (killed_try / "part-00000.jsonl").exists()  # the killed try did write parts
    killed_try_number = int(killed_try.name.rsplit(".try-", 1)[1])

    # 4. The retry: it starts from W1 (untouched by the killed try) and writes exactly the changes.
    fake.set_latency(0.0)
    retry = runner.run(RUN_2, [KEY], retry=True)
    assert retry["state"] == "success", retry["output"][-4000:]
    assert retry["before"][KEY] == w1  # the killed try committed nothing
    final = division_dir / f"{safe_run_name(retry['run_id'])}__exactonline_kill_test.export"
    assert killed_try.name.startswith(final.name + ".try-")  # the same DAG run ...
    manifest = json.loads((final / "_manifest.json").read_text())
    retry_try_number = retry["tis"]["export"][1]
    assert manifest["try_number"] == retry_try_number > killed_try_number  # ... as a later try
    assert manifest["watermark"]["from"] == json.loads(w1)["timestamp"]

    exported = [r["ID"] for r in _records(final)]
    assert len(exported) == len(set(exported)) == len(changed)  # none twice
    assert set(exported) == changed  # none lost, nothing older than W1
    assert sorted(r["EntityKey"] for r in _records(final, "deleted")) == sorted(deleted)
    assert list(tmp_root.iterdir()) == []  # the killed try's leftovers are gone

    committed = json.loads(retry["after"][KEY])
    assert committed["timestamp"] == manifest["watermark"]["to"] > json.loads(w1)["timestamp"]
    assert committed["timestamp"] == max(r["Timestamp"] for r in fake.records("crm/Accounts", 1001))
    assert committed["deleted_timestamp"] == manifest["watermark"]["deleted_to"]
