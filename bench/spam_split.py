#!/usr/bin/env python3
"""The fixed split of the SpamAssassin public corpus for Bulwark's anti-spam model.

    spam_split.py DATA_DIR OUT_DIR [--by-time]

DATA_DIR holds easy-ham-1, easy-ham-2, hard-ham-1, spam-1, spam-2 (one message a file).
Default: a message is held out when int(md5("SET/FILE"), 16) % 5 == 0, else it is for
training; OUT_DIR/{train,heldout}/{spam,ham} get symlinks. --by-time instead trains on
the older sets (spam-1, easy-ham-1) and holds out the newer ones (spam-2, easy-ham-2) and
hard-ham-1 (undated, kept out of training so nothing in the test leaks into the model).
"""

import hashlib
import os
import sys

SETS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham",
        "spam-1": "spam", "spam-2": "spam"}
OLDER = {"easy-ham-1", "spam-1"}


def held_out(set_name: str, file_name: str, by_time: bool) -> bool:
    if by_time:
        return set_name not in OLDER
    digest = hashlib.md5(f"{set_name}/{file_name}".encode()).hexdigest()
    return int(digest, 16) % 5 == 0


def split(data: str, out: str, by_time: bool = False) -> dict:
    counts = {}
    for part in ("train", "heldout"):
        for label in ("spam", "ham"):
            os.makedirs(os.path.join(out, part, label), exist_ok=True)
    for set_name, label in SETS.items():
        directory = os.path.join(data, set_name)
        for name in sorted(n for n in os.listdir(directory) if n.endswith(".txt")):
            part = "heldout" if held_out(set_name, name, by_time) else "train"
            link = os.path.join(out, part, label, f"{set_name}-{name}")
            os.symlink(os.path.abspath(os.path.join(directory, name)), link)
            counts[(part, label)] = counts.get((part, label), 0) + 1
    return counts


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    counts = split(args[0], args[1], "--by-time" in sys.argv)
    for (part, label), n in sorted(counts.items()):
        print(f"{part}/{label}: {n}", file=sys.stderr)
