#!/usr/bin/env python3
"""Where Bulwark's CPU goes per relayed message, in repeatable instruction counts.

    python3 bench/profile.py                  # callgrind, 2,000 messages of 1 KB (~1 minute)
    python3 bench/profile.py --count 500      # quicker
    python3 bench/profile.py --perf           # perf record instead (cycles, kernel included)

Runs the release bulwarkd under `valgrind --tool=callgrind` (or `perf record -g`), relays
`--count` messages from Postfix's smtp-source (20 sessions, one message each) to smtp-sink on
loopback, waits until the sink has them all, then stops the daemon and prints instructions
per message and the functions with the most inclusive instructions (callgrind_annotate).
Instruction counts do not depend on what else the machine is doing, so two builds can be
compared on a busy machine; the run also appends a line to bench/RESULTS.md. The spool is on
the same disk as the repository, as in bench.py. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as bench  # noqa: E402  (the same daemon setup and tools as the benchmark)


def smtp_tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if not found:
        raise SystemExit(f"profile.py: {name} is missing (Debian package postfix)")
    return found


def sink_count(log: Path) -> int:
    # smtp-sink -c prints "sess=N quit=N mesg=N\r" at every end of data.
    try:
        counts = re.findall(r"mesg=(\d+)", log.read_text(errors="replace"))
    except FileNotFoundError:
        return 0
    return int(counts[-1]) if counts else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--perf", action="store_true", help="perf record -g instead of callgrind")
    parser.add_argument("--keep", action="store_true", help="keep the profile and logs (path printed)")
    parser.add_argument("--rules", action="store_true",
                        help="with bench/pipeline_bench.py's do-nothing rule set")
    args = parser.parse_args()
    subprocess.run(bench.RELEASE_BUILD, cwd=bench.REPO, check=True)
    work = Path(tempfile.mkdtemp(prefix="bulwark-profile-", dir=bench.REPO / "target"))
    extra = ""
    if args.rules:
        import pipeline_bench
        extra = pipeline_bench.DO_NOTHING_RULES
    daemon = bench.Bulwark(work, extra_toml=extra)
    out = work / "profile.out"
    if args.perf:
        wrapper = ["perf", "record", "-g", "-o", str(out), "--"]
    else:
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                   "--dump-instr=no", "--collect-atstart=yes"]
    sink_log = work / "sink.log"
    sink = subprocess.Popen([smtp_tool("smtp-sink"), "-c", "-u", "nobody", f"127.0.0.1:{bench.SINK_PORT}", "256"],
                            stdout=open(sink_log, "w"), stderr=subprocess.STDOUT)
    proc = subprocess.Popen([*wrapper, str(bench.BULWARKD), "--config", str(daemon.config)],
                            stdout=subprocess.DEVNULL, stderr=open(work / "daemon.log", "w"),
                            env={"BULWARK_LOG": "warn", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    try:
        for _ in range(600):  # valgrind starts slowly: up to 60 s
            if bench.port_open(bench.BULWARK_PORT):
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"bulwarkd did not start: {(work / 'daemon.log').read_text()[-2000:]}")
        before = sink_count(sink_log)
        started = time.monotonic()
        subprocess.run([smtp_tool("smtp-source"), "-s", "20", "-m", str(args.count), "-l", str(args.size),
                        "-f", "sender@bench.test", "-t", "rcpt@example.test",
                        f"127.0.0.1:{bench.BULWARK_PORT}"], check=True, timeout=1800)
        for _ in range(3000):  # bounded: 300 s
            if sink_count(sink_log) - before >= args.count:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        delivered = sink_count(sink_log) - before
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        sink.terminate()
        sink.wait(10)
    if args.perf:
        report = bench.run(["perf", "report", "-i", str(out), "--no-children", "--sort", "sym",
                            "-g", "none", "--stdio"]).stdout
        print("\n".join(report.splitlines()[:60]))
        print(f"{delivered} of {args.count} messages relayed in {elapsed:.1f} s under perf")
        shutil.rmtree(work, ignore_errors=True)
        return 0
    annotate = bench.run(["callgrind_annotate", "--inclusive=yes", str(out)]).stdout
    total = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", annotate)
    instructions = int(total.group(1).replace(",", "")) if total else 0
    per_message = instructions / max(delivered, 1)
    print("\n".join(annotate.splitlines()[:70]))
    line = (f"- {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC — "
            f"`python3 bench/profile.py --count {args.count} --size {args.size}{' --rules' if args.rules else ''}`: "
            f"{per_message / 1000:.0f} thousand instructions per relayed message "
            f"(callgrind, whole daemon incl. start-up, {delivered} messages)")
    print(line)
    with bench.RESULTS.open("a") as f:
        f.write(line + "\n\n")
    if args.keep:
        print(f"kept: {out} (callgrind_annotate --tree=caller {out})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if delivered >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
