"""Exact's per-endpoint rules the fake enforces from the catalog: mandatory filtering, writable fields,
and the ``read/sync/Sync/SyncTimestamp`` helper that turns a date into a sync watermark."""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_exactonline.testing.entities import EntityDef, entity_for_path, resolve_entity, spec_of
from airflow_provider_exactonline.testing.generator import CREATED_BASE_MS, date_value
from airflow_provider_exactonline.testing.http import ApiError
from airflow_provider_exactonline.testing.odata_query import date_ms
from airflow_provider_exactonline.testing.stores import DivisionData

MANDATORY_FILTER_MESSAGE = (
    "This endpoint has mandatory filtering applied. A GET request for this endpoint must have a $filter "
    "parameter with one of the following fields in the url: "
)
_MODIFIED_SPREAD_MS = 20 * 86_400_000 + 60_000  # generated rows: Modified <= Created + 20 days (+ jitter)


def mandatory_fields(entity: EntityDef, variant: str) -> tuple[str, ...] | None:
    """The fields a collection GET must filter on (empty: any field), or None when the endpoint has no rule.

    From the catalog's ``mandatory_filter_fields`` when it has one; else the rule Exact applies to every
    standard and bulk endpoint of an entity with a sync twin.
    """
    spec = spec_of(entity)
    rule = getattr(spec, "mandatory_filter_fields", None)
    if rule is not None:
        try:
            found = rule(variant)
        except Exception:  # the variant is not in the catalog
            return None
        return None if found is None else tuple(found)
    return () if entity.sync_path and variant in ("standard", "bulk") else None


def check_mandatory_filter(entity: EntityDef, variant: str, filter_fields: Sequence[str] | None) -> None:
    """Refuse (400) a collection GET that mandatory filtering would refuse; ``filter_fields=None``: no $filter."""
    rule = mandatory_fields(entity, variant)
    if rule is None:
        return
    allowed = {name.lower() for name in rule}
    if filter_fields is not None and (not allowed or any(f.lower() in allowed for f in filter_fields)):
        return
    raise ApiError(400, MANDATORY_FILTER_MESSAGE + (", ".join(rule) if rule else "any field of the entity"))


def writable_fields(entity: EntityDef) -> frozenset[str] | None:
    """The payload keys a POST/PUT may carry per the catalog (None: the catalog does not say; any field)."""
    found = getattr(spec_of(entity), "writable_fields", None)
    if callable(found):
        found = found("standard")
    return frozenset(found) | {entity.key} if found else None


def _param(params: Mapping[str, str], name: str) -> str | None:
    for key, value in params.items():
        if key.lower() == name.lower():
            return value.strip().strip("'")
    return None


def sync_timestamp(d: DivisionData, params: Mapping[str, str]) -> dict[str, Any]:
    """``SyncTimestamp?modified=datetime'…'&endPoint='CRM/Accounts'``: a Timestamp to start ``sync/`` from.

    Every row modified at or after ``modified`` has a larger Timestamp (a few earlier ones may too).
    """
    endpoint, modified = _param(params, "endPoint"), _param(params, "modified")
    if not endpoint or not modified:
        raise ApiError(400, "SyncTimestamp needs the parameters modified=datetime'…' and endPoint='CRM/Accounts'.")
    text = modified.removeprefix("datetime").strip("'")
    ms = date_ms(text)
    if ms is None:
        with contextlib.suppress(ValueError):
            ms = calendar.timegm(dt.datetime.fromisoformat(text).timetuple()) * 1000  # wall time, as Exact's dates
    if ms is None:
        raise ApiError(400, f"Invalid value '{modified}' for modified: use datetime'2021-01-31T00:00:00'.")
    found = entity_for_path("sync/" + endpoint.removeprefix("sync/"))
    try:
        entity = found[0] if found else resolve_entity(endpoint)
    except KeyError:
        raise ApiError(400, f"Unknown sync endpoint '{endpoint}' for endPoint.") from None
    store = d.store(entity)
    first = max(0, math.floor((ms - _MODIFIED_SPREAD_MS - CREATED_BASE_MS) / 60_000))
    return {
        "Modified": date_value(int(ms)),
        "API": entity.sync_path or endpoint,
        "TimeStampAsBigInt": store.ts_base + min(first, store.count) - 1,
    }
