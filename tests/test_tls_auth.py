"""STARTTLS, implicit TLS, AUTH, and certificate reload."""

import re
import shutil
import smtplib
import socket
import time

import pytest

from conftest import (HOSTNAME, RawSession, cert_der, client_tls_context, ehlo_keywords, enhanced,
                      expect, make_cert, make_message, queue_id_of)

USER, PASSWORD = "alice", "s3cret"


@pytest.fixture
def tls_daemon(start_daemon, tmp_path):
    return start_daemon(tmp_path, listeners=[{"role": "mx"}, {"role": "submission"}, {"role": "submissions"}],
                        tls=True, users={USER: PASSWORD})


def test_ehlo_before_and_after_starttls(tls_daemon):
    with RawSession(tls_daemon.port_of("submission")) as s:
        s.greeting()
        code, text = s.ehlo()
        before = ehlo_keywords(text)
        assert "STARTTLS" in before, text
        assert "AUTH" not in before, f"AUTH offered before TLS: {text}"
        expect(s.starttls(), 220, what="STARTTLS")
        code, text = s.ehlo()
        after = ehlo_keywords(text)
        assert "STARTTLS" not in after, f"STARTTLS offered again inside TLS: {text}"
        assert set(after.get("AUTH", "").upper().split()) >= {"PLAIN", "LOGIN"}, text


def test_mx_listener_offers_starttls(tls_daemon):
    with RawSession(tls_daemon.port_of("mx")) as s:
        s.greeting()
        assert "STARTTLS" in ehlo_keywords(s.ehlo()[1])


def test_auth_before_tls_refused(tls_daemon):
    with RawSession(tls_daemon.port_of("submission")) as s:
        s.greeting()
        s.ehlo()
        expect(s.auth_plain(USER, PASSWORD), 538, "5.7.11", what="AUTH PLAIN before STARTTLS")


def test_starttls_with_smtplib(tls_daemon):
    with smtplib.SMTP("127.0.0.1", tls_daemon.port_of("mx"), local_hostname="client.test", timeout=10) as smtp:
        smtp.ehlo()
        code, _ = smtp.starttls(context=client_tls_context())
        assert code == 220
        assert smtp.sock.version() in ("TLSv1.2", "TLSv1.3"), smtp.sock.version()
        smtp.ehlo()
        assert not smtp.has_extn("starttls"), "STARTTLS offered again inside TLS"
        smtp.mail("sender@other.org")
        code, _ = smtp.rcpt("alice@example.com")
        assert code == 250
        code, text = smtp.data(make_message(subject="over tls"))
        assert code == 250, text
        qid = re.search(rb"queued as <?([0-9A-Fa-f]{16})", text).group(1).decode()
    received = received_header(tls_daemon, qid)
    assert re.search(r"\bwith ESMTPS\b", received), received
    assert re.search(r"TLS ?v?1[._.]?[23]", received, re.I), f"no TLS version in {received}"
    assert re.search(r"AES|CHACHA20", received, re.I), f"no cipher in {received}"


def test_a_failed_handshake_and_the_session_are_info_events_with_the_session_id(tls_daemon):
    """A client whose TLS stack gives up (here: it speaks garbage after the 220) is one info
    event with the session id and the reason, between the session's connect and disconnect."""
    from conftest import wait_until
    with RawSession(tls_daemon.port_of("mx")) as s:
        s.greeting()
        s.ehlo()
        # The raw command, not s.starttls(): that one would complete a real handshake.
        expect(s.cmd("STARTTLS"), 220, what="STARTTLS")
        s.sock.sendall(b"this is not a TLS ClientHello\r\n" * 4)
        try:
            s.sock.recv(4096)
        except OSError:
            pass
    wait_until(lambda: "tls: handshake failed: session " in tls_daemon.log(), 10,
               what="the handshake failure event")
    line = next(l for l in tls_daemon.log().splitlines() if "tls: handshake failed: session " in l)
    session = line.split("session ", 1)[1].split()[0]
    assert "from 127.0.0.1" in line and line.rstrip().split(": ")[-1], line
    wait_until(lambda: f"disconnect: session {session} from 127.0.0.1" in tls_daemon.log(), 10,
               what="the session's disconnect event")
    log = tls_daemon.log()
    assert log.index(f"connect: session {session} from 127.0.0.1") < log.index(line)


def received_header(d, qid: str) -> str:
    shown = re.sub(r"\r?\n[ \t]+", " ", d.queue_show(qid))
    received = [l for l in shown.splitlines() if l.lower().startswith("received:")]
    assert received, shown
    return received[0]


def test_starttls_command_injection_is_discarded(tls_daemon):
    """Commands pipelined after STARTTLS (before the handshake) must be thrown away."""
    with RawSession(tls_daemon.port_of("mx")) as s:
        s.greeting()
        s.ehlo()
        s.send(b"STARTTLS\r\nRSET\r\n")
        code, text = s.read_reply()
        assert code == 220, f"STARTTLS: {code} {text!r}"
        assert s.buf == b"", f"plaintext after the 220: {s.buf!r}"
        s.sock = client_tls_context().wrap_socket(s.sock, server_hostname=HOSTNAME)
        code, text = s.ehlo("after.tls")
        assert code == 250 and "\n" in text, \
            f"first reply inside TLS is not the EHLO answer (injected RSET was executed?): {code} {text!r}"
        assert "PIPELINING" in text, text
        expect(s.cmd("NOOP"), 250, "2.0.0")
        # nothing else is waiting
        s.sock.settimeout(0.5)
        try:
            extra = s.sock.recv(1024)
        except (socket.timeout, TimeoutError):
            extra = b""
        assert extra == b"", f"stray reply inside TLS: {extra!r}"


AUTH_CASES = [
    ("PLAIN", USER, PASSWORD, 235, "2.7.0"),
    ("PLAIN", USER, "wrong", 535, "5.7.8"),
    ("PLAIN", "nobody", PASSWORD, 535, "5.7.8"),
    ("LOGIN", USER, PASSWORD, 235, "2.7.0"),
    ("LOGIN", USER, "wrong", 535, "5.7.8"),
]


@pytest.mark.parametrize("mech,user,password,code,enh", AUTH_CASES)
def test_auth_after_starttls(tls_daemon, mech, user, password, code, enh):
    with RawSession(tls_daemon.port_of("submission")) as s:
        s.greeting()
        s.ehlo()
        expect(s.starttls(), 220)
        s.ehlo()
        reply = s.auth_plain(user, password) if mech == "PLAIN" else s.auth_login(user, password)
        expect(reply, code, enh, what=f"AUTH {mech} {user}/{password}")


def test_smtplib_login(tls_daemon):
    with smtplib.SMTP("127.0.0.1", tls_daemon.port_of("submission"), local_hostname="laptop", timeout=10) as smtp:
        smtp.starttls(context=client_tls_context())
        smtp.ehlo()
        code, _ = smtp.login(USER, PASSWORD)
        assert code == 235
    with smtplib.SMTP("127.0.0.1", tls_daemon.port_of("submission"), local_hostname="laptop", timeout=10) as smtp:
        smtp.starttls(context=client_tls_context())
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(USER, "wrong")


def test_submissions_implicit_tls(tls_daemon):
    with RawSession(tls_daemon.port_of("submissions"), tls=True) as s:
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        code, text = s.greeting()
        assert code == 220 and text.startswith(HOSTNAME), text
        kw = ehlo_keywords(s.ehlo()[1])
        assert "STARTTLS" not in kw
        assert "PLAIN" in kw.get("AUTH", "").upper()
        expect(s.auth_plain(USER, PASSWORD), 235, "2.7.0")
        qid = queue_id_of(s.mail_transaction("alice@example.com", ["user@other.net"],
                                             make_message(sender="alice@example.com", to="user@other.net")))
    received = received_header(tls_daemon, qid)
    assert re.search(r"\bwith ESMTPSA\b", received), received


def test_submissions_refuses_plaintext(tls_daemon):
    """A plaintext client on the implicit-TLS port gets no SMTP greeting."""
    with socket.create_connection(("127.0.0.1", tls_daemon.port_of("submissions")), timeout=5) as sock:
        sock.sendall(b"EHLO plain\r\n")
        sock.settimeout(5)
        try:
            data = sock.recv(1024)
        except (socket.timeout, ConnectionResetError):
            data = b""
        assert not data.startswith(b"220"), data


def test_certificate_reloaded_on_sighup(start_daemon, tmp_path, tls_cert):
    certdir = tmp_path / "certs"
    certdir.mkdir()
    cert, key = certdir / "live.pem", certdir / "live.key"
    shutil.copy(tls_cert[0], cert)
    shutil.copy(tls_cert[1], key)
    d = start_daemon(tmp_path, tls={"certificate": str(cert), "private_key": str(key)})

    def presented() -> bytes:
        with smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.test", timeout=10) as smtp:
            smtp.starttls(context=client_tls_context())
            return smtp.sock.getpeercert(binary_form=True)

    assert presented() == cert_der(tls_cert[0])
    new_cert, new_key = make_cert(tmp_path / "new", cn="mx2.test")
    shutil.copy(new_key, key)
    shutil.copy(new_cert, cert)
    d.hup()
    deadline = time.monotonic() + 5
    got = presented()
    while got != cert_der(new_cert) and time.monotonic() < deadline:
        time.sleep(0.2)
        got = presented()
    assert got == cert_der(new_cert), "old certificate still presented after SIGHUP"
    assert d.running()


def test_bad_certificate_on_reload_keeps_old_one(start_daemon, tmp_path, tls_cert):
    certdir = tmp_path / "certs"
    certdir.mkdir()
    cert, key = certdir / "live.pem", certdir / "live.key"
    shutil.copy(tls_cert[0], cert)
    shutil.copy(tls_cert[1], key)
    d = start_daemon(tmp_path, tls={"certificate": str(cert), "private_key": str(key)})
    cert.write_text("not a certificate\n")
    d.hup()
    time.sleep(1)
    assert d.running(), f"daemon died on a bad certificate at reload:\n{d.log()}"
    with smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.test", timeout=10) as smtp:
        smtp.starttls(context=client_tls_context())
        assert smtp.sock.getpeercert(binary_form=True) == cert_der(tls_cert[0])
