"""The delivery tests' own tools, tested on their own (no bulwarkd): the DNS responder
(queried with hand-built packets over UDP and TCP), the smtp-sink fixture, the capture server."""

import smtplib
import socket
import struct
import time

from conftest import RawSession, port_listening
from dns_server import DNSServer, build_query, parse_response

RECORDS = {
    "example.net": {"MX": [(0, ".")]},
    "example.org": {"MX": [(20, "mx2.example.org"), (10, "mx1.example.org")], "TXT": ["v=spf1 -all"]},
    "mx1.example.org": {"A": ["127.0.0.2"]},
    "mx2.example.org": {"A": ["127.0.0.3"], "AAAA": ["::1"]},
    "Mixed.Case.Test.": {"A": ["127.0.0.9"]},
}


def udp_query(port, name, rtype, qid=0x4242):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(build_query(name, rtype, qid), ("127.0.0.1", port))
        data, _ = s.recvfrom(4096)
    return parse_response(data)


def tcp_query(port, name, rtype, qid=0x4343):
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        q = build_query(name, rtype, qid)
        s.sendall(struct.pack("!H", len(q)) + q)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
            chunk = s.recv(4096)
            assert chunk, "DNS server closed the TCP connection"
            buf += chunk
    return parse_response(buf[2:])


def test_dns_server_answers_by_hand_built_packets():
    with DNSServer(RECORDS) as dns:
        r = udp_query(dns.port, "example.org", "MX", qid=0x1111)
        assert r["id"] == 0x1111 and r["flags"] & 0x8000 and r["rcode"] == 0 and r["aa"]
        assert r["question"] == [("example.org", "MX")]
        assert sorted(v for _, t, _, v in r["answers"] if t == "MX") == [(10, "mx1.example.org"), (20, "mx2.example.org")]

        r = udp_query(dns.port, "mx1.example.org.", "A")
        assert [v for _, t, _, v in r["answers"]] == ["127.0.0.2"]

        r = udp_query(dns.port, "mx2.example.org", "AAAA")
        assert [v for _, t, _, v in r["answers"]] == ["::1"]

        r = udp_query(dns.port, "example.org", "TXT")
        assert [v for _, t, _, v in r["answers"]] == ["v=spf1 -all"]

        # the null MX: preference 0, exchange the root
        r = udp_query(dns.port, "example.net", "MX")
        assert r["rcode"] == 0 and [v for _, t, _, v in r["answers"]] == [(0, ".")]

        # NODATA: the name exists, the type does not
        r = udp_query(dns.port, "mx1.example.org", "AAAA")
        assert r["rcode"] == 0 and r["answers"] == [] and r["authority"] and r["authority"][0][1] == "SOA"

        # NXDOMAIN
        r = udp_query(dns.port, "nowhere.invalid", "A")
        assert r["rcode"] == 3 and r["answers"] == []

        # case-insensitive
        r = udp_query(dns.port, "MIXED.case.test", "A")
        assert [v for _, t, _, v in r["answers"]] == ["127.0.0.9"]

        # TCP on the same port
        r = tcp_query(dns.port, "example.org", "MX")
        assert len(r["answers"]) == 2

        # changed while running
        dns.add("late.test", "A", "127.0.0.4")
        assert [v for _, _, _, v in udp_query(dns.port, "late.test", "A")["answers"]] == ["127.0.0.4"]
        assert ("example.org", "MX", "udp") in dns.queries and ("example.org", "MX", "tcp") in dns.queries


def test_dns_server_survives_garbage():
    with DNSServer(RECORDS) as dns:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc", ("127.0.0.1", dns.port))
            data, _ = s.recvfrom(4096)
            assert parse_response(data)["rcode"] == 1  # FORMERR
        assert udp_query(dns.port, "example.org", "MX")["rcode"] == 0


def test_sink_receives_counts_and_restarts_on_the_same_port(sink):
    s = sink("a")
    with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
        c.sendmail("a@other.org", ["alice@example.com", "bob@example.com"],
                   b"Subject: one\r\nMessage-ID: <one@test>\r\n\r\nline\r\n.hidden\r\n")
    got = s.wait_for(1, timeout=10)
    assert len(got) == 1
    m = got[0]
    assert m.mail_from == "a@other.org" and m.rcpts == ["alice@example.com", "bob@example.com"]
    assert m.message_id == "<one@test>" and m.subject == "one"
    assert m.content.endswith(b"line\n.hidden\n"), m.content
    port = s.port
    s.stop()
    assert not port_listening(port)
    s.start(["-r", "RCPT"])
    assert s.port == port and port_listening(port)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        try:
            c.sendmail("a@other.org", ["alice@example.com"], b"Subject: two\r\n\r\nx\r\n")
            raise AssertionError("a sink started with -r RCPT accepted a recipient")
        except smtplib.SMTPRecipientsRefused as e:
            assert e.recipients["alice@example.com"][0] // 100 == 4
    s.restart(options=[])
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.sendmail("", ["alice@example.com"], b"Subject: three\r\nMessage-ID: <three@test>\r\n\r\nx\r\n")
    got = s.wait_for(2, timeout=10)
    assert [m.message_id for m in got] == ["<one@test>", "<three@test>"]
    assert got[1].mail_from == ""


def test_sink_on_other_loopback_address(sink):
    s = sink("b", host="127.0.0.3")
    assert port_listening(s.port, "127.0.0.3")
    assert not port_listening(s.port, "127.0.0.2")
    with RawSession(s.port, host="127.0.0.3") as r:
        assert r.greeting()[0] == 220
    try:
        socket.create_connection(("127.0.0.2", s.port), timeout=1).close()
        raise AssertionError("127.0.0.2 accepted on the sink's port")
    except ConnectionRefusedError:
        pass


def test_capture_server_keeps_raw_bytes(capture_server):
    c = capture_server()
    with RawSession(c.port) as r:
        r.greeting()
        r.ehlo()
        r.cmd("MAIL FROM:<a@b>")
        r.cmd("RCPT TO:<c@d>")
        r.cmd("DATA")
        r.send(b"Subject: x\r\n\r\nbare\nlf\r\n..hidden\r\n.\r\n")
        assert r.read_reply()[0] == 250
    t = c.wait_for(1, timeout=5)[0]
    assert t["data"] == b"Subject: x\r\n\r\nbare\nlf\r\n..hidden\r\n.\r\n"


POSTFIX_STYLE_BOUNCE = (
    "From: MAILER-DAEMON@mx.test (Mail Delivery System)\r\n"
    "To: sender@other.org\r\n"
    "Subject: Undelivered Mail Returned to Sender\r\n"
    "Auto-Submitted: auto-replied\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="BOUNDARY"\r\n'
    "\r\n"
    "This is a MIME-encapsulated message.\r\n"
    "\r\n"
    "--BOUNDARY\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "I'm sorry to have to inform you that your message could not be delivered.\r\n"
    "\r\n"
    "--BOUNDARY\r\n"
    "Content-Type: message/delivery-status\r\n"
    "\r\n"
    "Reporting-MTA: dns; mx.test\r\n"
    "Original-Envelope-Id: env-1\r\n"
    "\r\n"
    "Final-Recipient: rfc822; alice@example.com\r\n"
    "Action: failed\r\n"
    "Status: 5.3.0\r\n"
    "Remote-MTA: dns; 127.0.0.1\r\n"
    "Diagnostic-Code: smtp; 500 5.3.0 Error: command\r\n"
    "    failed\r\n"
    "\r\n"
    "Final-Recipient: rfc822; bob@example.com\r\n"
    "Action: delayed\r\n"
    "Status: 4.4.1\r\n"
    "\r\n"
    "--BOUNDARY\r\n"
    "Content-Type: {third}\r\n"
    "\r\n"
    "Subject: the original\r\n"
    "Message-ID: <orig@other.org>\r\n"
    "{body}"
    "--BOUNDARY--\r\n"
)


def test_dsn_parser_through_smtp_sink(sink):
    from conftest import parse_dsn
    s = sink("dsn")
    for third, body in (("text/rfc822-headers", "\r\n"), ("message/rfc822", "\r\nORIGINAL BODY\r\n\r\n")):
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.sendmail("", ["sender@other.org"], POSTFIX_STYLE_BOUNCE.format(third=third, body=body).encode())
    got = s.wait_for(2, timeout=10)
    for m in got:
        assert m.mail_from == "" and m.rcpts == ["sender@other.org"]
    parsed = sorted((parse_dsn(m) for m in got), key=lambda d: d.returned_type != "text/rfc822-headers")
    hdrs, full = parsed
    for dsn in (hdrs, full):
        assert dsn.report_type == "delivery-status"
        assert dsn.per_message["reporting-mta"] == "dns; mx.test"
        assert dsn.per_message["original-envelope-id"] == "env-1"
        assert dsn.final_recipients() == ["alice@example.com", "bob@example.com"]
        a = dsn.recipient("alice@example.com")
        assert a["action"] == "failed" and a["status"] == "5.3.0"
        assert a["diagnostic-code"] == "smtp; 500 5.3.0 Error: command failed"
        assert dsn.recipient("bob@example.com")["action"] == "delayed"
        assert "could not be delivered" in dsn.text
    assert hdrs.returned_type == "text/rfc822-headers" and "Subject: the original" in hdrs.returned
    assert full.returned_type == "message/rfc822"
    assert full.returned.get("Message-ID") == "<orig@other.org>"
    assert "ORIGINAL BODY" in full.returned.get_payload()
