"""One worker process of the shared-budget tests: reads one division through the real hook for
``duration`` real seconds on a ScaledClock, with the Redis limiter; writes a JSON summary."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections import Counter


def main(args: dict) -> dict:
    from airflow_provider_exactonline.auth.token_state import TokenState
    from airflow_provider_exactonline.auth.token_stores import InMemoryTokenStore
    from airflow_provider_exactonline.budget.redis_limiter import RedisRateLimiter
    from airflow_provider_exactonline.clock import ScaledClock
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    clock = ScaledClock(args["scale"], args["origin"])
    port = args["redis_port"]

    def factory():  # type: ignore[no-untyped-def]
        import redis

        client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=0.5)
        client.ping()
        return client

    limiter = RedisRateLimiter(factory, args["client_id"], clock, retry_seconds=args.get("retry_seconds", 1.0))
    state = TokenState(args["access_token"], args["refresh_token"], clock.time() + 10**7, clock.time())
    hook = ExactOnlineHook(args["conn_id"], token_store=InMemoryTokenStore(state), clock=clock, rate_limiter=limiter)
    errors: Counter[str] = Counter()
    calls = 0
    # Importing Airflow and the catalog takes seconds under load: one warm-up call (it also registers
    # this process as a sharer), then start together once every process is ready.
    hook.count("crm/Accounts", filter="Blocked eq false")
    open(args["out"] + ".ready", "w").close()
    while not os.path.exists(args["go"]):
        time.sleep(0.02)
    end = time.monotonic() + args["duration"]
    longest = 0.0
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            hook.count("crm/Accounts", filter="Blocked eq false")
            calls += 1
        except Exception:
            errors[traceback.format_exc(limit=1)[-300:]] += 1
        longest = max(longest, time.monotonic() - started)
    return {
        "calls": calls,
        "errors": dict(errors),
        "fallbacks": limiter.fallbacks,
        "sharers": limiter.sharers,
        "share": limiter.local.share,
        "longest_call_s": round(longest, 2),
    }


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    try:
        result = main(spec)
    except Exception:
        result = {"crashed": traceback.format_exc()[-2000:]}
    with open(spec["out"], "w") as handle:
        json.dump(result, handle)
