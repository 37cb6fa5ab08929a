"""Wait for an Exact Online sales invoice to reach a status, then act on it.

The sensor runs deferrable (it waits in the triggerer, holding no worker slot) and polls
``salesinvoice/SalesInvoices`` with ``InvoiceNumber eq N and Status eq S``. The default status 50
is what Exact calls "processed"; with a real administration, where payment is tracked on the
receivable, point the sensor at ``cashflow/Receivables`` with ``IsFullyPaid eq true`` instead.
A spent daily API limit does not fail the wait: it resumes after Exact's reset.

Trigger with ``{"invoice_number": 20240001}``.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from airflow_provider_exactonline.sensors.exactonline import ExactOnlineSensor

with DAG(
    dag_id="exactonline_wait_for_paid_invoice",
    description="Wait until an Exact Online sales invoice is paid/processed",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    params={
        "invoice_number": Param(20240001, type="integer", description="Exact InvoiceNumber to wait for"),
        "status": Param(50, type="integer", description="SalesInvoice Status meaning done (50 = processed)"),
    },
    tags=["exactonline", "example"],
) as dag:
    wait = ExactOnlineSensor(
        task_id="wait_for_paid_invoice",
        exactonline_conn_id="exactonline_default",
        entity="salesinvoice/SalesInvoices",
        filter="InvoiceNumber eq {{ params.invoice_number }} and Status eq {{ params.status }}",
        select="InvoiceID,InvoiceNumber,InvoiceToName,AmountDC,Status",
        division="{{ var.value.get('exactonline_division', '') }}",
        deferrable=True,
        poke_interval=300,
        timeout=dt.timedelta(days=30).total_seconds(),
        mode="reschedule",  # used when deferrable=False
    )

    @task
    def invoice_paid(row: dict) -> str:
        message = f"Invoice {row['InvoiceNumber']} of {row.get('InvoiceToName')} ({row.get('AmountDC')}) is done"
        print(message)
        return message

    invoice_paid(wait.output)
