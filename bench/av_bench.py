#!/usr/bin/env python3
"""What anti-virus scanning costs: Bulwark with [antivirus] (clamd, builtin, both) against
Postfix + clamav-milter on the SAME clamd (../shared/bench/filter-peers-setup.sh: clamd 1.4
with one EICAR signature, clamav-milter on a unix socket, OnFail Defer), in one run,
alternating, and clamd's own INSTREAM ceiling (a client straight on its socket, no MTA).

Two loads, 20 sessions each:
  harness  the shared relay-bench.sh (smtp-source 10 KB text -> MTA -> smtp-sink), end to end
  mixed    10 KB messages, 20 % of them with a small zip attachment (base64), sent by this
           script over raw sockets (one connection per session, many messages each; smtp-source
           cannot send attachments); accept-only msg/s (all 250s in), the MTA relays to an
           smtp-sink meanwhile
CPU per message: Bulwark = bulwarkd's utime+stime; Postfix = cgroup mta-bench; clamd (and
clamav-milter for Postfix) = filter-peers-setup.sh cpu.

    sudo python3 bench/av_bench.py --short            # CI: 2,000 messages per setup, 1 round
    sudo python3 bench/av_bench.py                    # long: 10,000 messages, 3 rounds
    sudo python3 bench/av_bench.py --short --profile debug   # smoke run, no release build

The harness (bulwarkd under test, relay-bench.sh, Postfix, filter-peers-setup.sh) is
bench/harness.py, shared with bench.py and milter_bench.py.

Appends a section to bench/RESULTS.md."""

import argparse
import base64
import io
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as bench  # noqa: E402  (the relay harness shared with bench.py, milter_bench.py)
from harness import SESSIONS, filter_cpu, postfix_cgroup_cpu  # noqa: E402

bench.TAG = "av-bench"
CLAMD_SOCK = bench.FP_DIR / "clamav" / "run" / "clamd.sock"


def av_toml(engines: list[str], signatures: Path) -> str:
    quoted = ", ".join(f'"{e}"' for e in engines)
    return (f'[antivirus]\nengines = [{quoted}]\nclamd = "unix:{CLAMD_SOCK}"\n'
            f'signatures_dir = "{signatures}"\non_error = "tempfail"\n')


def signature_dir(work: Path) -> Path:
    """1,000 MD5 and 1,000 SHA-256 entries (random: nothing in the load matches them)."""
    d = work / "signatures"
    d.mkdir(exist_ok=True)
    (d / "bench.hdb").write_text("".join(f"{os.urandom(16).hex()}:*:Bench.Md5.{i}\n" for i in range(1000)))
    (d / "bench.hsb").write_text("".join(f"{os.urandom(32).hex()}:*:Bench.Sha.{i}\n" for i in range(1000)))
    return d


def messages(size: int) -> tuple[bytes, bytes]:
    """(plain, with attachment): about `size` bytes each, CRLF, dot-terminated."""
    line = b"x" * 76 + b"\r\n"
    text = line * (size // len(line))
    head = b"From: <a@bench.test>\r\nTo: <r@example.test>\r\nSubject: av bench\r\n"
    plain = head + b"\r\n" + text
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("report.txt", b"quarterly figures\n" * 200)
        z.writestr("logo.bin", os.urandom(1500))
    b64 = base64.encodebytes(out.getvalue()).replace(b"\n", b"\r\n")
    body = text[: max(0, size - len(b64) - 400)]
    attached = (head + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
                b"--b\r\nContent-Type: text/plain\r\n\r\n" + body +
                b"--b\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
                b"Content-Disposition: attachment; filename=\"report.zip\"\r\n\r\n" + b64 + b"--b--\r\n")
    return plain + b".\r\n", attached + b".\r\n"


def reply(sock: socket.socket, buffer: bytearray) -> bytes:
    while True:
        end = buffer.find(b"\r\n")
        while end >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if len(line) >= 4 and line[3:4] == b" ":
                return line
            end = buffer.find(b"\r\n")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk


def mixed_load(port: int, count: int, size: int) -> dict[str, float]:
    """`count` messages over SESSIONS connections, every fifth with an attachment."""
    plain, attached = messages(size)
    per = count // SESSIONS
    failures = []
    codes: dict[bytes, int] = {}
    lock = threading.Lock()

    def session(n: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                buf = bytearray()
                reply(s, buf)
                s.sendall(b"EHLO bench.test\r\n")
                reply(s, buf)
                for i in range(per):
                    s.sendall(b"MAIL FROM:<a@bench.test>\r\n")
                    reply(s, buf)
                    s.sendall(b"RCPT TO:<r@example.test>\r\n")
                    reply(s, buf)
                    s.sendall(b"DATA\r\n")
                    reply(s, buf)
                    s.sendall(attached if (n * per + i) % 5 == 0 else plain)
                    code = reply(s, buf)[:3]
                    with lock:
                        codes[code] = codes.get(code, 0) + 1
                s.sendall(b"QUIT\r\n")
        except OSError as e:
            failures.append(repr(e))

    start = time.monotonic()
    threads = [threading.Thread(target=session, args=(n,)) for n in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    elapsed = time.monotonic() - start
    if failures:
        bench.log(f"mixed load: {len(failures)} session failures, e.g. {failures[0]}")
    return {"accept_msg_s": codes.get(b"250", 0) / elapsed, "seconds": elapsed,
            "accepted": codes.get(b"250", 0), "other": sum(v for k, v in codes.items() if k != b"250")}


def clamd_ceiling(count: int, size: int) -> dict[str, float]:
    """INSTREAM straight to clamd's socket, SESSIONS threads, one connection per scan."""
    plain, attached = messages(size)
    per = count // SESSIONS
    bad = []

    def frame(data: bytes) -> bytes:
        return b"zINSTREAM\0" + struct.pack(">I", len(data)) + data + struct.pack(">I", 0)

    frames = [frame(plain[:-3]), frame(attached[:-3])]

    def worker(n: int) -> None:
        for i in range(per):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(30)
                s.connect(str(CLAMD_SOCK))
                s.sendall(frames[(n * per + i) % 5 == 0])
                answer = b""
                while not answer.endswith(b"\0"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
                if b"OK" not in answer:
                    bad.append(answer)

    cpu0 = filter_cpu().get("clamd", 0.0)
    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    elapsed = time.monotonic() - start
    cpu = filter_cpu().get("clamd", 0.0) - cpu0
    n = per * SESSIONS
    return {"scans_s": n / elapsed, "clamd_cpu_ms": cpu / n * 1000, "errors": len(bad)}


class Sink:
    """smtp-sink on the Bulwark bench's next-hop port, for the mixed load."""

    def __init__(self, port: int):
        self.proc = subprocess.Popen(["smtp-sink", "-c", f"127.0.0.1:{port}", "1000"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def harness_rate(result: dict[str, str]) -> float:
    """e2e msg/s of a relay-bench.sh run; NaN (and the line logged) when it did not finish."""
    try:
        return float(result["e2e_msg_s"])
    except (KeyError, ValueError):
        bench.log(f"relay-bench did not finish: {result}")
        return float("nan")


def bulwark_run(work: Path, load: str, count: int, size: int, toml: str) -> dict[str, float]:
    b = bench.Bulwark(work, extra_toml=toml).start()
    try:
        cpu0, clam0 = b.cpu_seconds(), filter_cpu().get("clamd", 0.0)
        if load == "harness":
            r = bench.relay_bench(bench.BULWARK_PORT, bench.SINK_PORT, count, SESSIONS, size,
                                  {"QUEUE_CMD": b.queue_cmd(), "LABEL": "bulwark-av"})
            rate, n = harness_rate(r), count
        else:
            sink = Sink(bench.SINK_PORT)
            try:
                r = mixed_load(bench.BULWARK_PORT, count, size)
                deadline = time.monotonic() + 60
                while b.queued() > 0 and time.monotonic() < deadline:
                    time.sleep(0.2)
            finally:
                sink.stop()
            rate, n = r["accept_msg_s"], max(1, int(r["accepted"]))
        return {"msg_s": rate, "mta_cpu_ms": (b.cpu_seconds() - cpu0) / n * 1000,
                "clamd_cpu_ms": (filter_cpu().get("clamd", 0.0) - clam0) / n * 1000}
    finally:
        b.stop()


def postfix_run(load: str, count: int, size: int) -> dict[str, float]:
    cpu0, f0 = postfix_cgroup_cpu(), filter_cpu()
    if load == "harness":
        r = bench.postfix_relay(count, size, "postfix-clamav-milter")
        rate, n = harness_rate(r), count
    else:
        sink = Sink(bench.POSTFIX_SINK_PORT)
        try:
            r = mixed_load(bench.POSTFIX_PORT, count, size)
            queue_cmd = bench.postfix_queue_cmd()
            deadline = time.monotonic() + 60
            while bench.run(queue_cmd, shell=True).stdout.strip() not in ("0", "") and time.monotonic() < deadline:
                time.sleep(0.5)
            left = bench.run(queue_cmd, shell=True).stdout.strip()
            if left not in ("0", ""):
                # The next run refuses a dirty queue: what did not drain in 60 s is purged.
                bench.log(f"postfix: {left} messages still queued 60 s after the mixed load; purged")
                bench.shared("postfix-setup.sh", "--purge")
        finally:
            sink.stop()
        rate, n = r["accept_msg_s"], max(1, int(r["accepted"]))
    f1 = filter_cpu()
    return {"msg_s": rate, "mta_cpu_ms": (postfix_cgroup_cpu() - cpu0) / n * 1000,
            "clamd_cpu_ms": (f1.get("clamd", 0) - f0.get("clamd", 0)) / n * 1000,
            "milter_cpu_ms": (f1.get("clamav_milter", 0) - f0.get("clamav_milter", 0)) / n * 1000}


def runs_median(runs: list[dict], key: str) -> float:
    return bench.median(r.get(key) for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_mode_arguments(parser, "2,000 messages per setup, 1 round", "10,000 messages, 3 rounds")
    parser.add_argument("--size", type=int, default=10240)
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.short else 3)
    count = args.count or (2000 if args.short else 10000)
    if not bench.preflight():
        return 2
    bench.select_build(args)
    work = Path(tempfile.mkdtemp(prefix="bench-av-"))
    signatures = signature_dir(work)
    setups = {
        "postfix + clamav-milter": None,
        "bulwark clamd": ["clamd"],
        "bulwark builtin": ["builtin"],
        "bulwark clamd + builtin": ["clamd", "builtin"],
    }
    results: dict[tuple[str, str], list[dict]] = {}
    ceiling = []
    try:
        bench.postfix_start()
        bench.filter_peers("start", "clamav")
        time.sleep(2)
        for r in range(rounds):
            ceiling.append(clamd_ceiling(count, args.size))
            bench.log(f"round {r + 1}: clamd ceiling {ceiling[-1]['scans_s']:.0f} scans/s")
            for load in ("harness", "mixed"):
                for name, engines in setups.items():
                    if engines is None:
                        out = postfix_run(load, count, args.size)
                    else:
                        out = bulwark_run(work, load, count, args.size, av_toml(engines, signatures))
                    results.setdefault((load, name), []).append(out)
                    bench.log(f"round {r + 1} {load} {name}: {out['msg_s']:.0f} msg/s, "
                              f"MTA {out['mta_cpu_ms']:.2f} ms, clamd {out['clamd_cpu_ms']:.2f} ms")
    finally:
        try:
            bench.filter_peers("stop", timeout=300)
        finally:
            bench.postfix_stop()
    report(args, rounds, count, results, ceiling)
    return 0


def report(args, rounds, count, results, ceiling) -> None:
    lines = [f"\n## Anti-virus ({bench.now()}, {bench.machine(args)})\n",
             f"Command: `{bench.command('av_bench.py', args)}`. {count} messages of {args.size} B per setup, {SESSIONS} sessions, "
             f"{rounds} round(s), medians. Same clamd (filter-peers-setup.sh, one EICAR signature) "
             "for every setup; Postfix uses clamav-milter on a unix socket. Built-in engine: 1,000 "
             "MD5 + 1,000 SHA-256 signatures.\n"]
    c = {k: statistics.median([x[k] for x in ceiling]) for k in ceiling[0]} if ceiling else {}
    if c:
        lines.append(f"clamd's own INSTREAM ceiling (20 threads, one connection per scan, the mixed "
                     f"messages): **{c['scans_s']:.0f} scans/s**, clamd {c['clamd_cpu_ms']:.2f} ms CPU per scan.\n")
    for load, title in (("harness", "smtp-source 10 KB text, end to end"),
                        ("mixed", "10 KB, 20 % with a zip attachment, accept-only")):
        base = runs_median(results.get((load, "postfix + clamav-milter"), []), "msg_s")
        lines.append(f"\n{title}:\n\n| setup | msg/s | vs Postfix | of clamd ceiling | MTA CPU ms/msg | clamd CPU ms/msg |\n"
                     "| --- | --- | --- | --- | --- | --- |")
        for (l, name), runs in results.items():
            if l != load:
                continue
            rate = runs_median(runs, "msg_s")
            mta = runs_median(runs, "mta_cpu_ms") + (runs_median(runs, "milter_cpu_ms") if "postfix" in name else 0)
            share = f"{rate / c['scans_s'] * 100:.0f} %" if c and "clamd" in name else "–"
            lines.append(f"| {name} | {rate:.0f} | {bench.ratio(rate, base)} | {share} | {mta:.2f} | "
                         f"{runs_median(runs, 'clamd_cpu_ms'):.2f} |")
    lines.append("\nPostfix's MTA CPU includes clamav-milter's. Compare only within this run.\n")
    bench.append_results("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
