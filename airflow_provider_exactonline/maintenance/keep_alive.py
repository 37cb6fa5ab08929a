"""Keep idle refresh tokens alive: Exact drops a refresh token that is not used for about 30 days, and a
person must then re-authorize. :func:`keep_alive_dag` builds a daily DAG that, for every ``exactonline``
connection whose tokens were last rotated ``keep_alive_after_days`` (extra, default 20) or more days ago,
makes one cheap call: ``current/Me`` (purpose "admin", so it may use the day's reserve), which refreshes
(and so rotates) the token pair first. Health warns at 7, 14 and 28 idle days (health.py).

Which connections: ``conn_ids`` when given; else every ``AIRFLOW_CONN_*`` environment variable of type
``exactonline`` plus, where this process may read the metadata DB (``dag.test()``, a scheduler-side
process), the connections stored there. Task processes of a real worker cannot list the metadata DB's
connections: name them in ``conn_ids`` (or ``Variable exactonline_keep_alive_conn_ids``, a JSON list).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from airflow_provider_exactonline.config import CONN_TYPE, extras_of

log = logging.getLogger(__name__)

IDLE_DAYS_EXTRA = "keep_alive_after_days"
DEFAULT_IDLE_DAYS = 20.0
CONN_IDS_VARIABLE = "exactonline_keep_alive_conn_ids"


def idle_days_threshold(extras: dict[str, Any]) -> float:
    """Extra ``keep_alive_after_days`` (a number of days, 1-29); default 20."""
    from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

    raw = extras.get(IDLE_DAYS_EXTRA, DEFAULT_IDLE_DAYS)
    try:
        days = float(raw)
    except (TypeError, ValueError):
        days = -1.0
    if not 1 <= days <= 29:
        raise ExactOnlineConfigError(
            f"extra {IDLE_DAYS_EXTRA!r} is {raw!r}: give the idle days (1-29) after which the keep-alive DAG "
            "uses the refresh token (Exact drops it after about 30)"
        )
    return days


def needs_keep_alive(obtained_at: float | None, threshold_days: float, now: float) -> bool:
    """True when the token pair was last rotated ``threshold_days`` or more ago (unknown: no)."""
    return obtained_at is not None and now - obtained_at >= threshold_days * 86_400


def exactonline_conn_ids() -> list[str]:
    """Connections of type exactonline this process can see (see the module docstring)."""
    found: list[str] = []
    for key, value in os.environ.items():
        if not key.startswith("AIRFLOW_CONN_"):
            continue
        try:
            conn_type = json.loads(value).get("conn_type")
        except (ValueError, AttributeError):
            conn_type = value.split(":", 1)[0].replace("-", "_")
        if conn_type == CONN_TYPE:
            found.append(key[len("AIRFLOW_CONN_") :].lower())
    try:
        from airflow.models import Connection
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = session.query(Connection.conn_id).filter(Connection.conn_type == CONN_TYPE).all()
        found.extend(row[0] for row in rows if row[0] not in found)
    except Exception as err:  # a worker's task process: the ORM is blocked
        log.debug("Exact Online keep-alive: metadata DB connections not listed (%s)", type(err).__name__)
    try:
        from airflow.sdk import Variable

        listed = json.loads(Variable.get(CONN_IDS_VARIABLE, default="[]"))
        found.extend(str(c) for c in listed if str(c) not in found)
    except Exception:
        pass
    return sorted(found)


def keep_alive(conn_id: str, *, now: float | None = None, hook: Any = None) -> dict[str, Any]:
    """Use ``conn_id``'s refresh token if it has been idle too long; returns what was done."""
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    hook = hook or ExactOnlineHook(conn_id)
    threshold = idle_days_threshold(extras_of(hook.connection))
    state = hook.token_manager.reload()
    now = time.time() if now is None else now
    obtained_at = state.obtained_at if state is not None and state.refresh_token else None
    idle_days = None if obtained_at is None else round((now - obtained_at) / 86_400, 1)
    if not needs_keep_alive(obtained_at, threshold, now):
        return {"conn_id": conn_id, "action": "none", "idle_days": idle_days}
    hook.current_user(purpose="admin")  # refreshes the expired access token: a new pair, a fresh 30 days
    log.info("Exact Online keep-alive: %s was idle %.1f days; its tokens were used and rotated", conn_id, idle_days)
    return {"conn_id": conn_id, "action": "used", "idle_days": idle_days}


def keep_alive_dag(
    dag_id: str = "exactonline_keep_alive", *, conn_ids: Sequence[str] | None = None, schedule: str = "@daily"
) -> Any:
    """The maintenance DAG: one mapped task per exactonline connection (see the module docstring)."""
    import pendulum
    from airflow.sdk import dag, task

    @dag(
        dag_id=dag_id,
        schedule=schedule,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["exactonline", "maintenance"],
        doc_md=__doc__,
    )
    def exactonline_keep_alive() -> None:
        @task
        def connections() -> list[str]:
            return list(conn_ids) if conn_ids is not None else exactonline_conn_ids()

        @task(retries=2)
        def use_if_idle(conn_id: str) -> dict[str, Any]:
            return keep_alive(conn_id)

        use_if_idle.expand(conn_id=connections())

    return exactonline_keep_alive()
