"""DONE-WHEN, distributed: CeleryExecutor workers on three "hosts" (network namespaces) share one Exact
Online connection through the Execution API, while hosts die and networks are cut. Judged by the fake's
own counters (token calls and their outcomes) and by what the tasks wrote.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from integration.rotation_support import assert_rotation_healthy, free_port, run_airflow, summarize

from .rig import CONN_ID, LEASE_TTL, LIFETIME, WORKERS, Rig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
HAMMER, PROBE, EXPORT = "exactonline_celery_hammer", "exactonline_celery_probe", "exactonline_celery_export"


def _results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("task-*.json"))]


def _refreshes(rig: Rig, since: float) -> list[Any]:
    return [c for c in rig.fake.token_calls if c.grant_type == "refresh_token" and c.time >= since]


def _wait(what: str, check: Any, timeout: float, rig: Rig, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        rig.check_alive()
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s")


def _all_running(rig: Rig, dag_id: str, run_id: str, count: int) -> None:
    def running() -> bool:
        states = [t["state"] for t in rig.tasks(dag_id, run_id) if t["task_id"] == "hammer"]
        return len(states) == count and all(s == "running" for s in states)

    _wait(f"{count} running tasks", running, 180, rig, every=0.5)


def _new_lease_holder(rig: Rig, after: float) -> tuple[str, float]:
    """Wait for a lease written after ``after``; returns (holder, the lease's expiry)."""

    def fresh() -> tuple[str, float] | None:
        lease = rig.variable(f"exactonline_lease__{CONN_ID}") or {}
        expires = float(lease.get("expires_at") or 0)
        if lease.get("owner") and expires - LEASE_TTL > after:
            return str(lease["owner"]).split(":")[0], expires
        return None

    return _wait("a new refresh lease", fresh, 120, rig)


def _outdir(rig: Rig, name: str) -> Path:
    out = rig.root / name
    out.mkdir()
    return out


def test_24_mapped_tasks_on_three_hosts_rotate_once_per_lifetime(rig: Rig) -> None:
    out = _outdir(rig, "rotation")
    started = time.time()
    run_id = rig.trigger(HAMMER, {"count": 24, "duration": 30, "pause": 0.5, "out": str(out)})
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


def test_killed_lease_holder_before_its_token_call_others_go_on_after_expiry(rig: Rig) -> None:
    out = _outdir(rig, "lease_holder")
    run_id = rig.trigger(HAMMER, {"count": 6, "duration": 60, "pause": 0.5, "out": str(out)})
    _all_running(rig, HAMMER, run_id, 6)
    holder, lease_expires = _new_lease_holder(rig, time.time())
    ok_before = [c for c in _refreshes(rig, 0) if c.outcome == "ok"]
    killed_at = time.time()
    pids = rig.kill_worker(holder)
    assert pids and holder in WORKERS
    # Killed during its settle delay: it never reached Exact.
    assert [c for c in _refreshes(rig, 0) if c.outcome == "ok"] == ok_before
    state = rig.wait_run(HAMMER, run_id, 240)
    recovered = [c for c in _refreshes(rig, killed_at) if c.outcome == "ok"]
    tasks, results = rig.tasks(HAMMER, run_id), _results(out)
    figures = {
        "holder": holder,
        "recovery_s": round(recovered[0].time - killed_at, 1) if recovered else None,
        "lease_left_at_kill_s": round(lease_expires - killed_at, 1),
        "refreshes_after_kill": len(recovered),
        "states": sorted((t["hostname"], t["state"]) for t in tasks if t["task_id"] == "hammer"),
    }
    print("\nkilled lease holder:", json.dumps(figures))
    rig.start_worker(holder)
    assert state == "failed"  # the dead host's tasks
    for task in tasks:
        if task["task_id"] == "hammer":
            assert task["state"] == ("failed" if task["hostname"] == holder else "success"), figures
    survivors = [r for r in results if r["host"] != holder]
    assert survivors and all(r["errors"] == {} for r in survivors), survivors
    assert sum(r["calls"] for r in survivors) > 0
    assert rig.fake.refresh_errors == {}, rig.fake.refresh_errors  # no double refresh, none too early
    # The others waited for the dead holder's lease to expire, then exactly one of them refreshed.
    assert recovered and recovered[0].time >= lease_expires - 0.5, figures
    gaps = [b.time - a.time for a, b in itertools.pairwise(recovered)]
    assert all(gap >= LIFETIME * 0.9 for gap in gaps), gaps


def _probe(rig: Rig, name: str) -> tuple[str, dict[str, dict[str, Any]]]:
    out = _outdir(rig, name)
    run_id = rig.trigger(PROBE, {"out": str(out)})
    state = rig.wait_run(PROBE, run_id, 180)
    return state, {p.stem.removeprefix("probe-"): json.loads(p.read_text()) for p in out.glob("probe-*.json")}


def _status(rig: Rig) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_exactonline.cli", "status", CONN_ID, "--json"],
        env=rig.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, json.loads(proc.stdout)


def _reauthorize(rig: Rig) -> None:
    """What a person does: ``airflow-exactonline authorize`` and approve on Exact's page (auto-approved)."""
    rig.fake.auto_approve = True
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    cmd = [sys.executable, "-m", "airflow_provider_exactonline.cli", "authorize", CONN_ID, "--redirect-uri", redirect]
    proc = subprocess.Popen(cmd, env=rig.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not any("/api/oauth2/auth?" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        url = next(line.strip() for line in lines if "/api/oauth2/auth?" in line)
        assert requests.get(url, timeout=60).status_code == 200
        assert proc.wait(120) == 0, proc.stderr.read()
    finally:
        proc.kill()


def test_killed_after_exact_answered_fails_fast_and_one_reauthorization_heals(rig: Rig) -> None:
    out = _outdir(rig, "lost_answer")
    run_id = rig.trigger(HAMMER, {"count": 6, "duration": 45, "pause": 0.5, "out": str(out)})
    _all_running(rig, HAMMER, run_id, 6)
    armed = time.time()
    rig.fake.set_token_delay(10)  # Exact rotates the pair, the answer is still on its way
    answered = _wait("a refresh", lambda: [c for c in _refreshes(rig, armed) if c.outcome == "ok"], 120, rig)
    holder = rig.lease_holder()
    assert holder in WORKERS
    rig.kill_worker(holder)  # dies before it could save the new pair
    broken_at = time.time()
    rig.fake.set_token_delay(0)
    assert len(answered) == 1
    rig.wait_run(HAMMER, run_id, 240)
    rig.start_worker(holder)  # the host comes back; every worker must now say "re-authorize"
    before_probe = time.time()
    state, probes = _probe(rig, "probe_broken")
    after_break = _refreshes(rig, broken_at + 0.001)
    code, health = _status(rig)
    figures = {
        "holder": holder,
        "token_calls_after_break": [c.outcome for c in after_break],
        "probe_seconds": {h: p["seconds"] for h, p in probes.items()},
        "status": health.get("status"),
    }
    print("\nbroken chain:", json.dumps(figures))
    assert state == "failed" and sorted(probes) == list(WORKERS), probes
    for probe in probes.values():
        assert probe["error"] == "ExactOnlineReauthorizationRequired", probe
        assert f"airflow-exactonline authorize {CONN_ID}" in probe["message"], probe
        assert probe["seconds"] < 10, probe  # fails fast
    assert [c for c in after_break if c.time >= before_probe] == []  # the probes did not ask Exact again
    assert 1 <= len(after_break) <= 2 and {c.outcome for c in after_break} == {"old_refresh_token"}, figures
    survivors = [r for r in _results(out) if r["host"] != holder]
    assert any(r["errors"].get("reauthorization_required") for r in survivors), survivors
    assert code == 1 and health["needs_action"] and health["status"] == "error", health
    assert "re-authorized" in health["summary"], health

    _reauthorize(rig)
    state, probes = _probe(rig, "probe_healed")
    assert state == "success" and sorted(probes) == list(WORKERS), probes
    assert all(p["error"] is None for p in probes.values()), probes
    assert _status(rig)[0] == 0


def _final_rows(root: Path) -> list[dict[str, Any]]:
    manifests = [m for m in root.rglob("_manifest.json") if "_tmp" not in m.parts]
    assert len(manifests) == 1, manifests
    rows = [json.loads(line) for part in sorted(manifests[0].parent.glob("*.jsonl")) for line in part.open()]
    return sorted(rows, key=lambda row: row["ID"])


def test_network_cut_mid_export_is_retried_elsewhere_with_identical_output(rig: Rig) -> None:
    base = rig.root / "exports"
    rig.fake.set_latency(1.0)
    pages_before = rig.fake.count_requests("crm/Accounts")
    run_id = rig.trigger(EXPORT, {"path": f"file://{base}/cut"})

    def exporting() -> str | None:
        rows = [t for t in rig.tasks(EXPORT, run_id) if t["state"] == "running" and t["hostname"]]
        return rows[0]["hostname"] if rows and rig.fake.count_requests("crm/Accounts") >= pages_before + 2 else None

    try:
        victim = _wait("the export running", exporting, 90, rig, every=0.2)
    except AssertionError:
        print(rig.tasks(EXPORT, run_id), rig.fake.stats()["requests_per_endpoint"], rig.procs.dump(3000))
        raise
    rig.cut(victim)
    cut_at = time.time()
    state = rig.wait_run(EXPORT, run_id, 240)
    recovered_s = round(time.time() - cut_at, 1)
    rig.kill_worker(victim)
    rig.cut(victim, up=True)
    rig.fake.set_latency(0)
    rig.start_worker(victim)
    (task,) = rig.tasks(EXPORT, run_id)
    print("\nnetwork cut:", json.dumps({"victim": victim, "final_host": task["hostname"], "done_after_s": recovered_s}))
    assert state == "success", task
    assert task["try_number"] == 2 and task["hostname"] != victim, task
    clean = rig.trigger(EXPORT, {"path": f"file://{base}/clean"})
    assert rig.wait_run(EXPORT, clean, 180) == "success"
    cut_rows, clean_rows = _final_rows(base / "cut"), _final_rows(base / "clean")
    assert len(clean_rows) == 12_000
    assert cut_rows == clean_rows


def _budget_supported() -> bool:
    """True once the shared Redis budget (extra ``budget_redis_conn_id``, helper "budget") is in the package."""
    package = Path(__file__).resolve().parents[2] / "airflow_provider_exactonline"
    return any("budget_redis_conn_id" in path.read_text() for path in package.rglob("*.py"))


@pytest.mark.skipif(
    not _budget_supported(), reason="the shared budget (extra budget_redis_conn_id, branch `budget`) has not landed"
)
def test_shared_budget_across_three_hosts_gives_no_429(rig: Rig) -> None:
    run_airflow(rig.env, "connections", "add", "exact_budget_redis", "--conn-uri", f"{rig.redis_url}/3")
    tokens, now = rig.fake.issue_tokens(), time.time()  # a new chain, its own connection (the last scenario)
    extra = {
        "division": rig.fake.current_division,
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "token_expires_at": now + float(tokens["expires_in"]),
        "token_obtained_at": now,
        "budget_redis_conn_id": "exact_budget_redis",
    }
    conn = {"conn_type": "exactonline", "host": rig.fake.base_url, "login": rig.fake.client_id}
    conn |= {"password": rig.fake.client_secret, "extra": extra}
    run_airflow(rig.env, "connections", "add", "exact_budget", "--conn-json", json.dumps(conn))
    rig.fake.minutely_limit = 60
    before = rig.fake.responses_429
    out = _outdir(rig, "budget")
    conf = {"conn_id": "exact_budget", "count": 12, "duration": 70, "pause": 0.0, "out": str(out)}
    run_id = rig.trigger(HAMMER, conf)
    state = rig.wait_run(HAMMER, run_id, 300)
    rig.fake.minutely_limit = None
    results = _results(out)
    assert state == "success" and {r["host"] for r in results} == set(WORKERS), rig.tasks(HAMMER, run_id)
    # 0 measured with the rig alone; under heavy machine load a call drawn just before the shared window's
    # reset can reach the fake just after it (a known edge, see docs/budget.md): at most 2, each waited out
    # (every task succeeded above).
    assert rig.fake.responses_429 - before <= 2
    assert sum(r["calls"] for r in results) >= 60  # the budget was really spent, across three hosts
