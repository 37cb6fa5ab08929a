"""ExactOnlineOperator (any call) and ExactOnlineDivisionsOperator against the fake server."""

from __future__ import annotations

import json

import pytest
from airflow_db import ctx

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
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
        query={"$select": "ID,Name"},
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
