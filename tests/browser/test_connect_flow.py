"""Real browser, real api-server: log in, create the connection in Airflow's form, Connect, approve, use the tokens.

Starts everything itself: a temporary AIRFLOW_HOME with a migrated SQLite DB, ``airflow api-server`` on a
free port (SimpleAuthManager, admin password from a passwords file), the fake Exact Online server, and
headless Chromium from Debian's ``chromium`` package driven by Playwright. Screenshots go to
``test-artifacts/browser/``. Run: ``pytest -m browser tests/browser``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_exactonline.testing import FakeExactOnline

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser-test-Pa55"
CONN = "exact_browser"


def _ensure_chromium() -> str:
    if not os.path.exists(CHROMIUM) and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=900, check=False
        )
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing and could not be installed (apt-get install chromium, as root)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the 'playwright' Python package is not installed (pip install playwright)")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AirflowServer:
    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.base_url = f"http://127.0.0.1:{port}"
        self.db = home / "airflow.db"
        (home / "dags").mkdir(parents=True)
        (home / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
            "SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__SECRET_KEY": "browser-test-secret-key",
            "AIRFLOW__API_AUTH__JWT_SECRET": "browser-test-jwt-secret-" + "x" * 48,
        }
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        self.log = home / "api-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        migrate = subprocess.run([self.airflow, "db", "migrate"], env=self.env, capture_output=True, timeout=300)
        assert migrate.returncode == 0, migrate.stderr.decode()[-2000:]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [self.airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError("api-server did not start:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group of the process this test started
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def extras(self, conn_id: str) -> dict[str, Any]:
        with sqlite3.connect(self.db) as db:
            row = db.execute("SELECT extra FROM connection WHERE conn_id = ?", (conn_id,)).fetchone()
        assert row is not None, f"connection {conn_id} not in the DB"
        raw = row[0] or "{}"
        if not raw.startswith("{"):  # `airflow db migrate` wrote a fernet_key: extras are encrypted
            import configparser

            from cryptography.fernet import Fernet

            cfg = configparser.ConfigParser(interpolation=None)
            cfg.read(self.home / "airflow.cfg")
            raw = Fernet(cfg["core"]["fernet_key"].encode()).decrypt(raw.encode()).decode()
        return json.loads(raw)


@pytest.fixture(scope="module")
def chromium() -> str:
    return _ensure_chromium()


@pytest.fixture(scope="module")
def airflow_server(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[AirflowServer]:
    server = AirflowServer(tmp_path_factory.mktemp("airflow-browser-home"), _free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake(airflow_server: AirflowServer) -> Iterator[FakeExactOnline]:
    # Only the exact redirect URI Airflow derives is accepted, as in Exact's App Center.
    with FakeExactOnline(
        redirect_uris=[f"{airflow_server.base_url}/exactonline/callback"], allow_any_loopback_redirect=False
    ) as server:
        yield server


@pytest.fixture
def page(chromium: str, tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)  # a cold api-server on a busy machine can take a while to answer
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _log_in(page: Any, base: str, screenshot: str | None = None) -> None:
    page.goto(f"{base}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    if screenshot:
        shot(page, screenshot)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(rf"^{re.escape(base)}/(\?.*)?$"))


def _expect_airflow_nav(page: Any) -> None:
    from playwright.sync_api import expect

    for role, name in (("link", "Dags"), ("link", "Assets"), ("button", "Browse"), ("button", "Admin")):
        expect(page.get_by_role(role, name=name, exact=True)).to_be_visible()


def test_connect_from_the_airflow_ui(page: Any, airflow_server: AirflowServer, fake: FakeExactOnline) -> None:
    from playwright.sync_api import expect

    base = airflow_server.base_url
    # 1. Log in to Airflow.
    _log_in(page, base, screenshot="01-airflow-login")

    # 2. Create the connection in Airflow's own form; the provider's fields are there and labelled.
    page.goto(f"{base}/connections")
    page.get_by_role("button", name=re.compile("Add Connection", re.I)).click()
    page.get_by_label("Connection ID").fill(CONN)
    page.get_by_role("combobox").fill("Exact Online")
    page.get_by_role("option", name="Exact Online", exact=True).click()
    page.get_by_label("Exact Online URL").fill(fake.base_url)
    page.get_by_label("Client ID").fill(fake.client_id)
    page.get_by_label("Client secret").fill(fake.client_secret)
    page.get_by_text("Extra Fields", exact=True).click()
    expect(page.get_by_role("spinbutton", name="Division")).to_be_visible()
    for label in ("Redirect URI", "Access token (written by the provider)", "Refresh token (written by the provider)"):
        # Airflow's form does not tie these labels to their inputs for screen readers; find the field group.
        group = page.get_by_role("group").filter(has=page.get_by_text(label, exact=True))
        expect(group.get_by_role("textbox")).to_be_visible()
    expect(
        page.get_by_text("Must equal the redirect URI registered in Exact's App Center", exact=False)
    ).to_be_visible()
    shot(page, "02-connection-form")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text(CONN, exact=True).first).to_be_visible()
    assert airflow_server.extras(CONN).get("refresh_token") in (None, "")

    # 3. The Exact Online page, through its entry in Airflow's Admin menu: inside Airflow's UI, same tab.
    page.goto(f"{base}/")
    page.get_by_role("button", name="Admin").click()
    page.get_by_role("menuitem", name="Exact Online").click()
    page.wait_for_url(f"{base}/plugin/exactonline")
    _expect_airflow_nav(page)  # Airflow's navigation is around the page
    expect(page.get_by_role("heading", name="Exact Online connections")).to_be_visible()
    assert page.locator("iframe").count() == 0  # rendered by the React app in the main window
    row = page.locator(f"tr[data-conn-id='{CONN}']")
    expect(row.locator("td.status")).to_have_text("Not connected")  # the badge, not said twice
    expect(row).to_contain_text(f"{base}/exactonline/callback")
    shot(page, "03-exactonline-page-in-airflow")

    # 4. Connect -> Exact's consent page (the whole tab goes there) -> Authorize.
    row.get_by_role("link", name="Connect", exact=True).click()
    page.wait_for_url(re.compile(rf"^{re.escape(fake.base_url)}/api/oauth2/auth"))
    expect(page.get_by_role("button", name="Authorize")).to_be_visible()
    shot(page, "04-exact-consent")
    page.get_by_role("button", name="Authorize").click()

    # 5. Back inside Airflow's UI: success, said once, with the default division Exact reported.
    page.wait_for_url(re.compile(rf"^{re.escape(base)}/plugin/exactonline/\?saved="))
    expect(page.get_by_role("status")).to_contain_text(f"Connection {CONN} is connected to Exact Online as Fake User")
    expect(page.get_by_role("status")).to_contain_text("Default division set to 1001 (Fake Company NL)")
    _expect_airflow_nav(page)
    row = page.locator(f"tr[data-conn-id='{CONN}']")
    expect(row.locator("td.status")).to_have_text("Authorized")
    shot(page, "05-connected-in-airflow")
    stored = airflow_server.extras(CONN)
    assert stored["refresh_token"] == fake.current_refresh_token
    assert stored["access_token"] == fake.current_access_token
    assert stored["division"] == 1001
    assert stored["refresh_token"] not in page.content() and stored["access_token"] not in page.content()

    # Another default division, through the chooser (also inside the UI).
    row.get_by_role("link", name="change").click()
    page.wait_for_url(f"{base}/plugin/exactonline/connections/{CONN}/division")
    page.get_by_label("Division").select_option("1002")
    page.get_by_role("button", name="Save default division").click()
    page.wait_for_url(re.compile(rf"^{re.escape(base)}/plugin/exactonline/\?saved="))
    expect(page.get_by_role("status")).to_contain_text(f"Default division of {CONN} set to 1002 (Fake Company BE)")
    expect(page.locator(f"tr[data-conn-id='{CONN}']")).to_contain_text("Fake Company BE")
    shot(page, "06-division-saved")
    assert airflow_server.extras(CONN)["division"] == 1002

    # 6. The hook, in a separate process like a scheduler or CLI, calls the API with the stored tokens.
    before = fake.count_requests("current/Me")
    script = (
        "import json\n"
        "from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook\n"
        f"hook = ExactOnlineHook({CONN!r})\n"
        "me = hook.current_user()\n"
        "accounts = list(hook.iter_records('crm/Accounts', select=['ID', 'Name'], filter='Blocked eq false', top=3))\n"
        "print(json.dumps({'name': me['FullName'], 'division': hook.division, 'accounts': len(accounts),"
        " 'calls': hook.api_calls}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**airflow_server.env, "_AIRFLOW_PROCESS_CONTEXT": "server"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["name"] == "Fake User" and outcome["division"] == 1002 and outcome["calls"] >= 2
    assert fake.count_requests("current/Me") == before + 1
    assert fake.current_refresh_token == stored["refresh_token"]  # no refresh was needed, chain intact


def test_misconfigured_row_and_a_denied_connect(
    page: Any, airflow_server: AirflowServer, fake: FakeExactOnline
) -> None:
    """The wording a newcomer meets when something is wrong, inside Airflow's UI."""
    from playwright.sync_api import expect

    base = airflow_server.base_url
    _log_in(page, base)
    broken, denied = "exact_browser_no_client", "exact_browser_denied"
    for conn_id, login in ((broken, ""), (denied, fake.client_id)):
        created = page.request.post(
            f"{base}/api/v2/connections",
            data={
                "connection_id": conn_id,
                "conn_type": "exactonline",
                "host": fake.base_url,
                "login": login,
                "password": fake.client_secret,
            },
        )
        assert created.status == 201, created.text()

    # A connection without a Client ID: its row says so once and links to the connection in Airflow's list.
    page.goto(f"{base}/plugin/exactonline")
    row = page.locator(f"tr[data-conn-id='{broken}']")
    expect(row.locator("td.status")).to_contain_text("Misconfigured")
    expect(row.locator("td.status")).to_contain_text("Client ID")
    assert row.get_by_role("link", name="Connect", exact=True).count() == 0
    shot(page, "07-misconfigured-row")
    row.get_by_role("link", name="Fix the connection").click()
    page.wait_for_url(f"{base}/connections?name_pattern={broken}")
    listed = page.get_by_role("row").filter(has_text=broken)
    expect(listed).to_have_count(1)
    expect(page.get_by_role("row").filter(has_text=denied)).to_have_count(0)  # filtered to that connection
    listed.get_by_role("button", name="Edit Connection").click()
    expect(page.get_by_label("Client ID")).to_be_visible()  # Airflow's edit form, at the field to fill
    expect(page.get_by_label("Client ID")).to_have_value("")
    shot(page, "08-fix-the-connection")

    # Deny at Exact: back inside Airflow's UI with what happened and what to do.
    page.goto(f"{base}/plugin/exactonline")
    page.locator(f"tr[data-conn-id='{denied}']").get_by_role("link", name="Connect", exact=True).click()
    page.wait_for_url(re.compile(rf"^{re.escape(fake.base_url)}/api/oauth2/auth"))
    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(re.compile(rf"^{re.escape(base)}/plugin/exactonline/\?"))
    failure = page.locator("#failure")
    expect(failure).to_contain_text("Exact Online refused")
    expect(failure).to_contain_text("Access was not granted at Exact Online")
    expect(failure).to_contain_text("Exact said: access_denied. To try again, click Connect")
    assert "access_denied:" not in failure.inner_text()
    _expect_airflow_nav(page)
    shot(page, "09-denied-in-airflow")
    assert not airflow_server.extras(denied).get("refresh_token")


def test_standalone_page_and_the_cli_loopback_page(page: Any, airflow_server: AirflowServer) -> None:
    """The page without Airflow's navigation links back into it; the CLI's page tells the real outcome."""
    from playwright.sync_api import expect

    base = airflow_server.base_url
    _log_in(page, base)
    page.goto(f"{base}/exactonline/")
    expect(page.get_by_role("heading", name="Exact Online connections")).to_be_visible()
    shot(page, "10-standalone-page")
    page.get_by_role("link", name="Open inside Airflow").click()
    page.wait_for_url(f"{base}/plugin/exactonline/")
    _expect_airflow_nav(page)
    # A crafted route cannot make the React app show another same-origin answer (here the API's JSON).
    page.goto(f"{base}/plugin/exactonline/%252e%252e/%252e%252e/api/v2/version")
    expect(page.get_by_role("alert").first).to_be_visible()
    assert "git_version" not in page.content()

    # `airflow-exactonline authorize` with a wrong client secret: the browser must not hear "received".
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        redirect = f"http://127.0.0.1:{sock.getsockname()[1]}/callback"
    conn_id = "exact_browser_cli"
    with FakeExactOnline(redirect_uris=[redirect]) as fake:
        created = page.request.post(
            f"{base}/api/v2/connections",
            data={
                "connection_id": conn_id,
                "conn_type": "exactonline",
                "host": fake.base_url,
                "login": fake.client_id,
                "password": "not-the-secret",
                "extra": json.dumps({"redirect_uri": redirect}),
            },
        )
        assert created.status == 201, created.text()
        cli = subprocess.Popen(
            [str(Path(sys.executable).with_name("airflow-exactonline")), "authorize", conn_id, "--timeout", "120"],
            env={**airflow_server.env, "_AIRFLOW_PROCESS_CONTEXT": "server"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert cli.stderr is not None
            lines: list[str] = []
            while not (url := next((ln.strip() for ln in lines if "/api/oauth2/auth?" in ln), None)):
                line = cli.stderr.readline()
                assert line, "".join(lines)
                lines.append(line)
            page.goto(url)
            page.get_by_role("button", name="Authorize").click()
            page.wait_for_url(re.compile(rf"^{re.escape(redirect)}\?"))
            expect(page.get_by_role("heading", name="Authorization failed")).to_be_visible()
            shot(page, "11-cli-loopback-failed")
            assert "received" not in page.content().lower()
            _out, err = cli.communicate(timeout=120)
        finally:
            if cli.poll() is None:
                os.killpg(cli.pid, signal.SIGTERM)  # the process group this test started
        assert cli.returncode == 2
        error = next(ln for ln in err.splitlines() if ln.startswith("error: "))[len("error: ") :]
        expect(page.locator("p").first).to_have_text(error + ".")  # what the terminal says, with its fix
