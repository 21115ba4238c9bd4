"""A throwaway certificate authority for the TLS tests, made with the ``openssl`` CLI.

``Authority.create(directory)`` makes a CA (P-256, two days); ``issue`` signs
a server certificate for the given DNS names and IP addresses. Everything
lives in ``directory`` and nothing is trusted beyond the test that made it.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CURVE = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("the openssl command is needed to make test certificates")
    subprocess.run([binary, *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Authority:
    directory: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> Authority:
        cert, key = directory / "ca.crt", directory / "ca.key"
        _openssl(
            "req", "-x509", *CURVE, "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=backtrack test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return cls(directory, cert, key)

    def issue(self, name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> Leaf:
        """A server (and client) certificate for ``dns`` names and ``ips``, signed by this CA."""
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        request, extensions = self.directory / f"{name}.csr", self.directory / f"{name}.ext"
        names = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        extensions.write_text(
            f"subjectAltName={','.join(names)}\n"
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl("req", *CURVE, "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}")
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions),
        )  # fmt: skip
        return Leaf(cert, key)

    def context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only, checking host names."""
        return ssl.create_default_context(cafile=str(self.cert))


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path

    @property
    def pair(self) -> tuple[str, str]:
        return str(self.cert), str(self.key)
