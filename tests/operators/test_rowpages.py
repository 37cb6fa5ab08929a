"""The export's fast page path (msgspec Structs) writes exactly what the record-by-record path writes.

The reference is the path as it was: orjson decodes the page, ``clean_record`` cleans each row, and each
row is written with ``dump_bytes`` plus a newline (JSON Lines), or by the CSV / Parquet writers from dicts.
"""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
import requests
from exact_rows import row

from airflow_provider_exactonline.operators.rowpages import (
    MAX_LAYOUT_MISSES,
    DictPage,
    PageDecoder,
    StructPage,
    max_int,
)
from airflow_provider_exactonline.operators.writers import clean_record, dump_bytes, open_writer

PATH = "sync/CRM/Accounts"


def response(rows: list[dict[str, Any]], next_url: str | None = None, raw: bytes | None = None) -> requests.Response:
    """A Response as the hook hands it to the decoder (body already read)."""
    answer = requests.Response()
    answer.status_code = 200
    answer.url = f"https://start.exactonline.nl/api/v1/1/{PATH}"
    d: dict[str, Any] = {"results": rows}
    if next_url:
        d["__next"] = next_url
    answer._content = raw if raw is not None else orjson.dumps({"d": d})
    return answer


def reference_jsonl(rows: list[dict[str, Any]], raw: bytes | None = None) -> bytes:
    records = orjson.loads(raw)["d"]["results"] if raw is not None else rows
    cleaned = [clean_record(r, convert_dates=False, timezone="UTC") for r in records]
    return b"".join(dump_bytes(dict(r)) + b"\n" for r in cleaned)


PAGE_1 = [row(i) for i in range(5)]
PAGE_2 = [row(i) for i in range(5, 10)]


def learnt() -> PageDecoder:
    decoder = PageDecoder(timezone="UTC")
    page, _ = decoder(response(PAGE_1, "https://start.exactonline.nl/next1"), PATH)
    assert isinstance(page, DictPage) and page.jsonl() == reference_jsonl(PAGE_1)
    return decoder


def test_later_pages_take_the_struct_path_and_write_the_same_lines():
    decoder = learnt()
    page, next_url = decoder(response(PAGE_2, "https://start.exactonline.nl/next2?$skiptoken=guid'x'"), PATH)
    assert isinstance(page, StructPage) and decoder.struct_pages == 1
    assert next_url == "https://start.exactonline.nl/next2?$skiptoken=guid'x'"  # verbatim
    assert page.jsonl() == reference_jsonl(PAGE_2)
    assert page.records == [clean_record(r, convert_dates=False, timezone="UTC") for r in PAGE_2]
    assert page[1:3].jsonl() == reference_jsonl(PAGE_2[1:3])
    assert max_int(page, "Timestamp", 0) == 1009 and max_int(page, "Missing", 5) == 5
    last, next_url = decoder(response(PAGE_2[:1]), PATH)
    assert isinstance(last, StructPage) and next_url is None


def test_rows_without_metadata_and_escaped_input_still_fit():
    decoder = learnt()
    bare = [{k: v for k, v in r.items() if k != "__metadata"} for r in PAGE_2]
    page, _ = decoder(response(bare), PATH)
    assert isinstance(page, StructPage) and page.jsonl() == reference_jsonl(bare)
    # Exact escapes "/" and non-ASCII; the output is the canonical form either way, as before.
    escaped = orjson.dumps({"d": {"results": PAGE_2}}).replace(b"/Date(", b"\\/Date(").replace(b")/", b")\\/")
    escaped = escaped.replace("ü".encode(), b"\\u00fc")
    page, _ = decoder(response([], raw=escaped), PATH)
    assert isinstance(page, StructPage) and page.jsonl() == reference_jsonl([], escaped)


@pytest.mark.parametrize(
    "change",
    [
        {"Amount": 1e16},  # orjson writes 1e+16, msgspec 1e16
        {"Amount": -3.5e20},
        {"Count": 2**63},  # beyond int64
        {"Count": "BIGINT"},  # 2**64 + 5: orjson decodes it as a float
        {"Lines": {"__deferred": {"uri": "https://start.exactonline.nl/x"}}},  # dropped navigation property
        {"Name": {"nested": [1, 2]}},
        {"Name": ["a", None]},
        {"Extra": "a field the layout lacks"},
    ],
)
def test_values_the_struct_path_cannot_write_identically_fall_back(change):
    decoder = learnt()
    raw = orjson.dumps({"d": {"results": [row(5), row(6, **change), row(7)]}})
    raw = raw.replace(b'"BIGINT"', str(2**64 + 5).encode())
    page, _ = decoder(response([], raw=raw), PATH)
    assert isinstance(page, DictPage) and decoder.misses == 1
    assert page.jsonl() == reference_jsonl([], raw)


def test_a_missing_field_falls_back_and_the_layout_is_learnt_again():
    decoder = learnt()
    short = [{k: v for k, v in r.items() if k != "Remarks"} for r in PAGE_2]
    page, _ = decoder(response(short), PATH)
    assert isinstance(page, DictPage) and page.jsonl() == reference_jsonl(short)
    again, _ = decoder(response(short), PATH)  # the new shape is the layout now
    assert isinstance(again, StructPage) and again.jsonl() == reference_jsonl(short)


def test_a_page_with_a_deferred_link_stays_on_the_dict_path():
    decoder = learnt()
    for _ in range(3):
        odd = [row(i, Lines={"__deferred": {"uri": "x"}}) for i in range(3)]
        page, _ = decoder(response(odd), PATH)
        assert isinstance(page, DictPage) and page.jsonl() == reference_jsonl(odd)
    assert decoder.struct_pages == 0 and decoder.layout is None  # no layout is learnt from such a page


def test_an_export_whose_pages_keep_changing_shape_stops_trying():
    decoder = learnt()
    short = [{k: v for k, v in r.items() if k != "Remarks"} for r in PAGE_2]
    for n in range(2 * MAX_LAYOUT_MISSES + 2):
        rows = short if n % 2 == 0 else PAGE_2
        page, _ = decoder(response(rows), PATH)
        assert isinstance(page, DictPage) and page.jsonl() == reference_jsonl(rows)
    assert decoder.misses == MAX_LAYOUT_MISSES and decoder.struct_pages == 0 and decoder.layout is None


def test_rows_in_different_orders_or_shapes_never_make_a_layout():
    decoder = PageDecoder()
    mixed = [row(1), dict(reversed(list(row(2).items())))]
    decoder(response(mixed), PATH)
    assert decoder.layout is None


def test_convert_dates_keeps_the_dict_path():
    decoder = PageDecoder(convert_dates=True, timezone="UTC")
    for _ in range(2):
        page, _ = decoder(response(PAGE_1), PATH)
        assert isinstance(page, DictPage)
    assert page.records[1]["EndDate"].year == 1 and page.records[0]["Created"].year == 2021
    assert decoder.layout is None and decoder.struct_pages == 0


class _Memory:
    """A target for open_writer that keeps what was written."""

    def __init__(self) -> None:
        self.data = b""

    def open(self, mode: str = "wb", **kwargs: Any) -> Any:
        target = self

        class _File(io.BytesIO):
            def close(self) -> None:
                target.data = self.getvalue()
                super().close()

        return _File()


FIELDS = ["ID", "Timestamp", "Name", "Created", "EndDate", "Amount", "Count", "Blocked", "Remarks", "Control"]
TYPES = {"Timestamp": "Edm.Int64", "Amount": "Edm.Double", "Count": "Edm.Int64", "Blocked": "Edm.Boolean"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_writers_write_the_same_file_from_either_page(fmt):
    decoder = learnt()
    struct_page, _ = decoder(response(PAGE_2), PATH)
    assert isinstance(struct_page, StructPage)
    outputs = []
    for pages in ([struct_page, struct_page[:2]], [DictPage(struct_page.records), DictPage(struct_page.records[:2])]):
        target = _Memory()
        with open_writer(fmt, target, FIELDS, TYPES) as writer:
            for page in pages:
                writer.write_page(page)
        outputs.append(target.data)
    assert outputs[0] == outputs[1]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(outputs[0]))
        assert table.schema.field("Count").type == "int64" and table.column("Name").to_pylist()[2] == "日本語 \u2028 😀"


def test_parquet_columns_converted_in_one_call_match_value_by_value():
    import pyarrow as pa

    target = _Memory()
    writer = open_writer("parquet", target, ["a"], {})
    cases = [
        ([1, None, 3], pa.int64()),
        ([1.0, 2.5, 3.5, None], pa.int64()),  # round(), as _coerce does, not Arrow's truncation
        ([True, 0, 2], pa.int64()),
        ([1, 2**53 + 1, None], pa.float64()),
        ([1, 2.5], pa.float64()),
        ([None, None], pa.string()),
        (["x", 5, True, {"a": 1}, None], pa.string()),
        ([0, 1, None, "yes"], pa.bool_()),
        (["a", "b"], pa.string()),
    ]
    for values, arrow_type in cases:
        expected = pa.array([writer._coerce(v, arrow_type) for v in values], type=arrow_type)  # type: ignore[attr-defined]
        assert writer._array(list(values), arrow_type).equals(expected), (values, arrow_type)  # type: ignore[attr-defined]


@pytest.mark.fake_exact_online(rows={"crm/Accounts": 2500})
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_an_export_over_http_writes_what_the_record_by_record_path_writes(fake, conn, tmp_path, fmt):
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook
    from airflow_provider_exactonline.operators import export as export_module
    from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore

    hook = ExactOnlineHook(conn["exactonline_conn_id"], **conn["hook_params"])
    spec = resolve_entity("crm/Accounts")
    job = export_module.DivisionExport(
        hook=hook,
        conn_id=conn["exactonline_conn_id"],
        spec=spec,
        entity="crm/Accounts",
        mode="full",
        division=1001,
        base=ObjectStoragePath(f"file://{tmp_path}"),
        run_name="fast",
        run_id="fast",
        try_number=1,
        fmt=fmt,
        rows_per_part=100_000,
        watermark_store=MemoryWatermarkStore(),
        watermark_id="test.fast",
    )
    decoders: list[PageDecoder] = []
    original = export_module.PageDecoder

    def recording(**kwargs: Any) -> PageDecoder:
        decoders.append(original(**kwargs))
        return decoders[-1]

    export_module.PageDecoder = recording  # type: ignore[assignment,misc]
    try:
        summary = job.run()
    finally:
        export_module.PageDecoder = original  # type: ignore[misc]
    paths = (decoders[0].text_pages, decoders[0].struct_pages, decoders[0].dict_pages)
    assert summary["rows"] == 2500 and paths == ((3, 0, 0) if fmt == "jsonl" else (0, 2, 1))

    # The reference: the hook's dict pages, cleaned record by record, written from dicts.
    fields = export_module.select_fields(spec, "sync", "*")
    reference = _Memory()
    with open_writer(fmt, reference, fields, export_module.field_types(spec, "sync")) as writer:
        for page in hook.iter_pages("sync/CRM/Accounts", select=fields, filter="Timestamp gt 1L", division=1001):
            writer.write_page([clean_record(r, convert_dates=False, timezone=hook.timezone) for r in page])
    written = ObjectStoragePath(summary["path"]) / f"part-00000.{fmt}"
    assert written.read_bytes() == reference.data
