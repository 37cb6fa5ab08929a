"""Fixtures for the hook tests: connections in env vars, clocks, a fake Exact Online server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hook_support import ManualClock

from airflow_provider_exactonline.clock import ScaledClock


@pytest.fixture
def env_conns() -> Iterator[list[str]]:
    """Remove the AIRFLOW_CONN_* variables a test created."""
    before = {k for k in os.environ if k.startswith("AIRFLOW_CONN_")}
    yield []
    for key in [k for k in os.environ if k.startswith("AIRFLOW_CONN_") and k not in before]:
        del os.environ[key]


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def scaled_clock() -> ScaledClock:
    return ScaledClock(scale=120)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The session's sqlite metadata DB (tests/conftest.py points AIRFLOW_HOME at a temp dir), migrated."""
    from airflow.utils.db import initdb

    initdb()
