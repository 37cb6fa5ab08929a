"""The JSON Lines text path: each row's own JSON text, ``__metadata`` cut out, the same values as the
record-by-record path (and the same bytes where Exact's text is compact and unescaped)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import requests
from exact_rows import row

from airflow_provider_exactonline.operators.rowpages import MAX_LAYOUT_MISSES, PageDecoder, StructPage, max_int
from airflow_provider_exactonline.operators.textpages import TextPage, text_page
from airflow_provider_exactonline.operators.writers import PartSet, clean_record, dump_bytes

PATH = "sync/CRM/Accounts"
NEXT = "https://start.exactonline.nl/api/v1/1/sync/CRM/Accounts?$skiptoken=1009L"
ROWS = [row(i) for i in range(10)]


def body(rows: list[dict[str, Any]], next_url: str | None = NEXT) -> bytes:
    d: dict[str, Any] = {"results": rows}
    if next_url:
        d["__next"] = next_url
    return orjson.dumps({"d": d})


def reference(raw: bytes) -> bytes:
    """What the record-by-record path writes for the page in ``raw``."""
    records = orjson.loads(raw)["d"]["results"]
    return b"".join(dump_bytes(clean_record(r, convert_dates=False, timezone="UTC")) + b"\n" for r in records)


def lines(data: bytes) -> list[Any]:
    return [orjson.loads(line) for line in data.splitlines()]


def test_a_page_becomes_its_rows_text_without_metadata():
    raw = body(ROWS)
    found = text_page(raw)
    assert found is not None
    page, next_url = found
    assert next_url == NEXT and len(page) == 10
    assert page.jsonl() == reference(raw)  # compact, unescaped text: the same bytes
    assert page.records == [clean_record(r, convert_dates=False, timezone="UTC") for r in ROWS]
    assert page.keys() == [k for k in ROWS[0] if k != "__metadata"]
    assert page.column("Timestamp") == [1000 + i for i in range(10)] and page.column("Count")[2] == 2**63 - 1
    assert max_int(page, "Timestamp", 0) == 1009 and max_int(page, "Timestamp", 5000) == 5000
    assert page[3:5].jsonl() == reference(body(ROWS[3:5])) and page[3:5].column("Timestamp") == [1003, 1004]
    assert text_page(body([], None)) is not None and text_page(body([], None))[0].jsonl() == b""  # type: ignore[index]


def test_rows_without_metadata_are_written_verbatim():
    bare = [{k: v for k, v in r.items() if k != "__metadata"} for r in ROWS]
    page, next_url = text_page(body(bare, None))  # type: ignore[misc]
    assert next_url is None and page.jsonl() == reference(body(bare))


def test_exacts_escapes_are_kept_and_mean_the_same():
    escaped = body(ROWS).replace(b"/Date(", b"\\/Date(").replace(b")/", b")\\/").replace("ü".encode(), b"\\u00fc")
    page, _ = text_page(escaped)  # type: ignore[misc]
    assert b"\\/Date(" in page.jsonl() and b"\\u00fc" in page.jsonl()
    assert lines(page.jsonl()) == lines(reference(escaped))


@pytest.mark.parametrize(
    "change",
    [
        {"Amount": 1e16},  # the Struct path would write 1e16, orjson 1e+16: both mean the same number
        {"Count": "BIGINT"},  # beyond 64 bits: kept as Exact wrote it
        {"Name": {"nested": [1, {"a": None}]}},
        {"Name": ["a", None]},
        {"Extra": "a field the other rows lack"},
    ],
)
def test_values_the_struct_path_cannot_take_stay_on_the_text_path(change):
    raw = body([row(5), row(6, **change), row(7)]).replace(b'"BIGINT"', str(2**64 + 5).encode())
    page, _ = text_page(raw)  # type: ignore[misc]
    assert lines(page.jsonl()) == lines(reference(raw))
    assert (str(2**64 + 5).encode() in page.jsonl()) == (change.get("Count") == "BIGINT")  # not rounded


def test_a_timestamp_beyond_64_bits_is_read_exactly():
    page, _ = text_page(body([row(1, Timestamp="BIG")]).replace(b'"BIG"', str(2**64 + 1).encode()))  # type: ignore[misc]
    assert page.column("Timestamp") == [2**64 + 1]


@pytest.mark.parametrize(
    "make",
    [
        lambda: orjson.dumps({"d": {"results": ROWS}}, option=orjson.OPT_INDENT_2),  # a row would span lines
        lambda: body([row(1), row(2, Lines={"__deferred": {"uri": "x"}})]),  # navigation links are dropped
        lambda: body([{"ID": "x", **row(1)}]),  # __metadata not first
        lambda: body(ROWS).replace(b'{"__metadata":{', b'{"__metadata": {'),
        lambda: body(ROWS).replace(b'"},"Timestamp"', b'"} ,"Timestamp"'),
        lambda: body([row(1), {k: v for k, v in row(2).items() if k != "__metadata"}]),  # some rows have it
        lambda: body([{"__metadata": {"uri": "u"}}]),  # nothing but metadata
        lambda: body([row(1, Timestamp=1.5)]),
        lambda: body([row(1, Timestamp="1")]),
        lambda: orjson.dumps({"d": ROWS}),  # a bare list
        lambda: body(ROWS)[:-3],  # cut short
        lambda: body([1, 2]),  # type: ignore[list-item]  # rows that are not objects
    ],
)
def test_pages_this_path_cannot_write_exactly_are_left_to_the_others(make):
    assert text_page(make()) is None


def response(raw: bytes) -> requests.Response:
    answer = requests.Response()
    answer.status_code = 200
    answer.url = f"https://start.exactonline.nl/api/v1/1/{PATH}"
    answer._content = raw
    return answer


def test_the_decoder_takes_the_text_path_for_json_lines_only():
    text = PageDecoder(text=True, timezone="UTC")
    page, next_url = text(response(body(ROWS)), PATH)
    assert isinstance(page, TextPage) and next_url == NEXT and text.text_pages == 1 and text.dict_pages == 0
    for decoder in (PageDecoder(timezone="UTC"), PageDecoder(text=True, convert_dates=True, timezone="UTC")):
        page, _ = decoder(response(body(ROWS)), PATH)
        assert not isinstance(page, TextPage) and decoder.text_pages == 0


def test_a_page_off_the_text_path_is_decoded_and_after_enough_of_them_the_decoder_stops_trying():
    decoder = PageDecoder(text=True, timezone="UTC")
    deferred = body([row(i, Lines={"__deferred": {"uri": "x"}}) for i in range(3)])
    for _ in range(MAX_LAYOUT_MISSES):
        page, _ = decoder(response(deferred), PATH)
        assert page.jsonl() == reference(deferred)
    assert decoder.text_misses == MAX_LAYOUT_MISSES and decoder.text_pages == 0
    page, _ = decoder(response(body(ROWS)), PATH)  # no longer tried: the dict path learns a layout
    assert not isinstance(page, TextPage) and page.jsonl() == reference(body(ROWS))
    page, _ = decoder(response(body(ROWS)), PATH)
    assert isinstance(page, StructPage) and decoder.text_pages == 0


def test_part_files_split_a_text_page_where_the_rows_per_part_say(tmp_path):
    from airflow.sdk import ObjectStoragePath

    page, _ = text_page(body(ROWS))  # type: ignore[misc]
    parts = PartSet(ObjectStoragePath(f"file://{tmp_path}"), "part", "jsonl", None, {}, rows_per_part=4)
    parts.write(page)
    parts.close()
    assert [p["rows"] for p in parts.parts] == [4, 4, 2] and parts.fields == page.keys()
    written = b"".join((tmp_path / p["file"]).read_bytes() for p in parts.parts)
    assert written == reference(body(ROWS))


def collections_while_cutting(monkeypatch: pytest.MonkeyPatch, paused: bool) -> list[int]:
    """How many collections cutting a 1,000-row page sets off with a collection at every tracked allocation."""
    import contextlib
    import gc

    from airflow_provider_exactonline.operators import textpages

    if not paused:
        monkeypatch.setattr(textpages, "_collector_paused", contextlib.nullcontext)
    raw = body(ROWS * 100)
    seen: list[int] = []
    threshold = gc.get_threshold()
    gc.callbacks.append(lambda phase, info: seen.append(info["generation"]) if phase == "start" else None)
    gc.set_threshold(1)
    try:
        page, _ = text_page(raw)  # type: ignore[misc]
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.pop()
    assert len(page) == 1000
    return seen


def test_the_garbage_collector_is_paused_while_a_page_is_cut(monkeypatch):
    assert len(collections_while_cutting(monkeypatch, paused=True)) < 20  # the decoding's few containers
    assert len(collections_while_cutting(monkeypatch, paused=False)) > 1000  # a few per row


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was(enabled):
    import gc

    gc.enable() if enabled else gc.disable()
    try:
        assert text_page(body(ROWS)) is not None and gc.isenabled() is enabled
        assert text_page(body([{"ID": "x", **row(1)}])) is None and gc.isenabled() is enabled  # returned early
    finally:
        gc.enable()


def test_without_navigation_properties_selected_the_deferred_search_is_skipped():
    linked = body([row(1, Lines={"__deferred": {"uri": "x"}})])
    assert text_page(linked) is None  # the search finds the link: the page goes to the other paths
    page, _ = text_page(linked, links=False)  # type: ignore[misc]
    assert b'"__deferred"' in page.jsonl()  # not searched for: the caller vouched that there is none


def test_the_export_searches_for_links_only_where_the_query_can_return_them():
    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.operators.export import may_link, select_fields

    accounts = resolve_entity("crm/Accounts")
    navigation = accounts.navigation_fields("standard")
    assert navigation and not may_link(accounts, "sync", select_fields(accounts, "sync", "*"))
    assert may_link(accounts, "standard", ["ID", navigation[0]]) and may_link(accounts, "standard", None)
    assert may_link(None, "standard", ["ID"])  # an entity the catalog lacks: unknown, so searched


def test_max_int_reads_integers_written_as_text_too():
    from airflow_provider_exactonline.operators.rowpages import DictPage

    assert max_int(DictPage([{"T": "5"}, {"T": "10"}, {"T": None}]), "T", 0) == 10
    assert max_int(DictPage([{"T": 5}, {"T": 10}]), "T", 7) == 10 and max_int(DictPage([{"T": None}]), "T", 7) == 7
