"""A task killed (SIGKILL) mid-export and retried: exactly the source rows, none lost, none twice, and the
watermark untouched by the killed try.

The export runs as a real Airflow task in a separate process (``dag.test()`` of a one-task DAG, so
tokens and the watermark go through the Task SDK into Variables of that process's metadata DB),
against the fake server running in this test process with latency switched on. The retry is the
same DAG run (same logical date), so it is try 2 of the same task instance.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from airflow_provider_exactonline.operators.export import iter_output_records

DAG_FILE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_exactonline.operators.exactonline import ExactOnlineToObjectStorageOperator

with DAG("exactonline_kill_test", schedule=None, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)) as dag:
    ExactOnlineToObjectStorageOperator(
        task_id="export", exactonline_conn_id="exactonline_kill", entity="crm/Accounts", divisions=1001,
        mode="incremental", path="{out}", rows_per_part=1000, select="ID,Code,Name,Timestamp",
    )
"""

RUNNER = """
import datetime as dt, json, os, sys
from airflow.utils.db import initdb
initdb()
from airflow.models import Variable
key = "exactonline_watermark__exactonline_kill__crm_Accounts__1001"
print("WATERMARK_BEFORE=" + json.dumps(Variable.get(key, default_var=None)), flush=True)
sys.path.insert(0, os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
from kill_dag import dag
when = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)
run = dag.test(logical_date=when, run_after=when)  # same run_id both times: the second call is a retry
print("STATE=" + str(run.state), flush=True)
print("WATERMARK_AFTER=" + json.dumps(Variable.get(key, default_var=None)), flush=True)
"""


@pytest.mark.fake_exact_online(rows={"crm/Accounts": 3500}, minutely_limit=None)
def test_killed_export_is_retried_exactly_once(fake, tmp_path):
    from airflow_db import connection_json

    home, out, dags = tmp_path / "home", tmp_path / "out", tmp_path / "dags"
    for d in (home, out, dags):
        d.mkdir()
    (dags / "kill_dag.py").write_text(DAG_FILE.format(out=f"file://{out}"))
    (tmp_path / "runner.py").write_text(textwrap.dedent(RUNNER))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_EXACTONLINE_KILL": connection_json(fake),
        }
    )
    tmp_root = out / "crm" / "Accounts" / "division=1001" / "_tmp"

    fake.set_latency(0.6)
    killed = subprocess.Popen(
        [sys.executable, str(tmp_path / "runner.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if list(tmp_root.glob("*.try-*/part-00001.jsonl")):  # part 0 complete, part 1 being written
                break
            assert killed.poll() is None, killed.stdout.read()[-3000:] if killed.stdout else ""
            time.sleep(0.05)
        else:
            pytest.fail("the export never got to its second part")
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
    assert killed.returncode == -signal.SIGKILL
    run_dirs = [p for p in (out / "crm" / "Accounts" / "division=1001").iterdir() if p.name != "_tmp"]
    assert run_dirs == []  # nothing visible under a final name
    (killed_try,) = [p.name for p in tmp_root.glob("*.try-*")]
    assert list(tmp_root.glob("*.try-*/part-00000.jsonl"))  # the killed try did write parts

    fake.set_latency(0.0)
    retry = subprocess.run(
        [sys.executable, str(tmp_path / "runner.py")], env=env, capture_output=True, text=True, timeout=240
    )
    output = retry.stdout + retry.stderr
    assert "STATE=success" in output, output[-4000:]
    before = next(line for line in retry.stdout.splitlines() if line.startswith("WATERMARK_BEFORE="))
    assert json.loads(before.split("=", 1)[1]) is None  # the killed try committed nothing

    (final,) = [p for p in (out / "crm" / "Accounts" / "division=1001").iterdir() if p.name != "_tmp"]
    manifest = json.loads((final / "_manifest.json").read_text())
    assert killed_try.startswith(final.name + ".try-")  # same DAG run, retried
    assert manifest["rows"] == 3500
    from airflow.sdk import ObjectStoragePath

    exported = [r["ID"] for r in iter_output_records(ObjectStoragePath(f"file://{final}"))]
    source = [r["ID"] for r in fake.records("crm/Accounts", 1001)]
    assert len(exported) == len(set(exported)) == len(source)  # none twice
    assert set(exported) == set(source)  # none lost
    assert list(tmp_root.iterdir()) == []  # the killed try's leftovers are gone
    after = next(line for line in retry.stdout.splitlines() if line.startswith("WATERMARK_AFTER="))
    committed = json.loads(json.loads(after.split("=", 1)[1]))
    assert (
        committed["timestamp"]
        == manifest["watermark"]["to"]
        == max(r["Timestamp"] for r in fake.records("crm/Accounts", 1001))
    )
