#!/usr/bin/env python3
"""Message tracking benchmark: fills a tracking store with 1,000,000 events (a realistic mix,
~213,000 messages over 14 days), times the queries `bulwarkctl track` makes (by queue id,
Message-ID, sender, recipient, since) and the writer's insert throughput, and appends the
results, with the date and the command, to bench/RESULTS.md.

The store is filled and timed by the Rust example `mta/examples/track_bench.rs` (the real
store and tracker code). Then a real bulwarkd opens that store and `bulwarkctl track` is timed
end to end (process start, control socket, query, JSON, printing), as an operator runs it.

    python3 bench/track_bench.py [--events N] [--release] [--no-append]

The default is the debug build the tests use (SQLite itself is always built at -O3, see the
workspace Cargo.toml); --release measures the shipped build.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
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


CONFIG = """\
[server]
hostname = "bench.test"
spool_dir = "{dir}/spool"
control_socket = "{dir}/ctl.sock"

[[listener]]
address = "127.0.0.1:{port}"
role = "mx"

[relay]
domains = ["example.com"]

[tracking]
dir = "{store}"
retention = "15d"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_id(n: int) -> str:
    """The queue id the example gives message n."""
    return f"{0x0006_0000_0000_0000 + n:016X}"


def bench_message_id(n: int) -> str:
    return f"{n}.{(n * 2_654_435_761) % 2**64:x}@client.example"


def cli_rows(target: Path, work: Path, store: Path, messages: int) -> list[str]:
    """Starts bulwarkd on `store` and times `bulwarkctl track` queries (wall ms, 5 runs)."""
    port = free_port()
    config = work / "bulwark.toml"
    config.write_text(CONFIG.format(dir=work, port=port, store=store))
    daemon = subprocess.Popen([str(target / "bulwarkd"), "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=open(work / "bulwarkd.log", "wb"),
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (work / "ctl.sock").exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bulwarkd did not start: {(work / 'bulwarkd.log').read_text()}")
            time.sleep(0.1)
        picks = [messages // 7, messages // 3, messages // 2, messages - 10]
        queries = [
            ("track --id", ["--id", bench_id(picks[0])]),
            ("track --message-id (no brackets)", ["--message-id", bench_message_id(picks[1])]),
            ("track --recipient", ["--recipient", "person123@example.com"]),
            ("track --sender (a tenth of all mail, 10,000 events) --json",
             ["--sender", "newsletter@bank.example", "--json"]),
            ("track --since 2h", ["--since", "2h"]),
        ]
        rows = []
        for name, args in queries:
            times, lines = [], 0
            for _ in range(5):
                started = time.monotonic()
                out = subprocess.run([str(target / "bulwarkctl"), "--socket", str(work / "ctl.sock"),
                                      "track", *args], capture_output=True, text=True, timeout=120)
                times.append((time.monotonic() - started) * 1000)
                if out.returncode != 0:
                    raise SystemExit(f"{name}: {out.stderr}")
                lines = len(out.stdout.splitlines())
            rows.append(f"| `bulwarkctl {name}` | 5 | {statistics.median(times):.0f} | "
                        f"{max(times):.0f} | {lines} lines |")
        return rows
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--release", action="store_true", help="measure the release build")
    parser.add_argument("--no-append", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    profile = ["--release"] if args.release else []
    for build in (["--example", "track_bench"], ["--bins"]):
        subprocess.run(["cargo", "build", *build, *profile], cwd=REPO, check=True, timeout=3600)
    target = REPO / "target" / ("release" if args.release else "debug")
    started = datetime.datetime.now(datetime.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="track-bench-"))
    try:
        store = work / "tracking"
        run = subprocess.run([str(target / "examples" / "track_bench"), "--events", str(args.events),
                              "--dir", str(store)], cwd=REPO, check=True, capture_output=True,
                             text=True, timeout=3600)
        messages = int(next(w for w in run.stdout.split("(")[1].split() if w.isdigit()))
        rows = cli_rows(target, work, store, messages)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cli = ("\n\nEnd to end through a running bulwarkd on the same store (the CLI process, the "
           "control socket, the query, JSON and printing; wall time):\n\n"
           "| command | runs | median ms | max ms | output |\n| --- | --- | --- | --- | --- |\n"
           + "\n".join(rows))
    command = "python3 bench/track_bench.py" + "".join(
        f" {a}" for a in sys.argv[1:] if a != "--no-append")
    section = (f"\n## {started:%Y-%m-%d %H:%M} UTC — `{command}` (message tracking)\n\n"
               f"Machine: {platform.node()}, {len(__import__('os').sched_getaffinity(0))} cores, "
               f"{platform.platform()}; {'release' if args.release else 'debug'} build "
               f"(SQLite at -O3).\n\n{run.stdout.strip()}{cli}\n")
    print(section)
    if not args.no_append:
        with open(REPO / "bench" / "RESULTS.md", "a") as results:
            results.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
