"""The outgoing HTTP client (``dispatched.outbound``) against real sockets: the SSRF filter on
the address actually connected to, keep-alive, bodies cut short, TLS verification."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatched import outbound
from tests.support import answer


@pytest.fixture(autouse=True)
def fresh_pools() -> Iterator[None]:
    """The pools read their settings (CA bundle) once, when they are made."""
    outbound._managers.clear()
    yield
    outbound._managers.clear()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # CG-NAT
        "0.0.0.0",
        "224.0.0.1",
        "192.88.99.1",  # 6to4 relay
        "::1",
        "::",
        "fe80::1%eth0",
        "fc00::1",
        "::ffff:10.0.0.1",  # IPv4-mapped
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "ff02::1",
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
        "fec0::1",  # site-local
    ],
)
def test_forbidden_addresses(address):
    assert outbound.forbidden(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address):
    assert not outbound.forbidden(address)


def fake_dns(monkeypatch, *answers: list[str]) -> list[str]:
    """Answer getaddrinfo with ``answers[i]`` on its i-th call (the last one after that);
    returns the log of names asked for. The connection itself is real."""
    asked: list[str] = []

    def getaddrinfo(host, port, family=0, kind=0, *args):
        asked.append(host)
        ips = answers[min(len(asked), len(answers)) - 1]
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (ip, port, 0, 0) if ":" in ip else (ip, port),
            )
            for ip in ips
        ]

    monkeypatch.setattr(outbound.socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_with_one_private_address_among_public_ones_is_refused(receiver, monkeypatch):
    url = receiver.on("/hook", answer(200)).replace("127.0.0.1", "hooks.example.com")
    fake_dns(monkeypatch, ["8.8.8.8", "127.0.0.1"])
    refused = outbound.post(url, b"{}", {}, 2, False, allow_http=True)
    assert refused.outcome == "refused"
    assert "resolves to a private address (127.0.0.1)" in refused.error
    assert receiver.received() == []


def test_the_connection_goes_to_the_address_that_was_checked(receiver, monkeypatch):
    """One resolution per new connection, and the socket connects to what it returned: a DNS
    answer that changes after the check (rebinding) is never used."""
    url = receiver.on("/hook", answer(200)).replace("127.0.0.1", "hooks.example.com")
    asked = fake_dns(monkeypatch, ["127.0.0.1"], ["127.0.0.2"])  # nothing listens on .2
    checked: list[str] = []
    monkeypatch.setattr(outbound, "forbidden", lambda ip: checked.append(ip) or False)
    for _ in range(3):
        result = outbound.post(url, b"{}", {}, 2, False, allow_http=True)
        assert result.ok, result
    assert asked == ["hooks.example.com"] and checked == ["127.0.0.1"]  # kept alive
    assert len(receiver.received("/hook")) == 3
    assert receiver.received()[0].headers["Host"] == url.split("/")[2]  # the name, not the IP


def test_webhook_urls_are_checked_with_the_same_filter(monkeypatch):
    fake_dns(monkeypatch, ["8.8.8.8", "10.0.0.7"])
    with pytest.raises(outbound.PrivateAddress, match="10.0.0.7"):
        outbound.check_host("hooks.example.com", 443)
    fake_dns(monkeypatch, ["8.8.8.8"])
    outbound.check_host("hooks.example.com", 443)


def test_one_connect_timeout_for_all_the_addresses_of_a_name(monkeypatch):
    """A name with many addresses that never answer costs one connect timeout, not one per
    address: a tenant's DNS must not hold a delivery thread for minutes."""
    import time

    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)  # never accepted: once its queue is full, connection attempts hang
        port = full.getsockname()[1]
        queued = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            queued.append(c)
        time.sleep(0.2)
        fake_dns(monkeypatch, ["127.0.0.1"] * 6)
        monkeypatch.setattr(outbound, "forbidden", lambda ip: False)
        monkeypatch.setattr(outbound, "CONNECT_TIMEOUT", 0.5)
        started = time.monotonic()
        result = outbound.post(
            f"http://hooks.example.com:{port}/", b"{}", {}, 2, False, allow_http=True
        )
        took = time.monotonic() - started
        for c in queued:
            c.close()
    assert result.outcome == "timeout", result
    assert took < 1.4, f"{took:.2f}s: each of the 6 addresses got its own timeout"


def test_connections_are_kept_alive_and_a_body_cut_short_closes_its_own(receiver):
    url = receiver.on("/hook", answer(200))
    big = receiver.on("/big", lambda n: (500, {}, b"x" * (outbound.MAX_READ * 3), 0.0))
    for _ in range(20):
        assert outbound.post(url, b"{}", {}, 2, True, allow_http=True).ok
    assert receiver.connections == 1
    cut = outbound.post(big, b"{}", {}, 2, True, allow_http=True)
    assert cut.http_status == 500 and cut.excerpt == "x" * outbound.EXCERPT_BYTES
    # The rest of that body must not be read as the next answer: its connection was closed.
    after = outbound.post(url, b"{}", {}, 2, True, allow_http=True)
    assert after.ok and after.excerpt == '{"ok": true}', after
    assert receiver.connections == 2


def test_requests_carry_the_default_headers(receiver):
    url = receiver.on("/hook", answer(200))
    sent = {"Content-Type": "application/json", "webhook-id": "msg_1"}
    assert outbound.post(url, b'{"a": 1}', sent, 2, True, allow_http=True).ok
    [got] = receiver.received("/hook")
    assert got.body == b'{"a": 1}' and got.headers["Content-Length"] == "8"
    assert got.headers["User-Agent"] == outbound.USER_AGENT
    assert got.headers["webhook-id"] == "msg_1"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Accept-Encoding"] == "gzip, deflate"


def test_timeouts_and_refused_connections_are_told_apart(receiver):
    slow = receiver.on("/slow", answer(200, delay=2))
    timed_out = outbound.post(slow, b"{}", {}, 0.3, True, allow_http=True)
    assert timed_out.outcome == "timeout" and "timed out after 0.3s" in timed_out.error
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again: nothing listens there
    closed = outbound.post(f"http://127.0.0.1:{port}/", b"{}", {}, 2, True, allow_http=True)
    assert closed.outcome == "connection_error" and "connection failed" in closed.error
    bad = outbound.post("http://exa mple.com/", b"{}", {}, 2, True, allow_http=True)
    assert bad.outcome in ("error", "connection_error"), bad


# --- TLS ---------------------------------------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` only (not 127.0.0.1) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture()
def tls_receiver(tmp_path) -> Iterator[tuple[int, Path, list[str]]]:
    cert, key = self_signed(tmp_path)
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port, cert, seen
    server.shutdown()
    server.server_close()


def test_tls_verifies_the_certificate_against_the_url_host(tls_receiver, monkeypatch):
    port, cert, seen = tls_receiver
    untrusted = outbound.post(f"https://localhost:{port}/", b"{}", {}, 2, True, allow_http=False)
    assert untrusted.outcome == "connection_error" and "CERTIFICATE_VERIFY_FAILED" in (
        untrusted.error or ""
    )
    outbound._managers.clear()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # the operator's own CA, honoured
    trusted = outbound.post(f"https://localhost:{port}/", b"{}", {}, 2, True, allow_http=False)
    assert trusted.outcome == "success" and trusted.http_status == 204, trusted
    # The certificate names localhost, not the address: the host name is what is verified.
    by_ip = outbound.post(f"https://127.0.0.1:{port}/", b"{}", {}, 2, True, allow_http=False)
    assert by_ip.outcome == "connection_error", by_ip
    assert seen == [f"localhost:{port}"]


def test_a_ca_directory_is_honoured_as_requests_did(tls_receiver, tmp_path, monkeypatch):
    """REQUESTS_CA_BUNDLE may name a hashed directory (``c_rehash``), like /etc/ssl/certs."""
    import shutil
    import subprocess

    port, cert, seen = tls_receiver
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(cert, certs / "dispatched-test.pem")
    subprocess.run(["openssl", "rehash", str(certs)], check=True, capture_output=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs))
    sent = outbound.post(f"https://localhost:{port}/", b"{}", {}, 2, True, allow_http=False)
    assert sent.outcome == "success", sent


def test_caller_headers_replace_the_defaults_whatever_their_case(receiver):
    url = receiver.on("/hook", answer(200))
    assert outbound.post(url, b"{}", {"user-agent": "Custom/1"}, 2, True, allow_http=True).ok
    [got] = receiver.received("/hook")
    assert [v for k, v in got.headers.items() if k.lower() == "user-agent"] == ["Custom/1"]


def test_tls_through_the_filter_verifies_the_name_not_the_checked_address(
    tls_receiver, monkeypatch
):
    """With the filter on, the socket connects to the checked address while the certificate
    (and SNI) still use the URL's host name."""
    port, cert, seen = tls_receiver
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    fake_dns(monkeypatch, ["127.0.0.1"])
    monkeypatch.setattr(outbound, "forbidden", lambda ip: ipaddress.ip_address(ip).is_private)
    refused = outbound.post(f"https://localhost:{port}/", b"{}", {}, 2, False, allow_http=False)
    assert refused.outcome == "refused" and seen == []
    monkeypatch.setattr(outbound, "forbidden", lambda ip: False)
    outbound._managers.clear()
    sent = outbound.post(f"https://localhost:{port}/", b"{}", {}, 2, False, allow_http=False)
    assert sent.outcome == "success", sent
    assert seen == [f"localhost:{port}"]
