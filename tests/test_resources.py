"""Resource exhaustion: a full spool filesystem, file descriptor exhaustion, slowloris.

- Full disk: the spool lives on a 2 MiB tmpfs mounted by the test (root only; unmounted in
  every path). While full, end of data is answered 452 4.3.1; nothing corrupt stays in the
  spool (every queued file decodes after a restart, no draft is left in tmp/); once the
  queue drains to the next hop, mail is accepted again. Twice: 200 KB messages (files of their
  own) on the bare tmpfs, and 1 KB messages (the spool's journal) with a filler file taking
  all but 24 KB.
- FD exhaustion: bulwarkd runs with RLIMIT_NOFILE 64 and the test opens 300 connections; the
  daemon must not die or spin, and serves normally once they close.
- Slowloris: SLOW idle connections (2,000 in CI, 10,000 with BULWARK_LONG=1) spread over
  127.0.0.2..127.0.0.201 (max_sessions_per_client keeps each address's share bounded);
  a normal client on 127.0.0.1 still gets 220 and delivers.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import time

import pytest

from conftest import (RawSession, assert_every_entry_scheduled, make_message, route, send_mail,
                      wait_queue_empty, wait_until)

LONG = os.environ.get("BULWARK_LONG") == "1"
SLOW = 10_000 if LONG else 2_000

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def small_tmpfs(path, size: str = "2m"):
    path.mkdir(parents=True, exist_ok=True)
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True, text=True, timeout=20)
    if cp.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {cp.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def mta_with_spool_on(fs, tmp_path, start_mta, sink):
    """A daemon whose spool is on `fs` and whose next hop is down (the queue only grows)."""
    next_hop = sink("next", start=False)
    # No free-space reserve: these tests are about what happens when the disk really fills.
    daemon = start_mta(tmp_path, routes=[route(["example.com"], [next_hop])],
                       server={"spool_dir": str(fs / "spool"), "min_free_space": 0},
                       delivery={"retry_initial": "1s", "retry_max": "1s"})
    return daemon, next_hop


def send_until_full(daemon, message_for, tries: int, what: str) -> int:
    """Sends message_for(i) until the daemon refuses one, which must be 452 4.3.1 (a full
    spool); returns how many got 250 before that (at least one)."""
    accepted, full_reply = 0, None
    for i in range(tries):
        code, text = send_mail(daemon.port, message=message_for(i))
        if code == 250:
            accepted += 1
            continue
        full_reply = (code, text)
        break
    assert full_reply is not None, f"{what} never filled up"
    assert full_reply[0] == 452 and full_reply[1].startswith("4.3.1"), \
        f"full spool answered {full_reply}, not 452 4.3.1"
    assert accepted >= 1
    return accepted


def recovers_exactly_then_drains(daemon, next_hop, accepted: int, make_room, message=None) -> None:
    """A restart on the full disk recovers exactly what was acknowledged; once make_room()
    frees space and the next hop takes the mail, mail is accepted again."""
    daemon.restart()
    assert len(daemon.queue_list()) == accepted
    assert_every_entry_scheduled(daemon)
    make_room()
    wait_queue_empty(daemon, timeout=60)
    assert next_hop.count() == accepted
    code, text = send_mail(daemon.port, message=message)
    assert code == 250, f"after space returned: {code} {text}"
    daemon.stop()


@root_only
def test_full_spool_answers_452_keeps_nothing_corrupt_and_recovers(tmp_path, start_mta, sink):
    with small_tmpfs(tmp_path / "fs") as fs:
        daemon, next_hop = mta_with_spool_on(fs, tmp_path, start_mta, sink)
        body = "x" * 76 + "\n"
        big = make_message(subject="filler", body=body * 2500)  # ~200 KB
        accepted = send_until_full(daemon, lambda i: big, 40, "a 2 MiB spool")
        # Still full: refused again, and the daemon is alive.
        code, text = send_mail(daemon.port, message=big)
        assert code == 452, f"second try on a full spool: {code} {text}"
        assert not list((fs / "spool" / "tmp").iterdir()), "a refused draft was left in tmp/"
        corrupt = fs / "spool" / "corrupt"
        # Space returns when the next hop takes the mail.
        recovers_exactly_then_drains(daemon, next_hop, accepted, next_hop.start, message=big)
        assert not corrupt.exists() or not any(corrupt.iterdir()), list(corrupt.iterdir())


@root_only
def test_full_disk_under_the_journal_answers_452_and_recovers(tmp_path, start_mta, sink):
    # Small messages go to the spool's journal, not to files of their own: fill the disk
    # around the journal with a filler file, leaving room for a few of them.
    with small_tmpfs(tmp_path / "fs") as fs:
        daemon, next_hop = mta_with_spool_on(fs, tmp_path, start_mta, sink)
        free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
        filler = fs / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, free - 24 * 1024))

        def small(i):
            return make_message(subject=f"small {i}", body="x" * 76 + "\n" + "y" * 900)
        accepted = send_until_full(daemon, small, 100, "the journal's disk")
        # A failed journal write is cut off: a restart recovers exactly what got 250.

        def make_room():
            filler.unlink()
            next_hop.start()
        recovers_exactly_then_drains(daemon, next_hop, accepted, make_room)


@root_only
def test_free_space_reserve_refuses_new_mail_while_delivery_drains(tmp_path, start_mta, sink):
    """[server] min_free_space: once the spool's disk has less free, MAIL gets 452 4.3.1
    (before the disk is full, so nothing half-written); queued mail still goes out, and once
    it has, new mail is accepted again."""
    with small_tmpfs(tmp_path / "fs", size="8m") as fs:
        next_hop = sink("next", start=False)
        daemon = start_mta(tmp_path, routes=[route(["example.com"], [next_hop])],
                           server={"spool_dir": str(fs / "spool"), "min_free_space": "5M"},
                           delivery={"retry_initial": "1s", "retry_max": "1s"})
        big = make_message(subject="filler", body=("x" * 76 + "\n") * 2500)  # ~200 KB
        accepted, refused = 0, None
        for _ in range(40):
            with RawSession(daemon.port) as s:
                s.greeting()
                s.ehlo()
                reply = s.cmd("MAIL FROM:<sender@other.org>")
                if reply[0] != 250:
                    refused = reply
                    break
                s.cmd("RCPT TO:<alice@example.com>")
                code, text = s.data(big)
                assert code == 250, f"end of data refused above the reserve: {code} {text}"
                accepted += 1
        assert refused is not None, "the reserve never refused new mail"
        assert refused[0] == 452 and refused[1].startswith("4.3.1"), refused
        free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
        assert free >= 4 * 1024 * 1024, f"refused only at {free} bytes free: no reserve kept"
        assert 5 <= accepted <= 20, f"{accepted} messages of 200 KB accepted on an 8 MiB disk"
        assert "min_free_space" in daemon.log(), "the refusal was not logged with its reason"
        next_hop.start()  # delivery goes on below the reserve
        next_hop.wait_for(accepted, timeout=30)
        wait_queue_empty(daemon, timeout=30)
        code, text = send_mail(daemon.port, message=big)
        assert code == 250, f"after the queue drained: {code} {text}"
        daemon.stop()


def test_fd_exhaustion_daemon_survives_and_serves_again(tmp_path, start_daemon):
    daemon = start_daemon(tmp_path, limits={"max_sessions_per_client": 1000})
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (64, 64))
    cpu_before = cpu_seconds(daemon.pid)
    socks = []
    try:
        for _ in range(300):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", daemon.port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        time.sleep(3)  # the daemon sits at its limit with a full accept backlog
        assert daemon.running(), f"bulwarkd died at its fd limit; log:\n{daemon.log()[-3000:]}"
        spent = cpu_seconds(daemon.pid) - cpu_before
        assert spent < 2.5, f"bulwarkd burnt {spent:.1f}s of CPU in 3s at its fd limit (spinning)"
    finally:
        for s in socks:
            s.close()
    # Served again: the freed descriptors are reused, a whole transaction works.
    reply = wait_until(lambda: try_send(daemon.port), 20, what="a delivery after fd exhaustion")
    assert reply[0] == 250, reply
    assert daemon.running()
    assert_every_entry_scheduled(daemon)


def try_send(port: int):
    try:
        reply = send_mail(port)
    except (OSError, AssertionError, TimeoutError):
        return None
    return reply if reply[0] == 250 else None


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_slowloris_normal_client_still_served(tmp_path, start_daemon):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = SLOW + 500
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, soft), max(need, hard)))
        except (ValueError, OSError):
            pytest.skip(f"cannot raise RLIMIT_NOFILE to {need}")
    daemon = start_daemon(tmp_path, listeners=[{"role": "mx", "max_sessions": SLOW + 100}],
                          limits={"max_sessions_per_client": SLOW // 200 + 10,
                                  "command_timeout": "300s"})
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (need + 500, need + 500))
    socks = []
    started = time.monotonic()
    try:
        for i in range(SLOW):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((f"127.0.0.{2 + i % 200}", 0))
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", daemon.port))
            socks.append(s)
        opened = time.monotonic() - started
        time.sleep(1)
        t0 = time.monotonic()
        with RawSession(daemon.port, timeout=20) as s:
            code, _ = s.greeting()
            waited = time.monotonic() - t0
            assert code == 220, f"normal client got {code} behind {SLOW} idle connections"
        reply = send_mail(daemon.port, message=make_message(subject="through the crowd"))
        assert reply[0] == 250, reply
        assert daemon.running()
        print(f"\nslowloris: {SLOW} idle connections opened in {opened:.1f}s; normal client greeted "
              f"after {waited * 1000:.0f} ms")
    finally:
        for s in socks:
            s.close()
