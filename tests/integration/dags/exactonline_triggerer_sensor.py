"""Test DAG: a deferrable ExactOnlineSensor that waits in a real ``airflow triggerer``.

Used by ``tests/integration/test_triggerer_token_rotation.py``. The sensor polls every second for a
sales invoice with ``InvoiceNumber eq {{ params.invoice_number }} and Status eq 50`` on the connection
``exact_triggerer``; the test creates that invoice on the fake server only after the access token has
expired several times, so the trigger has to refresh it inside the triggerer.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from airflow_provider_exactonline.sensors.exactonline import ExactOnlineSensor


@dag(
    dag_id="exactonline_triggerer_sensor",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={"invoice_number": Param(1, type="integer")},
    tags=["test"],
)
def exactonline_triggerer_sensor():
    wait = ExactOnlineSensor(
        task_id="wait_for_invoice",
        exactonline_conn_id="exact_triggerer",
        entity="salesinvoice/SalesInvoices",
        filter="InvoiceNumber eq {{ params.invoice_number }} and Status eq 50",
        select="InvoiceID,InvoiceNumber,Status",
        deferrable=True,
        poke_interval=1,
        timeout=300,
        retries=0,
    )

    @task(retries=0)
    def got_invoice(row: Any, params: dict | None = None) -> int:
        assert params is not None
        assert int(row["InvoiceNumber"]) == int(params["invoice_number"]), row
        assert int(row["Status"]) == 50, row
        return int(row["InvoiceNumber"])

    got_invoice(wait.output)


exactonline_triggerer_sensor()
