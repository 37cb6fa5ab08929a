"""ExactOnlineOperator (any call) and ExactOnlineDivisionsOperator against the fake server."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowFailException
from airflow_db import ctx

from airflow_provider_exactonline.exceptions import (
    ExactOnlineConfigError,
    ExactOnlineOutcomeUnknown,
    ExactOnlineServerError,
)
from airflow_provider_exactonline.operators.exactonline import (
    ExactOnlineDivisionsOperator,
    ExactOnlineOperator,
    parse_divisions,
)


def test_small_answer_goes_to_xcom_and_templates_render(fake, conn):
    op = ExactOnlineOperator(
        task_id="call",
        endpoint="{{ params.entity }}",
        method="{{ params.method }}",
        query={"$filter": "trim(Code) eq '{{ params.code }}'", "$select": "ID,Code,Name"},
        division="{{ params.division }}",
        **conn,
    )
    code = next(iter(fake.records("crm/Accounts", 1001)))["Code"]
    context = ctx()
    context["params"] = {"entity": "crm/Accounts", "method": "GET", "code": code.strip(), "division": 1001}
    op.render_template_fields(context)
    assert op.query["$filter"] == f"trim(Code) eq '{code.strip()}'" and op.division == "1001"
    result = op.execute(context)
    assert [r["Code"].strip() for r in result["results"]] == [code.strip()]


def test_post_body_and_large_answer_written_to_storage(fake, conn, tmp_path):
    created = ExactOnlineOperator(
        task_id="post",
        endpoint="crm/Accounts",
        method="POST",
        body={"Name": "Via operator", "Code": "OP1"},
        division=1001,
        **conn,
    ).execute(ctx())
    assert created["Name"] == "Via operator"
    op = ExactOnlineOperator(
        task_id="big",
        endpoint="crm/Accounts",
        query={"$select": "ID,Name", "$filter": "Blocked eq false"},
        paginate=True,
        division=1001,
        max_xcom_bytes=1000,
        output_path=str(tmp_path / "out.json"),
        **conn,
    )
    result = op.execute(ctx())
    assert result["path"].endswith("out.json") and result["rows"] == 151
    assert len(json.loads((tmp_path / "out.json").read_text())) == 151  # 3 pages of 60 followed via __next


def test_divisions_operator(fake, conn):
    assert ExactOnlineDivisionsOperator(task_id="d", **conn).execute(ctx()) == [1001, 1002]
    assert ExactOnlineDivisionsOperator(task_id="d", divisions=[1002], **conn).execute(ctx()) == [1002]
    with pytest.raises(ExactOnlineConfigError, match="not reachable"):
        ExactOnlineDivisionsOperator(task_id="d", divisions="1002,9", **conn).execute(ctx())


def test_parse_divisions():
    assert parse_divisions(3) == [3]
    assert parse_divisions("1, 2") == [1, 2]
    assert parse_divisions("[1, 2, 2]") == [1, 2]
    assert parse_divisions("ALL") == "all"
    assert parse_divisions([{"Code": 7}]) == [7]
    assert parse_divisions(None) is None
    with pytest.raises(ExactOnlineConfigError):
        parse_divisions("x")


# ---------------------------------------------------------------------------------------------- POST and retries


def _post(conn):
    return ExactOnlineOperator(
        task_id="post", endpoint="crm/Accounts", method="POST", body={"Name": "Once only BV"}, division=1001, **conn
    )


def _posts(fake):
    return [r for r in fake.requests if r.method == "POST" and "crm/Accounts" in r.path]


def _named(fake, name):
    return [r for r in fake.records("crm/Accounts", 1001) if r.get("Name") == name]


def test_post_answered_5xx_fails_without_airflow_retry(fake, conn):
    fake.fail_next(1, status=503, path_contains="crm/Accounts")
    with pytest.raises(ExactOnlineOutcomeUnknown, match=r"HTTP 503.*Airflow does not retry") as caught:
        _post(conn).execute(ctx())
    assert isinstance(caught.value, AirflowFailException)  # the task runner skips retries for these
    assert caught.value.status_code == 503 and "Check in Exact Online" in str(caught.value)
    assert len(_posts(fake)) == 1


def test_post_whose_answer_was_lost_fails_without_airflow_retry(fake, conn):
    fake.drop_next(1, path_contains="crm/Accounts", when="mid_response")  # Exact creates it, the answer is lost
    with pytest.raises(ExactOnlineOutcomeUnknown, match="may have reached") as caught:
        _post(conn).execute(ctx())
    assert isinstance(caught.value, AirflowFailException)
    assert len(_posts(fake)) == 1 and len(_named(fake, "Once only BV")) == 1


def test_idempotent_call_failures_stay_retryable(fake, conn):
    fake.fail_next(1, status=503, path_contains="crm/Accounts")
    params = {**conn, "hook_params": {**conn["hook_params"], "max_retries": 0}}
    op = ExactOnlineOperator(
        task_id="get",
        endpoint="crm/Accounts",
        query={"$select": "ID", "$filter": "Blocked eq false"},
        division=1001,
        **params,
    )
    with pytest.raises(ExactOnlineServerError) as caught:
        op.execute(ctx())
    assert not isinstance(caught.value, AirflowFailException)  # a GET is safe to repeat: Airflow may retry


POST_DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_exactonline.operators.exactonline import ExactOnlineOperator

with DAG("exactonline_post_once", schedule=None, default_args={"retries": 2, "retry_delay": dt.timedelta(0)}) as dag:
    ExactOnlineOperator(task_id="post", exactonline_conn_id="exact_post", endpoint="crm/Accounts", method="POST",
                        body={"Name": "Once only BV"}, division=1001)
"""


def test_post_is_sent_once_by_a_dag_with_retries(fake, tmp_path):
    """Airflow's real task runner, retries=2: Exact answered the POST with 503, so the task fails for good."""
    from airflow_db import connection_json
    from dag_subprocess import DagProcess

    fake.fail_next(1, status=503, path_contains="crm/Accounts")
    result = DagProcess(tmp_path, "exact_post", connection_json(fake), POST_DAG).run("2024-07-01T00:00:00+00:00")
    assert result["state"] == "failed" and result["tis"]["post"] == ["failed", 1], result["output"][-3000:]
    assert "Airflow does not retry this task" in result["output"]
    assert len(_posts(fake)) == 1 and _named(fake, "Once only BV") == []
