"""DONE-WHEN, distributed: CeleryExecutor workers on three "hosts" (network namespaces) share one Exact
Online connection through the Execution API, while hosts die and networks are cut. Judged by the fake's
own counters (token calls and their outcomes) and by what the tasks wrote.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from integration.rotation_support import assert_rotation_healthy, summarize

from .rig import LIFETIME, WORKERS, Rig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
HAMMER, PROBE, EXPORT = "exactonline_celery_hammer", "exactonline_celery_probe", "exactonline_celery_export"


def _results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("task-*.json"))]


def _refreshes(rig: Rig, since: float) -> list[Any]:
    return [c for c in rig.fake.token_calls if c.grant_type == "refresh_token" and c.time >= since]


def _outdir(rig: Rig, name: str) -> Path:
    out = rig.root / name
    out.mkdir()
    return out


def test_24_mapped_tasks_on_three_hosts_rotate_once_per_lifetime(rig: Rig) -> None:
    out = _outdir(rig, "rotation")
    started = time.time()
    run_id = rig.trigger(HAMMER, {"count": 24, "duration": 40, "pause": 0.5, "out": str(out)})
    state = rig.wait_run(HAMMER, run_id, 400)
    ended = time.time()
    tasks = rig.tasks(HAMMER, run_id)
    results = _results(out)
    assert state == "success", tasks
    summary = summarize(results, rig.fake, started, ended, LIFETIME)
    summary["hosts"] = sorted({r["host"] for r in results})
    print("\ncelery rotation:", json.dumps(summary, indent=1))
    assert summary["hosts"] == list(WORKERS), summary  # every task ran, on all three machines
    assert {t["hostname"] for t in tasks if t["task_id"] == "hammer"} == set(WORKERS)
    assert summary["process_kinds"] == ["task-sdk"], summary
    assert all(o.startswith("blocked: RuntimeError") for o in summary["orm"]), summary
    assert_rotation_healthy(summary, expected_processes=24)
