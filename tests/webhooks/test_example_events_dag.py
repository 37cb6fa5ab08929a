"""example_dags/exactonline_events.py with dag.test() against the fake: it subscribes, it mirrors, and it is
scheduled on the change Assets with change triggers as watchers. (The scheduler and triggerer path of the
same construction is tests/integration/test_webhooks_e2e.py.)"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_exactonline.testing import FakeExactOnline
from airflow_provider_exactonline.webhooks.assets import change_asset_uri
from airflow_provider_exactonline.webhooks.subscriptions import ENTITY

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import airflow_db  # tests/ is not a package

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "exactonline_events.py"
CALLBACK = "https://airflow.example.com/exactonline-webhooks/exactonline_default"


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, FakeExactOnline, Path]]:
    airflow_db.migrate()
    airflow_db.forget_exactonline_variables()
    db = tmp_path / "mirror.db"
    monkeypatch.setenv("AIRFLOW_CONN_EXACTONLINE_MIRROR_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    monkeypatch.setenv("EXACTONLINE_MIRROR_PATH", f"file://{tmp_path / 'exports'}")
    monkeypatch.setenv("EXACTONLINE_EVENTS_CALLBACK_URL", CALLBACK)
    with FakeExactOnline(rows={"crm/Accounts": 12, "crm/Contacts": 5}) as fake:
        key = airflow_db.connect(fake, "exactonline_default")
        spec = importlib.util.spec_from_file_location("example_exactonline_events", EXAMPLE)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module, fake, db
        os.environ.pop(key, None)


def test_it_is_scheduled_on_the_change_assets_with_change_triggers(example: Any) -> None:
    module, _fake, _db = example
    uris = {a.uri: a for a in module.assets}
    assert set(uris) == {change_asset_uri("exactonline_default", 1001, t) for t in ("Accounts", "Contacts")}
    for asset in uris.values():
        (watcher,) = asset.watchers
        classpath, kwargs = watcher.trigger.serialize()
        assert classpath.endswith("ExactOnlineChangeTrigger")
        assert kwargs["watermark_id"] == "exactonline_events_mirror.mirror" and kwargs["budget_share"] == 0.02
    condition = module.dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"  # any change of either entity starts the mirror
    assert {a.uri for a in condition.objects} == set(uris)


def test_it_subscribes_idempotently_and_mirrors(example: Any) -> None:
    module, fake, db = example
    day = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)
    assert module.subscribe_dag.test(logical_date=day).state == "success"
    assert module.subscribe_dag.test(logical_date=day + dt.timedelta(hours=1)).state == "success"
    subs = sorted((r["Topic"], r["CallbackURL"]) for r in fake.records(ENTITY, 1001) if r["CallbackURL"] == CALLBACK)
    assert subs == [("Accounts", CALLBACK), ("Contacts", CALLBACK)]  # the rerun made no duplicates

    assert module.dag.test(logical_date=day).state == "success"
    with sqlite3.connect(db) as conn:
        accounts = conn.execute('SELECT COUNT(*) FROM "crm_accounts" WHERE "Division" = 1001').fetchone()[0]
        contacts = conn.execute('SELECT COUNT(*) FROM "crm_contacts" WHERE "Division" = 1001').fetchone()[0]
    assert (accounts, contacts) == (fake.record_count("crm/Accounts", 1001), fake.record_count("crm/Contacts", 1001))
