"""``airflow-exactonline webhooks subscribe|list|delete``: manage webhook subscriptions from a terminal.

Registered by :mod:`airflow_provider_exactonline.cli`. ``subscribe`` is idempotent (an identical
subscription is reused); ``delete`` takes ``--id`` or ``--topic`` (all of that topic for the callback URL).
The callback URL defaults to ``[api] base_url`` + ``/exactonline-webhooks/CONN_ID``. Output is JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    hooks = sub.add_parser(
        "webhooks",
        help="create, list and delete Exact Online webhook subscriptions (per topic and division)",
        description="Manage the webhook subscriptions of an Exact Online connection's app in one division.",
    )
    actions = hooks.add_subparsers(dest="webhooks_command", required=True, metavar="{subscribe,list,delete}")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("conn_id", metavar="CONN_ID", help="an Airflow connection of type exactonline")
        parser.add_argument("--division", type=int, help="the division (default: the connection's 'division')")

    def callback(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--callback-url", help="the receiver's public https:// URL (default: [api] base_url + the receiver path)"
        )

    subscribe = actions.add_parser("subscribe", help="subscribe the receiver to topics (idempotent)")
    common(subscribe)
    callback(subscribe)
    subscribe.add_argument("--topic", action="append", required=True, help="e.g. Accounts; repeat for more")
    subscribe.add_argument("--description")

    listing = actions.add_parser("list", help="list the division's subscriptions as JSON")
    common(listing)

    delete = actions.add_parser("delete", help="delete subscriptions by --id, or by --topic for the callback URL")
    common(delete)
    callback(delete)
    target = delete.add_mutually_exclusive_group(required=True)
    target.add_argument("--id", dest="subscription_id", help="the subscription's ID (a GUID)")
    target.add_argument("--topic", action="append", help="every subscription of the callback URL to this topic")


def run(args: argparse.Namespace, cli_error: type[Exception]) -> int:
    """Run ``webhooks ...``; errors a user can fix are raised as ``cli_error`` (one line, exit code 2)."""
    from airflow_provider_exactonline.exceptions import ExactOnlineError
    from airflow_provider_exactonline.webhooks import subscriptions

    try:
        hook, division = _hook(args.conn_id, args.division)
        if args.webhooks_command == "list":
            rows = subscriptions.list_subscriptions(hook, division=division)
            _print([_brief(r) for r in rows])
            return 0
        url = args.callback_url or subscriptions.receiver_url(_base_url(), args.conn_id)
        if args.webhooks_command == "subscribe":
            made = [
                subscriptions.subscribe(hook, t, url, division=division, description=args.description)
                for t in args.topic
            ]
            _print([_brief(r) for r in made])
            return 0
        if args.subscription_id:
            subscriptions.unsubscribe(hook, args.subscription_id, division=division)
            _print({"deleted": [args.subscription_id]})
            return 0
        removed = [i for t in args.topic for i in subscriptions.unsubscribe_matching(hook, t, url, division=division)]
        _print({"deleted": removed})
        return 0
    except ExactOnlineError as err:
        raise cli_error(err.message) from None


def _hook(conn_id: str, division: int | None) -> tuple[Any, int]:
    from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    hook = ExactOnlineHook(conn_id)
    resolved = division if division is not None else hook.config.division
    if resolved is None:
        raise ExactOnlineConfigError(f"give --division: connection {conn_id!r} has no default division")
    return hook, int(resolved)


def _base_url() -> str:
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="") or ""


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("ID", "Topic", "CallbackURL", "Description", "Division")}


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str), flush=True)
