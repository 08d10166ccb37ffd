"""Mail that could wait forever: every fault that stops a delivery attempt must still leave
the message with a next attempt (so it delivers, expires or bounces in time) or a state that
says why not. `assert_every_entry_scheduled` (conftest) walks the queue index; the fault tests
here and in test_outages.py / test_resources.py call it after each fault."""

import shutil
import time

from conftest import (assert_every_entry_scheduled, make_message, route, send_mail, wait_queue_empty,
                      wait_until)

BIG_BODY = "x" * 76 + "\n"  # 2,500 lines: ~200 KB, a spool file of its own (not the journal)


def test_spool_read_error_defers_with_a_retry_and_alerts(tmp_path, start_mta, sink):
    next_hop = sink("next", start=False)
    daemon = start_mta(tmp_path, routes=[route(["example.com"], [next_hop])],
                       delivery={"retry_initial": "1s", "retry_max": "1s"})
    code, text = send_mail(daemon.port, message=make_message(subject="big", body=BIG_BODY * 2500))
    assert code == 250, (code, text)
    entry = wait_until(lambda: [e for e in daemon.queue_list() if e["attempts"] >= 1], 15,
                       what="a first (failed) attempt at the down next hop")[0]
    spool_file = daemon.spool_dir / "queue" / entry["id"]
    assert spool_file.is_file(), f"a 200 KB message has no spool file of its own: {spool_file}"
    aside = tmp_path / "aside"
    shutil.move(spool_file, aside)  # the next attempt cannot read it (ENOENT, like EMFILE)
    wait_until(lambda: "ALERT" in daemon.log() and "cannot read the spool file" in daemon.log(), 15,
               what=lambda: f"an alert about the unreadable spool file; log:\n{daemon.log()[-2000:]}")
    failed_reads = daemon.log().count("cannot read the spool file")
    stuck = assert_every_entry_scheduled(daemon)
    assert len(stuck) == 1 and "cannot read the queued message" in (stuck[0]["last_error"] or ""), stuck
    # Still retried (not dropped): more failed reads come, each with a next attempt.
    wait_until(lambda: daemon.log().count("cannot read the spool file") > failed_reads, 10,
               what="a retry after the failed read")
    assert_every_entry_scheduled(daemon)
    # Once the file is back and the next hop is up, the message is delivered once.
    shutil.move(aside, spool_file)
    next_hop.start()
    next_hop.wait_for(1, timeout=20)
    wait_queue_empty(daemon, 15)
    time.sleep(1.0)
    assert next_hop.count() == 1, next_hop.messages()


def test_mail_at_a_down_destination_shows_the_probe_time(tmp_path, start_mta, sink):
    """A destination down after dead_destination_failures parks its jobs without attempts of
    their own: the index shows when the probe will run instead of nothing."""
    next_hop = sink("next", start=False)
    daemon = start_mta(tmp_path, routes=[route(["example.com"], [next_hop])],
                       delivery={"retry_initial": "30s", "retry_max": "60s",
                                 "dead_destination_failures": 1})
    for i in range(3):
        code, text = send_mail(daemon.port, message=make_message(subject=f"parked {i}"))
        assert code == 250, (code, text)
    wait_until(lambda: "is down" in daemon.log(), 15, what="the destination marked down")
    for i in range(2):  # these wait for the probe without an attempt of their own
        code, text = send_mail(daemon.port, message=make_message(subject=f"after down {i}"))
        assert code == 250, (code, text)
    entries = assert_every_entry_scheduled(daemon, grace=0)
    assert len(entries) == 5, entries
    assert all(e["next_attempt"] > time.time() + 5 for e in entries), entries
