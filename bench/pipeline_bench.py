#!/usr/bin/env python3
"""What the content pipeline costs: end-to-end relay (smtp-source -> bulwarkd -> smtp-sink,
the shared harness) with no rules and with a do-nothing rule set (rules whose conditions never
match: sender, recipient, subject and header patterns, a size limit), alternating, medians.
Target (issue #11): at most 10 % slower with the rules than without.

    sudo python3 bench/pipeline_bench.py            # 20,000 messages, 1 KB and 10 KB, 3 rounds
    sudo python3 bench/pipeline_bench.py --short    # 2,000 messages, 1 round

Appends a section to bench/RESULTS.md."""

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the relay harness: Bulwark, bulwark_relay)

DO_NOTHING_RULES = """
[[rule]]
name = "partner invoices"
priority = 50
direction = "inbound"
from = ["*@partner.invalid"]
subject = "(?i)invoice"
action = "quarantine"

[[rule]]
name = "mass mailer"
header = ["X-Mailer: (?i)massmail"]
action = "reject"
reason = "bulk"

[[rule]]
name = "finance archive"
to = ["finance.invalid"]
action = "copy"
copy_to = ["archive@example.test"]

[[rule]]
name = "huge"
size_over = "40MB"
action = "reject"

[[rule]]
name = "wire fraud subject"
subject = "(?i)urgent wire transfer"
action = "tag"
tag = "[FRAUD?]"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--sizes", default="1024,10240")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.short else 3)
    count = args.count or (2000 if args.short else 20000)
    if os.geteuid() != 0:
        bench.log("run as root (file descriptor limits)")
        return 2
    subprocess.run(bench.RELEASE_BUILD, cwd=bench.REPO, check=True)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        plain, ruled = [], []
        for r in range(rounds):
            plain.append(float(bench.bulwark_relay(work, count, size)["e2e_msg_s"]))
            ruled.append(float(bench.bulwark_relay(work, count, size, DO_NOTHING_RULES)["e2e_msg_s"]))
            bench.log(f"{size} B round {r + 1}: no rules {plain[-1]:.0f} msg/s, rules {ruled[-1]:.0f} msg/s")
        rows.append((size, statistics.median(plain), statistics.median(ruled)))
    lines = [f"## {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC — "
             f"`python3 bench/pipeline_bench.py{' --short' if args.short else ''}`", "",
             f"Machine: {platform.node()}, {os.cpu_count()} cores; {count} messages, 20 sessions, "
             f"{rounds} round(s) alternating, medians. Do-nothing rule set: 5 rules (sender, "
             f"recipient, subject, header, size conditions) that match no message.", "",
             "| size | no rules msg/s | do-nothing rules msg/s | change |", "| --- | --- | --- | --- |"]
    for size, p, r in rows:
        lines.append(f"| {size // 1024} KB | {p:.0f} | {r:.0f} | {(r / p - 1) * 100:+.1f} % |")
    text = "\n".join(lines) + "\n\n"
    print(text)
    with bench.RESULTS.open("a") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
