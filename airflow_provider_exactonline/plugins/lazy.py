"""An ASGI app built on its first request: every Airflow process imports the plugin, only the api-server
serves it, so FastAPI and the app's dependencies are imported there alone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class LazyASGIApp:
    """An ASGI app that builds the real one (``create()``) on its first request, so importing stays light."""

    def __init__(self, create: Callable[[], Any]) -> None:
        self._create = create
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._create()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
