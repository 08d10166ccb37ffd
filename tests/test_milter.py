"""Milters (issue #18): a real bulwarkd asks real milters about every message over the milter
protocol, and their verdicts and modification requests decide what reaches the next hop.

Peers, all started by the tests on loopback, offline: clamav-milter in front of a clamd whose
only signature is EICAR, opendkim (signing, verified by dkimpy with the key served from the
test), spamass-milter in front of spamd, rspamd's proxy worker in milter mode, and
tests/milter_peer.py (our own small milter: every modification request, quarantine, replies,
a milter that hangs, one that closes the connection, negotiated skips, macros). A peer that is
not installed fails the test with the package to install (.ci/run installs them all).
Every wait is bounded."""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (RawSession, expect, free_port, make_message, mid, queue_id_of, route,
                      to_toml, wait_until)

HERE = Path(__file__).resolve().parent
SENDER = "sender@other.org"
EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR" + "-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE" + "-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def require(binary: str, package: str) -> str:
    path = shutil.which(binary) or next(
        (f"{d}/{binary}" for d in ("/usr/sbin", "/usr/bin") if os.path.exists(f"{d}/{binary}")), None)
    if not path:
        pytest.fail(f"{binary} not found: apt-get install {package} (see .ci/run)", pytrace=False)
    return path


class Peers:
    """Processes started by one test; all stopped (process group) at teardown."""

    def __init__(self, base: Path):
        self.base = base
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, args: list, ready, timeout: float = 60.0, **kw) -> subprocess.Popen:
        log = self.base / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([str(a) for a in args], stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.procs.append((name, proc, log))
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited ({proc.returncode}):\n{self.log(name)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not ready within {timeout}s:\n{self.log(name)}")
            time.sleep(0.1)
        return proc

    def log(self, name: str) -> str:
        path = self.base / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self, name: str) -> None:
        for n, proc, _ in self.procs:
            if n == name and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)

    def stop_all(self) -> None:
        for name, _, _ in reversed(self.procs):
            try:
                self.stop(name)
            except ProcessLookupError:
                pass


@pytest.fixture
def peers(tmp_path):
    p = Peers(tmp_path)
    yield p
    p.stop_all()


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_milter(peers: Peers, mode: str, steps: int = 0, unix: bool = False, name: str = "peer"):
    """Starts tests/milter_peer.py; returns (milter address, command log path)."""
    log = peers.base / f"{name}-commands.jsonl"
    args = [sys.executable, HERE / "milter_peer.py", "--mode", mode, "--steps", hex(steps), "--log", log]
    if unix:
        path = peers.base / f"{name}.sock"
        peers.start(name, args + ["--unix", path], lambda: path.exists(), timeout=10)
        return f"unix:{path}", log
    port = free_port()
    peers.start(name, args + ["--port", port], lambda: listening(port), timeout=10)
    return f"inet:{port}@127.0.0.1", log


test_milter.__test__ = False  # a helper, not a test


def commands(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line]


def macros_of(entry: dict) -> tuple[str, dict]:
    """An SMFIC_MACRO packet: (the command it is for, {name: value})."""
    data = bytes.fromhex(entry["data"])
    parts = data[1:].split(b"\0")[:-1]
    return chr(data[0]), {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2)}


@pytest.fixture
def gateway(start_mta, sink, tmp_path):
    """Factory: gateway(*milters, **daemon_kw) -> (daemon, hop sink for example.com/.org)."""

    def _make(*milters, **kw):
        hop = sink("hop")
        routes = [route(["example.com", "example.org", "other.org"], [hop])]
        d = start_mta(tmp_path, routes, extra_toml=to_toml({"milter": list(milters)}),
                      relay={"domains": ["example.com"], **kw.pop("relay", {})}, **kw)
        return d, hop

    return _make


def milter(name: str, address: str, **options) -> dict:
    return {"name": name, "address": address, "command_timeout": "5s", **options}


def transaction(d, rcpts, message: bytes, sender=SENDER):
    """One message in one session; returns the DATA reply."""
    with RawSession(d.port, timeout=60) as s:
        expect(s.greeting(), 220)
        expect(s.ehlo(), 250)
        expect(s.cmd(f"MAIL FROM:<{sender}>"), 250)
        for r in rcpts:
            expect(s.cmd(f"RCPT TO:<{r}>"), 250, what=f"RCPT {r}")
        reply = s.data(message)
        s.cmd("QUIT")
    return reply


def plain(subject="hello", body="hello world", extra_headers="", sender=SENDER, to="alice@example.com",
          tag="milter"):
    msg = make_message(subject=subject, body=body, message_id=mid(tag), sender=sender, to=to)
    return extra_headers.encode() + msg if extra_headers else msg


# ------------------------------------------------------------------ our own test milter

@pytest.mark.parametrize("transport", ["inet", "unix"])
def test_every_modification_request_reaches_the_next_hop(gateway, peers, transport):
    address, _ = test_milter(peers, "modify", unix=transport == "unix")
    d, hop = gateway(milter("peer", address))
    message = plain(subject="original", extra_headers="X-Remove-Me: yes\r\n")
    code, text = transaction(d, ["alice@example.com", "dropped@example.com"], message)
    assert code == 250, (code, text)
    got = {tuple(m.rcpts): m for m in hop.wait_for(1, settle=1.0)}
    assert len(got) == 1, got
    (rcpts, m), = got.items()
    assert sorted(rcpts) == ["added-args@example.com", "added@example.com", "alice@example.com"]
    assert m.mail_from == "new-sender@example.org"
    assert any("NOTIFY=NEVER" in a for a in m.rcpt_args), m.rcpt_args
    headers = m.msg.items()
    assert headers[0][0] == "Received" and headers[1][0] == "X-Peer-First", headers  # ours stays first
    assert headers[-1] == ("X-Peer-Added", "added by milter_peer"), headers
    assert m.subject == "changed subject"
    assert "X-Remove-Me" not in m.msg
    assert m.msg.get_payload() == "replaced body line 1\nreplaced body line 2\n"
    assert "stage=peer verdict=continue" in d.log()


def test_negotiated_skips_macros_and_connection_reuse(gateway, peers):
    # clamav-milter's steps (no HELO, no EOH, no DATA, no unknown) and headers left unanswered
    address, log = test_milter(peers, "continue", steps=0x342 | 0x80)
    d, hop = gateway(milter("peer", address))
    ids = [queue_id_of(transaction(d, ["alice@example.com"], plain(tag=f"skip{i}"))) for i in range(2)]
    hop.wait_for(2)
    seen = commands(log)
    sent = [c["cmd"] for c in seen]
    assert not {"H", "N", "T"} & set(sent), sent
    assert {"C", "M", "R", "L", "B", "E", "K"} <= set(sent), sent
    assert len({c["conn"] for c in seen}) == 1, "the second message reused the connection"
    assert sent.count("O") == 1 and sent.count("K") == 2, sent
    macros = [macros_of(c) for c in seen if c["cmd"] == "D"]
    connect = next(m for stage, m in macros if stage == "C")
    assert connect["j"] == "mx.test" and connect["{client_addr}"] == "127.0.0.1", connect
    mail_ids = [m["i"] for stage, m in macros if stage == "M"]
    assert mail_ids == ids, (mail_ids, ids)
    rcpt = next(m for stage, m in macros if stage == "R")
    assert rcpt["{rcpt_addr}"] == "alice@example.com" and rcpt["{rcpt_host}"] == "example.com"
    assert "steps=0x3c2" in d.log(), "the negotiated steps are logged"


def test_reply_codes_tempfail_and_discard(gateway, peers):
    rejecting, _ = test_milter(peers, "reject", name="rejecting")
    d, hop = gateway(milter("rejecting", rejecting))
    code, text = transaction(d, ["alice@example.com"], plain(tag="rej"))
    assert code == 550 and text.splitlines() == ["5.7.1 rejected by milter_peer", "5.7.1 second line"], (code, text)
    d.stop()
    for mode, want in (("tempfail", 451), ("discard", 250)):
        address, _ = test_milter(peers, mode, name=mode)
        d, hop = gateway(milter(mode, address))
        code, text = transaction(d, ["alice@example.com"], plain(tag=mode))
        assert code == want, (mode, code, text)
        assert f"stage={mode} verdict={mode}" in d.log()
        d.stop()
    assert hop.count() == 0, "rejected, tempfailed and discarded mail is not delivered"


def test_quarantine_reply_holds_the_message_in_the_quarantine(gateway, peers):
    address, _ = test_milter(peers, "quarantine")
    d, hop = gateway(milter("peer", address))
    code, text = transaction(d, ["alice@example.com"], plain(tag="quar"))
    assert code == 250, (code, text)
    qid = queue_id_of((code, text))
    assert 'stage=peer verdict=quarantine reason="held by milter_peer"' in d.log(), d.log()[-2000:]
    cp = d.ctl("quarantine", "list", "--json")
    assert cp.returncode == 0, cp.stderr
    entries = json.loads(cp.stdout)
    assert [e["id"] for e in entries] == [qid], entries
    entry = entries[0]
    assert entry["stage"] == "peer" and entry["reason"] == "held by milter_peer", entry
    time.sleep(1.0)
    assert hop.count() == 0, "held, not delivered"


# ------------------------------------------------------------------ broken milters

def test_hanging_closing_and_absent_milters_get_their_default_action(gateway, peers):
    hanging, _ = test_milter(peers, "hang", name="hanging")
    closing, _ = test_milter(peers, "close", name="closing")
    absent = f"inet:{free_port()}@127.0.0.1"
    cases = [
        (milter("hanging", hanging, command_timeout="1s"), 451, False),
        (milter("hanging", hanging, command_timeout="1s", default_action="accept"), 250, True),
        (milter("closing", closing, default_action="accept"), 250, True),
        (milter("closing", closing, default_action="tempfail"), 451, False),
        (milter("absent", absent, connect_timeout="2s", default_action="reject"), 550, False),
        (milter("absent", absent, connect_timeout="2s"), 451, False),
    ]
    delivered = 0
    for i, (config, want, delivers) in enumerate(cases):
        d, hop = gateway(config)
        started = time.monotonic()
        code, text = transaction(d, ["alice@example.com"], plain(tag=f"broken{i}"))
        assert code == want, (config, code, text)
        assert time.monotonic() - started < 10, "bounded by the milter's timeouts"
        assert f"stage={config['name']} on_error=" in d.log(), d.log()[-2000:]
        if delivers:
            delivered += 1
            got = hop.wait_for(delivered)
            assert config["name"] in (got[-1].msg.get("X-Bulwark-Unscanned") or ""), got[-1].raw
        else:
            time.sleep(0.5)
            assert hop.count() == delivered, "a 4xx/5xx message is not queued (the client keeps it)"
        d.stop()


def test_a_milter_that_restarts_costs_no_verdict(gateway, peers):
    address, log = test_milter(peers, "continue")
    d, hop = gateway(milter("peer", address))
    assert transaction(d, ["alice@example.com"], plain(tag="r0"))[0] == 250
    peers.stop("peer")
    port = int(address.split(":")[1].split("@")[0])
    peers.start("peer-again", [sys.executable, HERE / "milter_peer.py", "--port", port],
                lambda: listening(port), timeout=10)
    code, text = transaction(d, ["alice@example.com"], plain(tag="r1"))
    assert code == 250, (code, text)
    assert "on_error" not in d.log(), "the dead pooled connection was replaced, not failed"
    hop.wait_for(2)


# ------------------------------------------------------------------ clamav-milter

def start_clamav(peers: Peers) -> str:
    clamd = require("clamd", "clamav-daemon")
    clamav_milter = require("clamav-milter", "clamav-milter")
    base = peers.base / "clamav"
    (base / "db").mkdir(parents=True)
    (base / "db" / "eicar.ndb").write_text(f"Eicar-Test-Signature:0:*:{EICAR.encode().hex()}\n")
    sock = base / "clamd.sock"
    (base / "clamd.conf").write_text(
        f"DatabaseDirectory {base}/db\nLocalSocket {sock}\nUser root\nForeground yes\n"
        f"SelfCheck 0\nStreamMaxLength 25M\nScanMail yes\nTemporaryDirectory {base}\n")
    port = free_port()
    (base / "milter.conf").write_text(
        f"MilterSocket inet:{port}@127.0.0.1\nUser root\nForeground yes\nClamdSocket unix:{sock}\n"
        f"OnClean Accept\nOnInfected Reject\nOnFail Defer\nAddHeader Replace\n"
        f"TemporaryDirectory {base}\nLogInfected Basic\n")
    peers.start("clamd", [clamd, "-c", base / "clamd.conf"], lambda: sock.exists(), timeout=120)
    peers.start("clamav-milter", [clamav_milter, "-c", base / "milter.conf"], lambda: listening(port))
    return f"inet:{port}@127.0.0.1"


def eicar_message() -> bytes:
    b64 = base64.b64encode(EICAR.encode()).decode()
    return (f"From: <{SENDER}>\r\nTo: <alice@example.com>\r\nSubject: eicar\r\nMessage-ID: {mid('eicar')}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
            "Content-Type: text/plain\r\n\r\nsee attachment\r\n--b1\r\n"
            "Content-Type: application/octet-stream; name=\"eicar.com\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + b64 + "\r\n--b1--\r\n").encode()


def test_clamav_milter_rejects_eicar_and_its_skips_are_honoured(gateway, peers):
    address = start_clamav(peers)
    d, hop = gateway(milter("clamav", address, command_timeout="30s"))
    code, text = transaction(d, ["alice@example.com"], eicar_message())
    assert code // 100 == 5, (code, text)
    assert "stage=clamav verdict=reject" in d.log()
    code, text = transaction(d, ["alice@example.com"], plain(tag="clean"))
    assert code == 250, (code, text)
    got = hop.wait_for(1)[0]
    assert "clean" in (got.msg.get("X-Virus-Status") or "").lower(), got.raw[:600]
    # clamav-milter negotiates away HELO, EOH, DATA and unknown commands (0x342)
    line = next(l for l in d.log().splitlines() if "milter connected: name=clamav" in l)
    steps = int(line.split("steps=")[1].split()[0], 16)
    assert steps & 0x342 == 0x342, line


# ------------------------------------------------------------------ opendkim

def test_opendkim_signs_outbound_mail_and_the_signature_verifies(gateway, peers):
    try:
        import dkim
    except ImportError:
        pytest.fail("dkimpy missing: apt-get install python3-dkim (see .ci/run)", pytrace=False)
    opendkim = require("opendkim", "opendkim")
    genkey = require("opendkim-genkey", "opendkim-tools")
    keys = peers.base / "dkim"
    keys.mkdir()
    subprocess.run([genkey, "-D", keys, "-d", "other.org", "-s", "sel", "-b", "2048"], check=True, timeout=60)
    record = (keys / "sel.txt").read_text()
    public = "".join(part for part in record.split('"')[1::2])
    port = free_port()
    conf = keys / "opendkim.conf"
    conf.write_text(
        f"Mode sv\nDomain other.org\nSelector sel\nKeyFile {keys}/sel.private\n"
        f"Socket inet:{port}@127.0.0.1\nCanonicalization relaxed/simple\nRequireSafeKeys false\n"
        f"InternalHosts 127.0.0.1\nUserID root\nBackground false\nSyslog false\nPidFile {keys}/pid\n")
    peers.start("opendkim", [opendkim, "-f", "-x", conf], lambda: listening(port), timeout=20)
    d, hop = gateway(milter("opendkim", address=f"inet:{port}@127.0.0.1", direction="outbound"),
                     relay={"trusted_networks": ["127.0.0.1/32"]})
    message = plain(subject="signed", body="a body line\r\n\r\nand another", to="bob@example.org")
    code, text = transaction(d, ["bob@example.org"], message)
    assert code == 250, (code, text)
    got = hop.wait_for(1)[0]
    assert got.msg.get("DKIM-Signature"), got.raw[:800]
    wire = got.content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    def dnsfunc(name, timeout=5):
        assert name in (b"sel._domainkey.other.org.", "sel._domainkey.other.org."), name
        return public.encode()

    assert dkim.verify(wire, dnsfunc=dnsfunc), wire[:1500]


# ------------------------------------------------------------------ spamass-milter

def test_spamass_milter_adds_its_headers_and_rejects_gtube(gateway, peers):
    spamd = require("spamd", "spamd")
    spamass = require("spamass-milter", "spamass-milter")
    spamd_port, port = free_port(), free_port()
    peers.start("spamd", [spamd, "-L", "--listen", f"127.0.0.1:{spamd_port}", "-m", "2", "-u", "nobody",
                          "--pidfile", peers.base / "spamd.pid"],
                lambda: listening(spamd_port), timeout=120)
    peers.start("spamass-milter", [spamass, "-p", f"inet:{port}@127.0.0.1", "-r", "15", "--", "-d", "127.0.0.1", "-p", spamd_port],
                lambda: listening(port), timeout=20)
    d, hop = gateway(milter("spamassassin", f"inet:{port}@127.0.0.1", command_timeout="60s"))
    code, text = transaction(d, ["alice@example.com"], plain(subject="gtube", body=GTUBE))
    assert code // 100 == 5, (code, text)
    assert "stage=spamassassin verdict=reject" in d.log()
    code, text = transaction(d, ["alice@example.com"], plain(subject="ham", body="see you at lunch"))
    assert code == 250, (code, text)
    got = hop.wait_for(1)[0]
    assert got.msg.get("X-Spam-Checker-Version"), got.raw[:1000]
    assert (got.msg.get("X-Spam-Status") or "").startswith("No"), got.raw[:1000]


# ------------------------------------------------------------------ rspamd

def start_rspamd(peers: Peers, unix: bool = False) -> str:
    rspamd = require("rspamd", "rspamd")
    base = peers.base / "rspamd"
    for sub in ("local.d", "db", "run", "log", "tmp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    milter_port, normal_port, dns_port = free_port(), free_port(), free_port()
    bind = f"{base}/run/milter.sock mode=0666" if unix else f"127.0.0.1:{milter_port}"
    (base / "rspamd.conf").write_text(f"""
.include "$CONFDIR/common.conf"
options {{ pidfile = "$RUNDIR/rspamd.pid"; .include "$CONFDIR/options.inc"
  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc" }}
logging {{ type = "file"; filename = "$LOGDIR/rspamd.log"; level = "warning"; }}
worker "rspamd_proxy" {{ bind_socket = "{bind}"; milter = yes; timeout = 120s;
  upstream "local" {{ default = yes; self_scan = yes; }} count = 1; reject_message = "Spam message rejected"; }}
worker "normal" {{ bind_socket = "127.0.0.1:{normal_port}"; count = 1; }}
""")
    (base / "local.d" / "options.inc").write_text(
        f'dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 1s; retransmits = 1; }}\ntempdir = "{base}/tmp";\n')
    for module in ("rbl", "surbl", "emails", "spf", "dkim", "dmarc", "arc", "asn", "fuzzy_check", "mx_check",
                   "reputation", "whitelist", "url_reputation", "external_services", "hfilter", "rspamd_update"):
        (base / "local.d" / f"{module}.conf").write_text("enabled = false;\n")
    (base / "local.d" / "phishing.conf").write_text("phishtank_enabled = false;\nopenphish_enabled = false;\n")
    (base / "local.d" / "milter_headers.conf").write_text(
        'use = ["x-spamd-result", "x-rspamd-queue-id", "x-spam-status"];\n'
        "skip_local = false;\nskip_authenticated = false;\n")
    ready = (lambda: (base / "run" / "milter.sock").exists()) if unix else (lambda: listening(milter_port))
    peers.start("rspamd", [rspamd, "-f", "-i", "-c", base / "rspamd.conf", f"--var=LOCAL_CONFDIR={base}",
                           f"--var=DBDIR={base}/db", f"--var=RUNDIR={base}/run", f"--var=LOGDIR={base}/log"],
                ready, timeout=180)
    return f"unix:{base}/run/milter.sock" if unix else f"inet:{milter_port}@127.0.0.1"


def test_rspamd_milter_rejects_gtube_and_adds_its_headers(gateway, peers):
    address = start_rspamd(peers)
    d, hop = gateway(milter("rspamd", address, command_timeout="60s"))
    deadline = time.monotonic() + 90
    while True:  # the first scans wait for rspamd to compile its rules
        code, text = transaction(d, ["alice@example.com"], plain(subject="gtube", body=GTUBE))
        if code // 100 == 5 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert code // 100 == 5, (code, text)
    assert "stage=rspamd verdict=reject" in d.log()
    qid = queue_id_of(transaction(d, ["alice@example.com"], plain(subject="ham", body="see you at lunch")))
    got = hop.wait_for(1)[0]
    assert "stage=rspamd verdict=continue" in d.log(), "rspamd's accept leaves later stages their say"
    assert got.msg.get("X-Spamd-Result"), got.raw[:1200]
    assert got.msg.get("X-Rspamd-Queue-Id") == qid, "the i macro reached rspamd"
