"""Operators for Exact Online: a generic call, an export to object storage, an upsert, and a divisions lister.

Each lives in its own module (``generic``, ``to_object_storage``, ``upsert``, ``divisions``); this
module keeps the names importable from where they always were. See ``docs/operators.md``.
"""

from __future__ import annotations

from airflow_provider_exactonline.exceptions import ExactOnlineUpsertFailed
from airflow_provider_exactonline.operators.base import (
    ASSET_SCHEME,
    DEFAULT_EXPORT_DIRNAME,
    asset_uri,
    default_base_path,
    list_divisions,
    parse_division,
    parse_divisions,
    resolve_spec,
    to_storage_path,
)
from airflow_provider_exactonline.operators.divisions import ExactOnlineDivisionsOperator
from airflow_provider_exactonline.operators.generic import ExactOnlineOperator
from airflow_provider_exactonline.operators.to_object_storage import ExactOnlineToObjectStorageOperator
from airflow_provider_exactonline.operators.upsert import ExactOnlineUpsertOperator, same_value

__all__ = [
    "ASSET_SCHEME",
    "DEFAULT_EXPORT_DIRNAME",
    "ExactOnlineDivisionsOperator",
    "ExactOnlineOperator",
    "ExactOnlineToObjectStorageOperator",
    "ExactOnlineUpsertFailed",  # defined in exceptions.py; importable from here too
    "ExactOnlineUpsertOperator",
    "asset_uri",
    "default_base_path",
    "list_divisions",
    "parse_division",
    "parse_divisions",
    "resolve_spec",
    "same_value",
    "to_storage_path",
]
