"""Anti-relay and recipient validation.

Tests connect from 127.0.0.1, which is untrusted unless a test lists it in trusted_networks.
relay.domains = ["example.com"].
"""

import smtplib
import time

import pytest

from conftest import (BULWARKD, Daemon, RawSession, client_tls_context, enhanced, expect,
                      free_port, make_message, module_daemon, queue_id_of, run)


@pytest.fixture(scope="module")
def mx(tmp_path_factory, tls_cert):
    yield from module_daemon(tmp_path_factory, tls_cert, "relay-mx")


def rcpt(port: int, rcpt_arg: str, sender: str = "sender@other.org") -> tuple[int, str]:
    """A fresh session; returns the reply to `RCPT TO:` + rcpt_arg (the argument is sent verbatim)."""
    with RawSession(port) as s:
        expect(s.greeting(), 220)
        expect(s.ehlo(), 250)
        expect(s.cmd(f"MAIL FROM:<{sender}>"), 250)
        return s.cmd(b"RCPT TO:" + rcpt_arg.encode())


# Recipients an untrusted client may use: they are all in our domain.
ACCEPTED = [
    "<user@example.com>",
    "<User@EXAMPLE.COM>",
    "<user@example.com.>",              # trailing dot: the same domain
    "<@other.net:user@example.com>",    # source route is ignored (RFC 5321 C), user is ours
    "<@a.other.net,@b.other.net:user@example.com>",
]


@pytest.mark.parametrize("arg", ACCEPTED)
def test_our_domain_accepted_from_anyone(mx, arg):
    code, text = rcpt(mx.port, arg)
    assert code == 250, f"RCPT TO:{arg} -> {code} {text!r}"


def test_foreign_domain_denied(mx):
    code, text = rcpt(mx.port, "<user@other.net>")
    assert code == 554 and enhanced(text) == "5.7.1", f"{code} {text!r}"


# Every one of these tries to get mail for a foreign domain through us. Each must get a 5xx
# (554 5.7.1 relay denied, or 501 5.1.3 when the address cannot be parsed).
RELAY_TRICKS = [
    "<user%other.net@example.com>",
    '<"user@other.net"@example.com>',
    "<other.net!user@example.com>",
    "<@example.com:user@other.net>",
    "<user@other.net@example.com>",
    "<user@[127.0.0.1]>",
    "<user@[IPv6:::1]>",
    "<user@example.com.other.net>",
    "<user@otherexample.com>",
    "<user@sub.example.com>",
    "<user@example.com..>",
    '<"user%other.net"@example.com>',
    "<user@other.net.>",
    "<user@other.net%example.com>",
    " <user@other.net>",
    "<user@other.net >",
    "< user@other.net>",
    "<user@other.net> ",
    "user@other.net",
    "<user@example.com@other.net>",
    "<user\\@other.net@example.com>",
    '<"user!other"@example.com>',
    "<user@other.net (comment)@example.com>",
    "<@example.com,@other.net:user@other.net>",
    "<USER%OTHER.NET@EXAMPLE.COM>",
    "<user@EXAMPLE.COM.OTHER.NET>",
    "<user@localhost>",
    "<user@example.com%other.net>",
    "<user@.example.com>",
    '<"user@other.net">',
]


@pytest.mark.parametrize("arg", RELAY_TRICKS)
def test_relay_trick_refused(mx, arg):
    code, text = rcpt(mx.port, arg)
    assert 500 <= code <= 599, f"RCPT TO:{arg} must be refused, got {code} {text!r}"
    assert (enhanced(text) or "").startswith("5."), f"no 5.x.x enhanced code: {code} {text!r}"


def test_relay_denied_with_smtplib(mx):
    with smtplib.SMTP("127.0.0.1", mx.port, local_hostname="client.test", timeout=10) as smtp:
        smtp.ehlo()
        code, _ = smtp.mail("sender@other.org")
        assert code == 250
        code, text = smtp.rcpt("user@other.net")
        assert code == 554 and text.startswith(b"5.7.1"), (code, text)
        smtp.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("sender@other.org", ["user@other.net"], make_message())


def test_relay_denied_with_swaks(mx):
    cp = run(["swaks", "-s", "127.0.0.1", "-p", mx.port, "-f", "a@other.org", "-t", "u@other.net",
              "--quit-after", "RCPT", "--timeout", "10"], timeout=30)
    assert cp.returncode != 0, cp.stdout
    assert "<** 554" in cp.stdout, cp.stdout


def test_local_delivery_with_swaks(mx):
    cp = run(["swaks", "-s", "127.0.0.1", "-p", mx.port, "-f", "a@other.org", "-t", "alice@example.com",
              "--helo", "client.test", "--timeout", "10"], timeout=30)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "queued as" in cp.stdout, cp.stdout


def test_trusted_client_may_relay(start_daemon, tmp_path):
    d = start_daemon(tmp_path, relay={"trusted_networks": ["127.0.0.1/32"]})
    with smtplib.SMTP("127.0.0.1", d.port, local_hostname="groupware.test", timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("alice@example.com")
        code, text = smtp.rcpt("user@other.net")
        assert code == 250, (code, text)
        code, text = smtp.data(make_message(to="user@other.net"))
        assert code == 250 and b"queued as" in text, (code, text)
    assert any(e["recipients"] == ["user@other.net"] for e in d.queue_list())


@pytest.fixture
def submission(start_daemon, tmp_path):
    return start_daemon(tmp_path, listeners=[{"role": "mx"}, {"role": "submission"}], tls=True,
                        users={"alice": "s3cret"})


def test_authenticated_submission_may_relay(submission):
    port = submission.port_of("submission")
    with smtplib.SMTP("127.0.0.1", port, local_hostname="laptop.test", timeout=10) as smtp:
        smtp.starttls(context=client_tls_context())
        smtp.ehlo()
        smtp.login("alice", "s3cret")
        assert smtp.mail("alice@example.com")[0] == 250
        code, text = smtp.rcpt("user@other.net")
        assert code == 250, (code, text)
        code, text = smtp.data(make_message(sender="alice@example.com", to="user@other.net"))
        assert code == 250, (code, text)


def test_authenticated_relay_with_swaks(submission):
    port = submission.port_of("submission")
    cp = run(["swaks", "-s", "127.0.0.1", "-p", port, "-tls", "-a", "PLAIN", "-au", "alice", "-ap", "s3cret",
              "-f", "alice@example.com", "-t", "user@other.net", "--helo", "laptop.test", "--timeout", "10"],
             timeout=30)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "queued as" in cp.stdout, cp.stdout


def test_submission_requires_auth_before_mail(submission):
    port = submission.port_of("submission")
    with RawSession(port) as s:
        expect(s.greeting(), 220)
        expect(s.ehlo(), 250)
        expect(s.cmd("MAIL FROM:<alice@example.com>"), 530, "5.7.0", what="MAIL before STARTTLS")
        expect(s.starttls(), 220)
        expect(s.ehlo(), 250)
        expect(s.cmd("MAIL FROM:<alice@example.com>"), 530, "5.7.0", what="MAIL after TLS, before AUTH")


def test_submission_relay_refused_without_auth_even_to_our_domain(submission):
    port = submission.port_of("submission")
    with RawSession(port) as s:
        s.greeting()
        s.ehlo()
        s.starttls()
        s.ehlo()
        code, text = s.cmd("MAIL FROM:<x@other.org>")
        assert code == 530, (code, text)
        code, text = s.cmd("RCPT TO:<alice@example.com>")
        assert 500 <= code <= 599, (code, text)


# ---------------------------------------------------------------------------------------------
# Recipient validation
# ---------------------------------------------------------------------------------------------


def wait_for_rcpt(port: int, address: str, want: int, timeout: float = 5.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        reply = rcpt(port, f"<{address}>")
        if reply[0] == want or time.monotonic() > deadline:
            return reply
        time.sleep(0.2)


def test_recipient_list_and_reload(start_daemon, tmp_path):
    listfile = tmp_path / "recipients.txt"
    listfile.write_text("# the valid mailboxes\nalice@example.com\n# bob@example.com\n")
    d = start_daemon(tmp_path, recipients=[{"domains": ["example.com"], "check": "list", "file": str(listfile)}])
    assert rcpt(d.port, "<alice@example.com>")[0] == 250
    assert rcpt(d.port, "<alice@EXAMPLE.com>")[0] == 250
    code, text = rcpt(d.port, "<bob@example.com>")
    assert code == 550 and enhanced(text) == "5.1.1", f"commented-out bob: {code} {text!r}"
    listfile.write_text("alice@example.com\nbob@example.com\n")
    d.hup()
    time.sleep(1)
    code, text = wait_for_rcpt(d.port, "bob@example.com", 250)
    assert code == 250, f"bob still refused after editing the list and SIGHUP: {code} {text!r}"
    assert d.running(), "daemon died on SIGHUP"


def test_recipient_list_domain_wildcard(start_daemon, tmp_path):
    listfile = tmp_path / "recipients.txt"
    listfile.write_text("alice@example.com\n@example.org\n")
    d = start_daemon(tmp_path, relay={"domains": ["example.com", "example.org"]},
                     recipients=[{"domains": ["example.com", "example.org"], "check": "list",
                                  "file": str(listfile)}])
    assert rcpt(d.port, "<anyone@example.org>")[0] == 250
    assert rcpt(d.port, "<alice@example.com>")[0] == 250
    assert rcpt(d.port, "<anyone@example.com>")[0] == 550


def test_recipient_check_for_subdomains_matches_like_relay_domains(start_daemon, tmp_path):
    """`.example.com` in [[recipients]] domains means every subdomain, as in relay.domains:
    the list is enforced for them (a leading dot used to match nothing, so every address of
    every subdomain was accepted)."""
    listfile = tmp_path / "recipients.txt"
    listfile.write_text("alice@eu.example.com\n")
    d = start_daemon(tmp_path, relay={"domains": [".example.com"]},
                     recipients=[{"domains": [".example.com"], "check": "list", "file": str(listfile)}])
    assert rcpt(d.port, "<alice@eu.example.com>")[0] == 250
    code, text = rcpt(d.port, "<mallory@eu.example.com>")
    assert code == 550 and enhanced(text) == "5.1.1", f"unlisted subdomain address: {code} {text!r}"
    assert rcpt(d.port, "<nobody@us.Example.COM>")[0] == 550


def test_unchecked_domain_accepts_all(start_daemon, tmp_path):
    listfile = tmp_path / "recipients.txt"
    listfile.write_text("alice@example.com\n")
    d = start_daemon(tmp_path, relay={"domains": ["example.com", "example.org"]},
                     recipients=[{"domains": ["example.com"], "check": "list", "file": str(listfile)}])
    assert rcpt(d.port, "<whoever@example.org>")[0] == 250
    assert rcpt(d.port, "<whoever@example.com>")[0] == 550


@pytest.fixture
def internal(start_daemon, tmp_path):
    """The internal mail server that callouts ask: knows only alice@example.com."""
    listfile = tmp_path / "internal-list.txt"
    listfile.write_text("alice@example.com\n")
    return start_daemon(tmp_path, name="internal",
                        recipients=[{"domains": ["example.com"], "check": "list", "file": str(listfile)}])


def test_callout_verification_and_cache(start_daemon, tmp_path, internal):
    d = start_daemon(tmp_path, name="gateway", recipients=[{
        "domains": ["example.com"], "check": "callout", "next_hops": [f"127.0.0.1:{internal.port}"],
        "positive_ttl": "1h", "negative_ttl": "1h"}])
    assert rcpt(d.port, "<alice@example.com>")[0] == 250
    code, text = rcpt(d.port, "<bob@example.com>")
    assert code == 550 and enhanced(text) == "5.1.1", f"{code} {text!r}"
    internal.stop()
    assert rcpt(d.port, "<alice@example.com>")[0] == 250, "positive answer not cached"
    code, text = rcpt(d.port, "<bob@example.com>")
    assert code == 550, f"negative answer not cached: {code} {text!r}"
    # a message to alice can still be accepted while the internal server is down
    with RawSession(d.port) as s:
        s.greeting()
        s.ehlo()
        queue_id_of(s.mail_transaction("x@other.org", ["alice@example.com"], make_message()))


def test_callout_unreachable_is_temporary(start_daemon, tmp_path, internal):
    d = start_daemon(tmp_path, name="gateway", recipients=[{
        "domains": ["example.com"], "check": "callout", "next_hops": [f"127.0.0.1:{internal.port}"],
        "positive_ttl": "1s", "negative_ttl": "1s", "timeout": "3s"}])
    assert rcpt(d.port, "<alice@example.com>")[0] == 250
    internal.stop()
    time.sleep(1.5)
    for address in ["alice@example.com", "carol@example.com"]:
        code, text = rcpt(d.port, f"<{address}>")
        assert 400 <= code <= 499, f"{address} with the internal server down: {code} {text!r}"


def test_callout_to_closed_port_is_temporary(start_daemon, tmp_path):
    d = start_daemon(tmp_path, recipients=[{
        "domains": ["example.com"], "check": "callout", "next_hops": [f"127.0.0.1:{free_port()}"],
        "timeout": "3s"}])
    code, text = rcpt(d.port, "<alice@example.com>")
    assert 400 <= code <= 499, f"{code} {text!r}"
