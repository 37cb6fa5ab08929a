"""Airflow plugin: the "Exact Online" page (a FastAPI app mounted at ``/exactonline``) and its Admin menu entry.

Registered through the ``airflow.plugins`` entry point. Every Airflow process that loads plugins imports
this module, including each task process (for macros), so it stays light: the FastAPI app and Airflow's
security dependencies live in :mod:`.app` and are imported on the first request to the api-server.

The menu entry is a ``react_apps`` entry: Airflow's UI loads ``static/exactonline-page.js`` and renders its
component at ``/plugin/exactonline`` in its main window, with Airflow's navigation around it. Not an
``external_views`` entry with a ``url_route``: Airflow 3.3 shows those in an iframe sandboxed with
``allow-scripts allow-same-origin allow-forms allow-downloads`` only, so Connect could not take the tab to
Exact's login page (no ``allow-top-navigation``, no ``allow-popups``). See :mod:`.views`.
"""

from __future__ import annotations

from typing import Any

try:  # Airflow 3.x
    from airflow.sdk.plugins_manager import AirflowPlugin
except ImportError:  # pragma: no cover - older layouts
    from airflow.plugins_manager import AirflowPlugin  # type: ignore[assignment]


from airflow_provider_exactonline.plugins.lazy import LazyASGIApp
from airflow_provider_exactonline.webhooks.plugin_app import FASTAPI_APP as WEBHOOK_RECEIVER_APP

URL_PREFIX = "/exactonline"
UI_ROUTE = "exactonline"  # Airflow's UI shows the page at /plugin/exactonline
BUNDLE_URL = "exactonline/static/exactonline-page.js"  # relative to Airflow's base URL (sub-paths work)


def _create_page_app() -> Any:
    from airflow_provider_exactonline.plugins.app import create_app

    return create_app()


app = LazyASGIApp(_create_page_app)


class ExactOnlinePlugin(AirflowPlugin):
    name = "exactonline"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Exact Online"}, WEBHOOK_RECEIVER_APP]
    react_apps = [
        {
            "name": "Exact Online",
            "bundle_url": BUNDLE_URL,
            "url_route": UI_ROUTE,
            "destination": "nav",
            "category": "admin",
        }
    ]
