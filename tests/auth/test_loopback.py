"""The CLI's loopback listener answers the browser with the outcome of the code exchange, not before."""

from __future__ import annotations

import socket
import threading
import time

import requests

from airflow_provider_exactonline.auth.loopback import RedirectCatcher, is_loopback


def _redirect_uri() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/callback"


def _get(url: str, into: dict[str, requests.Response]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.setdefault("response", requests.get(url, timeout=30)))
    thread.start()
    return thread


def test_the_browser_waits_for_the_outcome() -> None:
    redirect = _redirect_uri()
    catcher = RedirectCatcher(redirect)
    catcher.start()
    got: dict[str, requests.Response] = {}
    try:
        browser = _get(f"{redirect}?code=abc&state=xyz", got)
        assert catcher.wait(10) == "code=abc&state=xyz"
        time.sleep(0.3)
        assert "response" not in got  # no page while the code is being exchanged
        catcher.finish(False, "Authorization failed", "Exact said <invalid_client>: put the secret in Password.")
        catcher.finish(True, "Connected to Exact Online", "ignored: the first outcome wins")
        browser.join(10)
    finally:
        catcher.close()
    page = got["response"].text
    assert "Authorization failed" in page and "Exact said &lt;invalid_client&gt;" in page and "Connected" not in page


def test_an_unfinished_run_says_so_and_other_paths_are_404() -> None:
    redirect = _redirect_uri()
    catcher = RedirectCatcher(redirect)
    catcher.start()
    got: dict[str, requests.Response] = {}
    try:
        assert requests.get(redirect.replace("/callback", "/favicon.ico"), timeout=10).status_code == 404
        browser = _get(f"{redirect}?error=access_denied&state=xyz", got)
        assert catcher.wait(10) == "error=access_denied&state=xyz"
    finally:
        catcher.close()  # e.g. the terminal was interrupted
    browser.join(10)
    assert "Authorization not finished" in got["response"].text


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("airflow.example.com") and not is_loopback(None)
