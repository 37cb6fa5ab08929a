"""Collection reads: query building checked against the catalog, paging (``d.__next``), counts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, TypeVar

import requests

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError, ExactOnlineResponseError
from airflow_provider_exactonline.hooks.calls import ApiCalls, division_of_url
from airflow_provider_exactonline.hooks.errors import d_of, loggable, snippet

if TYPE_CHECKING:
    from typing import Unpack


def _select_list(select: str | Iterable[str] | None) -> list[str] | None:
    if select is None:
        return None
    items = select.split(",") if isinstance(select, str) else list(select)
    fields = [str(item).strip() for item in items if str(item).strip()]
    return fields or None


PageT = TypeVar("PageT", bound=Sized)
#: ``decode(response, path) -> (rows, next link or None)`` (see :meth:`Reads.iter_decoded_pages`).
PageDecode = Callable[[requests.Response, str], tuple[PageT, "str | None"]]


def collection_of(d: Any, path: str) -> tuple[list[dict[str, Any]], str | None]:
    """A collection's ``d`` -> (its records, the ``__next`` link or None); anything else raises."""
    if isinstance(d, list):
        return d, None
    if isinstance(d, dict) and isinstance(d.get("results"), list):
        return d["results"], d.get("__next") or None
    raise ExactOnlineResponseError(
        f"Exact Online answered GET {path} with 'd' that is not a collection: {snippet(str(d))!r}"
    )


class QueryOptions(TypedDict, total=False):
    """OData options of the collection calls (see :meth:`ExactOnlineHook.iter_pages`)."""

    select: str | Iterable[str] | None
    filter: str | None
    top: int | None
    orderby: str | None
    skip: int | None


class PageOptions(QueryOptions, total=False):
    """:class:`QueryOptions` and the division to read from."""

    division: int | None


class Target(NamedTuple):
    """What a call addresses: the catalog entity (None for a raw path it lacks), the variant, the
    path, and the division (None: the hook's default)."""

    spec: Any
    variant: str
    path: str
    division: int | None


class Reads(ApiCalls):
    """Reading entities: :meth:`iter_pages`, :meth:`iter_records`, :meth:`count`."""

    def _resolve(self, entity: str, division: int | None = None) -> Target:
        """``entity`` -> :class:`Target`. See :func:`catalog.resolve`: names the catalog lacks raise
        :class:`ExactOnlineUnknownEntity`; raw paths (leading ``/``, or a URL) always pass.

        A raw path that names a division (``/api/v1/202/crm/Accounts``, a full URL) is read from that
        division, never from the hook's default; a ``division`` argument that contradicts it raises.
        """
        text = str(entity).strip()
        if not text.strip("/"):
            raise ExactOnlineConfigError("entity is empty; give a name such as 'crm/Accounts'")
        from airflow_provider_exactonline import catalog

        if text.startswith(("http://", "https://")):
            self._check_host(text)
        if text.startswith("/") or text.startswith(("http://", "https://")):
            in_path = division_of_url(text)
            if in_path is not None and division is not None and in_path != division:
                raise ExactOnlineConfigError(
                    f"{text!r} names division {in_path}, but division={division} was given; give the division "
                    f"once (in the path or as division=...), so that no call reads another company's books"
                )
            division = in_path if in_path is not None else division
        spec, variant, path = catalog.resolve(text)
        return Target(spec, variant, path, division)

    def _entity_url(self, spec: Any, variant: str, path: str, division: int | None) -> str:
        if spec is None:
            return self.url(path, division)
        url_path = spec.url_path(variant, division if division is not None else self.division)
        if "{division}" in url_path:
            self.config.api_url(path, None)  # raises the "no division" configuration error
        return f"{self.config.base_url}{url_path}"

    def _query(self, spec: Any, variant: str, **options: Unpack[QueryOptions]) -> dict[str, Any]:
        """OData options, checked against the catalog before any HTTP call.

        With a catalog entity, ``select=None`` or ``"*"`` becomes every field where Exact demands a
        ``$select`` (bulk, sync, a few standard endpoints) and no ``$select`` elsewhere; field names
        in ``$select``/``$filter``/``$orderby`` are checked and put in the catalog's spelling.
        """
        fields = _select_list(options.get("select"))
        filter, orderby = options.get("filter"), options.get("orderby")
        top, skip = options.get("top"), options.get("skip")
        if spec is not None:
            fields = list(spec.expand_select(fields, variant)) or None
            if filter:
                filter = spec.normalize_filter(filter, variant)
            if orderby:
                orderby = spec.normalize_orderby(orderby, variant)
        params: dict[str, Any] = {}
        if fields:
            params["$select"] = ",".join(fields)
        if filter:
            params["$filter"] = filter
        if orderby:
            params["$orderby"] = orderby
        if top is not None:
            params["$top"] = int(top)
        if skip is not None:
            params["$skip"] = int(skip)
        return params

    def iter_pages(
        self,
        entity: str,
        *,
        select: str | Iterable[str] | None = None,
        filter: str | None = None,
        top: int | None = None,
        orderby: str | None = None,
        skip: int | None = None,
        division: int | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of records, one at a time, following ``d.__next`` verbatim (constant memory).

        Entity and field names are checked against the catalog here, before any HTTP call (not
        lazily on the first ``next()``), so a typo fails where it was made.
        """
        target = self._resolve(entity, division)
        params = self._collection_query(target, select=select, filter=filter, top=top, orderby=orderby, skip=skip)
        url = self._entity_url(target.spec, target.variant, target.path, target.division)
        return self._pages(url, params, target.path, top)

    def _collection_query(self, target: Target, **options: Unpack[QueryOptions]) -> dict[str, Any]:
        """:meth:`_query` for a collection GET, refused before the call when Exact's mandatory
        filtering would answer it with HTTP 400 (one of the 10 errors an hour that block the app)."""
        params = self._query(target.spec, target.variant, **options)
        if target.spec is not None:
            target.spec.check_mandatory_filter(params.get("$filter"), target.variant)
        return params

    def iter_decoded_pages(
        self, entity: str, decode: PageDecode[PageT], **options: Unpack[PageOptions]
    ) -> Iterator[PageT]:
        """:meth:`iter_pages` with the caller's own page decoding: ``decode(response, path)`` returns the
        page's rows (anything that has ``len`` and slices, such as a list) and the ``__next`` link. The
        export uses it to turn a body straight into compact rows (``operators/rowpages.py``)."""
        query: dict[str, Any] = dict(options)
        target = self._resolve(entity, query.pop("division", None))
        params = self._collection_query(target, **query)
        url = self._entity_url(target.spec, target.variant, target.path, target.division)
        return self._pages(url, params, target.path, query.get("top"), decode)

    def _pages(
        self, url: str, params: dict[str, Any], path: str, top: int | None, decode: PageDecode[Any] | None = None
    ) -> Iterator[Any]:
        next_url: str | None = url
        query = self._encode_params(params)
        remaining = top
        while next_url:
            # The first query was checked by _collection_query; the next ones are Exact's own links.
            response = self._request(
                "GET", next_url, query, purpose="read", filter_checked=True, page_read=decode is not None
            )
            if decode is None:
                results, next_url = collection_of(d_of(response, "GET", response.url), path)
            else:
                results, next_url = decode(response, path)
            del response
            query = None
            if remaining is not None:
                results = results[:remaining]
                remaining -= len(results)
            if len(results):
                yield results
            if remaining is not None and remaining <= 0:
                return

    def iter_records(
        self, entity: str, *, convert_dates: bool = False, **options: Unpack[PageOptions]
    ) -> Iterator[dict[str, Any]]:
        """Yield records one by one; ``options`` are those of :meth:`iter_pages` (``select``, ``filter``,
        ``top``, ``orderby``, ``skip``, ``division``).

        Values are as Exact sent them, so exports are lossless; ``convert_dates=True`` turns
        ``/Date(ms)/`` strings into pendulum datetimes in :attr:`timezone`.
        """
        pages = self.iter_pages(entity, **options)
        return self._records(pages, self.timezone if convert_dates else None)

    @staticmethod
    def _records(pages: Iterator[list[dict[str, Any]]], tz: str | None) -> Iterator[dict[str, Any]]:
        for page in pages:
            for record in page:
                yield odata.convert_dates(record, tz) if tz else record

    def count(self, entity: str, *, filter: str | None = None, division: int | None = None) -> int:
        """``{entity}/$count``, optionally filtered."""
        target = self._resolve(entity, division)
        params = self._collection_query(target, filter=filter)
        url = f"{self._entity_url(target.spec, target.variant, target.path, target.division)}/$count"
        response = self.request("GET", url, params=params)
        text = response.text.strip()
        try:
            value: Any = response.json()
        except ValueError:
            value = text
        if isinstance(value, dict):
            value = value.get("d", value)
            if isinstance(value, dict):
                value = value.get("__count", value.get("Count", value))
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ExactOnlineResponseError(
                f"Exact Online answered GET {loggable(url)} with a count that is not a number: {snippet(text)!r}",
                status_code=response.status_code,
                url=loggable(url),
            ) from None
