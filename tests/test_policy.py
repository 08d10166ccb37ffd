"""Policy enforcement (issue 12): attachment conditions and the strip action, disclaimers,
journaling copies and the local archive, DKIM signing verified by dkimpy, and outbound rate
limits. Real clients (RawSession), real MIME (Python's email package), real next hops (Postfix
smtp-sink), an independent DKIM verifier (dkimpy). Every wait is bounded."""

import email
import json
import email.policy
import io
import re
import subprocess
import time
import zipfile
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest

from conftest import BULWARKCTL, RawSession, expect, queue_id_of, route, run, to_toml, wait_until
from conftest import send_mail

SENDER = "sender@other.org"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 64
TRUSTED = {"trusted_networks": ["127.0.0.1/32"]}


@pytest.fixture
def gateway(start_mta, sink, tmp_path):
    """gateway(*rules, extra={...toml tables}, **daemon_kw) -> (daemon, hop for example.com)."""

    def _make(*rules, extra=None, **kw):
        hop = sink("hop")
        doc = {"rule": list(rules)} if rules else {}
        doc.update(extra or {})
        d = start_mta(tmp_path, [route(["example.com", "other.org", "corp.example"], [hop])],
                      extra_toml=to_toml(doc), relay={"domains": ["example.com"], **kw.pop("relay", {})}, **kw)
        return d, hop

    return _make


def lf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


def crlf(raw: bytes) -> bytes:
    return lf(raw).replace(b"\n", b"\r\n")


def send(d, msg: EmailMessage | bytes, sender=SENDER, rcpts=("alice@example.com",)):
    raw = msg if isinstance(msg, bytes) else crlf(msg.as_bytes(policy=email.policy.SMTP))
    return send_mail(d.port, sender=sender, rcpts=list(rcpts), message=raw)


def zipped(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return out.getvalue()


def encrypted_zip(tmp_path: Path) -> bytes:
    (tmp_path / "secret.txt").write_bytes(b"the payload")
    target = tmp_path / "enc.zip"
    target.unlink(missing_ok=True)
    subprocess.run(["zip", "-q", "-j", "-P", "infected", str(target), str(tmp_path / "secret.txt")],
                   check=True, timeout=20)
    return target.read_bytes()


def with_attachment(name, data: bytes, ctype="application/octet-stream", subject="att") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, "alice@example.com", subject
    msg["Message-ID"] = f"<{time.time_ns()}@test>"
    msg.set_content("see attached\n")
    maintype, subtype = ctype.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


# (id, attachment name, bytes, declared type). Every one carries an executable.
TRICKS = [
    ("plain", "evil.exe", EXE, "application/octet-stream"),
    ("rtl_override", "invoice\u202efdp.exe", EXE, "application/octet-stream"),
    ("rtl_issue_example", "invoice.pdf\u202eexe", EXE, "application/octet-stream"),
    ("trailing_dots_spaces", "evil.exe. . ", EXE, "application/octet-stream"),
    ("double_extension", "invoice.pdf.exe", EXE, "application/pdf"),
    ("rfc2231_non_ascii", "r\u00e9sum\u00e9_fa\u00e7ade_" + "x" * 60 + ".exe", EXE, "application/octet-stream"),
    ("renamed_exe", "report.pdf", EXE, "application/pdf"),
]

RULES = [
    {"name": "no executables by name", "attachment_names": ["*.exe"]},
    {"name": "no executables by type", "attachment_types": ["application/x-msdownload"]},
]


def trick_messages(tmp_path):
    """(id, message) for every trick, outside and inside zips (nested too), and encrypted."""
    for trick, name, data, ctype in TRICKS:
        yield trick, with_attachment(name, data, ctype)
        yield f"{trick}_in_zip", with_attachment("archive.zip", zipped(name, data), "application/zip")
        nested = zipped("inner.zip", zipped(name, data))
        yield f"{trick}_in_nested_zip", with_attachment("archive.zip", nested, "application/zip")


def test_every_attachment_trick_is_rejected_inside_and_outside_zips(gateway, tmp_path):
    rules = [dict(r, action="reject", reason="executable") for r in RULES]
    rules.append({"name": "encrypted", "encrypted_archive": True, "action": "reject", "reason": "encrypted"})
    d, hop = gateway(*rules)
    for trick, msg in trick_messages(tmp_path):
        code, text = send(d, msg)
        assert code == 550 and "executable" in text, (trick, code, text)
    code, text = send(d, with_attachment("locked.zip", encrypted_zip(tmp_path), "application/zip"))
    assert code == 550 and "encrypted" in text, (code, text)
    clean = [with_attachment("report.pdf", b"%PDF-1.4 fine"),
             with_attachment("notes.zip", zipped("notes.txt", b"just text"), "application/zip"),
             with_attachment("exe.txt", b"an .exe in the text is fine", "text/plain")]
    for msg in clean:
        code, text = send(d, msg)
        assert code == 250, (msg["Subject"], code, text)
    hop.wait_for(len(clean))


def parts_of(raw: bytes) -> list[bytes]:
    """The raw body parts of a one-level multipart, split on its boundary (LF line ends)."""
    msg = email.message_from_bytes(lf(raw))
    boundary = msg.get_boundary().encode()
    body = lf(raw).split(b"\n\n", 1)[1]
    return body.split(b"--" + boundary)


def test_strip_replaces_only_the_matches_and_keeps_the_rest_byte_identical(gateway, tmp_path):
    d, hop = gateway(*[dict(r, action="strip", reason="executables are not accepted") for r in RULES])
    for i, (trick, msg) in enumerate(trick_messages(tmp_path)):
        msg.add_attachment(b"\x89PNG\r\n\x1a\nimage-bytes", maintype="image", subtype="png", filename="logo.png")
        msg.add_attachment(b"%PDF-1.4 keep me", maintype="application", subtype="pdf", filename="keep.pdf")
        msg.replace_header("Subject", f"strip {trick}")
        original = crlf(msg.as_bytes(policy=email.policy.SMTP))
        code, text = send(d, original)
        assert code == 250, (trick, code, text)
        got = hop.wait_for(i + 1)[-1]
        assert got.subject == f"strip {trick}"
        before, after = parts_of(original), parts_of(got.content)
        assert len(before) == len(after), trick
        changed = [j for j, (a, b) in enumerate(zip(before, after)) if a != b]
        assert changed == [2], (trick, changed)  # [preamble, text, attachment, png, pdf, epilogue]
        assert b"was removed by the mail gateway: executables are not accepted" in after[2]
        assert b"TVqQ" not in after[2] and b"UEsD" not in after[2], trick
        parsed = email.message_from_bytes(got.content, policy=email.policy.default)
        names = [p.get_filename() for p in parsed.iter_attachments()]
        assert names[-2:] == ["logo.png", "keep.pdf"], names
    # Each original is kept whole in the quarantine, and a release delivers it as sent.
    cp = d.ctl("quarantine", "list", "--json")
    assert cp.returncode == 0, cp.stderr
    held = json.loads(cp.stdout)
    assert len(held) == i + 1, held
    assert all("stripped by rule:" in json.dumps(e) for e in held), held[0]
    released = d.ctl("quarantine", "release", held[0]["id"], "--json")
    assert released.returncode == 0, released.stderr + released.stdout
    whole = hop.wait_for(i + 2)[-1]
    assert whole.subject.startswith("strip ") and b"TVqQ" in whole.content or b"UEsD" in whole.content


def text_message(kind: str) -> bytes:
    head = f"From: alice@corp.example\r\nTo: bob@example.com\r\nSubject: {kind}\r\nMIME-Version: 1.0\r\n"
    if kind == "text":
        return (head + "Content-Type: text/plain; charset=us-ascii\r\n\r\nHello Bob\r\n").encode()
    if kind == "html":
        return (head + "Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello</p></body></html>\r\n").encode()
    if kind == "latin1_qp":
        return (head + "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                "Gr=FC=DFe aus K=F6ln\r\n").encode()
    if kind == "base64":
        return (head + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                "SGFsbG8gd8O2cmxk\r\n").encode()
    if kind in ("alternative", "signed"):
        sub = "alternative" if kind == "alternative" else 'signed; protocol="application/pgp-signature"'
        second = ("Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hello</p>\r\n" if kind == "alternative"
                  else "Content-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n")
        return (head + f"Content-Type: multipart/{sub}; boundary=\"bb\"\r\n\r\n--bb\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n--bb\r\n" + second + "--bb--\r\n").encode()
    raise ValueError(kind)


DISCLAIMER = "Vertraulich: Diese Nachricht ist nur f\u00fcr den Empf\u00e4nger bestimmt."


@pytest.mark.parametrize("kind", ["text", "html", "alternative", "latin1_qp", "base64", "signed"])
def test_disclaimer_is_mime_correct_and_absent_from_signed_messages(gateway, kind):
    d, hop = gateway({"name": "legal", "direction": "outbound", "action": "disclaimer",
                      "disclaimer_text": DISCLAIMER, "disclaimer_html": f"<p>{DISCLAIMER}</p>"}, relay=TRUSTED)
    code, text = send(d, text_message(kind), sender="alice@corp.example", rcpts=["bob@example.com"])
    assert code == 250, (code, text)
    got = hop.wait_for(1)[0]
    parsed = email.message_from_bytes(got.content, policy=email.policy.default)
    texts = {p.get_content_type(): p.get_content() for p in parsed.walk() if p.get_content_maintype() == "text"}
    if kind == "signed":
        assert not any(DISCLAIMER in t for t in texts.values()), texts
        assert b"Vertraulich" not in got.content
        return
    assert all(DISCLAIMER in t for t in texts.values()), (kind, texts)
    assert all(t.count("Vertraulich") == 1 for t in texts.values())
    original = email.message_from_bytes(text_message(kind), policy=email.policy.default)
    for part in original.walk():
        if part.get_content_maintype() == "text":
            old = part.get_content().strip()
            if part.get_content_subtype() == "html":
                old = old.split("</body>")[0]
            assert texts[part.get_content_type()].startswith(old), (kind, texts)
    if kind == "latin1_qp":
        assert "charset=iso-8859-1" in got.content.decode("ascii", "replace")
    # Passing again (a reply quoting it) does not add it twice.
    code, _ = send(d, crlf(got.content), sender="alice@corp.example", rcpts=["bob@example.com"])
    assert code == 250
    again = email.message_from_bytes(hop.wait_for(2)[-1].content, policy=email.policy.default)
    for p in again.walk():
        if p.get_content_maintype() == "text":
            assert p.get_content().count("Vertraulich") == 1


def test_copy_and_archive_carry_the_original_envelope(gateway, tmp_path):
    archive = tmp_path / "archive"
    d, hop = gateway({"name": "journal", "attachment_types": ["application/pdf"], "action": "copy",
                      "copy_to": ["journal@other.org"], "archive_dir": str(archive)})
    code, text = send(d, with_attachment("q3.pdf", b"%PDF-1.4 numbers"), rcpts=["alice@example.com", "bob@example.com"])
    assert code == 250, (code, text)
    qid = queue_id_of((code, text))
    msgs = hop.wait_for(2)
    copy = next(m for m in msgs if m.rcpts == ["journal@other.org"])
    assert copy.msg["X-Bulwark-Original-Sender"] == f"<{SENDER}>"
    assert "<alice@example.com>, <bob@example.com>" in copy.msg["X-Bulwark-Original-Recipients"]
    files = list(archive.glob("*/*.eml"))
    assert [f.name for f in files] == [f"{qid}.eml"], files
    day = files[0].parent
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day.name)
    stored = email.message_from_bytes(files[0].read_bytes())
    assert stored["X-Bulwark-Original-Sender"] == f"<{SENDER}>"
    assert stored.get_payload()[1].get_filename() == "q3.pdf"
    index = (day / "index.tsv").read_text().splitlines()
    assert len(index) == 1 and f"\t{qid}\t<{SENDER}>\talice@example.com,bob@example.com\t" in index[0], index


def keygen(tmp_path, algorithm) -> tuple[Path, bytes]:
    key = tmp_path / f"corp.{algorithm}.pem"
    out = run([str(BULWARKCTL), "dkim", "keygen", "corp.example", "s1", "--algorithm", algorithm,
               "--out", str(key)], timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if "._domainkey." in l)
    assert line.startswith("s1._domainkey.corp.example. IN TXT")
    record = "".join(re.findall(r'"([^"]*)"', line)).encode()
    assert (key.stat().st_mode & 0o777) == 0o600
    return key, record


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_dkim_signature_verifies_with_dkimpy_after_the_disclaimer(gateway, tmp_path, algorithm):
    key, record = keygen(tmp_path, algorithm)
    d, hop = gateway({"name": "legal", "direction": "outbound", "action": "disclaimer", "disclaimer_text": DISCLAIMER},
                     extra={"dkim": [{"domain": "corp.example", "selector": "s1", "private_key": str(key)}]},
                     relay=TRUSTED)
    code, text = send(d, text_message("alternative"), sender="alice@corp.example", rcpts=["bob@example.com"])
    assert code == 250, (code, text)
    got = hop.wait_for(1)[0]
    signed = crlf(got.content)
    assert DISCLAIMER.encode("utf-8") in email.message_from_bytes(signed).get_payload()[0].get_payload(decode=True)
    header = email.message_from_bytes(signed)["DKIM-Signature"]
    assert "c=relaxed/relaxed" in header and "d=corp.example" in header
    h = re.search(r"h=([^;]+)", re.sub(r"\s", "", header)).group(1).lower().split(":")
    assert h.count("from") == 2, h

    def dnsfunc(name, timeout=5):
        return record if name in (b"s1._domainkey.corp.example.", "s1._domainkey.corp.example.") else b""

    assert dkim.verify(signed, dnsfunc=dnsfunc), "dkimpy rejects the signature"
    tampered = signed.replace(b"Hello", b"Hallo", 1)
    assert not dkim.verify(tampered, dnsfunc=dnsfunc)


def test_outbound_limit_defers_the_101st_and_lets_it_through_later(gateway, tmp_path):
    window = 20
    d, hop = gateway(extra={"outbound_limit": {"per": ["sender"], "messages": 100, "recipients": 1000,
                                               "window": f"{window}s"}}, relay=TRUSTED)
    started = time.monotonic()
    msg = text_message("text")
    with RawSession(d.port) as s:
        expect(s.greeting(), 220)
        expect(s.ehlo(), 250)
        for i in range(100):
            expect(s.mail_transaction("bulk@corp.example", ["bob@example.com"], msg), 250, what=f"message {i + 1}")
        code, text = s.mail_transaction("bulk@corp.example", ["bob@example.com"], msg)
    assert time.monotonic() - started < window, "the test machine is too slow for this window"
    assert code == 451 and text.startswith("4.7.1"), (code, text)
    assert "alert: outbound limit reached: sender:bulk@corp.example" in d.log()
    # Another sender is not affected; the limit survives a restart.
    assert send(d, msg, sender="other@corp.example", rcpts=["bob@example.com"])[0] == 250
    d.restart()
    assert send(d, msg, sender="bulk@corp.example", rcpts=["bob@example.com"])[0] == 451
    wait_until(lambda: time.monotonic() - started > window + 1, window + 5, what="the window to pass")
    assert send(d, msg, sender="bulk@corp.example", rcpts=["bob@example.com"])[0] == 250
    hop.wait_for(102, timeout=60)
