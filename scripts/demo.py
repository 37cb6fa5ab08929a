"""The demo: mirror Exact Online into a SQLite database with the mirror example DAG, no account needed.

Run from the repository root with the package installed (``scripts/demo.sh`` does both)::

    python scripts/demo.py [--home .demo] [--rows 300]

What it does, printing each step:

1. starts the fake Exact Online server (``python -m airflow_provider_exactonline.testing serve``), which
   enforces Exact's mandatory filtering, so full loads must go through ``sync/``;
2. creates a SQLite metadata DB in ``--home`` (a fresh AIRFLOW_HOME), the ``exactonline_default``
   connection pointing at the fake and the ``exactonline_mirror_db`` (``sqlite``) target database;
3. authorizes it with ``airflow-exactonline authorize exactonline_default`` (the demo "clicks" the URL);
4. runs ``example_dags/exactonline_mirror.py`` with ``dag.test()``: a full mirror of five entities in
   divisions 1001 and 1002;
5. on the fake: creates, updates and deletes an account, deletes one and re-creates it with the same ID,
   updates and deletes a payment condition (an entity without ``sync/``, mirrored as a snapshot), then runs
   the DAG again (an incremental run);
6. prints per table and division the rows in the database vs the rows in the fake, and the API calls each
   run cost (the fake counts them); exits 1 if any table differs from the fake.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONN_ID = "exactonline_default"
DB_CONN_ID = "exactonline_mirror_db"
DIVISIONS = (1001, 1002)
ENTITIES = {
    "crm/Accounts": 1.0,
    "crm/Contacts": 1.5,
    "salesinvoice/SalesInvoices": 0.5,
    "logistics/Items": 0.5,
    "cashflow/PaymentConditions": 0.2,  # no sync/ endpoint: read whole each run, applied as a snapshot
}
#: What tells two versions of a row apart in the comparison: Timestamp, or a field the demo changes.
VERSION = {"cashflow/PaymentConditions": "Description"}


def say(message: str = "", end: str = "\n") -> None:
    print(message, end=end, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_fake(home: Path, rows: dict[str, int]) -> tuple[subprocess.Popen[bytes], str]:
    url_file = home / "fake-url.txt"
    command = [
        sys.executable,
        "-m",
        "airflow_provider_exactonline.testing",
        "serve",
        "--port",
        "0",
        "--auto-approve",
        "--url-file",
        str(url_file),
    ]
    for entity, count in rows.items():
        command += ["--rows", f"{entity}={count}"]
    log = (home / "fake-server.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if url_file.exists() and url_file.read_text().strip():
            return process, url_file.read_text().strip()
        if process.poll() is not None:
            raise SystemExit(f"the fake server exited; see {home / 'fake-server.log'}")
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the fake server did not start within 60 s")


def create_connection(conn_id: str, base_url: str, redirect_uri: str) -> None:
    from airflow.models import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        session.add(
            Connection(
                conn_id=conn_id,
                conn_type="exactonline",
                host=base_url,
                login="fake-client-id",
                password="fake-client-secret",
                extra=json.dumps({"redirect_uri": redirect_uri}),
            )
        )


def authorize(conn_id: str) -> str:
    """Run the real CLI; play the browser: open the printed URL (the fake approves and redirects)."""
    import requests

    cli = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from airflow_provider_exactonline.cli import main; sys.exit(main())",
            "authorize",
            conn_id,
            "--timeout",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert cli.stdout is not None
    lines: list[str] = []
    auth_url = None
    for line in cli.stdout:
        lines.append(line.rstrip())
        if "/api/oauth2/auth" in line and auth_url is None:
            auth_url = line.strip()
            # The "browser": the fake auto-approves and redirects to the CLI's loopback listener.
            # Wait until the CLI listens, then follow the redirect chain.
        if auth_url and "Waiting" in line:
            response = requests.get(auth_url, timeout=30)
            response.raise_for_status()
    code = cli.wait(timeout=60)
    if code != 0 or auth_url is None:
        raise SystemExit("authorization failed:\n" + "\n".join(lines))
    return "\n".join(f"    {line}" for line in lines if line.strip() and "code=" not in line)


def fake_admin(base_url: str, name: str, payload: dict[str, Any] | None = None) -> Any:
    import requests

    if payload is None:
        response = requests.get(f"{base_url}/_fake/{name}", timeout=30)
    else:
        response = requests.post(f"{base_url}/_fake/{name}", json=payload, timeout=30)
    response.raise_for_status()
    return response.json()


def table_of(entity: str) -> str:
    return entity.replace("/", "_").lower()


def prepare_environment(home: Path) -> Path:
    """A fresh AIRFLOW_HOME with a SQLite metadata DB and the target DB connection; before Airflow is imported."""
    import shutil

    if home.exists():
        shutil.rmtree(home)
    (home / "exports").mkdir(parents=True)
    for key in [k for k in os.environ if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__", "EXACTONLINE_"))]:
        del os.environ[key]
    target = home / "mirror.db"
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
            # The example DAG's target database, entities and export root.
            f"AIRFLOW_CONN_{DB_CONN_ID.upper()}": json.dumps({"conn_type": "sqlite", "host": str(target)}),
            "EXACTONLINE_MIRROR_ENTITIES": ",".join(ENTITIES),
            "EXACTONLINE_MIRROR_PATH": f"file://{home / 'exports'}",
        }
    )
    return target


def run_mirror_dag(when: dt.datetime) -> Any:
    import importlib.util
    import logging

    logging.getLogger("airflow").setLevel(logging.WARNING)
    path = REPO / "example_dags" / "exactonline_mirror.py"
    spec = importlib.util.spec_from_file_location("exactonline_mirror", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = module.dag.test(logical_date=when, run_after=when)
    if run.state != "success":
        states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
        raise SystemExit(f"DAG run {run.run_id} ended {run.state}: {states}")
    return run


def api_calls(base_url: str) -> dict[str, int]:
    """The fake's request count since the last reset per ``entity@division`` (by path), ``sync/Deleted``
    (one read per division for all entities) and ``other`` (the division list)."""
    per_endpoint: dict[str, int] = fake_admin(base_url, "stats")["requests_per_endpoint"]
    out = {f"{entity}@{division}": 0 for entity in ENTITIES for division in DIVISIONS}
    out["sync/Deleted"] = 0
    out["other"] = 0
    for endpoint, count in per_endpoint.items():
        path = endpoint.split(" ", 1)[-1].lower()
        key = next(
            (
                f"{e}@{d}"
                for e in ENTITIES
                for d in DIVISIONS
                if f"/{d}/" in path and path.endswith("/" + e.split("/")[1].lower())
            ),
            "sync/Deleted" if path.endswith("/sync/deleted") else "other",
        )
        out[key] += count
    fake_admin(base_url, "reset_counters", {})
    return out


def mutate(base_url: str, entity: str, division: int, op: str, **payload: Any) -> Any:
    """One create, update or delete on the fake, as another Exact user would make it."""
    return fake_admin(base_url, "mutate", {"entity": entity, "division": division, "op": op, **payload})


def change_accounts(base_url: str, division: int) -> dict[str, Any]:
    """A create, an update, a delete and a delete-then-re-create (same ID) on the fake, as another user would."""
    accounts = fake_admin(base_url, f"records?entity=crm/Accounts&division={division}&limit=3")["results"]
    updated, deleted, recreated = (a["ID"] for a in accounts)
    entity = "crm/Accounts"
    created = mutate(
        base_url, entity, division, "create", data={"Name": "Demo Nieuw BV", "Code": "DEMO1", "City": "Utrecht"}
    )["ID"]
    mutate(base_url, entity, division, "update", key=updated, data={"Name": "Renamed by the demo"})
    mutate(base_url, entity, division, "delete", key=deleted)
    mutate(base_url, entity, division, "delete", key=recreated)
    mutate(
        base_url, entity, division, "create", data={"ID": recreated, "Name": "Re-created by the demo", "Code": "DEMO2"}
    )
    return {"created": created, "updated": updated, "deleted": deleted, "recreated": recreated}


def change_payment_conditions(base_url: str, division: int) -> dict[str, Any]:
    """An update and a delete of an entity without sync/: the next snapshot shows both."""
    entity = "cashflow/PaymentConditions"
    rows = fake_admin(base_url, f"records?entity={entity}&division={division}&limit=2")["results"]
    updated, deleted = (r["ID"] for r in rows)
    mutate(base_url, entity, division, "update", key=updated, data={"Description": "Changed by the demo"})
    mutate(base_url, entity, division, "delete", key=deleted)
    return {"condition updated": updated, "condition deleted": deleted}


def compare(base_url: str, target: Path) -> list[dict[str, Any]]:
    """Per (table, division): the rows (ID and Timestamp) in the database vs the live rows in the fake."""
    out = []
    with sqlite3.connect(target) as db:
        for entity in ENTITIES:
            table = table_of(entity)
            for division in DIVISIONS:
                version = VERSION.get(entity, "Timestamp")
                query = f'SELECT "ID", "{version}" FROM "{table}" WHERE "Division" = ?'
                in_db = {(str(r[0]).lower(), str(r[1])) for r in db.execute(query, (division,))}
                rows = fake_admin(base_url, f"records?entity={entity}&division={division}&limit=10000000")["results"]
                in_fake = {(str(r["ID"]).lower(), str(r[version])) for r in rows}
                out.append(
                    {
                        "table": table,
                        "division": division,
                        "db": len(in_db),
                        "fake": len(in_fake),
                        "equal": in_db == in_fake,
                    }
                )
    return out


def report(comparison: list[dict[str, Any]], calls: list[dict[str, int]]) -> int:
    """Print one line per table and division; 0 when every table equals the fake, else 1."""
    say(f"    {'table':28} {'division':>8} {'rows in db':>10} {'in fake':>8}  {'':9} API calls run 1 / run 2")
    for row in comparison:
        entity = next(e for e in ENTITIES if table_of(e) == row["table"])
        verdict = "equal" if row["equal"] else "DIFFERENT"
        spent = " / ".join(str(c[f"{entity}@{row['division']}"]) for c in calls)
        say(f"    {row['table']:28} {row['division']:>8} {row['db']:>10} {row['fake']:>8}  {verdict:9} {spent}")
    deleted = " / ".join(str(c.get("sync/Deleted", 0)) for c in calls)
    say(f"    (sync/Deleted, one read per division for every entity: {deleted}; ", end="")
    say(f"other calls, the division list: {' / '.join(str(c['other']) for c in calls)})")
    return 0 if all(r["equal"] for r in comparison) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=REPO / ".demo", help="demo AIRFLOW_HOME (recreated)")
    parser.add_argument("--rows", type=int, default=300, help="generated Accounts per division (others scale)")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    started = time.monotonic()

    target = prepare_environment(home)
    say("[1/6] Starting the fake Exact Online server (no Exact account needed) ...")
    rows = {entity: max(1, int(args.rows * factor)) for entity, factor in ENTITIES.items()}
    fake, base_url = start_fake(home, rows)
    try:
        say(f"      {base_url}  (log: {home / 'fake-server.log'})")
        say(f"[2/6] A SQLite metadata DB in {home}, the {CONN_ID!r} connection, target DB {target} ...")
        from airflow.utils.db import initdb

        initdb()
        redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        create_connection(CONN_ID, base_url, redirect_uri)
        say(f"[3/6] Authorizing with `airflow-exactonline authorize {CONN_ID}` (redirect URI {redirect_uri}) ...")
        say(authorize(CONN_ID))
        fake_admin(base_url, "reset_counters", {})

        first_when = dt.datetime(2024, 6, 1, 10, tzinfo=dt.timezone.utc)
        say(f"[4/6] Run 1 of example_dags/exactonline_mirror.py: a full mirror of {', '.join(ENTITIES)} ...")
        first = run_mirror_dag(first_when)
        calls = [api_calls(base_url)]
        say(f"      {first.run_id}: {sum(calls[0].values())} API calls")

        division = DIVISIONS[0]
        say(
            f"[5/6] Changing Exact in division {division}: crm/Accounts create, update, delete, delete + re-create; "
            "cashflow/PaymentConditions update, delete ..."
        )
        changed = change_accounts(base_url, division)
        changed.update(change_payment_conditions(base_url, division))
        say("      " + ", ".join(f"{k} {v}" for k, v in changed.items()))
        say("      Run 2 (an hour later): incremental, from the committed sync/ Timestamps ...")
        second = run_mirror_dag(first_when + dt.timedelta(hours=1))
        calls.append(api_calls(base_url))
        say(f"      {second.run_id}: {sum(calls[1].values())} API calls")

        say("[6/6] Tables vs the fake:")
        comparison = compare(base_url, target)
        code = report(comparison, calls)
        with sqlite3.connect(target) as db:
            names = dict(
                db.execute(
                    'SELECT "ID", "Name" FROM crm_accounts WHERE "ID" IN (?, ?)',
                    (changed["updated"], changed["recreated"]),
                ).fetchall()
            )
        summary = {
            "base_url": base_url,
            "target": str(target),
            "changed": changed,
            "names": names,
            "comparison": comparison,
            "api_calls": calls,
            "seconds": round(time.monotonic() - started, 1),
        }
        (home / "demo-summary.json").write_text(json.dumps(summary, indent=2))
        say()
        say(
            f"{'All tables equal the fake' if code == 0 else 'SOME TABLES DIFFER FROM THE FAKE'}; "
            f"done in {summary['seconds']} s. Database: {target}    Summary: {home / 'demo-summary.json'}"
        )
        say("See docs/mirror.md for the mirror DAG and how to point it at PostgreSQL.")
    finally:
        fake.terminate()
        try:
            fake.wait(timeout=10)
        except Exception:
            fake.kill()
    return code


if __name__ == "__main__":
    sys.exit(main())
