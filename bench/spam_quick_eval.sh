#!/bin/sh
# bench/spam_quick_eval.sh NAME [train options...]: Bulwark only, no peers. Expects the splits
# made by `python3 bench/spam_split.py DATA /tmp/sx/rand` and `... /tmp/sx/time --by-time`;
# trains on each split's train part and scores its held-out part with `spam check --model`.
set -eu
name=$1; shift
ctl=${CTL:-/work/spam/target/debug/bulwarkctl}
for split in rand time; do
  nice -n 10 $ctl spam train --spam /tmp/sx/$split/train/spam --ham /tmp/sx/$split/train/ham --out /tmp/sx/$name-$split.model "$@" > /tmp/sx/$name-$split.train
  for label in spam ham; do
    find /tmp/sx/$split/heldout/$label -type l | sort | xargs -n 1000 nice -n 10 $ctl spam check --model /tmp/sx/$name-$split.model 2>/dev/null > /tmp/sx/$name-$split-$label.scores
  done
  python3 - /tmp/sx/$name-$split "$split" <<'PY'
import sys
base, split = sys.argv[1], sys.argv[2]
def load(l):
    return [float(x.split('\t')[1]) if x.split('\t')[1] != 'unparsable' else 0.0 for x in open(f"{base}-{l}.scores")]
s, h = load('spam'), load('ham')
for t in (4.0, 5.0, 6.0):
    print(f"{split} @{t}: spam {100*sum(x>=t for x in s)/len(s):.2f}% ham {100*sum(x>=t for x in h)/len(h):.2f}% ({sum(x>=t for x in h)}/{len(h)})")
PY
  grep "logistic regression" /tmp/sx/$name-$split.train | head -2
done
