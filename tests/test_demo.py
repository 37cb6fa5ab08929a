"""scripts/demo.py: the SQL mirror end to end (fake server, SQLite, CLI authorization, two DAG runs)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TABLES = ["crm_accounts", "crm_contacts", "salesinvoice_salesinvoices", "logistics_items", "cashflow_paymentconditions"]


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo(tmp_path):
    home = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "EXACTONLINE_"))}
    result = subprocess.run(
        [sys.executable, "scripts/demo.py", "--home", str(home), "--rows", "120"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "Authorized: tokens stored in connection 'exactonline_default'" in result.stdout
    lines = re.findall(
        r"^\s+(\w+)\s+(100[12])\s+(\d+)\s+(\d+)\s+(equal|DIFFERENT)\s+(\d+) / (\d+)$", result.stdout, re.M
    )
    assert sorted((t, d) for t, d, *_ in lines) == sorted((t, d) for t in TABLES for d in ("1001", "1002"))
    for table, division, in_db, in_fake, verdict, _, second_run_calls in lines:
        assert verdict == "equal" and in_db == in_fake, (table, division)
        assert second_run_calls == "1"  # one sync/ page with nothing new; the 24-row snapshot is one page too
    assert "All tables equal the fake" in result.stdout

    summary = json.loads((home / "demo-summary.json").read_text())
    accounts = {c["division"]: c for c in summary["comparison"] if c["table"] == "crm_accounts"}
    assert accounts[1001]["db"] == 120 and accounts[1002]["db"] == 120  # +1 created, -1 deleted in 1001
    conditions = {c["division"]: c["db"] for c in summary["comparison"] if c["table"] == "cashflow_paymentconditions"}
    assert conditions == {1001: 23, 1002: 24}  # the snapshot dropped the condition deleted in 1001
    changed = summary["changed"]
    assert summary["names"] == {
        changed["updated"]: "Renamed by the demo",
        changed["recreated"]: "Re-created by the demo",
    }
    first, second = summary["api_calls"]
    assert first["crm/Accounts@1001"] >= 1
    assert first["sync/Deleted"] == second["sync/Deleted"] == 2  # one per division, not one per entity


def test_report_exits_non_zero_when_a_table_differs(capsys):
    demo = _demo_module()
    calls = [{**{f"{e}@{d}": 1 for e in demo.ENTITIES for d in demo.DIVISIONS}, "other": 0}]
    same = {"table": "crm_accounts", "division": 1001, "db": 3, "fake": 3, "equal": True}
    assert demo.report([same], calls) == 0
    differs = {"table": "crm_contacts", "division": 1002, "db": 3, "fake": 4, "equal": False}
    assert demo.report([same, differs], calls) == 1
    assert "DIFFERENT" in capsys.readouterr().out
