"""ExactOnlineWebhookSubscriptionOperator and ``airflow-exactonline webhooks`` against the fake over HTTP."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_exactonline import cli
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.operators.webhooks import ExactOnlineWebhookSubscriptionOperator
from airflow_provider_exactonline.testing import FakeExactOnline
from airflow_provider_exactonline.webhooks.subscriptions import ENTITY, receiver_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import airflow_db  # tests/ is not a package

CONN = "exact_webhooks_cli"
URL = "https://airflow.example.com/exactonline-webhooks/exact_webhooks_cli"


@pytest.fixture
def fake() -> Iterator[FakeExactOnline]:
    airflow_db.migrate()
    airflow_db.forget_exactonline_variables()
    with FakeExactOnline() as server:
        key = airflow_db.connect(server, CONN)
        yield server
        os.environ.pop(key, None)


def subscriptions(fake: FakeExactOnline) -> list[tuple[str, str]]:
    return sorted((r["Topic"], r["CallbackURL"]) for r in fake.records(ENTITY, 1001))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else out.err)


def test_the_operator_subscribes_idempotently_and_removes(fake: FakeExactOnline) -> None:
    before = subscriptions(fake)

    def op(state: str) -> list[Any]:
        task = ExactOnlineWebhookSubscriptionOperator(
            task_id=f"subs_{state}",
            exactonline_conn_id=CONN,
            topics=["Accounts", "Items"],
            division=1001,
            callback_url=URL,
            state=state,
        )
        return task.execute({})  # type: ignore[arg-type]

    first = op("present")
    again = op("present")
    assert [r["Topic"] for r in first] == ["Accounts", "Items"]
    assert [r["ID"] for r in again] == [r["ID"] for r in first]  # reused, not duplicated
    assert subscriptions(fake) == sorted([*before, ("Accounts", URL), ("Items", URL)])
    assert sorted(op("absent")) == sorted(r["ID"] for r in first)
    assert op("absent") == []  # nothing left: still fine
    assert subscriptions(fake) == before


def test_the_operator_refuses_bad_arguments_before_any_call(fake: FakeExactOnline) -> None:
    with pytest.raises(ExactOnlineConfigError, match="state="):
        ExactOnlineWebhookSubscriptionOperator(task_id="x", topics=["Accounts"], division=1001, state="gone")
    task = ExactOnlineWebhookSubscriptionOperator(
        task_id="y", exactonline_conn_id=CONN, topics=["Accounts"], division=1001, callback_url="http://example.com/x"
    )
    calls = len(fake.requests)
    with pytest.raises(ExactOnlineConfigError, match="HTTPS"):
        task.execute({})  # type: ignore[arg-type]
    assert len(fake.requests) == calls


def test_the_default_callback_url_is_the_receiver_on_the_base_url() -> None:
    assert receiver_url("https://airflow.example.com/", "exactonline_default") == (
        "https://airflow.example.com/exactonline-webhooks/exactonline_default"
    )
    with pytest.raises(ExactOnlineConfigError, match="base_url"):
        receiver_url("", "exactonline_default")


def test_cli_subscribe_list_delete(fake: FakeExactOnline, capsys: pytest.CaptureFixture[str]) -> None:
    code, made = run_cli(capsys, "webhooks", "subscribe", CONN, "--topic", "Accounts", "--callback-url", URL)
    assert code == 0 and [(m["Topic"], m["CallbackURL"]) for m in made] == [("Accounts", URL)]
    code, again = run_cli(capsys, "webhooks", "subscribe", CONN, "--topic", "Accounts", "--callback-url", URL)
    assert again[0]["ID"] == made[0]["ID"]
    code, listed = run_cli(capsys, "webhooks", "list", CONN, "--division", "1001")
    assert made[0]["ID"] in [r["ID"] for r in listed]
    code, deleted = run_cli(capsys, "webhooks", "delete", CONN, "--topic", "Accounts", "--callback-url", URL)
    assert deleted == {"deleted": [made[0]["ID"]]}
    assert ("Accounts", URL) not in subscriptions(fake)


def test_cli_errors_are_one_line_naming_the_fix(fake: FakeExactOnline, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "webhooks", "subscribe", CONN, "--topic", "Accounts", "--callback-url", "ftp://x")
    assert code == 2 and "HTTPS" in err and err.startswith("error:")
    code, err = run_cli(capsys, "webhooks", "delete", CONN, "--id", "not-a-guid")
    assert code == 2 and "error:" in err
