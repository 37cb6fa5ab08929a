"""ExactOnlineDivisionsOperator: the divisions a connection reaches, for dynamic task mapping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.operators.base import _ExactOnlineBase, list_divisions, parse_divisions

if TYPE_CHECKING:
    from airflow.sdk import Context


class ExactOnlineDivisionsOperator(_ExactOnlineBase):
    """Return the division numbers the connection can reach, for ``.expand(division=...)``.

    :param divisions: ``"all"`` (default) or a fixed list to check against what the user can reach.
    :param include_blocked: also return divisions Exact marks as blocked.
    """

    template_fields: Sequence[str] = ("divisions",)

    def __init__(self, *, divisions: Any = "all", include_blocked: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.divisions = divisions
        self.include_blocked = include_blocked

    def execute(self, context: Context) -> list[int]:
        reachable = list_divisions(self.hook, include_blocked=self.include_blocked)
        wanted = parse_divisions(self.divisions)
        if wanted in (None, "all"):
            result = reachable
        else:
            assert isinstance(wanted, list)
            missing = [d for d in wanted if d not in reachable]
            if missing:
                raise ExactOnlineConfigError(
                    f"Division(s) {missing} are not reachable with connection {self.exactonline_conn_id!r}; "
                    f"reachable: {reachable}"
                )
            result = wanted
        self.log.info("Exact Online divisions: %s", result)
        return result
