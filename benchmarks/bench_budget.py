"""Benchmark: the API budget of one division shared by 1, 4 and 8 processes, with and without Redis.

Each process reads one division of the fake through the real hook (HTTP over loopback) on a ScaledClock
shared with the fake. Two phases per configuration, all in one run:

* **minute**: 60 calls a minute, no daily limit, scale 10 (an Exact minute = 6 s): HTTP 429s at the fake
  and the share of the ceiling used over the whole minutes of the run;
* **day**: daily limit 100 with the 10 % reserve, no minutely limit, scale 600: the calls the fake
  accepted that day before every process stopped reading (at most 90 if reads stay out of the reserve),
  and reads past the reserve.

Needs ``redis-server`` on PATH (a private one on a free port).

    python benchmarks/bench_budget.py [--processes 1 4 8] [--seconds 24]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "budget"))

DAY_LIMIT = 100  # small, so that one process spends the day within the phase


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_exactonline.auth.token_state import TokenState
    from airflow_provider_exactonline.auth.token_stores import InMemoryTokenStore
    from airflow_provider_exactonline.budget.redis_limiter import RedisRateLimiter
    from airflow_provider_exactonline.clock import ScaledClock
    from airflow_provider_exactonline.exceptions import ExactOnlineRateLimitExceeded
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook
    from airflow_provider_exactonline.ratelimit import LocalRateLimiter

    clock = ScaledClock(spec["scale"], spec["origin"])
    limiter: Any
    if spec["redis_port"]:
        import redis

        def factory() -> Any:
            client = redis.Redis(port=spec["redis_port"], socket_timeout=1, socket_connect_timeout=0.5)
            client.ping()
            return client

        limiter = RedisRateLimiter(factory, spec["client_id"], clock, reserve=0.10)
    else:
        limiter = LocalRateLimiter(clock, reserve=0.10)
    state = TokenState(spec["access_token"], spec["refresh_token"], clock.time() + 10**8, clock.time())
    hook = ExactOnlineHook(spec["conn_id"], token_store=InMemoryTokenStore(state), clock=clock, rate_limiter=limiter)
    hook.count("crm/Accounts", filter="Blocked eq false")  # warm-up (imports, catalog, sharer registered)
    Path(spec["out"] + ".ready").touch()
    while not Path(spec["go"]).exists():
        time.sleep(0.02)
    calls, errors, day_spent = 0, Counter[str](), False
    end = time.monotonic() + spec["seconds"]
    while time.monotonic() < end and not day_spent:
        try:
            hook.count("crm/Accounts", filter="Blocked eq false")
            calls += 1
        except ExactOnlineRateLimitExceeded as err:
            if err.scope == "daily":
                day_spent = True  # the planner would defer the task until the reset here
            else:
                errors[str(err)[:120]] += 1
        except Exception:
            errors[traceback.format_exc(limit=1)[-200:]] += 1
    return {"calls": calls, "errors": dict(errors), "day_spent": day_spent}


def run_phase(processes: int, use_redis: bool, phase: str, seconds: float) -> dict[str, Any]:
    from redis_support import RedisServer

    from airflow_provider_exactonline.clock import ScaledClock
    from airflow_provider_exactonline.testing import FakeExactOnline

    minute = phase == "minute"
    scale = 10.0 if minute else 600.0
    redis = RedisServer() if use_redis else None
    if redis is not None:
        redis.start()
    clock = ScaledClock(scale)
    limits = (
        {"minutely_limit": 60, "daily_limit": None} if minute else {"minutely_limit": None, "daily_limit": DAY_LIMIT}
    )
    try:
        with (
            FakeExactOnline(clock=clock, access_token_lifetime=10**8, **limits) as fake,
            tempfile.TemporaryDirectory() as tmp,
        ):  # type: ignore[arg-type]
            conn = {
                "conn_type": "exactonline",
                "host": fake.base_url,
                "login": fake.client_id,
                "password": fake.client_secret,
                "extra": {"division": fake.current_division},
            }
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
            env.update(AIRFLOW_CONN_BENCH_BUDGET=json.dumps(conn), PYTHONPATH=str(REPO))
            tokens = fake.issue_tokens()
            procs = []
            for index in range(processes):
                spec = {
                    "conn_id": "bench_budget",
                    "client_id": fake.client_id,
                    "scale": scale,
                    "origin": clock.origin,
                    "access_token": tokens["access_token"],
                    "refresh_token": tokens["refresh_token"],
                    "redis_port": redis.port if redis else None,
                    "seconds": seconds,
                    "out": f"{tmp}/w{index}.json",
                    "go": f"{tmp}/go",
                }
                cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
                procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            while len(list(Path(tmp).glob("*.ready"))) < processes:
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("a worker exited before it was ready")
                time.sleep(0.1)
            Path(f"{tmp}/go").touch()
            started = clock.time()
            for proc in procs:
                proc.wait(seconds + 180)
            ended = clock.time()
            results = [json.loads(Path(f"{tmp}/w{i}.json").read_text()) for i in range(processes)]
            ok = [r.time for r in fake.requests if r.status == 200 and "/api/v1/" in r.path and r.time >= started]
            out: dict[str, Any] = {
                "responses_429": fake.responses_429,
                "errors": sum(sum(r["errors"].values()) for r in results),
            }
            if minute:
                per_minute = Counter(int(t // 60) for t in ok)
                full = [per_minute[m] for m in range(int(started // 60) + 1, int(ended // 60))]
                out["ceiling_share"] = round(sum(full) / (60 * len(full)), 3) if full else None
                out["full_minutes"] = len(full)
            else:
                day = int(started // 86_400)
                out["calls_in_day"] = sum(1 for t in ok if int(t // 86_400) == day)
                out["reads_past_reserve"] = max(0, out["calls_in_day"] - int(DAY_LIMIT * 0.9))
            return out
    finally:
        if redis is not None:
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=24.0, help="real seconds per phase")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        result = worker(spec)
        Path(spec["out"]).write_text(json.dumps(result))
        return
    print(
        f"{'processes':>9} {'store':>6} {'429s':>5} {'ceiling':>8} {'errors':>6} {'calls/day':>10} {'past reserve':>12}"
    )
    for processes in args.processes:
        for use_redis in (False, True):
            minute = run_phase(processes, use_redis, "minute", args.seconds)
            day = run_phase(processes, use_redis, "day", args.seconds)
            share = "n/a" if minute["ceiling_share"] is None else f"{minute['ceiling_share']:.0%}"
            print(
                f"{processes:>9} {'redis' if use_redis else 'local':>6} "
                f"{minute['responses_429'] + day['responses_429']:>5} "
                f"{share:>8} {minute['errors'] + day['errors']:>6} {day['calls_in_day']:>6}/{DAY_LIMIT} "
                f"{day['reads_past_reserve']:>12}",
                flush=True,
            )


if __name__ == "__main__":
    main()
