"""Airflow plugin: the "Exact Online" page (a FastAPI app mounted at ``/exactonline``) and its Admin menu entry.

Registered through the ``airflow.plugins`` entry point. Every Airflow process that loads plugins imports
this module, including each task process (for macros), so it stays light: the FastAPI app and Airflow's
security dependencies live in :mod:`.app` and are imported on the first request to the api-server.

The menu entry deliberately has no ``url_route``. With one, Airflow would embed the page in an iframe
sandboxed without ``allow-top-navigation``, but Exact's login page must be a top-level page. So the menu
opens the page on its own.
"""

from __future__ import annotations

import threading
from typing import Any

try:  # Airflow 3.x
    from airflow.sdk.plugins_manager import AirflowPlugin
except ImportError:  # pragma: no cover - older layouts
    from airflow.plugins_manager import AirflowPlugin  # type: ignore[assignment]

from airflow_provider_exactonline.webhooks.plugin_app import FASTAPI_APP as WEBHOOK_RECEIVER_APP

URL_PREFIX = "/exactonline"


class LazyExactOnlineApp:
    """An ASGI app that builds the real FastAPI app (``plugins.app.create_app``) on its first request."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from airflow_provider_exactonline.plugins.app import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


app = LazyExactOnlineApp()


class ExactOnlinePlugin(AirflowPlugin):
    name = "exactonline"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Exact Online"}, WEBHOOK_RECEIVER_APP]
    external_views = [
        {
            "name": "Exact Online",
            "href": "exactonline/",
            "destination": "nav",
            "category": "admin",
        }
    ]
