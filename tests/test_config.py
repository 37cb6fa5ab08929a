from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.sdk.definitions.connection import Connection

from airflow_provider_exactonline.config import ExactOnlineConfig, base_url_from_host
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError


def conn(**kwargs):
    values = {"conn_id": "eo", "host": "nl", "login": "client-id", "password": "secret-1234", "extra": None}
    values.update(kwargs)
    return SimpleNamespace(**values)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("nl", "https://start.exactonline.nl"),
        ("CO.UK", "https://start.exactonline.co.uk"),
        (" be ", "https://start.exactonline.be"),
        ("start.exactonline.de", "https://start.exactonline.de"),
        ("https://start.exactonline.fr/", "https://start.exactonline.fr"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://localhost:8000/prefix/", "http://localhost:8000/prefix"),
    ],
)
def test_host_forms(host, url):
    assert base_url_from_host(host, "eo") == url


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"host": ""}, "host"),
        ({"host": "xx"}, "unknown Exact Online region"),
        ({"host": "ftp://example.com"}, "not an http"),
        ({"login": " "}, "Client ID"),
        ({"password": ""}, "Client secret"),
        ({"extra": '{"division": "abc"}'}, "division must be a positive integer"),
        ({"extra": '{"division": -3}'}, "division must be a positive integer"),
        ({"extra": '{"division": true}'}, "division must be a positive integer"),
        ({"extra": '{"redirect_uri": "example.com/cb"}'}, "redirect_uri"),
        ({"extra": "{not json"}, "extra is not valid JSON"),
        ({"extra": "[1]"}, "extra must be a JSON object"),
    ],
)
def test_bad_configuration_names_the_field(kwargs, field):
    with pytest.raises(ExactOnlineConfigError, match=field) as info:
        ExactOnlineConfig.from_connection(conn(**kwargs))
    assert "'eo'" in str(info.value)
    assert "secret-1234" not in str(info.value)


def test_full_config_and_urls():
    config = ExactOnlineConfig.from_connection(
        conn(extra=json.dumps({"division": "123", "redirect_uri": "https://af/cb", "timezone": "UTC"}))
    )
    assert (config.division, config.redirect_uri, config.timezone) == (123, "https://af/cb", "UTC")
    assert config.token_url == "https://start.exactonline.nl/api/oauth2/token"
    assert config.auth_url == "https://start.exactonline.nl/api/oauth2/auth"
    assert config.api_url("crm/Accounts") == "https://start.exactonline.nl/api/v1/123/crm/Accounts"
    assert config.api_url("/crm/Accounts", 7) == "https://start.exactonline.nl/api/v1/7/crm/Accounts"
    assert config.api_url("current/Me") == "https://start.exactonline.nl/api/v1/current/Me"
    assert config.api_url("https://x/y") == "https://x/y"
    assert config.api_url("api/oauth2/token") == config.token_url


def test_defaults_and_missing_division():
    config = ExactOnlineConfig.from_connection(conn())
    assert config.division is None and config.timezone == "Europe/Amsterdam"
    with pytest.raises(ExactOnlineConfigError, match="division"):
        config.api_url("crm/Accounts")


def test_from_task_sdk_connection_with_dict_like_extra():
    sdk_conn = Connection(
        conn_id="eo_sdk",
        conn_type="exactonline",
        host="http://127.0.0.1:9",
        login="id",
        password="secret-1234",
        extra=json.dumps({"division": 5}),
    )
    config = ExactOnlineConfig.from_connection(sdk_conn)
    assert (config.conn_id, config.base_url, config.division) == ("eo_sdk", "http://127.0.0.1:9", 5)


def test_repr_and_str_never_show_the_client_secret():
    config = ExactOnlineConfig.from_connection(conn())
    for text in (repr(config), str(config), f"{config}", repr([config])):
        assert "secret-1234" not in text
    assert "client_id='client-id'" in repr(config)  # the rest is still shown
    assert config.client_secret == "secret-1234"
