"""Guards Postfix has (issue 14): junk-command limit, max_errors default 20, long VERP local
parts, AUTH lines up to 12,288 octets and AUTH timing for unknown users, and long message
lines accepted and folded on relay (`[smtp] long_lines`). The free-space reserve is tested in
test_resources.py (it needs a small tmpfs), the per-/64 session count and the bounded
per-address tables by unit tests (gateway.rs, bounded.rs, policy/harvest.rs)."""

import base64
import time

import pytest

from conftest import (CRLF, expect, make_message, mid, route, send_mail, wait_queue_empty)


def test_junk_commands_count_as_errors_past_the_limit(start_daemon, tmp_path):
    d = start_daemon(tmp_path, limits={"junk_command_limit": 5, "max_errors": 3})
    with d.session() as s:
        s.greeting()
        expect(s.ehlo(), 250)
        codes = []
        for verb in ["NOOP", "RSET", "VRFY postmaster", "HELP", "EHLO again.test"] * 3:
            code, _ = s.cmd(verb)
            codes.append(code)
            if code == 421:
                break
        # 5 free junk commands, then 3 more (each an error) reach max_errors: the 8th is
        # answered and followed by 421, which the 9th command reads.
        assert codes[-1] == 421, f"an idling client was never cut off: {codes}"
        assert codes[:-1] == [250, 250, 252, 214, 250, 250, 250, 252], codes
        assert s.is_closed(5)


def test_junk_count_is_reset_by_an_accepted_message(start_daemon, tmp_path):
    d = start_daemon(tmp_path, limits={"junk_command_limit": 3, "max_errors": 1})
    with d.session() as s:
        s.greeting()
        expect(s.ehlo(), 250)
        for _ in range(3):
            expect(s.cmd("NOOP"), 250)
        expect(s.mail_transaction("sender@other.org", ["alice@example.com"], make_message()), 250)
        for _ in range(3):
            expect(s.cmd("RSET"), 250, what="RSET after a delivered message")
        expect(s.cmd("NOOP"), 250, what="the 4th junk command is answered")
        code, _ = s.read_reply()
        assert code == 421, f"after the 4th junk command since the message: {code}"


def test_max_errors_default_is_twenty(daemon):
    with daemon.session() as s:
        s.greeting()
        expect(s.ehlo(), 250)
        codes = [s.cmd("BOGUS")[0] for _ in range(19)]
        assert codes == [500] * 19, codes
        expect(s.cmd("NOOP"), 250, what="the session after 19 errors")
        expect(s.cmd("BOGUS"), 500, what="the 20th error")
        code, _ = s.read_reply()
        assert code == 421, f"after the 20th error: {code}"


# The SMTP path parser (smtp-proto) takes whole addresses up to 256 octets: 240 + @example.com.
@pytest.mark.parametrize("length", [65, 200, 240])
def test_long_verp_local_parts_are_accepted(daemon, length):
    local = ("bounce-" + "x" * length)[:length]
    reply = send_mail(daemon.port, sender=f"{local}@lists.other.org",
                      rcpts=[f"{local}@example.com"])
    expect(reply, 250, what=f"a {length}-octet local part")


def test_local_part_over_255_is_refused(daemon):
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        code, _ = s.cmd(f"MAIL FROM:<{'x' * 256}@other.org>")
        assert code == 501, code


def test_auth_line_up_to_12288_octets(start_daemon, tmp_path):
    d = start_daemon(tmp_path, listeners=[{"role": "submission"}], tls=True,
                     users={"alice": "right-password"})
    # A long authorisation identity (not the password: SHA-crypt's cost grows with it),
    # base64 of ~12,000 octets: an AUTH line of ~12,014.
    token = base64.b64encode(f"{'z' * 9000}\0alice\0wrong".encode()).decode()
    with d.session() as s:
        s.greeting()
        s.ehlo()
        expect(s.starttls(), 220)
        s.ehlo()
        code, text = s.cmd(f"AUTH PLAIN {token}")
        assert code == 535, f"a 12,000-octet AUTH line: {code} {text}"
        # As a continuation line too.
        expect(s.cmd("AUTH PLAIN"), 334)
        code, text = s.cmd(token)
        assert code == 535, f"a 12,000-octet SASL response: {code} {text}"
        code, _ = s.cmd("AUTH PLAIN " + "A" * 12_300)
        assert code == 500, f"an AUTH line over 12,288 octets: {code}"
        code, _ = s.cmd("NOOP " + "x" * 600)
        assert code == 500, "the 512-octet limit still holds for other commands"
        expect(s.auth_plain("alice", "right-password"), 235)


def test_auth_unknown_user_takes_as_long_as_a_wrong_password(start_daemon, tmp_path):
    d = start_daemon(tmp_path, listeners=[{"role": "submission"}], tls=True,
                     users={"alice": "right-password"}, limits={"max_errors": 50})

    def timed(user: str) -> list[float]:
        times = []
        with d.session() as s:
            s.greeting()
            s.ehlo()
            expect(s.starttls(), 220)
            s.ehlo()
            for _ in range(6):
                start = time.monotonic()
                code, _ = s.auth_plain(user, "wrong")
                times.append(time.monotonic() - start)
                assert code == 535
        return times
    # Fastest of each: noise on a busy machine only ever adds time.
    wrong_password = min(timed("alice"))
    unknown_user = min(timed("nobody"))
    assert unknown_user >= 0.3 * wrong_password, \
        f"unknown user answered in {unknown_user * 1000:.1f} ms, wrong password in " \
        f"{wrong_password * 1000:.1f} ms: timing tells which names exist"


def long_line_message(message_id: str) -> tuple[bytes, bytes]:
    line = b"<p>" + b"y" * 4994 + b"</p>"  # 5,001 octets
    assert len(line) > 5000
    head = f"Message-ID: {message_id}\r\nSubject: long line\r\nFrom: <sender@other.org>\r\n\r\n"
    return head.encode() + b"short\r\n" + line + b"\r\nend\r\n", line


def test_long_line_accepted_and_folded_on_relay(start_mta, capture_server, tmp_path):
    cap = capture_server()
    d = start_mta(tmp_path, [route(["example.com"], [cap.address])])
    m = mid("longline")
    message, line = long_line_message(m)
    expect(send_mail(d.port, message=message), 250, what="a 5,001-octet line (long_lines = accept)")
    data = cap.wait_for(1, timeout=20)[0]["data"]
    wait_queue_empty(d, 10)
    wire_lines = data.split(CRLF)
    longest = max(len(l) for l in wire_lines)
    assert longest <= 998, f"a {longest}-octet line reached the next hop"
    assert data.replace(b"\r\n ", b"").find(line) >= 0, "the folded line does not unfold to the original"
    assert b"\r\nend\r\n.\r\n" in data


def test_long_line_refused_when_configured(start_daemon, tmp_path):
    d = start_daemon(tmp_path, smtp={"long_lines": "reject"})
    message, _ = long_line_message(mid("longline-reject"))
    expect(send_mail(d.port, message=message), 554, "5.6.0", what="long_lines = reject")
    assert d.queue_list() == []
