"""Provider metadata, and proof that Airflow 3's UI gets our connection form from it.

The 3.3 UI reads the form from ``GET /ui/connections/hook_meta``, built from provider info
(``conn-fields`` / ``ui-field-behaviour``) without importing the hook class.
"""

from __future__ import annotations

import importlib.metadata
import time

import pytest

from airflow_provider_exactonline import __version__
from airflow_provider_exactonline.get_provider_info import REGIONS, get_provider_info


def test_provider_info_matches_the_distribution_and_entry_point():
    info = get_provider_info()
    dist = importlib.metadata.distribution("airflow-provider-exactonline")
    assert info["package-name"] == dist.metadata["Name"].lower()
    assert info["versions"] == [__version__]
    entry_points = [ep for ep in dist.entry_points if ep.group == "apache_airflow_provider"]
    assert [ep.load() for ep in entry_points] == [get_provider_info]


def test_connection_type_points_at_the_hook():
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == "exactonline"
    module_name, class_name = conn_type["hook-class-name"].rsplit(".", 1)
    hook_class = getattr(importlib.import_module(module_name), class_name)
    assert hook_class.conn_type == "exactonline"
    assert hook_class.hook_name == conn_type["hook-name"]
    assert hook_class.default_conn_name == "exactonline_default"
    assert hook_class.conn_name_attr == "exactonline_conn_id"
    assert callable(hook_class.test_connection)


def test_provider_info_validates_against_airflow_runtime_schema():
    import json
    from pathlib import Path

    import airflow
    import jsonschema

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_regions_are_https_exact_hosts():
    assert set(REGIONS) == {"nl", "be", "de", "co.uk", "com", "es", "fr"}
    assert all(url == f"https://start.exactonline.{code}" for code, url in REGIONS.items())


@pytest.fixture(scope="module")
def api_client():
    """The api-server FastAPI app on the session's migrated sqlite DB, with an admin JWT."""
    from airflow.utils.db import initdb
    from fastapi.testclient import TestClient

    started = time.monotonic()
    initdb()
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    app = create_app("core")
    with TestClient(app) as client:
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="ADMIN"))
        client.headers["Authorization"] = f"Bearer {token}"
        client.setup_seconds = time.monotonic() - started  # type: ignore[attr-defined]
        yield client


def test_ui_hook_meta_serves_our_connection_form(api_client):
    response = api_client.get("/ui/connections/hook_meta")
    assert response.status_code == 200, response.text
    (meta,) = [item for item in response.json() if item["connection_type"] == "exactonline"]
    assert meta["hook_name"] == "Exact Online"
    assert meta["hook_class_name"] == "airflow_provider_exactonline.hooks.exactonline.ExactOnlineHook"

    standard = meta["standard_fields"]
    assert standard["host"] == {
        "hidden": False,
        "title": "Exact Online URL",
        "placeholder": "https://start.exactonline.nl (or nl, be, de, co.uk, com, es, fr)",
    }
    assert standard["login"]["title"] == "Client ID" and standard["login"]["hidden"] is False
    assert standard["password"]["title"] == "Client secret" and standard["password"]["hidden"] is False
    assert standard["url_schema"]["hidden"] is True  # the UI's name for Connection.schema
    assert standard["port"]["hidden"] is True

    extra = meta["extra_fields"]
    assert set(extra) >= {"division", "redirect_uri", "access_token", "refresh_token"}
    assert extra["division"]["schema"] == {"type": ["integer", "null"], "minimum": 1, "title": "Division"}
    assert extra["redirect_uri"]["schema"]["format"] == "url"
    assert extra["redirect_uri"]["schema"]["title"] == "Redirect URI"
    # format "password" is what makes the UI render and treat a field as sensitive.
    assert extra["access_token"]["schema"]["format"] == "password"
    assert extra["refresh_token"]["schema"]["format"] == "password"
    assert extra["division"]["schema"].get("format") != "password"


def test_api_redacts_token_extras_of_a_saved_connection(api_client):
    body = {
        "connection_id": "eo_meta_check",
        "conn_type": "exactonline",
        "host": "nl",
        "login": "client-id",
        "password": "client-secret-value",
        "extra": '{"division": 12, "access_token": "AT-visible-nowhere", "refresh_token": "RT-visible-nowhere"}',
    }
    created = api_client.post("/api/v2/connections", json=body)
    assert created.status_code == 201, created.text
    try:
        fetched = api_client.get("/api/v2/connections/eo_meta_check").json()
        assert "AT-visible-nowhere" not in str(fetched) and "RT-visible-nowhere" not in str(fetched)
        assert "client-secret-value" not in str(fetched)
        assert '"division": 12' in fetched["extra"]
    finally:
        api_client.delete("/api/v2/connections/eo_meta_check")


def test_hook_meta_requires_authentication(api_client):
    from fastapi.testclient import TestClient

    anonymous = TestClient(api_client.app)
    assert anonymous.get("/ui/connections/hook_meta").status_code == 401
