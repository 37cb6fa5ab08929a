"""OpenLineage facets of ExactOnlineToObjectStorageOperator: a real export against the fake server, then
the lineage the openlineage provider would emit (the provider is in the ``test`` extra)."""

from __future__ import annotations

import builtins
from urllib.parse import urlsplit

import pytest
from airflow_db import ctx

from airflow_provider_exactonline.operators.exactonline import ExactOnlineToObjectStorageOperator
from airflow_provider_exactonline.operators.export import iter_output_records
from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore

pytest.importorskip("airflow.providers.openlineage.extractors")


def export(conn, tmp_path, **kwargs):
    kwargs.setdefault("entity", "crm/Accounts")
    kwargs.setdefault("watermark_store", MemoryWatermarkStore())  # no Variables outside a task process
    return ExactOnlineToObjectStorageOperator(task_id="export", path=str(tmp_path), **conn, **kwargs)


def test_lineage_names_exact_input_and_written_run_directories(fake, conn, tmp_path):
    from airflow.providers.common.compat.openlineage.facet import (
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import ObjectStoragePath

    op = export(conn, tmp_path, divisions=[1001, 1002], rows_per_part=100)
    summary = op.execute(ctx("manual__lineage"))
    lineage = op.get_openlineage_facets_on_complete(None)

    assert isinstance(lineage, OperatorLineage)
    host = urlsplit(fake.base_url).netloc
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        (f"exactonline://{host}", "1001/crm/Accounts"),
        (f"exactonline://{host}", "1002/crm/Accounts"),
    ]
    expected_dirs = [
        str(tmp_path / "crm" / "Accounts" / f"division={d}" / "manual__lineage__adhoc_airflow.export")
        for d in (1001, 1002)
    ]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", p) for p in expected_dirs]
    for out, division in zip(lineage.outputs, summary["divisions"], strict=True):
        assert isinstance(out, OutputDataset)
        written = list(iter_output_records(ObjectStoragePath(division["path"])))
        stats = (out.outputFacets or {})["outputStatistics"]
        assert isinstance(stats, OutputStatisticsOutputDatasetFacet)
        assert stats.rowCount == len(written) == 150
        assert (ObjectStoragePath(division["path"]) / "_manifest.json").exists()


def test_object_store_output_uses_bucket_namespace_without_conn_id(fake, conn, tmp_path):
    op = export(conn, tmp_path, divisions=1001)
    op.execute(ctx())
    # What an s3 export with path_conn_id records: ObjectStoragePath keeps the conn id as URL userinfo.
    op._lineage["outputs"] = [("s3://aws_default@my-bucket/exact/crm/Accounts/division=1001/manual__test", 7)]
    (out,) = op.get_openlineage_facets_on_complete(None).outputs
    assert (out.namespace, out.name) == ("s3://my-bucket", "exact/crm/Accounts/division=1001/manual__test")
    assert getattr(out.outputFacets["outputStatistics"], "rowCount", None) == 7


def test_no_lineage_before_execute(conn, tmp_path):
    assert export(conn, tmp_path, divisions=1001).get_openlineage_facets_on_complete(None) is None


def test_returns_none_without_openlineage_provider(fake, conn, tmp_path, monkeypatch):
    op = export(conn, tmp_path, divisions=1001)
    op.execute(ctx())
    real_import = builtins.__import__

    def no_openlineage(name, *args, **kwargs):
        if name.startswith("airflow.providers.openlineage"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openlineage)
    assert op.get_openlineage_facets_on_complete(None) is None
