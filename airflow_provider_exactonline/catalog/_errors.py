"""Error constructors and small helpers shared by the catalog modules.

The exceptions module imports Airflow; it is imported only when an error is raised, so that the catalog
itself (used by the fake server and the generator's tests) loads without Airflow.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_exactonline.exceptions import (
        ExactOnlineCatalogError,
        ExactOnlineMandatoryFilterError,
        ExactOnlineUnknownEntity,
        ExactOnlineUnknownField,
    )

MAX_SUGGESTIONS = 5


def catalog_error(message: str) -> ExactOnlineCatalogError:
    from airflow_provider_exactonline.exceptions import ExactOnlineCatalogError

    return ExactOnlineCatalogError(message)


def unknown_entity(message: str) -> ExactOnlineUnknownEntity:
    from airflow_provider_exactonline.exceptions import ExactOnlineUnknownEntity

    return ExactOnlineUnknownEntity(message)


def unknown_field(message: str) -> ExactOnlineUnknownField:
    from airflow_provider_exactonline.exceptions import ExactOnlineUnknownField

    return ExactOnlineUnknownField(message)


def mandatory_filter_error(message: str) -> ExactOnlineMandatoryFilterError:
    from airflow_provider_exactonline.exceptions import ExactOnlineMandatoryFilterError

    return ExactOnlineMandatoryFilterError(message)


def split_select(fields: Sequence[str] | str | Iterable[str]) -> list[str]:
    items = fields.split(",") if isinstance(fields, str) else list(fields)
    return [item.strip() for item in items if item and item.strip()]


def closest(name: str, choices: Mapping[str, str]) -> list[str]:
    """Up to five display values whose lower-case keys are closest to ``name``."""
    matches = difflib.get_close_matches(name.lower(), list(choices), n=MAX_SUGGESTIONS * 3, cutoff=0.6)
    result: list[str] = []
    for match in matches:
        display = choices[match]
        if display not in result:
            result.append(display)
        if len(result) == MAX_SUGGESTIONS:
            break
    return result
