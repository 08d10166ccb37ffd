"""Message tracking: `bulwarkctl track` shows each message's timeline, recorded by a real
daemon that received the mail over real SMTP (smtplib) and delivered it to a real next hop
(Postfix's smtp-sink).

- by queue id: received -> queued -> attempt -> delivered, in order, with the details;
- a next hop down then up: deferred, then delivered;
- a next hop refusing the recipient: bounced, and the notice linked to the original;
- --message-id with and without angle brackets, --sender, --recipient, --since, --json;
- operator hold, release and delete on the timeline; events survive a restart.
"""

from __future__ import annotations

import json
import re
import smtplib
import time

from conftest import make_message, queue_id_of, route, send_mail, wait_until

SENDER = "sender@other.org"


def smtp_send(port: int, sender: str, rcpts: list[str], message: bytes) -> str:
    """One transaction through smtplib; returns the queue id of the 250 reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("client.test")
        code, text = client.mail(sender)
        assert code == 250, (code, text)
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            assert code == 250, (rcpt, code, text)
        code, text = client.data(message)
        assert code == 250, (code, text)
    match = re.search(r"queued as ([0-9A-Fa-f]+)", text.decode())
    assert match, text
    return match.group(1)


def track(daemon, *args) -> list[dict]:
    cp = daemon.ctl("track", *args, "--json")
    assert cp.returncode == 0, f"track {args} failed ({cp.returncode}): {cp.stderr}{cp.stdout}"
    events = json.loads(cp.stdout)
    assert isinstance(events, list), events
    return events


def kinds(events: list[dict]) -> list[str]:
    return [e["event"] for e in events]


def wait_for_event(daemon, qid: str, kind: str, timeout: float = 30.0) -> list[dict]:
    last: list[dict] = []

    def seen():
        nonlocal last
        last = track(daemon, "--id", qid)
        return kind in kinds(last)
    wait_until(seen, timeout, interval=0.2, what=lambda: f"a {kind} event for {qid}; have {kinds(last)}")
    return last


def test_track_by_id_shows_received_queued_attempt_delivered(tmp_path, start_mta, sink):
    hop = sink("hop")
    daemon = start_mta(tmp_path, routes=[route(["example.com"], [hop])])
    mid = "<track-1@client.test>"
    qid = smtp_send(daemon.port, SENDER, ["alice@example.com"], make_message(message_id=mid))
    hop.wait_for(1)
    events = wait_for_event(daemon, qid, "delivered")
    assert kinds(events) == ["received", "queued", "attempt", "delivered"], events
    received, queued, attempt, delivered = events
    assert all(e["queue_id"] == qid.upper() for e in events), events
    assert all(e["message_id"] == "track-1@client.test" for e in events), events
    assert received["client"] == "127.0.0.1" and received["helo"] == "client.test"
    assert received["size"] > 100, received
    assert queued["recipients"] == 1
    assert attempt["recipient"] == "alice@example.com"
    assert str(hop.port) in attempt["relay"], attempt
    assert attempt["reply"].startswith("250"), attempt
    assert delivered["dsn_status"].startswith("2."), delivered
    times = [e["at_ms"] for e in events]
    assert times == sorted(times), times
    # The human timeline: one line per event, time, queue id, event, details.
    cp = daemon.ctl("track", "--id", qid.lower())
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.strip().splitlines()
    assert len(lines) == 4, cp.stdout
    for line, kind in zip(lines, ["received", "queued", "attempt", "delivered"]):
        assert re.match(rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z  {qid.upper()}  {kind} ", line), line
    assert "to=<alice@example.com>" in lines[3], lines[3]


def test_next_hop_down_then_up_shows_deferred_then_delivered(tmp_path, start_mta, sink):
    hop = sink("hop", start=False)
    daemon = start_mta(tmp_path, routes=[route(["example.com"], [hop])],
                       delivery={"retry_initial": "1s", "retry_max": "1s"})
    qid = queue_id_of(send_mail(daemon.port, SENDER, ["bob@example.com"],
                                make_message(message_id="<track-defer@client.test>")))
    events = wait_for_event(daemon, qid, "deferred")
    deferred = next(e for e in events if e["event"] == "deferred")
    assert deferred["recipient"] == "bob@example.com" and deferred["reason"], deferred
    assert "relay" not in next(e for e in events if e["event"] == "attempt"), "no next hop reached"
    hop.start()
    hop.wait_for(1, timeout=60)
    events = wait_for_event(daemon, qid, "delivered", timeout=60)
    order = kinds(events)
    assert order[:3] == ["received", "queued", "attempt"], order
    assert order.index("deferred") < order.index("delivered"), order
    assert order.count("delivered") == 1, order


def test_refused_recipient_shows_bounced_and_the_linked_notice(tmp_path, start_mta, sink):
    bad = sink("bad", options=["-f", "RCPT"])
    notices = sink("notices")
    daemon = start_mta(tmp_path, routes=[route(["example.com"], [bad]), route(["other.org"], [notices])])
    qid = queue_id_of(send_mail(daemon.port, SENDER, ["carol@example.com"],
                                make_message(message_id="<track-bounce@client.test>")))
    notices.wait_for(1)
    events = wait_for_event(daemon, qid, "generated")
    bounced = next(e for e in events if e["event"] == "bounced")
    assert bounced["recipient"] == "carol@example.com", bounced
    assert bounced["dsn_status"].startswith("5."), bounced
    notice = next(e for e in events if e["event"] == "notice")
    assert notice["action"] == "failed" and notice["queue_id"] == qid.upper(), notice
    # Asking by the original's id follows the link to the notice it caused.
    generated = next(e for e in events if e["event"] == "generated")
    assert generated["queue_id"] == notice["notice_id"] and generated["from"] == qid.upper(), generated


def test_filters_message_id_sender_recipient_since(daemon):
    first = queue_id_of(send_mail(daemon.port, "Ann@Other.org", ["alice@example.com"],
                                  make_message(message_id="<first@client.test>")))
    time.sleep(3)
    second = queue_id_of(send_mail(daemon.port, "ben@other.org", ["bob@example.com"],
                                   make_message(message_id="<second@client.test>")))
    for written in ["<first@client.test>", "first@client.test"]:
        events = track(daemon, "--message-id", written)
        assert {e["queue_id"] for e in events} == {first}, (written, events)
        assert kinds(events)[:2] == ["received", "queued"], events
    by_sender = track(daemon, "--sender", "ann@other.org")
    assert {e["queue_id"] for e in by_sender} == {first}, by_sender
    by_recipient = track(daemon, "--recipient", "<BOB@example.com>")
    assert {e["queue_id"] for e in by_recipient} == {second}, by_recipient
    assert track(daemon, "--recipient", "nobody@example.com") == []
    recent = track(daemon, "--since", "2s")
    assert {e["queue_id"] for e in recent} == {second}, recent
    assert {e["queue_id"] for e in track(daemon, "--since", "1h")} == {first, second}
    both = track(daemon, "--sender", "ann@other.org", "--recipient", "bob@example.com")
    assert both == [], "filters combine"
    cp = daemon.ctl("track", "--id", "not-an-id")
    assert cp.returncode != 0 and "not a queue id" in cp.stderr, cp


def test_json_is_an_array_of_flat_events(daemon):
    qid = queue_id_of(send_mail(daemon.port, SENDER, ["alice@example.com"],
                                make_message(message_id="<shape@client.test>")))
    events = track(daemon, "--id", qid)
    assert len(events) >= 2, events
    for e in events:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]), e
        assert isinstance(e["at_ms"], int) and e["at_ms"] > 1_600_000_000_000, e
        assert re.fullmatch(r"[0-9A-F]{16}", e["queue_id"]), e
        assert e["message_id"] == "shape@client.test", e
        assert isinstance(e["event"], str), e
    received = events[0]
    assert received["event"] == "received", events
    assert "auth_user" not in received and "tls" not in received, "absent, not null: no AUTH, no TLS"


def test_operator_hold_release_delete_are_on_the_timeline(daemon):
    qid = queue_id_of(send_mail(daemon.port, SENDER, ["alice@example.com"],
                                make_message(message_id="<ops@client.test>")))
    for verb in ["hold", "release", "delete"]:
        cp = daemon.ctl("queue", verb, qid)
        assert cp.returncode == 0, f"{verb}: {cp.stderr}"
    events = track(daemon, "--id", qid)
    order = kinds(events)
    assert order.index("held") < order.index("released") < order.index("deleted"), order
    deleted = next(e for e in events if e["event"] == "deleted")
    assert deleted["by"] == "operator" and deleted["message_id"] == "ops@client.test", deleted
    assert qid.upper() not in [i.upper() for i in daemon.queue_ids()]


def test_events_survive_a_restart_and_status_counts(daemon):
    qid = queue_id_of(send_mail(daemon.port, SENDER, ["alice@example.com"], make_message()))
    before = wait_for_event(daemon, qid, "deferred")  # the next hop (a closed port) refused
    daemon.restart()
    after = track(daemon, "--id", qid)
    assert after[:len(before)] == before, (before, after)
    status = json.loads(daemon.ctl("status", "--json").stdout)["tracking"]
    assert status["dropped"] == 0 and status["write_failures"] == 0, status
    assert (daemon.dir / "tracking" / "events.sqlite").is_file()
    assert "tracking: " in daemon.ctl("status").stdout
