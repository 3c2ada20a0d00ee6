"""HTTPS at the edge, as a client sees it: the certificate verifies against the scenario's own
CA (and nothing else), plain HTTP redirects, TLS 1.0 and 1.1 are refused, HTTP/2 is offered,
and sessions resume."""

from __future__ import annotations

import socket
import ssl

import pytest
import requests
from conftest import LAB_CA, container_address, host


@pytest.fixture(scope="module")
def lb() -> str:
    return container_address("stack-lb1")


def handshake(address: str, context: ssl.SSLContext, session=None) -> ssl.SSLSocket:
    raw = socket.create_connection((address, 443), timeout=10)
    return context.wrap_socket(raw, server_hostname=address, session=session)


def lab_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(LAB_CA))


def test_the_certificate_verifies_with_the_lab_ca_only(lb):
    reply = requests.get(f"https://{lb}/healthz", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["Strict-Transport-Security"] == "max-age=63072000"
    # The usual trust store knows nothing of the lab's CA: a client that was not handed it
    # refuses the site.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://{lb}/healthz", timeout=10, verify=requests.certs.where())


def test_plain_http_redirects_to_the_same_url_keeping_the_method(lb):
    for method in ("GET", "POST"):
        reply = requests.request(
            method,
            f"http://{lb}/api/v1/users?probe=1",
            json={"handle": "x"},
            allow_redirects=False,
            timeout=10,
        )
        assert reply.status_code == 308, (method, reply.status_code)
        assert reply.headers["Location"] == f"https://{lb}/api/v1/users?probe=1"
        assert "Strict-Transport-Security" not in reply.headers  # only over HTTPS


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_before_1_2_is_refused_by_the_server(lb, version):
    context = lab_context()
    # Let this client offer the old version (its own defaults would not), so the refusal
    # measured is the server's: an alert "protocol version".
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    with pytest.raises(ssl.SSLError) as refused:
        handshake(lb, context).close()
    assert "ALERT_PROTOCOL_VERSION" in str(refused.value).upper().replace(" ", "_"), (
        refused.value
    )


def test_tls_1_2_and_1_3_are_served_with_http2_offered(lb):
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = lab_context()
        context.minimum_version = context.maximum_version = version
        context.set_alpn_protocols(["h2", "http/1.1"])
        with handshake(lb, context) as tls:
            assert tls.version() == version.name.replace("_", "."), tls
            assert tls.selected_alpn_protocol() == "h2"
            assert "GCM" in tls.cipher()[0] or "CHACHA20" in tls.cipher()[0], (
                tls.cipher()
            )


def test_sessions_resume_without_a_full_handshake(lb):
    context = lab_context()
    context.maximum_version = (
        ssl.TLSVersion.TLSv1_2
    )  # a session is known once the handshake ends
    with handshake(lb, context) as first:
        session = first.session
        # A request answered proves the server finished the handshake, and cached the session,
        # before the client resumes it: right after the client's own Finished, HAProxy's thread
        # may not yet have (a loaded machine missed 4 resumptions of 40 that way).
        first.sendall(
            f"GET /healthz HTTP/1.1\r\nHost: {lb}\r\nConnection: close\r\n\r\n".encode()
        )
        assert first.recv(4096).startswith(b"HTTP/1.1 200")
    with handshake(lb, context, session=session) as second:
        assert second.session_reused


def test_the_certificate_file_on_the_load_balancer_is_root_s_alone():
    pem = host("stack-lb1").file("/etc/haproxy/tls/site.pem")
    assert pem.user == "root" and pem.mode == 0o600
    assert host("stack-lb1").file("/etc/haproxy/tls").mode == 0o700
