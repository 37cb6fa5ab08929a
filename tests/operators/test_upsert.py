"""ExactOnlineUpsertOperator against the fake server: create/update/unchanged, bad records, lost POST answers."""

from __future__ import annotations

import pytest
from airflow_db import ctx

from airflow_provider_exactonline.operators.exactonline import (
    ExactOnlineUpsertFailed,
    ExactOnlineUpsertOperator,
    same_value,
)

RECORDS = [
    {"Code": "CRM0001", "Name": "Bakkerij de Vries", "Email": "info@devries.example", "City": "Utrecht"},
    {"Code": "CRM0002", "Name": "Fietsen Jansen", "Email": "jan@jansen.example", "City": "Gouda"},
    {"Code": "CRM0003", "Name": "Brasserie O'Neill", "Email": "x@oneill.example", "City": "Gent"},
]


def upsert(conn, records, **kwargs):
    return ExactOnlineUpsertOperator(
        task_id="upsert", entity="crm/Accounts", key="Code", records=records, division=1001, **conn, **kwargs
    )


def by_code(fake, code):
    return [r for r in fake.records("crm/Accounts", 1001) if str(r.get("Code") or "").strip() == code]


def posts(fake):
    return [r for r in fake.requests if r.method == "POST" and "crm/Accounts" in r.path]


def puts(fake):
    return [r for r in fake.requests if r.method == "PUT"]


def test_create_update_unchanged_and_rerun(fake, conn):
    report = upsert(conn, RECORDS).execute(ctx())
    assert (report["created"], report["updated"], report["unchanged"], report["failed"]) == (3, 0, 0, 0)
    assert all(len(by_code(fake, r["Code"])) == 1 for r in RECORDS)
    assert by_code(fake, "CRM0003")[0]["Name"] == "Brasserie O'Neill"

    changed = [dict(RECORDS[0], City="Amersfoort"), RECORDS[1], RECORDS[2]]
    lookups_before = sum(1 for r in fake.requests if r.method == "GET")
    report = upsert(conn, changed).execute(ctx())
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 1, 2)
    assert sum(1 for r in fake.requests if r.method == "GET") - lookups_before == 1  # one batched lookup
    assert by_code(fake, "CRM0001")[0]["City"] == "Amersfoort"
    assert len(puts(fake)) == 1 and len(posts(fake)) == 3

    report = upsert(conn, changed).execute(ctx())
    assert report["unchanged"] == 3 and len(puts(fake)) == 1 and len(posts(fake)) == 3


def test_lost_post_answer_then_retry_creates_no_duplicate(fake, conn):
    op = upsert(conn, RECORDS)
    real_create = op.hook.create

    def create_with_lost_answer(entity, data, **kwargs):
        if data["Code"] == "CRM0002":
            # Exact processes the POST, then the connection drops before we read the answer.
            fake.drop_next(1, path_contains="crm/Accounts", when="mid_response")
        return real_create(entity, data, **kwargs)

    op.hook.create = create_with_lost_answer
    context = ctx(try_number=1)
    with pytest.raises(ExactOnlineUpsertFailed, match="retry is safe") as caught:
        op.execute(context)
    report = caught.value.report
    assert report["created"] == 2 and report["failed"] == 1
    assert report["failures"][0]["key"] == "CRM0002" and report["failures"][0]["outcome"].startswith("unknown")
    assert context["ti"].pushed["upsert_report"]["failed"] == 1
    assert len(by_code(fake, "CRM0002")) == 1  # it did reach Exact
    assert len(posts(fake)) == 3  # and the hook did not re-send it

    retry = upsert(conn, RECORDS).execute(ctx(try_number=2))
    assert (retry["created"], retry["unchanged"], retry["failed"]) == (0, 3, 0)
    assert len(posts(fake)) == 3
    assert all(len(by_code(fake, r["Code"])) == 1 for r in RECORDS)


def test_a_5xx_answer_to_a_post_is_reported_as_unknown_not_rejected(fake, conn):
    op = upsert(conn, RECORDS)
    real_create = op.hook.create

    def create_with_503(entity, data, **kwargs):
        if data["Code"] == "CRM0002":
            fake.fail_next(1, status=503, path_contains="crm/Accounts")
        return real_create(entity, data, **kwargs)

    op.hook.create = create_with_503
    with pytest.raises(ExactOnlineUpsertFailed) as caught:
        op.execute(ctx(try_number=1))
    failure = caught.value.report["failures"][0]
    assert failure["key"] == "CRM0002" and failure["outcome"].startswith("unknown")


def test_bad_record_does_not_lose_the_others(fake, conn):
    records = [RECORDS[0], {"Code": "BAD1", "Email": "no-name@example"}, {"Name": "no code"}, RECORDS[1]]
    with pytest.raises(ExactOnlineUpsertFailed) as caught:
        upsert(conn, records).execute(ctx())
    report = caught.value.report
    assert report["created"] == 2 and report["failed"] == 2
    assert {f["key"] for f in report["failures"]} == {"BAD1", None}
    assert len(by_code(fake, "CRM0001")) == 1 and len(by_code(fake, "CRM0002")) == 1

    report = upsert(conn, records, fail_on_error=False).execute(ctx())
    assert report["failed"] == 2 and report["unchanged"] == 2


def test_records_from_file_and_templates(fake, conn, tmp_path):
    import json

    path = tmp_path / "accounts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS[:2]))
    op = ExactOnlineUpsertOperator(
        task_id="u", entity="{{ params.entity }}", key="{{ params.key }}", records_path="{{ params.path }}", **conn
    )
    context = ctx()
    context["params"] = {"entity": "Accounts", "key": "Code", "path": str(path)}
    op.render_template_fields(context)
    assert (op.entity, op.key, op.records_path) == ("Accounts", "Code", str(path))
    assert op.execute(context)["created"] == 2


@pytest.mark.fake_exact_online(minutely_limit=None)
def test_many_records_are_batched(fake, conn):
    records = [{"Code": f"B{i:04d}", "Name": f"Batch {i}"} for i in range(90)]
    assert upsert(conn, records).execute(ctx())["created"] == 90
    gets = sum(1 for r in fake.requests if r.method == "GET")
    report = upsert(conn, records).execute(ctx())
    assert report["unchanged"] == 90
    assert sum(1 for r in fake.requests if r.method == "GET") - gets == 3  # 40 + 40 + 10


def test_same_value():
    assert same_value("Utrecht ", "Utrecht")
    assert same_value(1, 1.0) and not same_value(1, 2)
    assert same_value(None, "") and not same_value("x", None)
    assert same_value("true", True) and not same_value(False, True)
    assert same_value("2022-01-01T11:00:00", "/Date(1641034800000)/")


def test_upsert_failed_lives_in_the_exception_hierarchy():
    from airflow_provider_exactonline import exceptions
    from airflow_provider_exactonline.operators import exactonline as operators

    assert operators.ExactOnlineUpsertFailed is exceptions.ExactOnlineUpsertFailed  # old import path still works
    assert issubclass(exceptions.ExactOnlineUpsertFailed, exceptions.ExactOnlineError)
    assert exceptions.ExactOnlineUpsertFailed("m", {"failed": 1}).report == {"failed": 1}
