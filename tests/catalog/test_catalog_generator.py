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
DATA_DIR = next((d / "shared" / "data" for d in REPO_ROOT.parents if (d / "shared" / "data").is_dir()), Path("/-"))
REFERENCE = DATA_DIR / "exact-online-endpoints-2025-12.json"
OLDER = DATA_DIR / "exact-online-endpoints.json"
DESCRIPTIONS_JSON = REPO_ROOT / "airflow_provider_exactonline" / "catalog" / "descriptions.json"
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


def test_default_sources_are_shared_beside_the_repo(generator: ModuleType) -> None:
    assert generator.DEFAULT_SOURCE == REFERENCE
    assert generator.DEFAULT_OLDER == OLDER


@pytest.fixture(scope="module")
def older() -> dict:
    return json.loads(OLDER.read_text(encoding="utf-8"))


def test_regenerating_yields_the_checked_in_files(generator: ModuleType) -> None:
    catalog_text, descriptions_text, md_text = generator.generate(REFERENCE, OLDER)
    assert catalog_text == CATALOG_JSON.read_text(encoding="utf-8"), "run scripts/generate_catalog.py"
    assert descriptions_text == DESCRIPTIONS_JSON.read_text(encoding="utf-8"), "run scripts/generate_catalog.py"
    assert generator.generate(REFERENCE, OLDER) == (catalog_text, descriptions_text, md_text)  # deterministic
    assert md_text == ENDPOINTS_MD.read_text(encoding="utf-8"), "run scripts/generate_catalog.py"


def test_check_mode_of_the_script() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--source", str(REFERENCE), "--older", str(OLDER)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_catalog_is_compact() -> None:
    text = CATALOG_JSON.read_text(encoding="utf-8")
    assert "\n" not in text.rstrip("\n")  # minified
    assert len(text.encode()) < 300_000
    assert "Primary key" not in text  # descriptions live in descriptions.json, loaded only when asked
    assert REFERENCE.stat().st_size > len(text.encode())


def test_docs_table_has_a_row_per_entity() -> None:
    lines = ENDPOINTS_MD.read_text(encoding="utf-8").splitlines()
    header = lines.index("| Entity | Service | Path | Bulk | Sync | Deleted type | Methods | Notes |")
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert len(rows) == len(json.loads(CATALOG_JSON.read_text(encoding="utf-8"))["entities"]) == 387
    accounts = next(row for row in rows if row.startswith("| Accounts | crm |"))
    assert "[`bulk/CRM/Accounts`](" in accounts
    assert "[`sync/CRM/Accounts`](" in accounts
    assert "| 2 | GET, POST, PUT, DELETE | mandatory $filter (46 fields) |" in accounts
    assert sum("`bulk/" in row for row in rows) == 21
    assert sum("`sync/" in row for row in rows) == 60
    assert "| 2 | Accounts | `crm/Accounts` |  |" in lines


def test_an_unmatched_variant_fails_the_build(generator: ModuleType, reference: dict, older: dict) -> None:
    broken = copy.deepcopy(reference)
    extra = copy.deepcopy(next(e for e in broken["endpoints"] if e["uri"] == "sync/CRM/Accounts"))
    extra["uri"] = "sync/CRM/Leads"
    broken["endpoints"].append(extra)
    with pytest.raises(generator.CatalogBuildError, match=r"sync/CRM/Leads.*LINK_OVERRIDES or VARIANT_ONLY"):
        generator.build_catalog(broken, older)


def test_changed_counts_fail_the_build(generator: ModuleType, reference: dict, older: dict) -> None:
    broken = copy.deepcopy(reference)
    broken["endpoints"] = [e for e in broken["endpoints"] if e["uri"] != "bulk/CRM/Accounts"]
    with pytest.raises(generator.CatalogBuildError, match=r"expected 451 endpoints \(21 bulk / 60 sync\), found 450"):
        generator.build_catalog(broken, older)


def test_a_stale_link_rule_fails_the_build(generator: ModuleType, reference: dict, older: dict) -> None:
    broken = copy.deepcopy(reference)
    broken["endpoints"] = [e for e in broken["endpoints"] if e["uri"] != "sync/Project/ProjectWBS"]
    with pytest.raises(generator.CatalogBuildError, match="sync/project/projectwbs"):
        generator.build_catalog(broken, older)


def test_a_changed_deleted_code_fails_the_build(generator: ModuleType, reference: dict, older: dict) -> None:
    broken = copy.deepcopy(reference)
    deleted = next(e for e in broken["endpoints"] if e["uri"] == "sync/Deleted")
    field = next(f for f in deleted["fields"] if f["name"] == "EntityType")
    field["description"] = field["description"].replace("2= Accounts", "2= Relations")
    with pytest.raises(generator.CatalogBuildError, match="EntityType 2 = Relations"):
        generator.build_catalog(broken, older)
