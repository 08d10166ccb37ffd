#!/usr/bin/env python3
"""Bulwark's benchmark suite: Bulwark and Postfix measured side by side in one run.

    python3 bench/bench.py            # full run (documented in README; ~15 minutes)
    python3 bench/bench.py --short    # a quick smoke of every measurement (~2 minutes)

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
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCH = Path(os.environ.get("SHARED_BENCH", REPO.parent / "shared" / "bench"))
BULWARKD = REPO / "target" / "release" / "bulwarkd"
BULWARKCTL = REPO / "target" / "release" / "bulwarkctl"
RESULTS = REPO / "bench" / "RESULTS.md"

BULWARK_PORT, SINK_PORT = 2625, 2626
POSTFIX_PORT, POSTFIX_SINK_PORT = 2525, 2526


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def run(cmd: list[str] | str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


# --------------------------------------------------------------------------------------------
# Bulwark under test
# --------------------------------------------------------------------------------------------

class Bulwark:
    """A release bulwarkd relaying example.test to 127.0.0.1:SINK_PORT (or holding mail)."""

    def __init__(self, work: Path, hold: bool = False, sink_port: int = SINK_PORT,
                 sessions: int = 20000, extra_toml: str = ""):
        self.dir = Path(tempfile.mkdtemp(prefix="bulwark-bench-", dir=work))
        self.config = self.dir / "bulwark.toml"
        hop = "127.0.0.1:9" if hold else f"127.0.0.1:{sink_port}"
        delivery = ('retry_initial = "1h"\nretry_max = "2h"\ndead_destination_failures = 1\n'
                    if hold else 'retry_initial = "1s"\nretry_max = "5s"\n')
        self.config.write_text(f"""
[server]
hostname = "bench.test"
spool_dir = "{self.dir / 'spool'}"
control_socket = "{self.dir / 'ctl.sock'}"
[[listener]]
address = "127.0.0.1:{BULWARK_PORT}"
role = "mx"
max_sessions = {sessions}
[relay]
domains = ["example.test"]
trusted_networks = ["127.0.0.0/8"]
[limits]
max_sessions_per_client = {sessions}
# Each run its own tracking store: the built-in /var/lib/bulwark/tracking is shared by every
# run on the machine and grows, so a later run would measure a bigger store.
[tracking]
dir = "{self.dir / 'tracking'}"
[[route]]
domains = ["*"]
next_hops = ["{hop}"]
tls = "none"
max_connections = 20
[delivery]
{delivery}
[dns]
servers = ["127.0.0.1:9"]
{extra_toml}
""")
        self.proc: subprocess.Popen | None = None

    def start(self, nofile: int = 65536) -> "Bulwark":
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        wanted = min(nofile, hard) if hard != resource.RLIM_INFINITY else nofile

        def limits():
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        env = dict(os.environ, BULWARK_LOG="warn")
        self.proc = subprocess.Popen([str(BULWARKD), "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "w"),
                                     preexec_fn=limits, env=env)
        for _ in range(100):
            if (self.dir / "ctl.sock").exists() and port_open(BULWARK_PORT):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"bulwarkd did not start: {(self.dir / 'log').read_text()[-2000:]}")

    def ctl(self, *args: str) -> str:
        return run([str(BULWARKCTL), "--socket", str(self.dir / "ctl.sock"), *args]).stdout

    def queue_cmd(self) -> str:
        return (f"{BULWARKCTL} --socket {self.dir / 'ctl.sock'} status --json "
                "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"queue\"][\"messages\"])'")

    def queued(self) -> int:
        out = run(self.queue_cmd(), shell=True).stdout.strip()
        return int(out) if out.isdigit() else -1

    def rss_kb(self) -> tuple[int, int]:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        return rss, hwm

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2) as s:
            s.settimeout(1)
            s.recv(512)
            s.sendall(b"QUIT\r\n")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# End-to-end relay through the shared harness
# --------------------------------------------------------------------------------------------

def relay_bench(port: int, sink_port: int, count: int, sessions: int, size: int,
                env: dict[str, str]) -> dict[str, str]:
    script = SHARED_BENCH / "relay-bench.sh"
    result = run(["bash", str(script), str(port), str(sink_port), str(count), str(sessions), str(size)],
                 env={**os.environ, **env}, timeout=1800)
    line = next((l for l in result.stdout.splitlines() if l.startswith("RESULT")), "")
    if not line:
        raise RuntimeError(f"relay-bench failed: {result.stderr[-2000:]}")
    return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)


def bulwark_relay(work: Path, count: int, size: int, extra_toml: str = "") -> dict[str, str]:
    b = Bulwark(work, extra_toml=extra_toml).start()
    try:
        fields = relay_bench(BULWARK_PORT, SINK_PORT, count, 20, size,
                             {"MTA_PIDS": str(b.proc.pid), "QUEUE_CMD": b.queue_cmd(),
                              "LABEL": f"bulwark-{size}"})
        fields["peak_rss_kb"] = str(b.rss_kb()[1])
        return fields
    finally:
        b.stop()


def postfix_relay(count: int, size: int) -> dict[str, str]:
    setup = SHARED_BENCH / "postfix-setup.sh"
    queue_cmd = run(["bash", str(setup), "--queue-cmd"]).stdout.strip()
    return relay_bench(POSTFIX_PORT, POSTFIX_SINK_PORT, count, 20, size,
                       {"CGROUP": "mta-bench", "QUEUE_CMD": queue_cmd, "LABEL": f"postfix-{size}"})


def postfix_start() -> None:
    r = run(["bash", str(SHARED_BENCH / "postfix-setup.sh")], timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"postfix-setup failed: {r.stderr[-2000:]}")


def postfix_stop() -> None:
    run(["bash", str(SHARED_BENCH / "postfix-teardown.sh")], timeout=120)


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
    parser.add_argument("--short", action="store_true", help="a quick smoke of every measurement")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--sizes", default="1024,10240,102400")
    parser.add_argument("--skip-postfix", action="store_true")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.short else 3)
    count = args.count or (2000 if args.short else 20000)
    sizes = [int(s) for s in args.sizes.split(",")]
    if os.geteuid() != 0:
        log("run as root (Postfix setup, cgroups, file descriptor limits)")
        return 2
    if not (SHARED_BENCH / "relay-bench.sh").exists():
        log(f"missing {SHARED_BENCH}/relay-bench.sh (set SHARED_BENCH)")
        return 2
    subprocess.run(["cargo", "build", "--release", "--bins"], cwd=REPO, check=True)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    rows = []
    try:
        if not args.skip_postfix:
            postfix_start()
        for size in sizes:
            b_runs, p_runs = [], []
            for r in range(rounds):
                b_runs.append(bulwark_relay(work, count, size))
                log(f"bulwark {size} B round {r + 1}: {b_runs[-1].get('e2e_msg_s')} msg/s")
                if not args.skip_postfix:
                    p_runs.append(postfix_relay(count, size))
                    log(f"postfix {size} B round {r + 1}: {p_runs[-1].get('e2e_msg_s')} msg/s")
            rows.append((size, b_runs, p_runs))
    finally:
        if not args.skip_postfix:
            postfix_stop()

    def med(runs, key):
        values = [float(r[key]) for r in runs if r.get(key) not in (None, "NA")]
        return statistics.median(values) if values else float("nan")

    lines = []
    lines.append(f"## {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC — "
                 f"`python3 bench/bench.py{' --short' if args.short else ''}`")
    lines.append("")
    lines.append(f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; "
                 f"{count} messages, 20 sessions, {rounds} round(s), medians.")
    lines.append("")
    lines.append("| size | Bulwark msg/s | Postfix msg/s | ratio | Bulwark CPU ms/msg | Postfix CPU ms/msg | Bulwark peak RSS MB |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for size, b_runs, p_runs in rows:
        b, p = med(b_runs, "e2e_msg_s"), med(p_runs, "e2e_msg_s")
        bcpu = med(b_runs, "mta_cpu_s") / count * 1000
        pcpu = med(p_runs, "mta_cpu_s") / count * 1000
        rss = med(b_runs, "peak_rss_kb") / 1024
        lines.append(f"| {size // 1024} KB | {b:.0f} | {p:.0f} | {b / p:.1f}x | {bcpu:.2f} | {pcpu:.2f} | {rss:.1f} |")
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
    text = "\n".join(lines) + "\n"
    print(text)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach run appends a section "
                           "(`python3 bench/bench.py`, see bench/bench.py for what is measured).\n\n")
    with RESULTS.open("a") as f:
        f.write(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
