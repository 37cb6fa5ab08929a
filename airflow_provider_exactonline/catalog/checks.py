"""Checks made before a call: ``$select``/``$filter``/``$orderby`` fields, mandatory filtering, payloads.

Every 400 counts toward Exact's 10-errors-per-hour block, so what the catalog can see is refused here.
:class:`FieldChecks` is the part of :class:`~airflow_provider_exactonline.catalog.EntitySpec` that does it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_exactonline.catalog._errors import (
    catalog_error,
    closest,
    mandatory_filter_error,
    split_select,
    unknown_field,
)
from airflow_provider_exactonline.catalog._odata import (
    FieldRef,
    ODataSyntaxError,
    filter_fields,
    orderby_fields,
    replace_fields,
)

if TYPE_CHECKING:
    from airflow_provider_exactonline.catalog.endpoint import Endpoint
    from airflow_provider_exactonline.exceptions import ExactOnlineUnknownField

WRITE_METHODS = ("POST", "PUT", "DELETE")


class FieldChecks:
    """Field, filter and payload checks of an entity (mixed into ``EntitySpec``)."""

    if TYPE_CHECKING:
        _endpoints: Mapping[str, Endpoint]

        @property
        def qualified_name(self) -> str: ...

        @property
        def primary_variant(self) -> str: ...

        @property
        def sync_path(self) -> str | None: ...

        def _endpoint(self, variant: str) -> Endpoint: ...

    # -- unknown fields ----------------------------------------------------------------------------------

    def _unknown_fields(self, bad: Sequence[str], variant: str, context: str) -> ExactOnlineUnknownField:
        endpoint = self._endpoint(variant)
        lines = []
        suggestions: dict[str, list[str]] = {}
        for name in bad:
            close = closest(name, endpoint.lower_fields)
            suggestions[name] = close
            elsewhere = [
                other.path
                for v, other in self._endpoints.items()
                if v != variant and name.lower() in other.lower_fields
            ]
            line = f"{name!r}"
            line += f" (closest: {', '.join(close)})" if close else " (no close match)"
            if elsewhere:
                line += f"; it exists on {', '.join(elsewhere)}"
            lines.append(line)
        noun = "field" if len(bad) == 1 else "fields"
        where = (
            self.qualified_name if endpoint.path == self.qualified_name else f"{self.qualified_name} ({endpoint.path})"
        )
        error = unknown_field(
            f"Unknown {noun} in {context} for {where}: {'; '.join(lines)}. Field list: {endpoint.doc_url}"
        )
        error.entity = self.qualified_name
        error.variant = variant
        error.fields = list(bad)
        error.suggestions = suggestions
        return error

    def _check_refs(self, names: Sequence[str], variant: str, context: str) -> list[str]:
        endpoint = self._endpoint(variant)
        canonical: list[str] = []
        bad: list[str] = []
        for name in names:
            # No field list in the reference data (function endpoints): nothing to check against.
            found = endpoint.lower_fields.get(name.lower()) if endpoint.fields else name
            if found is None:
                if name not in bad:
                    bad.append(name)
            else:
                canonical.append(found)
        if bad:
            raise self._unknown_fields(bad, variant, context)
        return canonical

    # -- $select, $filter, $orderby ----------------------------------------------------------------------

    def validate_select(self, fields: Sequence[str] | str, variant: str = "standard") -> list[str]:
        """Check ``$select`` fields; return them de-duplicated in the catalog's spelling.

        ``fields`` is a list or a comma string. For navigation paths (``Account/Name``) the first segment
        is checked. ``"*"`` is not accepted here; use :meth:`expand_select`.
        """
        items = split_select(fields)
        if "*" in items:
            raise catalog_error("'*' in $select: use expand_select() to expand it to the field list.")
        heads = [re.split(r"[./]", item, maxsplit=1)[0] for item in items]
        canonical = self._check_refs(heads, variant, "$select")
        result: list[str] = []
        for item, head, fixed in zip(items, heads, canonical, strict=True):
            value = fixed + item[len(head) :]
            if value not in result:
                result.append(value)
        return result

    def expand_select(self, select: Sequence[str] | str | None, variant: str = "standard") -> list[str]:
        """``$select`` to send, as a list: ``"*"``/``None`` become every field of the variant where Exact
        demands ``$select`` (else ``[]``: send none); other values are checked by :meth:`validate_select`.

        "Every field" leaves out navigation properties (``BankAccounts``, ``SalesInvoiceLines``): links to
        other entities rather than data."""
        items = split_select(select) if select is not None else []
        if not items or "*" in items:
            others = [item for item in items if item != "*"]
            if others:
                self.validate_select(others, variant)  # still catch typos next to "*"
            endpoint = self._endpoint(variant)
            if not endpoint.select_required:
                return []
            return [name for name, kind in endpoint.fields.items() if kind != "unknown"]
        return self.validate_select(items, variant)

    def normalize_filter(self, expr: str, variant: str = "standard") -> str:
        """Check the fields of an OData ``$filter``; return it with field names in the catalog's spelling."""
        return self._normalize(expr, variant, "$filter", filter_fields)

    def validate_filter(self, expr: str, variant: str = "standard") -> None:
        """Raise :class:`ExactOnlineUnknownField` if ``$filter`` names a field the variant lacks."""
        self.normalize_filter(expr, variant)

    def normalize_orderby(self, expr: str, variant: str = "standard") -> str:
        """Check the fields of ``$orderby`` (``Name desc, Modified``); return it in the catalog's spelling."""
        return self._normalize(expr, variant, "$orderby", orderby_fields)

    def _parse(self, expr: str, context: str, parse: Any) -> list[FieldRef]:
        try:
            refs: list[FieldRef] = parse(expr)
        except ODataSyntaxError as error:
            raise catalog_error(f"Cannot read {context} for {self.qualified_name}: {error}") from None
        return refs

    def _normalize(self, expr: str, variant: str, context: str, parse: Any) -> str:
        refs = self._parse(expr, context, parse)
        canonical = self._check_refs([ref.field for ref in refs], variant, context)
        return replace_fields(expr, refs, canonical)

    # -- mandatory filtering -----------------------------------------------------------------------------

    def mandatory_filter_fields(self, variant: str = "standard") -> tuple[str, ...] | None:
        """Fields a collection GET's ``$filter`` must reference on ``variant``.

        None: no rule. A tuple: Exact refuses a GET without a ``$filter`` naming one of these fields; an
        empty tuple means a ``$filter`` is required but the fields are unknown (any field counts).
        """
        return self._endpoint(variant).mandatory_filter

    def check_mandatory_filter(self, filter_expr: str | None, variant: str = "standard") -> None:
        """Raise :class:`ExactOnlineMandatoryFilterError` if Exact's mandatory filtering would refuse a
        collection GET on ``variant`` with ``$filter=filter_expr`` (None or blank: no filter)."""
        allowed = self.mandatory_filter_fields(variant)
        if allowed is None:
            return
        text = (filter_expr or "").strip()
        if text:
            referenced = {ref.field.lower() for ref in self._parse(text, "$filter", filter_fields)}
            if referenced and (not allowed or referenced & {name.lower() for name in allowed}):
                return
        path = self._endpoint(variant).path
        fields = ", ".join(allowed) if allowed else "(Exact does not publish the list; any field may do)"
        problem = "has no $filter" if not text else f"$filter {text!r} references none of the allowed fields"
        if self.sync_path is not None:
            hint = (
                f"To read everything, read the sync endpoint {self.sync_path} instead "
                "(the export's full mode does that)."
            )
        else:
            hint = "Read it through the export's full mode instead."
        error = mandatory_filter_error(
            f"{path} has mandatory filtering applied: Exact refuses (HTTP 400) a collection GET that {problem}. "
            f"Add a $filter on one of: {fields}. {hint}"
        )
        error.entity = self.qualified_name
        error.variant = variant
        error.suggestions = list(allowed)
        error.allowed_fields = tuple(allowed)
        error.sync_path = self.sync_path
        raise error

    # -- writes ------------------------------------------------------------------------------------------

    @property
    def writable_fields(self) -> frozenset[str]:
        """Fields a POST/PUT payload may carry on the primary variant (empty: it takes no writes)."""
        return self._endpoints[self.primary_variant].writable

    @property
    def accepts_writes(self) -> bool:
        """True when the primary (standard) endpoint takes POST, PUT or DELETE."""
        endpoint = self._endpoints[self.primary_variant]
        return endpoint.writable_names is not None and any(method in endpoint.methods for method in WRITE_METHODS)

    def validate_payload(self, data: Mapping[str, Any], method: str = "POST") -> None:
        """Check a POST/PUT body before the call: the endpoint takes ``method`` and every key is writable.

        Raises :class:`ExactOnlineCatalogError` for a read-only endpoint or a method it does not take, and
        :class:`ExactOnlineUnknownField` (with the closest writable names) for other keys.
        """
        endpoint = self._endpoints[self.primary_variant]
        verb = method.upper()
        if not self.accepts_writes:
            raise catalog_error(
                f"{self.qualified_name} is read-only: Exact takes no writes on it (methods: "
                f"{', '.join(endpoint.methods)}). See {endpoint.doc_url}"
            )
        if verb not in endpoint.methods:
            raise catalog_error(f"{self.qualified_name} does not take {verb}; it takes {', '.join(endpoint.methods)}.")
        writable = {name.lower(): name for name in endpoint.writable}
        bad = [key for key in data if key.lower() not in writable]
        if not bad or not endpoint.names:  # no field list in the reference data: nothing to check against
            return
        lines = []
        suggestions: dict[str, list[str]] = {}
        for key in bad:
            close = closest(key, writable)
            suggestions[key] = close
            known = key.lower() in endpoint.lower_fields
            reason = " (read-only)" if known else ""
            lines.append(f"{key!r}{reason}" + (f" (closest: {', '.join(close)})" if close else ""))
        noun = "field" if len(bad) == 1 else "fields"
        error = unknown_field(
            f"{verb} payload for {self.qualified_name} has {len(bad)} {noun} it cannot write: "
            f"{'; '.join(lines)}. Writable fields: {endpoint.doc_url}"
        )
        error.entity = self.qualified_name
        error.variant = self.primary_variant
        error.fields = bad
        error.suggestions = suggestions
        raise error
