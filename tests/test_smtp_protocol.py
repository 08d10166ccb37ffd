"""The SMTP dialogue: greeting, EHLO, command replies, sequencing, BDAT, pipelining, SMTPUTF8, DSN."""

import re
import time

import pytest

from conftest import (CRLF, HOSTNAME, QUEUED_RE, RawSession, dot_stuff, ehlo_keywords, enhanced,
                      expect, make_message, queue_id_of, send_mail)


def test_greeting_names_host_and_product(daemon):
    with daemon.session() as s:
        code, text = s.greeting()
    assert code == 220
    assert text.startswith(f"{HOSTNAME} ESMTP Bulwark"), text


def test_ehlo_lists_extensions(start_daemon, tmp_path):
    d = start_daemon(tmp_path, limits={"max_message_size": 1234567})
    with d.session() as s:
        s.greeting()
        code, text = s.ehlo()
    assert code == 250
    assert text.split("\n")[0].startswith(HOSTNAME), text
    kw = ehlo_keywords(text)
    for ext in ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"]:
        assert ext in kw, f"EHLO does not offer {ext}: {text!r}"
    assert kw.get("SIZE") == "1234567", f"SIZE must announce max_message_size: {text!r}"
    assert "STARTTLS" not in kw, "STARTTLS offered without a [tls] section"
    assert "AUTH" not in kw, "AUTH offered without TLS and [auth]"


def test_helo_is_accepted(daemon):
    with daemon.session() as s:
        s.greeting()
        expect(s.cmd("HELO client.test"), 250, what="HELO")


def test_talking_before_greeting_is_refused(start_daemon, tmp_path):
    d = start_daemon(tmp_path, smtp={"greet_delay": "1s"})
    with d.session() as s:
        s.send(b"EHLO early.bird\r\n")
        code, text = s.read_reply(timeout=5)
        assert code == 554 and enhanced(text) == "5.5.1", f"early talker got {code} {text!r}"
        assert s.is_closed(timeout=5), "connection left open after refusing an early talker"


def test_hanging_up_during_greet_delay_is_no_pass(start_daemon, tmp_path):
    """A client that connects and hangs up without waiting for the banner has not shown it is
    patient: its next early talk must still be refused."""
    d = start_daemon(tmp_path, smtp={"greet_delay": "1s"})
    for _ in range(2):
        d.session().close()
    time.sleep(0.3)
    with d.session() as s:
        s.send(b"EHLO early.bird\r\n")
        code, text = s.read_reply(timeout=5)
        assert code == 554 and enhanced(text) == "5.5.1", \
            f"early talker accepted after hanging up once: {code} {text!r}"


def test_patient_client_gets_greeting_after_delay(start_daemon, tmp_path):
    d = start_daemon(tmp_path, smtp={"greet_delay": "1s"})
    with d.session() as s:
        started = time.monotonic()
        code, text = s.read_reply(timeout=5)
        waited = time.monotonic() - started
    assert code == 220, text
    assert waited >= 0.8, f"greeting came after {waited:.2f}s, greet_delay is 1s"


# Each scenario runs after greeting + EHLO in a fresh session: (client line, expected code, enhanced).
# None as enhanced code means "only the basic code is checked".
SCENARIOS = {
    "noop": [("NOOP", 250, "2.0.0")],
    "rset": [("RSET", 250, "2.0.0")],
    "vrfy is not answered": [("VRFY alice@example.com", 252, "2.5.2")],
    "expn is disabled": [("EXPN staff", 502, "5.5.1")],
    "unknown command": [("FROBNICATE now", 500, "5.5.1")],
    "rcpt before mail": [("RCPT TO:<alice@example.com>", 503, "5.5.1")],
    "data before mail": [("DATA", 503, "5.5.1")],
    # the 7-byte chunk is "hello" + the CRLF that ends every scenario line
    "bdat before mail": [("BDAT 7 LAST\r\nhello", 503, "5.5.1")],
    "data before rcpt": [("MAIL FROM:<a@other.org>", 250, None),
                         ("DATA", 503, "5.5.1")],
    "second mail in a transaction": [("MAIL FROM:<a@other.org>", 250, None),
                                     ("MAIL FROM:<b@other.org>", 503, "5.5.1")],
    "rset ends the transaction": [("MAIL FROM:<a@other.org>", 250, None),
                                  ("RCPT TO:<alice@example.com>", 250, None),
                                  ("RSET", 250, "2.0.0"),
                                  ("DATA", 503, "5.5.1")],
    "data when every recipient was refused": [("MAIL FROM:<a@other.org>", 250, None),
                                              ("RCPT TO:<x@other.net>", 554, "5.7.1"),
                                              ("DATA", 554, "5.5.1")],
    "null sender is allowed": [("MAIL FROM:<>", 250, None),
                               ("RCPT TO:<alice@example.com>", 250, None)],
    "body=8bitmime": [("MAIL FROM:<a@other.org> BODY=8BITMIME", 250, None)],
    "size within limit": [("MAIL FROM:<a@other.org> SIZE=1000", 250, None)],
    "size over limit": [("MAIL FROM:<a@other.org> SIZE=52428801", 552, "5.3.4")],
    "dsn parameters": [("MAIL FROM:<a@other.org> RET=HDRS ENVID=abc", 250, None),
                       ("RCPT TO:<alice@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.com",
                        250, None)],
    "non-ascii sender without SMTPUTF8": [("MAIL FROM:<jörg@other.org>", 553, "5.6.7")],
    "non-ascii recipient without SMTPUTF8": [("MAIL FROM:<a@other.org>", 250, None),
                                             ("RCPT TO:<jörg@example.com>", 553, "5.6.7")],
    "non-ascii with SMTPUTF8": [("MAIL FROM:<jörg@other.org> SMTPUTF8", 250, None),
                                ("RCPT TO:<jörg@example.com>", 250, None)],
    "quit": [("QUIT", 221, "2.0.0")],
}


@pytest.fixture(scope="module")
def shared_mx(tmp_path_factory, tls_cert):
    from conftest import module_daemon
    yield from module_daemon(tmp_path_factory, tls_cert, "protocol")


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_command_replies(shared_mx, name):
    with shared_mx.session() as s:
        expect(s.greeting(), 220, what="greeting")
        expect(s.ehlo(), 250, what="EHLO")
        for line, code, enh in SCENARIOS[name]:
            reply = s.cmd(line)
            expect(reply, code, enh, what=f"{name}: {line!r}")


def test_quit_closes_connection(daemon):
    with daemon.session() as s:
        s.greeting()
        expect(s.cmd("QUIT"), 221, "2.0.0")
        assert s.is_closed(timeout=5), "connection still open after QUIT"


@pytest.mark.parametrize("length,code", [(512, 250), (513, 500), (4000, 500)])
def test_command_line_length_limit(daemon, length, code):
    """A command line is at most 512 bytes including CRLF; longer gets 500 5.5.2 and the
    session stays usable."""
    line = b"NOOP " + b"x" * (length - len(b"NOOP ") - 2)
    assert len(line) + 2 == length
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        s.send(line + CRLF)
        reply = s.read_reply()
        if code == 500:
            expect(reply, 500, "5.5.2", what=f"{length}-byte command line")
        else:
            expect(reply, 250, what=f"{length}-byte command line")
        expect(s.cmd("NOOP"), 250, "2.0.0", what="NOOP after a long line")


def test_accepted_message_is_queued_with_received_header(daemon):
    msg = make_message(subject="queue me", message_id="<q1@other.org>")
    reply = send_mail(daemon.port, "sender@other.org", ["alice@example.com"], msg)
    code, text = reply
    assert enhanced(text) == "2.0.0" and "Ok: queued as" in text, text
    qid = queue_id_of(reply)
    entry = daemon.queue_entry(qid)
    assert entry is not None, f"{qid} not in queue list: {daemon.queue_list()}"
    assert entry["sender"] == "sender@other.org"
    assert entry["recipients"] == ["alice@example.com"]
    shown = daemon.queue_show(qid)
    received = [l for l in unfold(shown).splitlines() if l.lower().startswith("received:")]
    assert received, f"no Received: header in queue show:\n{shown}"
    top = received[0]
    assert HOSTNAME in top, top
    assert "[127.0.0.1]" in top, top
    assert re.search(r"\bwith ESMTP\b", top), f"plain SMTP session must say 'with ESMTP': {top}"
    assert qid.lower() in top.lower(), f"queue id {qid} not in {top}"
    assert "Subject: queue me" in shown


def unfold(headers: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", headers)


def test_several_transactions_in_one_session(daemon):
    ids = []
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        for i in range(3):
            ids.append(queue_id_of(s.mail_transaction("a@other.org", ["alice@example.com"],
                                                      make_message(subject=f"n{i}"))))
        expect(s.cmd("QUIT"), 221)
    assert len(set(ids)) == 3, ids
    assert set(ids) <= set(daemon.queue_ids())


def test_bdat_chunks(daemon):
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        expect(s.cmd("MAIL FROM:<a@other.org>"), 250)
        expect(s.cmd("RCPT TO:<alice@example.com>"), 250)
        first = b"Subject: chunked\r\n\r\nfirst part, "
        second = b"second part\r\n"
        s.send(b"BDAT %d\r\n" % len(first) + first)
        expect(s.read_reply(), 250, "2.0.0", what="non-last BDAT")
        s.send(b"BDAT %d LAST\r\n" % len(second) + second)
        reply = s.read_reply()
        qid = queue_id_of(reply)
    body = daemon.queue_show(qid, body=True)
    assert "first part, second part" in body, body


def test_bdat_zero_length_last(daemon):
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        s.cmd("MAIL FROM:<a@other.org>")
        s.cmd("RCPT TO:<alice@example.com>")
        chunk = b"Subject: z\r\n\r\nbody\r\n"
        s.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        expect(s.read_reply(), 250)
        s.send(b"BDAT 0 LAST\r\n")
        queue_id_of(s.read_reply())


def test_pipelined_data(daemon):
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        s.send(b"MAIL FROM:<a@other.org>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<nobody@other.net>\r\n"
               b"RCPT TO:<bob@example.com>\r\nDATA\r\n")
        replies = s.read_replies(5)
        assert [c for c, _ in replies] == [250, 250, 554, 250, 354], replies
        s.send(dot_stuff(make_message(subject="pipelined")) + b"QUIT\r\n")
        qid = queue_id_of(s.read_reply())
        expect(s.read_reply(), 221)
    entry = daemon.queue_entry(qid)
    assert entry and sorted(entry["recipients"]) == ["alice@example.com", "bob@example.com"], entry


def test_pipelined_bdat(daemon):
    chunk = make_message(subject="pipelined bdat")
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        s.send(b"MAIL FROM:<a@other.org>\r\nRCPT TO:<alice@example.com>\r\n"
               + b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n")
        r = s.read_replies(4)
        assert [c for c, _ in r] == [250, 250, 250, 250], r
        assert QUEUED_RE.search(r[2][1]), r[2]
        assert "queued" not in r[3][1], r


def test_smtputf8_message_is_queued(daemon):
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        expect(s.cmd("MAIL FROM:<jörg@other.org> SMTPUTF8"), 250)
        expect(s.cmd("RCPT TO:<jörg@example.com>"), 250)
        qid = queue_id_of(s.data("Subject: grüße\r\n\r\nhallo\r\n".encode()))
    entry = daemon.queue_entry(qid)
    assert entry is not None
    assert entry["recipients"] == ["jörg@example.com"], entry


def test_dsn_parameters_accepted_and_queued(daemon):
    with daemon.session() as s:
        s.greeting()
        s.ehlo()
        expect(s.cmd("MAIL FROM:<a@other.org> RET=HDRS ENVID=abc"), 250)
        expect(s.cmd("RCPT TO:<alice@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.com"), 250)
        qid = queue_id_of(s.data(make_message(subject="dsn")))
    entry = daemon.queue_entry(qid)
    assert entry is not None
    if "dsn" not in entry:
        print(f"note: no 'dsn' field in queue JSON: {entry}")


def test_queue_id_format(daemon):
    qid = queue_id_of(send_mail(daemon.port))
    assert re.fullmatch(r"[0-9A-Fa-f]{16}", qid)
