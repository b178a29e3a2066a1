#!/bin/bash
# Rebuilds the shipped models from test/data/fine_foods_train.csv.
#
#   fine_foods_sentiment.ftz: fastText supervised (the fasttext tool, Debian's
#   0.9.2), quantized; every 5th review is held out for the model card.
#
# Deterministic: one thread and a fixed seed.
set -euo pipefail
cd "$(dirname "$0")"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

python3 - "$WORK" <<'PY'
import csv, sys
work = sys.argv[1]
rows = list(csv.DictReader(open('../test/data/fine_foods_train.csv', encoding='utf-8')))
with open(f'{work}/train.txt', 'w', encoding='utf-8') as train, \
     open(f'{work}/heldout.txt', 'w', encoding='utf-8') as heldout:
    for i, row in enumerate(rows):
        text = ' '.join(row['review'].split())
        (heldout if i % 5 == 4 else train).write(f"__label__{row['score']} {text}\n")
PY

fasttext supervised -input "$WORK/train.txt" -output "$WORK/sentiment" \
	-dim 50 -epoch 25 -lr 0.1 -wordNgrams 2 -minn 2 -maxn 4 -bucket 200000 \
	-thread 1 -seed 1 -verbose 0
fasttext quantize -input "$WORK/train.txt" -output "$WORK/sentiment" \
	-qnorm -cutoff 20000 -retrain -epoch 5 -thread 1 -verbose 0
cp "$WORK/sentiment.ftz" fine_foods_sentiment.ftz

echo "fine_foods_sentiment.ftz: $(stat -c %s fine_foods_sentiment.ftz) bytes"
echo "held-out (every 5th review, $(wc -l < "$WORK/heldout.txt") rows):"
fasttext test fine_foods_sentiment.ftz "$WORK/heldout.txt"
echo "dense parent on the same rows:"
fasttext test "$WORK/sentiment.bin" "$WORK/heldout.txt"
