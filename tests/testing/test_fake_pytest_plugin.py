"""The ``fake_exact_online`` fixture from the package's pytest plugin (entry point ``exactonline_fake``)."""

from __future__ import annotations

import sys

import pytest
import requests

from airflow_provider_exactonline.testing import FakeExactOnline


def test_fixture_gives_a_started_server(fake_exact_online: FakeExactOnline) -> None:
    token = fake_exact_online.issue_tokens()
    response = requests.get(
        fake_exact_online.api_url("crm/Accounts/$count"),
        headers={"Authorization": f"Bearer {token['access_token']}", "Accept": "application/json"},
        timeout=10,
    )
    assert response.text == "130"


@pytest.mark.fake_exact_online(rows={"crm/Accounts": 3}, access_token_lifetime=30)
def test_marker_configures_the_fake(fake_exact_online: FakeExactOnline) -> None:
    assert fake_exact_online.issue_tokens()["expires_in"] == "30"
    assert fake_exact_online.record_count("crm/Accounts") == 3


def test_fake_never_imports_airflow() -> None:
    import subprocess

    code = (
        "import sys; from airflow_provider_exactonline.testing import FakeExactOnline; "
        "import airflow_provider_exactonline.testing.pytest_plugin; "
        "import urllib.request as u; f = FakeExactOnline().start(); t = f.issue_tokens()['access_token']; "
        "r = u.urlopen(u.Request(f.api_url('sync/CRM/Accounts?$select=ID&$filter=Timestamp%20gt%201L'), "
        "headers={'Authorization': 'Bearer ' + t, "
        "'Accept': 'application/json'})); assert r.status == 200; f.stop(); "
        "assert 'airflow' not in sys.modules, 'airflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
