"""The connection's settings, validated once, with errors that name the field to fix."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.get_provider_info import REGIONS
from airflow_provider_exactonline.odata import DEFAULT_EXACT_TIMEZONE

CONN_TYPE = "exactonline"
DEFAULT_CONN_ID = "exactonline_default"


def base_url_from_host(host: str | None, conn_id: str) -> str:
    """``nl`` / ``start.exactonline.nl`` / ``https://start.exactonline.nl/`` / ``http://127.0.0.1:8765`` -> URL."""
    value = (host or "").strip().rstrip("/")
    if not value:
        raise ExactOnlineConfigError(
            f"Connection {conn_id!r}: 'Exact Online URL' (host) is empty; use a region "
            f"({', '.join(REGIONS)}) or a URL such as https://start.exactonline.nl"
        )
    lowered = value.lower()
    if lowered in REGIONS:
        return REGIONS[lowered]
    if "://" not in value:
        if lowered.startswith("start.exactonline."):
            value = "https://" + value
        else:
            raise ExactOnlineConfigError(
                f"Connection {conn_id!r}: unknown Exact Online region {host!r} in 'Exact Online URL' (host); "
                f"use one of {', '.join(REGIONS)} or a full URL such as https://start.exactonline.nl"
            )
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ExactOnlineConfigError(
            f"Connection {conn_id!r}: 'Exact Online URL' (host) {host!r} is not an http(s) URL"
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def parse_division(value: Any, conn_id: str, field: str = "division") -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        value = str(value)
    try:
        division = int(str(value).strip())
    except ValueError:
        division = 0
    if division <= 0:
        raise ExactOnlineConfigError(
            f"Connection {conn_id!r}: {field} must be a positive integer (the Exact division number), got {value!r}"
        )
    return division


@dataclass(frozen=True)
class ExactOnlineConfig:
    conn_id: str
    base_url: str
    client_id: str
    client_secret: str = field(repr=False)  # never printed
    division: int | None = None
    redirect_uri: str | None = None
    timezone: str = DEFAULT_EXACT_TIMEZONE

    @classmethod
    def from_connection(cls, conn: Any) -> ExactOnlineConfig:
        """Build from an Airflow Connection (ORM model or Task SDK object)."""
        conn_id = conn.conn_id
        extras = extras_of(conn)
        client_id = (conn.login or "").strip()
        if not client_id:
            raise ExactOnlineConfigError(
                f"Connection {conn_id!r}: 'Client ID' (login) is empty; copy it from Exact's App Center"
            )
        client_secret = conn.password or ""
        if not client_secret:
            raise ExactOnlineConfigError(
                f"Connection {conn_id!r}: 'Client secret' (password) is empty; copy it from Exact's App Center"
            )
        redirect_uri = extras.get("redirect_uri") or None
        if redirect_uri is not None and urlsplit(str(redirect_uri)).scheme not in ("http", "https"):
            raise ExactOnlineConfigError(
                f"Connection {conn_id!r}: redirect_uri {redirect_uri!r} must be an http(s) URL"
            )
        return cls(
            conn_id=conn_id,
            base_url=base_url_from_host(conn.host, conn_id),
            client_id=client_id,
            client_secret=client_secret,
            division=parse_division(extras.get("division"), conn_id),
            redirect_uri=redirect_uri,
            timezone=extras.get("timezone") or DEFAULT_EXACT_TIMEZONE,
        )

    @property
    def auth_url(self) -> str:
        return f"{self.base_url}/api/oauth2/auth"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/api/oauth2/token"

    def api_url(self, path: str, division: int | None = None) -> str:
        """``crm/Accounts`` -> ``{base}/api/v1/{division}/crm/Accounts``; ``current/Me`` has no division."""
        if path.startswith(("http://", "https://")):
            return path
        path = path.lstrip("/")
        if path.startswith("api/"):
            return f"{self.base_url}/{path}"
        if path.lower().startswith("current/"):
            return f"{self.base_url}/api/v1/{path}"
        resolved = division if division is not None else self.division
        if resolved is None:
            raise ExactOnlineConfigError(
                f"Connection {self.conn_id!r} has no default division and none was given; set extra "
                f"'division' on the connection or pass division=..."
            )
        return f"{self.base_url}/api/v1/{resolved}/{path}"


def extras_of(conn: Any) -> dict[str, Any]:
    """The connection's extras as a dict, with a clear error if they are not a JSON object."""
    raw = getattr(conn, "extra", None)
    if not raw:
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise ExactOnlineConfigError(f"Connection {conn.conn_id!r}: extra is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ExactOnlineConfigError(f"Connection {conn.conn_id!r}: extra must be a JSON object")
    return value
