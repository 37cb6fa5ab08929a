"""Verify an Exact Online webhook callback before believing a word of it.

Exact signs each callback as ``HashCode`` = HMAC-SHA256 over the **raw** ``Content`` JSON text (as sent, not
re-serialized), keyed with the app's webhook secret, in uppercase hex. :func:`verify` refuses anything
oversized, unsigned, forged or replayed with a typed error whose ``http_status`` a receiver can answer with.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError, ExactOnlineError
from airflow_provider_exactonline.webhooks.hashcode import sign

#: Exact's payloads are a few hundred bytes; anything much larger is not Exact.
DEFAULT_MAX_BYTES = 64 * 1024


class WebhookRefused(ExactOnlineError):
    """A callback that must not be acted on; ``http_status`` is the answer a receiver should give."""

    http_status = 400


class WebhookMalformed(WebhookRefused):
    """The body is not a JSON object with a ``Content`` object."""


class WebhookUnsigned(WebhookRefused):
    """The body carries no ``HashCode``."""

    http_status = 401


class WebhookForged(WebhookRefused):
    """The ``HashCode`` does not match the ``Content`` under the configured secret."""

    http_status = 401


class WebhookTooLarge(WebhookRefused):
    """The body is larger than ``max_bytes``; refused before parsing."""

    http_status = 413


class WebhookReplayed(WebhookRefused):
    """A genuine callback already accepted within the replay window."""

    http_status = 409


class ReplayGuard:
    """Remembers the signatures accepted in the last ``window`` seconds, at most ``max_entries`` of them.

    Exact's payload has no nonce, so a replay is the same signed ``Content`` again. Two genuine changes of
    the same record within the window also look alike; dropping the second is harmless because an event
    only says "this key changed" and polling stays the source of truth.
    """

    def __init__(
        self, window: float = 300.0, max_entries: int = 10_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window <= 0 or max_entries <= 0:
            raise ExactOnlineConfigError("ReplayGuard needs window > 0 and max_entries > 0")
        self.window = window
        self.max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(self, signature: str) -> None:
        """Raise :class:`WebhookReplayed` if ``signature`` was seen within the window, else remember it."""
        now = self._clock()
        with self._lock:
            while self._seen:
                oldest, at = next(iter(self._seen.items()))
                if now - at < self.window and len(self._seen) < self.max_entries:
                    break
                del self._seen[oldest]
            if signature in self._seen:
                raise WebhookReplayed(
                    f"Webhook callback refused: the same signed content was accepted {now - self._seen[signature]:.0f}"
                    " s ago (replay)"
                )
            self._seen[signature] = now


def is_validation_request(raw_body: bytes) -> bool:
    """Exact's check after a subscription is created: an empty POST that the callback must accept (2xx)."""
    return not raw_body.strip()


def verify(
    raw_body: bytes,
    secret: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    seen: ReplayGuard | None = None,
) -> dict[str, Any]:
    """Return the callback's ``Content`` if ``raw_body`` is genuine; raise a :class:`WebhookRefused` otherwise.

    ``seen`` (shared by all requests of a receiver) refuses replays; the signature is checked first, so
    forged bodies never enter it.
    """
    content, signature = verify_signature(raw_body, secret, max_bytes=max_bytes)
    if seen is not None:
        seen.check_and_remember(signature)
    return content


def verify_signature(raw_body: bytes, secret: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[dict[str, Any], str]:
    """:func:`verify` without a replay check: ``(content, signature)``, the signature being the key a
    receiver's own (e.g. database-backed) replay guard remembers."""
    if not secret:
        raise ExactOnlineConfigError(
            "No webhook secret configured: copy the app's 'Webhook secret' from the Exact App Center into the"
            " connection's extra 'webhook_secret'"
        )
    if len(raw_body) > max_bytes:
        raise WebhookTooLarge(f"Webhook callback refused: {len(raw_body)} bytes is over the limit of {max_bytes}")
    raw = _top_level_raw_values(raw_body)
    if "Content" not in raw:
        raise WebhookMalformed("Webhook callback refused: the JSON object has no 'Content'")
    provided = raw.get("HashCode")
    try:
        hash_code = json.loads(provided) if provided is not None else None
    except ValueError:  # pragma: no cover - _top_level_raw_values only returns valid JSON values
        hash_code = None
    if not isinstance(hash_code, str) or not hash_code:
        raise WebhookUnsigned("Webhook callback refused: it carries no 'HashCode' signature")
    raw_content = raw["Content"].encode("utf-8")
    expected = sign(raw_content, secret)
    if not hmac.compare_digest(expected.encode("ascii"), hash_code.upper().encode("utf-8", "replace")):
        raise WebhookForged(
            "Webhook callback refused: 'HashCode' does not match the content (forged, altered, or signed with"
            " another secret; check the connection's 'webhook_secret')"
        )
    content = json.loads(raw_content)
    if not isinstance(content, dict):
        raise WebhookMalformed("Webhook callback refused: 'Content' is not a JSON object")
    return content, expected


def _top_level_raw_values(raw_body: bytes) -> dict[str, str]:
    """The raw JSON text of each member of the top-level object (the signature covers ``Content`` as sent)."""
    try:
        text = raw_body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookMalformed("Webhook callback refused: the body is not UTF-8") from None
    decoder = json.JSONDecoder()
    values: dict[str, str] = {}
    try:
        pos = _skip_ws(text, 0)
        if text[pos : pos + 1] != "{":
            raise ValueError("not an object")
        pos = _skip_ws(text, pos + 1)
        if text[pos : pos + 1] == "}":
            return values
        while True:
            key, pos = decoder.raw_decode(text, pos)
            pos = _skip_ws(text, pos)
            if not isinstance(key, str) or text[pos : pos + 1] != ":":
                raise ValueError("bad member")
            start = _skip_ws(text, pos + 1)
            _value, pos = decoder.raw_decode(text, start)
            values[key] = text[start:pos]
            pos = _skip_ws(text, pos)
            if text[pos : pos + 1] == "}":
                if text[pos + 1 :].strip():
                    raise ValueError("trailing data")
                return values
            if text[pos : pos + 1] != ",":
                raise ValueError("expected ','")
            pos = _skip_ws(text, pos + 1)
    except ValueError:
        raise WebhookMalformed("Webhook callback refused: the body is not a JSON object") from None


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
