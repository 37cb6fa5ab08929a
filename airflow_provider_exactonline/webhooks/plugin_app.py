"""The receiver as the plugin mounts it: built on its first request, so importing the plugin stays light.

(Every Airflow process that loads plugins imports the plugin module; FastAPI and the metadata-DB code of
:mod:`.receiver` are only needed by the api-server.)
"""

from __future__ import annotations

import threading
from typing import Any

URL_PREFIX = "/exactonline-webhooks"  # keep in sync with receiver.URL_PREFIX


class LazyReceiverApp:
    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from airflow_provider_exactonline.webhooks.receiver import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


app = LazyReceiverApp()

#: The entry of the plugin's ``fastapi_apps``.
FASTAPI_APP = {"app": app, "url_prefix": URL_PREFIX, "name": "Exact Online webhooks"}
