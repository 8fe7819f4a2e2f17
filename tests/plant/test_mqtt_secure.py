"""MQTT to a broker that wants TLS and a password (a real Mosquitto with its own CA): results
arrive with the right credentials; a wrong password is refused, an alarm naming why, and the line
inspects on."""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Callable
from pathlib import Path

from conftest import Mosquitto
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_mqtt import mqtt_config, rows_by_part
from test_pipeline import line_config, wait_until

from station.app import StationApp
from station.model.patchcore import PatchCore


def write_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it, as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test plant CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )  # fmt: skip
    return paths


def test_tls_and_password(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "broker"
    folder.mkdir()
    ca, cert, key = write_ca_and_server_cert(folder)
    passwd = folder / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "station", "s3cret"], check=True)
    broker = Mosquitto(
        folder, persistence=False,
        extra=["allow_anonymous false", f"password_file {passwd}", f"cafile {ca}",
               f"certfile {cert}", f"keyfile {key}"],
    )  # fmt: skip
    broker.start()
    try:
        base = line_config(demo_product, fps=20.0)
        good = mqtt_config(base, broker.port, username="station", password="s3cret", tls=True,
                           ca_file=str(ca))  # fmt: skip
        station = station_factory(good, tmp_path / "good", model=demo_patchcore, max_frames=6)
        station.start()
        assert station.wait(60)
        wait_until(lambda: station.plant.mqtt.sent >= 6 + 1, 20, "results acknowledged")
        assert station.status().alarms == ()
        assert len(rows_by_part(tmp_path / "good")) == 6

        bad = mqtt_config(base, broker.port, username="station", password="wrong", tls=True,
                          ca_file=str(ca))  # fmt: skip
        station = station_factory(bad, tmp_path / "bad", model=demo_patchcore, max_frames=6)
        station.start()
        wait_until(lambda: bool(station.status().alarms), 20, "the alarm")
        assert "refused the connection: Not authorized" in station.status().alarms[0]
        assert station.wait(60)
        assert len(rows_by_part(tmp_path / "bad")) == 6
    finally:
        broker.stop()
