"""One minutely (and daily) budget per (app, division) in Redis, shared by every process.

Each draw is one server-side Lua script (atomic across processes): it rolls the minute window,
refuses when the window is spent (the caller sleeps until the reset) and, for reads, refuses when
the day's remaining calls are down to the reserve. Every answer's ``X-RateLimit-*`` headers
correct the shared counters downwards (other apps, the UI or callers without Redis spend the same
budget). Time comes from the caller's clock (``now_ms`` is passed in), so a ScaledClock works.

Every draw also registers the process in a set of *sharers* (processes that drew from this budget in
the last two minutes). If Redis is unreachable the limiter falls back to per-process limits
(:class:`LocalRateLimiter`) capped at this process's share of the minute (``limit // sharers``, from
the last count Redis gave), backs off on a 429 until the minutely reset its headers name, logs that
once, and tries Redis again after ``retry_seconds``; on reconnecting it writes what it learnt from
Exact's headers meanwhile back into Redis. It never fails a task.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_exactonline.clock import Clock
from airflow_provider_exactonline.ratelimit import (
    DAILY_HEADERS,
    DEFAULT_RESERVE,
    MINUTELY_HEADERS,
    LocalRateLimiter,
    RateLimitState,
    _header,
    _int,
    daily_limit_error,
)

log = logging.getLogger(__name__)

KEY_PREFIX = "exactonline:budget"
DEFAULT_MINUTELY_LIMIT = 60
#: A process counts as sharing the budget for this long (clock ms) after its last draw.
SHARER_WINDOW_MS = 120_000
#: Clock seconds waited past the minutely reset: covers clock skew and calls drawn just before a
#: reset that reach Exact just after it (measured: 0.5 s let one 429 through under load).
SHARED_MARGIN = 1.0

_DRAW = """
local now, default_limit, margin = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local reserve, is_read = tonumber(ARGV[4]), ARGV[5] == '1'
redis.call('ZADD', KEYS[3], now, ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[7]))
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[7]))
local sharers = redis.call('ZCARD', KEYS[3])
local d = redis.call('HMGET', KEYS[2], 'remaining', 'reset', 'limit')
local d_rem, d_reset, d_limit = tonumber(d[1]), tonumber(d[2]), tonumber(d[3])
local day_known = d_rem ~= nil and d_reset ~= nil and now < d_reset
if day_known then
  local floor = 0
  if is_read and d_limit then floor = math.floor(d_limit * reserve) end
  if d_rem <= floor then return {-1, d_rem, d_reset, sharers} end
end
local m = redis.call('HMGET', KEYS[1], 'remaining', 'reset', 'limit')
local rem, reset, limit = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
limit = limit or default_limit
if reset == nil or rem == nil or now >= reset + margin then
  reset = (math.floor(now / 60000) + 1) * 60000
  rem = limit
end
if rem <= 0 then return {0, 0, reset + margin, sharers} end
redis.call('HSET', KEYS[1], 'remaining', rem - 1, 'reset', reset, 'limit', limit)
redis.call('PEXPIRE', KEYS[1], 3600000)
if day_known then redis.call('HINCRBY', KEYS[2], 'remaining', -1) end
redis.call('HINCRBY', KEYS[2], 'drawn', 1)
redis.call('PEXPIRE', KEYS[2], 172800000)
return {1, rem - 1, reset, sharers}
"""

_CORRECT = """
local function num(x) if x == '' then return nil end return tonumber(x) end
local function correct(key, rem, reset, limit, ttl)
  if reset == nil or rem == nil then return end
  local cur = redis.call('HMGET', key, 'remaining', 'reset')
  local c_rem, c_reset = tonumber(cur[1]), tonumber(cur[2])
  if c_reset == nil or reset > c_reset then
    redis.call('HSET', key, 'remaining', rem, 'reset', reset)
  elseif reset == c_reset and (c_rem == nil or rem < c_rem) then
    redis.call('HSET', key, 'remaining', rem)
  end
  if limit ~= nil then redis.call('HSET', key, 'limit', limit) end
  redis.call('PEXPIRE', key, ttl)
end
correct(KEYS[1], num(ARGV[1]), num(ARGV[2]), num(ARGV[3]), 3600000)
correct(KEYS[2], num(ARGV[4]), num(ARGV[5]), num(ARGV[6]), 172800000)
return 1
"""


def app_key(client_id: str) -> str:
    """The app's part of the Redis keys: a hash, so the client id is never stored in clear."""
    return hashlib.sha256(client_id.encode()).hexdigest()[:16]


def division_key(client_id: str, division: int | None) -> str:
    """``exactonline:budget:<app hash>:<division>``: the prefix of every key of one budget."""
    return f"{KEY_PREFIX}:{app_key(client_id)}:{division if division is not None else 'none'}"


def budget_keys(client_id: str, division: int | None) -> tuple[str, str]:
    base = division_key(client_id, division)
    return f"{base}:minute", f"{base}:day"


def _state_args(state: RateLimitState) -> list[str]:
    """A :class:`RateLimitState` as ``_CORRECT``'s arguments (resets back in epoch ms)."""

    def text(value: float | int | None, scale: int = 1) -> str:
        return "" if value is None else str(int(value * scale))

    return [
        text(state.minutely_remaining),
        text(state.minutely_reset, 1000),
        text(state.minutely_limit),
        text(state.daily_remaining),
        text(state.daily_reset, 1000),
        text(state.daily_limit),
    ]


def _raw(headers: Mapping[str, Any], names: tuple[str, str, str]) -> list[str]:
    limit, remaining, reset = (_int(_header(headers, name)) for name in names)
    return ["" if v is None else str(v) for v in (remaining, reset, limit)]


class RedisRateLimiter:
    """The :class:`~airflow_provider_exactonline.ratelimit.RateLimiter` shared through Redis.

    :param client_factory: returns a ``redis.Redis`` (e.g. ``RedisHook(conn_id).get_conn``).
    :param retry_seconds: real seconds before trying Redis again after it failed.
    """

    def __init__(
        self,
        client_factory: Callable[[], Any],
        client_id: str,
        clock: Clock,
        *,
        reserve: float = DEFAULT_RESERVE,
        margin: float = SHARED_MARGIN,
        retry_seconds: float = 5.0,
    ) -> None:
        self._factory = client_factory
        self._client: Any = None
        self.client_id = client_id
        self.clock = clock
        self.reserve = reserve
        self.margin = margin
        self.retry_seconds = retry_seconds
        self.local = LocalRateLimiter(clock, margin=margin, reserve=reserve)
        self._down_until = 0.0
        self._warned = False
        self._lost_redis = False  # True from a failure until the next successful connect
        self.fallbacks = 0  # times Redis failed and per-process limits took over
        self.member = uuid.uuid4().hex[:12]  # this limiter in the set of sharers
        self.sharers = 1  # processes drawing from the shared budget, as Redis last said
        self.minutely_limit = DEFAULT_MINUTELY_LIMIT
        self._last_429_minute = self._grown_minute = -1
        self._draw_script = _DRAW

    # ------------------------------------------------------------------ Redis access

    def _redis(self) -> Any | None:
        if time.monotonic() < self._down_until:
            return None
        if self._client is None:
            try:
                client = self._factory()
                if self._lost_redis:
                    self._write_back(client)
            except Exception as err:  # the limiter never fails a task
                self._lost(err)
                return None
            self._client = client
            if self._lost_redis:
                self._lost_redis = False
                log.info("Exact Online shared API budget: Redis is back; drawing from the shared budget again")
        return self._client

    def _write_back(self, client: Any) -> None:
        """After an outage: what Exact's headers said meanwhile corrects the shared counters (a fresh
        Redis would otherwise grant a whole minute that Exact has partly counted already)."""
        for division, state in list(self.local._states.items()):
            client.eval(_CORRECT, 2, *budget_keys(self.client_id, division), *_state_args(state))

    def _lost(self, err: BaseException) -> None:
        self.fallbacks += 1
        self._client = None
        self._lost_redis = True
        self._down_until = time.monotonic() + self.retry_seconds
        # Each process assumes its share of the minute: the sharers Redis last counted split it.
        self.local.share = max(1, self.minutely_limit // max(1, self.sharers))
        if not self._warned:
            self._warned = True
            log.warning(
                "Exact Online shared API budget: Redis unavailable (%s); using per-process limits "
                "(%d calls a minute: the last known %d sharers split the minute) and retrying Redis every %.0fs",
                type(err).__name__,
                self.local.share,
                self.sharers,
                self.retry_seconds,
            )

    def _run(self, script: str, keys: tuple[str, ...], args: list[Any]) -> Any | None:
        client = self._redis()
        if client is None:
            return None
        try:
            return client.eval(script, len(keys), *keys, *args)
        except Exception as err:
            self._lost(err)
            return None

    # ------------------------------------------------------------------ RateLimiter

    def before_call(self, division: int | None, *, purpose: str = "read") -> None:
        keys = (*budget_keys(self.client_id, division), division_key(self.client_id, division) + ":sharers")
        while True:
            now_ms = int(self.clock.time() * 1000)
            args = [
                now_ms,
                DEFAULT_MINUTELY_LIMIT,
                int(self.margin * 1000),
                self.reserve,
                int(purpose == "read"),
                self.member,
                SHARER_WINDOW_MS,
            ]
            result = self._run(_DRAW, keys, args)
            if result is None:
                self._regrow_share()
                self.local.before_call(division, purpose=purpose)
                return
            granted, _remaining, reset_ms, sharers = (int(v) for v in result)
            self.sharers = max(1, sharers)
            if granted == 1:
                self.local.count_call(division, now_ms / 1000.0)
                return
            if granted == -1:
                state = self.state(division)
                raise daily_limit_error(state, reserve=purpose == "read" and (state.daily_remaining or 0) > 0)
            wait = max(0.0, reset_ms / 1000.0 - self.clock.time())
            log.info("Exact Online shared minutely budget spent; waiting %.1fs for the reset", wait)
            self.clock.sleep(wait)

    def after_call(self, division: int | None, headers: Mapping[str, Any], status: int) -> None:
        self.local.after_call(division, headers, status)
        limit = self.local.state(division).minutely_limit
        if limit:
            self.minutely_limit = limit
        args = _raw(headers, MINUTELY_HEADERS) + _raw(headers, DAILY_HEADERS)
        if any(args):
            self._run(_CORRECT, budget_keys(self.client_id, division), args)

    def wait_after_429(self, division: int | None, headers: Mapping[str, Any]) -> float:
        """Until the minutely reset the 429's headers name (+ margin), else the next whole minute. Without
        Redis a 429 also halves this process's share (others spend more than the sharers count said)."""
        if self._lost_redis and self.local.share is not None:
            self.local.share = max(1, self.local.share // 2)
            self._last_429_minute = int(self.clock.time() // 60)
        return self.local.wait_after_429(division, headers)

    def _regrow_share(self) -> None:
        """Without Redis, one more call a minute per clean minute, up to the fair share."""
        fair = max(1, self.minutely_limit // max(1, self.sharers))
        minute = int(self.clock.time() // 60)
        share = self.local.share
        if share is not None and share < fair and minute > self._last_429_minute + 1 and minute > self._grown_minute:
            self.local.share, self._grown_minute = share + 1, minute

    def state(self, division: int | None) -> RateLimitState:
        """The shared state (falls back to this process's view when Redis is away)."""
        client = self._redis()
        if client is None:
            return self.local.state(division)
        minute_key, day_key = budget_keys(self.client_id, division)
        try:
            minute = client.hgetall(minute_key)
            day = client.hgetall(day_key)
        except Exception as err:
            self._lost(err)
            return self.local.state(division)
        return _state_from(minute, day, self.local.state(division))


def _state_from(minute: Mapping[Any, Any], day: Mapping[Any, Any], local: RateLimitState) -> RateLimitState:
    def get(values: Mapping[Any, Any], name: str) -> int | None:
        raw = values.get(name.encode()) if name.encode() in values else values.get(name)
        return None if raw is None else int(float(raw))

    def seconds(ms: int | None) -> float | None:
        return None if ms is None else ms / 1000.0

    return RateLimitState(
        daily_limit=get(day, "limit") or local.daily_limit,
        daily_remaining=get(day, "remaining"),
        daily_reset=seconds(get(day, "reset")),
        minutely_limit=get(minute, "limit"),
        minutely_remaining=get(minute, "remaining"),
        minutely_reset=seconds(get(minute, "reset")),
    )


def redis_client_factory(redis_conn_id: str) -> Callable[[], Any]:
    """``RedisHook(redis_conn_id).get_conn`` (imported lazily; the provider is only needed when used)."""

    def factory() -> Any:
        from airflow.providers.redis.hooks.redis import RedisHook

        client = RedisHook(redis_conn_id=redis_conn_id).get_conn()
        client.ping()
        return client

    return factory
