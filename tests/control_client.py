"""Test helpers for the control federation: enrolment and the control protocol over HTTPS
with mutual TLS (Python's ssl as an independent client)."""

import http.client
import json
import ssl
from pathlib import Path

from conftest import BULWARKCTL, run


def enroll(directory: Path, name: str, hosts=("127.0.0.1",)) -> dict:
    """Runs `bulwarkctl node enroll`; returns the paths it made."""
    args = [BULWARKCTL, "node", "enroll", "--name", name, "--dir", str(directory)]
    for host in hosts:
        args += ["--host", host]
    cp = run(args)
    assert cp.returncode == 0, cp.stderr
    return {
        "ca": directory / "ca.pem",
        "certificate": directory / f"{name}.pem",
        "private_key": directory / f"{name}.key",
        "client_certificate": directory / "console.pem",
        "client_private_key": directory / "console.key",
        "stdout": cp.stdout,
    }


def control_toml(files: dict, port: int) -> str:
    return (f'[control]\nlisten = "127.0.0.1:{port}"\nca = "{files["ca"]}"\n'
            f'certificate = "{files["certificate"]}"\nprivate_key = "{files["private_key"]}"\n')


def tls_context(files: dict, client_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files["ca"]))
    context.check_hostname = False  # the node's certificate names the node, not 127.0.0.1's DNS
    if client_cert:
        context.load_cert_chain(str(files["client_certificate"]), str(files["client_private_key"]))
    return context


def call(files: dict, port: int, request: dict, client_cert: bool = True, path: str = "/control") -> dict:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=tls_context(files, client_cert),
                                             timeout=10)
    try:
        connection.request("POST", path, body=json.dumps(request), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
        return json.loads(body)
    finally:
        connection.close()
