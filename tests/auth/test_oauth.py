"""OAuth calls over plain http (the local fake) without a process-wide switch, safe from many threads."""

from __future__ import annotations

import os
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter

from airflow_provider_exactonline.auth.oauth import authorization_url, exchange_code
from airflow_provider_exactonline.config import ExactOnlineConfig
from airflow_provider_exactonline.exceptions import ExactOnlineAuthError

INSECURE = "OAUTHLIB_INSECURE_TRANSPORT"


@pytest.fixture(autouse=True)
def _no_insecure_transport_switch(monkeypatch) -> None:
    monkeypatch.delenv(INSECURE, raising=False)


def _code(config: ExactOnlineConfig) -> str:
    location = requests.get(authorization_url(config, "xyz"), allow_redirects=False, timeout=10).headers["Location"]
    return parse_qs(urlsplit(location).query)["code"][0]


class RecordingAdapter(HTTPAdapter):
    """Notes the URL and whether the process-wide oauthlib switch was on while each request was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str | None]] = []

    def send(self, request, *args, **kwargs):
        self.sent.append((request.url, os.environ.get(INSECURE)))
        return super().send(request, *args, **kwargs)


def test_plain_http_token_call_leaves_the_process_environment_alone(fake, config, clock) -> None:
    session = requests.Session()
    adapter = RecordingAdapter()
    session.mount("http://", adapter)
    state = exchange_code(config, _code(config), clock=clock, session=session)
    assert state.access_token == fake.current_access_token
    assert adapter.sent == [(config.token_url, None)]  # sent over http, with the switch off
    assert INSECURE not in os.environ


def test_authorization_url_keeps_the_connections_scheme() -> None:
    for base in ("http://127.0.0.1:8765", "https://start.exactonline.nl"):
        config = ExactOnlineConfig("eo", base, "cid", "secret-value", redirect_uri="http://localhost:8080/cb")
        assert authorization_url(config, "s1").startswith(f"{base}/api/oauth2/auth?response_type=code&client_id=cid&")
    assert INSECURE not in os.environ


def test_many_threads_over_http_never_flip_a_process_wide_switch(fake, config) -> None:
    seen_on: list[str] = []
    unexpected: list[BaseException] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if os.environ.get(INSECURE):
                seen_on.append(os.environ.get(INSECURE) or "")
                return

    def work() -> None:
        try:
            for _ in range(15):
                assert authorization_url(config, "s").startswith(fake.auth_url)
                with pytest.raises(ExactOnlineAuthError, match="code"):  # a real call, answered 400
                    exchange_code(config, "not-a-code-123")
        except BaseException as err:
            unexpected.append(err)

    watcher = threading.Thread(target=watch)
    workers = [threading.Thread(target=work) for _ in range(8)]
    watcher.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    done.set()
    watcher.join(5)
    assert unexpected == []
    assert seen_on == []
    assert len(fake.token_calls) == 8 * 15
