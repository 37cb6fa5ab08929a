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
from integration.rotation_support import (
    assert_rotation_healthy,
    free_port,
    fresh_pg_database,
    summarize,
)

from .rig import CONN_ID, LEASE_TTL, LIFETIME, SETTLE, WORKERS, Rig

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


def _kill_lease_holder_in_its_settle_delay(rig: Rig) -> tuple[str, float]:
    """Kill the machine that will win the refresh lease, before its token call; returns (holder, lease expiry).

    Fischer's lease: a competitor that read "free" before the first write landed writes its own lease early in
    the settle delay, and the last writer wins. So watch the lease until 60 % of the settle delay of its newest
    writer has passed, and kill the owner of that moment.
    """
    holder, expires = _new_lease_holder(rig, time.time())
    while time.time() < expires - LEASE_TTL + SETTLE * 0.6:
        lease = rig.variable(f"exactonline_lease__{CONN_ID}") or {}
        if lease.get("owner") and float(lease.get("expires_at") or 0) > expires:
            holder, expires = str(lease["owner"]).split(":")[0], float(lease["expires_at"])
        time.sleep(0.05)
    assert rig.kill_worker(holder) and holder in WORKERS
    return holder, expires


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
    holder, lease_expires = _kill_lease_holder_in_its_settle_delay(rig)
    killed_at = time.time()
    rig.start_worker(holder, wait=False)  # the host reboots (it gets no task of this run)
    # Killed during its settle delay: it never reached Exact, and its lease stayed (nobody overwrote it).
    written = lease_expires - LEASE_TTL
    time.sleep(max(0.0, written + SETTLE + 1 - time.time()))
    assert not [c for c in _refreshes(rig, written) if c.outcome == "ok"], rig.fake.token_calls[-3:]
    assert rig.lease_holder() == holder
    state = rig.wait_run(HAMMER, run_id, 240)
    recovered = [c for c in _refreshes(rig, killed_at) if c.outcome == "ok"]
    tasks, results = rig.tasks(HAMMER, run_id), _results(out)
    first_ok = [r for r in rig.fake.requests if r.status == 200 and recovered and r.time >= recovered[0].time]
    first_ok = [r for r in first_ok if "oauth2" not in r.path]
    figures = {
        "holder": holder,
        "recovery_s": round(recovered[0].time - killed_at, 1) if recovered else None,
        "lease_left_at_kill_s": round(lease_expires - killed_at, 1),
        "lease_expiry_to_refresh_s": round(recovered[0].time - lease_expires, 2) if recovered else None,
        "lease_expiry_to_first_200_s": round(first_ok[0].time - lease_expires, 2) if first_ok else None,
        "refreshes_after_kill": len(recovered),
        "states": sorted((t["hostname"], t["state"]) for t in tasks if t["task_id"] == "hammer"),
    }
    print("\nkilled lease holder:", json.dumps(figures))
    rig.wait_worker(holder)
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
    """``airflow-exactonline status`` (the installed console script) against the rig's metadata DB."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "airflow-exactonline"), "status", CONN_ID, "--json"],
        env=rig.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, json.loads(proc.stdout)


def _row_text(page: str, conn_id: str) -> str:
    """The part of the Exact Online page about ``conn_id``: from its first mention to the end of its row."""
    start = page.find(conn_id)
    assert start >= 0, page[:3000]
    end = page.find("</tr>", start)
    return page[start : end if end > 0 else len(page)]


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
    rig.start_worker(holder, wait=False)  # the host comes back while the others finish
    rig.wait_run(HAMMER, run_id, 240)
    rig.wait_worker(holder)  # every worker, the restarted one too, must now say "re-authorize"
    before_probe = time.time()
    state, probes = _probe(rig, "probe_broken")
    after_break = _refreshes(rig, broken_at + 0.001)
    code, health = _status(rig)
    page = _row_text(rig.ui_get("/exactonline/"), CONN_ID)
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
    # The Exact Online page of the real api-server says so too, next to its Reconnect link.
    assert "refresh failed" in page.lower() and "re-authoriz" in page.lower(), page
    assert f"/exactonline/connections/{CONN_ID}/authorize" in page, page

    _reauthorize(rig)
    healed_at = time.time()
    state, probes = _probe(rig, "probe_healed")
    figures["token_calls_break_to_heal"] = len([c for c in rig.fake.token_calls if broken_at < c.time < healed_at])
    figures["refreshes_after_heal"] = [c.outcome for c in _refreshes(rig, healed_at)]
    print("\nhealed:", json.dumps(figures))
    assert state == "success" and sorted(probes) == list(WORKERS), probes  # one re-authorization healed all 3
    assert all(p["error"] is None for p in probes.values()), probes
    assert set(figures["refreshes_after_heal"]) <= {"ok"}, figures
    # 1-2 refused refreshes + the one authorization_code grant of the re-authorization: bounded, no hammering.
    assert figures["token_calls_break_to_heal"] <= 3, figures
    code, health = _status(rig)
    assert code == 0 and health["status"] == "ok", health
    page = _row_text(rig.ui_get("/exactonline/"), CONN_ID)
    assert "refresh failed" not in page.lower(), page


def _final_manifest(root: Path) -> Path:
    manifests = [m for m in root.rglob("_manifest.json") if "_tmp" not in m.parts]
    assert len(manifests) == 1, manifests  # one finalized run; the cut try left none
    return manifests[0]


def _final_rows(root: Path) -> list[dict[str, Any]]:
    parts = sorted(_final_manifest(root).parent.glob("*.jsonl"))
    rows = [json.loads(line) for part in parts for line in part.open()]
    return sorted(rows, key=lambda row: row["ID"])


def _mirror_table(db_url: str, root: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Apply every finalized export run under ``root`` to a table with the SQL mirror's loader; its rows."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.mirror.loader import MirrorLoader
    from airflow_provider_exactonline.mirror.schema import table_for

    monkeypatch.setenv("AIRFLOW_CONN_EO_DIST_MIRROR", db_url.replace("postgresql+psycopg2://", "postgres://"))
    spec = resolve_entity("crm/Accounts")
    loader = MirrorLoader(PostgresHook(postgres_conn_id="eo_dist_mirror"), table_for(spec, prefix=prefix))
    manifest = _final_manifest(root)
    division = int(json.loads(manifest.read_text())["division"])
    totals = loader.apply_pending(manifest.parent.parent, division)
    assert totals["runs"] == 1 and totals["rows"] == 12_000, totals
    assert loader.apply_pending(manifest.parent.parent, division)["runs"] == 0  # applied exactly once
    import psycopg2

    with psycopg2.connect(db_url.replace("postgresql+psycopg2://", "postgresql://")) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT * FROM "{loader.table.name}" ORDER BY "ID"')
        columns = tuple(d[0] for d in cur.description)
        return [columns, *cur.fetchall()]


def test_network_cut_mid_export_is_retried_elsewhere_with_identical_output_and_mirror(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    rig.fake.set_latency(0)  # the retry and the uninterrupted run go at full speed
    # The uninterrupted run meanwhile, on a healthy machine: once the cut host's pending broker read (kombu
    # polls Redis with a 1 s BRPOP) has lapsed, Redis hands new tasks only to the two connected workers.
    time.sleep(3)
    clean = rig.trigger(EXPORT, {"path": f"file://{base}/clean"})
    state = rig.wait_run(EXPORT, run_id, 240)
    recovered_s = round(time.time() - cut_at, 1)
    clean_state = rig.wait_run(EXPORT, clean, 180)
    rig.kill_worker(victim)
    rig.cut(victim, up=True)
    rig.start_worker(victim, wait=False)  # back for the next scenario
    (task,), (clean_task,) = rig.tasks(EXPORT, run_id), rig.tasks(EXPORT, clean)
    print("\nnetwork cut:", json.dumps({"victim": victim, "final_host": task["hostname"], "done_after_s": recovered_s}))
    assert state == "success", task
    assert task["try_number"] == 2 and task["hostname"] != victim, task
    assert clean_state == "success" and clean_task["try_number"] == 1 and clean_task["hostname"] != victim
    cut_rows, clean_rows = _final_rows(base / "cut"), _final_rows(base / "clean")
    assert len(clean_rows) == 12_000
    assert cut_rows == clean_rows
    # The SQL mirror loads both into PostgreSQL: the same table, row for row.
    with fresh_pg_database() as mirror_db:
        cut_table = _mirror_table(mirror_db, base / "cut", "cut_", monkeypatch)
        clean_table = _mirror_table(mirror_db, base / "clean", "clean_", monkeypatch)
    assert len(clean_table) == 12_001 and cut_table[0] == clean_table[0], clean_table[0]
    assert cut_table == clean_table
    rig.wait_worker(victim)


def _budget_supported() -> bool:
    """True once the shared Redis budget (extra ``budget_redis_conn_id``, helper "budget") is in the package."""
    package = Path(__file__).resolve().parents[2] / "airflow_provider_exactonline"
    return any("budget_redis_conn_id" in path.read_text() for path in package.rglob("*.py"))


@pytest.mark.skipif(
    not _budget_supported(), reason="the shared budget (extra budget_redis_conn_id, branch `budget`) has not landed"
)
def test_shared_budget_across_three_hosts_gives_no_429(rig: Rig) -> None:
    host, port = rig.redis_url.removeprefix("redis://").split(":")
    redis_conn = {"connection_id": "exact_budget_redis", "conn_type": "redis", "host": host, "port": int(port)}
    rig.api_post("/connections", redis_conn | {"extra": json.dumps({"db": 3})})
    tokens, now = rig.fake.issue_tokens(), time.time()  # a new chain, its own connection (the last scenario)
    extra = {
        "division": rig.fake.current_division,
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "token_expires_at": now + float(tokens["expires_in"]),
        "token_obtained_at": now,
        "budget_redis_conn_id": "exact_budget_redis",
    }
    conn = {"connection_id": "exact_budget", "conn_type": "exactonline", "host": rig.fake.base_url}
    conn |= {"login": rig.fake.client_id, "password": rig.fake.client_secret, "extra": json.dumps(extra)}
    rig.api_post("/connections", conn)
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
