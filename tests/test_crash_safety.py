"""Crash safety: kill -9 bulwarkd at random moments under load; nothing acknowledged is lost.

20 client threads send numbered messages (a fresh Message-ID per attempt, so a retry after a
kill never looks like a duplicate) and record every Message-ID that got 250 to end of data.
A killer thread sends SIGKILL at random points of the run and restarts the daemon on the
same spool each time. smtp-sink is the next hop. At the end every acknowledged Message-ID
must have reached the sink; duplicates are counted and printed.

Duplicates: SMTP cannot avoid them entirely (RFC 1047): the next hop has the message once it
has read the final dot, the daemon only once it has read the 250 and recorded the removal
(a "done" record in the spool's journal); a kill between the two redelivers. So only deliveries in flight at a kill can
duplicate: at most `max_connections` (the route's concurrent connections) per kill, which
is what is asserted. The issue's 0.1 % target holds per message only at a realistic kill
density: measured here 1.4-2.5 duplicates per kill (all 5 connections busy), so the dense run
(a kill every 100 messages) asserts the per-kill bound and a second run, 20 kills in 60,000
messages, asserts the rate stays under 0.1 % (measured 0.062 %).

Short mode (CI): 2,000 messages, 20 kills. Long mode: BULWARK_LONG=1 (20,000 messages,
60 kills); BULWARK_CRASH_MESSAGES / BULWARK_CRASH_KILLS override either.
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time

import pytest

from conftest import (RawSession, make_message, route, wait_queue_empty)

LONG = os.environ.get("BULWARK_LONG") == "1"
MESSAGES = int(os.environ.get("BULWARK_CRASH_MESSAGES") or (20_000 if LONG else 2_000))
KILLS = int(os.environ.get("BULWARK_CRASH_KILLS") or (60 if LONG else 20))
SESSIONS = 20
PER_SESSION = 10  # messages per SMTP session before QUIT
IN_FLIGHT = 5  # the route's concurrent delivery connections (its default)


class Load:
    """The client side: who got 250 for what, and how many attempts failed because of a kill."""

    def __init__(self, port: int, total: int):
        self.port = port
        self.total = total
        self.lock = threading.Lock()
        self.next_number = 0
        self.attempts = 0
        self.acked: list[str] = []
        self.failed_attempts = 0
        self.done = threading.Event()

    def take_number(self) -> int | None:
        with self.lock:
            if len(self.acked) >= self.total:
                return None
            self.attempts += 1
            return self.attempts

    def client(self, worker: int) -> None:
        while not self.done.is_set():
            try:
                with RawSession(self.port, timeout=15) as s:
                    if s.greeting()[0] != 220 or s.ehlo()[0] != 250:
                        raise ConnectionError("no greeting")
                    for _ in range(PER_SESSION):
                        n = self.take_number()
                        if n is None:
                            return
                        mid = f"<crash-{n}.w{worker}@client.test>"
                        reply = s.mail_transaction("sender@other.org", ["alice@example.com"],
                                                   make_message(subject=f"crash {n}", message_id=mid))
                        if reply[0] == 250:
                            with self.lock:
                                self.acked.append(mid)
                        else:
                            with self.lock:
                                self.failed_attempts += 1
                            break
                    try:
                        s.cmd("QUIT", timeout=2)
                    except (ConnectionError, TimeoutError, OSError):
                        pass
            except (ConnectionError, TimeoutError, OSError, AssertionError):
                # The daemon was killed under us (or is restarting): not acknowledged, retry.
                with self.lock:
                    self.failed_attempts += 1
                time.sleep(0.05)


# (messages, kills, duplicate-rate bound): the dense run bounds duplicates per kill; the
# issue's target (< 0.1 % with at least 20 kills) is checked at 60,000 messages (~1 min).
RUNS = [(MESSAGES, KILLS, None), (60_000, 20, 0.001)]


@pytest.mark.parametrize("messages,kill_count,max_rate", RUNS, ids=["dense", "target"])
def test_kill9_under_load_loses_nothing_acknowledged(tmp_path, start_mta, sink, messages, kill_count,
                                                     max_rate):
    next_hop = sink("next")
    daemon = start_mta(tmp_path, routes=[route(["example.com"], [next_hop], max_connections=IN_FLIGHT)],
                       limits={"max_sessions_per_client": 100},
                       delivery={"retry_initial": "1s", "retry_max": "1s"})
    load = Load(daemon.port, messages)
    rng = random.Random(int(os.environ.get("BULWARK_CRASH_SEED") or time.time()))
    # Kill points spread over the run, as fractions of the messages acknowledged so far.
    kill_points = sorted(rng.uniform(0.02, 0.98) * messages for _ in range(kill_count))
    kills = 0
    started = time.monotonic()
    threads = [threading.Thread(target=load.client, args=(w,), daemon=True) for w in range(SESSIONS)]
    for t in threads:
        t.start()
    try:
        for point in kill_points:
            while len(load.acked) < point and time.monotonic() - started < 600:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))  # land anywhere inside a transaction or delivery
            daemon.kill9()
            kills += 1
            daemon.start(timeout=20)
        for t in threads:
            t.join(600)
    finally:
        load.done.set()
    send_seconds = time.monotonic() - started
    assert kills == kill_count

    acked = list(load.acked)
    assert len(acked) >= messages, f"only {len(acked)} acknowledged"
    wait_queue_empty(daemon, timeout=180)
    received = next_hop.wait_for_ids(acked, timeout=60)
    counts = collections.Counter(m.message_id for m in received)
    lost = [mid for mid in acked if counts[mid] == 0]
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    unacked_delivered = len(set(counts) - set(acked))
    rate = duplicates / len(acked)
    print(f"\ncrash safety: {len(acked)} acknowledged in {send_seconds:.1f}s with {kills} kill -9, "
          f"{load.failed_attempts} client attempts cut off, {len(received)} delivered, "
          f"lost {len(lost)}, duplicates {duplicates} ({rate:.3%}, {duplicates / max(kills, 1):.1f} per kill), "
          f"delivered though never acknowledged {unacked_delivered}")
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
    assert duplicates <= kills * IN_FLIGHT, \
        f"{duplicates} duplicates: more than the {IN_FLIGHT} deliveries in flight at each of {kills} kills"
    assert len(received) == len(acked) + unacked_delivered + duplicates
    if max_rate is not None:
        assert rate < max_rate, f"duplicates {rate:.3%} of acknowledged messages (target {max_rate:.1%})"
    corrupt = daemon.spool_dir / "corrupt"
    assert not corrupt.exists() or not any(corrupt.iterdir()), \
        f"spool files set aside as corrupt: {list(corrupt.iterdir())}"
