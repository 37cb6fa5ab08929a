"""ExactOnlineChangeTrigger: an event trigger (``AssetWatcher``) that fires when an entity changed in Exact.

Webhooks can be lost and have no heartbeat; this trigger is the cheap safety net. Every ``interval``
seconds it makes ONE call to the entity's ``sync/`` endpoint: ``$select=Timestamp`` and
``$filter=Timestamp gt {position}L``. Nothing changed -> an empty answer, no event. Something changed -> one
``TriggerEvent`` (the Asset event), and the position moves to the newest ``Timestamp`` seen, so one change
fires once. The position starts at ``since``, or at the mirror's watermark (``watermark_id``; read
before every poll, so changes the mirror already loaded never fire), and survives triggerer restarts in
the Asset's state store (Airflow 3.3).

The calls stay within a budget: at most ``max_calls_per_hour`` (default: ``budget_share`` of the
division's daily limit, learned from Exact's ``X-RateLimit-Limit``, spread over 24 hours) in any sliding
hour, never faster than ``interval``. HTTP is async (httpx) and tokens come from the hook's token manager
in a worker thread, as in :class:`~airflow_provider_exactonline.triggers.exactonline.ExactOnlineTrigger`.
Errors never end the watcher: 4xx (which count toward Exact's error block) pause it for an hour, 5xx and
transport errors back off.

Modelled on the http provider's ``HttpEventTrigger`` (poll, yield when the check passes, keep polling).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_exactonline.config import DEFAULT_CONN_ID
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.webhooks.assets import topic_of

#: Exact's default daily limit per division, until a response says otherwise.
DEFAULT_DAILY_LIMIT = 5000
#: How long a 4xx (or a token that needs re-authorization) pauses the watcher.
ERROR_PAUSE = 3600.0
STATE_KEY = "exactonline_change_position"


class ExactOnlineChangeTrigger(BaseEventTrigger):
    """Fire an Asset event whenever ``entity`` changed in ``division`` (see the module docstring).

    :param entity: a catalog entity with a ``sync/`` endpoint (``crm/Accounts``) or a ``sync/...`` path.
    :param division: the division to watch.
    :param interval: seconds between polls (at least 1).
    :param max_calls_per_hour: hard cap on this trigger's API calls in any hour.
    :param budget_share: without ``max_calls_per_hour``: the share (0-1] of the daily limit to spend.
    :param since: the Timestamp to start after (default: the mirror's watermark, else 0).
    :param watermark_id: the mirror's watermark id (``{mirror_dag_id}.mirror``) to start from and follow.
    """

    def __init__(
        self,
        exactonline_conn_id: str = DEFAULT_CONN_ID,
        *,
        entity: str,
        division: int,
        interval: float = 300.0,
        max_calls_per_hour: float | None = None,
        budget_share: float = 0.02,
        since: int | None = None,
        watermark_id: str | None = None,
    ) -> None:
        super().__init__()
        if float(interval) < 1:
            raise ExactOnlineConfigError(f"interval={interval!r}: poll at most once a second (interval >= 1)")
        if max_calls_per_hour is not None and float(max_calls_per_hour) <= 0:
            raise ExactOnlineConfigError(f"max_calls_per_hour={max_calls_per_hour!r} must be > 0")
        if not 0 < float(budget_share) <= 1:
            raise ExactOnlineConfigError(f"budget_share={budget_share!r} must be in (0, 1], e.g. 0.02 for 2%")
        self.exactonline_conn_id = exactonline_conn_id
        self.entity = entity
        self.division = int(division)
        self.interval = float(interval)
        self.max_calls_per_hour = None if max_calls_per_hour is None else float(max_calls_per_hour)
        self.budget_share = float(budget_share)
        self.since = None if since is None else int(since)
        self.watermark_id = watermark_id
        self.sync_path = _sync_path(entity)
        self._calls: deque[float] = deque()
        self._daily_limit = DEFAULT_DAILY_LIMIT

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "exactonline_conn_id": self.exactonline_conn_id,
                "entity": self.entity,
                "division": self.division,
                "interval": self.interval,
                "max_calls_per_hour": self.max_calls_per_hour,
                "budget_share": self.budget_share,
                "since": self.since,
                "watermark_id": self.watermark_id,
            },
        )

    # ------------------------------------------------------------------------------------------ budget

    @property
    def calls_per_hour(self) -> float:
        """The cap in force: ``max_calls_per_hour``, else ``budget_share`` of the daily limit over 24 h."""
        if self.max_calls_per_hour is not None:
            return self.max_calls_per_hour
        return max(1.0, self.budget_share * self._daily_limit / 24)

    def seconds_until_allowed(self, now: float) -> float:
        """0 when a call now stays within the cap (in any sliding hour) and ``interval``; else how long to wait."""
        while self._calls and now - self._calls[0] >= 3600:
            self._calls.popleft()
        wait = 0.0
        if self._calls:
            wait = max(wait, self._calls[-1] + max(self.interval, 3600 / self.calls_per_hour) - now)
        if len(self._calls) >= int(self.calls_per_hour):
            wait = max(wait, self._calls[0] + 3600 - now)
        return max(0.0, wait)

    def note_call(self, now: float) -> None:
        self._calls.append(now)

    # ------------------------------------------------------------------------------------------ position

    def _mirror_watermark(self) -> int | None:
        if not self.watermark_id:
            return None
        from airflow_provider_exactonline.operators.watermark import VariableWatermarkStore, watermark_key

        mark = VariableWatermarkStore().get(
            watermark_key(self.exactonline_conn_id, self.entity, self.division, self.watermark_id)
        )
        return None if mark is None else int(mark.timestamp)

    async def _stored_position(self) -> int | None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return None
        try:
            value = await store.aget(self._state_key())
        except Exception as err:  # several Assets share this trigger, or no state store: keep it in memory
            self.log.info("Exact Online change trigger: no asset state store (%s)", type(err).__name__)
            return None
        return int(value) if isinstance(value, (int, float, str)) and str(value).isdigit() else None

    async def _store_position(self, position: int) -> None:
        store = getattr(self, "asset_state_store", None)
        if store is not None:
            try:
                await store.aset(self._state_key(), position)
            except Exception as err:
                self.log.info("Exact Online change trigger: position not stored (%s)", type(err).__name__)

    def _state_key(self) -> str:
        return f"{STATE_KEY}.{self.exactonline_conn_id}.{self.division}.{self.sync_path}"

    # ------------------------------------------------------------------------------------------ run

    def _token_manager_and_url(self) -> tuple[Any, str]:
        from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

        hook = ExactOnlineHook(self.exactonline_conn_id, division=self.division)
        return hook.token_manager, hook.config.api_url(self.sync_path, self.division)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx

        from airflow_provider_exactonline.ratelimit import RateLimitState

        while True:
            try:  # reading the connection is blocking (a sync SDK call): off the shared event loop
                token_manager, url = await asyncio.to_thread(self._token_manager_and_url)
                break
            except Exception as err:  # a missing/misconfigured connection: retry later, keep the watcher
                self.log.error("Exact Online change trigger set-up failed (retrying in an hour): %s", err)
                await asyncio.sleep(ERROR_PAUSE)
        position = await self._stored_position()
        if position is None:
            position = self.since
        rate = RateLimitState()
        failures = 0
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=False) as client:
            while True:
                wait = self.seconds_until_allowed(time.time())
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                mirrored = await asyncio.to_thread(self._mirror_watermark)
                since = max(p for p in (position, mirrored, 0) if p is not None)
                try:
                    response = await self._poll(client, url, token_manager, since)
                except httpx.TransportError as err:
                    failures += 1
                    self.log.warning("Exact Online change trigger: Exact unreachable (%s)", type(err).__name__)
                    await asyncio.sleep(min(self.interval * 2**failures, ERROR_PAUSE))
                    continue
                except Exception as err:  # token needs re-authorization: do not hammer Exact
                    self.log.error("Exact Online change trigger paused for an hour: %s", err)
                    await asyncio.sleep(ERROR_PAUSE)
                    continue
                rate.update_from_headers(response.headers)
                if rate.daily_limit:
                    self._daily_limit = rate.daily_limit
                status = response.status_code
                if status == 429 or status >= 500:
                    failures += 1
                    reset = rate.daily_reset if status == 429 and rate.daily_exhausted(time.time()) else None
                    await asyncio.sleep(
                        max(reset - time.time(), 1.0) if reset else min(self.interval * 2**failures, ERROR_PAUSE)
                    )
                    continue
                if status >= 300:
                    self.log.error(
                        "Exact Online change trigger: HTTP %s for GET %s; paused for an hour (each 4xx counts"
                        " toward Exact's error block)",
                        status,
                        self.sync_path,
                    )
                    await asyncio.sleep(ERROR_PAUSE)
                    continue
                failures = 0
                stamps = _timestamps(response)
                if not stamps or max(stamps) <= since:
                    continue
                position = max(stamps)
                await self._store_position(position)
                yield TriggerEvent(
                    {
                        "source": "change_trigger",
                        "exactonline_conn_id": self.exactonline_conn_id,
                        "entity": self.entity,
                        "topic": topic_of(self.sync_path),
                        "division": self.division,
                        "since": since,
                        "timestamp": position,
                        "changed_rows_seen": len(stamps),
                    }
                )

    async def _poll(self, client: Any, url: str, token_manager: Any, since: int) -> Any:
        """One ``GET sync/...?$select=Timestamp&$filter=Timestamp gt {since}L`` (two if the token was stale)."""
        from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

        query = ExactOnlineHook._encode_params({"$select": "Timestamp", "$filter": f"Timestamp gt {since}L"})
        token = await asyncio.to_thread(token_manager.access_token)
        self.note_call(time.time())
        response = await client.get(f"{url}?{query}", headers=_headers(token))
        if response.status_code == 401:
            new_token = await asyncio.to_thread(token_manager.on_unauthorized, token)
            if new_token and new_token != token:
                self.note_call(time.time())
                response = await client.get(f"{url}?{query}", headers=_headers(new_token))
        return response


def _headers(token: str) -> dict[str, str]:
    return {"Accept": "application/json", "Authorization": f"Bearer {token}"}


def _sync_path(entity: str) -> str:
    if entity.lower().startswith("sync/"):
        return entity
    from airflow_provider_exactonline import catalog

    try:
        spec = catalog.resolve_entity(entity)
    except Exception as err:
        raise ExactOnlineConfigError(f"entity={entity!r} is not in the catalog; give its 'sync/...' path") from err
    path = getattr(spec, "sync_path", None)
    if not path:
        raise ExactOnlineConfigError(
            f"{entity!r} has no sync/ endpoint, so its changes cannot be polled cheaply; use the webhook receiver"
            " or a sensor"
        )
    return str(path)


def _timestamps(response: Any) -> list[int]:
    try:
        payload = response.json()
    except ValueError:
        return []
    d = payload.get("d", payload) if isinstance(payload, dict) else payload
    rows = d.get("results", []) if isinstance(d, dict) else d if isinstance(d, list) else []
    stamps = []
    for row in rows:
        try:
            stamps.append(int(row.get("Timestamp")))
        except (AttributeError, TypeError, ValueError):
            continue
    return stamps
