"""``airflow-exactonline`` against the fake Exact Online server: loopback and paste mode end to end
(subprocesses, real HTTP), plus the error messages in-process."""

from __future__ import annotations

import html
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from airflow_provider_exactonline import cli
from airflow_provider_exactonline.testing import FakeExactOnline

CONN = "exact_cli"
PASTE_REDIRECT = "https://airflow.example.com/exactonline/callback"
URL_RE = re.compile(r"^\s+(http\S+/api/oauth2/auth\?\S+)$")


@pytest.fixture(scope="module")
def airflow_db() -> None:
    from airflow_db import migrate

    migrate()


@pytest.fixture
def fake() -> Iterator[FakeExactOnline]:
    with FakeExactOnline(redirect_uris=[PASTE_REDIRECT], auto_approve=True) as server:
        yield server


@pytest.fixture(autouse=True)
def _server_context(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() sets this for its process (like `airflow connections`); restore it after in-process runs.
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")


def put_connection(conn_id: str = CONN, *, conn_type: str = "exactonline", **fields: Any) -> None:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    extra = fields.pop("extra", {})
    fields.setdefault("login", "fake-client-id")
    fields.setdefault("password", "fake-client-secret")
    with create_session() as session:
        session.execute(delete(Connection).where(Connection.conn_id == conn_id))
        session.add(Connection(conn_id=conn_id, conn_type=conn_type, extra=json.dumps(extra), **fields))


def extras(conn_id: str = CONN) -> dict[str, Any]:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return dict(session.scalars(select(Connection).where(Connection.conn_id == conn_id)).one().extra_dejson)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(*args: str, stdin: Any = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_exactonline.cli", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def _read_url(proc: subprocess.Popen[str], deadline_s: float = 60) -> tuple[str, list[str]]:
    """Read the child's stderr until the authorization URL; return it and the lines read."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = URL_RE.match(line.rstrip("\n"))
        if match:
            return match.group(1), lines
    proc.kill()
    raise AssertionError(f"no authorization URL printed: {''.join(lines)}")


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """Rest of stdout/stderr through the same buffered readers _read_url used (communicate() would bypass them)."""
    assert proc.stdout is not None and proc.stderr is not None
    if proc.stdin is not None:
        proc.stdin.close()
    proc.wait(timeout=timeout)
    return proc.stdout.read(), proc.stderr.read()


def _read_until(proc: subprocess.Popen[str], needle: str, lines: list[str]) -> None:
    assert proc.stderr is not None
    while not any(needle in line for line in lines):
        line = proc.stderr.readline()
        assert line, f"{needle!r} never printed: {''.join(lines)}"
        lines.append(line)


# ------------------------------------------------------------------------------------------ end to end


def test_console_script_help_is_fast() -> None:
    script = os.path.join(os.path.dirname(sys.executable), "airflow-exactonline")
    started = time.monotonic()
    result = subprocess.run([script, "authorize", "--help"], capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 0 and "--paste" in result.stdout and "--print" in result.stdout
    assert elapsed < 2.0, f"--help took {elapsed:.2f} s"  # Airflow is imported only after parsing


def test_loopback_mode_completes_by_itself(airflow_db: None, fake: FakeExactOnline) -> None:
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    put_connection(host=fake.base_url, extra={"redirect_uri": redirect})
    proc = _spawn("authorize", CONN, "--timeout", "60")
    try:
        url, _ = _read_url(proc)
        assert parse_qs(urlsplit(url).query)["redirect_uri"] == [redirect]
        # The fake approves at once and redirects to the CLI's listener; requests follows it there.
        landing = requests.get(url, timeout=60)  # the page answers once the tokens are stored
        assert landing.status_code == 200 and "Connected to Exact Online" in landing.text
        assert "is connected: its tokens are stored in Airflow&#x27;s metadata DB" in landing.text
        assert extras()["refresh_token"] == fake.current_refresh_token  # stored before the page said so
        assert landing.url.startswith(redirect)
        out, err = _finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "tokens stored in connection 'exact_cli'" in err
    stored = extras()
    assert stored["access_token"] == fake.current_access_token
    assert stored["refresh_token"] == fake.current_refresh_token
    assert stored["division"] == 1001 and stored["division_name"] == "Fake Company NL"
    assert stored["refresh_token"] not in out + err and stored["access_token"] not in out + err

    status = subprocess.run(
        [sys.executable, "-m", "airflow_provider_exactonline.cli", "status", CONN],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert status.returncode == 0, status.stderr
    assert "Status:            ok" in status.stdout and "1001 (Fake Company NL)" in status.stdout
    assert stored["refresh_token"] not in status.stdout


def test_loopback_page_shows_a_refused_code_exchange(airflow_db: None, fake: FakeExactOnline) -> None:
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    put_connection(host=fake.base_url, password="wrong-secret", extra={"redirect_uri": redirect})
    proc = _spawn("authorize", CONN, "--timeout", "60")
    try:
        url, _ = _read_url(proc)
        landing = requests.get(url, timeout=60)
        _out, err = _finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 2
    assert "Authorization failed" in landing.text and "Connected" not in landing.text
    assert "received" not in landing.text.lower()
    error = next(line for line in err.splitlines() if line.startswith("error: "))[len("error: ") :]
    assert html.escape(error) in landing.text  # what the terminal says, with its fix
    assert "wrong-secret" not in landing.text
    assert "access_token" not in extras()


def test_paste_mode_reads_the_redirected_url(airflow_db: None, fake: FakeExactOnline) -> None:
    put_connection(host=fake.base_url, extra={"redirect_uri": PASTE_REDIRECT, "division": 1002})
    proc = _spawn("authorize", CONN, "--timeout", "60", stdin=subprocess.PIPE)
    try:
        url, lines = _read_url(proc)
        _read_until(proc, "Paste the full URL", lines)  # the CLI is now waiting on stdin
        answer = requests.get(url, allow_redirects=False, timeout=30)
        location = answer.headers["Location"]
        assert location.startswith(PASTE_REDIRECT + "?code=")
        assert proc.stdin is not None
        proc.stdin.write(location + "\n")
        proc.stdin.flush()
        _out, err = _finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "tokens stored in connection 'exact_cli'" in err
    stored = extras()
    assert stored["refresh_token"] == fake.current_refresh_token
    assert stored["division"] == 1002  # an existing default division is kept


# ------------------------------------------------------------------------------------------ in-process


class ApprovingStdin(io.StringIO):
    """Stands in for the user: approves the printed URL at the fake and 'pastes' where the browser went."""

    def __init__(self, said: list[str], *, delay: float = 0.0, tamper: Any = None) -> None:
        super().__init__()
        self.said, self.delay, self.tamper = said, delay, tamper

    def readline(self, *args: Any) -> str:  # type: ignore[override]
        url = next(line.strip() for line in self.said if "/api/oauth2/auth?" in line)
        location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
        time.sleep(self.delay)
        return (self.tamper(location) if self.tamper else location) + "\n"


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    messages: list[str] = []
    monkeypatch.setattr(cli, "_say", lambda message="": messages.append(message))
    return messages


def _error(said: list[str]) -> str:
    errors = [line for line in said if line.startswith("error: ")]
    assert len(errors) == 1, said
    return errors[0]


def test_state_mismatch_writes_nothing(airflow_db: None, fake: FakeExactOnline, said: list[str]) -> None:
    put_connection(host=fake.base_url, extra={"redirect_uri": PASTE_REDIRECT})
    stdin = ApprovingStdin(said, tamper=lambda loc: re.sub(r"state=[^&]+", "state=forged", loc))
    assert cli.main(["authorize", CONN], stdin=stdin) == 2
    assert "state mismatch" in _error(said)
    assert "access_token" not in extras()
    assert fake.token_calls == []


def test_expired_code_is_explained(airflow_db: None, said: list[str]) -> None:
    with FakeExactOnline(redirect_uris=[PASTE_REDIRECT], auto_approve=True, authorization_code_lifetime=0.0) as slow:
        put_connection(host=slow.base_url, extra={"redirect_uri": PASTE_REDIRECT})
        assert cli.main(["authorize", CONN, "--paste"], stdin=ApprovingStdin(said, delay=0.05)) == 2
    message = _error(said)
    assert "authorization code" in message and "start the authorization again" in message
    assert "access_token" not in extras()


def test_access_denied_is_explained(airflow_db: None, fake: FakeExactOnline, said: list[str]) -> None:
    put_connection(host=fake.base_url, extra={"redirect_uri": PASTE_REDIRECT})

    def deny(location: str) -> str:
        state = parse_qs(urlsplit(location).query)["state"][0]
        return f"{PASTE_REDIRECT}?error=access_denied&state={state}"

    assert cli.main(["authorize", CONN], stdin=ApprovingStdin(said, tamper=deny)) == 2
    assert "did not grant access" in _error(said)
    assert "access_token" not in extras()


def test_wrong_connection_type(airflow_db: None, said: list[str]) -> None:
    put_connection(conn_type="http", host="example.com")
    assert cli.main(["authorize", CONN]) == 2
    assert "set its type to 'Exact Online' (exactonline)" in _error(said)


def test_missing_client_id(airflow_db: None, fake: FakeExactOnline, said: list[str]) -> None:
    put_connection(host=fake.base_url, login="", extra={"redirect_uri": PASTE_REDIRECT})
    assert cli.main(["authorize", CONN]) == 2
    assert "'Client ID' (login) is empty" in _error(said)


def test_missing_redirect_uri_and_missing_connection(airflow_db: None, fake: FakeExactOnline, said: list[str]) -> None:
    put_connection(host=fake.base_url)
    assert cli.main(["authorize", CONN]) == 2
    assert "no redirect URI" in _error(said) and "--redirect-uri" in said[-1]
    said.clear()
    assert cli.main(["status", "no_such_conn"]) == 2
    assert "not found" in _error(said)


def test_print_json_for_an_env_connection(
    airflow_db: None,
    fake: FakeExactOnline,
    said: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env_conn = {
        "conn_type": "exactonline",
        "host": fake.base_url,
        "login": "fake-client-id",
        "password": "fake-client-secret",
        "extra": {"redirect_uri": PASTE_REDIRECT},
    }
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_ENV", json.dumps(env_conn))
    # Without --print the tokens have nowhere to go: a clear error, before anything is sent to Exact.
    assert cli.main(["authorize", "exact_env"]) == 2
    assert "--print json" in _error(said)
    said.clear()
    assert cli.main(["authorize", "exact_env", "--print", "json"], stdin=ApprovingStdin(said)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["conn_type"] == "exactonline" and printed["password"] == "fake-client-secret"
    assert printed["extra"]["refresh_token"] == fake.current_refresh_token
    assert printed["extra"]["division"] == 1001
    # the printed value is a valid AIRFLOW_CONN_* value that the hook can use
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_ENV", json.dumps(printed))
    from airflow_provider_exactonline.auth.token_state import TokenState
    from airflow_provider_exactonline.auth.token_stores import InMemoryTokenStore
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    hook = ExactOnlineHook("exact_env", token_store=InMemoryTokenStore(TokenState.from_extras(printed["extra"])))
    assert hook.current_user()["CurrentDivision"] == 1001


def test_print_uri(airflow_db: None, fake: FakeExactOnline, said: list[str], capsys: Any) -> None:
    put_connection(host=fake.base_url, extra={"redirect_uri": PASTE_REDIRECT, "division": 1001})
    assert cli.main(["authorize", CONN, "--print", "uri"], stdin=ApprovingStdin(said)) == 0
    uri = capsys.readouterr().out.strip()
    from airflow.models.connection import Connection

    parsed = Connection(uri=uri)
    assert parsed.conn_type == "exactonline" and parsed.extra_dejson["refresh_token"] == fake.current_refresh_token
    assert "access_token" not in extras()  # --print never writes the DB


def test_status_of_a_connection_authorized_in_the_ui(
    airflow_db: None, fake: FakeExactOnline, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    tokens = {"refresh_token": "RT-ui-1", "access_token": "AT-ui-1", "token_obtained_at": now - 60}
    put_connection(host=fake.base_url, extra={**tokens, "token_expires_at": now + 500, "division": 1001})
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    assert cli.main(["status", CONN]) == 0
    report = capsys.readouterr().out
    assert "not set; set extra 'redirect_uri'" not in report and "Problem:" not in report
    assert "the Exact Online page derives <airflow url>/exactonline/callback (fine)" in report

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    assert cli.main(["status", CONN]) == 0
    report = capsys.readouterr().out
    assert (
        "Redirect URI:      https://airflow.example.com/exactonline/callback (the Exact Online page derives it "
        "from [api] base_url; register exactly this in Exact's App Center)"
    ) in report

    put_connection(host=fake.base_url)  # never authorized, nothing to derive from: then it is worth saying
    monkeypatch.delenv("AIRFLOW__API__BASE_URL")
    assert cli.main(["status", CONN]) == 1
    assert "Redirect URI:      not set; set extra 'redirect_uri'" in capsys.readouterr().out


def test_status_json_and_exit_code(airflow_db: None, fake: FakeExactOnline, capsys: Any) -> None:
    put_connection(host=fake.base_url)
    assert cli.main(["status", CONN, "--json"]) == 1  # not authorized -> needs action
    health = json.loads(capsys.readouterr().out)
    assert health["status"] == "not_authorized" and health["authorized"] is False
    now = time.time()
    put_connection(
        host=fake.base_url,
        extra={
            "refresh_token": "RT-secret-1234",
            "access_token": "AT-secret-1234",
            "token_obtained_at": now - 10 * 86400,
            "token_expires_at": now - 9000,
        },
    )
    assert cli.main(["status", CONN]) == 0
    report = capsys.readouterr().out
    assert "Refresh token:     10 d 0 h old" in report and "Access token:      expired" in report
    assert "secret-1234" not in report


# ------------------------------------------------------------------------------------------ never lose a new pair


@pytest.fixture
def no_token_variables(airflow_db: None) -> Iterator[None]:
    from airflow_db import forget_exactonline_variables

    forget_exactonline_variables()
    yield
    forget_exactonline_variables()


def test_tokens_are_stored_before_the_division_lookup(
    airflow_db: None, fake: FakeExactOnline, said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exact's old pair is dead once the code is exchanged: Ctrl-C during the division lookup keeps the new one."""
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    put_connection(host=fake.base_url, extra={"redirect_uri": PASTE_REDIRECT})
    in_db_meanwhile: list[Any] = []

    def interrupted(self: Any) -> dict[str, Any]:
        in_db_meanwhile.append(extras().get("refresh_token"))
        raise KeyboardInterrupt

    monkeypatch.setattr(ExactOnlineHook, "current_user", interrupted)
    assert cli.main(["authorize", CONN], stdin=ApprovingStdin(said)) == 0
    assert in_db_meanwhile == [fake.current_refresh_token]  # already durable when Exact was first called
    stored = extras()
    assert stored["refresh_token"] == fake.current_refresh_token and "division" not in stored
    assert any("Division lookup interrupted" in line for line in said)


def test_a_rotation_during_the_division_lookup_is_kept(
    no_token_variables: None, said: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lookup refreshes (1 s tokens, a slow first call): the DB and --print end with the live pair."""

    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    monkeypatch.setenv("AIRFLOW__EXACTONLINE__TOKEN_LEASE_SETTLE_SECONDS", "0.1")
    original = ExactOnlineHook.current_user
    slowed: list[bool] = []

    def slow_first_call(self: Any) -> dict[str, Any]:
        if not slowed:
            slowed.append(True)
            time.sleep(1.3)  # the 1 s access token expires: the hook must refresh
        return original(self)

    monkeypatch.setattr(ExactOnlineHook, "current_user", slow_first_call)
    with FakeExactOnline(redirect_uris=[PASTE_REDIRECT], auto_approve=True, access_token_lifetime=1.0) as short:
        put_connection(host=short.base_url, extra={"redirect_uri": PASTE_REDIRECT})
        assert cli.main(["authorize", CONN], stdin=ApprovingStdin(said)) == 0
        assert "refresh_token" in [call.grant_type for call in short.token_calls if call.outcome == "ok"]
        stored = extras()
        assert stored["refresh_token"] == short.current_refresh_token  # the rotated pair, not the spent one
        assert stored["division"] == 1001
        from airflow_provider_exactonline.auth.token_stores import VariableTokenStore

        variable = VariableTokenStore(CONN).load()  # encrypted at rest: read through the store
        assert variable is not None and variable.refresh_token == short.current_refresh_token  # both stores written

        slowed.clear()
        said.clear()  # ApprovingStdin approves the first URL said
        put_connection(host=short.base_url, extra={"redirect_uri": PASTE_REDIRECT})
        assert cli.main(["authorize", CONN, "--print", "json"], stdin=ApprovingStdin(said)) == 0
        printed = json.loads(capsys.readouterr().out.splitlines()[-1])  # Airflow's log lines may come first
        assert printed["extra"]["refresh_token"] == short.current_refresh_token
        assert printed["extra"]["division"] == 1001
        assert "access_token" not in extras()  # --print never writes the DB
