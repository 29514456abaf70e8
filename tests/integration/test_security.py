"""Connection settings real clusters need, on a real broker: SASL PLAIN, SCRAM-SHA-256 and
SCRAM-SHA-512, and TLS verified against a CA file (BRIDGE_KAFKA_SSL_CAFILE)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge_devtools.broker import LocalBroker, free_ports
from tests.support.kafka import read_topic
from tests.support.samples import sample_event

pytestmark = pytest.mark.integration
USER, PASSWORD = "bridge-user", "bridge-password-7f3a"


def _make_ca_and_server_cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway CA (ca.pem) and a server key+cert for 127.0.0.1 (server.pem, Kafka PEM store)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, server_path = folder / "ca.pem", folder / "server.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM)
        + ca.public_bytes(serialization.Encoding.PEM)
    )
    return ca_path, server_path


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalBroker, int, int, Path]]:
    """A broker with PLAINTEXT (inter-broker), SASL_PLAINTEXT and SASL_SSL listeners."""
    certs = tmp_path_factory.mktemp("certs")
    ca_path, server_path = _make_ca_and_server_cert(certs)
    port, sasl_port, ssl_port, cport = free_ports(4)
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    plain = f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}="{PASSWORD}";'
    props = {
        "listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},"
        f"SASL_SSL://127.0.0.1:{ssl_port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},"
        f"SASL_SSL://127.0.0.1:{ssl_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain,
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": scram,
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": plain,
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(server_path),
    }
    scram_users = [
        "--add-scram",
        f"SCRAM-SHA-256=[name={USER},password={PASSWORD}]",
        "--add-scram",
        f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
    ]
    broker = LocalBroker(port=port, controller_port=cport, extra_properties=props, format_args=scram_users)
    broker.start(timeout_s=120)
    yield broker, sasl_port, ssl_port, ca_path
    broker.stop()
    broker.cleanup()


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [("SASL_PLAINTEXT", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512")],
)
async def test_publishes_over_sasl_and_tls(
    secure_broker: Any, start_bridge: Any, protocol: str, mechanism: str
) -> None:
    broker, sasl_port, ssl_port, ca_path = secure_broker
    port = ssl_port if protocol == "SASL_SSL" else sasl_port
    env = {
        "BRIDGE_KAFKA_SECURITY_PROTOCOL": protocol,
        "BRIDGE_KAFKA_SASL_MECHANISM": mechanism,
        "BRIDGE_KAFKA_SASL_USERNAME": USER,
        "BRIDGE_KAFKA_SASL_PASSWORD": PASSWORD,
    }
    if protocol == "SASL_SSL":
        env["BRIDGE_KAFKA_SSL_CAFILE"] = str(ca_path)
    bridge = await start_bridge(f"127.0.0.1:{port}", **env)
    body = sample_event("vc.room.created_v1", event_id=f"sec-{mechanism}")
    assert (await bridge.send(bridge.platform.request(body)))[0] == 200
    # Read back over the plaintext listener: the record is there.
    msgs = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert [json.loads(m.value)["id"] for m in msgs] == [f"sec-{mechanism}"]


async def test_wrong_sasl_password_is_not_ready_and_answers_503(secure_broker: Any, start_bridge: Any) -> None:
    _, sasl_port, _, _ = secure_broker
    bridge = await start_bridge(
        f"127.0.0.1:{sasl_port}",
        wait_ready=False,
        BRIDGE_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        BRIDGE_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        BRIDGE_KAFKA_SASL_USERNAME=USER,
        BRIDGE_KAFKA_SASL_PASSWORD="wrong-password",
    )
    body = sample_event("vc.room.created_v1", event_id="sec-wrong")
    assert (await bridge.send(bridge.platform.request(body)))[0] == 503
    assert (await bridge.get("/readyz"))[0] == 503
