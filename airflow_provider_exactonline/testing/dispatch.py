"""Request dispatch of the fake: faults first, then admin, OAuth or the API (token, limits, resource)."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from airflow_provider_exactonline.testing.admin import admin_response
from airflow_provider_exactonline.testing.http import ApiError, Handler, Response, error_response, html_page, json_bytes
from airflow_provider_exactonline.testing.limits import endpoint_key
from airflow_provider_exactonline.testing.odata_query import FilterError

if TYPE_CHECKING:
    from airflow_provider_exactonline.testing.server import FakeExactOnline


def serve(fake: FakeExactOnline, handler: Handler, body: bytes) -> None:
    method = handler.command
    parts = urlsplit(handler.path)
    path = parts.path
    headers = {k: v for k, v in handler.headers.items()}
    headers_ci = {k.lower(): v for k, v in headers.items()}
    is_admin = path.startswith("/_fake/")
    fault = None if is_admin else fake._faults.take(handler.path)
    if fault is not None and fault.kind == "drop" and fault.when == "before_response":
        fake._log(method, path, parts.query, 0, None)
        handler.drop()
        return
    if fault is not None and fault.kind in ("fail", "html"):
        response = (
            html_page(fault.status, "Exact Online", "An error occurred. Please try again later.")
            if fault.kind == "html"
            else error_response(
                fault.status, "Service Unavailable" if fault.status == 503 else "Internal error", headers_ci
            )
        )
        fake._log(method, path, parts.query, response.status, None)
        handler.respond(response)
        return
    if not is_admin:
        fixed, jitter = fake._faults.latency
        if fixed or jitter:
            time.sleep(fixed + random.uniform(0, jitter))
    division: int | None = None
    try:
        lowered = path.lower()
        if is_admin:
            response = admin_response(fake, method, path, parts.query, body)
        elif lowered == "/api/oauth2/auth":
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            if method == "POST":
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            response = fake._oauth.auth_page(method, params)
        elif lowered == "/api/oauth2/token":
            if method != "POST":
                response = Response(405, json_bytes({"error": "invalid_request"}), "application/json")
            else:
                response = fake._oauth.token_endpoint(headers, body)
                if fake._faults.token_delay:
                    time.sleep(fake._faults.token_delay)
        elif lowered.startswith("/api/v1/"):
            response, division = _api(fake, method, path, parts.query, headers_ci, body)
        else:
            response = html_page(404, "Not found", "The resource cannot be found.")
    except Exception as err:  # a bug in the fake: answer 500 and keep serving
        response = error_response(500, f"Fake server error: {type(err).__name__}: {err}", headers_ci)
    if not is_admin:
        fake._log(method, path, parts.query, response.status, division)
    fake._write_listeners.emit()
    if fault is not None and fault.kind == "drop":
        handler.respond(response, truncate=True)
    else:
        handler.respond(response)


def _api(
    fake: FakeExactOnline, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
) -> tuple[Response, int | None]:
    now = fake.clock.time()
    auth = headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    with fake._lock:
        expires = fake._oauth.access_tokens.get(token) if token else None
        if expires is None or now >= expires:
            response = error_response(401, "Unauthorized", headers)
            response.headers.append(("WWW-Authenticate", 'Bearer error="invalid_token"'))
            return response, None
        segments = [s for s in path[len("/api/v1/") :].split("/") if s]
        if segments and segments[0].lower() == "beta":
            segments = segments[1:]
        if len(segments) >= 2 and segments[0].lower() == "current":
            division = fake.current_division
            resource = "/".join(segments)
        else:
            try:
                division = int(segments[0]) if segments else -1
            except ValueError:
                return error_response(404, "Not found", headers), None
            if division not in fake._data:
                return error_response(403, "Forbidden: no access to this division", headers), None
            resource = "/".join(segments[1:])
        budget_key = (fake.client_id, division, endpoint_key(resource))
        state, refusal = fake._limits.admit(budget_key, now, headers)
        if refusal is not None:
            return refusal, division
        try:
            response = fake._api_resources.resource(method, division, resource, query, headers, body, now)
        except ApiError as err:
            response = error_response(err.status, err.message, headers, err.reason)
        except FilterError as err:
            response = error_response(400, str(err), headers)
        response.headers += fake._limits.headers(state)
        fake._limits.record_outcome(budget_key, response.status, now)
        return response, division
