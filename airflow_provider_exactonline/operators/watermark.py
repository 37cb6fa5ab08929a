"""Where the incremental export keeps its ``Timestamp`` watermarks.

One Airflow Variable per (connection, entity, division)::

    exactonline_watermark__{conn_id}__{service}_{Entity}__{division}
    e.g. exactonline_watermark__exactonline_default__crm_Accounts__123456

holding JSON ``{"timestamp": 4711, "deleted_timestamp": 4700, "run_id": ..., "committed_at": ...,
"path": ...}``. Variables are read and written through the Task SDK, so this works on Celery and
Kubernetes workers (no ORM access needed), and a human can look at or reset a watermark in the
UI (Admin -> Variables) or with ``airflow variables delete KEY``. Deleting the Variable makes
the next incremental run a full load through the sync endpoint.

The export writes the Variable only after the run's output is finalized, so a killed or failed
try never moves it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol

PREFIX = "exactonline_watermark__"
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


def watermark_key(conn_id: str, entity: str, division: int) -> str:
    """The Variable name for one (connection, entity, division); ``entity`` like ``crm/Accounts``."""
    safe_entity = _UNSAFE.sub("_", entity.strip("/").replace("/", "_"))
    safe_conn = _UNSAFE.sub("_", conn_id)
    return f"{PREFIX}{safe_conn}__{safe_entity}__{int(division)}"


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
