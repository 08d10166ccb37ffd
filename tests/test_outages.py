"""Outages of the next hop: mail waits in the queue (no bounce, no delay warning before its
time) and is delivered exactly once when the next hop comes back.

- the next hop down (connection refused) for a while, then back;
- the next hop answering 421 at the greeting, hanging in the middle of DATA (the daemon's
  data_timeout must cut it off), closing the connection in the middle of DATA.

Short mode (CI): the outage lasts 8 s. BULWARK_LONG=1: 3 minutes, with the delay warning
due after 2 minutes.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from conftest import (ThreadedServer, assert_no_new_messages, free_port, make_message, parse_dsn, route, send_mail,
                      wait_queue_empty, wait_queue_len, wait_until, assert_every_entry_scheduled)

LONG = os.environ.get("BULWARK_LONG") == "1"
OUTAGE = 180.0 if LONG else 8.0
WARN_AFTER = 120 if LONG else 5
N = 5


def send_batch(daemon, tag: str, n: int = N) -> list[str]:
    ids = []
    for i in range(n):
        mid = f"<{tag}-{i}@client.test>"
        code, text = send_mail(daemon.port, message=make_message(subject=f"{tag} {i}", message_id=mid))
        assert code == 250, f"{tag} {i}: {code} {text}"
        ids.append(mid)
    return ids


def assert_once(sink_obj, ids: list[str]) -> None:
    got = sink_obj.wait_for_ids(ids, timeout=60)
    time.sleep(1.0)  # a late duplicate would show up now
    got = sink_obj.messages()
    for mid in ids:
        n = sum(1 for m in got if m.message_id == mid)
        assert n == 1, f"{mid} delivered {n} times"


def test_next_hop_down_then_back(tmp_path, start_mta, sink):
    """Refused connections for OUTAGE seconds: the queue builds, no bounce, the delay warning
    only once delay_warning has passed, then everything is delivered exactly once."""
    next_hop = sink("next", start=False)
    notices = sink("notices")  # where DSNs to the sender's domain go
    daemon = start_mta(tmp_path, routes=[route(["example.com"], [next_hop]),
                                         route(["other.org"], [notices])],
                       delivery={"delay_warning": f"{WARN_AFTER}s", "retry_initial": "1s",
                                 "retry_max": "2s"})
    accepted_at = time.monotonic()
    ids = send_batch(daemon, "down")
    wait_queue_len(daemon, N, timeout=10)
    # Before delay_warning: nothing at all reaches the sender.
    assert_no_new_messages(notices, WARN_AFTER - 1.0, what="notice before delay_warning")
    remaining = OUTAGE - (time.monotonic() - accepted_at)
    # After it: one delay warning per message (Action: delayed), never a failure.
    warnings = notices.wait_for(N, timeout=max(remaining, 5))
    assert len(warnings) == N, f"expected {N} delay warnings, got {warnings}"
    for m in warnings:
        actions = {r.get("action") for r in parse_dsn(m).recipients}
        assert actions == {"delayed"}, f"not a delay warning: {actions}"
    assert len(daemon.queue_list()) == N
    assert_every_entry_scheduled(daemon)
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - accepted_at)))
    next_hop.start()
    assert_once(next_hop, ids)
    wait_queue_empty(daemon, timeout=30)
    assert notices.count() == N, "a failure notice after the next hop came back"


class FaultyHop(ThreadedServer):
    """A next hop that misbehaves in one chosen way on every connection:
    `421` answers the greeting with 421; `hang` reads part of DATA and then neither reads nor
    answers; `close` reads part of DATA and closes. Counts the connections it saw."""

    def __init__(self, mode: str, port: int | None = None):
        super().__init__(port=port)
        self.mode = mode
        self.start()

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            if self.mode == "421":
                conn.sendall(b"421 4.3.2 faulty.test shutting down\r\n")
                conn.close()
                return
            conn.sendall(b"220 faulty.test ESMTP\r\n")
            buf = b""
            while not self._stop.is_set():
                while b"\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                line, buf = buf.split(b"\r\n", 1)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-faulty.test\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    conn.recv(10)  # some of the data, never the end
                    if self.mode == "close":
                        conn.close()
                        return
                    self._stop.wait(60)  # hang: read nothing more, answer nothing
                    return
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 2.0.0 ok\r\n")
        except OSError:
            return


@pytest.mark.parametrize("mode", ["421", "hang", "close"])
def test_faulty_next_hop_defers_then_delivers_once(tmp_path, start_mta, sink, mode):
    port = free_port()
    faulty = FaultyHop(mode, port)
    notices = sink("notices")
    try:
        daemon = start_mta(tmp_path, routes=[route(["example.com"], [f"127.0.0.1:{port}"]),
                                             route(["other.org"], [notices])],
                           delivery={"retry_initial": "1s", "retry_max": "1s", "data_timeout": "2s",
                                     "command_timeout": "2s"})
        ids = send_batch(daemon, f"faulty-{mode}", n=3)
        # Every message must have been tried and deferred by the daemon itself (for `hang`
        # that takes data_timeout), not released by the fault going away.
        wait_until(lambda: daemon.log().count("status=deferred") >= 3, 30,
                   what=lambda: f"3 deferrals at the {mode} next hop; log:\n{daemon.log()[-2000:]}")
        assert len(daemon.queue_list()) == 3, "messages left the queue while the next hop failed"
        assert notices.count() == 0, f"a notice while the next hop failed ({mode})"
        assert_every_entry_scheduled(daemon)
    finally:
        faulty.stop()
    fixed = sink("fixed", port=port)
    assert_once(fixed, ids)
    wait_queue_empty(daemon, timeout=30)
    assert notices.count() == 0, f"a notice after the next hop was fixed ({mode})"
    deferrals = [line for line in daemon.log().splitlines() if "status=deferred" in line]
    if mode == "hang":
        assert any("time" in line.lower() for line in deferrals), \
            f"the hung DATA was not cut off by data_timeout: {deferrals}"
