"""Username/password and TLS from the configuration, against a mosquitto that requires them."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from tests.support.mosquitto import Mosquitto, free_port
from tests.support.nodes import make_daemon


def make_certificates(directory):
    """A throw-away CA and a server certificate for 127.0.0.1/localhost."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pidaemon test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "server.pem")
    return directory / "ca.pem"


@pytest.fixture
def secured_broker(tmp_path):
    """mosquitto with TLS on one port and a password file; anonymous clients refused."""
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = make_certificates(certs)
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "node", "s3cret"], check=True)
    tls_port = free_port()
    broker = Mosquitto(tmp_path / "broker", extra=(
        f"password_file {passwd}\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {ca}\ncertfile {certs / 'server.pem'}\nkeyfile {certs / 'server.key'}\n"
    ))
    broker.config_file.write_text(broker.config_file.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    broker.tls_port, broker.ca = tls_port, ca
    yield broker
    broker.stop()


def connect_once(node_id, url, timeout=5, **mqtt):
    async def scenario():
        daemon = make_daemon(node_id, url, **mqtt)
        await daemon.start()
        ok = await daemon.bus.wait_connected(timeout)
        await daemon.shutdown()
        return ok
    return asyncio.run(scenario())


def test_password_is_required_and_accepted(secured_broker, tmp_path, caplog):
    assert connect_once("anon", secured_broker.url, timeout=2) is False
    assert any("refused the connection" in r.getMessage() and "Not authorized" in r.getMessage()
               for r in caplog.records)
    assert connect_once("withpw", secured_broker.url, username="node", password="s3cret")
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("s3cret\n")
    assert connect_once("withfile", secured_broker.url, username="node", password_file=str(password_file))


def test_tls_with_the_clusters_ca(secured_broker):
    url = f"mqtts://localhost:{secured_broker.tls_port}"
    assert connect_once("tls", url, username="node", password="s3cret", tls={"ca_file": str(secured_broker.ca)})


def test_tls_with_an_unknown_ca_is_refused(secured_broker, tmp_path, caplog):
    other = tmp_path / "other"
    other.mkdir()
    wrong_ca = make_certificates(other)
    url = f"mqtts://localhost:{secured_broker.tls_port}"
    assert connect_once("badtls", url, timeout=2, username="node", password="s3cret",
                        tls={"ca_file": str(wrong_ca)}) is False
    assert any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() for r in caplog.records)
