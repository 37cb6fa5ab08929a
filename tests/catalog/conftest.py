"""The reference data the catalog is generated from (../shared/data beside the checkout), for tests that compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = next((d / "shared" / "data" for d in REPO_ROOT.parents if (d / "shared" / "data").is_dir()), Path("/-"))


@pytest.fixture(scope="session")
def reference_endpoints() -> list[dict]:
    """Endpoints of the 2025-12 reference; skips the test when the shared data is not present."""
    reference = DATA_DIR / "exact-online-endpoints-2025-12.json"
    if not reference.is_file():
        pytest.skip("../shared reference data not present")
    return json.loads(reference.read_text(encoding="utf-8"))["endpoints"]
