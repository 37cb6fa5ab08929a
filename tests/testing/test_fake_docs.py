"""Every code block in docs/fake-server.md runs as written (or says why not)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "fake-server.md"
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
RUNNABLE = [code for lang, code in BLOCKS if not code.startswith("# not runnable")]


def test_every_block_is_python_or_marked_not_runnable() -> None:
    assert len(RUNNABLE) >= 3
    assert all(lang == "python" for lang, code in BLOCKS if not code.startswith("# not runnable"))


@pytest.mark.parametrize("code", [c for c in RUNNABLE if "def test_" not in c], ids=lambda c: c.splitlines()[-1][:40])
def test_plain_blocks_run(code: str) -> None:
    exec(compile(code, str(DOC), "exec"), {"__name__": "fake_server_doc"})


def test_the_pytest_example_passes_in_a_fresh_airflow_home(tmp_path: Path) -> None:
    (example,) = [c for c in RUNNABLE if "def test_" in c]
    (tmp_path / "test_doc_example.py").write_text(example)
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "PYTEST_"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_doc_example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
