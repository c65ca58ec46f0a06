"""Certificates for the TLS tests, made at test time with the openssl command: two CAs, server
certificates for 127.0.0.1 (one renewed with a new key), and client certificates."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path

    def pem(self) -> tuple[str, str]:
        return self.cert.read_text(), self.key.read_text()


@dataclass(frozen=True)
class Pki:
    ca: KeyPair
    server: KeyPair  # serial 1001
    renewed: KeyPair  # serial 2002, a new key
    client: KeyPair  # by ca, SAN DNS:prometheus.example
    intruder: KeyPair  # by ca, SAN DNS:intruder.example
    ca2: KeyPair
    client2: KeyPair  # by ca2, SAN DNS:prometheus.example


def openssl(directory: Path, *args: str) -> None:
    command = shutil.which("openssl")
    assert command is not None, "the tests make certificates with the openssl command"
    subprocess.run([command, *args], cwd=directory, check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> KeyPair:
    openssl(
        directory,
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2"),
        *("-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    return KeyPair(directory / f"{name}.crt", directory / f"{name}.key")


def _make_cert(
    directory: Path, name: str, ca: KeyPair, *, serial: int, san: str, usage: str
) -> KeyPair:
    (directory / f"{name}.ext").write_text(
        f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
    )
    openssl(
        directory,
        *("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"),
    )
    openssl(
        directory,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca.cert), "-CAkey", str(ca.key)),
        *("-set_serial", str(serial), "-days", "2", "-out", f"{name}.crt"),
        *("-extfile", f"{name}.ext"),
    )
    return KeyPair(directory / f"{name}.crt", directory / f"{name}.key")


def make_pki(directory: Path) -> Pki:
    ca = _make_ca(directory, "ca")
    ca2 = _make_ca(directory, "ca2")
    server = "IP:127.0.0.1,DNS:localhost"
    return Pki(
        ca=ca,
        server=_make_cert(directory, "server", ca, serial=0x1001, san=server, usage="serverAuth"),
        renewed=_make_cert(directory, "renewed", ca, serial=0x2002, san=server, usage="serverAuth"),
        client=_make_cert(
            directory, "client", ca, serial=0x3003, san="DNS:prometheus.example", usage="clientAuth"
        ),
        intruder=_make_cert(
            directory, "intruder", ca, serial=0x4004, san="DNS:intruder.example", usage="clientAuth"
        ),
        ca2=ca2,
        client2=_make_cert(
            directory,
            "client2",
            ca2,
            serial=0x5005,
            san="DNS:prometheus.example",
            usage="clientAuth",
        ),
    )
