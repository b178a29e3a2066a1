#!/bin/bash
# The optional inputs of test/core/test_quantize.c, made in DIR from the
# shared reviews with the fasttext tool ("make deps" installs it), so that
# its dense-.bin and -qout cases run instead of skipping:
#
#   DIR/dense.bin       a dense great/other classifier (the recipe in
#                       test_quantize.c, on 1 thread so that it is the same
#                       model every run)
#   DIR/lines.txt       the reviews, one per line
#   DIR/many.bin        a classifier with one label per first word (602)
#   DIR/ref/            `fasttext quantize` of both, as test_quantize
#                       quantizes them: quantized_cutoff0.ftz,
#                       quantized_cutoff5000.ftz, quantized_qout.ftz
#   DIR/out/            empty, where test_quantize writes its own
#
#   test/harness/quantize_inputs.sh DIR
#
# Exits non-zero, saying why, if any of them could not be made.  About 20 s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$1
mkdir -p "$DIR/ref" "$DIR/out"
command -v fasttext >/dev/null || { echo "no fasttext tool (make deps installs it)"; exit 1; }

python3 - "$ROOT/test/data/fine_foods_train.csv" "$DIR" <<'EOF'
import csv, sys
src, d = sys.argv[1], sys.argv[2]
with open(src, newline='') as f, open(d + '/train.txt', 'w') as t, \
		open(d + '/many.txt', 'w') as m, open(d + '/lines.txt', 'w') as l:
	for r in csv.DictReader(f):
		review = ' '.join(r['review'].split())
		first = (review.split() or ['none'])[0].lower()
		t.write('__label__%s %s\n' % (r['score'], review))
		m.write('__label__%s %s\n' % (first, review))
		l.write(review + '\n')
EOF

fasttext supervised -input "$DIR/train.txt" -output "$DIR/dense" -dim 16 -wordNgrams 2 \
	-minn 3 -maxn 4 -bucket 100000 -epoch 10 -lr 0.5 -thread 1 -verbose 0
fasttext supervised -input "$DIR/many.txt" -output "$DIR/many" -dim 16 -epoch 10 -lr 0.5 \
	-thread 1 -verbose 0

# fasttext quantize reads OUTPUT.bin and writes OUTPUT.ftz
quantize() {	# quantize BIN INPUT NAME OPTION...
	local bin=$1 input=$2 name=$3
	shift 3
	cp "$bin" "$DIR/ref/$name.bin"
	fasttext quantize -input "$input" -output "$DIR/ref/$name" "$@" >"$DIR/ref/$name.log" 2>&1 ||
		{ cat "$DIR/ref/$name.log"; return 1; }
	rm "$DIR/ref/$name.bin"
	[ -s "$DIR/ref/$name.ftz" ] || { echo "fasttext quantize made no $name.ftz"; return 1; }
}
quantize "$DIR/dense.bin" "$DIR/train.txt" quantized_cutoff0 -dsub 2 -qnorm
quantize "$DIR/dense.bin" "$DIR/train.txt" quantized_cutoff5000 -dsub 2 -qnorm -cutoff 5000
quantize "$DIR/many.bin" "$DIR/many.txt" quantized_qout -dsub 2 -qnorm -qout

# what test_quantize does not read (13 MB)
rm -f "$DIR/dense.vec" "$DIR/many.vec" "$DIR/train.txt" "$DIR/many.txt"
