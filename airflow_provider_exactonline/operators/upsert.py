"""ExactOnlineUpsertOperator: create or update records matched on a key, never creating a duplicate."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.exceptions import (
    ExactOnlineAuthError,
    ExactOnlineConfigError,
    ExactOnlineError,
    ExactOnlineRateLimitExceeded,
    ExactOnlineUpsertFailed,
)
from airflow_provider_exactonline.operators.base import _DivisionOperatorBase, resolve_spec, to_storage_path
from airflow_provider_exactonline.operators.export import entity_label

if TYPE_CHECKING:
    from airflow.sdk import Context


def _norm_key(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    return value


def same_value(new: Any, old: Any) -> bool:
    """Does ``new`` (from the input) equal ``old`` (as Exact returns it)? Lenient on types and blanks."""
    if new in (None, "") and old in (None, ""):
        return True
    if new is None or old is None:
        return False
    if isinstance(old, str) and odata.is_date(old):
        try:
            import pendulum

            old_dt = odata.parse_date(old)
            new_dt: Any = odata.parse_date(new) if odata.is_date(new) else pendulum.parse(str(new))
            if old_dt is None or not isinstance(new_dt, pendulum.DateTime):
                return False
            return bool(old_dt.naive() == new_dt.naive())
        except Exception:
            return False
    if isinstance(old, bool) or isinstance(new, bool):
        truth = {"true": True, "1": True, "false": False, "0": False}
        n = truth.get(str(new).lower(), new) if isinstance(new, str) else new
        o = truth.get(str(old).lower(), old) if isinstance(old, str) else old
        return bool(n) == bool(o)
    if isinstance(old, (int, float)) or isinstance(new, (int, float)):
        try:
            return abs(float(new) - float(old)) < 1e-9
        except (TypeError, ValueError):
            return False
    return str(new).strip() == str(old).strip()


class ExactOnlineUpsertOperator(_DivisionOperatorBase):
    """Create or update records in an entity, matched on a key field, without ever creating a duplicate.

    For each batch of records: one lookup (``$filter`` = ``key eq a or key eq b ...``), then per
    record a PUT of the changed fields, nothing when unchanged, or a POST when no match. A POST is
    never re-sent (the hook guarantees it); when its answer is lost the record is reported failed
    with an unknown outcome, and a retry finds it by key and leaves or updates it.

    :param entity: the entity to write (``crm/Accounts``; templated).
    :param records: a list of dicts, a JSON string of one, or an XComArg (templated).
    :param records_path: instead of ``records``: a ``.json`` (list) or ``.jsonl`` file (templated).
    :param key: the field to match on, e.g. ``Code`` or ``Email`` (templated).
    :param trim_key: match with ``trim(key) eq ...`` (Exact pads account codes with spaces);
        default: on for ``Code``.
    :param fail_on_error: fail the task at the end when any record failed (default True); the
        report is in XCom under ``upsert_report`` either way.
    :param batch_size: records per lookup query (bounded also by URL length).
    """

    template_fields: Sequence[str] = ("entity", "records", "records_path", "key", "division")
    template_fields_renderers = {"records": "json"}
    ui_color = "#fbe9d7"
    MAX_FILTER_CHARS = 1500

    def __init__(
        self,
        *,
        entity: str,
        key: str,
        records: Any = None,
        records_path: str | ObjectStoragePath | None = None,
        records_conn_id: str | None = None,
        division: int | str | None = None,
        trim_key: bool | None = None,
        compare: bool = True,
        fail_on_error: bool = True,
        batch_size: int = 40,
        max_reported_failures: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(division=division, **kwargs)
        self.entity = entity
        self.key = key
        self.records = records
        self.records_path = records_path
        self.records_conn_id = records_conn_id
        self.trim_key = trim_key
        self.compare = compare
        self.fail_on_error = fail_on_error
        self.batch_size = max(1, int(batch_size))
        self.max_reported_failures = max_reported_failures

    # -- input

    def _load_records(self) -> list[dict[str, Any]]:
        if self.records is not None and self.records_path:
            raise ExactOnlineConfigError("give records or records_path, not both")
        data: Any = self.records
        if self.records_path:
            target = to_storage_path(self.records_path, self.records_conn_id)
            text = target.read_text()
            if str(target).endswith(".jsonl") or not text.lstrip().startswith("["):
                data = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                data = json.loads(text)
        if isinstance(data, str):
            data = json.loads(data) if data.strip() else []
        if data is None:
            raise ExactOnlineConfigError("no records: give records=[...] (or an XComArg) or records_path=")
        if isinstance(data, Mapping):
            data = [data]
        records = list(data)
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise ExactOnlineConfigError(f"record {i} is not an object: {str(record)[:80]!r}")
        return [dict(r) for r in records]

    # -- lookup

    def _key_expr(self) -> str:
        trim = self.trim_key if self.trim_key is not None else str(self.key) == "Code"
        return f"trim({self.key})" if trim else str(self.key)

    def _batches(self, records: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        length = 0
        for record in records:
            clause = len(self._key_expr()) + len(odata.literal(record.get(self.key))) + 8
            if batch and (len(batch) >= self.batch_size or length + clause > self.MAX_FILTER_CHARS):
                yield batch
                batch, length = [], 0
            batch.append(record)
            length += clause
        if batch:
            yield batch

    def _lookup(self, spec: Any, batch: list[dict[str, Any]], division: int | None) -> dict[Any, list[dict]]:
        key_expr = self._key_expr()
        values = []
        for record in batch:
            value = record[self.key]
            literal = odata.literal(value.strip() if isinstance(value, str) else value)
            if literal not in values:
                values.append(literal)
        flt = " or ".join(f"{key_expr} eq {v}" for v in values)
        id_field = (spec.key if spec is not None else None) or "ID"
        fields: dict[str, None] = {id_field: None, str(self.key): None}
        for record in batch:
            fields.update(dict.fromkeys(record))
        found: dict[Any, list[dict]] = {}
        for row in self.hook.iter_records(self._path(spec), select=list(fields), filter=flt, division=division):
            found.setdefault(_norm_key(row.get(self.key)), []).append(row)
        return found

    def _path(self, spec: Any) -> str:
        if spec is not None and spec.path:
            return str(spec.path)
        return str(self.entity)

    # -- run

    def execute(self, context: Context) -> dict[str, Any]:
        spec = resolve_spec(str(self.entity))
        if spec is not None and not spec.path:
            raise ExactOnlineConfigError(f"{spec.qualified_name} has no standard endpoint to write to")
        id_field = (spec.key if spec is not None else None) or "ID"
        division = self._division()
        records = self._load_records()
        report: dict[str, Any] = {
            "entity": entity_label(spec, str(self.entity)),
            "key": self.key,
            "total": len(records),
            "created": 0,
            "updated": 0,
            "unchanged": 0,
            "failed": 0,
            "failures": [],
        }

        def fail(record: Mapping[str, Any], error: Any, outcome: str = "rejected") -> None:
            report["failed"] += 1
            self.log.warning("Record %s=%r failed (%s): %s", self.key, record.get(self.key), outcome, error)
            if len(report["failures"]) < self.max_reported_failures:
                report["failures"].append({"key": record.get(self.key), "outcome": outcome, "error": str(error)[:500]})

        valid: list[dict[str, Any]] = []
        for record in records:
            if record.get(self.key) in (None, ""):
                fail(record, f"record has no {self.key!r} value to match on")
            else:
                valid.append(record)

        written: dict[Any, dict[str, Any]] = {}  # key -> record as it now is in Exact (this run)
        path = self._path(spec)
        for batch in self._batches(valid):
            found = self._lookup(spec, batch, division)
            for record in batch:
                norm = _norm_key(record[self.key])
                try:
                    existing = written.get(norm)
                    if existing is None:
                        matches = found.get(norm, [])
                        if len(matches) > 1:
                            fail(
                                record,
                                f"{len(matches)} records in Exact have {self.key} = "
                                f"{record[self.key]!r}; fix the duplicates in Exact first",
                                "ambiguous",
                            )
                            continue
                        existing = matches[0] if matches else None
                    if existing is None:
                        created = self.hook.create(path, record, division=division)
                        report["created"] += 1
                        written[norm] = {**record, **created}
                        continue
                    changed = {
                        k: v
                        for k, v in record.items()
                        if k not in (self.key, id_field) and (not self.compare or not same_value(v, existing.get(k)))
                    }
                    if not changed:
                        report["unchanged"] += 1
                        continue
                    self.hook.update(path, existing[id_field], changed, division=division)
                    report["updated"] += 1
                    written[norm] = {**existing, **changed}
                except (ExactOnlineRateLimitExceeded, ExactOnlineAuthError):
                    raise  # no point trying the other records; the retry resumes safely
                except ExactOnlineError as err:
                    # A lost answer or a 5xx may hide a write Exact did make; a 4xx surely did not.
                    unknown = err.status_code is None or err.status_code >= 500
                    fail(record, err, "unknown (the request may have reached Exact)" if unknown else "rejected")
        self.log.info(
            "Upsert into %s: %d created, %d updated, %d unchanged, %d failed (%d API calls)",
            report["entity"],
            report["created"],
            report["updated"],
            report["unchanged"],
            report["failed"],
            self.hook.api_calls,
        )
        report["api_calls"] = self.hook.api_calls
        ti = context.get("ti")
        if ti is not None:
            ti.xcom_push(key="upsert_report", value=report)
        if report["failed"] and self.fail_on_error:
            raise ExactOnlineUpsertFailed(
                f"{report['failed']} of {report['total']} record(s) could not be written to {report['entity']} "
                f"(the others were written): {report['failures'][:5]}. A retry is safe: records are matched on "
                f"{self.key} again, so nothing is created twice.",
                report,
            )
        return report
