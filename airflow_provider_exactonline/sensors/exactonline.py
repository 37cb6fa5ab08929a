"""ExactOnlineSensor: wait until an OData query returns a row, or a sync endpoint has rows past a watermark."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSensorTimeout, AirflowSkipException

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.config import DEFAULT_CONN_ID
from airflow_provider_exactonline.exceptions import (
    ExactOnlineConfigError,
    ExactOnlineError,
    ExactOnlineRateLimitExceeded,
)
from airflow_provider_exactonline.triggers.exactonline import ExactOnlineTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook


def _default_deferrable() -> bool:
    try:
        from airflow.sdk.configuration import conf

        return conf.getboolean("operators", "default_deferrable", fallback=False)
    except Exception:
        return False


class ExactOnlineSensor(BaseSensorOperator):
    """Wait until Exact Online has a matching row; the row is returned to XCom.

    Two kinds of wait:

    * query: ``entity`` + ``filter``, e.g. ``entity="salesinvoice/SalesInvoices",
      filter="InvoiceNumber eq 20240001 and Status eq 50"``;
    * new rows on a sync endpoint: ``since_timestamp=N`` (or ``since_export_watermark="dag.task"``,
      the watermark that incremental export last committed) -> rows with ``Timestamp gt N``.
      Exact's sync endpoints filter on ``Timestamp`` only, so ``filter`` cannot be combined with
      them: it is refused before any call (to wait for a filtered row, query the standard
      endpoint, e.g. ``entity="crm/Accounts", filter="... and Modified gt datetime'...'"``).

    Works in ``mode="poke"``, ``mode="reschedule"`` (frees the worker between pokes) and with
    ``deferrable=True`` (waits in the triggerer with async HTTP). A spent daily API limit does not
    fail the sensor: it reschedules (or, deferred, sleeps) until the limit's reset.

    :param entity: catalog name or path (templated).
    :param filter: OData ``$filter`` (templated); names are checked against the catalog. Not with
        a ``sync/`` endpoint, ``since_timestamp`` or ``since_export_watermark``.
    :param select: fields of the returned row (templated; default: all for standard endpoints).
    :param division: division (templated; default: the connection's).
    :param since_timestamp: wait for sync rows with a Timestamp above this (templated).
    :param since_export_watermark: wait past the watermark an incremental export last committed:
        that export's watermark id, ``"{dag_id}.{task_id}"`` of the export task unless it sets
        ``watermark_id=`` (templated).
    """

    template_fields: Sequence[str] = (
        "entity",
        "filter",
        "select",
        "division",
        "since_timestamp",
        "since_export_watermark",
    )
    ui_color = "#f0eee4"

    def __init__(
        self,
        *,
        entity: str,
        filter: str | None = None,
        select: str | list[str] | None = None,
        division: int | str | None = None,
        since_timestamp: int | str | None = None,
        since_export_watermark: str | None = None,
        exactonline_conn_id: str = DEFAULT_CONN_ID,
        hook_params: dict[str, Any] | None = None,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.entity = entity
        self.filter = filter
        self.select = select
        self.division = division
        self.since_timestamp = since_timestamp
        self.since_export_watermark = since_export_watermark
        self.exactonline_conn_id = exactonline_conn_id
        self.hook_params = hook_params or {}
        self.deferrable = _default_deferrable() if deferrable is None else deferrable

    @cached_property
    def hook(self) -> ExactOnlineHook:
        from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

        return ExactOnlineHook(self.exactonline_conn_id, **self.hook_params)

    # ------------------------------------------------------------------ the query

    def _division(self) -> int | None:
        if self.division in (None, ""):
            return self.hook.division
        return int(str(self.division))

    def query(self) -> tuple[str, dict[str, Any]]:
        """``(path, OData params)`` of one poke, checked against the catalog (no HTTP call)."""
        from airflow_provider_exactonline import catalog
        from airflow_provider_exactonline.operators.export import entity_label
        from airflow_provider_exactonline.operators.watermark import VariableWatermarkStore, watermark_key

        resolution = catalog.resolve(str(self.entity))
        spec, variant, path = resolution.spec, resolution.variant, resolution.path
        flt = self.filter or None
        since_export = self.since_export_watermark or None
        if isinstance(since_export, bool):  # True: which export's watermark?
            raise ExactOnlineConfigError(
                "since_export_watermark takes the export's watermark id, not True: "
                "'{dag_id}.{task_id}' of the incremental export task (or the watermark_id= it sets)"
            )
        waits_on_sync = self.since_timestamp not in (None, "") or bool(since_export)
        if flt and (waits_on_sync or variant == "sync"):
            standard = repr(spec.path) if spec is not None and spec.path else "its standard endpoint"
            raise ExactOnlineConfigError(
                f"filter={flt!r} cannot be sent to a sync/ endpoint: Exact's sync endpoints filter on Timestamp "
                f"only (any other filter is refused with HTTP 400). To wait for a row matching a filter, query "
                f"the standard endpoint instead (entity={standard}, filter=...); to wait for new or changed "
                f"rows, use since_timestamp/since_export_watermark without filter."
            )
        select: list[str] | None
        if isinstance(self.select, str):
            select = [f.strip() for f in self.select.split(",") if f.strip()]
        else:
            select = list(self.select) if self.select else None
        if waits_on_sync:
            if spec is not None:
                if not spec.sync_path:
                    raise ExactOnlineConfigError(
                        f"{spec.qualified_name} has no sync endpoint; wait with entity+filter instead of "
                        f"since_timestamp/since_export_watermark"
                    )
                variant, path = "sync", spec.sync_path
            elif not path.lower().startswith("sync/"):
                raise ExactOnlineConfigError("since_timestamp needs a sync endpoint (e.g. 'sync/CRM/Accounts')")
            if self.since_timestamp not in (None, ""):
                since = int(str(self.since_timestamp))
            else:
                division = self._division()
                if division is None:
                    raise ExactOnlineConfigError("since_export_watermark needs a division")
                stored = VariableWatermarkStore().get(
                    watermark_key(
                        self.exactonline_conn_id, entity_label(spec, str(self.entity)), division, str(since_export)
                    )
                )
                since = stored.timestamp if stored else 0
            flt = f"Timestamp gt {odata.long(since)}"
            if select is None:
                key = spec.key_for("standard") if spec is not None and spec.path else None
                select = ["Timestamp"] + ([key] if key else [])
        params: dict[str, Any] = {"$top": 1}
        if spec is not None:
            if (select is not None and "*" in select) or (select is None and spec.select_required(variant)):
                select = list(spec.expand_select("*", variant))
            if select:
                select = list(spec.validate_select(select, variant) or select)
            if flt:
                spec.validate_filter(flt, variant)
        if select:
            params["$select"] = ",".join(select)
        if flt:
            params["$filter"] = flt
        if variant == "sync":
            params.pop("$top", None)  # sync endpoints page by Timestamp; $top is not theirs
        return path, params

    def _poke_once(self) -> dict[str, Any] | None:
        path, params = self.query()
        d = self.hook.get(path, params=params, division=self._division())
        if isinstance(d, dict) and isinstance(d.get("results"), list):
            rows = d["results"]
        elif isinstance(d, list):
            rows = d
        else:
            rows = [d] if d else []
        return rows[0] if rows else None

    # ------------------------------------------------------------------ sensor API

    def poke(self, context: Context) -> PokeReturnValue:
        try:
            row = self._poke_once()
        except ExactOnlineRateLimitExceeded as err:
            if err.scope == "daily" and err.reset_at:
                when = dt.datetime.fromtimestamp(float(err.reset_at) + 1, tz=dt.timezone.utc)
                self.log.warning("Exact Online's daily API limit is spent; rescheduling for %s", when.isoformat())
                raise AirflowRescheduleException(reschedule_date=when) from err
            raise
        if row is None:
            self.log.info("No matching Exact Online row yet")
        return PokeReturnValue(is_done=row is not None, xcom_value=row)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        wait_until: float | None = None
        try:
            row = self._poke_once()
        except ExactOnlineRateLimitExceeded as err:
            if err.scope != "daily" or not err.reset_at:
                raise
            row, wait_until = None, float(err.reset_at) + 1
            self.log.warning("Exact Online's daily API limit is spent; the trigger waits until its reset")
        if row is not None:
            return row
        path, params = self.query()
        self.defer(
            trigger=ExactOnlineTrigger(
                self.exactonline_conn_id,
                path=path,
                division=self._division(),
                params=params,
                poke_interval=float(self.poke_interval),
                end_time=time.time() + float(self.timeout),
                wait_until=wait_until,
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=float(self.timeout)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        event = event or {}
        status = event.get("status")
        if status == "success":
            self.log.info("Exact Online row found")
            return event.get("row")
        if status == "timeout":
            message = f"Sensor {self.task_id} timed out: {event.get('message', 'no matching row')}"
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        raise ExactOnlineError(f"Exact Online sensor failed: {event.get('message', event)}")
