"""The receiver as the plugin mounts it: built on its first request, so importing the plugin stays light.

(Every Airflow process that loads plugins imports the plugin module; FastAPI and the metadata-DB code of
:mod:`.receiver` are only needed by the api-server.)
"""

from __future__ import annotations

from typing import Any

from airflow_provider_exactonline.plugins.lazy import LazyASGIApp

URL_PREFIX = "/exactonline-webhooks"  # keep in sync with receiver.URL_PREFIX


def _create_receiver_app() -> Any:
    from airflow_provider_exactonline.webhooks.receiver import create_app

    return create_app()


app = LazyASGIApp(_create_receiver_app)

#: The entry of the plugin's ``fastapi_apps``.
FASTAPI_APP = {"app": app, "url_prefix": URL_PREFIX, "name": "Exact Online webhooks"}
