"""bulwarkctl: status and queue management over the control socket."""

import json
import re

import pytest

from conftest import BULWARKCTL, HOSTNAME, make_message, queue_id_of, require_binaries, run, send_mail


@pytest.fixture
def queued(daemon):
    """The daemon with two queued messages: returns (daemon, [id1, id2])."""
    ids = [queue_id_of(send_mail(daemon.port, "sender@other.org", ["alice@example.com", "bob@example.com"],
                                 make_message(subject=f"ctl {i}", body=f"secret body {i}")))
           for i in range(2)]
    return daemon, ids


def test_status(daemon):
    cp = daemon.ctl("status")
    assert cp.returncode == 0, cp.stderr
    assert HOSTNAME in cp.stdout, cp.stdout


def test_status_shows_the_spool_journal(queued):
    d, _ = queued
    cp = d.ctl("status", "--json")
    assert cp.returncode == 0, cp.stderr
    journal = json.loads(cp.stdout)["journal"]
    # The two queued messages are small: they live in the journal, not in files of their own.
    assert journal["segments"] >= 1 and journal["bytes"] > 0, journal
    assert not [p for p in (d.spool_dir / "queue").iterdir() if not p.name.endswith(".st")]
    assert "spool journal: " in d.ctl("status").stdout


def test_queue_list_human(queued):
    d, ids = queued
    cp = d.ctl("queue", "list")
    assert cp.returncode == 0, cp.stderr
    for qid in ids:
        assert qid.lower() in cp.stdout.lower(), cp.stdout
    assert "sender@other.org" in cp.stdout


def test_queue_list_shows_the_next_attempt_as_a_time_in_aligned_columns(queued):
    d, ids = queued
    from conftest import wait_until
    wait_until(lambda: all(e.get("next_attempt") for e in d.queue_list()), 15,
               what="a failed first attempt (the next hop is a closed port)")
    lines = d.ctl("queue", "list").stdout.splitlines()
    header = lines[0]
    sender_column = header.index("SENDER")
    rows = [l for l in lines if any(l.lower().startswith(q.lower()) for q in ids)]
    assert len(rows) == 2, lines
    for row in rows:
        assert re.search(r" \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", row), f"NEXT ATTEMPT is not a time: {row!r}"
        assert row.index("sender@other.org") == sender_column, (header, row)
    recipients = [l for l in lines if l.strip() in ("alice@example.com", "bob@example.com")]
    assert recipients and all(l.index(l.strip()) == sender_column for l in recipients), lines


def test_queue_list_empty(daemon):
    assert daemon.queue_list() == []
    assert daemon.ctl("queue", "list").returncode == 0


def test_queue_list_json_fields(queued):
    d, ids = queued
    entries = d.queue_list()
    assert sorted(e["id"].lower() for e in entries) == sorted(i.lower() for i in ids)
    for e in entries:
        assert isinstance(e["id"], str)
        assert e["sender"] == "sender@other.org"
        assert sorted(e["recipients"]) == ["alice@example.com", "bob@example.com"]
        assert isinstance(e["size"], int) and not isinstance(e["size"], bool) and e["size"] > 50
        assert isinstance(e["state"], str) and e["state"]


def test_queue_show(queued):
    d, ids = queued
    shown = d.queue_show(ids[0])
    assert "sender@other.org" in shown
    assert "alice@example.com" in shown and "bob@example.com" in shown
    assert "Subject: ctl 0" in shown
    assert "secret body 0" not in shown, "queue show without --body printed the body"
    full = d.queue_show(ids[0], body=True)
    assert "Subject: ctl 0" in full and "secret body 0" in full


def test_queue_hold_release_delete_several_ids(queued):
    d, ids = queued
    cp = d.ctl("queue", "hold", *ids)
    assert cp.returncode == 0, cp.stderr
    assert all(e["state"] == "hold" for e in d.queue_list())
    cp = d.ctl("queue", "release", *ids)
    assert cp.returncode == 0, cp.stderr
    assert all(e["state"] != "hold" for e in d.queue_list())
    cp = d.ctl("queue", "delete", *ids)
    assert cp.returncode == 0, cp.stderr
    assert d.queue_list() == []


def test_queue_flush(queued):
    d, _ = queued
    cp = d.ctl("queue", "flush")
    assert cp.returncode == 0, cp.stderr
    assert d.running()


def test_queue_list_json_is_valid_json_even_when_empty(daemon):
    cp = daemon.ctl("queue", "list", "--json")
    assert cp.returncode == 0
    assert json.loads(cp.stdout) == []


def test_daemon_not_running(tmp_path):
    require_binaries()
    sock = tmp_path / "no-such" / "ctl.sock"
    for args in (["status"], ["queue", "list"], ["queue", "list", "--json"]):
        cp = run([BULWARKCTL, "--socket", sock, *args], timeout=10)
        out = cp.stdout + cp.stderr
        assert cp.returncode != 0, f"{args}: exit 0 without a daemon"
        assert str(sock) in out, f"{args}: socket path not named: {out!r}"
        assert re.search(r"bulwarkd.*(not running|is bulwarkd running|cannot reach)", out, re.I), \
            f"{args}: does not say that bulwarkd is not running: {out!r}"


def test_stale_socket_after_kill9(daemon):
    daemon.kill9()
    cp = daemon.ctl("status", timeout=10)
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0
    assert str(daemon.control_socket) in out, out
    assert re.search(r"not running|is bulwarkd running|cannot reach", out, re.I), out


def test_log_level_at_run_time(daemon):
    from conftest import wait_until
    send_mail(daemon.port)
    assert "connect from" not in daemon.log(), "debug events logged at the default level"
    cp = daemon.ctl("log-level", "debug")
    assert cp.returncode == 0 and "debug" in cp.stdout, cp.stderr + cp.stdout
    send_mail(daemon.port)
    wait_until(lambda: "connect from" in daemon.log(), 5, what="a debug event after log-level debug")
    assert daemon.ctl("log-level", "warn").returncode == 0
    queued_before = daemon.log().count("queued: id=")
    send_mail(daemon.port)
    assert daemon.log().count("queued: id=") == queued_before, "info events still logged at warn"
    cp = daemon.ctl("log-level", "loud")
    assert cp.returncode != 0 and "not a level" in cp.stderr, cp.stderr


def test_queue_commands_select_with_all_and_filters(daemon):
    a1 = queue_id_of(send_mail(daemon.port, "a@other.org", ["alice@example.com"]))
    a2 = queue_id_of(send_mail(daemon.port, "a@other.org", ["carol@example.com"]))
    b1 = queue_id_of(send_mail(daemon.port, "b@other.org", ["alice@example.com"]))
    state = lambda: {e["id"].lower(): e["state"] for e in daemon.queue_list()}
    cp = daemon.ctl("queue", "hold", "--all", "--sender", "b@other.org")
    assert cp.returncode == 0, cp.stderr
    assert state() == {a1.lower(): "queued", a2.lower(): "queued", b1.lower(): "hold"}
    listed = json.loads(daemon.ctl("queue", "list", "--json", "--state", "hold").stdout)
    assert [e["id"].lower() for e in listed] == [b1.lower()], listed
    by_domain = json.loads(daemon.ctl("queue", "list", "--json", "--destination", "EXAMPLE.com").stdout)
    assert len(by_domain) == 3
    assert daemon.ctl("queue", "release", "--all", "--state", "hold").returncode == 0
    assert set(state().values()) == {"queued"}
    cp = daemon.ctl("queue", "delete", "--sender", "a@other.org")
    assert cp.returncode != 0 and "--all" in cp.stderr, "a filter without --all must not act"
    assert daemon.ctl("queue", "delete", "--all", "--recipient", "carol@example.com").returncode == 0
    assert sorted(state()) == sorted([a1.lower(), b1.lower()])
    cp = daemon.ctl("queue", "delete", "--all", "--sender", "nobody@other.org")
    assert cp.returncode == 0 and "no queued message matches" in cp.stdout
    assert len(state()) == 2
    assert daemon.ctl("queue", "delete", "--all").returncode == 0
    assert state() == {}


def test_queue_deliver_one_and_flush_one_destination(start_mta, sink, tmp_path):
    from conftest import mid, route, send_message, wait_until
    hop = sink("hop", start=False)
    d = start_mta(tmp_path, [route(["example.com"], [hop])],
                  delivery={"retry_initial": "1h", "retry_max": "1h"})
    first, second = mid("deliver-1"), mid("deliver-2")
    q1, q2 = send_message(d, message_id=first), send_message(d, message_id=second)
    wait_until(lambda: all(e["attempts"] >= 1 for e in d.queue_list()) and len(d.queue_list()) == 2,
               15, what="both messages deferred once (retry in 1 h)")
    hop.start()
    cp = d.ctl("queue", "deliver", q1)
    assert cp.returncode == 0, cp.stderr
    got = hop.wait_for(1, timeout=15, settle=1.0)
    assert [m.message_id for m in got] == [first], got
    assert [e["id"].lower() for e in d.queue_list()] == [q2.lower()]
    name = json.loads(d.ctl("queue", "destinations", "--json").stdout)[0]["destination"]
    assert d.ctl("queue", "flush", "--destination", name).returncode == 0
    got = hop.wait_for(2, timeout=15, settle=0.5)
    assert sorted(m.message_id for m in got) == sorted([first, second]), got
    assert d.ctl("queue", "deliver", "0123456789ABCDEF").returncode != 0


def test_queue_requeue_routes_waiting_mail_again_after_a_route_change(start_mta, sink, tmp_path):
    """postsuper -r: a job is bound to the next hop it was routed to, so after a route change
    only `queue requeue` moves mail already waiting for the old one."""
    import time
    from conftest import mid, route, send_message, wait_until
    old, new = sink("old", start=False), sink("new")
    d = start_mta(tmp_path, [route(["example.com"], [old])],
                  delivery={"retry_initial": "1h", "retry_max": "1h"})
    message_id = mid("requeue")
    qid = send_message(d, message_id=message_id)
    attempts = lambda: (d.queue_entry(qid) or {}).get("attempts", 0)
    wait_until(lambda: attempts() >= 1, 15, what="a failed attempt at the old next hop")
    d.extra_toml = d.extra_toml.replace(old.address, new.address)
    d.write_config()
    assert d.ctl("reload").returncode == 0
    # A retry now still goes to the old, closed next hop: the reload moved nothing.
    assert d.ctl("queue", "deliver", qid).returncode == 0
    wait_until(lambda: attempts() >= 2, 15, what="the retry at the old next hop")
    time.sleep(0.5)
    assert new.count() == 0
    cp = d.ctl("queue", "requeue", qid)
    assert cp.returncode == 0, cp.stderr
    assert f"{qid.upper()}: ROUTED TO {new.address}" in cp.stdout.upper(), cp.stdout
    got = new.wait_for(1, timeout=15, settle=0.5)
    assert [m.message_id for m in got] == [message_id], got
    wait_until(lambda: d.queue_list() == [], 10, what="the requeued message delivered and gone")
    assert f"REQUEUE: {qid.upper()} ROUTED AGAIN BY THE OPERATOR" in d.log().upper()
    cp = d.ctl("queue", "requeue", qid)
    assert cp.returncode == 0 and "not in the queue" in cp.stdout, cp.stdout


def test_queue_requeue_leaves_held_mail_held(queued):
    d, ids = queued
    assert d.ctl("queue", "hold", ids[0]).returncode == 0
    cp = d.ctl("queue", "requeue", "--all")
    assert cp.returncode == 0, cp.stderr
    assert f"{ids[0].upper()}: HELD" in cp.stdout.upper(), cp.stdout
    assert f"{ids[1].upper()}: ROUTED TO " in cp.stdout.upper() or "being delivered" in cp.stdout, cp.stdout
    assert {e["id"].lower(): e["state"] for e in d.queue_list()}[ids[0].lower()] == "hold"
    cp = d.ctl("queue", "requeue")
    assert cp.returncode != 0, "requeue without ids or --all must not act"


def test_queue_show_history_lists_every_attempt(start_mta, tmp_path):
    from conftest import route, send_message, wait_until
    d = start_mta(tmp_path, [route(["example.com"], ["127.0.0.1:9"])],
                  delivery={"retry_initial": "1s", "retry_max": "1s"})
    qid = send_message(d)
    wait_until(lambda: (d.queue_entry(qid) or {}).get("attempts", 0) >= 3, 30,
               what="three failed attempts (retry every second)")
    shown = json.loads(d.ctl("queue", "show", qid, "--history", "--json").stdout)
    tries = [r for r in shown["history"] if r["event"] == "attempt"]
    assert len(tries) >= 3, shown["history"]
    assert all(r["at"] <= r["next_at"] and r.get("error") for r in tries), tries
    assert "127.0.0.1:9" in tries[0]["error"], tries[0]
    human = d.ctl("queue", "show", qid, "--history").stdout
    lines = [l for l in human.splitlines() if re.match(r"\s+\d{4}-\d\d-\d\dT\S+Z\s+attempt ", l)]
    assert len(lines) >= 3 and "next try " in lines[0], human
    assert "history" not in json.loads(d.ctl("queue", "show", qid, "--json").stdout)
