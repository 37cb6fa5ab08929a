"""never_reached_server against real sockets: only failures before the request left may be retried."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from airflow_provider_exactonline.transport import never_reached_server


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
