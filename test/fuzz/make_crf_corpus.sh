#!/bin/bash
# Regenerates the CRF fuzz corpus: small but valid CRF extractor models,
# trained by test/extract/crf_tool.c on a few messages from
# test/extract/gen_messages.py, each kept small (a fuzzer mutates small
# inputs far more effectively).
#
#   test/fuzz/make_crf_corpus.sh [OUTDIR]     (default: test/fuzz/crf_corpus)
#
# Needs gcc, liblbfgs and python3.  The generator and training are seeded,
# so reruns give the same files.
#
# file              what it covers
# tiny.bin          9 fields, default features, an out-of-fold value lexicon
# nolex_all.bin     9 fields, every feature group (+bag +line), no lexicon
# ship_line.bin     one kind of message (shipping notices): fewer fields, +line
# one_field.bin     a single field (email): the smallest label set, 3 labels
# short_tokens.bin  max_tokens 16, so that longer texts are cut
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$HERE/../..
OUT=${1:-$HERE/crf_corpus}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

gcc -O2 -I"$ROOT/src" "$ROOT/test/extract/crf_tool.c" "$ROOT"/src/crf_tokenize.c \
	"$ROOT"/src/crf_features.c "$ROOT"/src/crf_align.c "$ROOT"/src/crf_train.c \
	"$ROOT"/src/crf_decode.c "$ROOT"/src/crf_model.c "$ROOT"/src/triage_core.c \
	-llbfgs -lm -o "$WORK/crf_tool"
GEN="python3 $ROOT/test/extract/gen_messages.py --format tsv"
$GEN --seed 21 --count 20 --out "$WORK/all.tsv"
$GEN --seed 22 --count 12 --kinds shipping_notice --out "$WORK/ship.tsv"
# keep only the email of each message (the messages without one are dropped)
perl -F'\t' -lane 'for ($i = 1; $i < $#F; $i += 2) { print "$F[0]\temail\t$F[$i+1]" if $F[$i] eq "email" }' \
	"$WORK/all.tsv" >"$WORK/email.tsv"

train() {
	local name=$1 input=$2; shift 2
	"$WORK/crf_tool" train "$WORK/$input" "$OUT/$name" seed=1 max_iterations=25 "$@" >/dev/null
}

train tiny.bin all.tsv min_feature_count=3
train nolex_all.bin all.tsv min_feature_count=3 lexicon_folds=0 features=+bag,+line
train ship_line.bin ship.tsv min_feature_count=3 features=+line
train one_field.bin email.tsv min_feature_count=2
train short_tokens.bin ship.tsv min_feature_count=4 max_tokens=16
ls -l "$OUT"
