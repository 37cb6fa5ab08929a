"""What every Exact Online operator shares: the hook, division parsing, storage paths, asset URIs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_exactonline.config import DEFAULT_CONN_ID
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

if TYPE_CHECKING:
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

ASSET_SCHEME = "x-exactonline"
DEFAULT_EXPORT_DIRNAME = "exactonline-exports"


# ---------------------------------------------------------------------------------------------- helpers


def default_base_path() -> str:
    """Where exports go when no ``path`` is given.

    ``[exactonline] export_path`` in airflow.cfg (env ``AIRFLOW__EXACTONLINE__EXPORT_PATH``), else
    ``file://$AIRFLOW_HOME/exactonline-exports``.
    """
    try:
        from airflow.sdk.configuration import conf

        configured = conf.get("exactonline", "export_path", fallback=None)
    except Exception:
        configured = os.environ.get("AIRFLOW__EXACTONLINE__EXPORT_PATH")
    if configured:
        return str(configured)
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return f"file://{os.path.abspath(home)}/{DEFAULT_EXPORT_DIRNAME}"


def to_storage_path(path: str | ObjectStoragePath | os.PathLike[str], conn_id: str | None = None) -> ObjectStoragePath:
    """``str``/``PathLike`` -> ObjectStoragePath; a bare local path becomes ``file://``."""
    if isinstance(path, ObjectStoragePath):
        return path
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if "://" not in text:
        text = "file://" + os.path.abspath(os.path.expanduser(text))
    return ObjectStoragePath(text, conn_id=conn_id)


def resolve_spec(entity: str) -> Any:
    """The catalog entry for ``entity``, or None for a raw path (``/...``) the catalog lacks."""
    from airflow_provider_exactonline import catalog

    return catalog.resolve(entity).spec


def asset_uri(conn_id: str, entity: str) -> str:
    """``x-exactonline://{conn_id}/{service}/{Entity}`` (one Asset per entity and connection)."""
    return f"{ASSET_SCHEME}://{conn_id}/{entity.strip('/')}"


def parse_divisions(value: Any) -> list[int] | str | None:
    """``3`` / ``"3"`` / ``[1, 2]`` / ``"1,2"`` / ``"[1, 2]"`` / ``"all"`` / None -> list, ``"all"`` or None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "all":
            return "all"
        value = json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, Iterable):
        raise ExactOnlineConfigError(f"divisions={value!r}: give a division number, a list of them, or 'all'")
    result: list[int] = []
    for item in value:
        if isinstance(item, Mapping):  # a system/Divisions record
            item = item.get("Code")
        try:
            number = int(str(item).strip())
        except ValueError:
            raise ExactOnlineConfigError(f"divisions: {item!r} is not a division number") from None
        if number <= 0:
            raise ExactOnlineConfigError(f"divisions: {item!r} is not a division number")
        if number not in result:
            result.append(number)
    return result


def list_divisions(hook: Any, *, include_blocked: bool = False) -> list[int]:
    """Division numbers (``Code``) the connection's user can reach, via ``system/Divisions``."""
    numbers: list[int] = []
    for record in hook.divisions():
        if not include_blocked and record.get("Blocked"):
            continue
        code = record.get("Code")
        if code is not None and int(code) not in numbers:
            numbers.append(int(code))
    return numbers


def parse_division(value: Any) -> int | None:
    """A templated ``division`` (``1001``, ``"1001"``, ``""``, None) -> int, or None for "the connection's"."""
    if value in (None, ""):
        return None
    return int(str(value))


def try_number_of(context: Mapping[str, Any]) -> int:
    ti = context.get("ti") or context.get("task_instance")
    try:
        return int(getattr(ti, "try_number", 1) or 1)
    except (TypeError, ValueError):
        return 1


class _ExactOnlineBase(BaseOperator):
    def __init__(
        self, *, exactonline_conn_id: str = DEFAULT_CONN_ID, hook_params: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.exactonline_conn_id = exactonline_conn_id
        self.hook_params = hook_params or {}

    @cached_property
    def hook(self) -> ExactOnlineHook:
        from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

        return ExactOnlineHook(self.exactonline_conn_id, **self.hook_params)


class _DivisionOperatorBase(_ExactOnlineBase):
    """An operator that calls one division: ``division`` (templated) or the connection's."""

    def __init__(self, *, division: int | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.division = division

    def _division(self) -> int | None:
        return parse_division(self.division)
