"""Anti-virus ([antivirus]): a real clamd started here, offline, with its own signatures (an
.ndb line for EICAR, an .hdb line for a sample file); the built-in engine alone; signed
signature bundles installed by `bulwarkctl av update` and from a loopback HTTP server.

Real SMTP clients (RawSession) talk to a real bulwarkd; the next hop is Postfix's smtp-sink.
Every wait is bounded."""

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import (RawSession, expect, free_port, mid, route, tcp_accepts, to_toml,
                      unix_accepts, wait_queue_empty, wait_until)

CLAMD = "/usr/sbin/clamd"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SENDER = "sender@other.org"
# A harmless file both engines know by its MD5 (the .hdb line below).
SAMPLE = b"Bulwark anti-virus test sample: not malware, listed by hash only.\n" * 4
SAMPLE_NAME = "Bulwark.Test.Sample"

pytestmark = pytest.mark.skipif(not Path(CLAMD).exists(), reason="clamd not installed (.ci/run installs clamav-daemon)")


def hdb_line(data: bytes, name: str) -> str:
    return f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n"


class Clamd:
    """clamd on a unix socket with a custom database; stop()/start() keep the socket path."""

    def __init__(self, base: Path):
        self.dir = base / "clamd"
        self.db = self.dir / "db"
        self.db.mkdir(parents=True, exist_ok=True)
        (self.db / "test.ndb").write_text(f"Test.Eicar.Ndb:0:*:{EICAR.hex()}\n")
        (self.db / "test.hdb").write_text(hdb_line(SAMPLE, SAMPLE_NAME))
        self.socket = Path(f"/tmp/bw-clamd-{os.getpid()}-{id(self)}.sock")
        self.conf = self.dir / "clamd.conf"
        self.conf.write_text(
            f"DatabaseDirectory {self.db}\nLocalSocket {self.socket}\nForeground yes\n"
            f"StreamMaxLength 60M\nSelfCheck 0\nLogFile {self.dir / 'clamd.log'}\n"
            "MaxConnectionQueueLength 200\nMaxThreads 4\n")
        self.proc = None

    def start(self) -> "Clamd":
        self.proc = subprocess.Popen([CLAMD, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until(lambda: unix_accepts(self.socket), 30, what="clamd listening")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.socket.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def clamd(tmp_path_factory):
    c = Clamd(tmp_path_factory.mktemp("av")).start()
    yield c
    c.stop()


@pytest.fixture
def gateway(start_mta, sink, tmp_path):
    """Factory: gateway(**antivirus) -> (daemon, the example.com next hop)."""

    def _make(**av):
        av.setdefault("signatures_dir", str(tmp_path / "signatures"))
        av.setdefault("timeout", "5s")
        hop = sink("hop")
        d = start_mta(tmp_path, [route(["example.com"], [hop])], extra_toml=to_toml({"antivirus": av}))
        return d, hop

    return _make


def zip_of(files: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


def with_attachment(name: str, ctype: str, data: bytes, subject: str = "files",
                    message_id: str | None = None) -> bytes:
    b64 = base64.encodebytes(data).decode().replace("\n", "\r\n")
    return (f"From: <{SENDER}>\r\nTo: <alice@example.com>\r\nSubject: {subject}\r\n"
            f"Message-ID: {message_id or mid('av')}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            "--b1\r\nContent-Type: text/plain\r\n\r\nPlease see the attachment.\r\n"
            f"--b1\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{b64}\r\n--b1--\r\n").encode()


def plain(body: bytes, subject: str = "plain") -> bytes:
    return (f"From: <{SENDER}>\r\nTo: <alice@example.com>\r\nSubject: {subject}\r\n"
            f"Message-ID: {mid('plain')}\r\n\r\n").encode() + body + b"\r\n"


def transaction(d, message: bytes, timeout: float = 30) -> tuple[int, str]:
    with RawSession(d.port, timeout=timeout) as s:
        expect(s.greeting(), 220)
        expect(s.ehlo(), 250)
        expect(s.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        expect(s.cmd("RCPT TO:<alice@example.com>"), 250)
        reply = s.data(message)
        s.cmd("QUIT")
    return reply


def av_status(d) -> dict:
    cp = d.ctl("av", "status", "--json")
    assert cp.returncode == 0, cp.stderr + cp.stdout
    return json.loads(cp.stdout)


EICAR_ZIP = zip_of({"eicar.com": EICAR})
EICAR_SAMPLES = {
    "plain": plain(EICAR),
    "base64 attachment": with_attachment("eicar.com", "application/octet-stream", EICAR),
    "in zip": with_attachment("eicar.zip", "application/zip", EICAR_ZIP),
    "in zip in zip": with_attachment("outer.zip", "application/zip", zip_of({"inner.zip": EICAR_ZIP})),
}


def test_clamd_rejects_eicar_in_every_wrapping_with_its_name(clamd, gateway):
    d, hop = gateway(engines=["clamd"], clamd=f"unix:{clamd.socket}")
    for what, message in EICAR_SAMPLES.items():
        code, text = transaction(d, message)
        assert code == 554 and text.startswith("5.7.1"), (what, code, text)
        assert "Test.Eicar.Ndb" in text, (what, text)
    assert d.queue_list() == []
    status = av_status(d)
    clamd_status = status["engines"]["clamd"]
    assert clamd_status["counters"]["detections"] == 4, status
    assert clamd_status["up"] is True, status
    assert "stage=antivirus verdict=reject" in d.log()


def test_clean_mail_with_attachments_is_delivered_unchanged(clamd, gateway):
    d, hop = gateway(engines=["clamd", "builtin"], clamd=f"unix:{clamd.socket}")
    attachment = zip_of({"report.txt": b"quarterly numbers\n" * 100, "logo.png": b"\x89PNG\r\n\x1a\n" + os.urandom(2000)})
    message = with_attachment("report.zip", "application/zip", attachment, subject="clean")
    code, text = transaction(d, message)
    assert code == 250, text
    got = hop.wait_for(1)[0]
    # smtp-sink stores LF line ends; after our Received: header it is byte for byte what we sent.
    sent = message.replace(b"\r\n", b"\n")
    assert got.content.endswith(sent), got.content[:500]
    added = got.content[: -len(sent)].decode().splitlines()
    assert added[0].startswith("Received: ") and all(l.startswith("\t") for l in added[1:]), added
    assert got.msg.get("X-Bulwark-Unscanned") is None
    counters = av_status(d)["engines"]
    assert counters["clamd"]["counters"]["scans"] == 1 and counters["builtin"]["counters"]["scans"] == 1


def test_quarantine_action_keeps_the_virus_from_delivery(clamd, gateway):
    d, hop = gateway(engines=["clamd"], clamd=f"unix:{clamd.socket}", action="quarantine")
    code, text = transaction(d, EICAR_SAMPLES["in zip"])
    assert code == 250, (code, text)
    cp = d.ctl("quarantine", "list", "--json")
    assert cp.returncode == 0, cp.stderr
    entries = json.loads(cp.stdout)
    assert len(entries) == 1 and "Test.Eicar.Ndb" in json.dumps(entries[0]), entries
    code, _ = transaction(d, plain(b"clean follow-up", subject="after"))
    assert code == 250
    delivered = hop.wait_for(1)
    assert [m.subject for m in delivered] == ["after"]
    assert "stage=antivirus verdict=quarantine" in d.log()


def test_discard_action_drops_silently(clamd, gateway):
    d, hop = gateway(engines=["clamd"], clamd=f"unix:{clamd.socket}", action="discard")
    code, _ = transaction(d, EICAR_SAMPLES["base64 attachment"])
    assert code == 250
    code, _ = transaction(d, plain(b"clean follow-up", subject="after"))
    assert code == 250
    assert [m.subject for m in hop.wait_for(1)] == ["after"]


def test_clamd_down_tempfails_nothing_lost_then_scanning_resumes(tmp_path, gateway):
    own = Clamd(tmp_path / "own").start()
    try:
        d, hop = gateway(engines=["clamd"], clamd=f"unix:{own.socket}")
        expect(transaction(d, plain(b"before")), 250)
        hop.wait_for(1)
        wait_queue_empty(d)
        own.stop()
        code, text = transaction(d, plain(b"while down", subject="while down"))
        assert code == 451 and text.startswith("4.7.1"), (code, text)
        # Nothing was committed: the client still holds the message.
        assert d.queue_list() == [] and hop.count() == 1
        wait_until(lambda: av_status(d)["engines"]["clamd"]["up"] is False, 15, what="status: clamd down")
        own.start()
        # The client's retry of the same message now passes, and viruses are caught again.
        code, _ = transaction(d, plain(b"while down", subject="while down"))
        assert code == 250
        assert transaction(d, EICAR_SAMPLES["plain"])[0] == 554
        assert sorted(m.subject for m in hop.wait_for(2)) == ["plain", "while down"]
        assert "antivirus: clamd is down" in d.log()
    finally:
        own.stop()


def test_on_error_accept_marks_the_message_unscanned(gateway, tmp_path):
    d, hop = gateway(engines=["clamd"], clamd=f"unix:{tmp_path}/no-clamd.sock", on_error="accept")
    assert transaction(d, plain(b"unscanned"))[0] == 250
    got = hop.wait_for(1)[0]
    assert got.msg.get("X-Bulwark-Unscanned", "").startswith("antivirus"), got.content[:400]


def test_30mb_message_is_streamed_to_clamd_within_an_rss_bound(clamd, gateway):
    d, hop = gateway(engines=["clamd"], clamd=f"unix:{clamd.socket}", max_scan_size="40MB",
                     timeout="60s")
    filler = os.urandom(22 << 20)
    message = with_attachment("data.bin", "application/octet-stream", filler + EICAR)
    assert len(message) > 30 << 20
    baseline = d.vm_hwm_kb()
    code, text = transaction(d, message, timeout=120)
    # The virus sits at the very end: a 554 proves clamd got all 30 MB.
    assert code == 554 and "Test.Eicar.Ndb" in text, (code, text)
    peak = d.vm_hwm_kb()
    # Above the idle daemon's own peak (its code pages count too): a message held whole would
    # add at least its 30 MB.
    assert peak - baseline < 20 * 1024, f"VmHWM {peak} kB after a 30 MB scan (baseline {baseline} kB)"


def test_builtin_engine_alone_detects_by_hash_eicar_disguise_and_zip_bomb(gateway, tmp_path):
    sigs = tmp_path / "signatures"
    sigs.mkdir()
    (sigs / "local.hdb").write_text(hdb_line(SAMPLE, SAMPLE_NAME))
    d, hop = gateway(engines=["builtin"], signatures_dir=str(sigs))
    pe = bytearray(0x80)
    pe[0:2] = b"MZ"
    pe[0x3C:0x40] = (0x40).to_bytes(4, "little")
    pe[0x40:0x44] = b"PE\0\0"
    bomb = zip_of({"zeros.txt": b"\0" * (60 << 20)})
    cases = {
        "hash": (with_attachment("sample.bin", "application/octet-stream", SAMPLE), SAMPLE_NAME),
        "hash in zip": (with_attachment("s.zip", "application/zip", zip_of({"s.bin": SAMPLE})), SAMPLE_NAME),
        "disguised": (with_attachment("invoice.pdf", "application/pdf", bytes(pe)), "Bulwark.Disguised.PE"),
        "zip bomb": (with_attachment("bomb.zip", "application/zip", bomb), "Bulwark.ZipBomb.Ratio"),
        **{f"eicar {k}": (v, "Eicar-Test-Signature") for k, v in EICAR_SAMPLES.items()},
    }
    for what, (message, name) in cases.items():
        code, text = transaction(d, message)
        assert code == 554 and name in text, (what, code, text)
    assert transaction(d, with_attachment("ok.pdf", "application/pdf", b"%PDF-1.4 fine"))[0] == 250
    assert len(hop.wait_for(1)) == 1
    status = av_status(d)["engines"]["builtin"]
    assert status["md5_signatures"] == 1 and status["counters"]["detections"] == len(cases), status


# -- YARA rules (cargo feature `yara`; tests/run-all.sh builds with it and sets BULWARK_REQUIRE_YARA)

YARA_MARKER = b"bulwark-yara-test-marker: harmless text a YARA rule looks for"
YARA_RULE = 'rule Bulwark_Test_Marker {\n  strings: $m = "bulwark-yara-test-marker"\n  condition: $m\n}\n'


def require_yara(d) -> None:
    """Skips (or, under tests/run-all.sh, fails) when bulwarkd was built without YARA."""
    if av_status(d)["engines"]["builtin"].get("yara_compiled_in"):
        return
    reason = "bulwarkd built without the cargo feature `yara` (cargo build --features yara)"
    if os.environ.get("BULWARK_REQUIRE_YARA"):
        pytest.fail(reason)
    pytest.skip(reason)


def test_yara_rule_matches_decoded_attachments_and_zip_members_a_bad_file_keeps_the_old_rules(
        gateway, tmp_path):
    sigs = tmp_path / "signatures"
    sigs.mkdir()
    (sigs / "mail.yar").write_text(YARA_RULE)
    d, hop = gateway(engines=["builtin"], signatures_dir=str(sigs))
    require_yara(d)
    name = "YARA.Bulwark_Test_Marker"
    # Base64 and deflate hide the marker from the raw message: only decoded objects show it.
    attached = with_attachment("notes.txt", "text/plain", YARA_MARKER)
    zipped = with_attachment("notes.zip", "application/zip", zip_of({"in/notes.txt": YARA_MARKER}))
    assert YARA_MARKER not in attached and YARA_MARKER not in zipped
    for what, message in {"attachment": attached, "zip member": zipped}.items():
        code, text = transaction(d, message)
        assert code == 554 and name in text, (what, code, text)
    assert transaction(d, with_attachment("ok.txt", "text/plain", b"nothing to see"))[0] == 250
    assert len(hop.wait_for(1)) == 1
    status = av_status(d)["engines"]["builtin"]
    assert (status["yara_rules"], status["yara_files"]) == (1, 1), status
    # A second file with a syntax error: reload refused with file:line:column, old rules stay.
    (sigs / "broken.yar").write_text('rule Broken {\n  strings: $a = "x"\n  condition: $a and\n}\n')
    cp = d.ctl("av", "reload")
    assert cp.returncode != 0, cp.stdout
    assert f"{sigs / 'broken.yar'}:4:" in cp.stderr and "old set stays" in cp.stderr, cp.stderr
    code, text = transaction(d, attached)
    assert code == 554 and name in text, (code, text)
    assert av_status(d)["engines"]["builtin"]["yara_files"] == 1
    (sigs / "broken.yar").unlink()
    (sigs / "mail.yar").unlink()
    assert d.ctl("av", "reload").returncode == 0
    assert transaction(d, attached)[0] == 250


# -- signature bundles -------------------------------------------------------------------------

def make_key(directory: Path, name: str = "update") -> tuple[Path, str]:
    key = directory / f"{name}.pem"
    openssl("genpkey", "-algorithm", "ed25519", "-out", key)
    der = openssl("pkey", "-in", key, "-pubout", "-outform", "DER")
    return key, base64.b64encode(der).decode()


def openssl(*args) -> bytes:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, check=True,
                          timeout=20, stdin=subprocess.DEVNULL).stdout


def sign(key: Path, bundle: Path) -> None:
    openssl("pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", bundle, "-out", f"{bundle}.sig")


def write_bundle(path: Path, version: str, hdb: str) -> Path:
    path.write_bytes(zip_of({"VERSION": f"{version}\n", "update.hdb": hdb}))
    return path


NEW_SAMPLE = b"A file that only the updated signature set knows.\n" * 3


def test_manual_update_installs_signed_bundles_and_refuses_others(gateway, tmp_path):
    key, public = make_key(tmp_path)
    d, _ = gateway(engines=["builtin"], update_public_key=public)
    message = with_attachment("new.bin", "application/octet-stream", NEW_SAMPLE)
    assert transaction(d, message)[0] == 250
    unsigned = write_bundle(tmp_path / "unsigned.zip", "u1", hdb_line(NEW_SAMPLE, "New.Sample"))
    cp = d.ctl("av", "update", str(unsigned))
    assert cp.returncode != 0 and "no signature" in cp.stderr, cp.stderr
    tampered = write_bundle(tmp_path / "tampered.zip", "t1", hdb_line(NEW_SAMPLE, "New.Sample"))
    sign(key, tampered)
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    cp = d.ctl("av", "update", str(tampered))
    assert cp.returncode != 0 and "does not verify" in cp.stderr, cp.stderr
    assert transaction(d, message)[0] == 250
    good = write_bundle(tmp_path / "good.zip", "2026-12-02.1", hdb_line(NEW_SAMPLE, "New.Sample"))
    sign(key, good)
    cp = d.ctl("av", "update", str(good))
    assert cp.returncode == 0, cp.stderr
    code, text = transaction(d, message)
    assert code == 554 and "New.Sample" in text, (code, text)
    assert av_status(d)["engines"]["builtin"]["version"] == "2026-12-02.1"
    text_status = d.ctl("av", "status").stdout
    assert "version 2026-12-02.1" in text_status and "1 detections" in text_status, text_status


def test_signed_bundle_carries_yara_rules(gateway, tmp_path):
    key, public = make_key(tmp_path)
    d, _ = gateway(engines=["builtin"], update_public_key=public)
    require_yara(d)
    message = with_attachment("notes.txt", "text/plain", YARA_MARKER)
    assert transaction(d, message)[0] == 250
    broken = tmp_path / "broken.zip"
    broken.write_bytes(zip_of({"VERSION": "y0\n", "mail.yar": "rule { condition: }\n"}))
    sign(key, broken)
    cp = d.ctl("av", "update", str(broken))
    assert cp.returncode != 0 and "mail.yar:1:" in cp.stderr, cp.stderr
    bundle = tmp_path / "yara.zip"
    bundle.write_bytes(zip_of({"VERSION": "2026-12-02.y1\n", "mail.yar": YARA_RULE}))
    sign(key, bundle)
    cp = d.ctl("av", "update", str(bundle))
    assert cp.returncode == 0, cp.stderr
    code, text = transaction(d, message)
    assert code == 554 and "YARA.Bulwark_Test_Marker" in text, (code, text)
    assert av_status(d)["engines"]["builtin"]["yara_rules"] == 1


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    port = free_port()
    proc = subprocess.Popen(["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: tcp_accepts(port), 10, what="http.server listening")
    yield root, f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(5)


def test_automatic_update_by_url_verifies_before_swapping(gateway, tmp_path, http_server):
    root, base = http_server
    key, public = make_key(tmp_path)
    other_key, _ = make_key(tmp_path, "other")
    bundle = write_bundle(root / "bundle.zip", "bad-1", hdb_line(NEW_SAMPLE, "New.Sample"))
    sign(other_key, bundle)  # signed, but not by the configured key
    d, _ = gateway(engines=["builtin"], update_public_key=public, update_url=f"{base}/bundle.zip",
                   update_interval="1s")
    message = with_attachment("new.bin", "application/octet-stream", NEW_SAMPLE)
    wait_until(lambda: (av_status(d)["last_update"] or {}).get("installed") is False, 15,
               what="the wrongly signed bundle refused")
    assert "does not verify" in av_status(d)["last_update"]["result"]
    assert transaction(d, message)[0] == 250
    write_bundle(root / "bundle.zip", "2026-12-02.2", hdb_line(NEW_SAMPLE, "New.Sample"))
    # A refused bundle never becomes the If-Modified-Since reference, so the next poll takes it.
    sign(key, root / "bundle.zip")
    wait_until(lambda: av_status(d)["engines"]["builtin"]["version"] == "2026-12-02.2", 20,
               what="the signed bundle installed")
    code, text = transaction(d, message)
    assert code == 554 and "New.Sample" in text, (code, text)
    assert "signature bundle installed" in d.log()
    assert (tmp_path / "signatures" / "update.hdb").exists()


def test_rules_decide_per_recipient_on_virus_true_and_the_action_covers_the_rest(clamd, start_mta, sink, tmp_path):
    hop = sink("hop")
    extra = to_toml({
        "antivirus": {"engines": ["clamd"], "clamd": f"unix:{clamd.socket}", "action": "reject",
                      "signatures_dir": str(tmp_path / "signatures")},
        "rule": [{"name": "samples to the security team", "virus": True,
                  "to": ["security@example.com"], "action": "accept"},
                 {"name": "tag clean mail", "virus": False, "action": "tag", "tag": "[scanned]"}],
    })
    d = start_mta(tmp_path, [route(["example.com"], [hop])], extra_toml=extra)
    message = EICAR_SAMPLES["in zip"]

    def send_to(rcpt):
        with RawSession(d.port) as s:
            expect(s.greeting(), 220)
            expect(s.ehlo(), 250)
            expect(s.cmd(f"MAIL FROM:<{SENDER}>"), 250)
            expect(s.cmd(f"RCPT TO:<{rcpt}>"), 250)
            return s.data(message)

    code, text = send_to("alice@example.com")
    assert code == 554 and "Test.Eicar.Ndb" in text, (code, text)
    assert send_to("security@example.com")[0] == 250
    assert transaction(d, plain(b"clean", subject="clean"))[0] == 250
    delivered = {m.rcpts[0]: m for m in hop.wait_for(2)}
    assert delivered["security@example.com"].subject == "files"
    assert delivered["alice@example.com"].subject == "[scanned] clean"


def test_old_builtin_signatures_raise_the_stale_alert(gateway, tmp_path):
    sigs = tmp_path / "signatures"
    sigs.mkdir()
    (sigs / "local.hdb").write_text(hdb_line(SAMPLE, SAMPLE_NAME))
    month_ago = os.path.getmtime(sigs / "local.hdb") - 30 * 86400
    os.utime(sigs / "local.hdb", (month_ago, month_ago))
    d, _ = gateway(engines=["builtin"], signatures_dir=str(sigs), max_signature_age="7d")
    status = av_status(d)["engines"]["builtin"]
    assert status["stale"] is True and status["age_seconds"] > 29 * 86400, status
    wait_until(lambda: "built-in signatures are older than max_signature_age" in d.log(), 15,
               what="the stale warning in the log")
    assert "STALE" in d.ctl("av", "status").stdout
