"""The demo: the hourly incremental-sync example DAG against a fake Exact Online, no account needed.

Run from the repository root with the package installed (``scripts/demo.sh`` does both)::

    python scripts/demo.py [--home .demo] [--rows 400]

What it does, printing each step:

1. starts the fake Exact Online server (``python -m airflow_provider_exactonline.testing serve``);
2. creates a SQLite metadata DB in ``--home`` (a fresh AIRFLOW_HOME) and the ``exactonline_default``
   connection pointing at the fake, with a loopback redirect URI;
3. authorizes it with ``airflow-exactonline authorize exactonline_default``: the CLI listens on the
   redirect URI, the demo "clicks" the authorization URL (the fake approves on its own) and the CLI
   stores the tokens in the connection;
4. runs ``example_dags/exactonline_incremental_sync.py`` with ``dag.test()``: a full load of five
   entities in two divisions;
5. creates, updates and deletes an account on the fake, and runs the DAG again: an incremental run
   that exports the two changed rows and the deletion;
6. prints the files, row counts, deletes and watermarks, and writes them to ``{home}/demo-summary.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONN_ID = "exactonline_default"
ENTITIES = {
    "crm/Accounts": 1.0,
    "crm/Contacts": 1.5,
    "salesinvoice/SalesInvoices": 0.5,
    "financialtransaction/TransactionLines": 3.0,
    "financial/GLAccounts": 0.2,
}


def say(message: str = "") -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_environment(home: Path) -> None:
    """A fresh AIRFLOW_HOME with a SQLite DB; must run before Airflow is imported."""
    if home.exists():
        shutil.rmtree(home)
    (home / "exports").mkdir(parents=True)
    for key in [k for k in os.environ if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__"))]:
        del os.environ[key]
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
            # The example DAG reads its export root from this Variable.
            "AIRFLOW_VAR_EXACTONLINE_EXPORT_PATH": f"file://{home / 'exports'}",
        }
    )


def start_fake(home: Path, rows: int) -> tuple[subprocess.Popen[bytes], str]:
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
    for entity, factor in ENTITIES.items():
        command += ["--rows", f"{entity}={max(1, int(rows * factor))}"]
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


def create_connection(base_url: str, redirect_uri: str) -> None:
    from airflow.models import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        session.add(
            Connection(
                conn_id=CONN_ID,
                conn_type="exactonline",
                host=base_url,
                login="fake-client-id",
                password="fake-client-secret",
                extra=json.dumps({"redirect_uri": redirect_uri}),
            )
        )


def authorize(redirect_uri: str) -> str:
    """Run the real CLI; play the browser: open the printed URL (the fake approves and redirects)."""
    import requests

    cli = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from airflow_provider_exactonline.cli import main; sys.exit(main())",
            "authorize",
            CONN_ID,
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


def change_some_accounts(base_url: str, division: int) -> dict[str, Any]:
    accounts = fake_admin(base_url, f"records?entity=crm/Accounts&division={division}&limit=2")["results"]
    created = fake_admin(
        base_url,
        "mutate",
        {
            "op": "create",
            "entity": "crm/Accounts",
            "division": division,
            "data": {"Name": "Demo Nieuw BV", "Code": "DEMO1", "City": "Utrecht"},
        },
    )
    fake_admin(
        base_url,
        "mutate",
        {
            "op": "update",
            "entity": "crm/Accounts",
            "division": division,
            "key": accounts[0]["ID"],
            "data": {"Name": "Renamed by the demo"},
        },
    )
    fake_admin(
        base_url, "mutate", {"op": "delete", "entity": "crm/Accounts", "division": division, "key": accounts[1]["ID"]}
    )
    return {"created": created["ID"], "updated": accounts[0]["ID"], "deleted": accounts[1]["ID"]}


def run_dag(when: dt.datetime) -> Any:
    import logging

    logging.getLogger("airflow").setLevel(logging.WARNING)
    import importlib.util

    path = REPO / "example_dags" / "exactonline_incremental_sync.py"
    spec = importlib.util.spec_from_file_location("exactonline_incremental_sync", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    run = dag.test(logical_date=when, run_after=when)
    if run.state != "success":
        states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
        raise SystemExit(f"DAG run {run.run_id} ended {run.state}: {states}")
    return run


def collect(exports: Path, run_id: str) -> list[dict[str, Any]]:
    """One row per (entity, division) output of a run, from its _manifest.json."""
    out = []
    for manifest_path in sorted(exports.glob("*/*/division=*/*/_manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        if manifest["run_id"] != run_id:
            continue
        out.append(
            {
                "entity": manifest["entity"],
                "division": manifest["division"],
                "dir": str(manifest_path.parent),
                "files": sorted(p.name for p in manifest_path.parent.iterdir()),
                "rows": manifest["rows"],
                "deletes": manifest["deletes"],
                "watermark_from": manifest["watermark"]["from"],
                "watermark_to": manifest["watermark"]["to"],
                "watermark_variable": manifest["watermark"]["variable"],
                "api_calls": manifest["api_calls"],
            }
        )
    return out


def print_table(rows: list[dict[str, Any]], exports: Path) -> None:
    say(f"    {'entity':40} {'division':>8} {'rows':>6} {'deletes':>7} {'watermark from -> to':>26}  files")
    for r in rows:
        files = ", ".join(f for f in r["files"] if not f.startswith("."))
        watermark = f"{r['watermark_from']} -> {r['watermark_to']}"
        say(f"    {r['entity']:40} {r['division']:>8} {r['rows']:>6} {r['deletes']!s:>7} {watermark:>26}  {files}")
    say(f"    under {exports}/<entity>/division=<d>/<run>/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=REPO / ".demo", help="demo AIRFLOW_HOME (recreated)")
    parser.add_argument("--rows", type=int, default=400, help="generated Accounts per division (others scale)")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    started = time.monotonic()

    prepare_environment(home)
    say("[1/6] Starting the fake Exact Online server (no Exact account needed) ...")
    fake, base_url = start_fake(home, args.rows)
    try:
        say(f"      {base_url}  (log: {home / 'fake-server.log'})")
        say(f"[2/6] Creating a SQLite metadata DB in {home} and the {CONN_ID!r} connection ...")
        from airflow.utils.db import initdb

        initdb()
        redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        create_connection(base_url, redirect_uri)
        say(f"[3/6] Authorizing with `airflow-exactonline authorize {CONN_ID}` (redirect URI {redirect_uri}) ...")
        say(authorize(redirect_uri))

        exports = home / "exports"
        first_when = dt.datetime(2024, 6, 1, 10, tzinfo=dt.timezone.utc)
        say("[4/6] Run 1 of example_dags/exactonline_incremental_sync.py: no watermark yet, so a full load ...")
        first = run_dag(first_when)
        rows1 = collect(exports, first.run_id)
        print_table(rows1, exports)

        division = min(r["division"] for r in rows1)
        say(f"[5/6] Changing Exact: create, update and delete one account each in division {division} ...")
        changed = change_some_accounts(base_url, division)
        say(f"      created {changed['created']}, updated {changed['updated']}, deleted {changed['deleted']}")
        say("      Run 2 (an hour later): incremental, from the committed watermarks ...")
        second = run_dag(first_when + dt.timedelta(hours=1))
        rows2 = collect(exports, second.run_id)
        print_table(rows2, exports)

        say("[6/6] Watermarks (Airflow Variables; delete one to make the next run a full load):")
        from airflow.models import Variable

        watermarks = {}
        for r in rows2:
            value = json.loads(Variable.get(r["watermark_variable"]))
            watermarks[r["watermark_variable"]] = value
        for key, value in sorted(watermarks.items()):
            say(f"    {key} = Timestamp {value['timestamp']} (deletes {value['deleted_timestamp']})")
        accounts = next(r for r in rows2 if r["entity"] == "crm/Accounts" and r["division"] == division)
        summary = {
            "base_url": base_url,
            "exports": str(exports),
            "changed": changed,
            "runs": [{"run_id": first.run_id, "outputs": rows1}, {"run_id": second.run_id, "outputs": rows2}],
            "watermarks": watermarks,
            "seconds": round(time.monotonic() - started, 1),
        }
        (home / "demo-summary.json").write_text(json.dumps(summary, indent=2))
        say()
        say(
            f"Done in {summary['seconds']} s. Run 1 wrote {sum(r['rows'] for r in rows1)} rows; run 2 wrote "
            f"{sum(r['rows'] for r in rows2)} changed rows and {sum(r['deletes'] or 0 for r in rows2)} deletion(s) "
            f"(crm/Accounts division {division}: {accounts['rows']} rows, {accounts['deletes']} delete)."
        )
        say(f"Files: {exports}    Summary: {home / 'demo-summary.json'}")
        say("See docs/operators.md for how a downstream merge applies the deletes.")
    finally:
        fake.terminate()
        try:
            fake.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fake.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
