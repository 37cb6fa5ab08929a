"""``airflow-exactonline``: authorize an ``exactonline`` connection from a terminal, and show its health.

``authorize CONN_ID`` prints Exact's authorization URL. When the connection's redirect URI is a loopback
address (``http://127.0.0.1:8765/callback``, ``http://localhost:...``) it listens there and finishes by
itself once the browser comes back; otherwise (or with ``--paste``) you paste the URL the browser was sent
to. The ``state`` is checked, the code exchanged at once (Exact's codes live ~3 minutes, single use) and the
tokens are written into the connection in the metadata DB under its row lock. ``--print json|uri`` instead
prints the connection with the tokens, for connections kept in environment variables or a secrets backend.

``authorize`` writes its messages to stderr, so stdout carries only what ``--print`` emits; ``status``
prints the report (or ``--json``) on stdout. Airflow is
imported after the arguments are parsed, so ``--help`` is instant. Exit codes: 0 success, 1 ``status``
found a connection that needs action, 2 an error (one line saying what to fix).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:  # imported when used: the auth package pulls in Airflow, and --help must stay instant
    from airflow_provider_exactonline.auth.loopback import RedirectCatcher

DEFAULT_TIMEOUT = 300.0


class CliError(Exception):
    """A failure the user can fix; printed as one ``error: ...`` line, exit code 2."""


# ---------------------------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-exactonline",
        description="Authorize Airflow's Exact Online connections and check their health.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{authorize,status,webhooks}")

    auth = sub.add_parser(
        "authorize",
        help="log in at Exact Online and store the tokens in the connection",
        description="Print Exact's authorization URL, wait for the redirect (loopback redirect URI) or read the "
        "pasted redirected URL, exchange the code and store the tokens in the connection.",
    )
    auth.add_argument("conn_id", metavar="CONN_ID", help="an Airflow connection of type exactonline")
    auth.add_argument(
        "--paste",
        action="store_true",
        help="do not listen on a loopback redirect URI; paste the redirected URL from the browser instead",
    )
    auth.add_argument(
        "--print",
        dest="print_format",
        choices=("json", "uri"),
        help="print the connection with the new tokens (for env vars / secrets backends) instead of writing "
        "it to the metadata DB",
    )
    auth.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for the redirect or the pasted URL (default {DEFAULT_TIMEOUT:.0f})",
    )
    auth.add_argument(
        "--force-login",
        action="store_true",
        help="make Exact ask for a login even if the browser has an Exact session (another Exact user)",
    )
    auth.add_argument(
        "--redirect-uri",
        help="override the connection's redirect_uri extra (must be registered in Exact's App Center)",
    )

    status = sub.add_parser("status", help="show the connection's health (the same as the Exact Online page)")
    status.add_argument("conn_id", metavar="CONN_ID")
    status.add_argument("--json", action="store_true", help="print the health as JSON on stdout")

    from airflow_provider_exactonline.webhooks import cli as webhooks_cli  # `webhooks subscribe|list|delete`

    webhooks_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Like Airflow's own `airflow connections ...` commands: a server-side process that may use the metadata DB.
    os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")
    try:
        if args.command == "authorize":
            return authorize(args, stdin=stdin or sys.stdin)
        if args.command == "webhooks":
            from airflow_provider_exactonline.webhooks import cli as webhooks_cli

            return webhooks_cli.run(args, CliError)
        return status(args)
    except CliError as err:
        _say(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        _say("error: interrupted; nothing was written")
        return 130


def _say(message: str = "") -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- connection


def _get_connection(conn_id: str) -> Any:
    """The connection from wherever Airflow finds it (env var, secrets backend, metadata DB)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        return Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        raise CliError(
            f"connection {conn_id!r} not found; create it first (Admin > Connections in the UI, or `airflow "
            f"connections add {conn_id} --conn-type exactonline --conn-host nl --conn-login CLIENT_ID "
            f"--conn-password CLIENT_SECRET`)"
        ) from None
    except Exception as err:
        raise CliError(
            f"cannot read connection {conn_id!r}: {type(err).__name__}: {str(err).splitlines()[0][:200]} "
            f"(is AIRFLOW_HOME set and the metadata DB migrated? `airflow db migrate`)"
        ) from None


def _config(conn: Any) -> Any:
    from airflow_provider_exactonline.config import CONN_TYPE, ExactOnlineConfig
    from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

    if conn.conn_type != CONN_TYPE:
        raise CliError(
            f"connection {conn.conn_id!r} has type {conn.conn_type!r}; set its type to 'Exact Online' ({CONN_TYPE})"
        )
    try:
        return ExactOnlineConfig.from_connection(conn)
    except ExactOnlineConfigError as err:
        raise CliError(err.message) from None


def _in_metadata_db(conn_id: str) -> bool:
    from airflow_provider_exactonline.auth.token_stores import ConnectionExtrasTokenStore

    try:
        return ConnectionExtrasTokenStore(conn_id).exists()
    except Exception as err:
        raise CliError(
            f"cannot reach the Airflow metadata DB ({type(err).__name__}); run `airflow db migrate`, or use "
            f"--print json to get the connection with its tokens instead"
        ) from None


# ---------------------------------------------------------------------------------------------- authorize


def _listen(redirect_uri: str) -> RedirectCatcher:
    from airflow_provider_exactonline.auth.loopback import RedirectCatcher

    try:
        catcher = RedirectCatcher(redirect_uri)
    except OSError as err:
        parts = urlsplit(redirect_uri)
        raise CliError(
            f"cannot listen on {parts.hostname}:{parts.port or 80} for the redirect URI {redirect_uri} "
            f"({err.strerror}); free that port, or run with --paste"
        ) from None
    catcher.start()
    return catcher


def _read_pasted(stdin: TextIO, timeout: float) -> str:
    try:
        fileno = stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fileno = None
    if fileno is not None:
        ready, _, _ = select.select([stdin], [], [], timeout)
        if not ready:
            raise CliError(f"no URL was pasted within {timeout:.0f} s; run again (or pass --timeout)")
    line = stdin.readline()
    if not line.strip():
        raise CliError("nothing was pasted; paste the full URL your browser was redirected to")
    return line.strip()


def parse_redirect(text: str) -> dict[str, str]:
    """The query of a pasted redirect URL (``https://host/cb?code=..&state=..``), or of a bare query string."""
    text = text.strip().strip("'\"")
    query = urlsplit(text).query if "://" in text or text.startswith("/") else text.lstrip("?")
    return {key: values[0] for key, values in parse_qs(query).items() if values}


def _check_redirect(params: dict[str, str], expected_state: str) -> str:
    """Return the code, after checking state and Exact's error; raise CliError otherwise."""
    if "error" in params:
        error = params["error"]
        description = params.get("error_description", "")
        if error == "access_denied":
            raise CliError(
                "Exact Online did not grant access (the Exact user declined, or the app is not allowed for this "
                "user); nothing was written. Run authorize again and click Authorize at Exact"
            )
        raise CliError(f"Exact Online refused the authorization: {error} {description}".strip())
    state = params.get("state")
    if not state or not secrets.compare_digest(state, expected_state):
        raise CliError(
            "state mismatch: the redirected URL does not belong to this authorization attempt; nothing was "
            "written. Run authorize again and use the URL it prints (each run has its own state)"
        )
    code = params.get("code")
    if not code:
        raise CliError("the redirected URL has no 'code'; paste the full URL from the browser's address bar")
    return code


def _receive(
    redirect_uri: str, url: str, args: argparse.Namespace, stdin: TextIO, catcher: RedirectCatcher | None
) -> dict[str, str]:
    _say("Open this URL in a browser, log in at Exact Online and click Authorize:")
    _say()
    _say(f"  {url}")
    _say()
    if catcher is not None:
        _say(f"Waiting up to {args.timeout:.0f} s for Exact to redirect the browser to {redirect_uri} ...")
        query = catcher.wait(args.timeout)
        if query is None:
            raise CliError(
                f"no redirect arrived at {redirect_uri} within {args.timeout:.0f} s; run again (or pass --timeout, "
                f"or --paste when the browser runs on another machine)"
            )
        return parse_redirect(query)
    _say(f"After you approve, the browser goes to {redirect_uri}?code=...&state=...")
    _say("(that page may fail to load; that is fine). Paste the full URL from the address bar here:")
    return parse_redirect(_read_pasted(stdin, args.timeout))


def authorize(args: argparse.Namespace, *, stdin: TextIO) -> int:
    conn = _get_connection(args.conn_id)
    config = _config(conn)
    redirect_uri = args.redirect_uri or config.redirect_uri
    if not redirect_uri:
        raise CliError(
            f"connection {config.conn_id!r} has no redirect URI; set extra 'redirect_uri' to the URL registered in "
            f"Exact's App Center (e.g. http://127.0.0.1:8765/callback for this CLI), or pass --redirect-uri"
        )
    if urlsplit(redirect_uri).scheme not in ("http", "https"):
        raise CliError(f"redirect URI {redirect_uri!r} must be an http(s) URL")
    write_db = args.print_format is None
    if write_db and not _in_metadata_db(config.conn_id):
        raise CliError(
            f"connection {config.conn_id!r} is not in the metadata DB (it comes from an environment variable or a "
            f"secrets backend), so its tokens cannot be written there; run with --print json (or uri) and store "
            f"the printed connection where it is defined"
        )

    from airflow_provider_exactonline.auth.oauth import authorization_url, exchange_code
    from airflow_provider_exactonline.exceptions import ExactOnlineError

    state = secrets.token_urlsafe(32)
    url = authorization_url(config, state, redirect_uri=redirect_uri, force_login=args.force_login)
    from airflow_provider_exactonline.auth.loopback import is_loopback

    catcher = _listen(redirect_uri) if not args.paste and is_loopback(urlsplit(redirect_uri).hostname) else None
    try:
        # The browser waits on the loopback page until the code is exchanged and the tokens are safe, then
        # sees that outcome (or the error the terminal prints), never a "received" for a refused code.
        params = _receive(redirect_uri, url, args, stdin, catcher)
        code = _check_redirect(params, state)
        try:
            tokens = exchange_code(config, code, redirect_uri=redirect_uri)
        except ExactOnlineError as err:
            raise CliError(err.message) from None
        # Exact keeps one live pair: once the code is exchanged, any pair stored before is dead. So the new pair
        # is made safe first (in the DB under the row lock, or kept for --print), and only then are the
        # divisions looked up, through stores that keep any rotation those calls cause.
        if write_db:
            _store(config.conn_id, tokens)
            done = f"Connection {config.conn_id!r} is connected: its tokens are stored in Airflow's metadata DB."
        else:
            done = f"The connection {config.conn_id!r} with its new tokens is printed in the terminal."
        if catcher is not None:
            catcher.finish(True, "Connected to Exact Online", f"{done} You can close this tab.")
    except CliError as err:
        if catcher is not None:
            catcher.finish(False, "Authorization failed", f"{err}.")
        raise
    finally:
        if catcher is not None:
            catcher.close()

    if write_db:
        from airflow_provider_exactonline.plugins.state import save_division

        _say(f"Authorized: tokens stored in connection {config.conn_id!r} in the metadata DB.")
        division, division_name, division_note = _default_division(config)  # the connection's own stores
        if division is not None:
            save_division(config.conn_id, division, division_name)
    else:
        from airflow_provider_exactonline.auth.token_stores import InMemoryTokenStore

        memory = InMemoryTokenStore(tokens)
        division, division_name, division_note = _default_division(config, memory)
        # Print the newest pair: had the lookup refreshed, the exchanged pair would be spent.
        newest = memory.load() or tokens
        print(_connection_with_tokens(conn, newest, division, division_name, args.print_format), flush=True)
        _say(
            f"Authorized: the connection {config.conn_id!r} with its new tokens is printed above; put it where "
            f"the connection is defined (AIRFLOW_CONN_{config.conn_id.upper()} or your secrets backend). Nothing "
            f"was written to the metadata DB."
        )
    if division_note:
        _say(division_note)
    _say(
        "Exact drops a refresh token that is unused for about 30 days; check with "
        f"`airflow-exactonline status {config.conn_id}`."
    )
    return 0


def _store(conn_id: str, tokens: Any) -> None:
    from airflow_provider_exactonline.auth.token_stores import ConnectionExtrasTokenStore
    from airflow_provider_exactonline.exceptions import ExactOnlineError

    store = ConnectionExtrasTokenStore(conn_id)
    try:
        with store.lock():
            store.save(tokens)
    except ExactOnlineError as err:  # e.g. the row stayed locked past the lock timeout
        raise CliError(f"{err.message}; nothing was written, run authorize again") from None


def _default_division(config: Any, token_store: Any = None) -> tuple[int | None, str | None, str | None]:
    """If the connection has no default division, use the Exact user's current one (best effort).

    Called once the new tokens are safe, so an error or Ctrl-C here costs only the division. ``token_store``
    None means the connection's own stores (row + Variable), which persist a rotation these calls may cause;
    ``--print`` passes the in-memory store holding the exchanged pair. Few retries: nobody waits minutes for this.
    """
    if config.division is not None:
        return None, None, None
    try:
        from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

        hook = ExactOnlineHook(config.conn_id, token_store=token_store, max_retries=1, timeout=30)
        current = int(hook.current_user()["CurrentDivision"])
        divisions = {int(d["Code"]): str(d.get("Description") or "") for d in hook.divisions() if "Code" in d}
    except KeyboardInterrupt:
        return None, None, "Division lookup interrupted; set extra 'division' yourself."
    except Exception as err:
        return None, None, f"Could not read your divisions ({type(err).__name__}); set extra 'division' yourself."
    listing = ", ".join(f"{code} ({name})" for code, name in sorted(divisions.items()))
    return (
        current,
        divisions.get(current) or None,
        f"Default division set to {current}; divisions you can reach: {listing}. Change it with extra 'division'.",
    )


def _connection_with_tokens(conn: Any, tokens: Any, division: int | None, division_name: str | None, fmt: str) -> str:
    from airflow.models.connection import Connection

    from airflow_provider_exactonline.config import extras_of
    from airflow_provider_exactonline.plugins.state import PENDING_KEY

    extras = dict(extras_of(conn))
    extras.pop(PENDING_KEY, None)  # the UI's pending authorizations are meaningless elsewhere
    for key, value in tokens.to_extras().items():
        if value is None:
            extras.pop(key, None)
        else:
            extras[key] = value
    if division is not None:
        extras["division"] = division
        if division_name:
            extras["division_name"] = division_name
    fields = conn.to_dict(validate=False)  # every field of the connection, so the copy drops none
    fields["extra"] = json.dumps(extras)
    copy = Connection(**fields)
    return copy.as_json() if fmt == "json" else copy.get_uri()


# ---------------------------------------------------------------------------------------------- status


def status(args: argparse.Namespace) -> int:
    from airflow_provider_exactonline.config import CONN_TYPE
    from airflow_provider_exactonline.health import format_health, load_health

    conn = _get_connection(args.conn_id)
    if conn.conn_type != CONN_TYPE:
        raise CliError(
            f"connection {conn.conn_id!r} has type {conn.conn_type!r}; set its type to 'Exact Online' ({CONN_TYPE})"
        )
    now = time.time()
    health = load_health(conn, now=now, default_redirect_uri=_ui_redirect_uri())
    if args.json:
        print(json.dumps(health.to_dict(), indent=2), flush=True)
    else:
        print(format_health(health, now=now), flush=True)
    return 1 if health.needs_action else 0


def _ui_redirect_uri() -> str | None:
    """What Connect on the Exact Online page uses without a ``redirect_uri`` extra, if ``[api] base_url`` says."""
    from airflow.configuration import conf

    from airflow_provider_exactonline.plugins.views import URL_PREFIX

    base = (conf.get("api", "base_url", fallback="") or "").strip().rstrip("/")
    return f"{base}{URL_PREFIX}/callback" if urlsplit(base).scheme in ("http", "https") else None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
