"""``EntitySpec``: an Exact Online entity and its standard/bulk/sync endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from airflow_provider_exactonline.catalog._errors import catalog_error
from airflow_provider_exactonline.catalog.checks import FieldChecks
from airflow_provider_exactonline.catalog.endpoint import Endpoint, FieldInfo

Variant = Literal["standard", "bulk", "sync"]
VARIANTS: tuple[Variant, ...] = ("standard", "bulk", "sync")


@dataclass(frozen=True, eq=False)
class EntitySpec(FieldChecks):
    """An Exact Online entity and its standard/bulk/sync endpoints. Build with :func:`resolve_entity`."""

    name: str
    service: str
    deleted_entity_type: int | None
    _endpoints: Mapping[str, Endpoint] = field(repr=False)

    # -- identity -------------------------------------------------------------------------------------

    @property
    def path(self) -> str | None:
        """Standard endpoint path relative to the division root (``crm/Accounts``), or None."""
        endpoint = self._endpoints.get("standard")
        return endpoint.path if endpoint else None

    @property
    def bulk_path(self) -> str | None:
        endpoint = self._endpoints.get("bulk")
        return endpoint.path if endpoint else None

    @property
    def sync_path(self) -> str | None:
        endpoint = self._endpoints.get("sync")
        return endpoint.path if endpoint else None

    @property
    def variants(self) -> tuple[Variant, ...]:
        """The variants this entity has, in the order standard, bulk, sync."""
        return tuple(v for v in VARIANTS if v in self._endpoints)

    @property
    def primary_variant(self) -> Variant:
        """``standard`` when it exists, else ``bulk``, else ``sync``."""
        return self.variants[0]

    @property
    def qualified_name(self) -> str:
        """The name to show and to pass around: the standard path, else ``service/Name``, else the variant path."""
        if self.path is not None:
            return self.path
        if self.service:
            return f"{self.service}/{self.name}"
        return self._endpoints[self.primary_variant].path

    @property
    def key(self) -> str | None:
        """Primary key of the primary variant (``ID``; ``UserID`` for current/Me; ``Timestamp`` if sync-only)."""
        return self._endpoints[self.primary_variant].key

    @property
    def methods(self) -> tuple[str, ...]:
        """HTTP methods of the primary variant (bulk and sync are GET only)."""
        return self._endpoints[self.primary_variant].methods

    @property
    def fields(self) -> Mapping[str, str]:
        """Field name -> ``string`` | ``number`` | ``boolean`` | ``unknown``, of the primary variant."""
        return self._endpoints[self.primary_variant].fields

    @property
    def doc_url(self) -> str:
        return self._endpoints[self.primary_variant].doc_url

    @property
    def division_in_path(self) -> bool:
        """False for endpoints called without a division (``current/Me``, ``system/Users``)."""
        return self._endpoints[self.primary_variant].division_in_path

    @property
    def beta(self) -> bool:
        """True for endpoints under ``/api/v1/beta/{division}/``."""
        return self._endpoints[self.primary_variant].beta

    @property
    def deprecated(self) -> bool:
        """True when Exact marks the primary variant deprecated (see :meth:`deprecated_for`)."""
        return self._endpoints[self.primary_variant].deprecated

    @property
    def replacement(self) -> str | None:
        """The endpoint path Exact names as the primary variant's successor, if it is deprecated."""
        return self._endpoints[self.primary_variant].replacement

    def __repr__(self) -> str:
        return f"EntitySpec({self.qualified_name!r}, variants={self.variants!r})"

    # -- per variant ----------------------------------------------------------------------------------

    def has_variant(self, variant: str) -> bool:
        return variant in self._endpoints

    def _endpoint(self, variant: str) -> Endpoint:
        endpoint = self._endpoints.get(variant)
        if endpoint is not None:
            return endpoint
        if variant not in VARIANTS:
            raise catalog_error(f"Unknown variant {variant!r}; use one of {', '.join(VARIANTS)}.")
        available = ", ".join(f"{v} ({self._endpoints[v].path})" for v in self.variants)
        raise catalog_error(f"{self.qualified_name} has no {variant} endpoint; it has: {available}.")

    def variant_path(self, variant: str = "standard") -> str:
        """Path of a variant relative to its API root (``crm/Accounts``, ``sync/CRM/Accounts``)."""
        return self._endpoint(variant).path

    def url_path(self, variant: str = "standard", division: int | str | None = None) -> str:
        """Absolute URL path of a variant: ``/api/v1/{division}/crm/Accounts``, ``/api/v1/current/Me``,
        ``/api/v1/beta/{division}/budget/BudgetScenarios``. ``{division}`` is filled in when given."""
        endpoint = self._endpoint(variant)
        parts = ["/api/v1"]
        if endpoint.beta:
            parts.append("beta")
        if endpoint.division_in_path:
            parts.append("{division}" if division is None else str(division))
        parts.append(endpoint.path)
        return "/".join(parts)

    def fields_for(self, variant: str = "standard") -> Mapping[str, str]:
        return self._endpoint(variant).fields

    def field_info(self, variant: str = "standard") -> Mapping[str, FieldInfo]:
        """Scalar fields of a variant with their Edm type and Exact's description (navigation
        properties are left out; see :meth:`navigation_fields`). Descriptions load on first call."""
        return self._endpoint(variant).field_info

    def navigation_fields(self, variant: str = "standard") -> tuple[str, ...]:
        """Fields that link to other entities or collections (``SalesInvoiceLines``): no Edm type."""
        return self._endpoint(variant).navigation_fields

    def key_for(self, variant: str = "standard") -> str | None:
        """Key field of a variant (``Timestamp`` for sync)."""
        return self._endpoint(variant).key

    def methods_for(self, variant: str = "standard") -> tuple[str, ...]:
        return self._endpoint(variant).methods

    def doc_url_for(self, variant: str = "standard") -> str:
        return self._endpoint(variant).doc_url

    def model_for(self, variant: str = "standard") -> str:
        """picqer's model name for a variant (``Account``, ``BulkAccount``, ``SyncAccount``)."""
        return self._endpoint(variant).model

    def deprecated_for(self, variant: str = "standard") -> bool:
        return self._endpoint(variant).deprecated

    def replacement_for(self, variant: str = "standard") -> str | None:
        return self._endpoint(variant).replacement

    def deprecation_message(self, variant: str = "standard") -> str | None:
        """The warning logged when a deprecated variant is resolved (None when it is not deprecated)."""
        endpoint = self._endpoint(variant)
        if not endpoint.deprecated:
            return None
        if endpoint.replacement is None:
            return f"Exact has deprecated {endpoint.path}; it names no replacement. See {endpoint.doc_url}"
        note = f" ({endpoint.deprecation_note})" if endpoint.deprecation_note else ""
        return f"Exact has deprecated {endpoint.path}: use {endpoint.replacement} instead{note}."

    def select_required(self, variant: str = "standard") -> bool:
        """True where Exact answers 400 without ``$select`` (bulk, sync, a few standard endpoints)."""
        return self._endpoint(variant).select_required

    def _full_variant(self) -> Variant | None:
        # An entity with a sync twin has mandatory filtering on its standard and bulk endpoints: an
        # unfiltered read of those is a 400, so everything is read through sync/ (which also yields a watermark).
        for variant in ("sync", "bulk"):
            if variant in self._endpoints:
                return variant
        if "standard" in self._endpoints and "GET" in self._endpoints["standard"].methods:
            return "standard"
        return None

    def variant_for(self, mode: str) -> Variant:
        """The variant an export in ``mode`` should read (see the package docstring for the rule).

        ``mode`` is ``"full"`` or ``"incremental"``; a variant name (``"bulk"``) is accepted and checked.
        """
        full = self._full_variant()
        if mode == "full":
            if full is not None:
                return full
            raise catalog_error(
                f"{self.qualified_name} cannot be exported: it has no bulk or sync endpoint and its standard "
                f"endpoint does not allow GET (methods: {', '.join(self.methods)})."
            )
        if mode == "incremental":
            if "sync" in self._endpoints:
                return "sync"
            if full is None:
                alternative = "no export mode works for it (no GET endpoint)"
            else:
                alternative = f"use mode='full' ({self._endpoints[full].path})"
            raise catalog_error(
                f"{self.qualified_name} has no sync endpoint, so mode='incremental' cannot work; {alternative}."
            )
        if mode in VARIANTS:
            self._endpoint(mode)
            return mode
        raise catalog_error(f"Unknown export mode {mode!r}; use 'full' or 'incremental'.")
