"""Safe OData literals for ``$filter`` and Exact's ``/Date(ms)/`` values.

Build filters with these instead of f-strings: a quote in a customer name must not end the
literal (and cost one of Exact's 10 allowed errors per hour), and Exact wants its own forms
for GUIDs (``guid'...'``), datetimes (``datetime'...'``) and 64-bit integers (``123L``).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import pendulum

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

#: Exact does not document the zone of ``/Date(ms)/`` values. Exact's servers and its
#: Dutch/Belgian books run on Europe/Amsterdam wall time, and values round-trip as the
#: wall-clock time shown in Exact's UI, so that is the default zone used to interpret them;
#: pass ``timezone="UTC"`` to read them as UTC instead.
DEFAULT_EXACT_TIMEZONE = "Europe/Amsterdam"

_DATE_RE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")


def string(value: str) -> str:
    """``O'Brien`` -> ``'O''Brien'``."""
    return "'" + str(value).replace("'", "''") + "'"


def guid(value: str | uuid.UUID) -> str:
    """A GUID literal; raises ``ExactOnlineConfigError`` for anything that is not a GUID."""
    try:
        parsed = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value).strip("{}"))
    except (ValueError, AttributeError, TypeError) as err:
        raise ExactOnlineConfigError(f"{value!r} is not a GUID (expected e.g. 'a1b2c3d4-...')") from err
    return f"guid'{parsed}'"


def long(value: int) -> str:
    """A 64-bit integer literal as Exact's sync filters want it: ``123L``."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value))
        except ValueError as err:
            raise ExactOnlineConfigError(f"{value!r} is not an integer") from err
    return f"{value}L"


def datetime(value: dt.datetime | dt.date | str, timezone: str = DEFAULT_EXACT_TIMEZONE) -> str:
    """A ``datetime'YYYY-MM-DDTHH:MM:SS'`` literal in Exact's (naive, local) time."""
    # exact=True keeps a date a date; tz=None keeps a string without offset naive (Exact's local time)
    # instead of reading it as UTC and shifting it.
    parsed: Any = value
    if isinstance(value, str):
        try:
            parsed = pendulum.parse(value, exact=True, tz=None)
        except ValueError as err:
            raise ExactOnlineConfigError(f"{value!r} is not an ISO date or datetime") from err
    if isinstance(parsed, dt.datetime):
        if parsed.tzinfo is not None:
            parsed = pendulum.instance(parsed).in_timezone(timezone).naive()
        return f"datetime'{parsed.strftime('%Y-%m-%dT%H:%M:%S')}'"
    if isinstance(parsed, dt.date):
        return f"datetime'{parsed.isoformat()}'"
    raise ExactOnlineConfigError(f"{value!r} is not a date or datetime")


def literal(value: Any) -> str:
    """Pick the literal form from the Python type (UUID -> guid, datetime -> datetime, int -> plain)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, uuid.UUID):
        return guid(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return datetime(value)
    if isinstance(value, (int, float)):
        return repr(value)
    return string(str(value))


def parse_date(value: Any, timezone: str = DEFAULT_EXACT_TIMEZONE) -> pendulum.DateTime | None:
    """``/Date(1641034800000)/`` -> an aware pendulum DateTime; ``None`` stays ``None``.

    The milliseconds are Exact's wall-clock time encoded as if it were UTC, so the wall time is
    read in UTC and then labelled with ``timezone`` (default Europe/Amsterdam).
    """
    if value is None:
        return None
    match = _DATE_RE.match(str(value))
    if not match:
        raise ValueError(f"not an Exact Online /Date(ms)/ value: {str(value)[:40]!r}")
    wall = pendulum.from_timestamp(int(match.group(1)) / 1000, tz="UTC")
    return pendulum.datetime(
        wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second, wall.microsecond, tz=timezone
    )


def format_date(value: dt.datetime, timezone: str = DEFAULT_EXACT_TIMEZONE) -> str:
    """The inverse of :func:`parse_date`."""
    local = pendulum.instance(value).in_timezone(timezone) if value.tzinfo else pendulum.instance(value)
    naive_utc = pendulum.datetime(
        local.year, local.month, local.day, local.hour, local.minute, local.second, local.microsecond, tz="UTC"
    )
    return f"/Date({int(naive_utc.timestamp() * 1000)})/"


def is_date(value: Any) -> bool:
    return isinstance(value, str) and bool(_DATE_RE.match(value))


def convert_dates(record: dict[str, Any], timezone: str = DEFAULT_EXACT_TIMEZONE) -> dict[str, Any]:
    """A copy of ``record`` with every ``/Date(ms)/`` string turned into a pendulum DateTime."""
    return {k: parse_date(v, timezone) if is_date(v) else v for k, v in record.items()}
