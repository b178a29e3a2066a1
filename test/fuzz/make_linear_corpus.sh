#!/bin/bash
# Regenerates the linear-model fuzz corpus: small but valid linear models
# trained on a few reviews of test/data/fine_foods_train.csv, each kept to
# a few KB by a high min_df (a fuzzer mutates small inputs far better).
#
#   test/fuzz/make_linear_corpus.sh [OUTDIR]     (default: test/fuzz/linear_corpus)
#
# Needs gcc, liblbfgs, libutf8proc and python3.  Training is seeded, so
# reruns give the same files.
#
# file              what it covers
# tiny.bin          defaults (word 1-3 grams, int8), 300 reviews, min_df 8
# float.bin         float weights (quantize off), word unigrams and bigrams
# chars_nb.bin      character 2-4 grams and NB ratios, digit shapes
# three.bin         three labels (great, other, long), int8 rows that are not symmetric
# identity.bin      no normalization at all, L1 (OWL-QN), 1024 buckets
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$HERE/../..
OUT=${1:-$HERE/linear_corpus}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

# label TAB text, one review a line
python3 - "$ROOT/test/data/fine_foods_train.csv" >"$WORK/reviews.tsv" <<'PY'
import csv, sys
for i, row in enumerate(csv.DictReader(open(sys.argv[1], newline=''))):
    if i >= 300:
        break
    label = row['score'] if len(row['review']) < 600 else 'long'
    print(label + '\t' + row['review'].replace('\t', ' ').replace('\n', ' '))
PY

cat >"$WORK/tool.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "linear.h"

/* tool OUT THREE option=value...: reads label TAB text lines on stdin */
int
main(int argc, char **argv)
{
	static char line[65536];
	static const char *names[] = {"great", "other", "long"};
	LinearExample *ex = malloc(sizeof(LinearExample) * 1000);
	int			n = 0, three = atoi(argv[2]);
	LinearOptions o;
	LinearModel *m;
	uint8_t    *bytes;
	size_t		len;
	char		err[256];
	FILE	   *f;

	LinearDefaults(&o);
	o.seed = 1;
	for (int a = 3; a < argc; a++)
	{
		char		k[64];
		double		v;

		if (sscanf(argv[a], "%63[^=]=%lf", k, &v) != 2)
			return 2;
#define OPT(name, field) if (strcmp(k, name) == 0) o.field = v
		OPT("ngram_max", ngram_max); OPT("char_min", char_min); OPT("char_max", char_max);
		OPT("buckets", buckets); OPT("min_df", min_df); OPT("nb", nb); OPT("c", c); OPT("l1", l1);
		OPT("quantize", quantize); OPT("digit_shape", normalize.digit_shape);
		OPT("lowercase", normalize.lowercase); OPT("split_punct", normalize.split_punct);
		OPT("strip_html", normalize.strip_html);
	}
	while (n < 1000 && fgets(line, sizeof(line), stdin))
	{
		char	   *tab = strchr(line, '\t');
		int			y;

		if (tab == NULL)
			continue;
		*tab = '\0';
		y = strcmp(line, "great") == 0 ? 0 : strcmp(line, "other") == 0 ? 1 : 2;
		if (!three && y == 2)
			y = 1;
		ex[n].text = strdup(tab + 1);
		ex[n].len = strlen(tab + 1);
		ex[n].label = y;
		n++;
	}
	if (LinearTrain(&o, names, three ? 3 : 2, ex, n, NULL, &m, NULL, err, sizeof(err)) != TRIAGE_OK ||
		LinearSave(m, NULL, &bytes, &len, err, sizeof(err)) != TRIAGE_OK)
	{
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	f = fopen(argv[1], "wb");
	fwrite(bytes, 1, len, f);
	fclose(f);
	return 0;
}
C
gcc -O2 -I"$ROOT/src" "$WORK/tool.c" "$ROOT"/src/triage_core.c "$ROOT"/src/text_normalize.c \
	"$ROOT"/src/linear_features.c "$ROOT"/src/linear_model.c "$ROOT"/src/linear_predict.c \
	"$ROOT"/src/linear_train.c -llbfgs -lutf8proc -lm -o "$WORK/tool"

train() {
	local name=$1 three=$2; shift 2
	"$WORK/tool" "$OUT/$name" "$three" "$@" <"$WORK/reviews.tsv"
}

train tiny.bin 0 min_df=8 c=4
train float.bin 0 min_df=10 ngram_max=2 quantize=0 c=4
train chars_nb.bin 0 min_df=40 char_min=2 char_max=4 nb=1 digit_shape=1 c=4
train three.bin 1 min_df=10 c=4
train identity.bin 0 min_df=8 lowercase=0 split_punct=0 strip_html=0 l1=0.1 buckets=1024 c=4
ls -l "$OUT"
