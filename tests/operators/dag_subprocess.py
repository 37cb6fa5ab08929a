"""Run a one-file DAG with ``dag.test()`` in a separate Python process, as a worker would run it.

The process gets its own AIRFLOW_HOME and SQLite metadata DB (kept across calls in the same
``home``, so a second call sees the Variables and task instances of the first), the connection in
an ``AIRFLOW_CONN_*`` env var, and the DAG file in its own DAGs folder (``dag.test()`` needs a DAG
it can serialize from a bundle). ``retry=True`` runs the next try of an existing run instead of
replacing the run as ``dag.test()`` does. It prints one ``RESULT=`` JSON line: the run's state, each task
instance's state and try number, and the requested Variables before and after the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RUNNER = """
import datetime as dt, json, os, sys
from airflow.utils.db import initdb
initdb()
from airflow.models import Variable
keys = json.loads(os.environ["DAG_SUBPROCESS_VARIABLES"])
before = {k: Variable.get(k, default_var=None) for k in keys}
print("VARIABLES_BEFORE=" + json.dumps(before), flush=True)
sys.path.insert(0, os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
dag = __import__(sys.argv[1]).dag
when = dt.datetime.fromisoformat(sys.argv[2])
if sys.argv[3] == "retry":
    # The scheduler's part, for a task whose process died (no heartbeat) with retries left: the
    # task instance, still "running" in the DB, becomes up_for_retry, and the next loop runs its
    # next try in the same DAG run. dag.test() would replace the run and clear its task instances
    # (try 1 again), so it is pointed at the existing run instead.
    from unittest import mock
    from sqlalchemy import select
    from airflow.models.dagrun import DagRun
    from airflow.serialization.definitions.dag import SerializedDAG
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    def existing_run(*, session, **kwargs):
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.logical_date == when))
        if "dag" in kwargs:
            run.dag = kwargs["dag"]  # the scheduler's (serialized) DAG, as on a run dag.test() creates
        return run

    with create_session() as session:
        for ti in existing_run(session=session).get_task_instances(session=session):
            if ti.state == TaskInstanceState.RUNNING:
                ti.state = TaskInstanceState.UP_FOR_RETRY
                ti.end_date = dt.datetime.now(dt.timezone.utc)
    mock.patch("airflow.models.dagrun.get_or_create_dagrun", existing_run).start()
    mock.patch.object(SerializedDAG, "clear_dags", lambda *args, **kwargs: 0).start()
run = dag.test(logical_date=when, run_after=when)
tis = {ti.task_id: [str(ti.state), ti.try_number] for ti in run.get_task_instances()}
after = {k: Variable.get(k, default_var=None) for k in keys}
print("RESULT=" + json.dumps({"state": str(run.state), "run_id": run.run_id, "tis": tis,
                              "before": before, "after": after}), flush=True)
"""


class DagProcess:
    """One AIRFLOW_HOME with one DAG file; :meth:`start` / :meth:`run` one ``dag.test()`` in a subprocess."""

    def __init__(self, tmp_path: Path, conn_id: str, conn_json: str, dag_source: str, module: str = "the_dag"):
        self.home, self.dags = tmp_path / "home", tmp_path / "dags"
        for d in (self.home, self.dags):
            d.mkdir(parents=True, exist_ok=True)
        self.module = module
        (self.dags / f"{module}.py").write_text(dag_source)
        self.script = tmp_path / "dag_runner.py"
        self.script.write_text(RUNNER)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
        self.env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                f"AIRFLOW_CONN_{conn_id.upper()}": conn_json,
            }
        )

    def start(self, logical_date: str, variables: Sequence[str] = (), retry: bool = False) -> subprocess.Popen[str]:
        """``retry=True``: run the next try of the (killed) DAG run of ``logical_date``, as the scheduler would."""
        env = {**self.env, "DAG_SUBPROCESS_VARIABLES": json.dumps(list(variables))}
        return subprocess.Popen(
            [sys.executable, str(self.script), self.module, logical_date, "retry" if retry else "new"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(
        self, logical_date: str, variables: Sequence[str] = (), *, retry: bool = False, timeout: float = 240
    ) -> dict[str, Any]:
        process = self.start(logical_date, variables, retry)
        output, _ = process.communicate(timeout=timeout)
        line = next((x for x in output.splitlines() if x.startswith("RESULT=")), None)
        assert process.returncode == 0 and line is not None, output[-4000:]
        result: dict[str, Any] = json.loads(line.split("=", 1)[1])
        result["output"] = output
        return result
