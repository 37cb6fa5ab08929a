"""The webhook receiver: a FastAPI app the provider's plugin mounts on the api-server at ``/exactonline-webhooks``.

``POST /exactonline-webhooks/{conn_id}`` is the callback URL to subscribe (behind HTTPS). Exact cannot log
in to Airflow, so the ``HashCode`` signature is the only credential: every request is

1. read up to :data:`~.signature.DEFAULT_MAX_BYTES` (the ``Content-Length`` is checked first, and reading
   stops at the limit) -> 413;
2. matched to the ``exactonline`` connection ``conn_id`` -> 404 if there is none;
3. answered 200 if it is Exact's empty validation POST (nothing recorded);
4. verified with the connection's extra ``webhook_secret`` in constant time -> 400/401, 503 without secret;
5. checked against the signatures accepted in the last ``[exactonline] webhook_replay_window`` seconds,
   kept in the metadata DB for all workers (:mod:`.ledger`) -> 409;
6. queued as a pending change for ``exactonline-change://{conn_id}/{Division}/{Topic}`` -> 202.

Refusals record nothing. Pending changes become Asset events (topic, action, key... in the extra) once
no callback came for ``[exactonline] webhook_debounce`` seconds (default 5; at the latest after
``webhook_max_delay``, default 60), all in one transaction, so a burst starts one DAG run.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_provider_exactonline.config import CONN_TYPE, extras_of
from airflow_provider_exactonline.exceptions import ExactOnlineError
from airflow_provider_exactonline.webhooks import ledger
from airflow_provider_exactonline.webhooks.assets import change_asset_uri
from airflow_provider_exactonline.webhooks.signature import (
    DEFAULT_MAX_BYTES,
    WebhookMalformed,
    WebhookRefused,
    WebhookTooLarge,
    is_validation_request,
    verify_signature,
)

log = logging.getLogger(__name__)

URL_PREFIX = "/exactonline-webhooks"
_CONN_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_TOPIC_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,99}$")


class WebhookNotConfigured(WebhookRefused):
    """The connection exists but has no ``webhook_secret``: nothing can be verified."""

    http_status = 503


class WebhookUnknownConnection(WebhookRefused):
    http_status = 404


@dataclass(frozen=True)
class ReceiverSettings:
    """``[exactonline] webhook_debounce`` / ``webhook_max_delay`` / ``webhook_replay_window`` (seconds)."""

    debounce: float = 5.0
    max_delay: float = 60.0
    replay_window: float = 300.0
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_airflow_config(cls) -> ReceiverSettings:
        from airflow.configuration import conf

        def seconds(key: str, default: float) -> float:
            raw = conf.get("exactonline", key, fallback=None)
            try:
                value = float(raw) if raw not in (None, "") else default
            except ValueError:
                value = -1.0
            if value < 0:
                raise ExactOnlineError(
                    f"[exactonline] {key} = {raw!r} must be a number of seconds >= 0"
                    f" (AIRFLOW__EXACTONLINE__{key.upper()})"
                )
            return value

        return cls(
            debounce=seconds("webhook_debounce", cls.debounce),
            max_delay=max(seconds("webhook_max_delay", cls.max_delay), 0.001),
            replay_window=max(seconds("webhook_replay_window", cls.replay_window), 0.001),
        )


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The body, refusing (413) before reading more than ``max_bytes``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise WebhookTooLarge(f"Webhook callback refused: Content-Length {declared} is over the limit of {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise WebhookTooLarge(f"Webhook callback refused: the body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def load_secret(conn_id: str) -> str:
    """The connection's ``webhook_secret`` (404 if no such ``exactonline`` connection, 503 if it has none)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        raise WebhookUnknownConnection(f"Webhook callback refused: no connection {conn_id!r}") from None
    if conn.conn_type != CONN_TYPE:
        raise WebhookUnknownConnection(f"Webhook callback refused: {conn_id!r} is not an Exact Online connection")
    secret = str(extras_of(conn).get("webhook_secret") or "")
    if not secret:
        raise WebhookNotConfigured(
            f"Webhook receiver for {conn_id!r} is not configured: copy the app's 'Webhook secret' from the Exact"
            " App Center into the connection's extra 'webhook_secret'"
        )
    return secret


def change_of(conn_id: str, content: dict[str, Any]) -> ledger.PendingChange:
    """The pending change a verified ``Content`` announces (400 if its fields are not Exact's)."""
    topic, division = content.get("Topic"), content.get("Division")
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic):
        raise WebhookMalformed("Webhook callback refused: 'Content.Topic' is not a topic name")
    if isinstance(division, bool) or not isinstance(division, int) or division <= 0:
        raise WebhookMalformed("Webhook callback refused: 'Content.Division' is not a division number")
    extra = {
        "source": "webhook",
        "exactonline_conn_id": conn_id,
        "topic": topic,
        "division": division,
        "action": str(content.get("Action") or "")[:20],
        "key": str(content.get("Key") or "")[:100],
    }
    return ledger.PendingChange(change_asset_uri(conn_id, division, topic), extra)


class Receiver:
    """The receiver's logic, separate from FastAPI so the flush can be driven directly."""

    def __init__(self, settings: ReceiverSettings | None = None, *, clock: Any = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._timers: set[asyncio.Task[None]] = set()

    @property
    def settings(self) -> ReceiverSettings:
        if self._settings is None:
            self._settings = ReceiverSettings.from_airflow_config()
        return self._settings

    def accept(self, conn_id: str, raw_body: bytes) -> dict[str, Any]:
        """Verify, replay-check and queue one callback (blocking: runs in a worker thread)."""
        from airflow.utils.session import create_session

        secret = load_secret(conn_id)
        if is_validation_request(raw_body):
            return {"status": "validated"}
        content, signature = verify_signature(raw_body, secret, max_bytes=self.settings.max_bytes)
        change = change_of(conn_id, content)
        now = self._clock()
        with create_session() as session:
            ledger.ensure_tables(session.get_bind())
            ledger.remember(session, signature, now=now, window=self.settings.replay_window)
            ledger.add_pending(session, change, now=now)
        if self.settings.debounce == 0:
            self.flush()
        return {"status": "accepted", "asset": change.asset_uri}

    def flush(self) -> int:
        """Turn a settled burst of pending changes into Asset events; returns how many were recorded."""
        from airflow.utils.session import create_session

        now = self._clock()
        with create_session() as session:
            ledger.ensure_tables(session.get_bind())
            changes = ledger.take_ready(
                session, now=now, debounce=self.settings.debounce, max_delay=self.settings.max_delay
            )
            recorded = ledger.record_asset_events(session, changes) if changes else 0
            ledger.prune_seen(session, now=now, window=self.settings.replay_window)
        if changes:
            log.info("Exact Online webhooks: %d change(s) -> %d Asset event(s)", len(changes), recorded)
        return recorded

    def schedule_flush(self) -> None:
        """Flush once the burst may have settled (each accepted callback schedules one; the last one wins)."""
        if self.settings.debounce == 0:
            return

        async def later() -> None:
            await asyncio.sleep(self.settings.debounce + 0.05)
            try:
                await run_in_threadpool(self.flush)
            except Exception:
                log.exception("Exact Online webhooks: flushing pending changes failed (they stay queued)")

        task = asyncio.get_running_loop().create_task(later())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)


def create_app(receiver: Receiver | None = None) -> FastAPI:
    receiver = receiver or Receiver()
    app = FastAPI(title="Exact Online webhooks", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/{conn_id}")
    async def callback(conn_id: str, request: Request) -> JSONResponse:
        try:
            if not _CONN_ID_RE.match(conn_id):
                raise WebhookUnknownConnection("Webhook callback refused: not a connection id")
            body = await read_limited(request, receiver.settings.max_bytes)
            result = await run_in_threadpool(receiver.accept, conn_id, body)
        except WebhookRefused as err:
            log.warning("Exact Online webhook for %r refused (%s): %s", conn_id, err.http_status, err)
            return JSONResponse({"status": "refused", "detail": str(err)}, status_code=err.http_status)
        if result["status"] == "accepted":
            receiver.schedule_flush()
            return JSONResponse(result, status_code=202)
        return JSONResponse(result, status_code=200)

    return app
