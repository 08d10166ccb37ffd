"""Outbound transport security (issue 13): DANE, MTA-STS, TLS-RPT, REQUIRETLS, and
`bulwarkctl tls policy`, black-box with real processes on loopback only.

The cast, per test:
- the sender: a bulwarkd whose route for example.net delivers by MX (`tls = "dane"`,
  `"mta-sts"` or the `[tls_policy] mx_order`), its MX port set to the receiver (or proxy);
- the receiver: a second bulwarkd with STARTTLS and a certificate for mx.example.net from a
  test CA; it keeps what it gets (its own onward route is a closed port), so its queue and
  the Received header it wrote show what arrived and whether TLS carried it;
- DNS: for DANE a DNSSEC-signed example.net zone (ldns-keygen, ldns-signzone) served by
  Debian's nsd on a free loopback port, its key the sender's `dnssec_trust_anchor`; for
  MTA-STS the stdlib test DNS server (tests/dns_server.py), unsigned;
- an HTTPS server for https://mta-sts.example.net/.well-known/mta-sts.txt (a certificate
  from the same CA, given as `mta_sts_ca_file`; its port as `mta_sts_port`), counting fetches;
- a STARTTLS-stripping proxy between sender and receiver where a test needs an attacker.
Every wait is bounded; every socket has a timeout.
"""

from __future__ import annotations

import base64
import email
import email.policy
import gzip
import hashlib
import http.server
import json
import re
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from conftest import (RawSession, ThreadedServer, cert_der, delivery_toml, ehlo_keywords, expect,
                      free_port, make_message, mid, parse_dsn, queue_id_of, run, send_message,
                      tcp_accepts, to_toml, wait_queue_empty, wait_queue_len, wait_until)
from dnssec_zone import Nsd, SignedZone, missing_tools
from test_delivery import bounce_route, make_ca, make_server_cert

DOMAIN = "example.net"
MX_HOST = "mx.example.net"
STS_HOST = "mta-sts.example.net"
RCPT = "alice@example.net"


# --------------------------------------------------------------------------------------------
# Certificates: one test CA, the receiver's certificate (with the CA in its chain, for
# DANE-TA), the MTA-STS web server's certificate
# --------------------------------------------------------------------------------------------


class Pki:
    def __init__(self, directory: Path):
        self.ca, ca_key = make_ca(directory, "ca")
        (directory / "mx").mkdir()
        (directory / "sts").mkdir()
        mx_cert, self.mx_key = make_server_cert(directory / "mx", self.ca, ca_key, MX_HOST)
        self.mx_cert = mx_cert
        self.mx_chain = directory / "mx" / "chain.pem"
        self.mx_chain.write_text(mx_cert.read_text() + self.ca.read_text())
        self.sts_cert, self.sts_key = make_server_cert(directory / "sts", self.ca, ca_key, STS_HOST)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def spki_sha256(cert: Path) -> str:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (TLSA selector 1, matching 1)."""
    cp = run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"], timeout=20)
    assert cp.returncode == 0, cp.stderr
    der = base64.b64decode("".join(l for l in cp.stdout.splitlines() if "-----" not in l))
    return hashlib.sha256(der).hexdigest()


def cert_sha256(cert: Path) -> str:
    """SHA-256 of the whole certificate (TLSA selector 0, matching 1)."""
    return hashlib.sha256(cert_der(cert)).hexdigest()


# --------------------------------------------------------------------------------------------
# Daemons
# --------------------------------------------------------------------------------------------


def start_receiver(start_daemon, base: Path, pki: Pki, port: int | None = None, tls: bool = True,
                   cert: tuple[Path, Path] | None = None, extra_toml: str = ""):
    """The next hop: accepts example.net, keeps it; STARTTLS with mx.example.net's chain
    (or `cert`, a (certificate, key) pair)."""
    listeners = [{"role": "mx", "address": f"127.0.0.1:{port or free_port()}"}]
    chain, key = cert or (pki.mx_chain, pki.mx_key)
    tls_section = {"certificate": str(chain), "private_key": str(key)} if tls else None
    if "[tls_policy]" not in extra_toml:  # its state under the test's directory, not /var/lib
        extra_toml += "\n" + to_toml({"tls_policy": {"state_dir": str(base / "receiver-tls")}})
    return start_daemon(base, name="receiver", listeners=listeners, tls=tls_section,
                        relay={"domains": [DOMAIN]}, extra_toml=extra_toml)


def start_sender(start_daemon, base: Path, dns_address: str, routes: list[dict], mx_port: int,
                 tls_policy: dict | None = None, name: str = "sender"):
    """The gateway under test: relays for 127.0.0.1, STARTTLS offered (for REQUIRETLS
    submissions), MX delivery to `mx_port`, `[tls_policy]` with its state under `base`."""
    policy = {"state_dir": str(base / f"{name}-tls"), **(tls_policy or {})}
    extra = delivery_toml(routes, {"mx_port": mx_port}, [dns_address]) + "\n" + to_toml({"tls_policy": policy})
    return start_daemon(base, name=name, tls=True, extra_toml=extra,
                        relay={"trusted_networks": ["127.0.0.1/32"]})


def received_messages(receiver, n: int = 1, timeout: float = 25.0) -> list[str]:
    """The receiver's queued messages as `queue show` prints them (headers included)."""
    entries = wait_queue_len(receiver, n, timeout)
    return [receiver.queue_show(e["id"]) for e in entries]


def wait_deferred(d, qid: str, attempts: int = 2, timeout: float = 25.0) -> dict:
    """The queue entry once it was tried `attempts` times and still waits, with a reason."""
    def deferred():
        e = d.queue_entry(qid)
        return e if e and e.get("attempts", 0) >= attempts and e.get("last_error") else None
    return wait_until(deferred, timeout, interval=0.2,
                      what=lambda: f"{attempts} deferred attempts of {qid}: {d.queue_entry(qid)}")


def tls_policy_json(d, domain: str = DOMAIN) -> dict:
    cp = d.ctl("tls", "policy", domain, "--json")
    assert cp.returncode == 0, f"bulwarkctl tls policy --json failed: {cp.stderr}{cp.stdout}"
    return json.loads(cp.stdout)


def rpt_failures(policy: dict) -> dict[str, int]:
    counters = policy.get("tls_rpt") or {}
    out: dict[str, int] = {}
    for f in counters.get("failures") or []:
        out[f["result-type"]] = out.get(f["result-type"], 0) + f["count"]
    return out


def assert_tls_received(shown: str) -> None:
    assert re.search(r"\bwith ESMTPS\b", shown), f"the receiver's Received header does not say ESMTPS:\n{shown}"
    assert re.search(r"using TLS", shown), f"the receiver's Received header names no TLS version:\n{shown}"


# --------------------------------------------------------------------------------------------
# DANE: the signed zone
# --------------------------------------------------------------------------------------------


@pytest.fixture
def signed_zone(tmp_path):
    """Factory: signed_zone(port, tlsa=[...], corrupt=None) -> running Nsd for example.net
    (MX 10 mx.example.net, mx A 127.0.0.1, TLSA at _PORT._tcp.mx); corrupt="TLSA" or "MX"
    gives that RRset a bogus signature."""
    missing = missing_tools()
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: apt-get install ldnsutils nsd", pytrace=False)
    servers: list[Nsd] = []

    def _make(port: int, tlsa: list[str], corrupt: str | None = None) -> Nsd:
        zone = SignedZone(tmp_path / "zone", DOMAIN)
        records = ["@ IN MX 10 mx", "mx IN A 127.0.0.1"] + [f"_{port}._tcp.mx IN TLSA {t}" for t in tlsa]
        owner = {"TLSA": f"_{port}._tcp.{MX_HOST}.", "MX": f"{DOMAIN}.", None: None}[corrupt]
        zone.sign(records, corrupt=(owner, corrupt) if corrupt else None)
        server = Nsd(tmp_path / "nsd", zone).start()
        servers.append(server)
        return server

    yield _make
    for s in servers:
        s.stop()


def dane_policy(nsd: Nsd) -> dict:
    return {"dnssec_trust_anchor": str(nsd.zone.trust_anchor)}


def dane_routes(bounces, tls: str | None = "dane") -> list[dict]:
    r = {"domains": [DOMAIN]}
    if tls is not None:
        r["tls"] = tls
    return [bounce_route(bounces), r]


# --------------------------------------------------------------------------------------------
# MTA-STS: the policy's web server
# --------------------------------------------------------------------------------------------


def sts_policy_text(mode: str = "enforce", mx=(MX_HOST,), max_age: int = 86400) -> str:
    return "version: STSv1\r\n" + f"mode: {mode}\r\n" + "".join(f"mx: {m}\r\n" for m in mx) + \
        f"max_age: {max_age}\r\n"


class StsServer:
    """HTTPS on 127.0.0.1:port serving `policy` at /.well-known/mta-sts.txt; `fetches` counts
    the GETs of that path. `policy = None` answers 404."""

    def __init__(self, pki: Pki, policy: str | None):
        self.policy = policy
        self.fetches = 0
        # TLS-RPT reports POSTed to it (an `https:` rua): (path, content type, body).
        self.posts: list[tuple[str, str, bytes]] = []
        self.port = free_port()
        self.lock = threading.Lock()
        self.httpd: http.server.ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(pki.sts_cert), str(pki.sts_key))

    def start(self) -> "StsServer":
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self):
                body = None
                if self.path == "/.well-known/mta-sts.txt":
                    with server.lock:
                        server.fetches += 1
                        body = server.policy
                if body is None:
                    self.send_error(404)
                    return
                raw = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self):
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                body = self.rfile.read(length)
                with server.lock:
                    server.posts.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = self.ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.socket.settimeout(10)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            if self.thread:
                self.thread.join(5)
            self.httpd = None


@pytest.fixture
def sts_server(pki):
    made: list[StsServer] = []

    def _make(policy: str | None) -> StsServer:
        s = StsServer(pki, policy).start()
        made.append(s)
        return s

    yield _make
    for s in made:
        s.stop()


def sts_dns(dns, sts_id: str = "20261203a", rua: str | None = None) -> None:
    """example.net's MX, the _mta-sts record and mta-sts.example.net in the unsigned test DNS."""
    records = {
        DOMAIN: {"MX": [(10, MX_HOST)]},
        MX_HOST: {"A": ["127.0.0.1"]},
        STS_HOST: {"A": ["127.0.0.1"]},
        f"_mta-sts.{DOMAIN}": {"TXT": [f"v=STSv1; id={sts_id};"]},
    }
    if rua:
        records[f"_smtp._tls.{DOMAIN}"] = {"TXT": [f"v=TLSRPTv1; rua={rua}"]}
    dns.set_records(records)


def sts_config(pki: Pki, sts: StsServer, **extra) -> dict:
    return {"mta_sts_ca_file": str(pki.ca), "mta_sts_port": sts.port, "mta_sts_fetch_timeout": "5s", **extra}


def sts_routes(bounces, extra_routes=()) -> list[dict]:
    return [bounce_route(bounces), *extra_routes, {"domains": [DOMAIN], "tls": "mta-sts"}]


# --------------------------------------------------------------------------------------------
# The attacker: a proxy that removes STARTTLS from the EHLO reply
# --------------------------------------------------------------------------------------------


class StripTlsProxy(ThreadedServer):
    """Forwards 127.0.0.1:port to the upstream port, deleting every STARTTLS line from the
    server's replies (and fixing the last line's separator). `client_bytes` is everything
    the client sent: what would have crossed the network in clear."""

    def __init__(self, upstream_port: int, port: int | None = None):
        super().__init__("127.0.0.1", port)
        self.upstream_port = upstream_port
        self.client_bytes = bytearray()
        self.stripped = 0

    def _session(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
        except OSError:
            conn.close()
            return
        conn.settimeout(30)
        upstream.settimeout(30)
        threading.Thread(target=self._client_to_server, args=(conn, upstream), daemon=True).start()
        self._server_to_client(upstream, conn)

    def _client_to_server(self, conn, upstream) -> None:
        try:
            while not self._stop.is_set():
                chunk = conn.recv(65536)
                if not chunk:
                    break
                with self.lock:
                    self.client_bytes += chunk
                upstream.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (conn, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _server_to_client(self, upstream, conn) -> None:
        buf = b""
        reply: list[bytes] = []
        try:
            while not self._stop.is_set():
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    reply.append(line)
                    if line[3:4] == b"-":
                        continue
                    kept = [l for l in reply if l[4:].strip().upper() != b"STARTTLS"]
                    if len(kept) < len(reply):
                        with self.lock:
                            self.stripped += 1
                    if kept:
                        kept = [l[:3] + b"-" + l[4:] for l in kept[:-1]] + [kept[-1][:3] + b" " + kept[-1][4:]]
                        conn.sendall(b"".join(l + b"\r\n" for l in kept))
                    reply = []
        except OSError:
            pass
        finally:
            for s in (conn, upstream):
                try:
                    s.close()
                except OSError:
                    pass

    def sent_in_clear(self) -> bytes:
        with self.lock:
            return bytes(self.client_bytes)


@pytest.fixture
def strip_proxy():
    made: list[StripTlsProxy] = []

    def _make(upstream_port: int) -> StripTlsProxy:
        p = StripTlsProxy(upstream_port).start()
        made.append(p)
        return p

    yield _make
    for p in made:
        p.stop()


def assert_nothing_sent_through(proxy: StripTlsProxy) -> None:
    assert proxy.connections >= 1, "the sender never connected through the proxy: the test proved nothing"
    assert proxy.stripped >= 1, "the proxy never removed STARTTLS from a reply"
    clear = proxy.sent_in_clear()
    assert b"MAIL FROM" not in clear.upper() and b"DATA" not in clear.upper(), \
        f"the sender sent a transaction in clear through the stripping proxy: {clear!r}"


# ============================================================================================
# 1-2: DANE with a signed zone
# ============================================================================================


@pytest.mark.parametrize("usage", ["3 1 1", "2 0 1", "2 1 1"])
def test_dane_matching_tlsa_delivers_over_tls(usage, start_daemon, signed_zone, sink, pki, tmp_path):
    port = free_port()
    data = {"3 1 1": spki_sha256(pki.mx_cert), "2 0 1": cert_sha256(pki.ca), "2 1 1": spki_sha256(pki.ca)}[usage]
    nsd = signed_zone(port, [f"{usage} {data}"])
    receiver = start_receiver(start_daemon, tmp_path, pki, port)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, nsd.address, dane_routes(bounces), port, dane_policy(nsd))
    m = mid("dane", int(usage[0]))
    qid = send_message(d, rcpts=(RCPT,), message_id=m, subject=f"dane {usage}")
    shown = received_messages(receiver)[0]
    assert m in shown, shown
    assert_tls_received(shown)
    wait_queue_empty(d, 10)
    assert bounces.count() == 0
    policy = tls_policy_json(d)
    assert policy["dnssec_mx"] is True, f"the signed MX answer was not DNSSEC-secure: {policy}"
    host = policy["hosts"][0]
    assert (host["host"], host["port"], host["policy"]) == (MX_HOST, port, "dane"), policy
    assert "secure usable TLSA" in host["why"], policy
    assert (policy["tls_rpt"] or {}).get("successes", 0) >= 1, f"no TLS-RPT success counted for {qid}: {policy}"
    assert not rpt_failures(policy), policy


def test_dane_wrong_tlsa_defers_never_sends(start_daemon, signed_zone, sink, pki, tmp_path):
    port = free_port()
    other_key = hashlib.sha256(b"not the receiver's key").hexdigest()
    nsd = signed_zone(port, [f"3 1 1 {other_key}"])
    receiver = start_receiver(start_daemon, tmp_path, pki, port)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, nsd.address, dane_routes(bounces), port, dane_policy(nsd))
    qid = send_message(d, rcpts=(RCPT,), message_id=mid("danewrong"))
    entry = wait_deferred(d, qid)
    assert re.search(r"(?i)tlsa", entry["last_error"]), f"last_error does not say TLSA: {entry}"
    assert receiver.queue_list() == [], "delivered to a host whose certificate matches no TLSA record"
    assert bounces.count() == 0, "a DANE mismatch bounced instead of waiting"
    policy = tls_policy_json(d)
    assert policy["hosts"][0]["policy"] == "dane", policy
    assert rpt_failures(policy).get("validation-failure", 0) >= 1, policy


def test_dane_bogus_signature_defers_not_sent_in_clear(start_daemon, signed_zone, sink, pki, tmp_path):
    """The TLSA record would match, but its signature does not verify: not DANE, not a
    fallback to opportunistic TLS either (which would deliver to the receiver)."""
    port = free_port()
    nsd = signed_zone(port, [f"3 1 1 {spki_sha256(pki.mx_cert)}"], corrupt="TLSA")
    receiver = start_receiver(start_daemon, tmp_path, pki, port)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, nsd.address, dane_routes(bounces), port, dane_policy(nsd))
    qid = send_message(d, rcpts=(RCPT,), message_id=mid("danebogus"))
    entry = wait_deferred(d, qid)
    assert re.search(r"(?i)validation", entry["last_error"]), f"last_error does not say why: {entry}"
    assert receiver.queue_list() == [], "delivered although the TLSA answer was bogus"
    assert bounces.count() == 0
    policy = tls_policy_json(d)
    assert policy["hosts"][0]["policy"] == "refused (dnssec-invalid)", policy
    assert rpt_failures(policy).get("dnssec-invalid", 0) >= 1, policy


def test_dane_ee_ignores_the_certificate_name_and_issuer(start_daemon, signed_zone, sink, pki, tls_cert, tmp_path):
    """DANE-EE (3 1 1) pins the key: a self-signed certificate for another name is fine
    (RFC 7672 3.1.1), and the record alone authenticates it."""
    port = free_port()
    nsd = signed_zone(port, [f"3 1 1 {spki_sha256(tls_cert[0])}"])
    receiver = start_receiver(start_daemon, tmp_path, pki, port, cert=tls_cert)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, nsd.address, dane_routes(bounces), port, dane_policy(nsd))
    m = mid("daneself")
    send_message(d, rcpts=(RCPT,), message_id=m)
    shown = received_messages(receiver)[0]
    assert m in shown
    assert_tls_received(shown)
    assert tls_policy_json(d)["hosts"][0]["policy"] == "dane"


def test_dane_bogus_mx_signature_defers(start_daemon, signed_zone, sink, pki, tmp_path):
    """The MX answer itself fails validation: DANE cannot trust the host names, and a bogus
    answer is an attack or a broken zone, never a reason to fall back to opportunistic TLS."""
    port = free_port()
    nsd = signed_zone(port, [f"3 1 1 {spki_sha256(pki.mx_cert)}"], corrupt="MX")
    receiver = start_receiver(start_daemon, tmp_path, pki, port)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, nsd.address, dane_routes(bounces), port, dane_policy(nsd))
    qid = send_message(d, rcpts=(RCPT,), message_id=mid("danebogusmx"))
    entry = wait_deferred(d, qid)
    assert re.search(r"(?i)dnssec|validation", entry["last_error"]), f"last_error does not say why: {entry}"
    assert receiver.queue_list() == [], "delivered although the MX answer was bogus"
    assert bounces.count() == 0
    policy = tls_policy_json(d)
    assert policy["hosts"][0]["policy"] == "refused (dnssec-invalid)", policy


def test_dane_secure_denial_of_tlsa_falls_back_to_opportunistic(start_daemon, signed_zone, sink, pki, tmp_path):
    """A signed zone that proves there is no TLSA record: DANE does not apply (RFC 7672
    2.2.3), the route's fallback (opportunistic TLS) delivers."""
    port = free_port()
    nsd = signed_zone(port, [])
    receiver = start_receiver(start_daemon, tmp_path, pki, port)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, nsd.address, dane_routes(bounces), port, dane_policy(nsd))
    m = mid("danenone")
    send_message(d, rcpts=(RCPT,), message_id=m)
    shown = received_messages(receiver)[0]
    assert m in shown
    assert_tls_received(shown)
    policy = tls_policy_json(d)
    assert policy["dnssec_mx"] is True, policy
    assert policy["hosts"][0]["policy"] == "opportunistic", policy


def test_dane_unusable_tlsa_set_defers(start_daemon, signed_zone, sink, pki, tmp_path):
    """Only PKIX usages (0, 1), which RFC 7672 3.1.3 forbids for SMTP: secure but unusable,
    so the host is refused, not used without DANE."""
    port = free_port()
    nsd = signed_zone(port, [f"1 1 1 {spki_sha256(pki.mx_cert)}", f"0 0 1 {cert_sha256(pki.ca)}"])
    receiver = start_receiver(start_daemon, tmp_path, pki, port)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, nsd.address, dane_routes(bounces), port, dane_policy(nsd))
    qid = send_message(d, rcpts=(RCPT,), message_id=mid("daneunusable"))
    entry = wait_deferred(d, qid)
    assert re.search(r"(?i)none is usable", entry["last_error"]), entry
    assert receiver.queue_list() == [], "delivered although no TLSA record was usable"
    assert bounces.count() == 0
    policy = tls_policy_json(d)
    assert policy["hosts"][0]["policy"] == "refused (tlsa-invalid)", policy
    assert rpt_failures(policy).get("tlsa-invalid", 0) >= 1, policy


def test_default_order_without_dnssec_falls_back_to_opportunistic(start_daemon, dns, sink, pki, tmp_path):
    """The default mx_order (DANE, MTA-STS, opportunistic) against a DNS server that knows
    nothing of DNSSEC: no TLSA trusted, no policy, no refusal either; opportunistic TLS."""
    receiver = start_receiver(start_daemon, tmp_path, pki)
    dns.set_records({DOMAIN: {"MX": [(10, MX_HOST)]}, MX_HOST: {"A": ["127.0.0.1"]}})
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, dns.address, dane_routes(bounces, tls=None), receiver.port)
    m = mid("defaultorder")
    send_message(d, rcpts=(RCPT,), message_id=m)
    shown = received_messages(receiver)[0]
    assert m in shown
    assert_tls_received(shown)
    policy = tls_policy_json(d)
    assert policy["order"] == ["dane", "mta-sts", "opportunistic"], policy
    assert policy["dnssec_mx"] is False and policy["mta_sts"] is None, policy
    assert policy["hosts"][0]["policy"] == "opportunistic", policy


# ============================================================================================
# 3: STARTTLS stripped by an attacker
# ============================================================================================


def test_starttls_stripped_under_dane_defers(start_daemon, signed_zone, strip_proxy, sink, pki, tmp_path):
    receiver = start_receiver(start_daemon, tmp_path, pki)
    proxy = strip_proxy(receiver.port)
    nsd = signed_zone(proxy.port, [f"3 1 1 {spki_sha256(pki.mx_cert)}"])
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, nsd.address, dane_routes(bounces), proxy.port, dane_policy(nsd))
    qid = send_message(d, rcpts=(RCPT,), message_id=mid("danestrip"))
    entry = wait_deferred(d, qid)
    assert re.search(r"(?i)starttls", entry["last_error"]), f"last_error: {entry}"
    assert_nothing_sent_through(proxy)
    assert receiver.queue_list() == []
    assert bounces.count() == 0
    counted = rpt_failures(tls_policy_json(d)).get("starttls-not-supported", 0)
    assert counted >= 1
    # The counters are saved every minute and at shutdown: a restart within the minute
    # loses no session counted (the saved file is read with the daemon stopped).
    d.stop()
    saved = json.loads((tmp_path / "sender-tls" / "tlsrpt.json").read_text())
    failures = saved["domains"][DOMAIN]["failures"]
    kept = sum(n for f, n in failures if f["result_type"] == "starttls-not-supported")
    assert kept >= counted, saved
    assert all(f["sending_mta_ip"] == "127.0.0.1" for f, _ in failures), saved


def test_starttls_stripped_under_mta_sts_enforce_defers(start_daemon, dns, sts_server, strip_proxy, sink,
                                                        pki, tmp_path):
    receiver = start_receiver(start_daemon, tmp_path, pki)
    proxy = strip_proxy(receiver.port)
    sts = sts_server(sts_policy_text("enforce"))
    sts_dns(dns)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, dns.address, sts_routes(bounces), proxy.port, sts_config(pki, sts))
    qid = send_message(d, rcpts=(RCPT,), message_id=mid("stsstrip"))
    entry = wait_deferred(d, qid)
    assert re.search(r"(?i)starttls", entry["last_error"]), f"last_error: {entry}"
    assert sts.fetches >= 1, "the MTA-STS policy was never fetched"
    assert_nothing_sent_through(proxy)
    assert receiver.queue_list() == []
    assert bounces.count() == 0
    policy = tls_policy_json(d)
    assert policy["hosts"][0]["policy"] == "mta-sts enforce", policy
    assert rpt_failures(policy).get("starttls-not-supported", 0) >= 1, policy


def tlsrpt_report(transaction: dict) -> dict:
    """The RFC 8460 JSON inside a captured report mail (application/tlsrpt+gzip)."""
    data = transaction["data"]
    raw = data[:-3] if data.endswith(b".\r\n") else data
    raw = re.sub(rb"(?m)^\.\.", b".", raw)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    parts = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert parts, f"no application/tlsrpt+gzip part in the report mail:\n{raw[:2000]!r}"
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    return json.loads(gzip.decompress(parts[0].get_payload(decode=True)))


def test_starttls_stripped_under_mta_sts_testing_delivers_and_reports(start_daemon, dns, sts_server, strip_proxy,
                                                                      capture_server, sink, pki, tmp_path):
    receiver = start_receiver(start_daemon, tmp_path, pki)
    proxy = strip_proxy(receiver.port)
    sts = sts_server(sts_policy_text("testing"))
    sts_dns(dns, rua="mailto:tls-reports@reports.test")
    reports = capture_server()
    bounces = sink("bounces")
    routes = sts_routes(bounces, [{"domains": ["reports.test"], "next_hops": [reports.address], "tls": "none"}])
    d = start_sender(start_daemon, tmp_path, dns.address, routes, proxy.port,
                     sts_config(pki, sts, report={"interval": "3s", "organization": "Bulwark Test"}))
    m = mid("ststesting")
    send_message(d, rcpts=(RCPT,), message_id=m)
    shown = received_messages(receiver)[0]
    assert m in shown
    assert re.search(r"\bwith ESMTP\b", shown) and not re.search(r"ESMTPS", shown), \
        f"expected a plaintext delivery through the stripping proxy:\n{shown}"
    assert proxy.stripped >= 1
    reports.wait_for(1, timeout=30)
    report = tlsrpt_report(reports.transactions[0])
    assert b"tls-reports@reports.test" in reports.transactions[0]["rcpts"][0]
    policy = report["policies"][0]
    assert policy["policy"]["policy-type"] == "sts", report
    assert policy["policy"]["policy-domain"] == DOMAIN, report
    assert "mode: testing" in policy["policy"]["policy-string"], report
    assert policy["summary"]["total-failure-session-count"] >= 1, report
    details = {f["result-type"]: f for f in policy["failure-details"]}
    assert "starttls-not-supported" in details, report
    assert details["starttls-not-supported"]["receiving-mx-hostname"] == MX_HOST, report
    assert details["starttls-not-supported"]["failed-session-count"] >= 1, report
    assert details["starttls-not-supported"]["sending-mta-ip"] == "127.0.0.1", report
    assert report["organization-name"] == "Bulwark Test", report
    assert bounces.count() == 0


# ============================================================================================
# 4: MTA-STS policy fetch, cache, expiry, restart, MX mismatch
# ============================================================================================


def test_mta_sts_policy_fetched_cached_and_refetched_after_max_age(start_daemon, dns, sts_server, sink, pki,
                                                                   tmp_path):
    receiver = start_receiver(start_daemon, tmp_path, pki)
    max_age = 6
    sts = sts_server(sts_policy_text("enforce", max_age=max_age))
    sts_dns(dns)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, dns.address, sts_routes(bounces), receiver.port, sts_config(pki, sts))
    send_message(d, rcpts=(RCPT,), message_id=mid("stscache", 1))
    first = time.monotonic()
    assert_tls_received(received_messages(receiver, 1)[0])
    assert sts.fetches == 1, f"expected one policy fetch for the first message, got {sts.fetches}"
    send_message(d, rcpts=(RCPT,), message_id=mid("stscache", 2))
    received_messages(receiver, 2)
    assert time.monotonic() - first < max_age - 1, "too slow to test the cache within max_age"
    assert sts.fetches == 1, f"the cached policy was fetched again within max_age ({sts.fetches} fetches)"
    time.sleep(max(0.0, max_age + 1.5 - (time.monotonic() - first)))
    send_message(d, rcpts=(RCPT,), message_id=mid("stscache", 3))
    for shown in received_messages(receiver, 3):
        assert_tls_received(shown)
    assert sts.fetches == 2, f"an expired policy (max_age {max_age}s) was not fetched again: {sts.fetches}"
    wait_queue_empty(d, 10)
    assert bounces.count() == 0


def test_mta_sts_cached_policy_survives_restart(start_daemon, dns, sts_server, sink, pki, tmp_path):
    receiver = start_receiver(start_daemon, tmp_path, pki)
    sts = sts_server(sts_policy_text("enforce", max_age=86400))
    sts_dns(dns, sts_id="keep1")
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, dns.address, sts_routes(bounces), receiver.port, sts_config(pki, sts))
    send_message(d, rcpts=(RCPT,), message_id=mid("stsrestart", 1))
    received_messages(receiver, 1)
    assert sts.fetches == 1
    # The web server now serves another policy under the same id: a daemon that kept its
    # cache has no reason to fetch it (the TXT id did not change, max_age has not passed).
    sts.policy = sts_policy_text("testing", mx=("elsewhere.example.net",), max_age=60)
    d.restart()
    policy = tls_policy_json(d)
    assert policy["mta_sts"] and policy["mta_sts"].get("id") == "keep1", f"cache lost in the restart: {policy}"
    assert policy["mta_sts"]["mode"] == "enforce" and policy["mta_sts"]["mx"] == [MX_HOST], policy
    assert policy["hosts"][0]["policy"] == "mta-sts enforce", policy
    send_message(d, rcpts=(RCPT,), message_id=mid("stsrestart", 2))
    for shown in received_messages(receiver, 2):
        assert_tls_received(shown)
    assert sts.fetches == 1, f"the policy was fetched again after the restart ({sts.fetches} fetches)"
    # A new id in DNS is a new policy: fetched as soon as the old TXT answer (TTL 1 s) expires.
    sts_dns(dns, sts_id="keep2")
    policy = wait_until(lambda: (p := tls_policy_json(d))["mta_sts"]["id"] == "keep2" and p, 15, interval=0.5,
                        what="the policy of the new TXT id")
    assert sts.fetches == 2 and policy["mta_sts"]["mode"] == "testing", (sts.fetches, policy)


@pytest.mark.parametrize("mode", ["enforce", "testing"])
def test_mta_sts_untrusted_certificate(mode, start_daemon, dns, sts_server, sink, pki, tls_cert, tmp_path):
    """The MX presents a self-signed certificate for another name: enforce defers
    (sts-webpki-invalid), testing reports the failure and delivers over unverified TLS."""
    receiver = start_receiver(start_daemon, tmp_path, pki, cert=tls_cert)
    sts = sts_server(sts_policy_text(mode))
    sts_dns(dns)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, dns.address, sts_routes(bounces), receiver.port, sts_config(pki, sts))
    qid = send_message(d, rcpts=(RCPT,), message_id=mid("stsuntrusted"))
    if mode == "enforce":
        entry = wait_deferred(d, qid)
        assert re.search(r"(?i)certificate|tls", entry["last_error"]), entry
        assert receiver.queue_list() == [], "delivered to an MX whose certificate does not verify under enforce"
    else:
        assert_tls_received(received_messages(receiver)[0])
        wait_queue_empty(d, 10)
    assert rpt_failures(tls_policy_json(d)).get("sts-webpki-invalid", 0) >= 1
    assert bounces.count() == 0


def test_published_policy_is_fetched_by_another_gateway(start_daemon, dns, sink, pki, tmp_path):
    """The receiver publishes `[tls_policy.publish]` on its control HTTPS listener (as
    https://mta-sts.example.net/.well-known/mta-sts.txt); the sender fetches and enforces it."""
    control_port = free_port()
    published = to_toml({
        "control": {"listen": f"127.0.0.1:{control_port}", "ca": str(pki.ca),
                    "certificate": str(pki.sts_cert), "private_key": str(pki.sts_key)},
        "tls_policy": {"state_dir": str(tmp_path / "receiver-tls"),
                       "publish": {"mode": "enforce", "mx": ["*.example.net"], "max_age": "1d"}},
    })
    receiver = start_receiver(start_daemon, tmp_path, pki, extra_toml=published)
    wait_until(lambda: tcp_accepts(control_port), 10, what="the receiver's control HTTPS listener")
    sts_dns(dns, sts_id="published1")
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, dns.address, sts_routes(bounces), receiver.port,
                     {"mta_sts_ca_file": str(pki.ca), "mta_sts_port": control_port})
    m = mid("published")
    send_message(d, rcpts=(RCPT,), message_id=m)
    assert_tls_received(received_messages(receiver)[0])
    policy = tls_policy_json(d)
    assert policy["mta_sts"]["mode"] == "enforce" and policy["mta_sts"]["mx"] == ["*.example.net"], policy
    assert policy["mta_sts"]["max_age"] == 86400, policy
    assert policy["hosts"][0]["policy"] == "mta-sts enforce", policy


def test_mta_sts_testing_mx_mismatch_delivers_and_counts_a_failure(start_daemon, dns, sts_server, sink, pki,
                                                                   tmp_path):
    """Under testing an MX outside the policy's list still gets the mail (RFC 8461 5), but
    the session failed the policy: TLS-RPT counts it as a failure, not a success."""
    receiver = start_receiver(start_daemon, tmp_path, pki)
    sts = sts_server(sts_policy_text("testing", mx=("other.example.net",)))
    sts_dns(dns)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, dns.address, sts_routes(bounces), receiver.port, sts_config(pki, sts))
    send_message(d, rcpts=(RCPT,), message_id=mid("ststestingmismatch"))
    assert_tls_received(received_messages(receiver)[0])
    wait_queue_empty(d, 10)
    policy = tls_policy_json(d)
    assert policy["hosts"][0]["policy"] == "mta-sts testing", policy
    assert "not in mx list" in policy["hosts"][0]["why"], policy
    assert rpt_failures(policy).get("validation-failure", 0) >= 1, f"the unlisted MX was not counted as a failure: {policy}"
    assert policy["tls_rpt"]["successes"] == 0, f"the unlisted MX counted as a success: {policy}"
    assert bounces.count() == 0


def test_tls_rpt_report_is_posted_to_an_https_rua(start_daemon, dns, sts_server, sink, pki, tmp_path):
    """RFC 8460 3: an `https:` rua gets the gzipped JSON report by POST, over verified TLS."""
    receiver = start_receiver(start_daemon, tmp_path, pki)
    sts = sts_server(sts_policy_text("testing", mx=("other.example.net",)))
    sts_dns(dns, rua=f"https://{STS_HOST}:{sts.port}/tlsrpt")
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, dns.address, sts_routes(bounces), receiver.port,
                     sts_config(pki, sts, report={"interval": "3s", "organization": "Bulwark Test"}))
    send_message(d, rcpts=(RCPT,), message_id=mid("rpthttps"))
    assert_tls_received(received_messages(receiver)[0])
    wait_until(lambda: sts.posts, 30, what="the TLS-RPT report POSTed to the https rua")
    path, content_type, body = sts.posts[0]
    assert path == "/tlsrpt" and content_type == "application/tlsrpt+gzip", sts.posts[0][:2]
    report = json.loads(gzip.decompress(body))
    policy = report["policies"][0]
    assert policy["policy"]["policy-domain"] == DOMAIN and policy["policy"]["policy-type"] == "sts", report
    failures = {f["result-type"]: f for f in policy["failure-details"]}
    assert failures["validation-failure"]["failed-session-count"] >= 1, report
    assert report["organization-name"] == "Bulwark Test", report
    assert bounces.count() == 0


def test_mta_sts_policy_fetch_error_delivers_and_counts_a_failure(start_daemon, dns, sts_server, sink, pki,
                                                                  tmp_path):
    """A `_mta-sts` record but no policy file (404) and nothing cached: delivered as without
    a policy (RFC 8461 5.1), and the failed fetch counted for TLS-RPT (RFC 8460 4.3.2)."""
    receiver = start_receiver(start_daemon, tmp_path, pki)
    sts = sts_server(None)
    sts_dns(dns)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, dns.address, sts_routes(bounces), receiver.port, sts_config(pki, sts))
    send_message(d, rcpts=(RCPT,), message_id=mid("stsfetcherror"))
    assert_tls_received(received_messages(receiver)[0])
    wait_queue_empty(d, 10)
    assert sts.fetches >= 1, "the policy was never asked for"
    policy = tls_policy_json(d)
    assert policy["mta_sts"]["unavailable"] == "sts-policy-fetch-error", policy
    assert rpt_failures(policy).get("sts-policy-fetch-error", 0) >= 1, \
        f"the failed policy fetch was not counted: {policy}"
    assert bounces.count() == 0


def test_mta_sts_enforce_mx_mismatch_defers(start_daemon, dns, sts_server, sink, pki, tmp_path):
    receiver = start_receiver(start_daemon, tmp_path, pki)
    sts = sts_server(sts_policy_text("enforce", mx=("*.mail.example.org", "other.example.net")))
    sts_dns(dns)
    bounces = sink("bounces")
    d = start_sender(start_daemon, tmp_path, dns.address, sts_routes(bounces), receiver.port, sts_config(pki, sts))
    qid = send_message(d, rcpts=(RCPT,), message_id=mid("stsmismatch"))
    entry = wait_deferred(d, qid)
    assert "not among the policy's mx" in entry["last_error"], entry
    assert receiver.queue_list() == [], "delivered to an MX host the enforce policy does not list"
    assert bounces.count() == 0
    policy = tls_policy_json(d)
    assert policy["hosts"][0]["policy"] == "refused (validation-failure)", policy


# ============================================================================================
# 5: REQUIRETLS (RFC 8689)
# ============================================================================================


def test_requiretls_advertised_only_after_starttls(start_daemon, pki, tmp_path):
    receiver = start_receiver(start_daemon, tmp_path, pki)
    with receiver.session() as s:
        expect(s.greeting(), 220)
        code, text = s.ehlo()
        assert code == 250
        before = ehlo_keywords(text)
        assert "STARTTLS" in before and "REQUIRETLS" not in before, f"EHLO before STARTTLS: {before}"
        code, text = s.cmd(f"MAIL FROM:<sender@other.org> REQUIRETLS")
        assert code == 530, f"REQUIRETLS accepted outside TLS: {code} {text}"
        s.cmd("RSET")
        expect(s.starttls(MX_HOST), 220)
        code, text = s.ehlo()
        after = ehlo_keywords(text)
        assert "REQUIRETLS" in after and "STARTTLS" not in after, f"EHLO after STARTTLS: {after}"
        expect(s.cmd("MAIL FROM:<sender@other.org> REQUIRETLS"), 250)


def send_requiretls(d, message_id: str, mail_params: str = "", body: str = "hello world") -> str:
    """One message submitted over STARTTLS with MAIL FROM ... REQUIRETLS; the queue id."""
    with RawSession(d.port) as s:
        expect(s.greeting(), 220)
        expect(s.ehlo(), 250)
        expect(s.starttls(), 220)
        code, text = s.ehlo()
        assert "REQUIRETLS" in ehlo_keywords(text), f"the sender offers no REQUIRETLS inside TLS: {text}"
        expect(s.cmd(f"MAIL FROM:<sender@other.org> REQUIRETLS{' ' + mail_params if mail_params else ''}"), 250)
        expect(s.cmd(f"RCPT TO:<{RCPT}>"), 250)
        message = make_message(subject="requiretls", message_id=message_id, to=RCPT, body=body)
        qid = queue_id_of(s.data(message))
        s.cmd("QUIT")
    return qid


@pytest.mark.parametrize("hop_tls", [False, True], ids=["no-starttls", "unauthenticated-tls"])
def test_requiretls_to_unauthenticated_next_hop_bounces_5_7_30(hop_tls, start_daemon, dns, sink, pki, tmp_path):
    """Opportunistic TLS either way: in clear (the hop offers no STARTTLS) or encrypted
    without checking the certificate; neither may carry a REQUIRETLS message."""
    receiver = start_receiver(start_daemon, tmp_path, pki, tls=hop_tls)
    dns.set_records({MX_HOST: {"A": ["127.0.0.1"]}})
    bounces = sink("bounces")
    routes = [bounce_route(bounces), {"domains": [DOMAIN], "next_hops": [f"{MX_HOST}:{receiver.port}"],
                                      "tls": "opportunistic"}]
    d = start_sender(start_daemon, tmp_path, dns.address, routes, receiver.port)
    m = mid("requiretls-unauthenticated")
    send_requiretls(d, m)
    got = bounces.wait_for(1, timeout=25)
    dsn = parse_dsn(got[0])
    rcpt = dsn.recipient(RCPT)
    assert rcpt is not None, dsn.recipients
    assert rcpt.get("action") == "failed" and rcpt.get("status") == "5.7.30", rcpt
    assert "REQUIRETLS" in rcpt.get("diagnostic-code", ""), rcpt
    wait_queue_empty(d, 10)
    assert receiver.queue_list() == [], "a REQUIRETLS message was sent over an unauthenticated session"


def test_requiretls_bounce_returns_headers_only_even_with_ret_full(start_daemon, dns, sink, pki, tmp_path):
    """RFC 8689 5: the bounce of a REQUIRETLS message may travel without TLS (it is not a
    REQUIRETLS message itself), so it must not carry the protected body back, RET=FULL or not."""
    receiver = start_receiver(start_daemon, tmp_path, pki, tls=False)
    dns.set_records({MX_HOST: {"A": ["127.0.0.1"]}})
    bounces = sink("bounces")
    routes = [bounce_route(bounces), {"domains": [DOMAIN], "next_hops": [f"{MX_HOST}:{receiver.port}"],
                                      "tls": "opportunistic"}]
    d = start_sender(start_daemon, tmp_path, dns.address, routes, receiver.port)
    secret = "the-protected-body-7f3a"
    send_requiretls(d, mid("requiretls-retfull"), mail_params="RET=FULL", body=secret)
    got = bounces.wait_for(1, timeout=25)
    dsn = parse_dsn(got[0])
    assert dsn.recipient(RCPT).get("status") == "5.7.30", dsn.recipients
    assert dsn.returned_type == "text/rfc822-headers", \
        f"the bounce of a REQUIRETLS message returned {dsn.returned_type}, not headers only"
    assert secret.encode() not in got[0].raw, "the bounce carried the REQUIRETLS message's body"
    assert "requiretls" in dsn.returned, dsn.returned


@pytest.mark.parametrize("how", ["verify", "dane"])
def test_requiretls_delivered_over_authenticated_tls(how, start_daemon, dns, signed_zone, sink, pki, tmp_path):
    port = free_port()
    receiver = start_receiver(start_daemon, tmp_path, pki, port)
    bounces = sink("bounces")
    if how == "verify":
        dns.set_records({MX_HOST: {"A": ["127.0.0.1"]}})
        routes = [bounce_route(bounces), {"domains": [DOMAIN], "next_hops": [f"{MX_HOST}:{port}"],
                                          "tls": "verify", "ca_file": str(pki.ca)}]
        d = start_sender(start_daemon, tmp_path, dns.address, routes, port)
    else:
        nsd = signed_zone(port, [f"3 1 1 {spki_sha256(pki.mx_cert)}"])
        d = start_sender(start_daemon, tmp_path, nsd.address, dane_routes(bounces), port, dane_policy(nsd))
    m = mid("requiretls-" + how)
    send_requiretls(d, m)
    shown = received_messages(receiver)[0]
    assert m in shown
    assert_tls_received(shown)
    wait_queue_empty(d, 10)
    assert bounces.count() == 0, f"bounced although the next hop was authenticated: {bounces.messages()}"


# ============================================================================================
# 6: bulwarkctl tls policy DOMAIN
# ============================================================================================


def test_bulwarkctl_tls_policy_prints_policy_and_why(start_daemon, dns, sts_server, sink, pki, tmp_path):
    sts = sts_server(sts_policy_text("enforce"))
    sts_dns(dns)
    dns.add("plain.test", "MX", (10, "mx.plain.test"))
    dns.add("mx.plain.test", "A", "127.0.0.1")
    bounces = sink("bounces")
    routes = [bounce_route(bounces), {"domains": [DOMAIN]}, {"domains": ["plain.test"]},
              {"domains": ["fixed.test"], "next_hops": ["127.0.0.1:9"], "tls": "required"}]
    port = free_port()
    d = start_sender(start_daemon, tmp_path, dns.address, routes, port,
                     sts_config(pki, sts, mx_order=["mta-sts", "opportunistic"]))
    cp = d.ctl("tls", "policy", DOMAIN)
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout
    assert f"destination: {DOMAIN}" in out, out
    assert re.search(rf"{re.escape(MX_HOST)}:{port}\s+mta-sts enforce\s+\(MTA-STS enforce \(id 20261203a\): "
                     r"verified TLS required\)", out), out
    assert '"mode":"enforce"' in out.replace(" ", ""), out
    cp = d.ctl("tls", "policy", "plain.test")
    assert cp.returncode == 0, cp.stderr
    assert re.search(rf"mx\.plain\.test:{port}\s+opportunistic\s+\(no DANE or MTA-STS policy applies", cp.stdout), \
        cp.stdout
    assert "MTA-STS: no policy" in cp.stdout, cp.stdout
    fixed = tls_policy_json(d, "fixed.test")
    assert fixed["hosts"] == [{"host": "127.0.0.1", "port": 9, "policy": "required",
                               "why": "the route sets tls = required"}], fixed
