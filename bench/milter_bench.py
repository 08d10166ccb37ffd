#!/usr/bin/env python3
"""Relay through rspamd as a milter: Bulwark and Postfix with the same rspamd in the same run.

    sudo python3 bench/milter_bench.py                  # long: 5,000 messages of 10 KB, 2 rounds
    sudo python3 bench/milter_bench.py --short          # CI: 1,000 messages, 1 round
    sudo python3 bench/milter_bench.py --short --profile debug   # smoke run, no release build
    sudo python3 bench/milter_bench.py --bulwark-antispam --transports inet
        # issue #17: Bulwark with its built-in anti-spam stage instead of the milter, against
        # Postfix + the rspamd milter on the same messages in the same run

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

The harness (bench/harness.py) is bench.py's and av_bench.py's too. BULWARKD=path picks the
daemon (default: the --profile build); the section says which. Every loop is bounded. Never
part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

h.TAG = "milter-bench"
# Not bench.py's 2625/2626: another engineer's bench may hold those on a shared machine.
BULWARK_PORT, BULWARK_SINK = h.free_port(), h.free_port()


def milter_address(transport: str) -> str:
    if transport == "unix":
        return f"unix:{h.FP_DIR}/rspamd/run/milter.sock"
    return "inet:11332@127.0.0.1"


def milter_toml(transport: str) -> str:
    return f"""
[[milter]]
name = "rspamd"
address = "{milter_address(transport)}"
default_action = "accept"
command_timeout = "60s"
"""


# The built-in stage as the relay benchmark can run it: every message scored (the bench's
# clients are in trusted_networks, so direction "any"), no network checks (the bench's DNS is
# a dead address and rspamd runs offline too), nothing tagged or refused.
ANTISPAM_TOML = """
[antispam]
enabled = true
direction = "any"
authentication = false
tag_score = 1000.0
quarantine_score = 1000.0
reject_score = 1000.0
"""


def rspamd_cpu() -> float:
    return h.filter_cpu().get("rspamd", 0.0)


BUILT_IN = False  # --bulwark-antispam


def bulwark_run(transport: str, count: int, size: int) -> dict:
    extra, label = (ANTISPAM_TOML, "bulwark-antispam") if BUILT_IN else \
        (milter_toml(transport), f"bulwark-rspamd-{transport}")
    b = h.Bulwark(port=BULWARK_PORT, sink_port=BULWARK_SINK, sessions=1000, extra_toml=extra).start()
    try:
        before = rspamd_cpu()
        fields = h.bulwark_relay(b, BULWARK_SINK, count, size, label)
        fields["filter_cpu_s"] = f"{rspamd_cpu() - before:.2f}"
        # Milter failures (default_action applied), from the daemon's warnings.
        fields["unscanned"] = str(b.log_text().count("filter failed"))
        return fields
    finally:
        b.stop()


def postfix_run(transport: str, count: int, size: int) -> dict:
    before = rspamd_cpu()
    fields = h.postfix_relay(count, size, f"postfix-rspamd-{transport}")
    fields["filter_cpu_s"] = f"{rspamd_cpu() - before:.2f}"
    return fields


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_mode_arguments(parser, "1,000 messages, 1 round", "5,000 messages, 2 rounds")
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--transports", default="inet,unix")
    parser.add_argument("--bulwark-antispam", action="store_true",
                        help="Bulwark runs its built-in anti-spam stage, Postfix the rspamd milter")
    args = parser.parse_args()
    global BUILT_IN
    BUILT_IN = args.bulwark_antispam
    count = args.count or (1000 if args.short else 5000)
    rounds = args.rounds or (1 if args.short else 2)
    if not h.preflight():
        return 2
    h.select_build(args)
    h.log("setting up Postfix")
    h.postfix_start()
    rows = []
    try:
        for transport in args.transports.split(","):
            h.log(f"rspamd milter over {transport}")
            h.filter_peers("start", "rspamd", transport=transport)
            results = {"bulwark": [], "postfix": []}
            for r in range(rounds):
                for mta, runner in (("bulwark", bulwark_run), ("postfix", postfix_run)):
                    fields = runner(transport, count, args.size)
                    h.log(f"{transport} round {r + 1} {mta}: {fields}")
                    results[mta].append(fields)
            rows.append((transport, results))
    finally:
        h.filter_peers("stop", timeout=300)
        h.postfix_stop()
    report(rows, count, rounds, args)
    return 0


def report(rows, count: int, rounds: int, args) -> None:
    what = ("Bulwark's built-in anti-spam vs Postfix + rspamd milter" if BUILT_IN
            else "rspamd as a milter")
    flags = f" --bulwark-antispam --transports {args.transports}" if BUILT_IN else ""
    lines = [f"## {h.now()} — `{h.command('milter_bench.py', args)}{flags}` ({what})", "",
             f"Machine: {h.machine(args)}; {count} messages of {args.size} bytes, "
             f"{h.SESSIONS} sessions, {rounds} round(s), medians; rspamd offline via "
             "../shared/bench/filter-peers-setup.sh, Postfix via postfix-setup.sh.", "",
             "| transport | Bulwark msg/s | Postfix msg/s | ratio | Bulwark CPU ms/msg | Postfix CPU ms/msg "
             "| rspamd CPU ms/msg (Bulwark run) | rspamd CPU ms/msg (Postfix run) | milter failures (Bulwark) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for transport, results in rows:
        b_runs, p_runs = results["bulwark"], results["postfix"]
        b = h.median(f.get("e2e_msg_s") for f in b_runs)
        p = h.median(f.get("e2e_msg_s") for f in p_runs)
        bc = h.median(h.per_message_ms(f.get("mta_cpu_s"), count) for f in b_runs)
        pc = h.median(h.per_message_ms(f.get("mta_cpu_s"), count) for f in p_runs)
        bf = h.median(h.per_message_ms(f.get("filter_cpu_s"), count) for f in b_runs)
        pf = h.median(h.per_message_ms(f.get("filter_cpu_s"), count) for f in p_runs)
        failures = sum(int(f.get("unscanned", "0")) for f in b_runs)
        lines.append(f"| {transport} | {b:.0f} | {p:.0f} | {h.ratio(b, p)} | {bc:.2f} | {pc:.2f} "
                     f"| {bf:.2f} | {pf:.2f} | {failures} |")
    h.append_results("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
