"""A federation for console tests: two real bulwarkd nodes with [control] listen (one PKI made
by `bulwarkctl node enroll`), a third listed node that is down, a CaptureServer as next hop,
and a running bulwark-console with users of every role."""

import http.client
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.parse
from pathlib import Path

from conftest import BUILD, BULWARKCTL, REPO, CaptureServer, Daemon, free_ports, run, tcp_accepts, to_toml
from control_client import control_toml, enroll

CONSOLE = os.environ.get("BULWARK_CONSOLE") or str(BUILD / "bulwark-console")
PASSWORD = "correct horse battery"
INVOICE_RULE = {"name": "invoices", "direction": "inbound", "subject": "(?i)invoice",
                "action": "quarantine", "reason": "macro invoice"}


def totp_now(secret: str, offset: int = 0) -> str:
    import base64
    import hashlib
    import hmac
    import struct
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    step = int(time.time()) // 30 + offset
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    o = digest[19] & 15
    return "%06d" % ((struct.unpack(">I", digest[o:o + 4])[0] & 0x7FFFFFFF) % 1_000_000)


def add_user(users_file: Path, name: str, role: str, *extra) -> str:
    cp = subprocess.run([BULWARKCTL, "console", "user", "add", name, "--role", role, "--users-file", str(users_file),
                         *extra], input=PASSWORD + "\n", capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    for line in cp.stdout.splitlines():
        if line.startswith("totp secret: "):
            return line.split(": ", 1)[1]
    return ""


class Federation:
    """`routes` go before the catch-all route to the capture server, `relay_domains` extend
    the relayed domains, `node_extra` (a dict) joins each node's file, `console_extra` the
    [console] section (the console-operations tests use them)."""

    def __init__(self, base: Path, tls_cert, routes=None, relay_domains=(), node_extra=None,
                 console_extra=None):
        self.base = base
        self.pki = enroll(base / "pki", "node1", hosts=("127.0.0.1",))
        enroll(base / "pki", "node2", hosts=("127.0.0.1",))
        self.hop = CaptureServer()
        self.hop.start()
        self.nodes = []
        control_ports = free_ports(3)
        self.control_ports = control_ports
        for name, port in zip(("node1", "node2"), control_ports[:2]):
            files = dict(self.pki, certificate=base / "pki" / f"{name}.pem", private_key=base / "pki" / f"{name}.key")
            extra = control_toml(files, port) + "\n" + to_toml({
                "route": list(routes or []) + [{"domains": ["*"], "next_hops": [self.hop.address], "tls": "none"}],
                "rule": [INVOICE_RULE], **(node_extra or {})})
            d = Daemon(base, name, tls_cert=tls_cert, tls=True,
                       relay={"domains": ["example.com", "example.net", *relay_domains]}, extra_toml=extra)
            d.start()
            self.nodes.append(d)
        self.users_file = base / "console-users"
        self.admin_totp = add_user(self.users_file, "admin", "admin", "--totp")
        add_user(self.users_file, "operator", "operator")
        add_user(self.users_file, "auditor", "auditor")
        add_user(self.users_file, "qnet", "quarantine", "--domain", "example.net")
        self.port = free_ports(1)[0]
        console = {
            "listen": f"127.0.0.1:{self.port}", "users_file": str(self.users_file),
            "certificate": str(tls_cert[0]), "private_key": str(tls_cert[1]),
            "client_certificate": str(self.pki["client_certificate"]),
            "client_private_key": str(self.pki["client_private_key"]), "ca": str(self.pki["ca"]),
            "session_idle": "5m", "login_failures": 5, "login_window": "1m", "node_timeout": "2s",
            "sample_interval": "1s",
            "node": [{"name": "node1", "address": f"127.0.0.1:{control_ports[0]}", "server_name": "node1"},
                     {"name": "node2", "address": f"127.0.0.1:{control_ports[1]}", "server_name": "node2"},
                     {"name": "node3-down", "address": f"127.0.0.1:{control_ports[2]}", "server_name": "node3"}],
            **(console_extra(self.port) if callable(console_extra) else console_extra or {}),
        }
        self.console_config = base / "console.toml"
        self.console_config.write_text(self.nodes[0].config_path.read_text() + "\n" + to_toml({"console": console}))
        self.log = base / "console.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([CONSOLE, "--config", str(self.console_config)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while not tcp_accepts(self.port):
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "console did not start"
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for d in self.nodes:
            d.stop()
        self.hop.stop()

    # -- HTTP against the console
    def request(self, method: str, path: str, body=None, headers=None, form=None):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the session's self-signed test certificate
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=20)
        headers = dict(headers or {})
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            body = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def token(self, user: str, totp: str | None = None) -> str:
        body = {"username": user, "password": PASSWORD}
        if totp:
            body["totp"] = totp
        status, _, answer = self.request("POST", "/api/v1/login", body)
        assert status == 200, (status, answer)
        return json.loads(answer)["token"]

    def api(self, token: str, method: str, path: str):
        status, _, body = self.request(method, path, headers={"Authorization": f"Bearer {token}"})
        return status, (json.loads(body) if body.startswith((b"[", b"{")) else body)
