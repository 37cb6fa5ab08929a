"""Shared sync/Deleted runs on real PostgreSQL: one read per division per run, tables equal the fake; two
mirrors (two DAG ids) on one export root both keep every row."""

from __future__ import annotations

from collections import Counter
from typing import Any

from support import assert_equal, state_rows

from airflow_provider_exactonline.catalog import resolve_entity
from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook
from airflow_provider_exactonline.mirror.dag import mirror_deletions, mirror_one
from airflow_provider_exactonline.mirror.loader import MirrorLoader
from airflow_provider_exactonline.mirror.schema import table_for
from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore

ENTITIES = ["crm/Accounts", "crm/Contacts"]
DIVISIONS = [1001, 1002]


class Mirror:
    """What one mirror DAG run does (its ``deletions`` then ``mirror`` tasks), with in-memory watermarks."""

    def __init__(self, dag_id: str, conn: dict[str, Any], target: Any, root: str, prefix: str = "") -> None:
        self.dag_id, self.conn, self.target, self.root, self.prefix = dag_id, conn, target, root, prefix
        self.store = MemoryWatermarkStore()

    def hook(self) -> ExactOnlineHook:
        return ExactOnlineHook(self.conn["exactonline_conn_id"], **self.conn["hook_params"])

    def run(self, run_id: str) -> dict[str, Any]:
        common = {"exactonline_conn_id": self.conn["exactonline_conn_id"], "path": self.root, "run_id": run_id}
        out: dict[str, Any] = {"deletions": {}, "tables": {}}
        for division in DIVISIONS:
            out["deletions"][division] = mirror_deletions(
                **common,
                division=division,
                entities=ENTITIES,
                watermark_id=f"{self.dag_id}.deletions",
                watermark_store=self.store,
                hook=self.hook(),
            )
        for division in DIVISIONS:
            for entity in ENTITIES:
                out["tables"][(entity, division)] = mirror_one(
                    **common,
                    db_conn_id=self.target.conn_id,
                    entity=entity,
                    division=division,
                    watermark_id=f"{self.dag_id}.mirror",
                    table_prefix=self.prefix,
                    watermark_store=self.store,
                    deletions_watermark_id=f"{self.dag_id}.deletions",
                    hook=self.hook(),
                )
        return out

    def loader(self, entity: str) -> MirrorLoader:
        return MirrorLoader(self.target.hook, table_for(resolve_entity(entity), self.prefix))

    def assert_equal(self, fake: Any) -> None:
        for entity in ENTITIES:
            for division in DIVISIONS:
                assert_equal(self.target.hook, fake, self.loader(entity), entity, division)


def change(fake: Any, n: int) -> None:
    """Per entity and division: a create, an update (twice), a delete, a delete + re-create with the same key."""
    for entity in ENTITIES:
        for division in DIVISIONS:
            keys = [r["ID"] for r in fake.records(entity, division)]
            fake.create_record(entity, division, {"Name": f"New {n}"} if entity == "crm/Accounts" else {})
            fake.update_record(entity, division, keys[n], {"City" if entity == "crm/Accounts" else "Notes": f"u{n}"})
            fake.update_record(entity, division, keys[n], {"Phone": f"0{n}"})
            fake.delete_record(entity, division, keys[5 + n])
            gone = keys[10 + n]
            fake.delete_record(entity, division, gone)
            fake.create_record(
                entity, division, {"ID": gone, **({"Name": f"Back {n}"} if "Accounts" in entity else {})}
            )


def deleted_reads(fake: Any) -> Counter[int]:
    """``sync/Deleted`` requests per division since the last reset."""
    per_endpoint = fake.stats()["requests_per_endpoint"]
    counts: Counter[int] = Counter()
    for endpoint, count in per_endpoint.items():
        if endpoint.lower().endswith("/sync/deleted"):
            counts[int(endpoint.split("/api/v1/")[1].split("/")[0])] += count
    return counts


def test_one_deleted_read_per_division_and_tables_equal_the_fake(fake, conn, tmp_path, pg_target):
    mirror = Mirror("mirror_a", conn, pg_target, f"file://{tmp_path / 'exports'}")
    mirror.run("run0")
    mirror.assert_equal(fake)
    for n in range(1, 4):
        change(fake, n)
        fake.reset_counters()
        result = mirror.run(f"run{n}")
        assert deleted_reads(fake) == {1001: 1, 1002: 1}  # not one per entity
        for (entity, _division), loaded in result["tables"].items():
            assert loaded["runs"] == 2, (entity, loaded)  # its own run and the shared deletion run
            assert loaded["deletes"] == 2, (entity, loaded)
        mirror.assert_equal(fake)
    # Each table recorded each shared deletion run once per division.
    runs = Counter(d for d, key in state_rows(pg_target.hook, "crm_contacts") if ".deletions" in key)
    assert runs == {1001: 4, 1002: 4}


def test_two_mirrors_on_one_root_both_keep_every_row(fake, conn, tmp_path, pg_target):
    root = f"file://{tmp_path / 'exports'}"
    first = Mirror("mirror_a", conn, pg_target, root, prefix="a_")
    second = Mirror("mirror_b", conn, pg_target, root, prefix="b_")
    first.run("scheduled__2024-01-01T10-00-00")  # the same run id for both: same schedule
    second.run("scheduled__2024-01-01T10-00-00")
    for n in range(1, 3):
        change(fake, n)
        first.run(f"scheduled__2024-01-01T1{n}-00-00")
        change(fake, n + 3)
        second.run(f"scheduled__2024-01-01T1{n}-00-00")
        second.assert_equal(fake)
    first.run("scheduled__2024-01-01T13-00-00")
    first.assert_equal(fake)
    second.assert_equal(fake)


def test_deletions_run_keeps_only_mirrored_types_and_a_retry_of_a_committed_run_reads_nothing(fake, conn, tmp_path):
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_exactonline.mirror.deletions import deletions_dir

    store = MemoryWatermarkStore()
    root = f"file://{tmp_path / 'exports'}"
    fake.delete_record("crm/Accounts", 1001, next(iter(fake.records("crm/Accounts", 1001)))["ID"])
    fake.delete_record("crm/Contacts", 1001, next(iter(fake.records("crm/Contacts", 1001)))["ID"])
    hook = ExactOnlineHook(conn["exactonline_conn_id"], **conn["hook_params"])
    common = {"exactonline_conn_id": conn["exactonline_conn_id"], "path": root, "division": 1001}
    common.update(entities=["crm/Accounts"], watermark_id="m.deletions", watermark_store=store, hook=hook)
    first = mirror_deletions(**common, run_id="r1")
    assert first["by_entity_type"] == {"2": 1} and first["api_calls"] == 1  # the Contacts deletion is not kept
    again = mirror_deletions(**common, run_id="r1")  # a retry after the commit
    assert again["skipped"] is True and again["api_calls"] == 0
    runs = MirrorLoader.finalized_runs(deletions_dir(ObjectStoragePath(root), 1001), "m.deletions")
    assert len(runs) == 1 and runs[0][0]["entity_types"] == [2]
