"""Which kind of Airflow process are we in? It decides where tokens can be written.

The rule (documented in docs/tokens.md):

* **Task SDK process** - a task under the supervisor (any executor), a triggerer's trigger runner,
  ``dag.test()``: ``airflow.sdk.execution_time.task_runner.SUPERVISOR_COMMS`` exists. This is the exact
  test Airflow itself uses in ``airflow.models.Variable`` to route calls through the Task SDK. The ORM is
  blocked (or must be treated as blocked: ``dag.test()`` leaves it open, but real workers don't), so
  tokens go to an Airflow Variable through the Task SDK.
* **ORM process** - api-server, scheduler, CLI, a plain Python script with a metadata DB: no supervisor
  comms. The connection row can be locked and updated.
"""

from __future__ import annotations

import sys

TASK_SDK = "task-sdk"
ORM = "orm"

ORM_BLOCKED_MARKER = "airflow-db-not-allowed"


def has_supervisor_comms() -> bool:
    module = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return module is not None and hasattr(module, "SUPERVISOR_COMMS")


def orm_blocked() -> bool:
    """True when the supervisor's ``block_orm_access()`` ran in this process."""
    settings = sys.modules.get("airflow.settings")
    if settings is None:
        return False
    session = getattr(settings, "Session", None)
    if session is not None and getattr(session, "__name__", "") == "BlockedDBSession":
        return True
    try:
        from airflow.configuration import conf

        return str(conf.get("database", "sql_alchemy_conn", fallback="")).startswith(ORM_BLOCKED_MARKER)
    except Exception:
        return False


def process_kind() -> str:
    """``"task-sdk"`` or ``"orm"``."""
    if has_supervisor_comms() or orm_blocked():
        return TASK_SDK
    return ORM
