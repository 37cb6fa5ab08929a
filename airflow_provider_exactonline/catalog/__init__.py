"""Catalog of Exact Online REST endpoints: resolve friendly names, pick bulk/sync, check fields before a call.

Every 400 counts toward Exact's 10-errors-per-hour block, so names and ``$select``/``$filter``/``$orderby``
fields are checked here, before any HTTP request.

    >>> spec = resolve_entity("accounts")
    >>> spec.path, spec.bulk_path, spec.sync_path, spec.key
    ('crm/Accounts', 'bulk/CRM/Accounts', 'sync/CRM/Accounts', 'ID')

Terms
    *entity*: one standard endpoint (``/api/v1/{division}/crm/Accounts``) grouped with its ``bulk/`` and
    ``sync/`` variants. Entities that exist only as bulk/sync (``sync/Deleted``, ``sync/CRM/QuotationHeaders``)
    have ``path = None``. *variant*: ``"standard"``, ``"bulk"`` or ``"sync"``.

Name resolution (:func:`resolve_entity`, case-insensitive, O(1) after the first load)
    Accepted: a variant path (``crm/Accounts``, ``read/crm/Documents``, ``bulk/CRM/Accounts``,
    ``sync/CRM/Accounts``, ``sync/Deleted``), ``service/name`` (``crm/Documents``,
    ``Financial/TransactionLines``), or a bare name (``SalesInvoices``). A leading ``/``, ``api/v1/``,
    ``beta/``, a division number, a query string and a key suffix (``(guid'…')``) are ignored.
    A bare name used by several services resolves to (1) the explicit choice in the catalog
    (``Divisions`` → ``system/Divisions``), else (2) the only candidate with a bulk/sync variant
    (``Documents`` → ``documents/Documents``), else (3) the only candidate that is neither a ``read/``
    function nor a beta endpoint; otherwise it raises :class:`ExactOnlineUnknownEntity` listing the
    qualified names (``ReasonCodes``, ``TimeTransactions``).

Raw paths
    :func:`resolve_path` never raises: paths the catalog lacks map to ``(None, variant)`` so they still
    work. :func:`resolve` is the one-stop helper for hooks: a string starting with ``/`` or ``http`` is a
    raw path (never rejected), anything else is a catalog name (unknown names raise with the closest
    matches).

Mode → variant (:meth:`EntitySpec.variant_for`)
    ``"full"``: ``bulk`` if the entity has one, else ``standard`` if that allows GET, else ``sync`` (a sync
    endpoint read without a Timestamp filter returns every row). Mandatory filtering refuses an unfiltered
    bulk/standard read of an entity with a sync twin: callers reading everything check
    :meth:`EntitySpec.mandatory_filter_fields` and read ``sync`` instead. ``"incremental"``: ``sync`` or
    :class:`ExactOnlineCatalogError` naming the alternative (``mode='full'`` with the endpoint it would use).

API contract (other modules code against these names)
    ``spec.field_info(variant="standard") -> Mapping[str, FieldInfo]``: scalar fields with
    ``FieldInfo(name, edm_type, description)``; ``edm_type`` is one of ``Edm.Guid``, ``Edm.String``,
    ``Edm.Int16``/``Int32``/``Int64``, ``Edm.Double``, ``Edm.Decimal``, ``Edm.Boolean``,
    ``Edm.DateTime``, ``Edm.Byte``, ``Edm.Binary``. Navigation properties (collections, linked objects)
    have no Edm type: they are in ``spec.navigation_fields(variant)``, not in ``field_info``.
    ``spec.fields``/``fields_for(variant)`` keep the coarse ``string|number|boolean|unknown`` kinds.

    ``spec.mandatory_filter_fields(variant) -> tuple[str, ...] | None``: None, no rule; a tuple, a
    collection GET needs a ``$filter`` referencing one of these fields (empty: any field counts). It
    applies to the standard and bulk endpoints of every entity with a sync twin.
    ``spec.check_mandatory_filter(filter_expr, variant)`` raises ``ExactOnlineMandatoryFilterError``
    (naming the endpoint, the allowed fields and the ``sync/`` path) where Exact would answer 400.

    ``spec.deprecated``/``spec.replacement`` (primary variant; ``deprecated_for``/``replacement_for``
    per variant): resolving a deprecated endpoint with :func:`resolve`/:func:`resolve_entity` logs a
    warning (logger ``airflow_provider_exactonline.catalog``) naming the replacement.

    ``spec.accepts_writes``, ``spec.writable_fields`` (empty when read-only) and
    ``spec.validate_payload(data, method="POST")``: ``ExactOnlineCatalogError`` for a read-only endpoint
    or a method it lacks, ``ExactOnlineUnknownField`` (closest matches) for keys it cannot write.

    :func:`sync_entities` (every entity with a sync variant, sync/Deleted excluded), ``spec.deleted_entity_type``
    and :func:`deleted_entity_types`. Every endpoint resolves by its path and by picqer's model name where
    that name is free (``SyncTimestamp`` → ``read/sync/Sync/SyncTimestamp``); ``System/Me`` → ``current/Me``.

Fields
    Field names are matched case-insensitively and returned in the catalog's spelling. ``"*"`` or ``None`` as
    ``$select`` expands to every field of the variant where Exact demands ``$select`` (bulk, sync and the
    standard endpoints known to refuse a query without it); elsewhere it expands to ``[]`` (send no
    ``$select``; Exact returns every field). Endpoints whose reference data lists no fields are not checked.

Data and import cost
    ``catalog.json`` beside this file is generated by ``scripts/generate_catalog.py`` (see
    ``docs/endpoints.md`` for the table) and read once, on first use; ``descriptions.json`` (Exact's
    field descriptions) only on the first :meth:`EntitySpec.field_info` call. Importing this package does
    not import Airflow: ``exceptions`` (which does) is imported only when an error is raised, so the fake
    server can use the catalog without Airflow. Read the data through this API; the JSON layout is private.

Modules: ``spec`` (EntitySpec), ``checks`` (field, filter and payload checks), ``endpoint`` (one variant,
FieldInfo), ``index`` (loading and name resolution), ``_odata`` (the filter parser).
"""

from __future__ import annotations

from airflow_provider_exactonline.catalog.endpoint import FieldInfo
from airflow_provider_exactonline.catalog.index import (
    Resolution,
    all_entities,
    deleted_entity_types,
    find_entity,
    resolve,
    resolve_entity,
    resolve_path,
    sync_entities,
)
from airflow_provider_exactonline.catalog.spec import VARIANTS, EntitySpec, Variant

__all__ = [
    "VARIANTS",
    "EntitySpec",
    "FieldInfo",
    "Resolution",
    "Variant",
    "all_entities",
    "deleted_entity_types",
    "find_entity",
    "resolve",
    "resolve_entity",
    "resolve_path",
    "sync_entities",
]
