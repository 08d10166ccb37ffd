#!/usr/bin/env python3
"""Relay through rspamd as a milter: Bulwark and Postfix with the same rspamd in the same run.

    python3 bench/milter_bench.py            # 5,000 messages of 10 KB, 2 rounds, TCP and unix
    python3 bench/milter_bench.py --short    # 1,000 messages, 1 round (a few minutes)

Setup, all offline on loopback, through the shared harness (../shared/bench/README.md):
postfix-setup.sh makes Postfix an equivalent relay (127.0.0.1:2525 -> 2526);
filter-peers-setup.sh starts rspamd (proxy worker in milter mode, self-scan) and points
Postfix's smtpd_milters at it (milter_protocol 6, milter_default_action accept), over TCP
(inet:127.0.0.1:11332) or a unix socket (MILTER_TRANSPORT=unix). Bulwark (127.0.0.1:2625 ->
2626) gets one [[milter]] with the same address and default_action = "accept".
relay-bench.sh drives each MTA with smtp-source (20 sessions, one message per session) into
smtp-sink. For each transport the MTAs alternate (B P B P ...); rspamd's CPU is read with
`filter-peers-setup.sh cpu` before and after each run. Results (msg/s, ratio, CPU ms per
message of the MTA and of rspamd) are printed and appended to bench/RESULTS.md.

BULWARKD=path picks the daemon (default target/release/bulwarkd); the section says which.
Every loop is bounded. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCH = Path(os.environ.get("SHARED_BENCH", REPO.parent / "shared" / "bench"))
BULWARKD = Path(os.environ.get("BULWARKD", REPO / "target" / "release" / "bulwarkd"))
BULWARKCTL = BULWARKD.parent / "bulwarkctl"
RESULTS = REPO / "bench" / "RESULTS.md"
FP_DIR = Path(os.environ.get("FP_DIR", "/tmp/filter-peers"))

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Not bench.py's 2625/2626: another engineer's bench may hold those on a shared machine.
BULWARK_PORT, BULWARK_SINK = free_port(), free_port()
POSTFIX_PORT, POSTFIX_SINK = 2525, 2526
SESSIONS = 20


def log(text: str) -> None:
    print(f"[milter-bench] {text}", file=sys.stderr, flush=True)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def shared(script: str, *args: str, env: dict | None = None, timeout: float = 600) -> str:
    r = run(["bash", str(SHARED_BENCH / script), *args], env={**os.environ, **(env or {})},
            timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed: {r.stderr[-2000:]}")
    return r.stdout


def milter_address(transport: str) -> str:
    if transport == "unix":
        return f"unix:{FP_DIR}/rspamd/run/milter.sock"
    return "inet:11332@127.0.0.1"


def filter_cpu() -> float:
    out = shared("filter-peers-setup.sh", "cpu")
    match = re.search(r"rspamd=([\d.]+)", out)
    return float(match.group(1)) if match else 0.0


class Bulwark:
    """bulwarkd relaying example.test to the sink, asking rspamd about every message."""

    def __init__(self, transport: str):
        self.dir = Path(tempfile.mkdtemp(prefix="bulwark-milter-bench-"))
        self.config = self.dir / "bulwark.toml"
        self.config.write_text(f"""
[server]
hostname = "bench.test"
spool_dir = "{self.dir / 'spool'}"
control_socket = "{self.dir / 'ctl.sock'}"
[[listener]]
address = "127.0.0.1:{BULWARK_PORT}"
role = "mx"
[relay]
domains = ["example.test"]
trusted_networks = ["127.0.0.0/8"]
[limits]
max_sessions_per_client = 1000
[[route]]
domains = ["*"]
next_hops = ["127.0.0.1:{BULWARK_SINK}"]
tls = "none"
max_connections = 20
[delivery]
retry_initial = "1s"
retry_max = "5s"
[dns]
servers = ["127.0.0.1:9"]
[[milter]]
name = "rspamd"
address = "{milter_address(transport)}"
default_action = "accept"
command_timeout = "60s"
""")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Bulwark":
        env = dict(os.environ, BULWARK_LOG="warn")
        self.proc = subprocess.Popen([str(BULWARKD), "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "w"), env=env)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (self.dir / "ctl.sock").exists() and port_open(BULWARK_PORT):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"bulwarkd did not start: {(self.dir / 'log').read_text()[-2000:]}")

    def queue_cmd(self) -> str:
        return (f"{BULWARKCTL} --socket {self.dir / 'ctl.sock'} status --json "
                "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"queue\"][\"messages\"])'")

    def unscanned(self) -> int:
        """Milter failures (default_action applied), from the daemon's warnings."""
        return (self.dir / "log").read_text(errors="replace").count("filter failed")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.settimeout(1)
            s.recv(512)
            s.sendall(b"QUIT\r\n")
        return True
    except OSError:
        return False


def relay(port: int, sink: int, count: int, size: int, env: dict) -> dict:
    out = shared("relay-bench.sh", str(port), str(sink), str(count), str(SESSIONS), str(size),
                 env={"WAIT_IDLE": "30", **env}, timeout=1800)
    line = next((l for l in out.splitlines() if l.startswith("RESULT")), "")
    if not line:
        raise RuntimeError(f"relay-bench printed no RESULT: {out[-1000:]}")
    return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)


def bulwark_run(transport: str, count: int, size: int) -> dict:
    b = Bulwark(transport).start()
    try:
        before = filter_cpu()
        fields = relay(BULWARK_PORT, BULWARK_SINK, count, size,
                       {"MTA_PIDS": str(b.proc.pid), "QUEUE_CMD": b.queue_cmd(),
                        "LABEL": f"bulwark-rspamd-{transport}"})
        fields["filter_cpu_s"] = f"{filter_cpu() - before:.2f}"
        fields["unscanned"] = str(b.unscanned())
        return fields
    finally:
        b.stop()


def postfix_run(transport: str, count: int, size: int) -> dict:
    queue_cmd = shared("postfix-setup.sh", "--queue-cmd").strip()
    before = filter_cpu()
    fields = relay(POSTFIX_PORT, POSTFIX_SINK, count, size,
                   {"CGROUP": "mta-bench", "QUEUE_CMD": queue_cmd, "LABEL": f"postfix-rspamd-{transport}"})
    fields["filter_cpu_s"] = f"{filter_cpu() - before:.2f}"
    return fields


def per_message_ms(fields: dict, key: str, count: int) -> float:
    try:
        return float(fields[key]) * 1000 / count
    except (KeyError, ValueError):
        return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="1,000 messages, 1 round")
    parser.add_argument("--count", type=int)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--transports", default="inet,unix")
    args = parser.parse_args()
    count = args.count or (1000 if args.short else 5000)
    rounds = args.rounds or (1 if args.short else 2)
    if not BULWARKD.exists():
        log(f"{BULWARKD} missing: build it (or set BULWARKD=...)")
        return 2
    log("setting up Postfix")
    shared("postfix-setup.sh", timeout=900)
    rows = []
    try:
        for transport in args.transports.split(","):
            log(f"rspamd milter over {transport}")
            shared("filter-peers-setup.sh", "start", "rspamd", env={"MILTER_TRANSPORT": transport},
                   timeout=900)
            results = {"bulwark": [], "postfix": []}
            for r in range(rounds):
                for mta in ("bulwark", "postfix"):
                    runner = bulwark_run if mta == "bulwark" else postfix_run
                    fields = runner(transport, count, args.size)
                    log(f"{transport} round {r + 1} {mta}: {fields}")
                    results[mta].append(fields)
            rows.append((transport, results))
    finally:
        shared("filter-peers-setup.sh", "stop", timeout=300)
        shared("postfix-teardown.sh", timeout=300)
    report(rows, count, rounds, args)
    return 0


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def report(rows, count: int, rounds: int, args) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python3 bench/milter_bench.py" + (" --short" if args.short else "")
    build = "release" if "release" in str(BULWARKD) else f"NOT release ({BULWARKD})"
    lines = [f"## {now} — `{command}` (rspamd as a milter)", "",
             f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; bulwarkd {build}; "
             f"{count} messages of {args.size} bytes, {SESSIONS} sessions, {rounds} round(s), medians; "
             "rspamd 3.4 offline via ../shared/bench/filter-peers-setup.sh, Postfix via postfix-setup.sh.", "",
             "| transport | Bulwark msg/s | Postfix msg/s | ratio | Bulwark CPU ms/msg | Postfix CPU ms/msg "
             "| rspamd CPU ms/msg (Bulwark run) | rspamd CPU ms/msg (Postfix run) | milter failures (Bulwark) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for transport, results in rows:
        b = median([float(f.get("e2e_msg_s", "nan")) for f in results["bulwark"]])
        p = median([float(f.get("e2e_msg_s", "nan")) for f in results["postfix"]])
        bc = median([per_message_ms(f, "mta_cpu_s", count) for f in results["bulwark"]])
        pc = median([per_message_ms(f, "mta_cpu_s", count) for f in results["postfix"]])
        bf = median([per_message_ms(f, "filter_cpu_s", count) for f in results["bulwark"]])
        pf = median([per_message_ms(f, "filter_cpu_s", count) for f in results["postfix"]])
        failures = sum(int(f.get("unscanned", "0")) for f in results["bulwark"])
        lines.append(f"| {transport} | {b:.0f} | {p:.0f} | {b / p:.1f}x | {bc:.2f} | {pc:.2f} | {bf:.2f} "
                     f"| {pf:.2f} | {failures} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(RESULTS, "a") as out:
        out.write("\n" + text)


if __name__ == "__main__":
    sys.exit(main())
