"""The checked-in catalog.json and docs/endpoints.md are exactly what the generator makes from the reference."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "generate_catalog.py"
REFERENCE = REPO_ROOT.parent / "shared" / "data" / "exact-online-endpoints.json"
CATALOG_JSON = REPO_ROOT / "airflow_provider_exactonline" / "catalog" / "catalog.json"
ENDPOINTS_MD = REPO_ROOT / "docs" / "endpoints.md"

pytestmark = pytest.mark.skipif(not REFERENCE.is_file(), reason="../shared reference data not present")


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_catalog", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def test_default_source_is_shared_beside_the_repo(generator: ModuleType) -> None:
    assert generator.DEFAULT_SOURCE == REFERENCE


def test_regenerating_yields_the_checked_in_files(generator: ModuleType) -> None:
    catalog_text, md_text = generator.generate(REFERENCE)
    assert catalog_text == CATALOG_JSON.read_text(encoding="utf-8"), "run scripts/generate_catalog.py"
    assert md_text == ENDPOINTS_MD.read_text(encoding="utf-8"), "run scripts/generate_catalog.py"


def test_check_mode_of_the_script() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--source", str(REFERENCE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_catalog_is_compact() -> None:
    text = CATALOG_JSON.read_text(encoding="utf-8")
    assert "\n" not in text.rstrip("\n")  # minified
    assert len(text.encode()) < 250_000
    assert REFERENCE.stat().st_size > len(text.encode())


def test_docs_table_has_a_row_per_entity() -> None:
    lines = ENDPOINTS_MD.read_text(encoding="utf-8").splitlines()
    header = lines.index("| Entity | Service | Path | Bulk | Sync | Deleted type | Methods |")
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert len(rows) == len(json.loads(CATALOG_JSON.read_text(encoding="utf-8"))["entities"]) == 353
    accounts = next(row for row in rows if row.startswith("| Accounts | crm |"))
    assert "[`bulk/CRM/Accounts`](" in accounts
    assert "[`sync/CRM/Accounts`](" in accounts
    assert "| 2 | GET, POST, PUT, DELETE |" in accounts
    assert sum("`bulk/" in row for row in rows) == 21
    assert sum("`sync/" in row for row in rows) == 36
    assert "| 2 | Accounts | `crm/Accounts` |  |" in lines


def test_an_unmatched_variant_fails_the_build(generator: ModuleType, reference: dict) -> None:
    broken = copy.deepcopy(reference)
    extra = copy.deepcopy(next(e for e in broken["endpoints"] if e["uri"].endswith("/sync/CRM/Accounts")))
    extra["uri"] = "/api/v1/{division}/sync/CRM/Leads"
    broken["endpoints"].append(extra)
    with pytest.raises(generator.CatalogBuildError, match=r"sync/CRM/Leads.*LINK_OVERRIDES or VARIANT_ONLY"):
        generator.build_catalog(broken)


def test_changed_counts_fail_the_build(generator: ModuleType, reference: dict) -> None:
    broken = copy.deepcopy(reference)
    broken["endpoints"] = [e for e in broken["endpoints"] if not e["uri"].endswith("/bulk/CRM/Accounts")]
    with pytest.raises(generator.CatalogBuildError, match="expected 21 bulk / 36 sync endpoints, found 20 / 36"):
        generator.build_catalog(broken)


def test_a_stale_link_rule_fails_the_build(generator: ModuleType, reference: dict) -> None:
    broken = copy.deepcopy(reference)
    broken["endpoints"] = [e for e in broken["endpoints"] if not e["uri"].endswith("/sync/Deleted")]
    with pytest.raises(generator.CatalogBuildError, match="sync/deleted"):
        generator.build_catalog(broken)
