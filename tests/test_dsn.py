"""Bounces and other delivery status notifications (RFC 3464), DSN parameters (RFC 3461),
null MX (RFC 7505). The sender's domain, other.org, is routed to a second sink `bounces`, so
every DSN the daemon sends can be read there."""

import os
import re
import time

import pytest

from conftest import mid, send_message as send
from conftest import (HOSTNAME, RawSession, assert_no_new_messages, expect, make_message, parse_dsn,
                      queue_id_of, route, wait_queue_empty, wait_until)

SENDER = "sender@other.org"
STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")




@pytest.fixture
def hardfail(start_mta, sink, tmp_path):
    """(start(**kw) -> daemon, failing sink, bounces sink): example.com goes to a sink that
    answers RCPT with 500 5.3.0."""
    bad = sink("bad", options=["-f", "RCPT"])
    bounces = sink("bounces")

    def _start(**kw):
        return start_mta(tmp_path, [route(["example.com"], [bad]), route(["other.org"], [bounces])], **kw)

    return _start, bad, bounces


def assert_is_bounce_to_sender(m, sender=SENDER):
    assert m.mail_from == "", f"a DSN must come from the null sender <>, got MAIL {m.mail_args!r}"
    assert m.rcpts == [sender], f"DSN sent to {m.rcpts}, not the original sender"


# --------------------------------------------------------------------------------------------
# 5, 6: hard failure -> bounce
# --------------------------------------------------------------------------------------------


def test_hard_fail_bounces_with_rfc3464_dsn(hardfail):
    start, bad, bounces = hardfail
    d = start()
    m = mid("hard")
    qid = send(d, message_id=m, subject="doomed message", body="SECRET-BODY-TOKEN\r\n")
    got = bounces.wait_for(1, timeout=20, settle=1.0)
    assert len(got) == 1, f"expected one DSN, got {got}"
    b = got[0]
    assert_is_bounce_to_sender(b)
    dsn = parse_dsn(b)
    assert dsn.report_type == "delivery-status", dsn.msg.get("Content-Type")
    assert dsn.text.strip(), "empty human-readable part"
    assert dsn.parts[0].get_content_type() == "text/plain"
    assert HOSTNAME in dsn.per_message.get("reporting-mta", ""), dsn.per_message
    assert dsn.per_message.get("reporting-mta", "").lower().startswith("dns;"), dsn.per_message
    assert dsn.final_recipients() == ["alice@example.com"], dsn.recipients
    r = dsn.recipient("alice@example.com")
    assert r["final-recipient"].lower().startswith("rfc822;"), r
    assert r.get("action") == "failed", r
    assert STATUS_RE.match(r.get("status", "")) and r["status"].startswith("5."), r
    assert r.get("diagnostic-code", "").lower().startswith("smtp;"), r
    assert "500" in r["diagnostic-code"], f"the remote reply is not in Diagnostic-Code: {r}"
    assert "remote-mta" in r, f"Remote-MTA missing although the failing MTA is known: {r}"
    # the original headers, not the body (no RET=FULL)
    assert dsn.returned_type in ("text/rfc822-headers", "message/rfc822"), [p.get_content_type() for p in dsn.parts]
    assert dsn.returned_type == "text/rfc822-headers", "returned the full message without RET=FULL"
    assert "Subject: doomed message" in dsn.returned and m in dsn.returned, dsn.returned
    assert b"SECRET-BODY-TOKEN" not in b.raw, "the body was returned without RET=FULL"
    # DSN headers
    assert dsn.msg.get("To") and SENDER in dsn.msg.get("To"), dsn.msg.get("To")
    assert dsn.msg.get("Message-ID") and dsn.msg.get("Message-ID") != m
    assert dsn.msg.get("Date") and dsn.msg.get("From")
    assert dsn.msg.get("Auto-Submitted", "").startswith("auto-replied"), \
        f"a DSN should carry Auto-Submitted: auto-replied (RFC 3834): {dsn.msg.get('Auto-Submitted')}"
    wait_queue_empty(d, 10)
    assert [l for l in d.log().splitlines() if qid.lower() in l.lower() and "alice@example.com" in l
            and re.search(r"\bbounced\b", l)], f"no 'bounced' delivery log line for {qid}"
    assert_no_new_messages(bounces, 2, already=1, what="a second DSN")


def test_ret_full_returns_the_whole_message(hardfail):
    start, bad, bounces = hardfail
    d = start()
    m = mid("retfull")
    send(d, message_id=m, subject="return all of me", body="FULL-BODY-TOKEN line\r\nsecond line\r\n",
         mail_params="RET=FULL ENVID=env-123")
    b = bounces.wait_for(1, timeout=20)[0]
    assert_is_bounce_to_sender(b)
    dsn = parse_dsn(b)
    assert dsn.returned_type == "message/rfc822", [p.get_content_type() for p in dsn.parts]
    orig = dsn.returned
    assert orig.get("Subject") == "return all of me" and orig.get("Message-ID") == m
    body = orig.get_payload(decode=False)
    assert "FULL-BODY-TOKEN line" in body and "second line" in body, body
    assert dsn.per_message.get("original-envelope-id") == "env-123", \
        f"ENVID not reported as Original-Envelope-Id: {dsn.per_message}"
    wait_queue_empty(d, 10)


def test_ret_hdrs_returns_headers_only(hardfail):
    start, bad, bounces = hardfail
    d = start()
    send(d, message_id=mid("rethdrs"), subject="headers only", body="HDRS-BODY-TOKEN\r\n", mail_params="RET=HDRS")
    b = bounces.wait_for(1, timeout=20)[0]
    dsn = parse_dsn(b)
    assert dsn.returned_type == "text/rfc822-headers"
    assert "Subject: headers only" in dsn.returned
    assert b"HDRS-BODY-TOKEN" not in b.raw


# --------------------------------------------------------------------------------------------
# 7, 8: no bounce for NOTIFY=NEVER and for null-sender mail
# --------------------------------------------------------------------------------------------


def test_notify_never_no_bounce(hardfail):
    start, bad, bounces = hardfail
    d = start()
    qid = send(d, message_id=mid("never"), rcpt_params="NOTIFY=NEVER")
    wait_queue_empty(d, 15)
    wait_until(lambda: [l for l in d.log().splitlines() if qid.lower() in l.lower() and "bounced" in l], 10,
               what="a 'bounced' log line (the failure must have happened)")
    assert_no_new_messages(bounces, 3, what="a DSN despite NOTIFY=NEVER")


def test_notify_delay_only_no_failure_bounce(hardfail):
    start, bad, bounces = hardfail
    d = start()
    send(d, message_id=mid("delayonly"), rcpt_params="NOTIFY=DELAY")
    wait_queue_empty(d, 15)
    assert_no_new_messages(bounces, 3, what="a failure DSN although NOTIFY did not ask for FAILURE")


def test_null_sender_mail_is_never_bounced(start_mta, sink, tmp_path):
    bad = sink("bad", options=["-f", "RCPT"])
    catchall = sink("catchall")
    d = start_mta(tmp_path, [route(["example.com"], [bad]), route(["*"], [catchall])],
                  delivery={"double_bounce": ""})
    qid = send(d, sender="", message_id=mid("nullsender"))
    wait_queue_empty(d, 15)
    wait_until(lambda: [l for l in d.log().splitlines() if qid.lower() in l.lower() and "bounced" in l], 10,
               what="a 'bounced' log line for the null-sender message")
    assert_no_new_messages(catchall, 3, what="a bounce of null-sender mail")
    assert d.queue_list() == []


def test_null_sender_bounce_goes_to_double_bounce(start_mta, sink, tmp_path):
    bad = sink("bad", options=["-f", "RCPT"])
    postmaster = sink("postmaster")
    d = start_mta(tmp_path, [route(["example.com"], [bad]), route(["admin.test"], [postmaster])],
                  delivery={"double_bounce": "postmaster@admin.test"})
    send(d, sender="", message_id=mid("double"))
    got = postmaster.wait_for(1, timeout=20)
    assert got[0].rcpts == ["postmaster@admin.test"]
    assert got[0].mail_from == "", "a double bounce must itself come from <>"
    dsn = parse_dsn(got[0])
    assert dsn.final_recipients() == ["alice@example.com"]
    wait_queue_empty(d, 10)


# --------------------------------------------------------------------------------------------
# NOTIFY=SUCCESS
# --------------------------------------------------------------------------------------------


def test_notify_success_relayed_dsn_when_next_hop_lacks_dsn(start_mta, sink, tmp_path):
    hop = sink("hop", options=["-N"])  # -N: smtp-sink does not announce DSN
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), route(["other.org"], [bounces])])
    m = mid("success")
    send(d, message_id=m, subject="tell me", rcpt_params="NOTIFY=SUCCESS")
    assert [x.message_id for x in hop.wait_for(1, timeout=20)] == [m]
    assert "NOTIFY" not in " ".join(hop.messages()[0].rcpt_args).upper(), \
        "NOTIFY sent to a next hop that does not offer DSN"
    b = bounces.wait_for(1, timeout=20, settle=1.0)
    assert len(b) == 1
    assert_is_bounce_to_sender(b[0])
    dsn = parse_dsn(b[0])
    r = dsn.recipient("alice@example.com")
    assert r is not None, dsn.recipients
    assert r.get("action") == "relayed", r
    assert r.get("status", "").startswith("2."), r
    wait_queue_empty(d, 10)


def test_notify_success_passed_on_to_dsn_capable_hop(start_mta, sink, tmp_path):
    hop = sink("hop")  # announces DSN
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), route(["other.org"], [bounces])])
    m = mid("passon")
    send(d, message_id=m, rcpt_params="NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.com",
         mail_params="ENVID=pass-on-1 RET=HDRS")
    got = hop.wait_for(1, timeout=20)[0]
    rcpt_args = " ".join(got.rcpt_args).upper()
    assert "NOTIFY=SUCCESS,FAILURE" in rcpt_args, f"NOTIFY not passed on: {got.rcpt_args}"
    assert "ORCPT=RFC822;ALICE@EXAMPLE.COM" in rcpt_args, f"ORCPT not passed on: {got.rcpt_args}"
    assert "ENVID=PASS-ON-1" in (got.mail_args or "").upper(), f"ENVID not passed on: {got.mail_args}"
    assert "RET=HDRS" in (got.mail_args or "").upper(), f"RET not passed on: {got.mail_args}"
    wait_queue_empty(d, 10)
    assert_no_new_messages(bounces, 2, what="a 'relayed' DSN although the next hop takes over DSN")


# --------------------------------------------------------------------------------------------
# 9: null MX
# --------------------------------------------------------------------------------------------


def test_null_mx_bounces_with_5_1_10(start_mta, sink, dns, tmp_path):
    bounces = sink("bounces")
    dns.set_records({"example.net": {"MX": [(0, ".")], "A": ["127.0.0.5"]}})
    d = start_mta(tmp_path, [route(["other.org"], [bounces]), {"domains": ["*"], "tls": "none"}],
                  relay_anywhere=True)
    send(d, rcpts=["bob@example.net"], message_id=mid("nullmx"), subject="to a null mx")
    got = bounces.wait_for(1, timeout=15, settle=1.0)
    assert len(got) == 1
    assert_is_bounce_to_sender(got[0])
    dsn = parse_dsn(got[0])
    r = dsn.recipient("bob@example.net")
    assert r is not None, dsn.recipients
    assert r.get("action") == "failed", r
    assert r.get("status") == "5.1.10", f"null MX must bounce with 5.1.10: {r}"
    wait_queue_empty(d, 10)
    assert ("example.net", "A", "udp") not in dns.queries, "fell back to the A record despite the null MX"


# --------------------------------------------------------------------------------------------
# 17: mixed outcomes in one message
# --------------------------------------------------------------------------------------------


def test_mixed_recipients_one_delivered_one_bounced(start_mta, sink, tmp_path):
    good = sink("good")
    bad = sink("bad", options=["-f", "RCPT"])
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [good]), route(["example.org"], [bad]),
                             route(["other.org"], [bounces])], relay_anywhere=True)
    m = mid("mixed")
    send(d, rcpts=["alice@example.com", "bob@example.org"], message_id=m)
    delivered = good.wait_for(1, timeout=20, settle=1.0)
    assert len(delivered) == 1 and delivered[0].message_id == m
    assert delivered[0].rcpts == ["alice@example.com"], delivered[0].rcpt_args
    b = bounces.wait_for(1, timeout=20, settle=1.0)
    assert len(b) == 1
    dsn = parse_dsn(b[0])
    assert dsn.final_recipients() == ["bob@example.org"], f"the DSN must name only the failed recipient: {dsn.recipients}"
    assert dsn.recipient("bob@example.org").get("action") == "failed"
    wait_queue_empty(d, 10)


def test_two_recipients_same_domain_share_one_transaction(start_mta, sink, tmp_path):
    """Two recipients in one domain at one next hop: one transaction with both RCPTs."""
    good = sink("good")
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [good]), route(["other.org"], [bounces])])
    m = mid("together")
    send(d, rcpts=["alice@example.com", "bob@example.com"], message_id=m)
    got = good.wait_for(1, timeout=20, settle=1.0)
    assert len(got) == 1 and sorted(got[0].rcpts) == ["alice@example.com", "bob@example.com"], \
        f"two recipients at one next hop should share one transaction: {got}"
    wait_queue_empty(d, 10)
    assert bounces.count() == 0


# --------------------------------------------------------------------------------------------
# Delay warnings and queue lifetime
# --------------------------------------------------------------------------------------------


def test_delay_warning_then_delivery(start_mta, sink, tmp_path):
    hop = sink("hop", start=False)
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), route(["other.org"], [bounces])],
                  delivery={"delay_warning": "2s"})
    m = mid("delayed")
    send(d, message_id=m, subject="slow one")
    got = bounces.wait_for(1, timeout=20)
    assert_is_bounce_to_sender(got[0])
    dsn = parse_dsn(got[0])
    r = dsn.recipient("alice@example.com")
    assert r is not None and r.get("action") == "delayed", dsn.recipients
    assert r.get("status", "").startswith("4."), r
    assert len(d.queue_list()) == 1, "the message left the queue after a delay warning"
    time.sleep(3)
    assert bounces.count() == 1, f"more than one delay warning: {bounces.messages()}"
    hop.start()
    assert [x.message_id for x in hop.wait_for(1, timeout=20)] == [m]
    wait_queue_empty(d, 10)
    assert bounces.count() == 1


def test_queue_lifetime_expiry_bounces(start_mta, sink, tmp_path):
    hop = sink("hop", start=False)
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), route(["other.org"], [bounces])],
                  delivery={"max_queue_lifetime": "3s"})
    send(d, message_id=mid("expire"))
    got = bounces.wait_for(1, timeout=25, settle=1.0)
    assert len(got) == 1
    dsn = parse_dsn(got[0])
    r = dsn.recipient("alice@example.com")
    assert r is not None and r.get("action") == "failed", dsn.recipients
    assert STATUS_RE.match(r.get("status", "")), r
    wait_queue_empty(d, 10)


def test_mail_parked_at_a_down_destination_still_warns_and_expires(start_mta, sink, tmp_path):
    """A down destination holds its mail without per-message retries, yet the delay notice
    and the queue lifetime still apply to that mail (no retry for an hour here)."""
    hop = sink("hop", start=False)
    bounces = sink("bounces")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), route(["other.org"], [bounces])],
                  delivery={"dead_destination_failures": 1, "retry_initial": "1h", "retry_max": "2h",
                            "delay_warning": "2s", "max_queue_lifetime": "5s"})
    send(d, message_id=mid("parked-1"))
    send(d, message_id=mid("parked-2"))
    got = bounces.wait_for(4, timeout=30, settle=1.0)
    actions = sorted(r.get("action") for m in got for r in parse_dsn(m).recipients)
    assert actions == ["delayed", "delayed", "failed", "failed"], actions
    wait_queue_empty(d, 10)
