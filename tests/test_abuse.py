"""Protocol abuse not covered elsewhere: NUL bytes and 8-bit junk in commands, 10,000
recipients, huge headers, endless lines, AUTH brute force. Every attempt must be refused (or
neutralised) while the daemon keeps serving, and nothing acknowledged may be lost.

The other abuse tests live beside the code they exercise (test_smuggling.py, test_relay.py's
relay battery, test_tls_auth.py's STARTTLS injection, test_smtp_protocol.py's pre-greet
talker, test_limits.py); `abuse_tally.py` counts all of them (tests run / passed / failed).
"""

from __future__ import annotations

import socket
import time

import pytest

from conftest import (RawSession, expect, make_message, send_mail)

JUNK_COMMANDS = [
    b"MAIL FROM:<a@b.org>\x00",
    b"\x00MAIL FROM:<a@b.org>",
    b"RCPT TO:<alice@example.com\x00@evil.org>",
    b"EHLO \x00\x00\x00",
    b"HELO x\x00RCPT TO:<victim@evil.org>",
    b"MAIL FROM:<\xff\xfe@b.org>",
    b"RCPT TO:<alice@\xe9xample.com>",
    b"\xc3\x28\xa0\xa1 junk",
    b"\x1b[31mEHLO red",
    b"MAIL\xa0FROM:<a@b.org>",
    b"\xef\xbb\xbfEHLO bom",
    b"RCPT TO:<alice@example.com>\x7f\x80",
]


def alive(daemon) -> None:
    """The daemon still serves a normal client end to end."""
    assert daemon.running(), f"bulwarkd died; log:\n{daemon.log()[-3000:]}"
    code, text = send_mail(daemon.port, message=make_message(subject="still alive"))
    assert code == 250, f"normal mail after the abuse: {code} {text}"


@pytest.mark.parametrize("line", JUNK_COMMANDS, ids=[repr(c)[2:20] for c in JUNK_COMMANDS])
def test_nul_and_8bit_junk_in_commands_refused(daemon, line):
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        s.cmd("MAIL FROM:<sender@other.org>")
        code, text = s.cmd(line)
        assert 500 <= code < 600, f"{line!r} answered {code} {text}"
        # The session is still in a sane state: a real transaction works on it.
        expect(s.cmd("RSET"), 250, what="RSET after junk")
        reply = s.mail_transaction("sender@other.org", ["alice@example.com"], make_message())
        assert reply[0] == 250, reply
    assert len(daemon.queue_list()) == 1, "junk produced a message"


def test_ten_thousand_recipients(start_daemon, tmp_path):
    daemon = start_daemon(tmp_path)
    with daemon.session(timeout=60) as s:
        s.greeting()
        s.ehlo()
        expect(s.cmd("MAIL FROM:<sender@other.org>"), 250)
        s.send(b"".join(f"RCPT TO:<user{i}@example.com>\r\n".encode() for i in range(10_000)))
        replies = s.read_replies(10_000, timeout=120)
        accepted = sum(1 for c, _ in replies if c == 250)
        refused = [c for c, _ in replies if c != 250]
        assert accepted == 1000, f"{accepted} recipients accepted, max_recipients is 1000"
        assert all(400 <= c < 600 for c in refused) and len(refused) == 9000
        code, text = s.data(make_message())
        assert code == 250, f"the 1,000 accepted recipients were lost: {code} {text}"
    entries = daemon.queue_list()
    assert len(entries) == 1
    alive(daemon)


def test_huge_header_section_refused(start_daemon, tmp_path):
    daemon = start_daemon(tmp_path, limits={"max_header_size": 65536})
    # 200 KiB of folded header lines (each under 998 octets), so only the header limit applies.
    folded = "X-Junk: start" + "".join("\r\n\t" + "h" * 900 for _ in range(230))
    message = make_message(extra_headers=[folded])
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        code, text = s.mail_transaction("sender@other.org", ["alice@example.com"], message)
        assert code == 552 and text.startswith("5.3.4"), f"huge header: {code} {text}"
    assert daemon.queue_list() == []
    alive(daemon)


def test_many_header_fields_refused(start_daemon, tmp_path):
    daemon = start_daemon(tmp_path, limits={"max_header_size": 65536})
    message = make_message(extra_headers=[f"X-Field-{i}: v" for i in range(20_000)])
    code, text = send_mail(daemon.port, message=message)
    assert code == 552 and text.startswith("5.3.4"), f"20,000 header fields: {code} {text}"
    assert daemon.queue_list() == []
    alive(daemon)


def test_endless_command_line(daemon):
    """8 MiB without a line end: refused and cut off, memory stays bounded."""
    before = daemon.vm_hwm_kb()
    with daemon.session(timeout=30) as s:
        s.greeting()
        chunk = b"A" * 65536
        sent = 0
        try:
            for _ in range(128):
                s.sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the daemon hung up on us: fine
        replies = s.read_until_close(timeout=10)
        assert replies and 500 <= replies[0][0] < 600 or s.is_closed(1), \
            f"after {sent} bytes without CRLF: {replies}"
    grown = daemon.vm_hwm_kb() - before
    assert grown < 16 * 1024, f"bulwarkd grew {grown} KiB on an endless line"
    alive(daemon)


@pytest.mark.parametrize("long_lines", ["reject", "accept"])
def test_endless_data_line(start_daemon, tmp_path, long_lines):
    """A single 16 MiB line inside DATA, memory bounded either way: with long_lines =
    "reject" refused at the final dot; with "accept" (the default) queued, to be folded when
    relayed (see test_guards.py)."""
    daemon = start_daemon(tmp_path, smtp={"long_lines": long_lines})
    before = daemon.vm_hwm_kb()
    with daemon.session(timeout=60) as s:
        s.greeting()
        s.ehlo()
        expect(s.cmd("MAIL FROM:<sender@other.org>"), 250)
        expect(s.cmd("RCPT TO:<alice@example.com>"), 250)
        expect(s.cmd("DATA"), 354)
        s.send(b"Subject: long\r\n\r\n")
        for _ in range(256):
            s.sock.sendall(b"B" * 65536)
        s.send(b"\r\n.\r\n")
        code, text = s.read_reply(timeout=60)
        if long_lines == "reject":
            assert 500 <= code < 600, f"16 MiB line accepted: {code} {text}"
        else:
            assert code == 250, f"16 MiB line with long_lines = accept: {code} {text}"
    grown = daemon.vm_hwm_kb() - before
    assert grown < 48 * 1024, f"bulwarkd grew {grown} KiB on an endless DATA line"
    assert len(daemon.queue_list()) == (0 if long_lines == "reject" else 1)
    alive(daemon)


def test_auth_brute_force(start_daemon, tmp_path):
    """200 wrong passwords: none succeeds, each session is cut off after max_errors, and the
    right password still works afterwards (no lockout of the real user by an attacker)."""
    daemon = start_daemon(tmp_path, listeners=[{"role": "submission"}], tls=True,
                          users={"alice": "right-password"}, limits={"max_errors": 5})
    tried = refused = sessions = 0
    started = time.monotonic()
    while tried < 200:
        sessions += 1
        with daemon.session() as s:
            s.greeting()
            s.ehlo()
            expect(s.starttls(), 220)
            s.ehlo()
            while tried < 200:
                try:
                    code, text = s.auth_plain("alice", f"guess-{tried}")
                except (ConnectionError, TimeoutError, OSError):
                    break
                tried += 1
                assert code != 235, f"guess {tried} authenticated"
                refused += 1
                if code == 421:
                    assert s.is_closed(5)
                    break
    elapsed = time.monotonic() - started
    assert refused == tried == 200
    # 5 failures, then the 6th attempt is answered 421 and the session ends.
    assert sessions >= 200 // 6, f"only {sessions} sessions for 200 guesses: no max_errors cut-off"
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        s.starttls()
        s.ehlo()
        expect(s.auth_plain("alice", "right-password"), 235, what="the real user after the attack")
    print(f"\nauth brute force: {tried} guesses in {sessions} sessions, {elapsed:.1f}s, none accepted")


def test_pregreet_pipelining_flood(start_daemon, tmp_path):
    """A client that dumps a whole transaction before the greeting (spam-bot style) gets no
    message through while greet_delay applies."""
    daemon = start_daemon(tmp_path, smtp={"greet_delay": "2s"})
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    try:
        sock.sendall(b"EHLO bot\r\nMAIL FROM:<s@other.org>\r\nRCPT TO:<alice@example.com>\r\n"
                     b"DATA\r\nSubject: spam\r\n\r\nspam\r\n.\r\nQUIT\r\n")
        data = b""
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except (socket.timeout, OSError):
                break
            if not chunk:
                break
            data += chunk
        assert b"250 2.0.0" not in data and b"queued as" not in data, data
    finally:
        sock.close()
    assert daemon.queue_list() == []
    alive(daemon)
