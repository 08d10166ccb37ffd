"""Outbound rate limits (issue 12, `[outbound_limit]`): messages and recipients per sliding
window, per authenticated user, per envelope sender and per sending client. Over the limit mail
is deferred (451 4.7.1) or held in the quarantine for review, never bounced; an alert fires
once (a warning event and `bulwark_outbound_limit_alerts_total` on /metrics); the counters
survive a restart; a burst at the edge of a window cannot double the limit.

Real clients (smtplib, with STARTTLS and AUTH for the per-user limit), real next hops (Postfix
smtp-sink). The tests wait for windows of 20 and 30 seconds to pass; each checks it was not
itself too slow for its window (a loaded machine fails loudly instead of passing by luck)."""

from __future__ import annotations

import json
import re
import smtplib
import time
import urllib.request

import pytest

from conftest import client_tls_context, free_port, route, to_toml, wait_until

SENDER = "bulk@corp.example"
RCPT = "bob@example.com"
TRUSTED = {"trusted_networks": ["127.0.0.1/32"]}
USER, PASSWORD = "alice", "s3cret-pw"


def message(subject: str, sender: str = SENDER, rcpts=(RCPT,)) -> bytes:
    return (f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@test>\r\n\r\nhello\r\n").encode()


@pytest.fixture
def gateway(start_mta, sink, tmp_path):
    """gateway(limit, **daemon_kw) -> (daemon, hop for example.com, sink for corp.example
    (where a bounce to the sender would go), metrics port)."""

    def _make(limit: dict, **kw):
        hop, bounces = sink("hop"), sink("bounces")
        metrics = free_port()
        extra = to_toml({"outbound_limit": limit, "metrics": {"listen": f"127.0.0.1:{metrics}"}})
        d = start_mta(tmp_path, [route(["example.com"], [hop]), route(["corp.example"], [bounces])],
                      extra_toml=extra, relay=kw.pop("relay", TRUSTED), **kw)
        return d, hop, bounces, metrics

    return _make


def submit(client: smtplib.SMTP, subject: str, sender: str = SENDER, rcpts=(RCPT,)) -> tuple[int, str]:
    """One transaction on an open session: (250, "") or the DATA refusal."""
    try:
        refused = client.sendmail(sender, list(rcpts), message(subject, sender, rcpts))
        assert not refused, refused
        return 250, ""
    except smtplib.SMTPDataError as e:
        client.rset()
        return e.smtp_code, e.smtp_error.decode(errors="replace")


def send(d, subject: str, sender: str = SENDER, rcpts=(RCPT,)) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
        client.ehlo("client.test")
        return submit(client, subject, sender, rcpts)


def metric(port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert found, f"{name}{labels} not in /metrics:\n{text[-1500:]}"
    return float(found.group(1))


def alerts_in(log: str, key: str) -> int:
    return log.count(f"alert: outbound limit reached: {key} ")


def test_defers_the_101st_and_lets_it_through_later_across_a_restart(gateway):
    window = 20
    d, hop, bounces, metrics = gateway({"per": ["sender"], "messages": 100, "recipients": 1000,
                                        "window": f"{window}s"})
    started = time.time()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
        client.ehlo("client.test")
        for i in range(100):
            assert submit(client, f"m{i + 1}") == (250, ""), f"message {i + 1}"
        code, text = submit(client, "m101")
        again = submit(client, "m101 retried")
    assert time.time() - started < window - 2, "the test machine is too slow for this window"
    assert code == 451 and text.startswith("4.7.1") and "sender:bulk@corp.example" in text, (code, text)
    assert again[0] == 451
    # The alert fires once, as an event with fields, and on /metrics; each refusal is logged.
    log = d.log()
    assert alerts_in(log, "sender:bulk@corp.example") == 1, log[-3000:]
    assert metric(metrics, "bulwark_outbound_limit_alerts_total", '{per="sender"}') == 1
    assert metric(metrics, "bulwark_outbound_limit_refused_total") == 2
    # Another sender is not affected; the counts survive a restart.
    assert send(d, "other", sender="other@corp.example")[0] == 250
    d.restart()
    assert send(d, "after restart")[0] == 451
    wait_until(lambda: time.time() > started + window + 3, window + 10, what="the window to pass")
    assert send(d, "m101 later") == (250, "")
    got = hop.wait_for(102, timeout=90)
    assert len(got) == 102 and "m101 later" in [m.subject for m in got]
    assert bounces.count() == 0, "a deferral must never bounce"


def test_hold_keeps_the_message_for_review_and_a_release_delivers_it(gateway):
    d, hop, bounces, metrics = gateway({"per": ["client"], "messages": 3, "window": "1h",
                                        "over_limit": "hold"})
    for i in range(5):
        # Different senders: the client's count is what holds them.
        assert send(d, f"h{i + 1}", sender=f"user{i}@corp.example") == (250, ""), i
    delivered = hop.wait_for(3, settle=1.5)
    assert sorted(m.subject for m in delivered) == ["h1", "h2", "h3"]
    cp = d.ctl("quarantine", "list", "--json")
    assert cp.returncode == 0, cp.stderr
    held = json.loads(cp.stdout)
    assert sorted(e["subject"] for e in held) == ["h4", "h5"], held
    assert all("outbound limit of messages reached for client:127.0.0.1" in json.dumps(e) for e in held), held
    assert alerts_in(d.log(), "client:127.0.0.1") == 1
    assert metric(metrics, "bulwark_outbound_limit_alerts_total", '{per="client"}') == 1
    assert metric(metrics, "bulwark_outbound_limit_refused_total") == 2
    # Still held after a restart (the count is on disk), then released by the operator.
    d.restart()
    assert send(d, "h6", sender="late@corp.example") == (250, "")
    held = json.loads(d.ctl("quarantine", "list", "--json").stdout)
    assert sorted(e["subject"] for e in held) == ["h4", "h5", "h6"], held
    cp = d.ctl("quarantine", "release", *[e["id"] for e in held], "--json", timeout=60)
    assert cp.returncode == 0, cp.stderr + cp.stdout
    got = hop.wait_for(6, timeout=60)
    assert sorted(m.subject for m in got) == ["h1", "h2", "h3", "h4", "h5", "h6"]
    assert bounces.count() == 0, "held mail must never bounce"


def test_per_user_limit_counts_messages_and_recipients_of_the_authenticated_user(gateway):
    d, hop, _, _ = gateway({"per": ["user"], "messages": 10, "recipients": 3, "window": "1h"},
                           tls=True, users={USER: PASSWORD}, relay={})
    rcpts2 = ("bob@example.com", "carol@example.com")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
        client.ehlo("client.test")
        client.starttls(context=client_tls_context())
        client.ehlo("client.test")
        client.login(USER, PASSWORD)
        assert submit(client, "u1", sender="alice@corp.example", rcpts=rcpts2) == (250, "")
        code, text = submit(client, "u2", sender="alice@corp.example", rcpts=rcpts2)
        assert code == 451 and "user:alice" in text, (code, text)
        assert submit(client, "u3", sender="other@corp.example", rcpts=("dave@example.com",)) == (250, ""), \
            "the limit is the user's, whatever the sender; one more recipient fits"
        code, _ = submit(client, "u4", sender="other@corp.example", rcpts=("erin@example.com",))
        assert code == 451
    log = d.log()
    assert alerts_in(log, "user:alice") == 1, log[-3000:]
    assert "limit=recipients" in log or "recipients in the last" in log
    got = hop.wait_for(2)
    assert sorted(m.subject for m in got) == ["u1", "u3"]


def test_a_burst_at_the_window_edge_cannot_double_the_limit(gateway):
    """One message, then nine half a window later: once the first has aged out, one more place
    is free, not a whole new window's worth (fixed windows would allow ten)."""
    window = 30
    d, hop, _, _ = gateway({"per": ["sender"], "messages": 10, "recipients": 0, "window": f"{window}s"})
    first = time.time()
    assert send(d, "e1") == (250, "")
    wait_until(lambda: time.time() > first + window / 2, window, what="half a window")
    burst = time.time()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
        client.ehlo("client.test")
        for i in range(9):
            assert submit(client, f"e{i + 2}") == (250, ""), i
        assert submit(client, "e11")[0] == 451
    wait_until(lambda: time.time() > first + window + 2.5, window + 10, what="the first message's window")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
        client.ehlo("client.test")
        assert submit(client, "e11 later") == (250, ""), "the first message aged out"
        code, _ = submit(client, "e12")
    assert time.time() < burst + window - 1, "the test machine is too slow for this window"
    assert code == 451, "the nine of the burst still count: the limit is not doubled"
    assert len(hop.wait_for(11)) == 11
