"""The quarantine, black-box: `bulwarkctl quarantine list|show|release|delete` against a real
bulwarkd, releases delivered to a real next hop (Postfix smtp-sink), and the durability of the
operator's `queue hold`.

Until the content pipeline quarantines messages by rule, entries are put in the store the way
an administrator restores a backup: as the documented files (`messages/ID.eml` and
`messages/ID.json`, see mta/src/quarantine/mod.rs) written while the daemon is stopped. The
daemon's contract is that these files are the truth and that its search index is rebuilt from
them at start; no test-only path exists in the daemon.

The helpers (`quarantine_list(daemon, **filters)`, `quarantine_show`, `quarantine_release`,
`quarantine_delete`, `plant_entry`) are meant to be reused by the end-to-end rule tests."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (BULWARKCTL, Daemon, DaemonError, assert_no_new_messages, make_message, mid,
                      queue_id_of, require_smtp_sink, route, send_mail, wait_until)
from test_config import check_config

SENDER = "sender@other.org"
NOW = lambda: int(time.time())  # noqa: E731


# --------------------------------------------------------------------------------------------
# Helpers (reusable)
# --------------------------------------------------------------------------------------------


def quarantine_dir(daemon) -> Path:
    return Path(daemon.doc["quarantine"]["dir"])


def quarantine_list(daemon, **filters) -> list[dict]:
    """`quarantine list --json` with filters given as keywords: sender, recipient, reason,
    subject, since ("2h"), direction ("inbound"), limit."""
    args = ["quarantine", "list", "--json"]
    for key, value in filters.items():
        args += [f"--{key}", str(value)]
    cp = daemon.ctl(*args)
    assert cp.returncode == 0, f"quarantine list failed ({cp.returncode}): {cp.stderr}{cp.stdout}"
    data = json.loads(cp.stdout)
    assert isinstance(data, list), f"quarantine list --json is not an array: {data!r}"
    return data


def quarantine_ids(daemon, **filters) -> list[str]:
    return [e["id"] for e in quarantine_list(daemon, **filters)]


def quarantine_show(daemon, qid: str, *args: str):
    """`quarantine show ID [args]` -> CompletedProcess (check returncode yourself)."""
    return daemon.ctl("quarantine", "show", qid, *args)


def quarantine_show_json(daemon, qid: str) -> dict:
    cp = quarantine_show(daemon, qid, "--json")
    assert cp.returncode == 0, f"quarantine show failed: {cp.stderr}{cp.stdout}"
    return json.loads(cp.stdout)


def quarantine_release(daemon, *ids: str, to: str | None = None):
    args = ["quarantine", "release", *ids, "--json"] + (["--to", to] if to else [])
    return daemon.ctl(*args)


def quarantine_delete(daemon, *ids: str):
    return daemon.ctl("quarantine", "delete", *ids)


def new_id(offset: int = 0) -> str:
    """A queue id as the daemon makes them (16 hex digits of a microsecond clock)."""
    return f"{time.time_ns() // 1000 + offset:016X}"


def plant_entry(daemon, raw: bytes, *, qid: str | None = None, sender: str = SENDER,
                rcpts=("alice@example.com",), subject: str = "hello", reason: str = "macro invoice",
                stage: str = "rule:invoices", direction: str = "inbound", score: float | None = 5.0,
                quarantined_at: int | None = None, pending: dict | None = None) -> str:
    """Writes one entry in the documented on-disk format (the daemon must be stopped)."""
    assert not daemon.running(), "plant entries while the daemon is stopped"
    qid = qid or new_id()
    messages = quarantine_dir(daemon) / "messages"
    messages.mkdir(parents=True, exist_ok=True)
    (messages / f"{qid}.eml").write_bytes(raw)
    record = {
        "id": qid,
        "envelope": {
            "sender": sender,
            "recipients": [{"address": r} for r in rcpts],
            "received_at": NOW() - 5,
            "client_addr": "192.0.2.7",
            "helo": "client.test",
            "subject": subject,
        },
        "why": {"stage": stage, "reason": reason, "score": score, "direction": direction},
        "quarantined_at": quarantined_at if quarantined_at is not None else NOW() - 5,
        "size": len(raw),
        "releases": [],
        "generation": 0,
    }
    if pending is not None:
        record["pending"] = pending
    (messages / f"{qid}.json").write_text(json.dumps(record))
    return qid


def message(subject: str, tag: str) -> tuple[bytes, str]:
    m = mid(tag)
    return make_message(subject=subject, body=f"body of {tag}", message_id=m), m


def assert_fails(cp, *needles: str) -> None:
    assert cp.returncode != 0, f"expected a failure, got success: {cp.stdout}"
    for needle in needles:
        assert needle.lower() in (cp.stderr + cp.stdout).lower(), f"{needle!r} not in {cp.stderr!r}"


# --------------------------------------------------------------------------------------------
# An empty store, unknown ids, bad arguments
# --------------------------------------------------------------------------------------------


def test_empty_store_lists_nothing_in_json_and_text(daemon):
    assert quarantine_list(daemon) == []
    assert quarantine_list(daemon, sender="x", recipient="y", reason="z", subject="s",
                           since="2h", direction="inbound", limit=5) == []
    cp = daemon.ctl("quarantine", "list")
    assert cp.returncode == 0 and "empty" in cp.stdout.lower(), cp.stdout
    # The store and its index exist under [quarantine] dir from the start.
    assert (quarantine_dir(daemon) / "messages").is_dir()
    assert (quarantine_dir(daemon) / "index.sqlite").is_file()


def test_unknown_and_malformed_ids_are_refused(daemon):
    unknown = new_id()
    for cp in (quarantine_show(daemon, unknown), quarantine_release(daemon, unknown),
               quarantine_delete(daemon, unknown)):
        assert_fails(cp, f"no message {unknown} in the quarantine")
    assert_fails(quarantine_show(daemon, "not-an-id"), "not a queue id")
    assert_fails(daemon.ctl("quarantine", "release"), "at least one")
    assert_fails(daemon.ctl("quarantine", "delete"), "at least one")
    assert_fails(daemon.ctl("quarantine", "list", "--direction", "sideways"), "inbound or outbound")
    assert_fails(daemon.ctl("quarantine", "list", "--since", "soon"), "--since")
    assert daemon.running()


def test_bad_quarantine_settings_are_config_errors_with_position(tmp_path):
    d = Daemon(tmp_path, "badq", quarantine={"retention": 0})
    cp = check_config(d.config_path)
    assert cp.returncode != 0
    assert "quarantine.retention" in cp.stderr and "must not be 0" in cp.stderr, cp.stderr
    assert re.search(r":\d+:\d+: quarantine\.retention", cp.stderr), cp.stderr


def test_an_unusable_quarantine_dir_stops_the_start(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    d = Daemon(tmp_path, "noq", quarantine={"dir": str(blocker / "quarantine")})
    with pytest.raises(DaemonError):
        d.start(timeout=5)
    d.stop()
    assert "cannot open the quarantine" in d.log(), d.log()[-2000:]


# --------------------------------------------------------------------------------------------
# Entries restored from files: listing, filters, JSON shape, show, download
# --------------------------------------------------------------------------------------------


@pytest.fixture
def stocked(start_daemon, tmp_path):
    """A daemon whose quarantine holds three entries (restored from files before start)."""
    d = start_daemon(tmp_path)
    d.stop()
    raw1, _ = message("Invoice 7", "q1")
    raw2, _ = message("Weekly news", "q2")
    raw3, _ = message("Quarterly report", "q3")
    ids = [
        plant_entry(d, raw1, qid=new_id(0), sender="bills@partner.example", subject="Invoice 7",
                    reason="macro invoice"),
        plant_entry(d, raw2, qid=new_id(1), sender="news@list.example", rcpts=["bob@example.com"],
                    subject="Weekly news", reason="bulk mail", score=None),
        plant_entry(d, raw3, qid=new_id(2), sender="alice@example.com", rcpts=["x@far.example"],
                    subject="Quarterly report", reason="outbound secret", direction="outbound",
                    stage="rule:dlp"),
    ]
    d.start()
    return d, ids, [raw1, raw2, raw3]


def test_restored_entries_are_indexed_and_listed_with_the_json_contract(stocked):
    d, ids, raws = stocked
    listed = quarantine_list(d)
    assert [e["id"] for e in listed] == ids[::-1], "newest first"
    first = next(e for e in listed if e["id"] == ids[0])
    for key in ("id", "sender", "recipients", "subject", "reason", "received_at", "size",
                "direction", "stage", "score", "state", "quarantined_at"):
        assert key in first, f"{key} missing from {first}"
    assert first["sender"] == "bills@partner.example"
    assert first["recipients"] == ["alice@example.com"]
    assert first["subject"] == "Invoice 7"
    assert first["size"] == len(raws[0])
    assert first["state"] == "quarantined"
    assert first["direction"] == "inbound"
    assert first["score"] == 5.0


def test_list_filters(stocked):
    d, (invoice, news, report), _ = stocked
    assert quarantine_ids(d, sender="PARTNER.example") == [invoice]
    assert quarantine_ids(d, recipient="bob@") == [news]
    assert quarantine_ids(d, reason="bulk") == [news]
    assert quarantine_ids(d, subject="invoice") == [invoice]
    assert quarantine_ids(d, direction="outbound") == [report]
    assert quarantine_ids(d, direction="inbound", sender="example") == [news, invoice]
    assert quarantine_ids(d, since="1h") == [report, news, invoice]
    assert quarantine_ids(d, limit=1) == [report]
    assert quarantine_ids(d, sender="nobody-sends-this") == []


def test_show_prints_why_and_the_message_and_raw_downloads_it_exactly(stocked):
    d, (invoice, _, _), raws = stocked
    cp = quarantine_show(d, invoice)
    assert cp.returncode == 0, cp.stderr
    assert "reason: macro invoice" in cp.stdout
    assert "stage: rule:invoices" in cp.stdout
    assert "Subject: Invoice 7" in cp.stdout
    assert "body of q1" in cp.stdout
    shown = quarantine_show_json(d, invoice)
    assert shown["entry"]["id"] == invoice
    assert shown["record"]["envelope"]["sender"] == "bills@partner.example"
    # Bytes, not text: the download must be the message exactly (ids are case-insensitive).
    out = subprocess.run([BULWARKCTL, "--socket", str(d.control_socket), "quarantine", "show",
                          invoice.lower(), "--raw"], capture_output=True, timeout=20,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0
    assert out.stdout == raws[0], "the download is not the message byte for byte"


def test_the_index_is_rebuilt_when_deleted(stocked):
    d, ids, _ = stocked
    d.stop()
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (quarantine_dir(d) / name).unlink(missing_ok=True)
    d.start()
    assert sorted(quarantine_ids(d)) == sorted(ids)


def test_delete_removes_the_entry_and_its_files(stocked):
    d, (invoice, news, report), _ = stocked
    cp = quarantine_delete(d, invoice, news)
    assert cp.returncode == 0, cp.stderr
    assert quarantine_ids(d) == [report]
    messages = quarantine_dir(d) / "messages"
    assert not (messages / f"{invoice}.eml").exists()
    assert not (messages / f"{invoice}.json").exists()
    assert_fails(quarantine_delete(d, invoice), "no message")
    d.restart()
    assert quarantine_ids(d) == [report], "a deleted entry came back after a restart"


def test_retention_purges_expired_entries_at_start(start_daemon, tmp_path):
    d = start_daemon(tmp_path, quarantine={"retention": "1d"})
    d.stop()
    old = plant_entry(d, make_message(subject="old"), qid=new_id(0), quarantined_at=NOW() - 2 * 86400)
    fresh = plant_entry(d, make_message(subject="fresh"), qid=new_id(1))
    d.start()
    wait_until(lambda: quarantine_ids(d) == [fresh], 10, what="the expired entry purged")
    assert not (quarantine_dir(d) / "messages" / f"{old}.eml").exists()
    assert "purged 1 expired" in d.log()


def test_retention_purges_while_running(start_daemon, tmp_path):
    d = start_daemon(tmp_path, quarantine={"retention": "3s"})
    d.stop()
    qid = plant_entry(d, make_message(subject="short-lived"))
    d.start()
    wait_until(lambda: quarantine_ids(d) == [], 15, what="the entry purged after 3s")
    assert not (quarantine_dir(d) / "messages" / f"{qid}.json").exists()


# --------------------------------------------------------------------------------------------
# Release: delivered exactly once through the queue, refused the second time
# --------------------------------------------------------------------------------------------


@pytest.fixture
def releasing(start_mta, sink, tmp_path):
    """A daemon routing example.com to smtp-sink `hop`, with one two-recipient entry."""
    require_smtp_sink()
    hop = sink("hop")
    d = start_mta(tmp_path, [route(["example.com"], [hop]), route(["other.org"], [sink("bounces")])])
    d.stop()
    raw, m = message("Invoice 9", "rel")
    qid = plant_entry(d, raw, rcpts=["alice@example.com", "bob@example.com"], subject="Invoice 9")
    d.start()
    return d, hop, qid, m


def test_release_delivers_exactly_once_and_a_second_release_is_refused(releasing):
    d, hop, qid, m = releasing
    cp = quarantine_release(d, qid)
    assert cp.returncode == 0, cp.stderr
    result = json.loads(cp.stdout)["released"][0]
    assert result["id"] == qid and result["recipients"] == ["alice@example.com", "bob@example.com"]
    got = hop.wait_for(1, settle=1.0)
    assert len(got) == 1 and got[0].message_id == m, got
    assert sorted(got[0].rcpts) == ["alice@example.com", "bob@example.com"]
    assert quarantine_list(d)[0]["state"] == "released"
    assert_fails(quarantine_release(d, qid), "already released")
    d.restart()
    assert_fails(quarantine_release(d, qid), "already released")
    assert_no_new_messages(hop, 2.0, already=1, what="after a refused second release")


def test_release_to_one_original_recipient(releasing):
    d, hop, qid, m = releasing
    assert_fails(quarantine_release(d, qid, to="analyst@example.com"), "not a recipient")
    cp = quarantine_release(d, qid, to="Bob@example.com")
    assert cp.returncode == 0, cp.stderr
    got = hop.wait_for(1, settle=0.5)
    assert got[0].rcpts == ["bob@example.com"], got
    assert quarantine_list(d)[0]["state"] == "partly-released"
    assert_fails(quarantine_release(d, qid, to="bob@example.com"), "already released")
    cp = quarantine_release(d, qid)
    assert cp.returncode == 0, cp.stderr
    got = hop.wait_for(2, settle=1.0)
    assert len(got) == 2 and got[1].rcpts == ["alice@example.com"], got
    assert quarantine_list(d)[0]["state"] == "released"


def test_a_release_survives_kill9_and_is_not_repeated(releasing):
    d, hop, qid, m = releasing
    # The next hop is down across the kill: a kill -9 in the middle of a delivery may repeat
    # that delivery (the spool's at-least-once window), which is not what this test is about.
    hop.stop()
    assert quarantine_release(d, qid).returncode == 0
    d.kill9()
    d.start()
    hop.start()
    got = hop.wait_for(1, settle=1.0)
    assert [g.message_id for g in got] == [m]
    assert quarantine_list(d)[0]["state"] == "released"
    assert_fails(quarantine_release(d, qid), "already released")
    assert_no_new_messages(hop, 2.0, already=1, what="after kill -9 and restart")


def test_a_release_cut_short_before_its_copy_was_queued_is_quarantined_again(start_daemon, tmp_path):
    d = start_daemon(tmp_path)
    d.stop()
    qid = plant_entry(d, make_message(subject="interrupted"), pending={
        "recipients": ["alice@example.com"], "queue_id": new_id(-10_000_000), "at": NOW()})
    d.start()
    wait_until(lambda: quarantine_list(d)[0]["state"] == "quarantined", 5,
               what="the interrupted release undone")
    assert "was interrupted by a crash" in d.log()
    assert quarantine_release(d, qid).returncode == 0
    assert len(d.queue_list()) == 1, "the release did not queue its copy"


# --------------------------------------------------------------------------------------------
# The operator's hold is durable; damaged state logs are reported
# --------------------------------------------------------------------------------------------


def test_a_hold_survives_kill9(daemon):
    qid = queue_id_of(send_mail(daemon.port, rcpts=["alice@example.com"], message=make_message()))
    cp = daemon.ctl("queue", "hold", qid)
    assert cp.returncode == 0, cp.stderr
    state_log = daemon.spool_dir / "queue" / f"{qid}.st"
    assert b'"hold"' in state_log.read_bytes()
    daemon.kill9()
    daemon.start()
    assert daemon.queue_entry(qid)["state"] == "hold"


def test_a_damaged_state_log_is_reported_and_its_message_held(daemon):
    qid = queue_id_of(send_mail(daemon.port, rcpts=["alice@example.com"], message=make_message()))
    assert daemon.ctl("queue", "hold", qid).returncode == 0
    assert daemon.ctl("queue", "release", qid).returncode == 0
    daemon.stop()
    state_log = daemon.spool_dir / "queue" / f"{qid}.st"
    state_log.write_bytes(b"{damaged\n" + state_log.read_bytes())
    daemon.start()
    status = json.loads(daemon.ctl("status", "--json").stdout)
    assert status["spool"]["recovery_problems"] == 1, status
    assert daemon.queue_entry(qid)["state"] == "hold"
    assert "damaged line" in daemon.log()
    assert "damaged state log" in daemon.ctl("status").stdout


# --------------------------------------------------------------------------------------------
# End to end: a [[rule]] with action "quarantine"
# --------------------------------------------------------------------------------------------


def rules_toml(*rules: dict) -> str:
    from conftest import to_toml
    return to_toml({"rule": list(rules)})


INVOICE_RULE = {"name": "invoices", "direction": "inbound", "subject": "(?i)invoice",
                "action": "quarantine", "reason": "macro invoice"}


@pytest.fixture
def filtering(start_mta, sink, tmp_path):
    """Factory: filtering(*rules, **daemon_kw) -> (daemon, hop for example.com)."""
    require_smtp_sink()

    def _make(*rules, **kw):
        hop = sink("hop")
        d = start_mta(tmp_path, [route(["example.com"], [hop]), route(["other.org"], [sink("other")])],
                      extra_toml=rules_toml(*rules), **kw)
        return d, hop

    return _make


def send_subject(d, subject: str, rcpts=("alice@example.com",), tag: str = "e2e") -> tuple[str, str]:
    """Sends one message; returns (queue id of the 250, Message-ID)."""
    m = mid(tag)
    reply = send_mail(d.port, rcpts=list(rcpts),
                      message=make_message(subject=subject, message_id=m, to=rcpts[0]))
    return queue_id_of(reply), m


def test_a_rule_quarantines_and_the_entry_survives_kill9_right_after_the_250(filtering):
    d, hop = filtering(INVOICE_RULE)
    qid, m = send_subject(d, "Your INVOICE", tag="kill9")
    d.kill9()
    d.start()
    listed = quarantine_list(d)
    assert [e["id"] for e in listed] == [qid], "the quarantine id is not the 250's queue id"
    entry = listed[0]
    assert entry["reason"] == "macro invoice" and entry["stage"] == "rule:invoices", entry
    assert entry["direction"] == "inbound" and entry["state"] == "quarantined"
    assert entry["recipients"] == ["alice@example.com"] and entry["subject"] == "Your INVOICE"
    assert d.queue_list() == [], "a quarantined message was queued"
    raw = subprocess.run([BULWARKCTL, "--socket", str(d.control_socket), "quarantine", "show", qid,
                          "--raw"], capture_output=True, timeout=20, stdin=subprocess.DEVNULL).stdout
    assert raw.startswith(b"Received: "), raw[:200]
    assert m.encode() in raw
    # Not delivered while quarantined; delivered exactly once when released, past the rule.
    assert_no_new_messages(hop, 1.0, what="while quarantined")
    assert quarantine_release(d, qid).returncode == 0
    got = hop.wait_for(1, settle=1.0)
    assert [g.message_id for g in got] == [m] and got[0].rcpts == ["alice@example.com"]
    assert_fails(quarantine_release(d, qid), "already released")
    d.kill9()
    d.start()
    assert_fails(quarantine_release(d, qid), "already released")
    assert_no_new_messages(hop, 2.0, already=1, what="after a second release and a restart")


def test_only_matching_mail_and_only_its_direction_is_quarantined(filtering):
    d, hop = filtering(INVOICE_RULE, {"name": "dlp", "direction": "outbound", "subject": "secret",
                                      "action": "quarantine", "reason": "outbound secret"})
    invoice, _ = send_subject(d, "invoice 1", tag="inv")
    _, lunch = send_subject(d, "lunch?", tag="lunch")
    _, secret_in = send_subject(d, "secret plans", tag="sec")  # inbound: the dlp rule does not apply
    got = hop.wait_for(2, settle=1.0)
    assert sorted(g.message_id for g in got) == sorted([lunch, secret_in])
    assert quarantine_ids(d) == [invoice]
    assert quarantine_ids(d, reason="macro", direction="inbound", sender="sender@other") == [invoice]
    assert quarantine_ids(d, direction="outbound") == []


def test_per_recipient_rule_quarantines_only_its_recipients(filtering):
    d, hop = filtering({"name": "bob's invoices", "to": ["bob@example.com"], "subject": "invoice",
                        "action": "quarantine", "reason": "bob"})
    qid, m = send_subject(d, "invoice 2", rcpts=["alice@example.com", "bob@example.com"], tag="split")
    got = hop.wait_for(1, settle=1.0)
    assert got[0].rcpts == ["alice@example.com"], got
    listed = quarantine_list(d)
    assert len(listed) == 1 and listed[0]["recipients"] == ["bob@example.com"], listed
    assert quarantine_release(d, listed[0]["id"]).returncode == 0
    got = hop.wait_for(2, settle=1.0)
    assert got[1].rcpts == ["bob@example.com"] and got[1].message_id == m


def test_retention_purges_a_quarantined_message(filtering):
    d, _ = filtering(INVOICE_RULE, quarantine={"retention": "5s"})
    qid, _ = send_subject(d, "invoice 3", tag="purge")
    assert quarantine_ids(d) == [qid]
    wait_until(lambda: quarantine_ids(d) == [], 15, what="the quarantined message purged")
    assert not (quarantine_dir(d) / "messages" / f"{qid}.eml").exists()


def test_the_250_of_a_quarantined_message_leaves_only_after_both_files_are_synced(filtering):
    """Durability order in the kernel (kill -9 cannot show it: the page cache survives a killed
    process, not a power cut): message fsync, rename, directory fsync, then the same for the
    record, then the 250."""
    import shutil
    if not shutil.which("strace"):
        pytest.skip("strace is not installed (.ci/run installs it)")
    d, _ = filtering(INVOICE_RULE)
    out = d.dir / "strace.txt"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-y", "-s", "300", "-e",
                               "trace=fsync,fdatasync,rename,renameat,renameat2,write,sendto,sendmsg,writev",
                               "-o", str(out), "-p", str(d.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    replies = []
    try:
        wait_until(out.exists, 10, what="strace attached")
        time.sleep(0.5)
        if tracer.poll() is not None:
            pytest.skip(f"strace cannot attach here: {tracer.stderr.read().decode()[-300:]}")
        replies.append(send_subject(d, "invoice strace", tag="strace"))
        time.sleep(0.3)
    finally:
        tracer.terminate()
        tracer.wait(10)
    qid = replies[0][0]
    lines = out.read_text(errors="replace").splitlines()

    def at(start: int, what: str, *needles: str) -> int:
        for i in range(start, len(lines)):
            if all(n in lines[i] for n in needles) and (
                    lines[i].rstrip().endswith("= 0") or "queued as" in lines[i]):
                return i
        raise AssertionError(f"no {what} after line {start}:\n" + "\n".join(lines[start:start + 40]))

    message_synced = at(0, "fsync of the message", "fsync(", f"/quarantine/tmp/{qid}.eml")
    message_renamed = at(message_synced, "rename of the message", "rename", f"/quarantine/messages/{qid}.eml")
    dir_synced = at(message_renamed, "fsync of messages/", "fsync(", "/quarantine/messages>")
    record_synced = at(dir_synced, "fsync of the record", "fsync(", f"/quarantine/tmp/{qid}.json")
    record_renamed = at(record_synced, "rename of the record", "rename", f"/quarantine/messages/{qid}.json")
    dir_synced_again = at(record_renamed, "second fsync of messages/", "fsync(", "/quarantine/messages>")
    acked = at(0, "the 250 reply", "queued as")
    assert dir_synced_again < acked, (message_synced, record_renamed, dir_synced_again, acked)
