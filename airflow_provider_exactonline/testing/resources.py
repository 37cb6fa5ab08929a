"""The resources the fake serves under ``/api/v1/{division}/``: ``current/Me``, ``system/Divisions``,
every entity's standard, bulk and sync endpoints (reads, key lookups, writes) and ``sync/Deleted``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_exactonline.testing.entities import DELETED_FIELDS, default_value, entity_for_path, field_types
from airflow_provider_exactonline.testing.generator import CREATED_BASE_MS, date_value, wall_ms
from airflow_provider_exactonline.testing.http import ApiError, Response, text_response
from airflow_provider_exactonline.testing.odata import (
    BULK_PAGE,
    STANDARD_PAGE,
    collection,
    document_response,
    filter_of,
    json_body,
    odata_params,
    parse_key,
    select_fields,
    serialise,
)
from airflow_provider_exactonline.testing.odata_query import fields_in, key_equals, lower_bound
from airflow_provider_exactonline.testing.rules import check_mandatory_filter, sync_timestamp, writable_fields
from airflow_provider_exactonline.testing.stores import DivisionData, EntityStore

if TYPE_CHECKING:
    from airflow_provider_exactonline.testing.server import FakeExactOnline

_ME_FIELDS: dict[str, str | None] = {
    "UserID": "string",
    "AccountingDivision": "number",
    "CurrentDivision": "number",
    "CustomerCode": "string",
    "DivisionCustomer": "string",
    "DivisionCustomerCode": "string",
    "DivisionCustomerName": "string",
    "Email": "string",
    "FirstName": "string",
    "FullName": "string",
    "Initials": "string",
    "IsClientUser": "boolean",
    "Language": "string",
    "LanguageCode": "string",
    "LastName": "string",
    "Legislation": "number",
    "ServerTime": "string",
    "ServerUtcOffset": "number",
    "UserName": "string",
}
_DIVISION_FIELDS: dict[str, str | None] = {
    "Code": "number",
    "City": "string",
    "Country": "string",
    "Created": "string",
    "Currency": "string",
    "Current": "boolean",
    "Customer": "string",
    "CustomerCode": "string",
    "CustomerName": "string",
    "Description": "string",
    "Hid": "number",
    "IsMainDivision": "boolean",
    "Legislation": "string",
    "Modified": "string",
    "StartDate": "string",
    "Status": "number",
    "VATNumber": "string",
}


def _only_get(method: str) -> None:
    if method != "GET":
        raise ApiError(405, f"Method {method} is not allowed on this endpoint.")


class ODataApi:
    """Serves one fake's API resources; the caller (``FakeExactOnline``) has checked token and limits."""

    def __init__(self, fake: FakeExactOnline) -> None:
        self.fake = fake

    def resource(
        self, method: str, division: int, resource: str, query: str, headers: Mapping[str, str], body: bytes, now: float
    ) -> Response:
        params = odata_params(query)
        lowered = resource.lower()
        count_only = False
        if lowered.endswith("/$count"):
            resource, lowered, count_only = resource[: -len("/$count")], lowered[: -len("/$count")], True
        key: str | None = None
        if resource.endswith(")") and "(" in resource:
            resource, _, key_text = resource.partition("(")
            lowered = resource.lower()
            key = parse_key(key_text[:-1])
        base = f"{self.fake.base_url}/api/v1/{division}/"
        if lowered == "current/me":
            _only_get(method)
            return collection(
                headers,
                params,
                iter([(None, self._me_row(now))]),
                _ME_FIELDS,
                STANDARD_PAGE,
                None,
                "Me",
                lambda row: {
                    "uri": f"{self.fake.base_url}/api/v1/current/Me(guid'{row.get('UserID')}')",
                    "type": "Exact.Web.Api.System.Me",
                },
                self.fake.base_url + "/api/v1/current/Me",
                False,
            )
        if lowered == "system/divisions":
            _only_get(method)
            rows = [(None, self._division_row(div)) for div in self.fake._data]
            return collection(
                headers,
                params,
                iter(rows),
                _DIVISION_FIELDS,
                STANDARD_PAGE,
                None,
                "Divisions",
                lambda row: {
                    "uri": f"{base}system/Divisions({row.get('Code')})",
                    "type": "Exact.Web.Api.System.Division",
                },
                base + resource,
                False,
                count_only=count_only,
            )
        d = self.fake._data[division]
        if lowered == "read/sync/sync/synctimestamp":
            _only_get(method)
            return document_response(headers, {"d": {"results": [sync_timestamp(d, params)]}}, "SyncTimestamp")
        if lowered == "sync/deleted":
            _only_get(method)
            return self._sync_listing(d, None, params, headers, base + resource, count_only)
        found = entity_for_path(lowered)
        if found is None:
            raise ApiError(404, f"Resource not found: '{resource}'.")
        entity, variant = found
        store = d.store(entity)
        if method == "GET":
            if key is not None:
                if variant != "standard":
                    raise ApiError(400, "Key lookups are not supported on bulk and sync endpoints.")
                return self._single(d, store, key, params, headers, base)
            if variant == "sync":
                return self._sync_listing(d, store, params, headers, base + resource, count_only)
            return self._listing(d, store, variant, params, headers, base, resource, count_only)
        if variant != "standard" or method not in entity.methods:
            raise ApiError(405, f"Method {method} is not allowed on '{resource}'.")
        payload = json_body(body) if method in ("POST", "PUT") else {}
        types = field_types(entity, "standard")
        writable = writable_fields(entity)
        for name in payload:
            if name != "__metadata" and name not in (writable if writable is not None else types):
                raise ApiError(
                    400,
                    f"Error processing request stream. The property name '{name}' specified for type "
                    f"'Exact.Web.Api.Models.{entity.model}' is not valid.",
                )
        payload.pop("__metadata", None)
        if method == "POST":
            if key is not None:
                raise ApiError(405, "POST to an entity key is not allowed; POST to the collection.")
            for name in entity.required:
                if payload.get(name) in (None, ""):
                    raise ApiError(400, f"Mandatory: {name}")
            row = d.create(store, payload, now)
            self.fake._queue_write(d.division, entity, "Create", row)
            fields = (
                list(types)
                if "return=representation" in headers.get("prefer", "")
                else [entity.key, *[n for n in payload if n != entity.key]]
            )
            serialised = serialise(row, fields, types, entity, "standard", base)
            response = document_response(headers, {"d": serialised}, entity.name, status=201)
            response.headers.append(("Location", serialised["__metadata"]["uri"]))
            return response
        if key is None:
            raise ApiError(405, f"{method} needs an entity key, e.g. {resource}(guid'...').")
        pos = d.position_of(store, key)
        if pos is None:
            raise ApiError(404, "Not found")
        if method == "PUT":
            self.fake._queue_write(d.division, entity, "Update", d.update(store, pos, payload, now))
        else:
            row = d.row_at(store, pos) or {}
            d.delete(store, pos, now)
            self.fake._queue_write(d.division, entity, "Delete", {**row, "Timestamp": d.last_timestamp})
        return Response(204)

    def _me_row(self, now: float) -> dict[str, Any]:
        div = self.fake.current_division
        return {
            "UserID": self.fake._generator.user_id,
            "AccountingDivision": div,
            "CurrentDivision": div,
            "DivisionCustomer": self.fake._generator.guid(div, "customer", 0),
            "DivisionCustomerCode": f"{div:>18}",
            "DivisionCustomerName": self.fake.divisions[div],
            "Email": "fake.user@example.com",
            "FirstName": "Fake",
            "FullName": "Fake User",
            "Initials": "F.",
            "IsClientUser": False,
            "Language": "EN-US",
            "LanguageCode": "en-US",
            "LastName": "User",
            "Legislation": 1,
            "UserName": "fake.user@example.com",
            "ServerTime": date_value(wall_ms(now)),
            "ServerUtcOffset": 0,
            "CustomerCode": f"{div:>18}",
        }

    def _division_row(self, div: int) -> dict[str, Any]:
        name = self.fake.divisions[div]
        country = "BE" if name.upper().endswith(" BE") else "NL"
        return {
            "Code": div,
            "Description": name,
            "Current": div == self.fake.current_division,
            "Country": country,
            "Currency": "EUR",
            "Customer": self.fake._generator.guid(div, "customer", 0),
            "CustomerCode": f"{div:>18}",
            "CustomerName": name,
            "Hid": div,
            "IsMainDivision": div == self.fake.current_division,
            "Legislation": country,
            "Status": 1,
            "City": "Delft" if country == "NL" else "Gent",
            "VATNumber": f"{country}{div:09d}B01",
            "Created": date_value(CREATED_BASE_MS),
            "Modified": date_value(CREATED_BASE_MS),
            "StartDate": date_value(CREATED_BASE_MS),
        }

    def _single(
        self,
        d: DivisionData,
        store: EntityStore,
        key: str,
        params: dict[str, str],
        headers: Mapping[str, str],
        base: str,
    ) -> Response:
        types = field_types(store.entity, "standard")
        fields = select_fields(params, types, store.entity, required=False)
        pos = d.position_of(store, key)
        row = None if pos is None else d.row_at(store, pos)
        if row is None:
            raise ApiError(404, "Not found")
        return document_response(
            headers, {"d": serialise(row, fields, types, store.entity, "standard", base)}, store.entity.name
        )

    def _listing(
        self,
        d: DivisionData,
        store: EntityStore,
        variant: str,
        params: dict[str, str],
        headers: Mapping[str, str],
        base: str,
        resource: str,
        count_only: bool,
    ) -> Response:
        entity = store.entity
        types = field_types(entity, variant)
        fields = [] if count_only else select_fields(params, types, entity, required=variant == "bulk")
        predicate, filter_fields, node = filter_of(params, types, entity)
        if self.fake.mandatory_filtering and not count_only:  # Exact's rule is documented for reads, not $count
            check_mandatory_filter(entity, variant, filter_fields if node is not None else None)
        skiptoken = params.get("$skiptoken")
        start = 0
        if skiptoken:
            key = parse_key(skiptoken) or ""
            # A deleted row keeps its position, so paging resumes even if the last row was deleted.
            pos = store.created_keys.get(key)
            if pos is None and entity.int_key:
                pos = int(key) - 1 if key.isdigit() else None
            elif pos is None:
                pos = self.fake._generator.index_of(d.division, entity.name, key)
                if pos is not None and pos >= store.count:
                    pos = None
            if pos is None:
                raise ApiError(400, f"Invalid $skiptoken '{skiptoken}'.")
            start = pos + 1
        pinned = key_equals(node, entity.key) if node is not None else None
        defaults = {n: default_value(t) for n, t in types.items()}

        def source() -> Iterator[tuple[str | None, dict[str, Any]]]:
            if pinned is not None:
                pos = d.position_of(store, str(pinned))
                rows = [] if pos is None or pos < start else [(pos, d.row_at(store, pos))]
            else:
                rows = d.iter_natural(store, start)  # type: ignore[assignment]
            for _, row in rows:
                if row is None:
                    continue
                if predicate is not None:
                    probe = row if not filter_fields else {**{f: defaults.get(f) for f in filter_fields}, **row}
                    if not predicate(probe):
                        continue
                key = row[entity.key]
                yield (str(key) if entity.int_key else f"guid'{key}'"), row

        page = BULK_PAGE if variant == "bulk" else STANDARD_PAGE
        if count_only:
            if predicate is None and pinned is None:
                return text_response(str(store.live_count()))
            return text_response(str(sum(1 for _ in source())))
        return collection(
            headers,
            params,
            source(),
            types,
            page,
            entity,
            entity.name,
            None,
            base + resource,
            True,
            variant=variant,
            fields=fields,
            base=base,
        )

    def _sync_listing(
        self,
        d: DivisionData,
        store: EntityStore | None,
        params: dict[str, str],
        headers: Mapping[str, str],
        url: str,
        count_only: bool,
    ) -> Response:
        entity = store.entity if store is not None else None
        types = field_types(entity, "sync") if entity is not None else DELETED_FIELDS
        if not count_only and self.fake.sync_requires_select and "$select" not in params:
            raise ApiError(400, "$select is mandatory for sync endpoints. Please add a $select to the query string.")
        fields = [] if count_only else select_fields(params, types, entity, required=False)
        predicate, _, node = filter_of(params, types, entity)
        allowed = {"timestamp"} if entity is not None else {"timestamp", "entitytype"}
        if node is not None:
            bad = [f for f in fields_in(node) if f.lower() not in allowed]
            if bad:
                raise ApiError(
                    400,
                    f"Filtering on '{bad[0]}' is not allowed on this sync endpoint: only "
                    f"{' and '.join(sorted(a.title().replace('type', 'Type') for a in allowed))} may be filtered.",
                )
        after = 0
        bound = lower_bound(node, "Timestamp") if node is not None else None
        if bound is not None:
            after = bound[0] - 1 if bound[1] else bound[0]
        skiptoken = params.get("$skiptoken")
        if skiptoken:
            try:
                after = max(after, int(skiptoken.strip().strip("'").rstrip("Ll")))
            except ValueError:
                raise ApiError(400, f"Invalid $skiptoken '{skiptoken}'.") from None

        def source() -> Iterator[tuple[str | None, dict[str, Any]]]:
            rows = d.iter_sync(store, after) if store is not None else d.iter_deleted(after)
            for row in rows:
                if predicate is not None and not predicate(row):
                    continue
                yield f"{row['Timestamp']}L", row

        if count_only:
            return text_response(str(sum(1 for _ in source())))
        base = url[: url.index("/api/v1/")] + f"/api/v1/{d.division}/"
        return collection(
            headers,
            params,
            source(),
            types,
            BULK_PAGE,
            entity,
            entity.name if entity else "Deleted",
            None,
            url,
            True,
            variant="sync",
            fields=fields,
            base=base,
        )
