"""``python -m airflow_provider_exactonline.testing serve`` as the demo uses it, plus the /_fake admin API."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import requests


def test_serve_command_and_admin_endpoints(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url_file = tmp_path / "url"
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_exactonline.testing",
            "serve",
            "--port",
            "0",
            "--auto-approve",
            "--no-mandatory-filtering",
            "--rows",
            "crm/Accounts=7",
            "--access-token-lifetime",
            "60",
            "--url-file",
            str(url_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert time.perf_counter() - started < 5  # no Airflow import
        assert url_file.read_text().strip() == base_url

        token = requests.post(base_url + "/_fake/issue_tokens", timeout=10).json()
        assert token["expires_in"] == "60"
        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {token['access_token']}", "Accept": "application/json"})
        rows = session.get(base_url + "/api/v1/1001/crm/Accounts").json()["d"]["results"]
        assert len(rows) == 7

        created = requests.post(
            base_url + "/_fake/mutate",
            json={"op": "create", "entity": "crm/Accounts", "data": {"Name": "Demo BV"}},
            timeout=10,
        )
        assert created.status_code == 201
        key = created.json()["ID"]
        updated = requests.post(
            base_url + "/_fake/mutate",
            json={"op": "update", "entity": "crm/Accounts", "key": key, "data": {"City": "Delft"}},
            timeout=10,
        ).json()
        assert updated["City"] == "Delft"
        deleted = requests.post(
            base_url + "/_fake/mutate",
            json={"op": "delete", "entity": "Accounts", "division": 1001, "key": rows[0]["ID"]},
            timeout=10,
        ).json()
        assert deleted["deleted"]["EntityType"] == 2
        bad = requests.post(
            base_url + "/_fake/mutate", json={"op": "delete", "entity": "Accounts", "key": "x"}, timeout=10
        )
        assert bad.status_code == 400

        requests.post(base_url + "/_fake/faults", json={"fail_next": {"n": 1, "status": 503}}, timeout=10)
        assert session.get(base_url + "/api/v1/1001/crm/Accounts").status_code == 503
        stats = requests.get(base_url + "/_fake/stats", timeout=10).json()
        assert stats["divisions"]["1001"]["Accounts"] == 7
        assert stats["requests"] == 2 and stats["current_refresh_token"] == token["refresh_token"]
        records = requests.get(base_url + "/_fake/records", params={"entity": "crm/Accounts"}, timeout=10).json()
        assert records["results"][-1]["Name"] == "Demo BV"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
