"""The fake's HTTP plumbing: the request handler, the response value and Exact's response envelopes."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape as xml_escape

if TYPE_CHECKING:
    from airflow_provider_exactonline.testing.server import FakeExactOnline


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


class ApiError(Exception):
    """Raised while serving an API call; answered as Exact's error envelope with ``status``."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeExactOnline/1.0"

    def version_string(self) -> str:
        return "FakeExactOnline/1.0"

    timeout = 120
    fake: FakeExactOnline

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):  # no Nagle delay on keep-alive connections
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.fake._lock:
            self.fake._connections.discard(self.connection)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        self.fake._serve(self, body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def respond(self, response: Response, truncate: bool = False) -> None:
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            body = response.body[: len(response.body) // 2] if truncate else response.body
            # Headers and body in one write (end_headers() would flush the headers on their own).
            self._headers_buffer.append(b"\r\n" + body)  # type: ignore[attr-defined]
            self.flush_headers()
            if truncate:
                self.drop()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def utc_text(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def wants_json(headers: Mapping[str, str]) -> bool:
    return "application/json" in headers.get("accept", "").lower()


def html_page(status: int, title: str, message: str) -> Response:
    body = (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return Response(status, body.encode(), "text/html; charset=utf-8")


def json_response(status: int, value: Any) -> Response:
    return Response(status, json_bytes(value), "application/json")


def text_response(value: str) -> Response:
    return Response(200, value.encode(), "text/plain; charset=utf-8")


def error_response(status: int, message: str, headers_ci: Mapping[str, str], reason: str | None = None) -> Response:
    """Exact's error envelope, JSON or XML as the request's Accept header asks."""
    extra = [("Reason", reason)] if reason else []
    if wants_json(headers_ci):
        body = json_bytes({"error": {"code": "", "message": {"lang": "", "value": message}}})
        return Response(status, body, "application/json; charset=utf-8", extra)
    xml = (
        '<?xml version="1.0" encoding="utf-8" standalone="yes"?>'
        '<error xmlns="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">'
        f'<code></code><message xml:lang="">{xml_escape(message)}</message></error>'
    )
    return Response(status, xml.encode(), "application/xml; charset=utf-8", extra)
