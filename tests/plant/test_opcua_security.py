"""The OPC UA server with a certificate: only signed and encrypted channels, a client
certificate from the trusted folder accepted, any other refused, no channel without security."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from conftest import free_port
from cryptography.x509.oid import ExtendedKeyUsageOID
from test_opcua import NS, add_users, opcua_config, read
from test_pipeline import line_config

from station.app import StationApp
from station.model.patchcore import PatchCore


def make_cert(folder: Path, name: str, uri: str, use: ExtendedKeyUsageOID) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.pem", folder / f"{name}.der"
    asyncio.run(
        setup_self_signed_certificate(
            key, cert, uri, socket.gethostname(), [use], {"commonName": name}
        )
    )
    return cert, key


def test_with_a_certificate_only_trusted_clients_on_encrypted_channels(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    pki = tmp_path / "pki"
    (pki / "trusted").mkdir(parents=True)
    server_cert, server_key = make_cert(pki, "server", NS, ExtendedKeyUsageOID.SERVER_AUTH)
    good_cert, good_key = make_cert(pki, "plc", "urn:test:plc", ExtendedKeyUsageOID.CLIENT_AUTH)
    bad_cert, bad_key = make_cert(pki, "other", "urn:test:other", ExtendedKeyUsageOID.CLIENT_AUTH)
    shutil.copy(good_cert, pki / "trusted" / "plc.der")
    port = free_port()
    cfg = opcua_config(
        line_config(demo_product, fps=4.0), port, certificate=str(server_cert),
        private_key=str(server_key), trusted_clients=str(pki / "trusted"),
    )  # fmt: skip
    station = station_factory(cfg, model=demo_patchcore)
    add_users(station)
    station.start()
    assert station.plant.opcua.ready(30)
    url = f"opc.tcp://127.0.0.1:{port}/station/"

    async def attempt(cert: Path | None, key: Path | None, uri: str) -> str:
        c = Client(url, timeout=10)
        c.application_uri = uri
        c.set_user("tess")
        c.set_password("4711")
        if cert is not None:
            await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
        try:
            async with c:
                return str(await read(c, "Station.Product"))
        except (ua.UaError, ConnectionError, asyncio.TimeoutError, OSError) as exc:
            return type(exc).__name__

    assert asyncio.run(attempt(good_cert, good_key, "urn:test:plc")) == "demo"
    assert asyncio.run(attempt(bad_cert, bad_key, "urn:test:other")) != "demo"
    assert asyncio.run(attempt(None, None, "urn:test:plain")) != "demo"
