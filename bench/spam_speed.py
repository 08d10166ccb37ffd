#!/usr/bin/env python3
"""Anti-spam scanning speed at ~10 KB: messages per second per core, or instructions per
message under callgrind (load-independent).

    python3 bench/spam_speed.py [--corpus DIR] [--rounds N]          # msg/s on one core
    python3 bench/spam_speed.py --callgrind [--messages N]           # instructions/message

The messages: every message of 8-13 KB in the SpamAssassin public corpus (291 real spam and
ham, mean ~10 KB: plain, HTML, multipart), as stored (fetched like bench/spam_eval.py when
--corpus is not given). What is measured: `bulwarkctl spam check` (read the file, parse,
features, classifier, rules; its own timer, process start excluded), pinned to CPU 0 with
taskset. Messages per second per core = messages / the scan's CPU time. The anti-spam
stage in the daemon adds authentication and DNS lookups, which wait on the network and cost
little CPU; they are not measured here.

--callgrind runs the same scan under `valgrind --tool=callgrind` over N messages and over 1,
and prints (Ir(N) - Ir(1)) / (N - 1): the instructions per message without start-up. Use a
release build: BULWARKCTL=target/release/bulwarkctl (the default here is the release build
when it exists). Appends a section to bench/RESULTS.md unless --no-record."""

import argparse
import datetime
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import spam_eval  # noqa: E402


def default_ctl():
    if os.environ.get("BULWARKCTL"):
        return os.environ["BULWARKCTL"]
    release = REPO / "target" / "release" / "bulwarkctl"
    return str(release if release.exists() else REPO / "target" / "debug" / "bulwarkctl")


def messages(corpus):
    data = corpus / "package" / "data"
    files = sorted(p for p in data.glob("*/*.txt") if 8 * 1024 <= p.stat().st_size <= 13 * 1024)
    if not files:
        sys.exit(f"no 8-13 KB messages under {data}")
    return files


def throughput(ctl, files, rounds):
    listed = [str(f) for f in files] * rounds
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.time()
    r = subprocess.run(["taskset", "-c", "0", ctl, "spam", "check", *listed], capture_output=True,
                       text=True, timeout=3600, check=True)
    wall = time.time() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    scan = float(re.search(r"in ([0-9.]+) s", r.stderr).group(1))
    return len(listed), cpu, scan, wall


def instructions(ctl, files, tmp):
    def run(n):
        out = Path(tmp) / f"callgrind.{n}"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", ctl, "spam", "check",
                        *map(str, files[:n])], capture_output=True, timeout=3600, check=True)
        text = out.read_text(errors="replace")
        return int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1)), out

    n = len(files)
    one, _ = run(1)
    many, profile = run(n)
    return (many - one) / (n - 1), profile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus")
    ap.add_argument("--rounds", type=int, default=7, help="passes over the 291 messages")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--messages", type=int, default=200, help="messages under callgrind")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    ctl = default_ctl()
    files = messages(spam_eval.corpus_dir(args.corpus))
    size = sum(f.stat().st_size for f in files) / len(files) / 1024
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if args.callgrind:
        with tempfile.TemporaryDirectory() as tmp:
            per, profile = instructions(ctl, files[:args.messages], tmp)
            top = subprocess.run(["callgrind_annotate", str(profile)], capture_output=True, text=True).stdout
        line = (f"{per / 1e6:.2f} M instructions per message ({min(args.messages, len(files))} messages "
                f"of {size:.1f} KB on average, start-up subtracted), binary {ctl}")
        print(line)
        print("\n".join(top.splitlines()[:40]))
        command = f"python3 bench/spam_speed.py --callgrind --messages {args.messages}"
    else:
        n, cpu, scan, wall = throughput(ctl, files, args.rounds)
        line = (f"{n} scans of {len(files)} messages ({size:.1f} KB on average) on CPU 0: "
                f"{n / cpu:.0f} messages per CPU second (process), {n / scan:.0f} msg/s by the scan's own "
                f"timer, wall {wall:.1f} s; load average {os.getloadavg()[0]:.2f}; binary {ctl}")
        print(line)
        command = f"python3 bench/spam_speed.py --rounds {args.rounds}"
    if not args.no_record:
        with open(HERE / "RESULTS.md", "a") as out:
            out.write(f"\n## {now} — `{command}` (anti-spam scan speed)\n\n{line}\n")


if __name__ == "__main__":
    main()
