"""ExactOnlineTrigger: poll an OData query from the triggerer until it returns a row.

HTTP is async (``httpx.AsyncClient``) so the triggerer's shared event loop is never blocked. The
access token comes from the same token manager and token stores the hook uses: the (synchronous)
token manager runs in a worker thread via ``asyncio.to_thread``, and from there the Task SDK's
Variable/Connection calls reach the triggerer's supervisor through
``TriggerCommsDecoder.send`` (which bridges threads with ``run_coroutine_threadsafe``). A token
refresh in the triggerer is thus persisted like one on a worker, under the store's lock. Proven in a
real ``airflow triggerer`` (ORM blocked, Variable store) by
``tests/integration/test_triggerer_token_rotation.py``.

The trigger serializes only the connection id and the query, never a token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_exactonline.config import DEFAULT_CONN_ID

#: Consecutive 5xx/transport failures after which the trigger gives up with an error event.
MAX_CONSECUTIVE_ERRORS = 5


class ExactOnlineTrigger(BaseTrigger):
    """Fire when ``GET {path}?{params}`` in ``division`` returns at least one row.

    :param exactonline_conn_id: the connection (tokens are read from its stores at run time).
    :param path: API path relative to the division, e.g. ``salesinvoice/SalesInvoices``.
    :param division: the division number.
    :param params: OData query options (``$filter``, ``$select``, ``$top``).
    :param poke_interval: seconds between queries.
    :param end_time: epoch seconds after which a ``timeout`` event is sent (None: never).
    :param wait_until: epoch seconds to sleep until before the first query (a spent daily limit).
    """

    def __init__(
        self,
        exactonline_conn_id: str = DEFAULT_CONN_ID,
        *,
        path: str,
        division: int | None = None,
        params: dict[str, Any] | None = None,
        poke_interval: float = 60.0,
        end_time: float | None = None,
        wait_until: float | None = None,
    ) -> None:
        super().__init__()
        self.exactonline_conn_id = exactonline_conn_id
        self.path = path
        self.division = division
        self.params = dict(params or {})
        self.poke_interval = float(poke_interval)
        self.end_time = end_time
        self.wait_until = wait_until

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "exactonline_conn_id": self.exactonline_conn_id,
                "path": self.path,
                "division": self.division,
                "params": self.params,
                "poke_interval": self.poke_interval,
                "end_time": self.end_time,
                "wait_until": self.wait_until,
            },
        )

    def _hook(self) -> Any:
        from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

        return ExactOnlineHook(self.exactonline_conn_id, division=self.division)

    def _config_and_token_manager(self) -> tuple[Any, Any]:
        hook = self._hook()
        return hook.config, hook.token_manager

    async def _sleep_until(self, when: float, why: str) -> bool:
        """Sleep until ``when`` (capped by end_time); False if end_time comes first."""
        now = time.time()
        if self.end_time is not None and when >= self.end_time:
            await asyncio.sleep(max(0.0, self.end_time - now))
            return False
        if when > now:
            self.log.info("Exact Online trigger: %s; sleeping %.0fs", why, when - now)
            await asyncio.sleep(when - now)
        return True

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx

        from airflow_provider_exactonline.ratelimit import RateLimitState

        try:
            # Importing the hook and reading the connection are blocking (the latter a sync SDK call):
            # run them off the triggerer's shared event loop.
            config, token_manager = await asyncio.to_thread(self._config_and_token_manager)
            url = config.api_url(self.path, self.division)
            self.log.info(
                "Exact Online trigger: tokens for %r from stores %s (%s)",
                self.exactonline_conn_id,
                ", ".join(str(getattr(store, "name", type(store).__name__)) for store in token_manager.stores),
                _process_description(),
            )
        except Exception as err:
            yield TriggerEvent({"status": "error", "message": f"Exact Online trigger set-up failed: {err}"})
            return
        if self.wait_until is not None and not await self._sleep_until(
            self.wait_until, "the daily API limit is spent until its reset"
        ):
            yield TriggerEvent({"status": "timeout", "message": "timed out waiting for the daily limit reset"})
            return

        rate = RateLimitState()
        errors = 0
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=False) as client:
            while True:
                if self.end_time is not None and time.time() >= self.end_time:
                    yield TriggerEvent({"status": "timeout", "message": "no matching row before the timeout"})
                    return
                try:
                    token = await asyncio.to_thread(token_manager.access_token)
                    response = await self._get(client, url, token)
                    if response.status_code == 401:
                        new_token = await asyncio.to_thread(token_manager.on_unauthorized, token)
                        if new_token and new_token != token:
                            response = await self._get(client, url, new_token)
                except httpx.TransportError as err:
                    errors += 1
                    self.log.warning("Exact Online trigger: could not reach Exact (%s)", type(err).__name__)
                    if errors >= MAX_CONSECUTIVE_ERRORS:
                        yield TriggerEvent(
                            {"status": "error", "message": f"Exact Online unreachable {errors} times in a row: {err}"}
                        )
                        return
                    await asyncio.sleep(self.poke_interval)
                    continue
                except Exception as err:  # token errors (re-authorization needed) end the wait
                    yield TriggerEvent({"status": "error", "message": str(err)})
                    return

                rate.update_from_headers(response.headers)
                status = response.status_code
                if status == 429:
                    now = time.time()
                    if rate.daily_exhausted(now) and rate.daily_reset:
                        if not await self._sleep_until(rate.daily_reset + 1, "the daily API limit is spent"):
                            continue
                    else:
                        await asyncio.sleep(max(rate.minutely_wait(now, 1.0), 1.0))
                    continue
                if status >= 500:
                    errors += 1
                    if errors >= MAX_CONSECUTIVE_ERRORS:
                        yield TriggerEvent(
                            {
                                "status": "error",
                                "message": f"Exact Online answered HTTP {status} {errors} times in a row",
                            }
                        )
                        return
                    await asyncio.sleep(self.poke_interval)
                    continue
                if status >= 300:
                    # 400/401/403/404 are never retried: Exact blocks the app after 10 per hour.
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "message": f"Exact Online answered HTTP {status} to GET {self.path}: "
                            f"{_error_text(response)}",
                        }
                    )
                    return
                errors = 0
                try:
                    rows = _rows(response.json())
                except ValueError:
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "message": f"Exact Online answered GET {self.path} with a body that is not JSON",
                        }
                    )
                    return
                if rows:
                    yield TriggerEvent({"status": "success", "row": rows[0]})
                    return
                now = time.time()
                if rate.daily_exhausted(now) and rate.daily_reset:
                    await self._sleep_until(rate.daily_reset + 1, "the daily API limit is spent")
                    continue
                await asyncio.sleep(self.poke_interval)

    async def _get(self, client: Any, url: str, token: str) -> Any:
        from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

        # The hook's encoding (%20 for spaces, OData punctuation kept), so both send the same query.
        query = ExactOnlineHook._encode_params(self.params or None)
        return await client.get(
            f"{url}{'&' if '?' in url else '?'}{query}" if query else url,
            headers={"Accept": "application/json", "Authorization": f"Bearer {token}"},
        )


def _process_description() -> str:
    from airflow_provider_exactonline.auth import process_context

    blocked = "ORM blocked" if process_context.orm_blocked() else "ORM available"
    return f"{process_context.process_kind()} process, {blocked}"


def _rows(payload: Any) -> list[dict[str, Any]]:
    d = payload.get("d", payload) if isinstance(payload, dict) else payload
    if isinstance(d, dict) and isinstance(d.get("results"), list):
        return list(d["results"])
    if isinstance(d, list):
        return list(d)
    if isinstance(d, dict) and d:
        return [d]
    return []


def _error_text(response: Any) -> str:
    try:
        error = response.json().get("error", {})
        message = error.get("message", {})
        return str(message.get("value") if isinstance(message, dict) else message)[:300]
    except Exception:
        return (response.text or "")[:200]
