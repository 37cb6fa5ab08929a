"""Exact's webhook ``HashCode`` (no Airflow imports, so the fake Exact can sign without Airflow)."""

from __future__ import annotations

import hashlib
import hmac


def sign(raw_content: bytes, secret: str) -> str:
    """HMAC-SHA256 of ``raw_content`` (the raw ``Content`` JSON text) keyed with ``secret``, uppercase hex."""
    return hmac.new(secret.encode("utf-8"), raw_content, hashlib.sha256).hexdigest().upper()
