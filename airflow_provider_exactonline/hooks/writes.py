"""Single-record calls: get_record, create, update, delete (payloads checked against the catalog first)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.exceptions import (
    ExactOnlineConfigError,
    ExactOnlineNotFound,
    ExactOnlineResponseError,
)
from airflow_provider_exactonline.hooks.errors import d_of, loggable
from airflow_provider_exactonline.hooks.reads import Reads


class Writes(Reads):
    """One record by its key, and the writes (a POST is never re-sent once it may have arrived)."""

    def _key_url(self, entity: str, guid: Any, division: int | None) -> tuple[Any, str, str]:
        spec, variant, path, division = self._resolve(entity, division)
        if spec is not None and variant != "standard":
            if not spec.has_variant("standard"):
                raise ExactOnlineConfigError(
                    f"{spec.qualified_name} has no standard endpoint; single-record calls need one (got {entity!r})"
                )
            variant, path = "standard", spec.path
        return spec, variant, f"{self._entity_url(spec, variant, path, division)}({odata.guid(guid)})"

    def get_record(
        self,
        entity: str,
        guid: Any,
        *,
        select: str | Iterable[str] | None = None,
        division: int | None = None,
    ) -> dict[str, Any]:
        """One record by its GUID key; :class:`ExactOnlineNotFound` when it does not exist."""
        spec, variant, url = self._key_url(entity, guid, division)
        params = self._query(spec, variant, select=select)
        d = self.get(url, params=params)
        if isinstance(d, dict) and isinstance(d.get("results"), list):
            d = d["results"]
        if isinstance(d, list):
            if not d:
                raise ExactOnlineNotFound(f"No {entity} with ID {guid}", status_code=404, url=loggable(url))
            d = d[0]
        if not isinstance(d, dict):
            raise ExactOnlineResponseError(f"Exact Online answered GET {entity}({guid}) with a non-object 'd'")
        return d

    def create(self, entity: str, data: Mapping[str, Any], *, division: int | None = None) -> dict[str, Any]:
        """POST a new record and return it as Exact stored it. Never re-sent once it may have arrived."""
        spec, variant, path, division = self._resolve(entity, division)
        if spec is not None and variant != "standard" and spec.has_variant("standard"):
            variant, path = "standard", spec.path
        if spec is not None:
            spec.validate_payload(data, "POST")  # read-only endpoint or unwritable field: refused before the call
        url = self._entity_url(spec, variant, path, division)
        response = self.request("POST", url, json=dict(data), headers={"Prefer": "return=representation"})
        if response.status_code == 204 or not response.content:
            return {}
        d = d_of(response, "POST", url)
        if isinstance(d, dict) and isinstance(d.get("results"), list) and len(d["results"]) == 1:
            d = d["results"][0]
        return d if isinstance(d, dict) else {"d": d}

    def update(self, entity: str, guid: Any, data: Mapping[str, Any], *, division: int | None = None) -> None:
        """PUT changed fields of one record (Exact answers 204)."""
        spec, _variant, url = self._key_url(entity, guid, division)
        if spec is not None:
            spec.validate_payload(data, "PUT")
        self.request("PUT", url, json=dict(data))

    def delete(self, entity: str, guid: Any, *, division: int | None = None) -> None:
        """DELETE one record (Exact answers 204)."""
        _spec, _variant, url = self._key_url(entity, guid, division)
        self.request("DELETE", url)
