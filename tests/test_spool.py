"""The spool: what got 250 survives kill -9, no half messages, unique ids, bounded memory,
hold/release/delete that persist."""

import re
import threading
import time

from conftest import CRLF, RawSession, dot_stuff, expect, make_message, queue_id_of, send_mail


def message_id_in(text: str) -> str | None:
    m = re.search(r"^Message-ID:\s*(<[^>]+>)", text, re.M | re.I)
    return m.group(1) if m else None


def test_acknowledged_messages_survive_kill9(daemon):
    sent: dict[str, str] = {}  # queue id -> Message-ID
    n = 0
    for conn in range(5):
        with RawSession(daemon.port) as s:
            expect(s.greeting(), 220)
            expect(s.ehlo(), 250)
            for _ in range(10):
                mid = f"<durable-{n}@other.org>"
                n += 1
                reply = s.mail_transaction("sender@other.org", ["alice@example.com"],
                                           make_message(subject=f"durable {n}", message_id=mid))
                sent[queue_id_of(reply)] = mid
            s.cmd("QUIT")
    assert len(sent) == 50, "queue ids repeated"
    daemon.kill9()
    daemon.restart()
    listed = {e["id"].lower(): e for e in daemon.queue_list()}
    missing = [q for q in sent if q.lower() not in listed]
    assert not missing, f"{len(missing)} acknowledged messages lost after kill -9: {missing[:5]}"
    for qid, mid in sent.items():
        entry = listed[qid.lower()]
        if "message_id" in entry:
            assert entry["message_id"].strip("<>") == mid.strip("<>"), entry
        else:
            assert message_id_in(daemon.queue_show(qid)) == mid


LAST_LINE = "THIS-IS-THE-LAST-LINE"


def big_message(i: int, size: int) -> bytes:
    line = b"z" * 70 + CRLF
    body = line * (size // len(line))
    return (f"Subject: big {i}\r\nMessage-ID: <big-{i}@other.org>\r\n\r\n".encode() + body +
            f"{LAST_LINE} {i}\r\n".encode())


def test_kill9_mid_data_loses_nothing_acknowledged(daemon):
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int):
        i = 0
        try:
            with RawSession(daemon.port, timeout=15) as s:
                s.greeting()
                s.ehlo()
                while not stop.is_set() and i < 20:
                    s.cmd("MAIL FROM:<sender@other.org>")
                    s.cmd("RCPT TO:<alice@example.com>")
                    if s.cmd("DATA")[0] != 354:
                        return
                    wire = dot_stuff(big_message(worker * 100 + i, 1_500_000))
                    for off in range(0, len(wire), 64 * 1024):
                        s.send(wire[off:off + 64 * 1024])
                        time.sleep(0.002)
                    qid = queue_id_of(s.read_reply())
                    with lock:
                        acked.append(qid)
                    i += 1
        except (ConnectionError, TimeoutError, OSError, AssertionError):
            return

    def staller():
        # one client that is certainly mid-DATA at the kill
        try:
            with RawSession(daemon.port, timeout=15) as s:
                s.greeting()
                s.ehlo()
                s.cmd("MAIL FROM:<sender@other.org>")
                s.cmd("RCPT TO:<alice@example.com>")
                s.cmd("DATA")
                s.send(b"Subject: half\r\n\r\n" + b"half a message\r\n" * 1000)
                stop.wait(20)
        except (ConnectionError, TimeoutError, OSError):
            return

    threads = [threading.Thread(target=sender, args=(w,), daemon=True) for w in range(3)]
    threads.append(threading.Thread(target=staller, daemon=True))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with lock:
            if len(acked) >= 4:
                break
        time.sleep(0.05)
    time.sleep(0.1)  # let the senders get into the middle of their next messages
    daemon.kill9()
    stop.set()
    for t in threads:
        t.join(20)
    with lock:
        acknowledged = list(acked)
    assert len(acknowledged) >= 1, "no message was acknowledged before the kill"
    daemon.restart()
    listed = daemon.queue_list()
    listed_ids = {e["id"].lower() for e in listed}
    lost = [q for q in acknowledged if q.lower() not in listed_ids]
    assert not lost, f"acknowledged messages lost: {lost}"
    for entry in listed:
        body = daemon.queue_show(entry["id"], body=True)
        assert "Subject: half" not in body, f"half message {entry['id']} survived the kill"
        last = body.rstrip("\r\n").rsplit("\n", 1)[-1].rstrip("\r")
        assert last.startswith(LAST_LINE), f"{entry['id']} is truncated: ends with {last[-80:]!r}"


def test_queue_ids_unique_across_restarts(daemon):
    ids = []

    def send_some(k):
        with RawSession(daemon.port) as s:
            s.greeting()
            s.ehlo()
            for _ in range(k):
                ids.append(queue_id_of(s.mail_transaction("a@other.org", ["alice@example.com"], make_message())))

    send_some(5)
    daemon.restart()
    send_some(5)
    daemon.kill9()
    daemon.restart()
    send_some(5)
    assert len(set(i.lower() for i in ids)) == 15, f"repeated queue ids: {ids}"
    assert {i.lower() for i in ids} <= {i.lower() for i in daemon.queue_ids()}


def test_large_message_memory_bounded(daemon):
    """A 30 MB message is streamed to disk, not held in memory."""
    size = 30 * 1024 * 1024
    line = b"m" * 76 + CRLF
    body = line * (size // len(line))
    with RawSession(daemon.port, timeout=60) as s:
        s.greeting()
        s.ehlo()
        expect(s.cmd(f"MAIL FROM:<a@other.org> SIZE={size + 1000}"), 250)
        expect(s.cmd("RCPT TO:<alice@example.com>"), 250)
        expect(s.cmd("DATA"), 354)
        s.send(b"Subject: large\r\n\r\n")
        for off in range(0, len(body), 1 << 20):
            s.sock.sendall(body[off:off + (1 << 20)])
        s.send(b".\r\n")
        qid = queue_id_of(s.read_reply(timeout=60))
    hwm_mb = daemon.vm_hwm_kb() / 1024
    assert hwm_mb < 60, f"bulwarkd peak RSS {hwm_mb:.1f} MB after a 30 MB message"
    entry = daemon.queue_entry(qid)
    assert entry and entry["size"] >= size, entry


def test_hold_release_delete_persist(daemon):
    a = queue_id_of(send_mail(daemon.port, message=make_message(subject="a")))
    b = queue_id_of(send_mail(daemon.port, message=make_message(subject="b")))
    assert daemon.ctl("queue", "hold", a).returncode == 0
    assert daemon.queue_entry(a)["state"] == "hold"
    assert daemon.queue_entry(b)["state"] != "hold"
    daemon.restart()
    assert daemon.queue_entry(a)["state"] == "hold", "hold lost on restart"
    daemon.kill9()
    daemon.restart()
    assert daemon.queue_entry(a)["state"] == "hold", "hold lost on kill -9"
    assert daemon.ctl("queue", "release", a).returncode == 0
    assert daemon.queue_entry(a)["state"] != "hold"
    assert daemon.ctl("queue", "delete", b).returncode == 0
    assert daemon.queue_entry(b) is None
    daemon.restart()
    assert daemon.queue_entry(b) is None, "deleted message came back after restart"
    assert daemon.queue_entry(a)["state"] != "hold", "release lost on restart"

