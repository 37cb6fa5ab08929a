"""ExactOnlineOperator: call any Exact Online endpoint."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_exactonline.exceptions import ExactOnlineError, ExactOnlineOutcomeUnknown, ExactOnlineServerError
from airflow_provider_exactonline.operators.base import _DivisionOperatorBase, default_base_path, to_storage_path
from airflow_provider_exactonline.operators.export import safe_run_name
from airflow_provider_exactonline.operators.writers import dumps

if TYPE_CHECKING:
    from airflow.sdk import Context


class ExactOnlineOperator(_DivisionOperatorBase):
    """Call any Exact Online endpoint.

    The answer's JSON (``d`` unwrapped) is returned to XCom when it is at most ``max_xcom_bytes``;
    a larger answer is written to ``output_path`` (default: under the export base, see
    :func:`default_base_path`) and the path is returned instead, as ``{"path": ..., "bytes": ...}``.

    :param method: HTTP method (templated).
    :param endpoint: ``crm/Accounts``, ``current/Me``, a catalog name, or a full URL (templated).
    :param query: query parameters such as ``{"$filter": "...", "$select": "..."}`` (templated; named
        ``query`` because ``params`` is Airflow's DAG-params argument of every operator).
    :param body: JSON body for POST/PUT (templated).
    :param division: division for the call (templated; default: the connection's).
    :param paginate: for GET, follow ``__next`` and return all rows as one list.
    """

    template_fields: Sequence[str] = ("method", "endpoint", "query", "body", "division", "output_path")
    template_fields_renderers = {"query": "json", "body": "json"}
    ui_color = "#e7f1fb"

    def __init__(
        self,
        *,
        endpoint: str,
        method: str = "GET",
        query: dict[str, Any] | str | None = None,
        body: Any = None,
        division: int | str | None = None,
        paginate: bool = False,
        max_xcom_bytes: int = 64 * 1024,
        output_path: str | ObjectStoragePath | None = None,
        output_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(division=division, **kwargs)
        self.endpoint = endpoint
        self.method = method
        self.query = query
        self.body = body
        self.paginate = paginate
        self.max_xcom_bytes = max_xcom_bytes
        self.output_path = output_path
        self.output_conn_id = output_conn_id

    def _path_for(self, context: Context) -> str:
        endpoint = str(self.endpoint)
        if endpoint.startswith(("http://", "https://", "/")):
            return endpoint
        try:
            from airflow_provider_exactonline import catalog

            spec, variant, _path = catalog.resolve(endpoint)
            if spec is not None:
                return spec.variant_path(variant)
        except ExactOnlineError:
            pass
        return endpoint

    def execute(self, context: Context) -> Any:
        from airflow_provider_exactonline.hooks.exactonline import IDEMPOTENT_METHODS

        method = str(self.method).upper()
        params: Any = self.query
        if isinstance(params, str) and params.strip().startswith("{"):
            params = json.loads(params)
        body = self.body
        if isinstance(body, str) and body.strip()[:1] in ("{", "["):
            body = json.loads(body)
        path = self._path_for(context)
        division = self._division()
        hook = self.hook
        if self.paginate and method == "GET":
            result: Any = []
            url: str | None = path
            page_params = params
            while url:
                d = hook.get(url, params=page_params, division=division)
                page_params = None
                if isinstance(d, dict) and isinstance(d.get("results"), list):
                    result.extend(d["results"])
                    url = d.get("__next") or None
                else:
                    result.extend(d if isinstance(d, list) else [d])
                    url = None
            return self._deliver(context, method, path, result)
        if method in IDEMPOTENT_METHODS:
            response = hook.request(method, path, params=params, json=body, division=division)
            return self._deliver(context, method, path, self._payload(response))
        # POST (and any other non-idempotent method): the hook never re-sends it once it may have
        # reached Exact, and neither may Airflow's task retries: such failures fail the task for good.
        again = f"Airflow does not retry this task: a retry would send the {method} again and could create a duplicate"
        try:
            response = hook.request(method, path, params=params, json=body, division=division)
        except ExactOnlineServerError as err:
            raise ExactOnlineOutcomeUnknown(
                f"{err} {again}. Check in Exact Online whether the {method} took effect before running the task again.",
                status_code=err.status_code,
                exact_message=err.exact_message,
                reason=err.reason,
                url=err.url,
            ) from err
        try:
            return self._deliver(context, method, path, self._payload(response))
        except Exception as err:
            raise ExactOnlineOutcomeUnknown(
                f"Exact Online accepted {method} {path} (HTTP {response.status_code}), but handling its answer "
                f"failed: {err}. {again}: the {method} took effect in Exact.",
                status_code=response.status_code,
            ) from err

    @staticmethod
    def _payload(response: Any) -> Any:
        if not response.content:
            return None
        payload = response.json()
        return payload.get("d", payload) if isinstance(payload, dict) else payload

    def _deliver(self, context: Context, method: str, path: str, result: Any) -> Any:
        """``result`` itself when small enough for XCom, else written to storage and its path."""
        self.log.info("Exact Online %s %s: %s API call(s)", method, path, self.hook.api_calls)
        encoded = dumps(result).encode("utf-8")
        if len(encoded) <= self.max_xcom_bytes:
            return result
        target = self._output_target(context)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp"
        with staging.open("wb") as fh:
            fh.write(encoded)
        staging.fs.mv(staging.path, target.path)
        self.log.info(
            "Answer is %d bytes (> max_xcom_bytes=%d); wrote it to %s", len(encoded), self.max_xcom_bytes, target
        )
        return {"path": str(target), "bytes": len(encoded), "rows": len(result) if isinstance(result, list) else None}

    def _output_target(self, context: Context) -> ObjectStoragePath:
        if self.output_path:
            return to_storage_path(self.output_path, self.output_conn_id)
        base = to_storage_path(default_base_path(), self.output_conn_id)
        ti = context.get("ti")
        map_index = getattr(ti, "map_index", -1)
        name = f"{self.task_id}" + (f"-{map_index}" if map_index not in (None, -1) else "") + ".json"
        return base / "_responses" / self.dag_id / safe_run_name(context.get("run_id") or "manual") / name
