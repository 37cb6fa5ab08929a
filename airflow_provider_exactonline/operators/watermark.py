"""Where the incremental export keeps its ``Timestamp`` watermarks.

One Airflow Variable per (watermark id, connection, entity, division)::

    exactonline_watermark__{watermark_id}__{conn_id}__{service}_{Entity}__{division}
    e.g. exactonline_watermark__exactonline_incremental_sync.sync__exactonline_default__crm_Accounts__123456

The watermark id defaults to ``{dag_id}.{task_id}`` of the exporting task, so two exports of the
same entity (two DAGs, or one task writing to S3 and another to local files) each keep their own
position; a task may pass ``watermark_id=`` to share one deliberately (or to keep its position
across a rename). The value is JSON ``{"timestamp": 4711, "deleted_timestamp": 4700, "run_id": ...,
"committed_at": ..., "path": ...}``. Variables are read and written through the Task SDK, so this
works on Celery and Kubernetes workers (no ORM access needed), and a human can look at or reset a
watermark in the UI (Admin -> Variables) or with ``airflow variables delete KEY``. Deleting the
Variable makes the next incremental run a full load through the sync endpoint.

The export writes the Variable only after the run's output is finalized, so a killed or failed
try never moves it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

PREFIX = "exactonline_watermark__"
#: Airflow's ``variable.key`` column holds 250 characters.
MAX_KEY_LENGTH = 250
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Watermark:
    timestamp: int
    deleted_timestamp: int | None = None
    run_id: str | None = None
    committed_at: str | None = None
    path: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_value(cls, value: Any) -> Watermark | None:
        if value is None or value == "":
            return None
        if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit()):
            # A human may set the Variable to a bare number to restart from there.
            return cls(timestamp=int(value))
        data = json.loads(value) if isinstance(value, str) else dict(value)
        return cls(
            timestamp=int(data["timestamp"]),
            deleted_timestamp=None if data.get("deleted_timestamp") is None else int(data["deleted_timestamp"]),
            run_id=data.get("run_id"),
            committed_at=data.get("committed_at"),
            path=data.get("path"),
        )


def default_watermark_id(dag_id: str, task_id: str) -> str:
    """The watermark id of a task that gives none: ``{dag_id}.{task_id}``."""
    return f"{dag_id}.{task_id}"


def watermark_key(conn_id: str, entity: str, division: int, watermark_id: str) -> str:
    """The Variable name for one (watermark id, connection, entity, division); ``entity`` like ``crm/Accounts``.

    Characters other than letters, digits, ``_ . -`` become ``_``. A name longer than Airflow's
    250-character key column keeps its start and ends in a hash of the whole name.
    """
    if not str(watermark_id).strip():
        raise ExactOnlineConfigError("watermark_id must not be empty")
    parts = (str(watermark_id), conn_id, entity.strip("/").replace("/", "_"), str(int(division)))
    key = PREFIX + "__".join(_UNSAFE.sub("_", part) for part in parts)
    if len(key) > MAX_KEY_LENGTH:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        key = f"{key[: MAX_KEY_LENGTH - len(digest) - 2]}__{digest}"
    return key


class WatermarkStore(Protocol):
    def get(self, key: str) -> Watermark | None: ...

    def set(self, key: str, watermark: Watermark) -> None: ...

    def delete(self, key: str) -> None: ...


class VariableWatermarkStore:
    """Airflow Variables through the Task SDK (workers, triggerer, ``dag.test()``)."""

    name = "airflow-variable"

    def get(self, key: str) -> Watermark | None:
        from airflow.sdk import Variable

        value = Variable.get(key, default=None)
        return Watermark.from_value(value)

    def set(self, key: str, watermark: Watermark) -> None:
        from airflow.sdk import Variable

        Variable.set(
            key,
            watermark.to_json(),
            description="Exact Online incremental export watermark (sync Timestamp). "
            "Delete it to make the next run a full load.",
        )

    def delete(self, key: str) -> None:
        from airflow.sdk import Variable

        try:
            Variable.delete(key)
        except Exception as err:  # deleting a Variable that does not exist is fine
            if "not found" not in str(err).lower() and "not_found" not in str(err).lower():
                raise


class MemoryWatermarkStore:
    """For tests and ad-hoc runs outside Airflow."""

    name = "memory"

    def __init__(self) -> None:
        self.values: dict[str, Watermark] = {}

    def get(self, key: str) -> Watermark | None:
        return self.values.get(key)

    def set(self, key: str, watermark: Watermark) -> None:
        self.values[key] = watermark

    def delete(self, key: str) -> None:
        self.values.pop(key, None)
