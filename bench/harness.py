"""The relay benchmark harness every bench/ script shares: a bulwarkd under test, the shared
../shared/bench scripts (relay-bench.sh, postfix-setup.sh, filter-peers-setup.sh) for the peer
measured in the same run, CPU readings, medians and the RESULTS.md section.

A script sets its modes with `add_mode_arguments` (`--short`: the quick CI-sized run;
default: the long run; `--profile debug` for a smoke run without a release build) and calls
`select_build(args)` before starting anything. Every wait here is bounded; all traffic stays
on 127.0.0.0/8. Never part of the test suite.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCH = Path(os.environ.get("SHARED_BENCH", REPO.parent / "shared" / "bench"))
RESULTS = REPO / "bench" / "RESULTS.md"
FP_DIR = Path(os.environ.get("FP_DIR", "/tmp/filter-peers"))
# BULWARKD=path overrides the build `select_build` picks.
BULWARKD = Path(os.environ.get("BULWARKD", REPO / "target" / "release" / "bulwarkd"))
BULWARKCTL = BULWARKD.parent / "bulwarkctl"
# The build the benchmarks measure: the shipped one (release, YARA on), and the very command
# tests/run-all.sh runs, so a benchmark never rebuilds the tree with other features.
RELEASE_BUILD = ["cargo", "build", "--release", "--workspace", "--bins", "--examples",
                 "--features", "bulwark-mta/yara"]

BULWARK_PORT, SINK_PORT = 2625, 2626
POSTFIX_PORT, POSTFIX_SINK_PORT = 2525, 2526
SESSIONS = 20
TAG = "bench"


def log(text: str) -> None:
    print(f"[{TAG}] {text}", file=sys.stderr, flush=True)


def run(cmd: list[str] | str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def shared(script: str, *args: str, env: dict | None = None, timeout: float = 600) -> str:
    """Runs ../shared/bench/SCRIPT; its stdout, or RuntimeError with its stderr."""
    r = run(["bash", str(SHARED_BENCH / script), *args], env={**os.environ, **(env or {})},
            timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed: {r.stderr[-2000:]}")
    return r.stdout


# -- modes and builds ---------------------------------------------------------------------------

def add_mode_arguments(parser: argparse.ArgumentParser, short: str, long: str) -> None:
    parser.add_argument("--short", action="store_true", help=f"CI mode: {short} (default: {long})")
    parser.add_argument("--profile", choices=["release", "debug"], default="release",
                        help="debug: a smoke run of the debug bulwarkd, no release build")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--count", type=int, default=None)


def select_build(args: argparse.Namespace) -> None:
    """Points BULWARKD at the profile's binaries (building release ones unless BULWARKD is set)."""
    global BULWARKD, BULWARKCTL
    if "BULWARKD" not in os.environ:
        BULWARKD = REPO / "target" / args.profile / "bulwarkd"
        if args.profile == "release":
            subprocess.run(RELEASE_BUILD, cwd=REPO, check=True)
    BULWARKCTL = BULWARKD.parent / "bulwarkctl"
    if not BULWARKD.exists():
        raise SystemExit(f"{BULWARKD} missing: build it (or set BULWARKD=...)")


def preflight(need_root: bool = True) -> bool:
    if need_root and os.geteuid() != 0:
        log("run as root (Postfix setup, cgroups, file descriptor limits)")
        return False
    if not (SHARED_BENCH / "relay-bench.sh").exists():
        log(f"missing {SHARED_BENCH}/relay-bench.sh (set SHARED_BENCH)")
        return False
    return True


# -- Bulwark under test -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2) as s:
            s.settimeout(1)
            s.recv(512)
            s.sendall(b"QUIT\r\n")
        return True
    except OSError:
        return False


class Bulwark:
    """A bulwarkd relaying example.test to 127.0.0.1:sink_port (or holding mail)."""

    def __init__(self, work: Path | None = None, hold: bool = False, port: int = BULWARK_PORT,
                 sink_port: int = SINK_PORT, sessions: int = 20000, extra_toml: str = ""):
        self.dir = Path(tempfile.mkdtemp(prefix="bulwark-bench-", dir=work))
        self.port = port
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
address = "127.0.0.1:{port}"
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
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (self.dir / "ctl.sock").exists() and port_open(self.port):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"bulwarkd did not start: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        return (self.dir / "log").read_text(errors="replace")

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


# -- the shared relay harness and the peers -----------------------------------------------------

def relay_bench(port: int, sink_port: int, count: int, sessions: int, size: int,
                env: dict[str, str]) -> dict[str, str]:
    """One relay-bench.sh run (smtp-source -> MTA -> smtp-sink); its RESULT fields."""
    out = shared("relay-bench.sh", str(port), str(sink_port), str(count), str(sessions), str(size),
                 env={"WAIT_IDLE": "30", **env}, timeout=1800)
    line = next((l for l in out.splitlines() if l.startswith("RESULT")), "")
    if not line:
        raise RuntimeError(f"relay-bench printed no RESULT: {out[-1000:]}")
    return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)


def bulwark_relay(b: Bulwark, sink_port: int, count: int, size: int, label: str) -> dict[str, str]:
    return relay_bench(b.port, sink_port, count, SESSIONS, size,
                       {"MTA_PIDS": str(b.proc.pid), "QUEUE_CMD": b.queue_cmd(), "LABEL": label})


def postfix_start() -> None:
    shared("postfix-setup.sh", timeout=900)


def postfix_stop() -> None:
    run(["bash", str(SHARED_BENCH / "postfix-teardown.sh")], timeout=300)


def postfix_queue_cmd() -> str:
    return shared("postfix-setup.sh", "--queue-cmd").strip()


def postfix_relay(count: int, size: int, label: str) -> dict[str, str]:
    return relay_bench(POSTFIX_PORT, POSTFIX_SINK_PORT, count, SESSIONS, size,
                       {"CGROUP": "mta-bench", "QUEUE_CMD": postfix_queue_cmd(), "LABEL": label})


def postfix_cgroup_cpu() -> float:
    """CPU seconds of Postfix's processes (cgroup mta-bench, v1 or v2)."""
    try:
        return int(Path("/sys/fs/cgroup/cpuacct/mta-bench/cpuacct.usage").read_text()) / 1e9
    except OSError:
        pass
    stat = Path("/sys/fs/cgroup/mta-bench/cpu.stat")
    if stat.exists():
        usage = dict(line.split() for line in stat.read_text().splitlines())
        return int(usage["usage_usec"]) / 1e6
    return float("nan")


def filter_peers(*args: str, transport: str = "unix", timeout: float = 900) -> str:
    """filter-peers-setup.sh (clamd, clamav-milter, rspamd, ... offline; Postfix pointed at them)."""
    return shared("filter-peers-setup.sh", *args, env={"MILTER_TRANSPORT": transport},
                  timeout=timeout)


def filter_cpu() -> dict[str, float]:
    """CPU seconds of each filter peer so far (`filter-peers-setup.sh cpu`)."""
    fields = dict(kv.split("=", 1) for kv in filter_peers("cpu", timeout=60).split() if "=" in kv)
    return {k: float(v) for k, v in fields.items() if v.replace(".", "", 1).isdigit()}


# -- numbers and the report ---------------------------------------------------------------------

def median(values) -> float:
    values = [float(v) for v in values if v not in (None, "NA") and float(v) == float(v)]
    return statistics.median(values) if values else float("nan")


def per_message_ms(seconds, count: int) -> float:
    try:
        return float(seconds) * 1000 / count
    except (TypeError, ValueError):
        return float("nan")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b == b and b else "–"


def machine(args: argparse.Namespace) -> str:
    build = args.profile if "BULWARKD" not in os.environ else f"BULWARKD={BULWARKD}"
    return (f"{platform.node()}, {os.cpu_count()} cores, {platform.platform()}; "
            f"bulwarkd {build} build")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command(script: str, args: argparse.Namespace) -> str:
    flags = (" --short" if args.short else "") + \
        (f" --profile {args.profile}" if args.profile != "release" else "")
    return f"sudo python3 bench/{script}{flags}"


def append_results(text: str) -> None:
    print(text)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach run appends a section.\n\n")
    with RESULTS.open("a") as f:
        f.write("\n" + text)
