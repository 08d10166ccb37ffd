"""Limits: message size, recipients, loops, line length, sessions, errors, timeouts."""

import time

import pytest

from conftest import (CRLF, RawSession, dot_stuff, enhanced, expect, make_message, queue_id_of,
                      send_mail)

SMALL = 10_000


def big_body(size: int) -> str:
    line = "x" * 70 + "\n"
    return line * (size // len(line) + 1)


@pytest.fixture
def small(start_daemon, tmp_path):
    return start_daemon(tmp_path, limits={"max_message_size": SMALL, "max_recipients": 3,
                                          "max_received_headers": 5})


def test_size_parameter_over_limit(small):
    with small.session() as s:
        s.greeting()
        s.ehlo()
        expect(s.cmd(f"MAIL FROM:<a@other.org> SIZE={SMALL + 1}"), 552, "5.3.4")
        expect(s.cmd(f"MAIL FROM:<a@other.org> SIZE={SMALL}"), 250)


def test_oversized_data_refused_after_final_dot(small):
    with small.session() as s:
        s.greeting()
        s.ehlo()
        s.cmd("MAIL FROM:<a@other.org>")
        expect(s.cmd("RCPT TO:<alice@example.com>"), 250)
        expect(s.cmd("DATA"), 354)
        s.send(dot_stuff(make_message(body=big_body(3 * SMALL))))
        expect(s.read_reply(), 552, "5.3.4", what="message over max_message_size")
        expect(s.cmd("NOOP"), 250, what="session usable after 552")
    assert small.queue_list() == []


def test_message_just_under_limit_accepted(small):
    msg = make_message(body=big_body(SMALL // 2))
    assert len(msg) < SMALL
    queue_id_of(send_mail(small.port, message=msg))


def test_oversized_bdat_refused(small):
    chunk = make_message(body=big_body(3 * SMALL))
    with small.session() as s:
        s.greeting()
        s.ehlo()
        s.cmd("MAIL FROM:<a@other.org>")
        expect(s.cmd("RCPT TO:<alice@example.com>"), 250)
        s.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        expect(s.read_reply(), 552, "5.3.4", what="BDAT over max_message_size")
        expect(s.cmd("NOOP"), 250, what="session usable after 552")
    assert small.queue_list() == []


def test_oversized_bdat_in_several_chunks_refused(small):
    part = b"Subject: big\r\n\r\n" + big_body(SMALL // 2).encode().replace(b"\n", b"\r\n")
    with small.session() as s:
        s.greeting()
        s.ehlo()
        s.cmd("MAIL FROM:<a@other.org>")
        s.cmd("RCPT TO:<alice@example.com>")
        replies = []
        for last in (False, False, True):
            s.send(b"BDAT %d%s\r\n" % (len(part), b" LAST" if last else b"") + part)
            replies.append(s.read_reply())
        assert any(c == 552 and enhanced(t) == "5.3.4" for c, t in replies), replies
        assert all("queued" not in t for _, t in replies), replies
    assert small.queue_list() == []


def test_too_many_recipients(small):
    with small.session() as s:
        s.greeting()
        s.ehlo()
        s.cmd("MAIL FROM:<a@other.org>")
        codes = []
        for i in range(5):
            code, text = s.cmd(f"RCPT TO:<user{i}@example.com>")
            codes.append(code)
            if i >= 3:
                assert enhanced(text) == "4.5.3", text
        assert codes == [250, 250, 250, 452, 452], codes
        qid = queue_id_of(s.data(make_message()))
    entry = small.queue_entry(qid)
    assert entry and sorted(entry["recipients"]) == [f"user{i}@example.com" for i in range(3)], entry


def received_headers(n: int) -> list[str]:
    return [f"Received: from hop{i}.other.org by hop{i + 1}.other.org; Mon, 1 Jan 2024 00:00:0{i % 10} +0000"
            for i in range(n)]


def test_mail_loop_refused(small):
    reply = send_mail(small.port, message=make_message(extra_headers=received_headers(8)))
    expect(reply, 554, "5.4.6", what="8 Received: headers, max_received_headers = 5")
    assert small.queue_list() == []


def test_few_received_headers_accepted(small):
    queue_id_of(send_mail(small.port, message=make_message(extra_headers=received_headers(2))))


@pytest.mark.parametrize("line_len,accepted", [(998, True), (999, False), (5000, False)])
def test_message_line_length(start_daemon, tmp_path, line_len, accepted):
    """With long_lines = "reject", a message line is at most 1000 bytes including CRLF
    (RFC 5322 2.1.1). The default ("accept", folded on relay) is tested in test_guards.py."""
    daemon = start_daemon(tmp_path, smtp={"long_lines": "reject"})
    msg = b"Subject: long line\r\n\r\nshort\r\n" + b"y" * line_len + b"\r\nend\r\n"
    reply = send_mail(daemon.port, message=msg)
    if accepted:
        queue_id_of(reply)
    else:
        expect(reply, 554, "5.6.0", what=f"{line_len + 2}-byte body line")
        assert daemon.queue_list() == []


def test_listener_session_limit(start_daemon, tmp_path):
    d = start_daemon(tmp_path, listeners=[{"role": "mx", "max_sessions": 2}])
    time.sleep(0.5)  # let the readiness probe's session finish
    a, b = d.session(), d.session()
    try:
        expect(a.greeting(), 220)
        expect(b.greeting(), 220)
        with d.session() as c:
            code, text = c.read_reply()
            assert code == 421 and enhanced(text) == "4.7.0", f"third session got {code} {text!r}"
            assert c.is_closed(timeout=5)
        a.cmd("QUIT")
        a.close()
        # the freed slot can be used again (bounded retry: the server notices the close async)
        for _ in range(20):
            with d.session() as c:
                code, _ = c.read_reply()
                if code == 220:
                    break
            time.sleep(0.1)
        assert code == 220, "slot not freed after a session ended"
    finally:
        a.close()
        b.close()


def test_per_client_session_limit_across_listeners(start_daemon, tmp_path):
    d = start_daemon(tmp_path, listeners=[{"role": "mx"}, {"role": "mx"}],
                     limits={"max_sessions_per_client": 2})
    time.sleep(0.5)
    a, b = RawSession(d.ports[0]), RawSession(d.ports[1])
    try:
        expect(a.greeting(), 220)
        expect(b.greeting(), 220)
        with RawSession(d.ports[0]) as c:
            code, text = c.read_reply()
            assert code == 421 and enhanced(text) == "4.7.0", f"third session got {code} {text!r}"
            assert c.is_closed(timeout=5)
    finally:
        a.close()
        b.close()


def test_max_errors_disconnects(start_daemon, tmp_path):
    d = start_daemon(tmp_path, limits={"max_errors": 3})
    with d.session() as s:
        s.greeting()
        s.ehlo()
        replies = []
        for _ in range(8):
            try:
                replies.append(s.cmd("FROBNICATE"))
            except ConnectionError:
                break
            if replies[-1][0] == 421:
                break
        codes = [c for c, _ in replies]
        assert 421 in codes, f"never disconnected after repeated errors: {replies}"
        assert enhanced(replies[-1][1]) == "4.7.0", replies[-1]
        assert codes.count(500) == 3, f"expected 3 error replies before 421: {codes}"
        assert s.is_closed(timeout=5)


def test_idle_client_times_out(start_daemon, tmp_path):
    d = start_daemon(tmp_path, limits={"command_timeout": "2s"})
    with d.session() as s:
        s.greeting()
        s.ehlo()
        started = time.monotonic()
        code, text = s.read_reply(timeout=8)
        waited = time.monotonic() - started
        assert code == 421 and enhanced(text) == "4.4.2", f"{code} {text!r}"
        assert 1.5 <= waited <= 6, f"timed out after {waited:.1f}s, command_timeout is 2s"
        assert s.is_closed(timeout=5)


def test_stalled_data_times_out(start_daemon, tmp_path):
    d = start_daemon(tmp_path, limits={"data_timeout": "2s"})
    with d.session() as s:
        s.greeting()
        s.ehlo()
        s.cmd("MAIL FROM:<a@other.org>")
        s.cmd("RCPT TO:<alice@example.com>")
        expect(s.cmd("DATA"), 354)
        s.send(b"Subject: stalled\r\n\r\nhalf a message")
        code, text = s.read_reply(timeout=8)
        assert code == 421, f"{code} {text!r}"
        assert s.is_closed(timeout=5)
    assert d.queue_list() == []
