"""``python -m airflow_provider_exactonline.testing serve --port 8765 ...``: run the fake until SIGINT/SIGTERM.

The first line on stdout is the base URL (e.g. ``http://127.0.0.1:8765``), so a parent process can
read it; ``--url-file`` also writes it to a file once the server accepts connections.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType


def _rows(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        name, sep, count = value.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--rows wants ENTITY=COUNT, got {value!r}")
        out[name.strip()] = int(count)
    return out


def _divisions(values: list[str]) -> dict[int, str]:
    out: dict[int, str] = {}
    for value in values:
        code, _, name = value.partition("=")
        out[int(code)] = name or f"Fake Company {code}"
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_exactonline.testing")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the fake Exact Online server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    serve.add_argument("--client-id", default="fake-client-id")
    serve.add_argument("--client-secret", default="fake-client-secret")
    serve.add_argument("--redirect-uri", action="append", default=[], help="registered redirect URI (repeatable)")
    serve.add_argument(
        "--no-loopback-redirects",
        action="store_true",
        help="accept only the --redirect-uri values, not any http://127.0.0.1:PORT/... URI",
    )
    serve.add_argument(
        "--division",
        action="append",
        default=[],
        metavar="CODE[=NAME]",
        help="a division (repeatable; the first is the user's CurrentDivision)",
    )
    serve.add_argument(
        "--rows",
        action="append",
        default=[],
        metavar="ENTITY=COUNT",
        help="generated rows per entity and division, e.g. crm/Accounts=500 (repeatable)",
    )
    serve.add_argument("--auto-approve", action="store_true", help="skip the consent page")
    serve.add_argument("--access-token-lifetime", type=float, default=600.0)
    serve.add_argument("--refresh-token-lifetime", type=float, default=30 * 86_400.0)
    serve.add_argument("--token-calls-per-day", type=int, default=200)
    serve.add_argument("--minutely-limit", type=int, default=60)
    serve.add_argument("--daily-limit", type=int, default=5000)
    serve.add_argument("--error-budget", type=int, default=None, help="errors per endpoint per hour before blocking")
    serve.add_argument("--clock-scale", type=float, default=1.0, help="run the fake's clock this many times faster")
    serve.add_argument("--clock-origin", type=float, default=None, help="ScaledClock origin (epoch s)")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument(
        "--no-mandatory-filtering",
        action="store_true",
        help="serve unfiltered standard/bulk reads of entities with a sync twin (Exact answers 400)",
    )
    serve.add_argument("--latency", type=float, default=0.0, help="fixed latency per API call (seconds)")
    serve.add_argument("--url-file", type=Path, default=None, help="write the base URL here once serving")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from airflow_provider_exactonline.clock import ScaledClock, SystemClock
    from airflow_provider_exactonline.testing.server import FakeExactOnline

    clock = (
        ScaledClock(args.clock_scale, args.clock_origin)
        if args.clock_scale != 1.0 or args.clock_origin is not None
        else SystemClock()
    )
    fake = FakeExactOnline(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uris=tuple(args.redirect_uri) or ("http://127.0.0.1/callback",),
        allow_any_loopback_redirect=not args.no_loopback_redirects,
        divisions=_divisions(args.division) or None,
        rows=_rows(args.rows),
        access_token_lifetime=args.access_token_lifetime,
        refresh_token_lifetime=args.refresh_token_lifetime,
        token_calls_per_day=args.token_calls_per_day,
        minutely_limit=args.minutely_limit,
        daily_limit=args.daily_limit,
        error_budget=args.error_budget,
        clock=clock,
        auto_approve=args.auto_approve,
        seed=args.seed,
        mandatory_filtering=not args.no_mandatory_filtering,
    )
    if args.latency:
        fake.set_latency(args.latency)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    fake.start()
    try:
        if args.url_file:
            args.url_file.write_text(fake.base_url + "\n")
        print(fake.base_url, flush=True)
        print(
            f"Fake Exact Online at {fake.base_url} (client_id={fake.client_id}, divisions={sorted(fake.divisions)}); "
            "Ctrl+C to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
