"""Delivery: routes, failover, retries, MX resolution (against the test DNS server), dead
destinations, TLS towards the next hop, what goes on the wire, the delivery log, restarts.

Next hops are Postfix smtp-sink processes (see the `sink` fixture in conftest.py) or, where raw
bytes matter, the CaptureServer. Every wait is bounded."""

import re
import signal
import subprocess
import time

import pytest

from conftest import mid, send_message as send
from conftest import (RawSession, expect, free_port, make_message, queue_id_of, route, run,
                      send_mail, wait_queue_empty, wait_queue_len, wait_until)

SENDER = "sender@other.org"




def log_lines(d, *needles, ci=True):
    out = []
    for line in d.log().splitlines():
        hay = line.lower() if ci else line
        if all((n.lower() if ci else n) in hay for n in needles):
            out.append(line)
    return out


def bounce_route(bounce_sink):
    return route(["other.org"], [bounce_sink])


# --------------------------------------------------------------------------------------------
# 1, 15: simple relay and its log line
# --------------------------------------------------------------------------------------------


@pytest.fixture
def simple(start_mta, sink, tmp_path):
    """A daemon routing example.com to sink `hop` and other.org to sink `bounces`, with one
    message to alice@example.com delivered. Returns (daemon, hop, bounces, queue id, Message-ID)."""
    hop, bounces = sink("hop"), sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), bounce_route(bounces)])
    m = mid("simple")
    qid = send(d, message_id=m, subject="simple relay")
    hop.wait_for(1)
    return d, hop, bounces, qid, m


def test_simple_relay_delivers_once_and_empties_queue(simple):
    d, hop, bounces, qid, m = simple
    wait_queue_empty(d, 15)
    got = hop.wait_for(1, settle=1.0)
    assert len(got) == 1, f"expected exactly one delivery, got {got}"
    assert got[0].message_id == m
    assert got[0].mail_from == SENDER, got[0].mail_args
    assert got[0].rcpts == ["alice@example.com"], got[0].rcpt_args
    assert got[0].subject == "simple relay"
    assert b"hello world" in got[0].content
    assert bounces.count() == 0, f"a bounce for a delivered message: {bounces.messages()}"


def test_delivery_log_line(simple):
    d, hop, _, qid, _ = simple
    wait_queue_empty(d, 15)
    lines = wait_until(lambda: log_lines(d, qid, "alice@example.com", "sent"), 10,
                       what=lambda: f"a delivery log line with {qid}, alice@example.com, sent; log:\n{d.log()[-3000:]}")
    line = lines[-1]
    assert "127.0.0.1" in line and str(hop.port) in line, f"relay host[ip]:port missing: {line}"
    assert re.search(r"\[127\.0\.0\.1\]:?\s*" + str(hop.port) + r"\b", line) or \
        re.search(r"127\.0\.0\.1:" + str(hop.port) + r"\b", line), f"relay not shown as host[ip]:port: {line}"
    assert re.search(r"(?i)delay", line), f"no delay in the delivery log line: {line}"
    assert "2.0.0" in line, f"no DSN status 2.0.0 in the delivery log line: {line}"
    assert not re.search(r"(?i)\b(deferred|bounced)\b", line), line
    # exactly one 'sent' line for the one recipient of the one message
    assert len(lines) == 1, f"more than one 'sent' line for one delivery: {lines}"


# --------------------------------------------------------------------------------------------
# 2: failover
# --------------------------------------------------------------------------------------------


def test_failover_to_second_next_hop(start_mta, sink, tmp_path):
    closed = free_port()
    hop, bounces = sink("hop"), sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [f"127.0.0.1:{closed}", hop]), bounce_route(bounces)])
    m = mid("failover")
    qid = send(d, message_id=m)
    got = hop.wait_for(1, timeout=20, settle=1.0)
    assert [x.message_id for x in got] == [m]
    wait_queue_empty(d, 10)
    failing = [l for l in d.log().splitlines()
               if str(closed) in l and re.search(r"(?i)refused|fail|error|unreach|connect|defer", l)]
    assert failing, f"the log does not mention the first hop (port {closed}) failing:\n{d.log()[-3000:]}"
    sent = log_lines(d, qid, "sent")
    assert sent and str(hop.port) in sent[-1], f"no 'sent' line naming the second hop: {sent}"
    assert bounces.count() == 0


# --------------------------------------------------------------------------------------------
# 3, 4: next hop down / soft failures, then back
# --------------------------------------------------------------------------------------------


def test_next_hop_down_then_back(start_mta, sink, tmp_path):
    hop = sink("hop", start=False)
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), bounce_route(bounces)])
    mids = [mid("down", i) for i in range(5)]
    qids = [send(d, message_id=m, subject=f"down {i}") for i, m in enumerate(mids)]
    time.sleep(4)  # several retry rounds (retry_initial 1s, retry_max 2s)
    entries = d.queue_list()
    assert sorted(e["id"].lower() for e in entries) == sorted(q.lower() for q in qids), entries
    for e in entries:
        assert isinstance(e.get("attempts"), int) and not isinstance(e["attempts"], bool) and e["attempts"] >= 1, e
        assert isinstance(e.get("last_error"), str) and e["last_error"].strip(), f"no last_error: {e}"
        assert "next_attempt" in e, f"no next_attempt: {e}"
        assert e.get("state") not in ("hold",), e
    assert any(e["attempts"] >= 2 for e in entries), f"no message was retried within 4s: {entries}"
    assert log_lines(d, "deferred"), "no 'deferred' delivery log line while the next hop is down"
    assert bounces.count() == 0, f"bounce/warning while the hop was down: {bounces.messages()}"

    hop.start()
    hop.wait_for_ids(mids, timeout=30)
    wait_queue_empty(d, 15)
    time.sleep(1.0)
    got = [x.message_id for x in hop.messages()]
    dupes = {m: got.count(m) for m in mids if got.count(m) != 1}
    assert not dupes, f"messages delivered more or less than once: {dupes}"
    assert len(got) == 5, got
    assert bounces.count() == 0, f"bounce after delivery: {bounces.messages()}"


def test_soft_fail_4xx_retried_until_accepted(start_mta, sink, tmp_path):
    hop = sink("hop", options=["-r", "RCPT"])
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), bounce_route(bounces)])
    m = mid("soft")
    qid = send(d, message_id=m)
    wait_until(lambda: (e := d.queue_entry(qid)) and e.get("attempts", 0) >= 2, 15,
               what="two delivery attempts against the 4xx next hop")
    entry = d.queue_entry(qid)
    assert entry is not None, "the soft-failed message left the queue"
    assert "450" in (entry.get("last_error") or "") or "4.3.0" in (entry.get("last_error") or ""), \
        f"last_error does not carry the 450 reply: {entry}"
    assert hop.count() == 0
    assert bounces.count() == 0, "a 4xx reply caused a bounce"
    assert log_lines(d, qid, "deferred"), f"no 'deferred' log line for {qid}"
    hop.restart(options=[])
    got = hop.wait_for(1, timeout=20, settle=1.0)
    assert [x.message_id for x in got] == [m]
    wait_queue_empty(d, 10)
    assert bounces.count() == 0


def test_4xx_fails_over_to_the_next_hop_at_once(start_mta, sink, tmp_path):
    """A 4xx from the first next hop sends the recipient to the second one in the same
    attempt: no wait for a retry (retry_initial is an hour here)."""
    first = sink("first", options=["-r", "RCPT"])
    second, bounces = sink("second"), sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [first, second]), bounce_route(bounces)],
                  delivery={"retry_initial": "1h", "retry_max": "2h"})
    m = mid("soft-failover")
    qid = send(d, message_id=m)
    got = second.wait_for(1, timeout=15, settle=0.5)
    assert [x.message_id for x in got] == [m]
    assert first.count() == 0
    wait_queue_empty(d, 10)
    sent = log_lines(d, qid, "sent")
    assert sent and str(second.port) in sent[-1], f"no 'sent' line naming the second hop: {sent}"
    assert bounces.count() == 0


# --------------------------------------------------------------------------------------------
# 9-11: MX resolution with the test DNS server
# --------------------------------------------------------------------------------------------


# example.net: MX 10 mx1 (127.0.0.2), MX 20 mx2 (127.0.0.3), listed in the wrong order on purpose.
TWO_MX = {
    "example.net": {"MX": [(20, "mx2.example.net"), (10, "mx1.example.net")]},
    "mx1.example.net": {"A": ["127.0.0.2"]},
    "mx2.example.net": {"A": ["127.0.0.3"]},
}


def mx_routes(bounces):
    return [bounce_route(bounces), {"domains": ["*"], "tls": "none"}]


def test_mx_preference_skips_dead_host(start_mta, sink, dns, tmp_path):
    mx_port = free_port()
    hop = sink("mx2", host="127.0.0.3", port=mx_port)
    bounces = sink("bounces")
    dns.set_records(TWO_MX)
    d = start_mta(tmp_path, mx_routes(bounces), delivery={"mx_port": mx_port}, relay_anywhere=True)
    m = mid("mxpref")
    qid = send(d, rcpts=["bob@example.net"], message_id=m)
    got = hop.wait_for(1, timeout=20, settle=1.0)
    assert [x.message_id for x in got] == [m] and got[0].rcpts == ["bob@example.net"]
    wait_queue_empty(d, 10)
    assert ("example.net", "MX", "udp") in dns.queries or ("example.net", "MX", "tcp") in dns.queries, dns.queries
    sent = log_lines(d, qid, "sent")
    assert sent and "127.0.0.3" in sent[-1], f"'sent' log line does not name 127.0.0.3: {sent}"
    assert bounces.count() == 0


def test_mx_lowest_preference_number_first(start_mta, sink, dns, tmp_path):
    mx_port = free_port()
    best = sink("mx1", host="127.0.0.2", port=mx_port)
    backup = sink("mx2", host="127.0.0.3", port=mx_port)
    bounces = sink("bounces")
    dns.set_records(TWO_MX)
    d = start_mta(tmp_path, mx_routes(bounces), delivery={"mx_port": mx_port}, relay_anywhere=True)
    mids = [mid("mxbest", i) for i in range(3)]
    for m in mids:
        send(d, rcpts=["bob@example.net"], message_id=m)
    best.wait_for_ids(mids, timeout=20)
    wait_queue_empty(d, 10)
    assert backup.count() == 0, f"the preference-20 MX got mail while preference 10 was up: {backup.messages()}"


def test_implicit_mx_uses_a_record(start_mta, sink, dns, tmp_path):
    mx_port = free_port()
    hop = sink("amx", host="127.0.0.4", port=mx_port)
    bounces = sink("bounces")
    dns.set_records({"example.net": {"A": ["127.0.0.4"]}})
    d = start_mta(tmp_path, mx_routes(bounces), delivery={"mx_port": mx_port}, relay_anywhere=True)
    m = mid("implicit")
    send(d, rcpts=["carol@example.net"], message_id=m)
    got = hop.wait_for(1, timeout=20, settle=1.0)
    assert [x.message_id for x in got] == [m]
    wait_queue_empty(d, 10)
    assert bounces.count() == 0


def test_nxdomain_recipient_domain_bounces(start_mta, sink, dns, tmp_path):
    """No MX and no A (NXDOMAIN): a permanent failure, bounced at once (not retried for days)."""
    from conftest import parse_dsn
    bounces = sink("bounces")
    dns.set_records({})
    d = start_mta(tmp_path, mx_routes(bounces), relay_anywhere=True)
    send(d, rcpts=["dave@nowhere.example.net"], message_id=mid("nx"))
    got = bounces.wait_for(1, timeout=20)
    dsn = parse_dsn(got[0])
    r = dsn.recipient("dave@nowhere.example.net")
    assert r is not None, dsn.recipients
    assert r.get("action") == "failed" and r.get("status", "").startswith("5."), r
    wait_queue_empty(d, 10)


# --------------------------------------------------------------------------------------------
# 12: dead destination, queue destinations, flush
# --------------------------------------------------------------------------------------------


def destinations(d):
    import json
    cp = d.ctl("queue", "destinations", "--json")
    assert cp.returncode == 0, f"queue destinations --json failed ({cp.returncode}): {cp.stderr}{cp.stdout}"
    data = json.loads(cp.stdout)
    assert isinstance(data, list), data
    for e in data:
        assert isinstance(e.get("destination"), str), e
        assert e.get("state") in ("up", "down"), e
        assert isinstance(e.get("queued"), int) and not isinstance(e["queued"], bool), e
        assert "last_error" in e and (e["last_error"] is None or isinstance(e["last_error"], str)), e
    return data


def test_dead_destination_and_flush(start_mta, sink, tmp_path):
    hop = sink("hop", start=False)
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), bounce_route(bounces)],
                  delivery={"dead_destination_failures": 2, "retry_initial": "1h", "retry_max": "2h"})
    mids = [mid("dead", i) for i in range(3)]
    for i, m in enumerate(mids):
        send(d, message_id=m, subject=f"dead {i}")

    def ours(entries):
        return [e for e in entries if str(hop.port) in e["destination"] or "example.com" in e["destination"]]

    down = wait_until(lambda: [e for e in ours(destinations(d)) if e["state"] == "down" and e["queued"] == 3], 15,
                      what=lambda: f"the destination marked down with 3 queued: {destinations(d)}")
    assert down[0]["last_error"], f"a down destination without last_error: {down[0]}"
    human = d.ctl("queue", "destinations")
    assert human.returncode == 0, human.stderr
    assert down[0]["destination"] in human.stdout, human.stdout

    hop.start()
    time.sleep(2.5)
    assert hop.count() == 0, "delivered without a flush although retry_initial is 1h"
    assert len(d.queue_list()) == 3
    cp = d.ctl("queue", "flush")
    assert cp.returncode == 0, cp.stderr
    hop.wait_for_ids(mids, timeout=20)
    wait_queue_empty(d, 10)
    assert sorted(x.message_id for x in hop.messages()) == sorted(mids)
    wait_until(lambda: not [e for e in ours(destinations(d)) if e["state"] == "down"], 10,
               what=lambda: f"the destination up again after delivering: {destinations(d)}")
    assert bounces.count() == 0


# --------------------------------------------------------------------------------------------
# 13: TLS towards the next hop
# --------------------------------------------------------------------------------------------


def make_ca(directory, name="ca"):
    directory.mkdir(parents=True, exist_ok=True)
    ca, key = directory / f"{name}.pem", directory / f"{name}.key"
    cp = run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=Bulwark Test {name}",
              "-days", "2", "-keyout", key, "-out", ca,
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], timeout=60)
    assert cp.returncode == 0, cp.stderr
    return ca, key


def make_server_cert(directory, ca, ca_key, dns_name):
    key, csr, cert = directory / "srv.key", directory / "srv.csr", directory / "srv.pem"
    ext = directory / "srv.ext"
    ext.write_text(f"subjectAltName=DNS:{dns_name}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    cp = run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={dns_name}",
              "-keyout", key, "-out", csr], timeout=60)
    assert cp.returncode == 0, cp.stderr
    cp = run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
              "-days", "2", "-out", cert, "-extfile", ext], timeout=60)
    assert cp.returncode == 0, cp.stderr
    return cert, key


@pytest.fixture
def tls_hop(start_mta, tmp_path, dns):
    """A second bulwarkd with a certificate for mx.internal.test signed by a test CA, accepting
    example.com (it keeps what it gets: its own onward route is a closed port, retried hourly).
    Returns (hop daemon, CA file, a different CA file)."""
    pki = tmp_path / "pki"
    ca, ca_key = make_ca(pki, "ca")
    other_ca, _ = make_ca(pki, "otherca")
    cert, key = make_server_cert(pki, ca, ca_key, "mx.internal.test")
    dead = f"127.0.0.1:{free_port()}"
    hop = start_mta(tmp_path, [route(["*"], [dead])], name="hop",
                    delivery={"retry_initial": "1h", "retry_max": "2h"},
                    tls={"certificate": str(cert), "private_key": str(key)})
    dns.set_records({"mx.internal.test": {"A": ["127.0.0.1"]}})
    return hop, ca, other_ca


def test_tls_required_without_starttls_stays_queued(start_mta, sink, tmp_path):
    hop = sink("hop")  # smtp-sink offers no STARTTLS
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop], tls="required"), bounce_route(bounces)])
    qid = send(d, message_id=mid("tlsreq"))
    wait_until(lambda: (e := d.queue_entry(qid)) and e.get("attempts", 0) >= 2, 15,
               what="two delivery attempts to the hop without STARTTLS")
    assert hop.count() == 0, f"delivered in plaintext although tls = required: {hop.messages()}"
    entry = d.queue_entry(qid)
    assert entry is not None
    assert re.search(r"(?i)tls", entry.get("last_error") or ""), f"last_error does not say why (TLS): {entry}"
    assert bounces.count() == 0, "tls = required failure bounced instead of staying queued"


def test_tls_verify_delivers_to_verified_hop(start_mta, tls_hop, sink, tmp_path):
    hop, ca, _ = tls_hop
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [f"mx.internal.test:{hop.port}"], tls="verify", ca_file=str(ca)),
                             bounce_route(bounces)], name="first")
    m = mid("tlsverify")
    send(d, message_id=m, subject="over verified tls")
    entries = wait_queue_len(hop, 1, 20)
    wait_queue_empty(d, 10)
    shown = hop.queue_show(entries[0]["id"])
    assert "over verified tls" in shown
    assert re.search(r"\bESMTPS", shown), f"the hop's Received header does not say ESMTPS:\n{shown}"
    assert bounces.count() == 0


def test_tls_verify_wrong_ca_not_delivered(start_mta, tls_hop, sink, tmp_path):
    hop, _, other_ca = tls_hop
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [f"mx.internal.test:{hop.port}"], tls="verify",
                                   ca_file=str(other_ca)), bounce_route(bounces)], name="first")
    qid = send(d, message_id=mid("tlswrongca"))
    wait_until(lambda: (e := d.queue_entry(qid)) and e.get("attempts", 0) >= 2, 15,
               what="two delivery attempts to the hop with an untrusted certificate")
    assert hop.queue_list() == [], "delivered to a hop whose certificate does not chain to ca_file"
    entry = d.queue_entry(qid)
    assert entry is not None
    assert re.search(r"(?i)tls|certificate|issuer", entry.get("last_error") or ""), f"last_error: {entry}"
    assert bounces.count() == 0


def test_tls_verify_wrong_name_not_delivered(start_mta, tls_hop, sink, dns, tmp_path):
    """The certificate chains to the CA but names mx.internal.test, not the hop we asked for."""
    hop, ca, _ = tls_hop
    dns.add("other.internal.test", "A", "127.0.0.1")
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [f"other.internal.test:{hop.port}"], tls="verify",
                                   ca_file=str(ca)), bounce_route(bounces)], name="first")
    qid = send(d, message_id=mid("tlswrongname"))
    wait_until(lambda: (e := d.queue_entry(qid)) and e.get("attempts", 0) >= 2, 15,
               what="two delivery attempts to the hop with a certificate for another name")
    assert hop.queue_list() == []
    entry = d.queue_entry(qid)
    assert entry is not None
    assert re.search(r"(?i)tls|certificate|name", entry.get("last_error") or ""), f"last_error: {entry}"
    assert bounces.count() == 0


def test_tls_required_accepts_unverified_certificate(start_mta, tls_hop, sink, tmp_path):
    """tls = required encrypts but does not check the certificate (no ca_file given)."""
    hop, _, _ = tls_hop
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [f"127.0.0.1:{hop.port}"], tls="required"),
                             bounce_route(bounces)], name="first")
    send(d, message_id=mid("tlsreqok"), subject="required tls")
    entries = wait_queue_len(hop, 1, 20)
    assert re.search(r"\bESMTPS", hop.queue_show(entries[0]["id"]))
    wait_queue_empty(d, 10)


# --------------------------------------------------------------------------------------------
# 14: what goes on the wire
# --------------------------------------------------------------------------------------------

BARE_RE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def send_raw_data(d, wire: bytes, rcpt="alice@example.com"):
    with RawSession(d.port) as s:
        expect(s.greeting(), 220)
        expect(s.ehlo(), 250)
        expect(s.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        expect(s.cmd(f"RCPT TO:<{rcpt}>"), 250)
        expect(s.cmd("DATA"), 354)
        s.send(wire)
        qid = queue_id_of(s.read_reply())
        s.cmd("QUIT")
    return qid


def test_bare_lf_normalised_and_dot_stuffed_on_the_wire(start_mta, capture_server, sink, tmp_path):
    cap = capture_server()
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [cap.address]), bounce_route(bounces)],
                  smtp={"bare_newline": "normalize"})
    m = mid("barelf")
    wire = (f"Message-ID: {m}\r\nSubject: bare\nFrom: <{SENDER}>\r\n\r\n"
            "line one\nline two\r\n..hidden\r\n..\r\nlast\r\n.\r\n").encode()
    send_raw_data(d, wire)
    data = cap.wait_for(1, timeout=20)[0]["data"]
    wait_queue_empty(d, 10)
    assert data.endswith(b"\r\n.\r\n"), data[-40:]
    assert not BARE_RE.search(data), f"bare CR or LF sent to the next hop: {data!r}"
    assert b"\r\nline one\r\nline two\r\n" in data, data
    assert b"\r\n..hidden\r\n" in data, f"a line starting with a dot was not dot-stuffed: {data!r}"
    assert b"\r\n...\r\n" not in data and b"\r\n..\r\nlast\r\n" in data, \
        f"a content line '.' must go out stuffed as '..': {data!r}"
    assert b"\r\n.hidden\r\n" not in data, f"unstuffed dot line on the wire: {data!r}"


def test_dot_lines_arrive_unstuffed(start_mta, sink, tmp_path):
    hop, bounces = sink("hop"), sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), bounce_route(bounces)])
    m = mid("dots")
    body = "first\r\n.hidden\r\n..two dots\r\n.\r\nafter the dot line\r\n"
    # send_mail dot-stuffs on the way in.
    queue_id_of(send_mail(d.port, SENDER, ["alice@example.com"], make_message(body=body, message_id=m)))
    got = hop.wait_for(1, timeout=20)[0]
    assert got.message_id == m
    content = got.content  # smtp-sink stores LF line ends, unstuffed
    assert b"\nfirst\n.hidden\n..two dots\n.\nafter the dot line\n" in content, content


def test_long_and_8bit_message_arrives_intact(start_mta, sink, tmp_path):
    hop, bounces = sink("hop"), sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), bounce_route(bounces)])
    m = mid("big")
    lines = [f"{i:06d} " + "x" * 70 + " \u00e9t\u00e9" for i in range(20000)]  # ~1.6 MB, 8-bit
    msg = make_message(body="\r\n".join(lines), message_id=m,
                       extra_headers=["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                                      "Content-Transfer-Encoding: 8bit"])
    queue_id_of(send_mail(d.port, SENDER, ["alice@example.com"], msg, mail_params="BODY=8BITMIME"))
    got = hop.wait_for(1, timeout=30)[0]
    body = got.content.split(b"\n\n", 1)[1]
    assert body == ("\n".join(lines) + "\n").encode(), "the body changed on the way through"
    assert "BODY=8BITMIME" in (got.mail_args or "").upper(), f"8-bit body sent without BODY=8BITMIME: {got.mail_args}"


# --------------------------------------------------------------------------------------------
# 16: SIGTERM / kill -9 in the middle of delivery
# --------------------------------------------------------------------------------------------

N_RESTART = 60


def _restart_setup(start_mta, sink, tmp_path):
    hop = sink("hop", options=["-w", "1"])  # 1 s before each 354
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop], max_connections=2), bounce_route(bounces)])
    mids = [mid("restart", i) for i in range(N_RESTART)]
    accepted = []
    with RawSession(d.port, timeout=30) as s:
        s.greeting()
        s.ehlo()
        for i, m in enumerate(mids):
            queue_id_of(s.mail_transaction(SENDER, ["alice@example.com"],
                                           make_message(subject=f"restart {i}", message_id=m)))
            accepted.append(m)
        s.cmd("QUIT")
    hop.wait_for(3, timeout=30, settle=0)
    return d, hop, bounces, accepted


def test_sigterm_mid_delivery_then_restart_loses_and_duplicates_nothing(start_mta, sink, tmp_path):
    d, hop, bounces, accepted = _restart_setup(start_mta, sink, tmp_path)
    before = hop.count()
    assert before < N_RESTART, "all delivered before SIGTERM: the test did not stop delivery midway"
    d.proc.send_signal(signal.SIGTERM)
    try:
        rc = d.proc.wait(20)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait(5)
        pytest.fail("bulwarkd did not exit within 20s of SIGTERM")
    assert rc == 0, f"bulwarkd exit status {rc} after SIGTERM; log:\n{d.log()[-2000:]}"
    hop.restart(options=[])
    d.start()
    hop.wait_for_ids(accepted, timeout=60)
    wait_queue_empty(d, 20)
    time.sleep(1)
    got = [x.message_id for x in hop.messages()]
    dupes = {m: got.count(m) for m in set(got) if got.count(m) > 1}
    assert not dupes, f"{len(dupes)} messages delivered twice across a SIGTERM restart: {list(dupes)[:5]}"
    assert set(got) == set(accepted)
    assert bounces.count() == 0


def test_kill9_mid_delivery_then_restart_loses_nothing(start_mta, sink, tmp_path):
    d, hop, bounces, accepted = _restart_setup(start_mta, sink, tmp_path)
    d.kill9()
    hop.restart(options=[])
    d.start()
    hop.wait_for_ids(accepted, timeout=60)
    wait_queue_empty(d, 20)
    got = [x.message_id for x in hop.messages()]
    dupes = {m: got.count(m) for m in set(got) if got.count(m) > 1}
    missing = set(accepted) - set(got)
    assert not missing, f"{len(missing)} accepted messages lost after kill -9 (duplicates: {len(dupes)})"
    print(f"kill -9 mid delivery: {len(dupes)} duplicated Message-IDs (allowed)")
    assert bounces.count() == 0


# --------------------------------------------------------------------------------------------
# Routes: first match wins, smart_host, per-route max_messages_per_connection
# --------------------------------------------------------------------------------------------


def test_first_matching_route_wins_and_smart_host(start_mta, sink, tmp_path, dns):
    specific, smart, bounces = sink("specific"), sink("smart"), sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [specific]), bounce_route(bounces),
                             route(["*"], smart_host=smart)], relay_anywhere=True)
    m1, m2 = mid("route", 1), mid("route", 2)
    send(d, rcpts=["alice@example.com"], message_id=m1)
    send(d, rcpts=["bob@faraway.test"], message_id=m2)
    assert [x.message_id for x in specific.wait_for(1, timeout=20)] == [m1]
    assert [x.message_id for x in smart.wait_for(1, timeout=20)] == [m2]
    wait_queue_empty(d, 10)
    assert specific.count() == 1 and smart.count() == 1 and bounces.count() == 0
    assert not [q for q in dns.queries if q[0] == "faraway.test"], \
        f"the smart_host route looked up the recipient domain in DNS: {dns.queries}"


# --------------------------------------------------------------------------------------------
# What the next hop cannot take: 8-bit without 8BITMIME (RFC 6152), UTF-8 addresses without
# SMTPUTF8 (RFC 6531)
# --------------------------------------------------------------------------------------------


def _only_dsn_recipient(bounces, address):
    from conftest import parse_dsn
    got = bounces.wait_for(1, timeout=20, settle=0.5)
    assert len(got) == 1, got
    r = parse_dsn(got[0]).recipient(address)
    assert r is not None, f"the notice does not name {address}"
    return r


def test_8bit_to_a_next_hop_without_8bitmime_bounces(start_mta, sink, tmp_path):
    hop, bounces = sink("hop", options=["-8"]), sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), bounce_route(bounces)])
    msg = make_message(body="caf\u00e9 cr\u00e8me", message_id=mid("8bit"),
                       extra_headers=["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                                      "Content-Transfer-Encoding: 8bit"])
    queue_id_of(send_mail(d.port, SENDER, ["alice@example.com"], msg, mail_params="BODY=8BITMIME"))
    r = _only_dsn_recipient(bounces, "alice@example.com")
    assert r.get("action") == "failed" and r.get("status") == "5.6.3", r
    assert hop.count() == 0
    wait_queue_empty(d, 10)


def test_ascii_declared_8bitmime_goes_as_7bit_to_a_hop_without_8bitmime(start_mta, sink, tmp_path):
    hop, bounces = sink("hop", options=["-8"]), sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), bounce_route(bounces)])
    m = mid("ascii8")
    msg = make_message(body="plain ascii", message_id=m)
    queue_id_of(send_mail(d.port, SENDER, ["alice@example.com"], msg, mail_params="BODY=8BITMIME"))
    got = hop.wait_for(1, timeout=20)
    assert [x.message_id for x in got] == [m]
    assert "BODY=" not in (got[0].mail_args or "").upper(), got[0].mail_args
    assert bounces.count() == 0


def test_utf8_address_to_a_next_hop_without_smtputf8_bounces(start_mta, sink, tmp_path):
    hop, bounces = sink("hop", options=["-e"]), sink("bounces")  # -e: no ESMTP at all
    d = start_mta(tmp_path, [route(["example.com"], [hop]), bounce_route(bounces)])
    msg = make_message(body="hello", message_id=mid("utf8"))
    queue_id_of(send_mail(d.port, SENDER, ["jos\u00e9@example.com"], msg, mail_params="SMTPUTF8"))
    # RFC 6533: a UTF-8 address in a 7-bit report is written as utf-8 with \x{HEX} escapes.
    r = _only_dsn_recipient(bounces, "jos\\x{E9}@example.com")
    assert r.get("action") == "failed" and r.get("status") == "5.6.7", r
    assert hop.count() == 0


# --------------------------------------------------------------------------------------------
# IPv6: an explicit [::1] next hop, and an MX host that has only an AAAA record
# --------------------------------------------------------------------------------------------


def _free_port_v6() -> int:
    import socket
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["literal", "aaaa-mx"])
def test_delivery_over_ipv6(start_mta, start_daemon, dns, sink, tmp_path, how):
    try:
        port = _free_port_v6()
    except OSError as e:
        pytest.skip(f"no IPv6 loopback here: {e}")
    hop = start_daemon(tmp_path / "hop", name="v6hop",
                       listeners=[{"address": f"[::1]:{port}", "role": "mx"}])
    bounces = sink("bounces")
    if how == "literal":
        routes = [route(["example.com"], [f"[::1]:{port}"]), bounce_route(bounces)]
        delivery = None
    else:
        dns.add("example.com", "MX", (10, "mx6.example.com"))
        dns.add("mx6.example.com", "AAAA", "::1")
        routes = [route(["*"], []), bounce_route(bounces)]
        delivery = {"mx_port": port}
    d = start_mta(tmp_path / "first", routes, delivery=delivery, name="first")
    send(d, message_id=mid(f"v6-{how}"), subject=f"over ipv6 {how}")
    entries = wait_queue_len(hop, 1, 20)
    wait_queue_empty(d, 10)
    assert f"over ipv6 {how}" in hop.queue_show(entries[0]["id"])
    assert any("[::1]" in line for line in log_lines(d, "sent")), "no 'sent' line naming [::1]"


# --------------------------------------------------------------------------------------------
# Connection caching: an idle connection waits connection_idle_time for the next message
# --------------------------------------------------------------------------------------------

def send_spaced(d, count: int, gap: float, tag: str) -> list[str]:
    ids = []
    for i in range(count):
        ids.append(mid(f"{tag}{i}"))
        send(d, message_id=ids[-1])
        time.sleep(gap)
    return ids


@pytest.mark.parametrize("idle, messages, connections", [("3s", 5, 1), ("0s", 3, 3)],
                         ids=["cached", "not-cached"])
def test_idle_connection_carries_the_next_messages(start_mta, capture_server, sink, tmp_path,
                                                   idle, messages, connections):
    cap, bounces = capture_server(), sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [cap.address]), bounce_route(bounces)],
                  delivery={"connection_idle_time": idle})
    send_spaced(d, messages, 0.4, f"idle{idle}")
    cap.wait_for(messages, timeout=20)
    wait_queue_empty(d, 10)
    assert cap.connections == connections, \
        f"{messages} spaced messages with connection_idle_time={idle} took {cap.connections} connections"


def test_next_hop_closing_an_idle_connection_costs_no_deferral(start_mta, capture_server, sink,
                                                                tmp_path):
    # The next hop drops idle clients after 0.3 s with a 421; the cached connection must be
    # noticed as gone and the message sent over a new one at once, not deferred.
    cap, bounces = capture_server(idle_close=0.3), sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [cap.address]), bounce_route(bounces)],
                  delivery={"connection_idle_time": "5s", "retry_initial": "1h", "retry_max": "1h"})
    send_spaced(d, 3, 1.0, "idleclose")
    cap.wait_for(3, timeout=20)
    wait_queue_empty(d, 10)
    assert cap.connections == 3, f"expected a new connection per message, got {cap.connections}"
    assert not log_lines(d, "status=deferred"), log_lines(d, "status=deferred")
