"""The CLI's one-shot listener on a loopback redirect URI (``http://127.0.0.1:8765/callback``).

Exact redirects the browser here with ``?code=...&state=...``. The listener hands the query to the CLI and
keeps the browser waiting until the CLI has exchanged the code and stored the tokens, then answers with
the real outcome: "connected", or the error with its fix (the same text the terminal prints). So the
page never says "received" for a code Exact then refuses.
"""

from __future__ import annotations

import html
import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import urlsplit

#: How long the browser's request waits for the CLI's outcome (the exchange plus storing the tokens).
OUTCOME_WAIT_S = 120.0


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def outcome_page(ok: bool, title: str, text: str) -> bytes:
    colour = "#2e7d32" if ok else "#c62828"
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        "<body style='font-family:system-ui,sans-serif;margin:2rem;max-width:48rem'>"
        f"<h1 style='color:{colour}'>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
        "<p style='color:#6b7280'>The terminal running <code>airflow-exactonline authorize</code> says the same.</p>"
        "</body></html>"
    ).encode()


class RedirectCatcher:
    """Listen on ``redirect_uri``; :meth:`wait` returns the first matching query, :meth:`finish` answers it.

    Raises ``OSError`` when the port cannot be bound.
    """

    def __init__(self, redirect_uri: str, outcome_wait: float = OUTCOME_WAIT_S) -> None:
        parts = urlsplit(redirect_uri)
        self.path = parts.path or "/"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 80
        self.query: str | None = None
        self.outcome_wait = outcome_wait
        self._arrived = threading.Event()
        self._answered = threading.Event()
        self._outcome = (False, "Authorization not finished", "The terminal stopped before finishing; see there.")
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                request = urlsplit(self.path)
                if request.path.rstrip("/") != catcher.path.rstrip("/"):
                    self.send_error(404, "Not the Exact Online redirect URI")
                    return
                if catcher.query is None:
                    catcher.query = request.query
                    catcher._arrived.set()
                if not catcher._answered.wait(catcher.outcome_wait):
                    body = outcome_page(False, "Still working", "The code exchange takes long; see the terminal.")
                else:
                    body = outcome_page(*catcher._outcome)
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # keep codes out of the terminal
                return

        server_class = HTTPServer
        if ":" in host:

            class _V6(HTTPServer):
                address_family = socket.AF_INET6

            server_class = _V6
        self.server = server_class((host, port), Handler)
        self.server.timeout = 0.5
        self._thread = threading.Thread(target=self._serve, name="exactonline-redirect", daemon=True)

    def _serve(self) -> None:
        while not self._arrived.is_set():
            self.server.handle_request()

    def start(self) -> None:
        self._thread.start()

    def wait(self, timeout: float) -> str | None:
        self._arrived.wait(timeout)
        return self.query

    def finish(self, ok: bool, title: str, text: str) -> None:
        """The outcome the waiting browser gets (first call wins)."""
        if not self._answered.is_set():
            self._outcome = (ok, title, text)
            self._answered.set()

    def close(self) -> None:
        self.finish(False, "Authorization not finished", "The terminal stopped before finishing; see there.")
        self._arrived.set()
        self._thread.join(timeout=5)
        self.server.server_close()
