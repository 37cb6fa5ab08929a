"""The loop each of the 8 processes runs in the token rotation tests.

Connection-extras path: started as a plain subprocess (``python exactonline_rotation_loop.py ...``).
Worker path: imported by the mapped task of ``exactonline_token_rotation`` (this folder is the DAGs
folder, so it is on the task's ``sys.path``; .airflowignore keeps the DAG processor off it).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from collections import Counter
from typing import Any


def _orm_blocked() -> str:
    """Ask the ORM directly; a real Airflow 3 task process must refuse."""
    try:
        from airflow.utils.session import create_session

        with create_session() as session:
            session.execute(__import__("sqlalchemy").text("SELECT 1"))
        return "allowed"
    except Exception as err:
        return f"blocked: {type(err).__name__}: {str(err)[:120]}"


def run(conn_id: str, duration: float, pause: float, label: str) -> dict[str, Any]:
    from airflow_provider_exactonline.auth import process_context
    from airflow_provider_exactonline.exceptions import ExactOnlineError, ExactOnlineReauthorizationRequired

    result: dict[str, Any] = {"label": label, "pid": os.getpid()}
    result["process_kind"] = process_context.process_kind()
    result["orm"] = _orm_blocked()
    errors: Counter[str] = Counter()
    messages: list[str] = []
    calls = 0
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    hook = ExactOnlineHook(conn_id)  # the product path: hook -> build_token_manager -> default stores
    manager = hook.token_manager

    def call() -> None:
        hook.current_user()

    result["stores"] = [getattr(s, "name", type(s).__name__) for s in manager.stores]
    end = time.monotonic() + duration
    while time.monotonic() < end:
        try:
            call()
            calls += 1
        except ExactOnlineReauthorizationRequired as err:
            errors["reauthorization_required"] += 1
            messages.append(str(err)[:300])
        except ExactOnlineError as err:
            errors[type(err).__name__] += 1
            messages.append(str(err)[:300])
        except Exception as err:
            errors[type(err).__name__] += 1
            messages.append(traceback.format_exc()[-600:])
        time.sleep(pause)
    lease_seconds: list[float] = []
    for store in manager.stores:
        lease_seconds.extend(getattr(store, "acquire_seconds", []))
    result.update(
        calls=calls,
        errors=dict(errors),
        messages=messages[:5],
        token_calls=manager.token_calls,
        lease_seconds=lease_seconds,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conn-id", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--pause", type=float, default=0.2)
    parser.add_argument("--label", default="p")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        result = run(args.conn_id, args.duration, args.pause, args.label)
    except Exception:
        result = {"label": args.label, "crashed": traceback.format_exc()[-2000:]}
    with open(args.out, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
