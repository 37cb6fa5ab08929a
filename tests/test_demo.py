"""scripts/demo.py end to end in a subprocess: fake server, SQLite DB, CLI authorization, two DAG runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo(tmp_path):
    home = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    result = subprocess.run(
        [sys.executable, "scripts/demo.py", "--home", str(home), "--rows", "150"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "Authorized: tokens stored in connection 'exactonline_default'" in result.stdout
    summary = json.loads((home / "demo-summary.json").read_text())
    first, second = summary["runs"]
    assert len(first["outputs"]) == len(second["outputs"]) == 10  # 5 entities x 2 divisions
    accounts_1001 = next(o for o in first["outputs"] if o["entity"] == "crm/Accounts" and o["division"] == 1001)
    assert accounts_1001["rows"] == 150 and accounts_1001["watermark_from"] == 0
    changed = next(o for o in second["outputs"] if o["entity"] == "crm/Accounts" and o["division"] == 1001)
    assert changed["rows"] == 2 and changed["deletes"] == 1
    assert changed["watermark_from"] == accounts_1001["watermark_to"]
    run_dir = Path(changed["dir"])
    rows = [json.loads(line) for line in (run_dir / "part-00000.jsonl").read_text().splitlines()]
    assert {r["ID"] for r in rows} == {summary["changed"]["created"], summary["changed"]["updated"]}
    deleted = [json.loads(line) for line in (run_dir / "deleted-00000.jsonl").read_text().splitlines()]
    assert [d["EntityKey"] for d in deleted] == [summary["changed"]["deleted"]]
    assert sum(o["rows"] for o in second["outputs"]) == 2
    key = changed["watermark_variable"]
    assert summary["watermarks"][key]["timestamp"] == changed["watermark_to"]
    assert str(home / "exports") in result.stdout
