"""Health of an ``exactonline`` connection, read from the connection alone (no network, no token spent).

Shared by the "Exact Online" page in the Airflow UI and ``airflow-exactonline status``, so both say the
same thing. Exact drops a refresh token that is not used for about 30 days; every refresh rotates it and
the token store rewrites ``token_obtained_at``, so "refresh-token age" is the time since the last rotation
and its estimated death is ``token_obtained_at + 30 days``.

Workers cannot write connections, so after a refresh on a worker the newest pair lives in the Airflow
Variable ``exactonline_token__{conn_id}`` (see ``auth/token_stores.py``). :func:`load_health` therefore
compares the connection's extras with that Variable and reports the newer pair and where it is.

The division name is not in the tokens: the UI stores it as the ``division_name`` extra when the default
division is chosen after authorizing, and it is shown when present.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_exactonline.auth.token_state import TokenState
from airflow_provider_exactonline.config import CONN_TYPE, ExactOnlineConfig, extras_of, parse_division
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

#: Exact keeps an unused refresh token for about 30 days (it was 30-180; Exact is moving to 30).
REFRESH_TOKEN_LIFETIME_S = 30 * 24 * 3600
#: Below this much remaining life the connection is reported as ``expiring``.
EXPIRY_WARNING_S = 5 * 24 * 3600

STATUS_OK = "ok"
STATUS_EXPIRING = "expiring"
STATUS_EXPIRED = "expired"
STATUS_ERROR = "error"
STATUS_NOT_AUTHORIZED = "not_authorized"
STATUS_MISCONFIGURED = "misconfigured"

#: Idle days of the refresh token at which health warns (Exact drops it after about 30).
IDLE_WARNING_DAYS = (7, 14, 28)

#: Statuses for which a human has to act (Connect/Reconnect or fix the connection).
NEEDS_ACTION = frozenset({STATUS_EXPIRED, STATUS_ERROR, STATUS_NOT_AUTHORIZED, STATUS_MISCONFIGURED})


@dataclass(frozen=True)
class ConnectionHealth:
    conn_id: str
    conn_type: str | None
    status: str
    summary: str
    authorized: bool
    base_url: str | None = None
    client_id: str | None = None
    division: int | None = None
    division_name: str | None = None
    token_obtained_at: float | None = None
    access_token_expires_at: float | None = None
    refresh_token_age_s: float | None = None
    refresh_token_estimated_death: float | None = None
    last_refresh_error: str | None = None
    token_source: str | None = None  # where the newest token pair is: "connection extras" or the Variable
    redirect_uri: str | None = None
    redirect_uri_source: str | None = None  # "connection" (extra) or "derived" (from the Airflow URL)
    problems: tuple[str, ...] = field(default_factory=tuple)
    #: Today's API budget per division (keys: see budget/report.py), filled by :func:`load_health`.
    budget: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def needs_action(self) -> bool:
        return self.status in NEEDS_ACTION

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: epoch seconds plus ISO-8601 UTC strings for the times."""
        data = asdict(self)
        data["problems"] = list(self.problems)
        data["budget"] = [dict(entry) for entry in self.budget]
        data["warnings"] = list(self.warnings)
        data["needs_action"] = self.needs_action
        for key in ("token_obtained_at", "access_token_expires_at", "refresh_token_estimated_death"):
            data[key + "_iso"] = iso(data[key])
        return data


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def human_duration(seconds: float) -> str:
    """``93784`` -> ``1 d 2 h``; coarse on purpose (it is shown next to an exact timestamp)."""
    seconds = abs(int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"


def idle_warning(age_s: float | None) -> str | None:
    """The warning for a refresh token unused for ``age_s`` seconds (7, 14, 28 days), or None."""
    if age_s is None:
        return None
    days = int(age_s // 86_400)
    reached = [limit for limit in IDLE_WARNING_DAYS if days >= limit]
    if not reached:
        return None
    advice = (
        "Exact drops it after about 30 days: run the exactonline_keep_alive DAG now or reconnect"
        if reached[-1] >= 28
        else "enable the exactonline_keep_alive DAG (it uses idle tokens) or run a task on this connection"
    )
    return f"the refresh token has not been used for {days} days; {advice}"


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def connection_health(
    conn: Any,
    *,
    now: float | None = None,
    default_redirect_uri: str | None = None,
    tokens: TokenState | None = None,
    token_source: str | None = None,
) -> ConnectionHealth:
    """Health of ``conn`` (an ORM ``Connection`` or Task SDK ``Connection``), without I/O.

    ``default_redirect_uri`` is what the UI would use when the connection has no ``redirect_uri`` extra
    (``<airflow base url>/exactonline/callback``); the CLI passes ``None``. ``tokens`` overrides the token
    pair read from the extras (:func:`load_health` passes the newest known pair).
    """
    now = time.time() if now is None else now
    conn_id = conn.conn_id
    conn_type = getattr(conn, "conn_type", None)
    problems: list[str] = []
    if conn_type != CONN_TYPE:
        return ConnectionHealth(
            conn_id=conn_id,
            conn_type=conn_type,
            status=STATUS_MISCONFIGURED,
            summary=f"connection type is {conn_type!r}, not {CONN_TYPE!r}",
            authorized=False,
            problems=(f"Set the connection type of {conn_id!r} to 'Exact Online' ({CONN_TYPE}).",),
        )
    try:
        extras = extras_of(conn)
    except ExactOnlineConfigError as err:
        return ConnectionHealth(
            conn_id=conn_id,
            conn_type=conn_type,
            status=STATUS_MISCONFIGURED,
            summary="extra is not a JSON object",
            authorized=False,
            problems=(err.message,),
        )

    config: ExactOnlineConfig | None = None
    try:
        config = ExactOnlineConfig.from_connection(conn)
    except ExactOnlineConfigError as err:
        problems.append(err.message)

    redirect_uri = (extras.get("redirect_uri") or None) if config is None else config.redirect_uri
    redirect_source: str | None = "connection" if redirect_uri else None
    if not redirect_uri and default_redirect_uri:
        redirect_uri, redirect_source = default_redirect_uri, "derived"

    if tokens is None:
        tokens = TokenState.from_extras(extras)
        token_source = "connection extras" if tokens is not None else None
    refresh_token = tokens.refresh_token if tokens is not None else None
    obtained_at = (tokens.obtained_at or None) if tokens is not None else None
    expires_at = (tokens.expires_at or None) if tokens is not None else None
    last_error = tokens.last_error if tokens is not None else None
    division = config.division if config is not None else None
    if config is None:
        try:
            division = parse_division(extras.get("division"), conn_id)
        except ExactOnlineConfigError:
            division = None

    age = death = None
    if refresh_token and obtained_at is not None:
        age = max(0.0, now - obtained_at)
        death = obtained_at + REFRESH_TOKEN_LIFETIME_S

    if problems:
        status, summary = STATUS_MISCONFIGURED, problems[0]
    elif not refresh_token:
        status, summary = (
            STATUS_NOT_AUTHORIZED,
            "not authorized yet: click Connect (or run airflow-exactonline authorize)",
        )
    elif last_error:
        status, summary = STATUS_ERROR, f"the last token refresh failed: {last_error}"
    elif death is not None and death <= now:
        status, summary = (
            STATUS_EXPIRED,
            f"the refresh token was last rotated {human_duration(now - obtained_at)} ago"  # type: ignore[operator]
            " and has probably expired: reconnect",
        )
    elif death is not None and death - now <= EXPIRY_WARNING_S:
        status, summary = (
            STATUS_EXPIRING,
            f"the refresh token expires in about {human_duration(death - now)} unless a task uses it",
        )
    else:
        status, summary = STATUS_OK, "authorized"
    if refresh_token and division is None and status == STATUS_OK:
        summary = "authorized; no default division set (tasks must pass division=...)"

    return ConnectionHealth(
        conn_id=conn_id,
        conn_type=conn_type,
        status=status,
        summary=summary,
        authorized=bool(refresh_token),
        base_url=config.base_url if config is not None else None,
        client_id=config.client_id if config is not None else None,
        division=division,
        division_name=extras.get("division_name") or None,
        token_obtained_at=obtained_at if refresh_token else None,
        access_token_expires_at=expires_at if refresh_token else None,
        refresh_token_age_s=age,
        refresh_token_estimated_death=death,
        last_refresh_error=last_error,
        token_source=token_source if refresh_token else None,
        redirect_uri=redirect_uri,
        redirect_uri_source=redirect_source,
        problems=tuple(problems),
        warnings=tuple(w for w in (idle_warning(age),) if w),
    )


def newest_tokens(conn: Any) -> tuple[TokenState | None, str | None]:
    """The newer of the connection's extras and the Variable the workers write, and which one it is.

    For ORM processes (api-server, CLI). A Variable that cannot be read is ignored.
    """
    try:
        extras = extras_of(conn)
    except ExactOnlineConfigError:
        extras = {}
    best = TokenState.from_extras(extras)
    source = "connection extras" if best is not None else None
    try:
        from airflow_provider_exactonline.auth.token_stores import VariableTokenStore

        store = VariableTokenStore(conn.conn_id, client_secret=getattr(conn, "password", None) or None)
        variable = store.load()
    except Exception:
        variable = None
    if variable is not None and variable.refresh_token and variable.newer_than(best):
        best, source = variable, f"Variable {store.token_key}"
    return best, source


def load_health(conn: Any, *, now: float | None = None, default_redirect_uri: str | None = None) -> ConnectionHealth:
    """:func:`connection_health` with the newest token pair (connection extras or the workers' Variable)."""
    if getattr(conn, "conn_type", None) != CONN_TYPE:
        return connection_health(conn, now=now, default_redirect_uri=default_redirect_uri)
    tokens, source = newest_tokens(conn)
    health = connection_health(
        conn, now=now, default_redirect_uri=default_redirect_uri, tokens=tokens, token_source=source
    )
    from airflow_provider_exactonline.budget.report import budget_report

    try:
        extras = extras_of(conn)
    except ExactOnlineConfigError:
        return health
    budget, warnings = budget_report(extras, health.client_id, health.division, now=now)
    return dataclasses.replace(health, budget=tuple(budget), warnings=health.warnings + tuple(warnings))


def format_budget(health: ConnectionHealth) -> list[str]:
    """The status lines for today's API budget and the warnings."""
    lines = []
    for entry in health.budget:
        used = "?" if entry["calls_today"] is None else entry["calls_today"]
        limit = "?" if entry["limit_today"] is None else entry["limit_today"]
        left = "unknown" if entry["remaining_today"] is None else entry["remaining_today"]
        resets = entry["resets_at_iso"] or "unknown"
        lines.append(
            f"API budget {entry['division']}:  {used} of {limit} calls today, {left} left "
            f"(reserve {entry['reserve'] if entry['reserve'] is not None else '?'}), resets {resets}"
        )
        lines.extend(f"  deferred:        {item}" for item in entry["deferred"])
    lines.extend(f"Warning:           {warning}" for warning in health.warnings)
    return lines


def format_health(health: ConnectionHealth, *, now: float | None = None) -> str:
    """Plain-text report for the CLI (never contains a token)."""
    now = time.time() if now is None else now
    lines = [
        f"Connection:        {health.conn_id} ({health.conn_type})",
        f"Status:            {health.status}: {health.summary}",
    ]
    if health.base_url:
        lines.append(f"Exact Online URL:  {health.base_url}")
    if health.client_id:
        lines.append(f"Client ID:         {health.client_id}")
    division = "not set"
    if health.division is not None:
        division = str(health.division) + (f" ({health.division_name})" if health.division_name else "")
    lines.append(f"Division:          {division}")
    lines.append(f"Authorized:        {'yes' if health.authorized else 'no'}")
    if health.token_obtained_at is not None:
        lines.append(
            f"Tokens obtained:   {iso(health.token_obtained_at)} ({human_duration(now - health.token_obtained_at)} ago)"
        )
    if health.access_token_expires_at is not None:
        verb = "expires" if health.access_token_expires_at > now else "expired"
        lines.append(f"Access token:      {verb} {iso(health.access_token_expires_at)}")
    if health.refresh_token_estimated_death is not None and health.refresh_token_age_s is not None:
        lines.append(
            f"Refresh token:     {human_duration(health.refresh_token_age_s)} old; estimated to expire "
            f"{iso(health.refresh_token_estimated_death)} if unused"
        )
    if health.token_source:
        lines.append(f"Newest tokens in:  {health.token_source}")
    if health.last_refresh_error:
        lines.append(f"Last refresh error: {health.last_refresh_error}")
    if health.redirect_uri:
        origin = (
            "the Exact Online page derives it from [api] base_url; " if health.redirect_uri_source == "derived" else ""
        )
        lines.append(f"Redirect URI:      {health.redirect_uri} ({origin}register exactly this in Exact's App Center)")
    elif health.authorized:  # e.g. connected on the Exact Online page, which derives it from Airflow's URL
        lines.append(
            "Redirect URI:      none in the connection; the Exact Online page derives <airflow url>/exactonline/"
            "callback (fine); `authorize` in a terminal needs extra 'redirect_uri' or --redirect-uri"
        )
    else:
        lines.append(
            "Redirect URI:      not set; set extra 'redirect_uri' (e.g. http://127.0.0.1:8765/callback for the CLI, "
            "or <airflow url>/exactonline/callback for the UI) and register it in Exact's App Center"
        )
    lines.extend(f"Problem:           {problem}" for problem in health.problems)
    lines.extend(format_budget(health))
    return "\n".join(lines)
