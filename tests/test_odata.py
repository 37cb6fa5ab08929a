from __future__ import annotations

import datetime as dt
import uuid

import pendulum
import pytest

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

GUID = "b0e2c7b4-1234-4abc-8def-000000000001"


def test_string_doubles_quotes():
    assert odata.string("O'Brien") == "'O''Brien'"
    assert odata.string("''") == "''''''"


def test_guid_accepts_uuid_braces_and_rejects_injection():
    assert odata.guid(uuid.UUID(GUID)) == f"guid'{GUID}'"
    assert odata.guid("{" + GUID.upper() + "}") == f"guid'{GUID}'"
    with pytest.raises(ExactOnlineConfigError, match="not a GUID"):
        odata.guid(f"{GUID}' or 1 eq 1 or ID eq '")


def test_long():
    assert odata.long(123) == "123L"
    assert odata.long("9007199254740993") == "9007199254740993L"
    with pytest.raises(ExactOnlineConfigError):
        odata.long("12; drop")
    with pytest.raises(ExactOnlineConfigError):
        odata.long(True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-31", "datetime'2024-01-31'"),
        (dt.date(2024, 1, 31), "datetime'2024-01-31'"),
        ("2024-01-31T10:15:00", "datetime'2024-01-31T10:15:00'"),  # no offset: already Exact's local time
        (dt.datetime(2024, 1, 31, 10, 15), "datetime'2024-01-31T10:15:00'"),
        ("2024-01-31T10:15:00Z", "datetime'2024-01-31T11:15:00'"),  # UTC -> Amsterdam (CET)
        (pendulum.datetime(2024, 7, 1, 10, tz="UTC"), "datetime'2024-07-01T12:00:00'"),  # CEST
    ],
)
def test_datetime_literal(value, expected):
    assert odata.datetime(value) == expected


def test_datetime_literal_other_zone_and_errors():
    assert odata.datetime("2024-01-31T10:15:00Z", timezone="UTC") == "datetime'2024-01-31T10:15:00'"
    with pytest.raises(ExactOnlineConfigError):
        odata.datetime("yesterday-ish")
    with pytest.raises(ExactOnlineConfigError):
        odata.datetime(42)  # type: ignore[arg-type]


def test_literal_dispatch():
    assert odata.literal(None) == "null"
    assert odata.literal(True) == "true"
    assert odata.literal(uuid.UUID(GUID)) == f"guid'{GUID}'"
    assert odata.literal(dt.date(2024, 1, 2)) == "datetime'2024-01-02'"
    assert odata.literal(5) == "5"
    assert odata.literal("it's") == "'it''s'"


def test_parse_date_reads_wall_time_in_the_configured_zone():
    value = odata.parse_date("/Date(1641034800000)/")  # 2022-01-01T11:00:00 wall time
    assert value is not None
    assert (value.year, value.month, value.day, value.hour) == (2022, 1, 1, 11)
    assert value.timezone_name == "Europe/Amsterdam"
    utc = odata.parse_date("/Date(1641034800000)/", timezone="UTC")
    assert utc is not None and utc.isoformat() == "2022-01-01T11:00:00+00:00"
    assert odata.parse_date(None) is None
    assert odata.parse_date("/Date(-1000+0100)/") is not None
    with pytest.raises(ValueError):
        odata.parse_date("2022-01-01")


def test_format_date_round_trips():
    for ms in (0, 1641034800000, 1719835200123):
        text = f"/Date({ms})/"
        assert odata.format_date(odata.parse_date(text)) == text  # type: ignore[arg-type]
    assert odata.format_date(dt.datetime(2022, 1, 1, 11)) == "/Date(1641034800000)/"


def test_convert_dates_only_touches_date_strings():
    record = {"Created": "/Date(1641034800000)/", "Name": "/Date(x)/", "N": 1, "Empty": None}
    out = odata.convert_dates(record)
    assert isinstance(out["Created"], pendulum.DateTime)
    assert out["Name"] == "/Date(x)/" and out["N"] == 1 and out["Empty"] is None
    assert record["Created"] == "/Date(1641034800000)/"  # input untouched
    assert odata.is_date("/Date(1)/") and not odata.is_date(1)
