"""How the "Exact Online" page is drawn, inside Airflow's UI or on its own, from the same templates.

Inside Airflow's UI the page is a React app plugin (route ``/plugin/exactonline/...``, bundle
``static/exactonline-page.js``) rendered in Airflow's main window, with Airflow's navigation around it.
The bundle fetches the matching page of this app with the header ``X-ExactOnline-Embed: 1`` and shows the
HTML fragment it gets back. Because it runs in the main window (not in Airflow's sandboxed iframe), the
Connect link can navigate the whole tab to Exact's login page. Links in a fragment point to the plugin
route; Connect and the division form carry ``embedded=1``, so the callback and the form send the browser
back into Airflow's UI. Without the header the same URLs give whole pages (``/exactonline/``), which the
CLI and the docs link to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from airflow_provider_exactonline.health import ConnectionHealth, human_duration

URL_PREFIX = "/exactonline"  # keep in sync with plugins/exactonline.py
UI_ROUTE = "/plugin/exactonline"  # the React app's route in Airflow's UI (its url_route)
EMBED_HEADER = "X-ExactOnline-Embed"
FRAGMENT_HEADER = "X-ExactOnline-Fragment"

STATUS_LABELS = {
    "ok": "Authorized",
    "expiring": "Expiring",
    "expired": "Expired",
    "error": "Refresh failed",
    "not_authorized": "Not connected",
    "misconfigured": "Misconfigured",
}

_templates = Environment(
    loader=FileSystemLoader(str(Path(__file__).with_name("templates"))),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=False,
)


def _q(value: str) -> str:
    return quote(value, safe="")


def app_root(request: Request) -> str:
    """This app's absolute path prefix (``/exactonline``, or ``/airflow/exactonline`` behind a sub-path)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def airflow_root(request: Request) -> str:
    root = app_root(request)
    return root[: -len(URL_PREFIX)] if root.endswith(URL_PREFIX) else root


def is_fragment(request: Request) -> bool:
    """Asked for by the React app inside Airflow's UI (it sends :data:`EMBED_HEADER`)?"""
    return request.headers.get(EMBED_HEADER) == "1"


@dataclass(frozen=True)
class Urls:
    """Every link the templates draw; ``embedded`` links stay inside Airflow's UI."""

    root: str
    airflow: str
    embedded: bool

    @classmethod
    def of(cls, request: Request, embedded: bool | None = None) -> Urls:
        return cls(app_root(request), airflow_root(request), is_fragment(request) if embedded is None else embedded)

    @property
    def home(self) -> str:
        return f"{self.airflow}/"

    @property
    def ui_index(self) -> str:
        return f"{self.airflow}{UI_ROUTE}/"

    @property
    def standalone_index(self) -> str:
        return f"{self.root}/"

    @property
    def index(self) -> str:
        return self.ui_index if self.embedded else self.standalone_index

    @property
    def connections(self) -> str:
        return f"{self.airflow}/connections"

    def index_with(self, **params: str) -> str:
        query = urlencode({key: value for key, value in params.items() if value})
        return f"{self.index}?{query}" if query else self.index

    def authorize(self, conn_id: str, force_login: bool = False) -> str:
        params = {"embedded": "1"} if self.embedded else {}
        if force_login:
            params["force_login"] = "1"
        url = f"{self.root}/connections/{_q(conn_id)}/authorize"
        return f"{url}?{urlencode(params)}" if params else url

    def division(self, conn_id: str) -> str:
        """The division chooser page (inside the UI when embedded)."""
        base = f"{self.airflow}{UI_ROUTE}" if self.embedded else self.root
        return f"{base}/connections/{_q(conn_id)}/division"

    def division_action(self, conn_id: str) -> str:
        """Where the division form posts: always this app (the form carries ``embedded``)."""
        return f"{self.root}/connections/{_q(conn_id)}/division"

    def edit_connection(self, conn_id: str) -> str:
        """Airflow 3.3's connection list filtered to ``conn_id`` (its edit button opens the form)."""
        return f"{self.connections}?{urlencode({'name_pattern': conn_id})}"


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A whole page, or a fragment for the React app (same template, other layout)."""
    urls = context.pop("urls", None) or Urls.of(request)
    fragment = is_fragment(request)
    html = _templates.get_template(name).render(
        layout="embed.html" if fragment else "layout.html", urls=urls, embedded=urls.embedded, **context
    )
    headers = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Vary": EMBED_HEADER,
    }
    if fragment:
        headers[FRAGMENT_HEADER] = "1"  # the React app shows only answers that carry it
    return HTMLResponse(html, status_code=status_code, headers=headers)


def when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _when_iso(value: Any) -> str:
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def status_notes(health: ConnectionHealth, warnings: list[str]) -> list[dict[str, str]]:
    """What the status cell says under its badge: only what the badge does not already say."""
    notes: list[dict[str, str]] = []
    if health.status == "misconfigured":
        notes += [{"kind": "error", "text": problem} for problem in health.problems or (health.summary,)]
    elif health.status == "error":
        notes.append({"kind": "error", "text": f"Last refresh error: {health.last_refresh_error}"})
    elif health.status in ("expiring", "expired"):
        notes.append({"kind": "warn", "text": health.summary[:1].upper() + health.summary[1:] + "."})
    elif health.status == "ok" and health.division is None:
        notes.append({"kind": "", "text": "No default division: tasks must pass division=..., or choose one."})
    notes += [{"kind": "warn", "text": str(warning)} for warning in warnings]
    return notes


def budget_rows(budget: Any) -> list[dict[str, Any]]:
    """The per-division API budget from ``ConnectionHealth.to_dict()["budget"]``, ready to print."""
    rows = []
    for item in budget if isinstance(budget, list) else []:
        if not isinstance(item, dict):
            continue

        def shown(key: str, entry: dict[str, Any] = item) -> str:
            value = entry.get(key)
            return "-" if value is None else str(value)

        rows.append(
            {
                "division": shown("division"),
                "calls_today": shown("calls_today"),
                "remaining_today": shown("remaining_today"),
                "limit_today": shown("limit_today"),
                "resets_at": _when_iso(item.get("resets_at_iso")) or "-",
                "reserve": shown("reserve"),
                "deferred": [str(task) for task in item.get("deferred") or []],
            }
        )
    return rows


def connection_row(health: ConnectionHealth, urls: Urls, now: float) -> dict[str, Any]:
    data = health.to_dict()
    warnings = [str(w) for w in data.get("warnings") or []]
    row: dict[str, Any] = {
        "health": health,
        "status_label": STATUS_LABELS.get(health.status, health.status),
        "notes": status_notes(health, warnings),
        "budget": budget_rows(data.get("budget")),
        "authorize_url": urls.authorize(health.conn_id),
        "force_login_url": urls.authorize(health.conn_id, force_login=True),
        "division_url": urls.division(health.conn_id),
        "edit_url": urls.edit_connection(health.conn_id),
    }
    if health.token_obtained_at is not None:
        row["obtained"] = when(health.token_obtained_at)
        row["obtained_ago"] = human_duration(now - health.token_obtained_at)
    if health.refresh_token_age_s is not None and health.refresh_token_estimated_death is not None:
        row["age"] = human_duration(health.refresh_token_age_s)
        row["death"] = when(health.refresh_token_estimated_death)
    return row
