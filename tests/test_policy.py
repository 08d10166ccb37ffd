"""Policy enforcement (issue 12) outside the attachment filter (tests/test_attachment_policy.py)
and the outbound limits (tests/test_outbound_limit.py): disclaimers, journaling copies and the
local archive, size limits per direction and domain, DKIM signing.

Real clients (smtplib and RawSession), real MIME (Python's email package), real next hops
(Postfix smtp-sink). What Bulwark delivers is parsed by Python's `email` package and by
mail-parser (the `mime_texts` example); DKIM signatures are verified by dkimpy with the public
key served by a DNS server the test runs on 127.0.0.1. Every wait is bounded."""

import base64
import email
import email.headerregistry
import email.policy
import io
import json
import os
import re
import smtplib
import subprocess
import time
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from conftest import BUILD, BULWARKCTL, REPO, queue_id_of, route, run, to_toml
from conftest import send_mail

MIME_TEXTS = os.environ.get("BULWARK_MIME_TEXTS") or str(BUILD / "examples" / "mime_texts")

SENDER = "sender@other.org"
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


def with_attachment(name, data: bytes, ctype="application/octet-stream", subject="att") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, "alice@example.com", subject
    msg["Message-ID"] = f"<{time.time_ns()}@test>"
    msg.set_content("see attached\n")
    maintype, subtype = ctype.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def text_message(kind: str, sender: str = "alice@corp.example") -> bytes:
    head = (f"From: {sender}\r\nTo: bob@example.com\r\nSubject: {kind}\r\nMIME-Version: 1.0\r\n"
            f"Message-ID: <{time.time_ns()}.{kind}@test>\r\n")
    if kind in ("text", "journal"):
        return (head + "Content-Type: text/plain; charset=us-ascii\r\n\r\nHello Bob\r\n").encode()
    if kind == "html":
        return (head + "Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello</p></body></html>\r\n").encode()
    if kind == "latin1_qp":
        return (head + "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                "Gr=FC=DFe aus K=F6ln\r\n").encode()
    if kind == "base64":
        return (head + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                "SGFsbG8gd8O2cmxk\r\n").encode()
    if kind == "smime":
        return (head + 'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
                "Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAxggFAMIIBPAIBADAkMBYx\r\n").encode()
    if kind in ("alternative", "signed"):
        sub = "alternative" if kind == "alternative" else 'signed; protocol="application/pgp-signature"'
        second = ("Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hello</p>\r\n" if kind == "alternative"
                  else "Content-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n")
        return (head + f"Content-Type: multipart/{sub}; boundary=\"bb\"\r\n\r\n--bb\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n--bb\r\n" + second + "--bb--\r\n").encode()
    raise ValueError(kind)


DISCLAIMER = "Vertraulich: Diese Nachricht ist nur f\u00fcr den Empf\u00e4nger bestimmt."


def mail_parser_texts(raw: bytes, tmp_path: Path) -> dict[str, str]:
    """{content type: decoded text} of the text parts as mail-parser reads them."""
    if not os.access(MIME_TEXTS, os.X_OK):
        pytest.fail(f"{MIME_TEXTS} is missing: build it (cargo build -p bulwark-mta --examples, as "
                    f"tests/run-all.sh does) or set BULWARK_MIME_TEXTS", pytrace=False)
    path = tmp_path / f"parsed-{time.time_ns()}.eml"
    path.write_bytes(crlf(raw))
    out = run([MIME_TEXTS, path], timeout=30)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    return {p["content_type"]: p["text"] for p in report["parts"] if p["text"] is not None}


def python_texts(raw: bytes) -> dict[str, str]:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return {p.get_content_type(): p.get_content() for p in parsed.walk() if p.get_content_maintype() == "text"}


def disclaimer_gateway(gateway, text=DISCLAIMER, html=f"<p>{DISCLAIMER}</p>"):
    return gateway({"name": "legal", "direction": "outbound", "action": "disclaimer",
                    "disclaimer_text": text, "disclaimer_html": html}, relay=TRUSTED)


@pytest.mark.parametrize("kind", ["text", "html", "alternative", "latin1_qp", "base64"])
def test_disclaimer_is_mime_correct_for_both_parsers_and_added_once(gateway, kind, tmp_path):
    d, hop = disclaimer_gateway(gateway)
    code, text = send(d, text_message(kind), sender="alice@corp.example", rcpts=["bob@example.com"])
    assert code == 250, (code, text)
    got = hop.wait_for(1)[0]
    original = python_texts(text_message(kind))
    for parser, texts in (("email", python_texts(got.content)), ("mail-parser", mail_parser_texts(got.content, tmp_path))):
        assert set(texts) == set(original), (parser, texts)
        for ctype, old in original.items():
            new = texts[ctype]
            assert new.count("Vertraulich") == 1, (parser, kind, new)
            assert DISCLAIMER in new, (parser, kind, new)
            old = old.strip()
            if ctype == "text/html":
                old = old.split("</body>")[0]
            assert new.startswith(old), (parser, kind, new)
    if kind == "latin1_qp":
        assert "charset=iso-8859-1" in got.content.decode("ascii", "replace"), "Latin-1 can carry it"
        assert b"Content-Transfer-Encoding: quoted-printable" in got.content
    if kind == "base64":
        assert b"Content-Transfer-Encoding: base64" in got.content
    # Passing again (a reply quoting it) does not add it twice.
    code, _ = send(d, crlf(got.content), sender="alice@corp.example", rcpts=["bob@example.com"])
    assert code == 250
    again = hop.wait_for(2)[-1].content
    assert all(t.count("Vertraulich") == 1 for t in python_texts(again).values())
    assert all(t.count("Vertraulich") == 1 for t in mail_parser_texts(again, tmp_path).values())


def test_a_disclaimer_latin1_cannot_carry_re_encodes_the_part_as_utf8(gateway, tmp_path):
    notice = "\u20ac-Rechnungen sind vertraulich \u2013 \u0141\u00f3d\u017a office."
    d, hop = disclaimer_gateway(gateway, text=notice, html=f"<p>{notice}</p>")
    assert send(d, text_message("latin1_qp"), sender="alice@corp.example", rcpts=["bob@example.com"])[0] == 250
    got = hop.wait_for(1)[0]
    assert b"charset=utf-8" in got.content and b"charset=iso-8859-1" not in got.content, got.content
    for texts in (python_texts(got.content), mail_parser_texts(got.content, tmp_path)):
        assert texts["text/plain"].startswith("Gr\u00fc\u00dfe aus K\u00f6ln"), texts
        assert notice in texts["text/plain"], texts


@pytest.mark.parametrize("kind", ["signed", "smime"])
def test_no_disclaimer_on_signed_or_encrypted_mail(gateway, kind):
    d, hop = disclaimer_gateway(gateway)
    sent = text_message(kind)
    assert send(d, sent, sender="alice@corp.example", rcpts=["bob@example.com"])[0] == 250
    got = hop.wait_for(1)[0]
    assert lf(got.content).split(b"\n\n", 1)[1] == lf(sent).split(b"\n\n", 1)[1], "the body was changed"
    assert b"Vertraulich" not in got.content
    assert "not added by rule:legal: signed or encrypted" in d.log()


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




def envelope_fields_policy():
    """Python's email policy reading the envelope fields as RFC 5322 address lists."""
    registry = email.headerregistry.HeaderRegistry()
    for name in ("x-bulwark-original-sender", "x-bulwark-original-recipients"):
        registry.map_to_type(name, email.headerregistry.AddressHeader)
    return email.policy.default.clone(header_factory=registry)


ENVELOPE_FIELDS = envelope_fields_policy()


def test_copy_headers_are_rfc5322_safe_for_any_envelope(gateway):
    """Quoted local parts with commas and spaces, a null sender and enough recipients to need
    folding: the copy's fields parse back to exactly the envelope, in lines of at most 78."""
    d, hop = gateway({"name": "journal", "action": "copy", "copy_to": ["journal@other.org"]})
    rcpts = ['"smith, john"@example.com', '"a b"@example.com'] + \
        [f"recipient.with.a.long.local.part.{i:02d}@example.com" for i in range(30)]
    for sender in ('"doe, jane"@other.org', ""):
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
            client.ehlo("client.test")
            refused = client.sendmail(sender or "<>", rcpts, text_message("journal", sender=sender or "x@other.org"))
            assert not refused, refused
    copies = [m for m in hop.wait_for(4) if m.rcpts == ["journal@other.org"]]
    assert len(copies) == 2, copies
    for copy in copies:
        head = lf(copy.content).split(b"\n\n", 1)[0]
        assert all(len(line) <= 78 for line in head.split(b"\n")), head.decode()
        parsed = email.message_from_bytes(copy.content, policy=ENVELOPE_FIELDS)
        listed = [a.addr_spec for a in parsed["X-Bulwark-Original-Recipients"].addresses]
        assert listed == rcpts, listed
        sender = parsed["X-Bulwark-Original-Sender"]
        if copy.msg["X-Bulwark-Original-Sender"] == "<>":
            continue
        assert [a.addr_spec for a in sender.addresses] == ['"doe, jane"@other.org'], str(sender)
    assert sorted(c.msg["X-Bulwark-Original-Sender"] for c in copies) == ['<"doe, jane"@other.org>', "<>"]


def spreadsheet() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    return out.getvalue()


def test_the_issue_rule_finance_spreadsheets_are_journaled_and_get_the_disclaimer(gateway, tmp_path):
    """"Outbound mail from finance with a spreadsheet attached: copy to the archive and add the
    disclaimer" — the copy limited by direction, sender domain and attachment type."""
    archive = tmp_path / "archive"
    xlsx_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    d, hop = gateway(
        {"name": "finance journal", "direction": "outbound", "from": ["finance.corp.example"],
         "attachment_types": [xlsx_type], "action": "copy", "copy_to": ["journal@other.org"],
         "archive_dir": str(archive)},
        {"name": "finance legal", "direction": "outbound", "from": ["finance.corp.example"],
         "action": "disclaimer", "disclaimer_text": DISCLAIMER},
        relay={"trusted_networks": ["127.0.0.2/32"]})

    def submit(sender, name, data, source):
        msg = with_attachment(name, data, "application/octet-stream", subject=f"{sender} {name} {source}")
        msg.replace_header("From", sender)
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30, source_address=(source, 0)) as client:
            client.ehlo("client.test")
            assert not client.sendmail(sender, ["bob@example.com"], crlf(msg.as_bytes(policy=email.policy.SMTP)))

    submit("cfo@finance.corp.example", "q3.xlsx", spreadsheet(), "127.0.0.2")      # outbound: journaled
    submit("cfo@finance.corp.example", "q3.pdf", b"%PDF-1.4", "127.0.0.2")         # not a spreadsheet
    submit("rep@sales.corp.example", "q3.xlsx", spreadsheet(), "127.0.0.2")        # not finance
    submit("cfo@finance.corp.example", "in.xlsx", spreadsheet(), "127.0.0.1")      # inbound
    got = hop.wait_for(5, settle=1.5)
    copies = [m for m in got if m.rcpts == ["journal@other.org"]]
    assert [c.subject for c in copies] == ["cfo@finance.corp.example q3.xlsx 127.0.0.2"], got
    assert copies[0].msg["X-Bulwark-Original-Recipients"] == "<bob@example.com>"
    assert len(list(archive.glob("*/*.eml"))) == 1
    with_disclaimer = sorted(m.subject for m in got if m.rcpts == ["bob@example.com"]
                             and DISCLAIMER in python_texts(m.content).get("text/plain", ""))
    assert with_disclaimer == ["cfo@finance.corp.example q3.pdf 127.0.0.2", "cfo@finance.corp.example q3.xlsx 127.0.0.2"]


def test_size_limits_per_direction_and_domain_reject_with_552_5_3_4(gateway):
    d, hop = gateway(
        {"name": "outbound finance size", "direction": "outbound", "from": ["finance.corp.example"],
         "size_over": "20KB", "action": "reject", "reason": "finance may send 20 KB"},
        {"name": "inbound size", "direction": "inbound", "to": ["example.com"], "size_over": "50KB",
         "action": "reject", "reason": "inbound limit 50 KB"},
        relay={"trusted_networks": ["127.0.0.2/32"]})

    def submit(sender, kb, source, rcpt="bob@example.com"):
        body = ("x" * 76 + "\r\n") * (kb * 1024 // 78)
        raw = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {sender} {kb} KB from {source}\r\n\r\n{body}").encode()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30, source_address=(source, 0)) as client:
            client.ehlo("client.test")
            try:
                client.sendmail(sender, [rcpt], raw)
                return 250, ""
            except smtplib.SMTPDataError as e:
                return e.smtp_code, e.smtp_error.decode()

    code, text = submit("cfo@finance.corp.example", 30, "127.0.0.2")
    assert code == 552 and text.startswith("5.3.4") and "finance may send 20 KB" in text, (code, text)
    assert submit("cfo@finance.corp.example", 10, "127.0.0.2") == (250, "")
    assert submit("rep@sales.corp.example", 30, "127.0.0.2") == (250, ""), "the finance limit is finance's"
    assert submit("someone@other.org", 30, "127.0.0.1") == (250, ""), "inbound allows 50 KB"
    code, text = submit("someone@other.org", 60, "127.0.0.1")
    assert code == 552 and text.startswith("5.3.4") and "inbound limit 50 KB" in text, (code, text)
    assert len(hop.wait_for(3, settle=1.0)) == 3


def keygen(tmp_path, algorithm) -> tuple[Path, str]:
    key = tmp_path / f"corp.{algorithm}.pem"
    out = run([str(BULWARKCTL), "dkim", "keygen", "corp.example", "s1", "--algorithm", algorithm,
               "--out", str(key)], timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if "._domainkey." in l)
    assert line.startswith("s1._domainkey.corp.example. IN TXT")
    record = "".join(re.findall(r'"([^"]*)"', line))
    assert (key.stat().st_mode & 0o777) == 0o600
    return key, record


def openssl_key(tmp_path, algorithm, form) -> tuple[Path, str]:
    """A key made by openssl in `form` (pkcs1, pkcs8) and its DKIM record."""
    key = tmp_path / f"openssl.{algorithm}.{form}.pem"
    if algorithm == "rsa" and form == "pkcs1":
        made = run(["openssl", "genrsa", "-traditional", "-out", key, "2048"], timeout=120)
    elif algorithm == "rsa":
        made = run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key],
                   timeout=120)
    else:
        made = run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], timeout=60)
    assert made.returncode == 0, made.stderr
    banner = key.read_text().splitlines()[0]
    assert banner == ("-----BEGIN RSA PRIVATE KEY-----" if form == "pkcs1" else "-----BEGIN PRIVATE KEY-----")
    public = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                            capture_output=True, timeout=30, check=True).stdout
    if algorithm == "ed25519":
        public = public[-32:]  # RFC 8463: the raw key, not the SubjectPublicKeyInfo
    return key, f"v=DKIM1; k={algorithm}; p={base64.b64encode(public).decode()}"


def dkimpy():
    """dkimpy and dnspython, imported here so that a machine without them fails these tests
    with a clear message instead of failing the collection of the whole suite."""
    try:
        import dkim
        import dns.resolver
    except ImportError as missing:
        pytest.fail(f"{missing.name} missing: pip install dkimpy dnspython pynacl (see .ci/run)", pytrace=False)
    return dkim, dns.resolver


def loopback_dnsfunc(server):
    """dkimpy's DNS lookup, asking only the test's DNS server on 127.0.0.1."""
    _, resolver_module = dkimpy()
    resolver = resolver_module.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.port

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(name, "TXT", lifetime=timeout)
        except (resolver_module.NXDOMAIN, resolver_module.NoAnswer):
            return b""
        return b"".join(b"".join(r.strings) for r in answer)

    return dnsfunc


@pytest.mark.parametrize("algorithm,source", [("rsa", "keygen"), ("rsa", "pkcs1"), ("rsa", "pkcs8"),
                                              ("ed25519", "keygen"), ("ed25519", "pkcs8")])
def test_dkim_signature_verifies_with_dkimpy_after_every_other_change(gateway, dns, tmp_path, algorithm, source):
    key, record = keygen(tmp_path, algorithm) if source == "keygen" else openssl_key(tmp_path, algorithm, source)
    dns.add("s1._domainkey.corp.example", "TXT", record)
    d, hop = gateway({"name": "legal", "direction": "outbound", "action": "disclaimer", "disclaimer_text": DISCLAIMER},
                     {"name": "mark", "direction": "outbound", "action": "tag", "tag": "[ext]"},
                     {"name": "stamp", "direction": "outbound", "action": "add_header", "add_header": "X-Policy: checked"},
                     extra={"dkim": [{"domain": "corp.example", "selector": "s1", "private_key": str(key)}]},
                     relay=TRUSTED)
    code, text = send(d, text_message("alternative"), sender="alice@corp.example", rcpts=["bob@example.com"])
    assert code == 250, (code, text)
    got = hop.wait_for(1)[0]
    signed = crlf(got.content)
    parsed = email.message_from_bytes(signed)
    assert parsed["Subject"] == "[ext] alternative" and parsed["X-Policy"] == "checked"
    assert DISCLAIMER.encode("utf-8") in parsed.get_payload()[0].get_payload(decode=True)
    header = parsed["DKIM-Signature"]
    assert "c=relaxed/relaxed" in header and "d=corp.example" in header and "s=s1" in header
    assert f"a={algorithm}-sha256" in re.sub(r"\s", "", header)
    h = re.search(r"h=([^;]+)", re.sub(r"\s", "", header)).group(1).lower().split(":")
    assert h.count("from") == 2 and "subject" in h, h
    dkim, _ = dkimpy()
    dnsfunc = loopback_dnsfunc(dns)
    assert dkim.verify(signed, dnsfunc=dnsfunc), "dkimpy rejects the signature"
    assert any(q[0].lower().startswith("s1._domainkey.corp.example") for q in dns.queries), dns.queries
    assert not dkim.verify(signed.replace(b"Hello", b"Hallo", 1), dnsfunc=dnsfunc), "a changed body must fail"
    second_from = signed.replace(b"From: ", b"From: mallory@evil.example\r\nFrom: ", 1)
    assert not dkim.verify(second_from, dnsfunc=dnsfunc), "From is over-signed"


def test_dkim_keygen_never_overwrites_a_key(tmp_path):
    key, _ = keygen(tmp_path, "ed25519")
    before = key.read_bytes()
    again = run([str(BULWARKCTL), "dkim", "keygen", "corp.example", "s1", "--algorithm", "ed25519",
                 "--out", str(key)], timeout=60)
    assert again.returncode != 0 and str(key) in again.stderr, again
    assert key.read_bytes() == before
