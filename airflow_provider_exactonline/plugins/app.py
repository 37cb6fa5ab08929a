"""The FastAPI app behind the "Exact Online" page: list ``exactonline`` connections, Connect/Reconnect,
choose a division. Registered and mounted by :mod:`airflow_provider_exactonline.plugins.exactonline`.

Every route needs a logged-in Airflow user who may edit connections: Airflow's ``get_user`` and its auth
manager's ``is_authorized_connection(method="PUT")`` for the connection in the path (or the one named by the
``state`` on the callback), with the connection's team when ``[core] multi_team`` is on. This is what
:func:`~airflow.api_fastapi.core_api.security.requires_access_connection` checks, without its reading of a
JSON body (with ``multi_team`` on it parses every ``PUT``-checked request body as JSON, which would turn
this app's GET pages and form posts into 400s). Airflow's JWT arrives as a
``Bearer`` header or as the ``_token`` cookie; the cookie is ``SameSite=Lax``, so it comes along on the
top-level redirect back from Exact. See :mod:`.state` for how the OAuth ``state`` is kept, and
:mod:`.views` for how each page is drawn: inside Airflow's UI (a fragment for the React app plugin) or on
its own.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from airflow_provider_exactonline.config import CONN_TYPE, ExactOnlineConfig
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError, ExactOnlineError
from airflow_provider_exactonline.health import load_health
from airflow_provider_exactonline.plugins.state import (
    StateError,
    conn_id_from_state,
    consume_state,
    issue_state,
    save_division,
)
from airflow_provider_exactonline.plugins.views import (
    URL_PREFIX,
    Urls,
    airflow_root,
    app_root,
    connection_row,
    is_fragment,
    render,
    when,
)

log = logging.getLogger(__name__)

CALLBACK_PATH = "/callback"
BUNDLE_PATH = "/static/exactonline-page.js"
BUNDLE_FILE = Path(__file__).with_name("static") / "exactonline-page.js"

UserDep = Annotated[BaseUser, Depends(get_user)]


# ---------------------------------------------------------------------------------------------- helpers


def _return_to_ui(request: Request, embedded: bool) -> None:
    """This top-level navigation came from the page inside Airflow's UI: errors go back there too."""
    request.state.return_to_ui = embedded


def _error_page(request: Request, status_code: int, title: str, message: str, detail: str | None = None) -> Response:
    if getattr(request.state, "return_to_ui", False) and "text/html" in request.headers.get("accept", ""):
        urls = Urls.of(request, embedded=True)
        target = urls.index_with(error_title=title, error=message, error_detail=detail or "")
        return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
    if "text/html" not in request.headers.get("accept", ""):  # API clients and scripts get JSON
        return JSONResponse({"detail": message}, status_code=status_code)
    login_url = None
    if status_code == 401:
        next_url = Urls.of(request).ui_index if is_fragment(request) else str(request.url)
        login_url = f"{airflow_root(request)}/api/v2/auth/login?" + urlencode({"next": next_url})
    return render(
        request,
        "error.html",
        status_code=status_code,
        title=title,
        message=message,
        detail=detail,
        login_url=login_url,
    )


def default_redirect_uri(request: Request) -> str:
    """``<airflow base url>/exactonline/callback``: ``[api] base_url`` when set, else the URL of this request."""
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").strip().rstrip("/")
    if base and urlsplit(base).scheme in ("http", "https"):
        return f"{base}{URL_PREFIX}{CALLBACK_PATH}"
    url = request.url
    return f"{url.scheme}://{url.netloc}{app_root(request)}{CALLBACK_PATH}"


def _user_id(user: BaseUser) -> str:
    return str(user.get_id())


def _team_name(conn_id: str | None) -> str | None:
    from airflow.configuration import conf

    if not conn_id or not conf.getboolean("core", "multi_team", fallback=False):
        return None
    from airflow.models.connection import Connection

    return Connection.get_team_name(conn_id)


def _can_edit(user: BaseUser, conn_id: str | None) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails

    details = ConnectionDetails(conn_id=conn_id, team_name=_team_name(conn_id))
    return bool(get_auth_manager().is_authorized_connection(method="PUT", details=details, user=user))


def _requires_edit_connection(request: Request, user: UserDep) -> None:
    """May ``user`` edit the connection in the path (or connections at all, on the index)? Else 403."""
    if not _can_edit(user, request.path_params.get("connection_id")):
        raise HTTPException(403, "Forbidden")


CanEditConnection = Depends(_requires_edit_connection)


def _load_connection(conn_id: str) -> Any:
    """The ORM connection (this page manages connections stored in the metadata DB)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        conn = session.scalars(select(Connection).where(Connection.conn_id == conn_id)).one_or_none()
        if conn is not None:
            session.expunge(conn)
        return conn


class PageError(Exception):
    def __init__(self, status_code: int, title: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.status_code, self.title, self.message, self.detail = status_code, title, message, detail


def _config_for(conn_id: str) -> ExactOnlineConfig:
    conn = _load_connection(conn_id)
    if conn is None:
        raise PageError(
            404,
            "Connection not found",
            f"There is no connection {conn_id!r} in Airflow's metadata database. "
            "Connections defined in environment variables or a secrets backend cannot be written from here; "
            f"use `airflow-exactonline authorize {conn_id} --print json` instead.",
        )
    if conn.conn_type != CONN_TYPE:
        raise PageError(
            400,
            "Not an Exact Online connection",
            f"Connection {conn_id!r} has type {conn.conn_type!r}; set its type to 'Exact Online' ({CONN_TYPE}).",
        )
    try:
        return ExactOnlineConfig.from_connection(conn)
    except ExactOnlineConfigError as err:
        raise PageError(400, "The connection needs fixing", err.message) from err


def _division_rows(divisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for item in divisions:
        code = item.get("Code")
        if code is None:
            continue
        name = item.get("Description") or item.get("CustomerName") or item.get("HID") or ""
        rows.append({"code": int(code), "name": str(name)})
    return sorted(rows, key=lambda row: row["code"])


def _hook(conn_id: str) -> Any:
    """The hook with this process's default stores (row lock + Variable lease, both read and written), so a
    refresh from this page excludes the workers and sees the newest pair they saved in the Variable."""
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    return ExactOnlineHook(conn_id)


def _fetch_account(conn_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str | None]:
    """``current/Me`` and the reachable divisions; an API failure is reported, never raised."""
    try:
        hook = _hook(conn_id)
        me = hook.current_user()
        divisions = _division_rows(hook.divisions())
    except Exception as err:  # the tokens are saved; the chooser is a convenience
        message = err.message if isinstance(err, ExactOnlineError) else f"{type(err).__name__}: {err}"
        log.warning("Exact Online %s: could not list divisions: %s", conn_id, message)
        return None, [], message
    return me, divisions, None


def _same_origin(request: Request) -> bool:
    """Defence in depth against cross-site form posts (Airflow's cookie is also ``SameSite=Lax``)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin and origin != "null":
        from airflow.configuration import conf

        allowed = {request.url.netloc}
        base = conf.get("api", "base_url", fallback="") or ""
        if base:
            allowed.add(urlsplit(base).netloc)
        return urlsplit(origin).netloc in allowed
    return True


# ---------------------------------------------------------------------------------------------- the app


def create_app() -> FastAPI:
    app = FastAPI(
        title="Exact Online",
        description="Connect Airflow connections to Exact Online (OAuth2 authorization code flow).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        titles = {401: "Log in required", 403: "Not allowed"}
        message = str(exc.detail)
        if exc.status_code == 401:
            message = f"{message}: log in to Airflow first."
        elif exc.status_code == 403:
            message = f"{message}: editing connections is required to connect them to Exact Online."
        response = _error_page(request, exc.status_code, titles.get(exc.status_code, "Error"), message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return _error_page(request, exc.status_code, exc.title, exc.message, exc.detail)

    @app.exception_handler(ExactOnlineError)
    async def _exact_error(request: Request, exc: ExactOnlineError) -> Response:
        # e.g. the connection row stayed locked past the lock timeout (a stuck token refresh)
        return _error_page(request, 503, "Try again", exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error_page(request, 400, "Bad request", "The request is missing a field or has an invalid value.")

    @app.get(BUNDLE_PATH, include_in_schema=False)
    def bundle() -> Response:
        """The React app plugin's ES module (static code, no data: served without a login)."""
        return FileResponse(
            BUNDLE_FILE,
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/", response_class=HTMLResponse, dependencies=[CanEditConnection])
    def index(
        request: Request,
        user: UserDep,
        saved: str | None = None,
        error_title: str | None = None,
        error: str | None = None,
        error_detail: str | None = None,
    ) -> Response:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.models.connection import Connection
        from airflow.utils.session import create_session
        from sqlalchemy import select

        now = time.time()
        redirect = default_redirect_uri(request)
        allowed = get_auth_manager().get_authorized_connections(user=user, method="PUT")
        with create_session() as session:
            conns = session.scalars(
                select(Connection).where(Connection.conn_type == CONN_TYPE).order_by(Connection.conn_id)
            ).all()
            healths = [
                load_health(conn, now=now, default_redirect_uri=redirect) for conn in conns if conn.conn_id in allowed
            ]
        urls = Urls.of(request)
        return render(
            request,
            "index.html",
            urls=urls,
            rows=[connection_row(health, urls, now) for health in healths],
            user_name=user.get_name(),
            saved=saved,
            failure={"title": error_title or "Error", "message": error, "detail": error_detail} if error else None,
        )

    @app.get("/connections/{connection_id}/authorize", dependencies=[CanEditConnection])
    def authorize(
        request: Request, connection_id: str, user: UserDep, force_login: bool = False, embedded: bool = False
    ) -> Response:
        from airflow_provider_exactonline.auth.oauth import authorization_url

        _return_to_ui(request, embedded)
        config = _config_for(connection_id)
        redirect_uri = config.redirect_uri or default_redirect_uri(request)
        try:
            state = issue_state(connection_id, _user_id(user), redirect_uri, embedded=embedded)
        except LookupError as err:
            raise PageError(404, "Connection not found", f"There is no connection {connection_id!r}.") from err
        url = authorization_url(config, state, redirect_uri=redirect_uri, force_login=force_login)
        log.info(
            "Exact Online %s: %s starts authorization (redirect URI %s)", connection_id, user.get_name(), redirect_uri
        )
        return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})

    @app.get(CALLBACK_PATH, name="callback")
    def callback(
        request: Request,
        user: UserDep,
        state: str | None = None,
        code: str | None = None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> Response:
        from airflow_provider_exactonline.auth.oauth import exchange_code
        from airflow_provider_exactonline.auth.token_stores import ConnectionExtrasTokenStore

        try:
            conn_id = conn_id_from_state(state)
        except StateError as err:
            raise PageError(400, "Invalid authorization response", str(err)) from err
        if not _can_edit(user, conn_id):
            raise HTTPException(403, "Forbidden")
        try:
            pending = consume_state(state, _user_id(user))
        except StateError as err:
            raise PageError(400, "Invalid authorization response", str(err)) from err
        _return_to_ui(request, pending.embedded)
        if error:
            explanation = {
                "access_denied": "Access was not granted at Exact Online (the Exact user declined, "
                "or the app is not allowed for this user). Nothing was changed.",
            }.get(error, "Exact Online refused the authorization. Nothing was changed.")
            said = f"Exact said: {error}: {error_description}" if error_description else f"Exact said: {error}"
            retry = "To try again, click Connect on the Exact Online page and choose Authorize at Exact."
            raise PageError(400, "Exact Online refused", explanation, f"{said}. {retry}")
        if not code:
            raise PageError(400, "Invalid authorization response", "Exact Online sent no authorization code.")
        config = _config_for(conn_id)
        try:
            tokens = exchange_code(config, code, redirect_uri=pending.redirect_uri)
        except ExactOnlineError as err:
            wrong_secret = "client" in err.message.lower() and "credential" in err.message.lower()
            raise PageError(
                502,
                "Exact Online refused the client secret"
                if wrong_secret
                else "Exact Online refused the authorization code",
                err.message,
                f"Put the app's client secret from Exact's App Center in the Password field of connection "
                f"{conn_id!r} (Admin > Connections), then click Connect again."
                if wrong_secret
                else "Check the client secret and the redirect URI registered in Exact's App Center, "
                "then click Connect again (an authorization code lives about 3 minutes and works once).",
            ) from err
        store = ConnectionExtrasTokenStore(conn_id)
        with store.lock():
            store.save(tokens)
        log.info("Exact Online %s: tokens stored after authorization by %s", conn_id, user.get_name())

        me, divisions, api_error = _fetch_account(conn_id)
        current = config.division
        saved_message = None
        if current is None and me and me.get("CurrentDivision") is not None:
            current = int(me["CurrentDivision"])
            name = next((d["name"] for d in divisions if d["code"] == current), None)
            save_division(conn_id, current, name)
            saved_message = f"Default division set to {current}{f' ({name})' if name else ''}"
        who = (me or {}).get("FullName") or (me or {}).get("UserName")
        if pending.embedded:
            return _connected_in_ui(request, conn_id, who, saved_message, api_error)
        return render(
            request,
            "connected.html",
            title=f"Connected: {conn_id}",
            just_connected=True,
            conn_id=conn_id,
            user_full_name=who,
            obtained=when(tokens.obtained_at),
            divisions=divisions,
            current_division=current,
            division_saved=f"{saved_message}; change it below." if saved_message else None,
            api_error=api_error,
        )

    @app.get("/connections/{connection_id}/division", dependencies=[CanEditConnection])
    def division_form(request: Request, connection_id: str) -> Response:
        config = _config_for(connection_id)
        _me, divisions, api_error = _fetch_account(connection_id)
        return render(
            request,
            "connected.html",
            title=f"Default division: {connection_id}",
            just_connected=False,
            conn_id=connection_id,
            divisions=divisions,
            current_division=config.division,
            api_error=api_error,
        )

    @app.post("/connections/{connection_id}/division", dependencies=[CanEditConnection])
    def division_save(
        request: Request,
        connection_id: str,
        user: UserDep,
        division: Annotated[int, Form(ge=1)],
        embedded: Annotated[bool, Form()] = False,
    ) -> Response:
        _return_to_ui(request, embedded)
        if not _same_origin(request):
            raise PageError(403, "Not allowed", "Cross-site form posts are not accepted.")
        _config_for(connection_id)
        _me, divisions, api_error = _fetch_account(connection_id)
        names = {d["code"]: d["name"] for d in divisions}
        if api_error is None and division not in names:
            raise PageError(
                400,
                "Unknown division",
                f"Division {division} is not one of the divisions this Exact user can reach: "
                f"{', '.join(str(code) for code in sorted(names)) or 'none'}.",
            )
        try:
            save_division(connection_id, division, names.get(division))
        except LookupError as err:
            raise PageError(404, "Connection not found", f"There is no connection {connection_id!r}.") from err
        log.info("Exact Online %s: default division set to %s by %s", connection_id, division, user.get_name())
        name = names.get(division)
        message = f"Default division of {connection_id} set to {division}{f' ({name})' if name else ''}."
        return RedirectResponse(Urls.of(request, embedded).index_with(saved=message), status_code=303)

    return app


def _connected_in_ui(
    request: Request, conn_id: str, who: str | None, division_saved: str | None, api_error: str | None
) -> Response:
    """After a Connect started inside Airflow's UI: back to the page there, saying what happened."""
    message = f"Connection {conn_id} is connected to Exact Online{f' as {who}' if who else ''}."
    if division_saved:
        message += f" {division_saved}; change it with \u201cchange\u201d in its row."
    target = Urls.of(request, embedded=True).index_with(
        saved=message, error_title="Could not list your divisions" if api_error else "", error=api_error or ""
    )
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
