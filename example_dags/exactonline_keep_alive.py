"""Keeps idle Exact Online connections authorized: daily, every ``exactonline`` connection whose refresh
token has not been used for 20 days (extra ``keep_alive_after_days``) makes one cheap call, which rotates
its tokens. Without it, a connection nobody uses for about 30 days must be re-authorized by a person.
See docs/budget.md."""

from __future__ import annotations

from airflow_provider_exactonline.maintenance.keep_alive import keep_alive_dag

dag = keep_alive_dag("exactonline_keep_alive")
