#!/usr/bin/env python3
"""Flood benchmark (issue #4), as root: a well-behaved client's delivery rate while one source
floods connections, with protection off / userspace / XDP, as ratios to the no-flood rate;
then the kernel drop rate (packets/s) the XDP path sustains here.

Uses the namespace topology of tests/test_flow.py (addresses only inside namespaces it
creates and deletes). Bounded: each phase runs SECONDS, the flood uses THREADS loops.

  sudo python3 bench/flood.py [SECONDS] [THREADS]     (after `cargo build`)
"""

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_flow  # noqa: E402  (Net, NetnsDaemon, flow_toml)
from conftest import run  # noqa: E402

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 4
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
PORT = test_flow.PORT


def phase(net, base, mode, pin_dir, flood):
    over = {"mode": mode, "syn_rate": 5, "syn_burst": 20}
    d = test_flow.NetnsDaemon(base / mode, net, extra_toml=test_flow.flow_toml(
        net, pin_dir if mode == "auto" else None, **over))
    d.start()
    try:
        flooded = {}
        flooder = None
        if flood:
            def go():
                flooded.update(net.client(1, "flood_for", net.server_addr(1), PORT, SECONDS + 1, THREADS,
                                          timeout=SECONDS + 30))
            flooder = threading.Thread(target=go)
            flooder.start()
            time.sleep(0.5)
        good = net.client(2, "rate", net.server_addr(2), PORT, SECONDS, timeout=SECONDS + 30)
        if flooder:
            flooder.join(SECONDS + 40)
        return good["per_second"], flooded
    finally:
        d.stop()
        if mode == "auto":
            run(["rm", "-rf", str(pin_dir / "bulwark")])


def kernel_drop_rate(net, base, pin_dir, count=300_000):
    d = test_flow.NetnsDaemon(base / "pps", net, extra_toml=test_flow.flow_toml(net, pin_dir))
    d.start()
    try:
        d.flow("block", "10.77.1.2")
        before = d.flow("status")["counters"]["dropped_block"]
        start = time.monotonic()
        sent = net.client(1, "syns", net.server_addr(1), PORT, count, timeout=120)
        # the counter is read after the sender finished: drops/s over the sender's time
        after = d.flow("status")["counters"]["dropped_block"]
        return (after - before) / sent["elapsed"], after - before, sent, time.monotonic() - start
    finally:
        d.stop()


def main():
    if os.geteuid() != 0:
        sys.exit("bench/flood.py needs root (namespaces, XDP)")
    base = Path(tempfile.mkdtemp(prefix="bwbench", dir="/tmp"))
    bpffs = base / "bpffs"
    bpffs.mkdir()
    run(["mount", "-t", "bpf", "bpf", bpffs])
    net = test_flow.Net().up()
    try:
        baseline, _ = phase(net, base, "off", bpffs, flood=False)
        rows = {}
        for label, mode in (("off", "off"), ("userspace", "userspace"), ("xdp", "auto")):
            rate, flooded = phase(net, base, mode, bpffs, flood=True)
            rows[label] = {"good_per_second": round(rate, 1), "ratio": round(rate / baseline, 3),
                           "flood": flooded}
        pps, dropped, sent, _ = kernel_drop_rate(net, base, bpffs)
        print(f"good client, no flood: {baseline:.1f} msg/s")
        print(f"{'protection':<12}{'msg/s':>8}{'ratio':>8}   flood accepted/other")
        for label, row in rows.items():
            f = row["flood"]
            print(f"{label:<12}{row['good_per_second']:>8}{row['ratio']:>8}   "
                  f"{f.get('accepted')}/{f.get('other')}")
        print(f"XDP drops: {dropped} of {sent['sent']} SYNs in {sent['elapsed']:.2f}s = "
              f"{pps:,.0f} packets/s (bounded by the Python sender)")
        print(json.dumps({"baseline": baseline, "rows": rows, "xdp_drop_pps": pps}))
    finally:
        net.down()
        run(["umount", bpffs])
        run(["rm", "-rf", str(base)])


if __name__ == "__main__":
    main()
