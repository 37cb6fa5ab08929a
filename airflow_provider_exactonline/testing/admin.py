"""The fake's admin endpoints (``/_fake/...``): for the CLI server, where a test cannot call methods."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from airflow_provider_exactonline.testing.http import Response, json_response

if TYPE_CHECKING:
    from airflow_provider_exactonline.testing.server import FakeExactOnline


def admin_response(fake: FakeExactOnline, method: str, path: str, query: str, body: bytes) -> Response:
    name = path[len("/_fake/") :].strip("/").lower()
    params = dict(parse_qsl(query))
    try:
        payload = json.loads(body.decode() or "{}") if body else {}
        if name == "stats" and method == "GET":
            return json_response(200, fake.stats())
        if name == "issue_tokens" and method == "POST":
            return json_response(200, fake.issue_tokens())
        if name == "reset_counters" and method == "POST":
            fake.reset_counters()
            return json_response(200, {"ok": True})
        if name == "records" and method == "GET":
            limit = int(params.get("limit", "1000"))
            rows = []
            for row in fake.records(params["entity"], int(params["division"]) if "division" in params else None):
                rows.append(row)
                if len(rows) >= limit:
                    break
            return json_response(200, {"results": rows})
        if name == "mutate" and method == "POST":
            op = payload.get("op")
            entity = payload["entity"]
            division = payload.get("division")
            if op == "create":
                return json_response(201, fake.create_record(entity, division, payload.get("data") or {}))
            if op == "update":
                return json_response(200, fake.update_record(entity, division, payload["key"], payload.get("data")))
            if op == "delete":
                return json_response(200, {"deleted": fake.delete_record(entity, division, payload["key"])})
            return json_response(400, {"error": "op must be create, update or delete"})
        if name == "faults" and method == "POST":
            if "latency" in payload:
                fake.set_latency(**payload["latency"])
            if "fail_next" in payload:
                fake.fail_next(**payload["fail_next"])
            if "drop_next" in payload:
                fake.drop_next(**payload["drop_next"])
            if "html_error_next" in payload:
                fake.html_error_next(**payload["html_error_next"])
            if "token_delay" in payload:
                fake.set_token_delay(float(payload["token_delay"]))
            if payload.get("clear"):
                fake.clear_faults()
            return json_response(200, {"ok": True})
    except (KeyError, TypeError, ValueError) as err:
        return json_response(400, {"error": f"{type(err).__name__}: {err}"})
    return json_response(404, {"error": f"unknown admin endpoint {method} /_fake/{name}"})
