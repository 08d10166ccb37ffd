"""SMTP smuggling: only <CRLF>.<CRLF> ends DATA, so no second message can hide in the first.

For every lookalike end-of-data sequence we send a first message, the lookalike, a complete
second transaction, and a real end. Whatever the server does, at most one message may be
queued and the "smuggled" text must be inside it, never a message of its own.
"""

import re

import pytest

from conftest import QUEUED_RE, RawSession, dot_stuff, enhanced, expect, make_message, queue_id_of

TERMINATORS = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "CR.LF": b"\r.\n",
    "LF.CR": b"\n.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "CRLF-NUL.CRLF": b"\r\n\x00.\r\n",
    "CRLF.NUL-CRLF": b"\r\n.\x00\r\n",
}
NUL_VARIANTS = {"CRLF-NUL.CRLF", "CRLF.NUL-CRLF"}

SMUGGLED = (b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")


@pytest.mark.parametrize("mode", ["normalize", "reject"])
@pytest.mark.parametrize("name", list(TERMINATORS))
def test_no_smuggling(start_daemon, tmp_path, mode, name):
    d = start_daemon(tmp_path, smtp={"bare_newline": mode})
    with RawSession(d.port) as s:
        expect(s.greeting(), 220)
        expect(s.ehlo(), 250)
        expect(s.cmd("MAIL FROM:<sender@other.org>"), 250)
        expect(s.cmd("RCPT TO:<alice@example.com>"), 250)
        expect(s.cmd("DATA"), 354)
        s.send(b"Subject: first\r\n\r\nhello" + TERMINATORS[name] + SMUGGLED + b"QUIT\r\n")
        replies = s.read_until_close(timeout=10)
    texts = [f"{c} {t}" for c, t in replies]
    queued_replies = [t for t in texts if QUEUED_RE.search(t)]
    assert len(queued_replies) <= 1, f"more than one 'queued as': {texts}"
    queue = d.queue_list()
    assert len(queue) <= 1, f"smuggled a second message: {queue} (replies {texts})"
    assert not any("evil@example.com" == e.get("sender") for e in queue), queue
    if queue:
        body = d.queue_show(queue[0]["id"], body=True)
        assert "smuggled" in body and "MAIL FROM:<evil@example.com>" in body, \
            f"queued message lost the text after the lookalike terminator:\n{body}"
        assert queue[0]["sender"] == "sender@other.org"
        assert queue[0]["recipients"] == ["alice@example.com"]

    if name in NUL_VARIANTS:
        assert queue == [], f"message with NUL was queued: {texts}"
        assert any(t.startswith("554") and " 5.6.0" in t for t in texts), f"no 554 5.6.0: {texts}"
    elif mode == "reject":
        assert queue == [], f"bare CR/LF message queued in reject mode: {texts}"
        assert any(t.startswith("5") for t in texts), f"no 5xx refusal: {texts}"
    else:
        assert len(queue) == 1, f"normalize mode should accept the (single) message: {texts}"
    # The server must have read the whole thing as one message: the smuggled DATA is never
    # answered, and QUIT (if the server did not hang up after a refusal) is answered last.
    assert not any(t.startswith("354") for t in texts), f"the smuggled DATA was answered: {texts}"
    if any(t.startswith("221") for t in texts) or (mode == "normalize" and name not in NUL_VARIANTS):
        assert texts and texts[-1].startswith("221"), f"QUIT not answered last: {texts}"
        assert len(texts) == 2, f"expected exactly the data reply and 221: {texts}"


@pytest.mark.parametrize("mode", ["normalize", "reject"])
def test_bare_newlines_inside_message(start_daemon, tmp_path, mode):
    """Bare LF inside a line (not a terminator lookalike): stored as CRLF or refused."""
    d = start_daemon(tmp_path, smtp={"bare_newline": mode})
    with RawSession(d.port) as s:
        s.greeting()
        s.ehlo()
        s.cmd("MAIL FROM:<sender@other.org>")
        s.cmd("RCPT TO:<alice@example.com>")
        expect(s.cmd("DATA"), 354)
        s.send(b"Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
        reply = s.read_reply()
    if mode == "reject":
        assert 500 <= reply[0] <= 599, reply
        assert d.queue_list() == []
    else:
        qid = queue_id_of(reply)
        body = d.queue_show(qid, body=True)
        assert re.search(r"line one\r?\nline two", body), body


def test_dot_stuffing_is_undone(daemon):
    msg = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nmiddle\r\n"
    with RawSession(daemon.port) as s:
        s.greeting()
        s.ehlo()
        qid = queue_id_of(s.mail_transaction("sender@other.org", ["alice@example.com"], msg))
    body = daemon.queue_show(qid, body=True)
    lines = body.replace("\r\n", "\n").split("\n")
    assert ".leading dot" in lines, body
    assert "..two dots" in lines, body
    assert "." in lines and "middle" in lines, body
    assert "..leading dot" not in lines


def test_dot_stuffed_wire_form(daemon):
    """The wire bytes `..leading dot` are stored as `.leading dot`."""
    with RawSession(daemon.port) as s:
        s.greeting()
        s.ehlo()
        s.cmd("MAIL FROM:<sender@other.org>")
        s.cmd("RCPT TO:<alice@example.com>")
        expect(s.cmd("DATA"), 354)
        s.send(b"Subject: wire\r\n\r\n..leading dot\r\n.\r\n")
        qid = queue_id_of(s.read_reply())
    lines = daemon.queue_show(qid, body=True).replace("\r\n", "\n").split("\n")
    assert ".leading dot" in lines and "..leading dot" not in lines, lines


def test_bdat_content_is_never_commands(daemon):
    chunk = b"Subject: first\r\n\r\nhello\r\n.\r\n" + SMUGGLED
    with RawSession(daemon.port) as s:
        s.greeting()
        s.ehlo()
        s.cmd("MAIL FROM:<sender@other.org>")
        s.cmd("RCPT TO:<alice@example.com>")
        s.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"QUIT\r\n")
        replies = s.read_until_close(timeout=10)
    assert [c for c, _ in replies] == [250, 221], replies
    queue = daemon.queue_list()
    assert len(queue) == 1, queue
    assert "MAIL FROM:<evil@example.com>" in daemon.queue_show(queue[0]["id"], body=True)


def test_pipelined_commands_after_data_end_are_commands(daemon):
    """The legitimate counterpart: after a real <CRLF>.<CRLF>, pipelined commands do work."""
    with RawSession(daemon.port) as s:
        s.greeting()
        s.ehlo()
        s.cmd("MAIL FROM:<sender@other.org>")
        s.cmd("RCPT TO:<alice@example.com>")
        expect(s.cmd("DATA"), 354)
        s.send(dot_stuff(make_message(subject="one")) +
               b"MAIL FROM:<sender@other.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        r = s.read_replies(4)
        assert [c for c, _ in r] == [250, 250, 250, 354], r
        s.send(dot_stuff(make_message(subject="two")))
        queue_id_of(s.read_reply())
    assert len(daemon.queue_list()) == 2
