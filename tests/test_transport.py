"""The transport against real sockets: never_reached_server (only failures before the request left may be
retried) and the PageReader (export pages over one kept-alive http.client connection, as requests reads them)."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from airflow_provider_exactonline.transport import PageReader, never_reached_server


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@contextlib.contextmanager
def server(handle: Callable[[socket.socket], None], tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """A one-connection-at-a-time TCP server on loopback; ``handle`` gets each accepted socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with contextlib.suppress(OSError), conn:
                handle(tls.wrap_socket(conn, server_side=True) if tls is not None else conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _read_request(conn: socket.socket) -> None:
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


def _error(url: str, **kwargs) -> requests.RequestException:
    with pytest.raises(requests.RequestException) as caught:
        requests.post(url, data={"refresh_token": "x"}, timeout=kwargs.pop("timeout", 5), **kwargs)
    return caught.value


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_and_unresolvable_never_reached_the_server() -> None:
    assert never_reached_server(_error(f"http://127.0.0.1:{_closed_port()}/token"))
    assert never_reached_server(_error("http://no-such-host.invalid/token"))
    assert never_reached_server(requests.ConnectTimeout())
    refused = requests.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "refused")))  # type: ignore[arg-type]
    assert never_reached_server(refused)


def test_a_rejected_certificate_never_reached_the_server(tmp_path) -> None:
    cert, key = _self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with server(lambda conn: None, tls) as port:
        err = _error(f"https://127.0.0.1:{port}/token")  # our client does not trust the self-signed cert
    assert isinstance(err, requests.exceptions.SSLError)
    assert never_reached_server(err)


def test_failures_after_sending_may_have_reached_the_server(tmp_path) -> None:
    def read_then_hang_up(conn: socket.socket) -> None:
        _read_request(conn)

    def read_then_stall(conn: socket.socket) -> None:
        _read_request(conn)
        time.sleep(1.0)

    with server(read_then_hang_up) as port:
        dropped = _error(f"http://127.0.0.1:{port}/token")
    with server(read_then_stall) as port:
        timed_out = _error(f"http://127.0.0.1:{port}/token", timeout=(5, 0.3))
    cert, key = _self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with server(read_then_hang_up, tls) as port:
        tls_dropped = _error(f"https://127.0.0.1:{port}/token", verify=cert)  # handshake fine, then hung up
    assert isinstance(timed_out, requests.ReadTimeout)
    for err in (dropped, timed_out, tls_dropped, requests.ConnectionError(ProtocolError("aborted"))):
        assert not never_reached_server(err), repr(err)


def _answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Content-Type: application/json", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _keep_alive(answers: list[bytes], then: str = "stay") -> Callable[[socket.socket], None]:
    """Serve ``answers`` one a request on one connection; ``then`` "close" hangs up silently afterwards."""

    def handle(conn: socket.socket) -> None:
        for answer in answers:
            _read_request(conn)
            conn.sendall(answer)
        if then == "stay":
            _read_request(conn)  # until the client closes

    return handle


def test_the_reader_answers_as_requests_does_over_one_connection() -> None:
    from airflow_provider_exactonline.testing import FakeExactOnline

    with FakeExactOnline(rows={"crm/Accounts": 2500}) as fake:
        tokens = fake.issue_tokens()
        headers = {"Authorization": f"Bearer {tokens['access_token']}", "Accept": "application/json"}
        url = f"{fake.base_url}/api/v1/1001/sync/CRM/Accounts?$select=ID,Name,Timestamp&$filter=Timestamp%20gt%201L"
        reader = PageReader(fake.base_url)
        assert (
            reader.serves(url)
            and not reader.serves("http://127.0.0.1:1/x")
            and not reader.serves(fake.base_url + "1/x")
        )
        pages = []
        while url:
            page = reader.get(url, headers)
            expected = requests.get(url, headers=headers, timeout=10)
            assert page.status_code == expected.status_code == 200 and page.content == expected.content
            assert page.json() == expected.json() and page.url == url
            assert page.headers["x-ratelimit-minutely-remaining"] == page.headers["X-RateLimit-Minutely-Remaining"]
            pages.append(page)
            url = page.json()["d"].get("__next")
        reader.close()
    assert len(pages) == 3 and reader.connections == 1  # every page over the one kept-alive connection


def test_a_connection_the_server_closed_between_pages_is_opened_again() -> None:
    body = b'{"d":{"results":[]}}'
    with server(_keep_alive([_answer(body)], then="close")) as port:
        reader = PageReader(f"http://127.0.0.1:{port}")
        first = reader.get(f"http://127.0.0.1:{port}/a", {})
        time.sleep(0.1)  # the server has hung up the kept-alive connection by now
        second = reader.get(f"http://127.0.0.1:{port}/b", {})
    assert first.content == second.content == body and reader.connections == 2


def test_an_answer_that_says_close_closes_the_connection() -> None:
    with server(_keep_alive([_answer(b"{}", "Connection: close")], then="close")) as port:
        reader = PageReader(f"http://127.0.0.1:{port}")
        reader.get(f"http://127.0.0.1:{port}/a", {})
        reader.get(f"http://127.0.0.1:{port}/b", {})
    assert reader.connections == 2


def test_failures_are_connection_errors_that_the_hook_retries() -> None:
    def half_answer(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(_answer(b'{"d":{"results":[1,2,3]}}')[:-10])  # the body cut short

    def stall(conn: socket.socket) -> None:
        _read_request(conn)
        time.sleep(1.0)

    with server(half_answer) as port, pytest.raises(requests.ConnectionError):
        PageReader(f"http://127.0.0.1:{port}").get(f"http://127.0.0.1:{port}/a", {})
    with server(stall) as port, pytest.raises(requests.ConnectionError, match="timed out"):
        PageReader(f"http://127.0.0.1:{port}", timeout=0.3).get(f"http://127.0.0.1:{port}/a", {})
    with pytest.raises(requests.ConnectionError):
        PageReader(f"http://127.0.0.1:{_closed_port()}").get(f"http://127.0.0.1:{_closed_port()}/a", {})


def test_tls_as_requests_does_it(tmp_path) -> None:
    cert, key = _self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with server(_keep_alive([_answer(b"{}")]), tls) as port:
        page = PageReader(f"https://127.0.0.1:{port}", verify=cert).get(f"https://127.0.0.1:{port}/a", {})
    assert page.content == b"{}"
    with (
        server(_keep_alive([_answer(b"{}")]), tls) as port,
        pytest.raises(requests.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        PageReader(f"https://127.0.0.1:{port}").get(f"https://127.0.0.1:{port}/a", {})  # certifi's bundle
    with server(_keep_alive([_answer(b"{}")]), tls) as port:
        page = PageReader(f"https://127.0.0.1:{port}", verify=False).get(f"https://127.0.0.1:{port}/a", {})
    assert page.content == b"{}"


def test_compressed_answers_are_decoded_and_repeated_headers_joined() -> None:
    text = b'{"d":{"results":[]}}' * 50
    gzipper = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    gzipped = gzipper.compress(text) + gzipper.flush()
    answers = [
        _answer(gzipped, "Content-Encoding: gzip", "Reason: a", "Reason: b"),
        _answer(zlib.compress(text), "Content-Encoding: deflate"),
        _answer(b"x", "Content-Encoding: br"),
    ]
    with server(_keep_alive(answers)) as port:
        reader = PageReader(f"http://127.0.0.1:{port}")
        first = reader.get(f"http://127.0.0.1:{port}/a", {})
        assert first.content == text and first.headers["reason"] == "a, b"
        assert reader.get(f"http://127.0.0.1:{port}/b", {}).content == text
        with pytest.raises(requests.exceptions.ContentDecodingError):
            reader.get(f"http://127.0.0.1:{port}/c", {})  # asked for gzip or deflate only
