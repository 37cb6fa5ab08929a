"""The hook's transport: every call goes through the rate limiter, keyed by the URL's division."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pytest
from hook_support import FAKE_DIVISION, fake_hook

from airflow_provider_exactonline.clock import ScaledClock
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook, division_of_url
from airflow_provider_exactonline.ratelimit import LocalRateLimiter, RateLimitState

pytestmark = pytest.mark.usefixtures("env_conns")

OTHER_DIVISION = 1002  # the fake's second division


class RecordingLimiter(LocalRateLimiter):
    """The local limiter, recording what the hook told it."""

    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.before: list[tuple[int | None, str]] = []
        self.after: list[tuple[int | None, int]] = []

    def before_call(self, division: int | None, *, purpose: str = "read") -> None:
        self.before.append((division, purpose))
        super().before_call(division, purpose=purpose)

    def after_call(self, division: int | None, headers: Mapping[str, Any], status: int) -> None:
        self.after.append((division, status))
        super().after_call(division, headers, status)


def test_division_of_url():
    assert division_of_url("https://start.exactonline.nl/api/v1/202/crm/Accounts?$top=1") == 202
    assert division_of_url("http://127.0.0.1:1/api/v1/current/Me") is None
    assert division_of_url("http://127.0.0.1:1/api/v1/7") == 7


def test_the_limiter_sees_each_calls_division_and_purpose():
    clock = ScaledClock(scale=60)
    limiter = RecordingLimiter(clock)
    with fake_hook(clock=clock, rows={"crm/Accounts": 3}, hook_kwargs={"rate_limiter": limiter}) as (_, hook, _store):
        hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$top": 1})
        hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$top": 1}, division=OTHER_DIVISION)
        created = hook.create("crm/Accounts", {"Code": "77", "Name": "Seam"})
        hook.update("crm/Accounts", created["ID"], {"Name": "Seam 2"})
        hook.current_user()
        ok, message = hook.test_connection()
        assert ok, message
    assert limiter.before == [
        (FAKE_DIVISION, "read"),
        (OTHER_DIVISION, "read"),
        (FAKE_DIVISION, "write"),
        (FAKE_DIVISION, "write"),
        (None, "read"),
        (None, "admin"),
    ]
    assert [status for _, status in limiter.after] == [200, 200, 201, 204, 200, 200]
    assert hook.rate_limiter is limiter and hook.rate_limit is limiter.state(FAKE_DIVISION)
    assert hook.rate_limit.daily_remaining is not None


def test_a_spent_minute_in_one_division_does_not_hold_back_another(manual_clock):
    with fake_hook(clock=manual_clock, minutely_limit=3, rows={"crm/Accounts": 3}) as (fake, hook, _):
        for _ in range(3):
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$top": 1})
        assert hook.rate_limit.minutely_remaining == 0 and manual_clock.sleeps == []
        hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$top": 1}, division=OTHER_DIVISION)
        assert manual_clock.sleeps == []  # the other division still had its minute
        assert hook.rate_limiter.state(OTHER_DIVISION).minutely_remaining == 2
        hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$top": 1})
        assert len(manual_clock.sleeps) == 1  # the spent division waited for its reset
        assert fake.responses_429 == 0
        assert hook.rate_limiter.state(None) == RateLimitState()


def test_retries_use_tenacity_without_deprecated_arguments():
    with fake_hook(rows={"crm/Accounts": 1}, hook_kwargs={"max_retries": 1, "backoff_initial": 0.01}) as (
        fake,
        hook,
        _,
    ):
        fake.fail_next(1, status=503, path_contains="crm/Accounts")
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            assert len(hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$select": "ID"})["results"]) == 1
        assert fake.count_requests("crm/Accounts") == 2


def test_a_db_connection_unseen_by_a_plain_script_gets_the_process_context_hint(airflow_db, monkeypatch):
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models import Connection
    from airflow.utils.session import create_session

    monkeypatch.delenv("_AIRFLOW_PROCESS_CONTEXT", raising=False)
    with create_session() as session:
        session.add(Connection(conn_id="eo_only_in_db", conn_type="exactonline", host="nl", login="id", password="s"))
    try:
        with pytest.raises(ExactOnlineConfigError, match="_AIRFLOW_PROCESS_CONTEXT=server") as caught:
            _ = ExactOnlineHook("eo_only_in_db").config
        assert "eo_only_in_db" in str(caught.value) and "isn't defined" in str(caught.value)
        # A connection that exists nowhere keeps Airflow's own error.
        with pytest.raises(AirflowNotFoundException) as missing:
            _ = ExactOnlineHook("eo_nowhere").config
        assert not isinstance(missing.value, ExactOnlineConfigError)
        # With the server context, the same DB connection is found.
        monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
        assert ExactOnlineHook("eo_only_in_db").config.client_id == "id"
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "eo_only_in_db").delete()


def test_proxy_settings_are_read_once_per_session_and_honour_no_proxy(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    with fake_hook(rows={"crm/Accounts": 1}) as (fake, hook, _):
        session = hook.session
        assert session.trust_env is False  # requests no longer scans the environment on every call
        assert session.proxies.get("http") == "http://proxy.invalid:3128"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with fake_hook(rows={"crm/Accounts": 1}) as (fake, hook, _):
        assert hook.session.proxies == {}  # the fake on 127.0.0.1 bypasses the proxy, as NO_PROXY says
        assert len(hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$select": "ID"})["results"]) == 1
        monkeypatch.setenv("NO_PROXY", "")  # changed later: the session keeps what it resolved
        assert len(hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$select": "ID"})["results"]) == 1
        assert fake.count_requests("crm/Accounts") == 2


class _RawServer:
    """A loopback HTTP/1.1 server that answers each request with the next of ``answers`` (raw bytes;
    a ``None`` answer, or running out, closes the connection) and counts connections and requests."""

    def __init__(self, answers: list[bytes | None]) -> None:
        import socket
        import threading

        self.answers = list(answers)
        self.connections = 0
        self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as stream:
                while True:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = stream.readline()
                        if not line:
                            break
                        head += line
                    if not head.endswith(b"\r\n\r\n"):
                        break
                    length = next(
                        (
                            int(h.split(b":")[1])
                            for h in head.split(b"\r\n")
                            if h.lower().startswith(b"content-length:")
                        ),
                        0,
                    )
                    stream.read(length)
                    self.requests += 1
                    answer = self.answers.pop(0) if self.answers else None
                    if answer is None:
                        break
                    conn.sendall(answer)
                    if b"Content-Length: 1000\r\n" in answer:  # a truncated body: hang up mid-body
                        break
                conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


TRUNCATED = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"d": {"results": ['
PAGE = b'{"d": {"results": [{"ID": 1, "Name": "D\\u00fcsseldorf"}]}}'


def _raw_hook(server: _RawServer, **kwargs: Any) -> ExactOnlineHook:
    from hook_support import StandInTokenManager, set_connection

    set_connection("eo_raw", host=server.url, extra={"division": FAKE_DIVISION})
    hook = ExactOnlineHook("eo_raw", clock=ScaledClock(scale=1000), timeout=10, **kwargs)
    hook.__dict__["token_manager"] = StandInTokenManager(["tok-raw-aaaaaaaa"])
    return hook


def test_the_body_is_read_in_one_go_and_the_connection_is_kept_alive():
    server = _RawServer([_ok(PAGE), _ok(PAGE)])
    try:
        hook = _raw_hook(server)
        for _ in range(2):
            assert hook.get("/api/v1/1001/raw/Things") == {"results": [{"ID": 1, "Name": "Düsseldorf"}]}
        assert server.requests == 2 and server.connections == 1  # the connection went back to the pool
    finally:
        server.close()


def test_a_body_cut_off_mid_read_is_retried_for_a_get_and_never_resent_for_a_post():
    from airflow_provider_exactonline.exceptions import ExactOnlineOutcomeUnknown, ExactOnlineServerError

    server = _RawServer([TRUNCATED, _ok(PAGE)])
    try:
        hook = _raw_hook(server, max_retries=2, backoff_initial=0.001, backoff_max=0.001)
        assert hook.get("/api/v1/1001/raw/Things") == {"results": [{"ID": 1, "Name": "Düsseldorf"}]}
        assert server.requests == 2
    finally:
        server.close()
    server = _RawServer([TRUNCATED] * 3)
    try:
        hook = _raw_hook(server, max_retries=2, backoff_initial=0.001, backoff_max=0.001)
        with pytest.raises(ExactOnlineServerError, match="Could not reach Exact Online for GET"):
            hook.get("/api/v1/1001/raw/Things")
        assert server.requests == 3
    finally:
        server.close()
    server = _RawServer([TRUNCATED, _ok(PAGE)])
    try:
        hook = _raw_hook(server, max_retries=2, backoff_initial=0.001, backoff_max=0.001)
        with pytest.raises(ExactOnlineOutcomeUnknown, match="not re-sent"):
            hook.request("POST", "/api/v1/1001/raw/Things", json={"Name": "x"})
        assert server.requests == 1
    finally:
        server.close()


def _pages(hook: ExactOnlineHook) -> list[Any]:
    """Every page of sync/CRM/Accounts as an export reads them (iter_decoded_pages)."""
    return list(
        hook.iter_decoded_pages(
            "sync/CRM/Accounts",
            lambda response, path: (response.json()["d"]["results"], response.json()["d"].get("__next")),
            select="ID,Timestamp",
            filter="Timestamp gt 1L",
        )
    )


def test_export_pages_are_read_over_one_kept_alive_connection_and_counted_as_calls():
    limiter = RecordingLimiter(ScaledClock(scale=60))
    with fake_hook(rows={"crm/Accounts": 2500}, hook_kwargs={"rate_limiter": limiter}) as (fake, hook, _store):
        pages = _pages(hook)
        hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$top": 1})  # not a page read: requests
        assert [len(page) for page in pages] == [1000, 1000, 500] and hook.page_reader.connections == 1
        assert hook.api_calls == 4 and limiter.after == [(FAKE_DIVISION, 200)] * 4
        assert [r.path.count("sync/CRM/Accounts") for r in fake.requests if "Accounts" in r.path] == [1, 1, 1, 0]


def test_a_page_read_that_fails_is_retried_like_any_get():
    with fake_hook(rows={"crm/Accounts": 2500}, hook_kwargs={"backoff_initial": 0.01}) as (fake, hook, _store):
        fake.drop_next(1, path_contains="sync/CRM/Accounts")  # half a page, then the connection is gone
        fake.fail_next(1, status=503, path_contains="sync/CRM/Accounts")
        pages = _pages(hook)
    assert sum(len(page) for page in pages) == 2500 and hook.page_reader.connections >= 2


def test_pages_go_through_requests_where_the_reader_would_not_send_the_same():
    import requests_mock

    with fake_hook(rows={"crm/Accounts": 3}) as (fake, hook, _store):
        url = f"{fake.base_url}/api/v1/{FAKE_DIVISION}/sync/CRM/Accounts"
        assert hook._page_reader_for(url) is hook.page_reader
        assert hook._page_reader_for("https://start.exactonline.nl/api/v1/1/sync/CRM/Accounts") is None
        for unencoded in (" eq 'a b'", "'Zw\u00fcrich'", "%zz"):  # requests encodes these; http.client would not
            assert hook._page_reader_for(f"{url}?$filter=Name{unencoded}") is None
        hook.session.proxies = {"http": "http://proxy.invalid:3128"}  # a proxy: requests knows how
        assert hook._page_reader_for(url) is None
        hook.session.proxies = {}
        hook.session.mount(fake.base_url, requests_mock.Adapter())  # a user's or a test's own adapter
        assert hook._page_reader_for(url) is None
