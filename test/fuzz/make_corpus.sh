#!/bin/bash
# Regenerates the fuzz corpus: small but valid fastText models, one per
# feature the loader handles, trained on a few rows of the fine-foods data
# with tiny settings so that each file stays well under 60 KB (a fuzzer
# mutates small inputs far more effectively).
#
#   test/fuzz/make_corpus.sh [OUTDIR]     (default: test/fuzz/corpus)
#
# Needs the fasttext tool (Debian package fasttext, 0.9.2) and perl.
# Training uses one thread and a fixed seed, so reruns give the same files.
#
# file                      what it covers
# softmax_ngrams.bin        softmax, word bigrams (-wordNgrams 2 -bucket 500)
# hs.bin                    hierarchical softmax over 73 labels (first word
#                           of each review as its label), no buckets
# ova.bin                   one-vs-all, no buckets
# ns.bin                    negative sampling (-neg 2), no buckets
# charngrams.bin            char n-grams (-minn 2 -maxn 4 -bucket 500)
# quant_qnorm_cutoff.ftz    softmax_ngrams quantized with -qnorm -cutoff 300
#                           (pruned dictionary)
# quant_dsub1_cutoff.ftz    softmax_ngrams quantized with -dsub 1 -cutoff 300:
#                           pruned without qnorm, 4 sub-quantizers
# quant_charngrams.ftz      charngrams quantized without cutoff (not pruned)
# qout.ftz                  541 labels, quantized with -qout -qnorm -cutoff 300
# tiny.bin                  20 rows, dim 2, 10 buckets: about 4 KB
# skipgram.bin              an unsupervised model, which the loader rejects
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$HERE/../data/fine_foods_train.csv
OUT=${1:-$HERE/corpus}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

# CSV (product, review, score) to fastText lines: "__label__<score> words",
# lowercased, markup and punctuation turned into spaces
perl -ne '
	next if $. == 1;
	chomp; s/\r$//;
	/^"((?:[^"]|"")*)","((?:[^"]|"")*)","((?:[^"]|"")*)"$/ or die "line $.: not 3 quoted fields\n";
	my ($review, $score) = ($2, $3);
	$review =~ s/""/"/g;
	$review = lc $review;
	$review =~ s/<br\s*\/?>/ /g;
	$review =~ s/[^a-z0-9\x80-\xff]+/ /g;
	$review =~ s/^ +| +$//g;
	print "__label__$score $review\n";
' "$DATA" >"$WORK/all.txt"

# The same reviews labelled by their first word: hundreds of labels
perl -ne '
	chomp;
	my (undef, @w) = split / /;
	next unless @w > 1;
	my $label = shift @w;
	print "__label__$label @w\n";
' "$WORK/all.txt" >"$WORK/first.txt"

head -n 200 "$WORK/all.txt" >"$WORK/score200.txt"
head -n 200 "$WORK/first.txt" >"$WORK/first200.txt"
head -n 20 "$WORK/all.txt" >"$WORK/score20.txt"
cut -d' ' -f2- "$WORK/score200.txt" >"$WORK/text200.txt"

COMMON="-dim 4 -minCount 5 -epoch 1 -lr 0.5 -thread 1 -seed 1 -verbose 0"

train() {
	local name=$1 input=$2; shift 2
	fasttext supervised -input "$WORK/$input" -output "$WORK/$name" $COMMON "$@"
}

train softmax_ngrams score200.txt -loss softmax -wordNgrams 2 -bucket 500
train hs first200.txt -loss hs -bucket 0
train ova score200.txt -loss one-vs-all -bucket 0
train ns score200.txt -loss ns -neg 2 -bucket 0
train charngrams score200.txt -minn 2 -maxn 4 -bucket 500
fasttext supervised -input "$WORK/score20.txt" -output "$WORK/tiny" \
	-dim 2 -minCount 2 -epoch 1 -wordNgrams 2 -bucket 10 -thread 1 -seed 1 -verbose 0
# qout needs an output matrix of at least 256 rows, so at least 256 labels
fasttext supervised -input "$WORK/first.txt" -output "$WORK/qout" \
	-dim 4 -minCount 50 -bucket 0 -epoch 1 -thread 1 -seed 1 -verbose 0

# quantize reads OUTPUT.bin and writes OUTPUT.ftz; product quantization
# needs at least 256 rows, hence -cutoff 300 rather than smaller
cp "$WORK/softmax_ngrams.bin" "$WORK/quant_qnorm_cutoff.bin"
fasttext quantize -input "$WORK/score200.txt" -output "$WORK/quant_qnorm_cutoff" \
	-qnorm -cutoff 300 -thread 1 -verbose 0
cp "$WORK/softmax_ngrams.bin" "$WORK/quant_dsub1_cutoff.bin"
fasttext quantize -input "$WORK/score200.txt" -output "$WORK/quant_dsub1_cutoff" \
	-dsub 1 -cutoff 300 -thread 1 -verbose 0
cp "$WORK/charngrams.bin" "$WORK/quant_charngrams.bin"
fasttext quantize -input "$WORK/score200.txt" -output "$WORK/quant_charngrams" \
	-thread 1 -verbose 0
fasttext quantize -input "$WORK/first.txt" -output "$WORK/qout" \
	-qout -qnorm -cutoff 300 -thread 1 -verbose 0

fasttext skipgram -input "$WORK/text200.txt" -output "$WORK/skipgram" \
	-dim 4 -minCount 10 -minn 2 -maxn 3 -bucket 100 -epoch 1 -thread 1 -seed 1 -verbose 0

for f in softmax_ngrams.bin hs.bin ova.bin ns.bin charngrams.bin tiny.bin skipgram.bin \
	quant_qnorm_cutoff.ftz quant_dsub1_cutoff.ftz quant_charngrams.ftz qout.ftz; do
	cp "$WORK/$f" "$OUT/$f"
done
ls -l "$OUT"
