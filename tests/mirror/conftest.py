"""Mirror tests: a fake Exact Online per test, a connection in an env var, tokens in memory (tests/airflow_db.py),
and a target database per test: SQLite, PostgreSQL (COPY path) or PostgreSQL through the standard MERGE path."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from airflow_db import conn, fake  # noqa: F401


@dataclass
class TargetDb:
    kind: str  # sqlite | postgres (typed COPY) | jsonb (COPY of JSON documents, psycopg2's path) | merge
    hook: Any
    dialect: Any
    conn_id: str = "mirror_db"


def _target(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TargetDb]:
    from airflow_provider_exactonline.mirror.dialects import MergeDialect, dialect_for

    if kind == "sqlite":
        from airflow.providers.sqlite.hooks.sqlite import SqliteHook

        monkeypatch.setenv(
            "AIRFLOW_CONN_MIRROR_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "m.db")})
        )
        hook = SqliteHook(sqlite_conn_id="mirror_db")
        yield TargetDb(kind, hook, dialect_for(hook))
        return
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from rotation_support import fresh_pg_database

    with fresh_pg_database() as url:
        monkeypatch.setenv("AIRFLOW_CONN_MIRROR_DB", f"postgres://postgres@127.0.0.1:5432/{url.rsplit('/', 1)[1]}")
        hook = PostgresHook(postgres_conn_id="mirror_db")
        if kind == "jsonb":
            from airflow_provider_exactonline.mirror import bulk

            monkeypatch.setitem(bulk.LOADS, "copy", bulk.CopyLoad)
        yield TargetDb(kind, hook, MergeDialect() if kind == "merge" else dialect_for(hook))


@pytest.fixture(params=["sqlite", "postgres", "jsonb", "merge"])
def target(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TargetDb]:
    yield from _target(request.param, tmp_path, monkeypatch)


@pytest.fixture
def pg_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TargetDb]:
    yield from _target("postgres", tmp_path, monkeypatch)
