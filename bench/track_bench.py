#!/usr/bin/env python3
"""Message tracking benchmark: fills a tracking store with 1,000,000 events (a realistic mix,
~213,000 messages over 14 days), times the queries `bulwarkctl track` makes (by queue id,
Message-ID, sender, recipient, since) and the writer's insert throughput, and appends the
results, with the date and the command, to bench/RESULTS.md.

The work is done by the Rust example `mta/examples/track_bench.rs` (the real store and
tracker code); this script builds it, runs it and records what it printed.

    python3 bench/track_bench.py [--events N] [--release] [--no-append]

The default is the debug build the tests use (SQLite itself is always built at -O3, see the
workspace Cargo.toml); --release measures the shipped build.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--release", action="store_true", help="measure the release build")
    parser.add_argument("--no-append", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    profile = ["--release"] if args.release else []
    build = ["cargo", "build", "--example", "track_bench", *profile]
    subprocess.run(build, cwd=REPO, check=True, timeout=3600)
    binary = REPO / "target" / ("release" if args.release else "debug") / "examples" / "track_bench"
    started = datetime.datetime.now(datetime.timezone.utc)
    run = subprocess.run([str(binary), "--events", str(args.events)], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=3600)
    command = "python3 bench/track_bench.py" + "".join(
        f" {a}" for a in sys.argv[1:] if a != "--no-append")
    section = (f"\n## {started:%Y-%m-%d %H:%M} UTC — `{command}` (message tracking)\n\n"
               f"Machine: {platform.node()}, {len(__import__('os').sched_getaffinity(0))} cores, "
               f"{platform.platform()}; {'release' if args.release else 'debug'} build "
               f"(SQLite at -O3).\n\n{run.stdout.strip()}\n")
    print(section)
    if not args.no_append:
        with open(REPO / "bench" / "RESULTS.md", "a") as results:
            results.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
