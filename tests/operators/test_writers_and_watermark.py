"""Part writers (JSON Lines, CSV, Parquet) and the watermark store: no server, no Airflow DB."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.operators.export import _PartSet, safe_run_name
from airflow_provider_exactonline.operators.watermark import (
    MAX_KEY_LENGTH,
    MemoryWatermarkStore,
    Watermark,
    default_watermark_id,
    watermark_key,
)
from airflow_provider_exactonline.operators.writers import check_format, clean_record, open_writer

RECORDS = [
    {
        "ID": "a",
        "Name": 'O\'Brien, "Ltd"',
        "Division": 1001,
        "Amount": 1.5,
        "Blocked": False,
        "Modified": "/Date(1641034800000)/",
        "__metadata": {"uri": "x"},
        "Lines": {"__deferred": {"uri": "y"}},
    },
    {"ID": "b", "Name": "Zeeman", "Division": 1001, "Amount": None, "Blocked": True, "Modified": None},
]


def _path(tmp_path):
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(f"file://{tmp_path}")


def test_clean_record_drops_odata_plumbing_and_converts_dates_on_request():
    raw = clean_record(RECORDS[0], convert_dates=False, timezone="UTC")
    assert "__metadata" not in raw and "Lines" not in raw
    assert raw["Modified"] == "/Date(1641034800000)/"
    converted = clean_record(RECORDS[0], convert_dates=True, timezone="UTC")
    assert converted["Modified"].isoformat().startswith("2022-01-01T11:00:00")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_round_trip(tmp_path, fmt):
    base = _path(tmp_path)
    rows = [clean_record(r, convert_dates=True, timezone="UTC") for r in RECORDS]
    with open_writer(
        fmt,
        base / f"p.{fmt}",
        ["ID", "Name", "Division", "Amount", "Blocked", "Modified"],
        {"Division": "number", "Amount": "number", "Blocked": "boolean"},
    ) as writer:
        writer.write_page(rows[:1])
        writer.write_page(rows[1:])
    assert writer.rows == 2
    target = tmp_path / f"p.{fmt}"
    if fmt == "jsonl":
        back = [json.loads(line) for line in target.read_text().splitlines()]
        assert back[0]["Name"] == 'O\'Brien, "Ltd"' and back[0]["Modified"].startswith("2022-01-01T11:00:00")
        assert back[1]["Amount"] is None
    elif fmt == "csv":
        back = list(csv.DictReader(target.open()))
        assert back[0]["Name"] == 'O\'Brien, "Ltd"' and back[1]["Blocked"] == "true" and back[1]["Amount"] == ""
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(target)
        assert table.schema.field("Division").type == "int64"
        assert str(table.schema.field("Modified").type).startswith("timestamp")
        back = table.to_pylist()
        assert back[0]["Amount"] == 1.5 and back[1]["Blocked"] is True
        assert back[0]["Modified"] == dt.datetime(2022, 1, 1, 11, 0, tzinfo=dt.timezone.utc)


def test_part_set_rolls_over_at_rows_per_part(tmp_path):
    parts = _PartSet(_path(tmp_path), "part", "jsonl", None, {}, rows_per_part=3)
    parts.write([{"ID": str(i)} for i in range(4)])
    parts.write([{"ID": str(i)} for i in range(4, 8)])
    parts.close()
    assert [p["rows"] for p in parts.parts] == [3, 3, 2]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    ids = [json.loads(line)["ID"] for f in sorted(tmp_path.iterdir()) for line in f.read_text().splitlines()]
    assert ids == [str(i) for i in range(8)]


def test_bad_format_is_named():
    with pytest.raises(ExactOnlineConfigError, match="jsonl, csv, parquet"):
        check_format("xml")
    assert check_format("JSON") == "jsonl"


def test_watermark_key_and_values():
    key = watermark_key("exactonline_default", "crm/Accounts", 1001, default_watermark_id("nightly", "sync"))
    assert key == "exactonline_watermark__nightly.sync__exactonline_default__crm_Accounts__1001"
    assert watermark_key("c", "crm/Accounts", 1, "dag_b.sync") != watermark_key("c", "crm/Accounts", 1, "dag_a.sync")
    assert (
        watermark_key("c", "crm/Accounts", 1, "my shared/id")
        == "exactonline_watermark__my_shared_id__c__crm_Accounts__1"
    )
    with pytest.raises(ExactOnlineConfigError, match="watermark_id"):
        watermark_key("c", "crm/Accounts", 1, " ")
    assert Watermark.from_value("4711") == Watermark(timestamp=4711)
    wm = Watermark(timestamp=5, deleted_timestamp=3, run_id="r")
    assert Watermark.from_value(wm.to_json()) == wm
    assert Watermark.from_value(None) is None
    store = MemoryWatermarkStore()
    store.set(key, wm)
    assert store.get(key) == wm
    store.delete(key)
    assert store.get(key) is None


def test_long_watermark_keys_fit_airflows_key_column_and_stay_distinct():
    """dag_id and task_id may each have 250 characters; Airflow's variable.key holds 250."""
    long_dag = "d" * 250
    a = watermark_key("exactonline_default", "crm/Accounts", 1001, default_watermark_id(long_dag, "a"))
    b = watermark_key("exactonline_default", "crm/Accounts", 1001, default_watermark_id(long_dag, "b"))
    assert len(a) == len(b) == MAX_KEY_LENGTH and a != b
    assert a.startswith("exactonline_watermark__ddd")


def test_safe_run_name():
    assert safe_run_name("scheduled__2024-01-01T00:00:00+00:00") == "scheduled__2024-01-01T00-00-00+00-00"
    assert "/" not in safe_run_name("a/b")


def test_parquet_keeps_catalog_integers_as_integers(tmp_path):
    import pyarrow.parquet as pq

    from airflow_provider_exactonline.operators.writers import ParquetWriter

    target = tmp_path / "part.parquet"
    writer = ParquetWriter(
        target, ["InvoiceNumber", "AmountDC"], {"InvoiceNumber": "Edm.Int32", "AmountDC": "Edm.Double"}
    )
    writer.write_page([{"InvoiceNumber": 20000176, "AmountDC": 12.5}, {"InvoiceNumber": None, "AmountDC": 3}])
    writer.close()
    table = pq.read_table(target)
    assert str(table.schema.field("InvoiceNumber").type) == "int64"
    assert table.to_pylist() == [
        {"InvoiceNumber": 20000176, "AmountDC": 12.5},
        {"InvoiceNumber": None, "AmountDC": 3.0},
    ]


def test_csv_keeps_none_and_empty_string_apart(tmp_path):
    rows = [
        {"ID": "a", "Name": "", "City": None, "Note": 'say "hi"\nbye', "Tags": ["x"], "Blocked": True},
        {"ID": "b", "Name": "Zeeman", "City": "Utrecht", "Note": "a,b", "Tags": None, "Blocked": None},
    ]
    with open_writer("csv", _path(tmp_path) / "p.csv", ["ID", "Name", "City", "Note", "Tags", "Blocked"]) as writer:
        writer.write_page(rows)
    text = (tmp_path / "p.csv").read_text()
    assert text.splitlines()[1:3] == ['a,"",,"say ""hi""', 'bye","[""x""]",true']  # "" quoted, None empty
    assert text.endswith('b,Zeeman,Utrecht,"a,b",,\n')
    back = list(csv.reader(io.StringIO(text)))  # still standard CSV: every value reads back
    assert back[1] == ["a", "", "", 'say "hi"\nbye', '["x"]', "true"]
    assert back[2] == ["b", "Zeeman", "Utrecht", "a,b", "", ""]


@pytest.mark.parametrize(
    "values",
    [
        ["a", "Zeeman", "/Date(1700000000000)/"],  # plain strings: the column itself
        ["a", None, "", "b"],  # None empty, "" quoted
        ["a", "x,y", None],  # a comma: cell by cell
        ['say "hi"', "ok"],
        ["line\nbreak", "cr\r"],
        [1, None, 2.5, 1e16, -0.0, float("nan"), 10**30],
        [1, 2, 3],
        [True, None, False],
        [True, 1, None],  # bool and int mixed: cell by cell
        [None, None],
        [{"k": "v"}, ["x"], None, "s"],
        [dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), None],
        [],
    ],
)
def test_csv_columns_are_the_cells_one_by_one(values):
    from airflow_provider_exactonline.operators.writers import CsvWriter

    assert CsvWriter._column_cells(list(values)) == [CsvWriter._cell(v) for v in values]


def test_csv_page_written_a_column_at_a_time_reads_back(tmp_path):
    rows = [
        {"ID": f"id-{i}", "Name": ["", None, "x", 'q"'][i % 4], "Amount": [1, 2.5, None][i % 3], "On": i % 2 == 0}
        for i in range(12)
    ]
    with open_writer("csv", _path(tmp_path) / "p.csv", ["ID", "Name", "Amount", "On"]) as writer:
        writer.write_page(rows)
        writer.write_page([])
    back = list(csv.reader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert back[0] == ["ID", "Name", "Amount", "On"]
    expected = [
        [r["ID"], r["Name"] or "", "" if r["Amount"] is None else str(r["Amount"]), "true" if r["On"] else "false"]
        for r in rows
    ]
    assert back[1:] == expected


def test_jsonl_from_orjson_means_what_json_dumps_meant(tmp_path):
    from airflow_provider_exactonline.operators.writers import dumps

    rows = [
        {
            "ID": "a",
            "Name": 'Café "Zeeman" \u2603',
            "When": dt.datetime(2022, 1, 1, 11, 0, 0, 123000, tzinfo=dt.timezone.utc),
            "Day": dt.date(2022, 1, 2),
            "Amount": 1.1,
            "Big": 2**53 + 1,
            "Nested": {"k": [1, None, True]},
            "Empty": "",
            "Null": None,
        }
    ]
    with open_writer("jsonl", _path(tmp_path) / "p.jsonl") as writer:
        writer.write_page(rows)
    raw = (tmp_path / "p.jsonl").read_bytes()
    assert raw.count(b"\n") == 1 and raw.endswith(b"\n")
    expected = json.loads(json.dumps(rows[0], default=lambda v: v.isoformat(), ensure_ascii=False))
    assert json.loads(raw) == expected
    assert "\u2603".encode() in raw  # UTF-8, not \u escapes
    assert dumps({"When": rows[0]["When"]}) == '{"When":"2022-01-01T11:00:00.123000+00:00"}'
