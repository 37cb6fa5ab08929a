"""ExactOnlineHook: Exact Online's REST API with tokens, rate limits, retries and typed errors.

One hook = one connection, one ``requests.Session`` and one rate limiter (limits kept per
division). The hook is not thread-safe; give each thread its own. It is built in layers, one
module per concern:

- :mod:`~airflow_provider_exactonline.hooks.calls`: set-up and one API call (tokens, rate
  limits, retries); :mod:`~airflow_provider_exactonline.hooks.errors` maps answers to typed errors;
- :mod:`~airflow_provider_exactonline.hooks.reads`: collection reads (query building, paging, counts);
- :mod:`~airflow_provider_exactonline.hooks.writes`: single records (get_record, create, update, delete);
- this module: the hook itself (account calls and Airflow's Test button).
"""

from __future__ import annotations

import os
from typing import Any

from airflow_provider_exactonline.auth.masking import redact
from airflow_provider_exactonline.config import DEFAULT_CONN_ID, extras_of
from airflow_provider_exactonline.exceptions import ExactOnlineResponseError
from airflow_provider_exactonline.hooks.calls import MAX_429_RETRIES, division_of_url
from airflow_provider_exactonline.hooks.errors import IDEMPOTENT_METHODS, snippet
from airflow_provider_exactonline.hooks.reads import PageOptions, QueryOptions
from airflow_provider_exactonline.hooks.writes import Writes

__all__ = [
    "IDEMPOTENT_METHODS",
    "MAX_429_RETRIES",
    "ExactOnlineHook",
    "PageOptions",
    "QueryOptions",
    "division_of_url",
    "redact",
    "snippet",
]


class ExactOnlineHook(Writes):
    """Talk to Exact Online's REST API through an ``exactonline`` connection.

    :param exactonline_conn_id: the connection (host = region or URL, login = client id,
        password = client secret, extras ``division``, ``redirect_uri`` and the token fields).
    :param division: default division for this hook's calls (overrides the connection's).
    :param token_store: a custom token store (see ``airflow_provider_exactonline.auth``).
    :param timezone: zone used to read ``/Date(ms)/`` values (default: extra ``timezone`` or
        Europe/Amsterdam; see :mod:`airflow_provider_exactonline.odata`).
    :param clock: time source for rate-limit waits and backoff (tests pass a ScaledClock).
    :param max_retries: retries after the first attempt for 5xx and connection errors.
    :param timeout: read timeout of an API call in seconds (connect timeout: at most 10 s).
    :param rate_limiter: a :class:`~airflow_provider_exactonline.ratelimit.RateLimiter` (default:
        :func:`~airflow_provider_exactonline.ratelimit.build_rate_limiter` for the connection).
    """

    conn_name_attr = "exactonline_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "exactonline"
    hook_name = "Exact Online"

    # ------------------------------------------------------------------ account

    def current_user(self, *, purpose: str = "read") -> dict[str, Any]:
        """``current/Me``: the authorized user, including ``CurrentDivision``."""
        d = self.get("current/Me", purpose=purpose)
        if isinstance(d, dict) and isinstance(d.get("results"), list):
            d = d["results"]
        if isinstance(d, list):
            d = d[0] if d else None
        if not isinstance(d, dict):
            raise ExactOnlineResponseError("Exact Online answered current/Me without a user")
        return d

    def divisions(self) -> list[dict[str, Any]]:
        """``system/Divisions`` (the divisions of the user's company), read in the default division,
        or in ``Me.CurrentDivision`` when neither hook nor connection sets one."""
        division = self.division
        if division is None:
            division = int(self.current_user()["CurrentDivision"])
        return list(self.iter_records("system/Divisions", division=division))

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's Test button: call ``current/Me``. A token rotation it causes is persisted by the
        token manager before this returns, into the stores of the *stored* connection (see
        :meth:`_original_conn_id`), so testing never strands the connection on a spent refresh token.
        A connection without tokens is reported as not authorized, without any call to Exact."""
        try:
            copy = False
            if "token_manager" not in self.__dict__ and self._token_store is None:
                copy, self._token_conn_id = self._test_copy_origin()
            if self.token_manager.reload() is None:
                target = self._token_conn_id or ("<connection id>" if copy else self.exactonline_conn_id)
                return False, (
                    f"not authorized yet: connect it at /exactonline or run `airflow-exactonline authorize {target}`"
                )
            me = self.current_user(purpose="admin")
        except Exception as err:
            return False, redact(str(err))
        name = me.get("FullName") or me.get("UserName") or "unknown user"
        return True, f"Connected to {self.config.base_url} as {name} (current division {me.get('CurrentDivision')})"

    def _original_conn_id(self) -> str | None:
        """The stored connection that the api-server's Test button copied to a throw-away conn_id (see
        :meth:`_test_copy_origin`), or None."""
        return self._test_copy_origin()[1]

    def _test_copy_origin(self) -> tuple[bool, str | None]:
        """(is this hook's connection a Test-button copy, the stored connection it was copied from).

        ``POST /api/v2/connections/test`` exports the form (merged with the stored connection) as
        ``AIRFLOW_CONN_<random>`` and builds the hook with that random id. A refresh would then rotate
        the pair but persist it under the random id, killing the stored refresh token. So when our
        conn_id exists only in an env var and the metadata DB has exactly one ``exactonline``
        connection with the same refresh token, use that one's token stores. Without a refresh token
        in the form there is no match: borrowing another connection's tokens would report a connection
        that was never authorized as working. Only in processes that may use the ORM (the api-server);
        never raises.
        """
        conn_id = self.exactonline_conn_id
        if f"AIRFLOW_CONN_{conn_id.upper()}" not in os.environ:
            return False, None
        try:
            from airflow_provider_exactonline.auth import process_context

            if process_context.process_kind() != process_context.ORM:
                return False, None
            from airflow.models import Connection
            from airflow.utils.session import create_session

            ours = extras_of(self.connection).get("refresh_token")
            with create_session() as session:
                if session.query(Connection.id).filter(Connection.conn_id == conn_id).first() is not None:
                    return False, None
                rows = session.query(Connection).filter(Connection.conn_type == self.conn_type).all()
                same_token = [row.conn_id for row in rows if ours and row.extra_dejson.get("refresh_token") == ours]
        except Exception as err:
            self.log.debug("Could not look up the stored connection behind %s: %s", conn_id, type(err).__name__)
            return False, None
        return True, same_token[0] if len(same_token) == 1 else None
