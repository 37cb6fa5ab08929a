"""Every code block in README.md and docs/ runs, so a copied snippet works.

A fenced block tagged ``python``, ``bash`` or ``sh`` is executed in a subprocess from the repository root,
with a fake Exact Online server running and ``exactonline_default`` pointing at it (see ``snippet_env``),
in a copy of the repository, so that what a snippet writes never lands in the checkout.
Its first line may say otherwise, and must then say why:

- ``# not runnable: <reason>`` — e.g. it needs a real Exact account or an interactive browser;
- ``# tested by: tests/<file>.py::<test name>`` — a test elsewhere runs exactly this (the demo, the suite);
- ``# continues the block above`` — run after the previous block of the same file, in one process.

``json`` blocks must parse. Blocks in other languages (``text``, ``sql``, ``ini``, untagged) are not code
to run and are left alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.airflow_db import connection_json

REPO = Path(__file__).resolve().parents[2]
# docs/fake-server.md has its own runner (tests/testing/test_fake_docs.py): its pytest example needs a session.
DOCS = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "fake-server.md")]
RUNNABLE = {"python", "bash", "sh"}
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
CONTINUES = "# continues the block above"


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def first_line(self) -> str:
        return next((line.strip() for line in self.code.splitlines() if line.strip()), "")


def snippets(path: Path) -> Iterator[Snippet]:
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start, indent = index, len(match["indent"])
        body: list[str] = []
        index += 1
        while index < len(lines) and not FENCE.match(lines[index]):
            body.append(lines[index][indent:])
            index += 1
        index += 1
        yield Snippet(path, start + 1, match["lang"].lower(), "\n".join(body) + "\n")


ALL = [snippet for path in DOCS for snippet in snippets(path)]


def _with_preceding(snippet: Snippet) -> str:
    """The block's code, preceded by the blocks it continues."""
    same_file = [s for s in ALL if s.path == snippet.path and s.lang == snippet.lang and s.line <= snippet.line]
    parts = [snippet.code]
    for earlier in reversed(same_file[:-1]):
        if not parts[0].lstrip().startswith(CONTINUES):
            break
        parts.insert(0, earlier.code)
    return "\n".join(parts)


@pytest.fixture(scope="module")
def snippet_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A fake Exact Online server, a migrated SQLite metadata DB and ``exactonline_default`` pointing at the fake."""
    from airflow_provider_exactonline.testing import FakeExactOnline

    home = tmp_path_factory.mktemp("snippet-airflow-home")
    workdir = tmp_path_factory.mktemp("snippet-checkout") / "repo"
    shutil.copytree(
        REPO, workdir, ignore=shutil.ignore_patterns(".git", ".venv", "test-artifacts", "*.egg-info", "__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(workdir),
    )
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    with FakeExactOnline(auto_approve=True) as fake:
        env["AIRFLOW_CONN_EXACTONLINE_DEFAULT"] = connection_json(fake)
        env["EXACTONLINE_FAKE_URL"] = fake.base_url
        env["SNIPPET_WORKDIR"] = str(workdir)
        yield env


def test_docs_have_snippets() -> None:
    assert len([s for s in ALL if s.lang in RUNNABLE]) >= 10, [s.id for s in ALL]


@pytest.mark.parametrize("snippet", [s for s in ALL if s.lang in RUNNABLE], ids=lambda s: s.id)
def test_snippet_runs(snippet: Snippet, snippet_env: dict[str, str]) -> None:
    head = snippet.first_line
    if head.startswith("# not runnable:"):
        assert len(head.split(":", 1)[1].strip()) >= 10, f"{snippet.id}: say why it cannot run"
        pytest.skip(f"{snippet.id} {head}")
    if head.startswith("# tested by:"):
        target = head.split(":", 1)[1].strip()
        file, _, name = target.partition("::")
        assert (REPO / file).is_file(), f"{snippet.id}: {file} does not exist"
        assert re.search(rf"def {re.escape(name)}\b", (REPO / file).read_text()), f"{snippet.id}: no test {name}"
        return
    code = _with_preceding(snippet)
    command = [sys.executable, "-c", code] if snippet.lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    result = subprocess.run(
        command, cwd=snippet_env["SNIPPET_WORKDIR"], env=snippet_env, capture_output=True, text=True, timeout=300
    )
    output = f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{snippet.id} failed:\n{code}\n{output}"


@pytest.mark.parametrize("snippet", [s for s in ALL if s.lang == "json"], ids=lambda s: s.id)
def test_json_snippet_parses(snippet: Snippet) -> None:
    json.loads(snippet.code)
