#!/usr/bin/env python3
"""Bulwark's benchmark suite: Bulwark and Postfix measured side by side in one run.

    sudo python3 bench/bench.py            # long run (documented in README; ~15 minutes)
    sudo python3 bench/bench.py --short    # CI: a quick smoke of every measurement (~2 minutes)
    sudo python3 bench/bench.py --short --profile debug   # smoke run, no release build

The harness (bulwarkd under test, relay-bench.sh, the Postfix peer) is bench/harness.py,
shared with av_bench.py and milter_bench.py.

End-to-end relay (Postfix's smtp-source -> MTA -> smtp-sink on loopback, 20 sessions, one
message per session as smtp-source sends them) uses the shared harness
../shared/bench/relay-bench.sh and ../shared/bench/postfix-setup.sh, which configure Postfix as
an equivalent relay with its shipped durability (fsync before 250). Bulwark and Postfix
alternate (B P B P ...) for each size, `--rounds` times; medians and the Bulwark/Postfix ratio
are printed and appended to bench/RESULTS.md with the machine, date and command.

Bulwark-only measurements in the same run: accept-only rate (deliveries held), p50/p99 time
from the end of DATA to 250, peak RSS and CPU seconds per 1,000 messages, RSS per idle session
at 1,000 and 10,000 concurrent sessions, and a 100,000-message queue built while the next hop
is down, then drained (drain rate, peak RSS).

Every loop here is bounded; all traffic stays on 127.0.0.0/8. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402  (shared with av_bench.py and milter_bench.py)
from harness import (BULWARK_PORT, SINK_PORT, Bulwark, log, relay_bench,  # noqa: E402
                     run)

REPO = h.REPO
RESULTS = h.RESULTS
RELEASE_BUILD = h.RELEASE_BUILD


def bulwark_relay(work: Path, count: int, size: int, extra_toml: str = "") -> dict[str, str]:
    b = Bulwark(work, extra_toml=extra_toml).start()
    try:
        fields = h.bulwark_relay(b, SINK_PORT, count, size, f"bulwark-{size}")
        fields["peak_rss_kb"] = str(b.rss_kb()[1])
        return fields
    finally:
        b.stop()


# --------------------------------------------------------------------------------------------
# Bulwark-only measurements
# --------------------------------------------------------------------------------------------

def smtp_exchange(sock: socket.socket, line: bytes, expect: bytes) -> None:
    sock.sendall(line)
    data = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", data):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    if not re.search(rb"(^|\r\n)" + expect + rb" ", data):
        raise RuntimeError(f"expected {expect!r}, got {data!r}")


def latency(work: Path, messages: int, clients: int) -> tuple[float, float]:
    """p50/p99 milliseconds from the end-of-data dot to the 250 reply (deliveries held)."""
    b = Bulwark(work, hold=True).start()
    samples: list[float] = []
    lock = threading.Lock()
    body = b"Subject: latency\r\n\r\n" + (b"x" * 76 + b"\r\n") * 13 + b".\r\n"

    def client(n: int) -> None:
        with socket.create_connection(("127.0.0.1", BULWARK_PORT), timeout=10) as s:
            s.recv(512)
            smtp_exchange(s, b"EHLO bench\r\n", b"250")
            for _ in range(n):
                smtp_exchange(s, b"MAIL FROM:<a@bench.test>\r\n", b"250")
                smtp_exchange(s, b"RCPT TO:<r@example.test>\r\n", b"250")
                smtp_exchange(s, b"DATA\r\n", b"354")
                start = time.perf_counter()
                smtp_exchange(s, body, b"250")
                with lock:
                    samples.append((time.perf_counter() - start) * 1000)
            s.sendall(b"QUIT\r\n")

    try:
        threads = [threading.Thread(target=client, args=(messages // clients,)) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        b.stop()
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def accept_only(work: Path, count: int, size: int) -> dict[str, str]:
    b = Bulwark(work, hold=True).start()
    try:
        return relay_bench(BULWARK_PORT, SINK_PORT, count, 20, size,
                           {"MTA_PIDS": str(b.proc.pid), "ACCEPT_ONLY": "1", "ALLOW_DIRTY": "1",
                            "LABEL": f"bulwark-accept-{size}"})
    finally:
        b.stop()


def idle_sessions(work: Path, counts: list[int]) -> dict[int, float]:
    """RSS growth per idle session (KB) with N sessions open, greeted and EHLO'd."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = {}
    for n in counts:
        b = Bulwark(work, hold=True, sessions=n + 100).start(nofile=n + 1000)
        socks = []
        try:
            base, _ = b.rss_kb()
            for i in range(n):
                s = socket.socket()
                # Spread the sources over 127.0.0.x to stay clear of ephemeral-port limits.
                s.bind((f"127.0.{1 + i // 20000}.{1 + (i // 250) % 250}", 0))
                s.settimeout(10)
                s.connect(("127.0.0.1", BULWARK_PORT))
                socks.append(s)
            for s in socks:
                s.recv(512)
                s.sendall(b"EHLO idle\r\n")
            for s in socks:
                s.recv(4096)
            time.sleep(1)
            rss, _ = b.rss_kb()
            out[n] = (rss - base) / n
            log(f"{n} idle sessions: RSS {rss / 1024:.1f} MB, {(rss - base) / n:.1f} KB per session")
        finally:
            for s in socks:
                s.close()
            b.stop()
    return out


def big_queue(work: Path, count: int) -> dict[str, float]:
    """Builds a queue of `count` messages while the next hop is down, then drains it."""
    b = Bulwark(work, sink_port=SINK_PORT).start()
    sink = None
    try:
        src = run(["smtp-source", "-s", "20", "-m", str(count), "-l", "1024", "-f", "a@bench.test",
                   "-t", "r@example.test", f"127.0.0.1:{BULWARK_PORT}"], timeout=1800)
        if src.returncode != 0:
            raise RuntimeError(src.stderr)
        built = b.queued()
        _, hwm_built = b.rss_kb()
        sink = subprocess.Popen(["smtp-sink", "-u", "root", "-c", f"127.0.0.1:{SINK_PORT}", "1000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        start = time.time()
        b.ctl("queue", "flush")
        deadline = start + 1800
        while b.queued() > 0 and time.time() < deadline:
            time.sleep(0.5)
        drained = time.time() - start
        _, hwm = b.rss_kb()
        return {"queued": built, "drain_s": drained, "drain_msg_s": built / drained,
                "rss_built_mb": hwm_built / 1024, "peak_rss_mb": hwm / 1024}
    finally:
        if sink:
            sink.terminate()
            sink.wait(10)
        b.stop()


# --------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_mode_arguments(parser, "a quick smoke of every measurement, 2,000 messages, 1 round",
                         "20,000 messages, 3 rounds")
    parser.add_argument("--sizes", default="1024,10240,102400")
    parser.add_argument("--skip-postfix", action="store_true")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.short else 3)
    count = args.count or (2000 if args.short else 20000)
    sizes = [int(s) for s in args.sizes.split(",")]
    if not h.preflight():
        return 2
    h.select_build(args)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    rows = []
    try:
        if not args.skip_postfix:
            h.postfix_start()
        for size in sizes:
            b_runs, p_runs = [], []
            for r in range(rounds):
                b_runs.append(bulwark_relay(work, count, size))
                log(f"bulwark {size} B round {r + 1}: {b_runs[-1].get('e2e_msg_s')} msg/s")
                if not args.skip_postfix:
                    p_runs.append(h.postfix_relay(count, size, f"postfix-{size}"))
                    log(f"postfix {size} B round {r + 1}: {p_runs[-1].get('e2e_msg_s')} msg/s")
            rows.append((size, b_runs, p_runs))
    finally:
        if not args.skip_postfix:
            h.postfix_stop()

    def med(runs, key):
        return h.median(r.get(key) for r in runs)

    lines = []
    lines.append(f"## {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC — "
                 f"`{h.command('bench.py', args)}`")
    lines.append("")
    lines.append(f"Machine: {h.machine(args)}; {count} messages, 20 sessions, {rounds} round(s), medians.")
    lines.append("")
    lines.append("| size | Bulwark msg/s | Postfix msg/s | ratio | Bulwark CPU ms/msg | Postfix CPU ms/msg | Bulwark peak RSS MB |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for size, b_runs, p_runs in rows:
        b, p = med(b_runs, "e2e_msg_s"), med(p_runs, "e2e_msg_s")
        bcpu = med(b_runs, "mta_cpu_s") / count * 1000
        pcpu = med(p_runs, "mta_cpu_s") / count * 1000
        rss = med(b_runs, "peak_rss_kb") / 1024
        lines.append(f"| {size // 1024} KB | {b:.0f} | {p:.0f} | {h.ratio(b, p)} | {bcpu:.2f} | {pcpu:.2f} | {rss:.1f} |")
    lines.append("")

    acc = accept_only(work, count, 1024)
    lines.append(f"- Accept-only (deliveries held), 1 KB: {float(acc['accept_msg_s']):.0f} msg/s")
    p50, p99 = latency(work, 400 if args.short else 4000, 20)
    lines.append(f"- End of DATA to 250 (20 clients, 1 KB, fsync'd): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    idle = idle_sessions(work, [1000] if args.short else [1000, 10000])
    for n, per in idle.items():
        lines.append(f"- {n} concurrent idle sessions: {per:.1f} KB RSS per session "
                     f"({per * n / 1024:.0f} MB for all)")
    q = big_queue(work, 10000 if args.short else 100000)
    lines.append(f"- Queue of {q['queued']} messages built with the next hop down "
                 f"(RSS {q['rss_built_mb']:.0f} MB), drained in {q['drain_s']:.1f} s = "
                 f"{q['drain_msg_s']:.0f} msg/s, peak RSS {q['peak_rss_mb']:.0f} MB")
    lines.append("")
    h.append_results("\n".join(lines) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
