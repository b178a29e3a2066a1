/*
 * test_linear.c
 *		Unit tests of token normalization (text_normalize.h) and the linear
 *		classifier core (linear.h), meant to run under ASan/UBSan.  Prints
 *		one TAP line per check.
 *
 *	test_linear [DATADIR]	(default test/data: fine_foods_train.csv)
 *
 * Build: gcc -O2 -g -fsanitize=address,undefined -Isrc test/core/test_linear.c \
 *		src/triage_core.c src/text_normalize.c src/linear_*.c -llbfgs -lutf8proc -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linear_internal.h"
#include "check.h"
#include "read_file.h"

/* ---------------------------------------------------------------------
 * Normalization
 * --------------------------------------------------------------------- */

/* Normalize s (from an exactly-sized heap copy, so ASan sees overreads) */
static char *
Norm(const TextNormalizeOptions *o, const char *s, size_t len)
{
	static char *out = NULL;
	static size_t cap = 0;
	char	   *copy = malloc(len ? len : 1);
	char	   *result;
	size_t		outlen;
	char		err[256];

	if (o == NULL)
	{
		/* the end: give the buffer back */
		free(out);
		free(copy);
		out = NULL;
		cap = 0;
		return NULL;
	}
	memcpy(copy, s, len);
	if (TextNormalize(o, copy, len, NULL, &out, &cap, &outlen, err, sizeof(err)) != TRIAGE_OK)
	{
		free(copy);
		return NULL;
	}
	free(copy);
	result = malloc(outlen + 1);
	memcpy(result, out, outlen);
	result[outlen] = '\0';
	return result;
}

static int
NormIs(const TextNormalizeOptions *o, const char *s, const char *want)
{
	char	   *got = Norm(o, s, strlen(s));
	int			ok = got != NULL && strcmp(got, want) == 0;

	if (!ok)
		printf("# normalize \"%s\": got \"%s\", want \"%s\"\n", s, got ? got : "(error)", want);
	free(got);
	return ok;
}

static void
TestNormalize(void)
{
	TextNormalizeOptions d,
				none,
				digits;
	char	   *a,
			   *b;
	char		junk[4096];
	int			bounded = 1;

	TextNormalizeDefaults(&d);
	memset(&none, 0, sizeof(none));
	digits = d;
	digits.digit_shape = true;

	Check(!TextNormalizeIsIdentity(&d) && TextNormalizeIsIdentity(&none), "normalize: defaults are not the identity, all false is");
	Check(NormIs(&d, "Great!<br />Love it", "great ! love it"), "normalize: case, tag, punctuation");
	a = Norm(&d, "Great!<br />Love it", 19);
	b = Norm(&d, "great ! love   it", 17);
	Check(a && b && strcmp(a, b) == 0, "normalize: texts differing in case, HTML and spacing give the same tokens");
	free(a);
	free(b);
	Check(NormIs(&d, "Tom &amp; Jerry&#39;s &quot;best&quot; &lt;3 &#x27;x&#X27;&nbsp;y",
				 "tom & jerry ' s \" best \" < 3 ' x ' y"), "normalize: entities decoded (named, decimal, hex)");
	Check(NormIs(&d, "&bogus; &#; &#xZZ; &amp", "& bogus ; & # ; & # xzz ; & amp"), "normalize: unknown or broken entities stay text");
	Check(NormIs(&d, "<p>A</p><a href=\"x\">b</a>", "a b"), "normalize: tags with attributes become spaces");
	Check(NormIs(&d, "<3 a<b 1 < 2", "< 3 a < b 1 < 2"), "normalize: a '<' that opens no tag is punctuation");
	Check(NormIs(&d, "\xc3\x87" "A CO\xc3\x9bTE 5\xe2\x82\xac", "\xc3\xa7" "a co\xc3\xbbte 5 \xe2\x82\xac"), "normalize: UTF-8 lower case, the euro sign a token");
	Check(NormIs(&d, "\xc2\xab" "Oui" "\xc2\xbb" "\xe2\x80\x94" "non", "\xc2\xab oui \xc2\xbb \xe2\x80\x94 non"), "normalize: Unicode quotes and dashes are tokens");
	Check(NormIs(&d, "a\xc2\xa0" "b\xe2\x80\x83" "c\td\n\ne", "a b c d e"), "normalize: Unicode and ASCII spaces separate");
	Check(NormIs(&d, "soft\xc2\xad" "hyphen", "softhyphen"), "normalize: format characters (soft hyphen) dropped");
	Check(NormIs(&digits, "Call 555-0147 or \xd9\xa3", "call 000 - 0000 or 0"), "normalize: digit shapes, Arabic-Indic too");
	Check(NormIs(&d, "Call 555-0147", "call 555 - 0147"), "normalize: digits kept without digit_shape");
	Check(NormIs(&d, "\xff\xfe" "AB \xc3 x\xe2\x82", "\xff\xfe" "ab \xc3 x\xe2\x82"), "normalize: invalid UTF-8 bytes pass through");
	Check(NormIs(&d, "", "") && NormIs(&d, "   \t ", "") && NormIs(&d, "<br/>", ""), "normalize: empty and blank give nothing");
	Check(NormIs(&none, "  Keep <b>THIS</b> &amp;  ", "  Keep <b>THIS</b> &amp;  "), "normalize: all options off is the identity");

	/* the output bound on hostile inputs */
	for (int trial = 0; trial < 200; trial++)
	{
		TriageRng	rng = {(uint64_t) trial};
		size_t		len = 1 + TriageRngNext(&rng) % sizeof(junk);
		char	   *out;
		static const char alphabet[] = "<>&#;x!a A\xc3\xa9\xe2\x82\xac\xff";

		for (size_t i = 0; i < len; i++)
			junk[i] = alphabet[TriageRngNext(&rng) % (sizeof(alphabet) - 1)];
		out = Norm(trial % 2 ? &digits : &d, junk, len);
		if (out == NULL || strlen(out) > TEXT_NORMALIZE_BOUND(len))
			bounded = 0;
		free(out);
	}
	Check(bounded, "normalize: 200 random texts of markup and UTF-8 stay within 3 * len + 16");
	(void) Norm(NULL, "", 0);
}

/* ---------------------------------------------------------------------
 * Synthetic data: three topics, words shared between them as noise
 * --------------------------------------------------------------------- */

static const char *const Labels3[] = {"sports", "food", "tech"};
static const char *const Topic[3][8] = {
	{"goal", "match", "team", "coach", "League", "score", "player", "stadium"},
	{"Tasty", "recipe", "flavor", "sauce", "dinner", "spicy", "baked", "fresh"},
	{"laptop", "software", "CPU", "battery", "screen", "update", "chip", "cloud"},
};
static const char *const Noise[] = {"the", "a", "was", "really", "today", "I", "think", "new", "good", "very"};

typedef struct Data
{
	LinearExample *ex;
	char	  **texts;
	int			n;
} Data;

static Data
MakeData(int n, uint64_t seed)
{
	Data		d;
	TriageRng	rng = {seed};

	d.n = n;
	d.ex = malloc(sizeof(LinearExample) * n);
	d.texts = malloc(sizeof(char *) * n);
	for (int i = 0; i < n; i++)
	{
		char		buf[512];
		size_t		o = 0;
		int			y = (int) (TriageRngNext(&rng) % 3);
		int			words = 4 + (int) (TriageRngNext(&rng) % 8);

		for (int w = 0; w < words; w++)
		{
			const char *word;
			uint64_t	r = TriageRngNext(&rng) % 10;

			if (r < 4)
				word = Topic[y][TriageRngNext(&rng) % 8];
			else if (r < 5)
				word = Topic[(y + 1 + TriageRngNext(&rng) % 2) % 3][TriageRngNext(&rng) % 8];
			else
				word = Noise[TriageRngNext(&rng) % 10];
			o += (size_t) snprintf(buf + o, sizeof(buf) - o, "%s%s", w ? (r == 9 ? ", " : " ") : "", word);
		}
		d.texts[i] = strdup(buf);
		d.ex[i].text = d.texts[i];
		d.ex[i].len = o;
		d.ex[i].label = y;
	}
	return d;
}

static void
FreeData(Data *d)
{
	for (int i = 0; i < d->n; i++)
		free(d->texts[i]);
	free(d->texts);
	free(d->ex);
}

static double
Accuracy(const LinearModel *m, const Data *d)
{
	LinearScratch s;
	int			ok = 0;
	TriagePrediction p[3];
	int32_t		n;
	char		err[256];

	LinearScratchInit(&s, NULL);
	for (int i = 0; i < d->n; i++)
		if (LinearPredict(m, &s, d->ex[i].text, d->ex[i].len, 1, 0.0f, p, &n, err, sizeof(err)) == TRIAGE_OK &&
			n == 1 && p[0].label == d->ex[i].label)
			ok++;
	LinearScratchFree(&s);
	return (double) ok / d->n;
}

/* Largest difference of any label's probability between two models on d */
static double
MaxProbDiff(const LinearModel *a, const LinearModel *b, const Data *d, int *bitwise)
{
	LinearScratch s;
	TriagePrediction pa[3],
				pb[3];
	int32_t		na,
				nb;
	double		max = 0.0;
	char		err[256];

	*bitwise = 1;
	LinearScratchInit(&s, NULL);
	for (int i = 0; i < d->n; i++)
	{
		if (LinearPredict(a, &s, d->ex[i].text, d->ex[i].len, -1, 0.0f, pa, &na, err, sizeof(err)) != TRIAGE_OK ||
			LinearPredict(b, &s, d->ex[i].text, d->ex[i].len, -1, 0.0f, pb, &nb, err, sizeof(err)) != TRIAGE_OK ||
			na != nb)
			return 1e9;
		for (int j = 0; j < na; j++)
		{
			double		diff = 0.0;

			for (int k = 0; k < nb; k++)
				if (pb[k].label == pa[j].label)
					diff = fabs((double) pa[j].probability - pb[k].probability);
			if (diff > max)
				max = diff;
			if (pa[j].label != pb[j].label || pa[j].probability != pb[j].probability || pa[j].score != pb[j].score)
				*bitwise = 0;
		}
	}
	LinearScratchFree(&s);
	return max;
}

static LinearModel *
Train(const LinearOptions *o, const Data *d, LinearTrainStats *stats, char *err)
{
	LinearModel *m = NULL;

	if (LinearTrain(o, Labels3, 3, d->ex, d->n, NULL, &m, stats, err, 256) != TRIAGE_OK)
	{
		printf("# train: %s\n", err);
		return NULL;
	}
	return m;
}

static int
ErrorNames(const LinearOptions *o, const char *name)
{
	char		err[256] = "";
	int			ok = LinearCheckOptions(o, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT && strstr(err, name) != NULL;

	if (!ok)
		printf("# expected an error naming %s, got \"%s\"\n", name, err);
	return ok;
}

static void
TestOptions(void)
{
	LinearOptions o;
	char		err[256];
	Data		d = MakeData(30, 3);
	LinearModel *m = NULL;
	static const char *const two[] = {"a", "b"};
	static const char *const dup[] = {"a", "b", "a"};
	static const char *const empty[] = {"a", ""};

	LinearDefaults(&o);
	Check(LinearCheckOptions(&o, err, sizeof(err)) == TRIAGE_OK && o.ngram_min == 1 && o.ngram_max == 3 &&
		  o.buckets == 1 << 20 && o.min_df == 2 && o.folds == 5 && o.quantize && o.sublinear_tf &&
		  o.normalize.lowercase && o.normalize.split_punct && o.normalize.strip_html && !o.normalize.digit_shape,
		  "options: defaults are valid and as documented");
#define BAD(field, value, name, what) \
	do { LinearDefaults(&o); o.field = value; Check(ErrorNames(&o, name), "options: " what); } while (0)
	BAD(ngram_max, 6, "ngram_max must be between ngram_min", "ngram_max 6 is a named error");
	BAD(ngram_min, 0, "ngram_min", "ngram_min 0 is a named error");
	BAD(char_max, 3, "char_max", "char_max without char_min is a named error");
	BAD(buckets, 100, "buckets", "buckets 100 is a named error");
	BAD(buckets, (1 << 26) + 1, "buckets", "buckets over 2^26 is a named error");
	BAD(min_df, 0, "min_df", "min_df 0 is a named error");
	BAD(c, -1, "c must be", "negative c is a named error");
	BAD(c, NAN, "c must be", "NaN c is a named error");
	BAD(l1, -0.5, "l1", "negative l1 is a named error");
	BAD(folds, 1, "folds", "folds 1 is a named error");
	BAD(max_iterations, 0, "max_iterations", "max_iterations 0 is a named error");
	LinearDefaults(&o);
	o.char_min = 4;
	o.char_max = 2;
	Check(ErrorNames(&o, "char_max must be between char_min"), "options: char_max below char_min is a named error");
#undef BAD

	LinearDefaults(&o);
	o.nb = true;
	Check(LinearTrain(&o, Labels3, 3, d.ex, d.n, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT &&
		  m == NULL && strstr(err, "nb") && strstr(err, "two labels"), "train: nb with three labels is a clear error");
	LinearDefaults(&o);
	Check(LinearTrain(&o, dup, 3, d.ex, d.n, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT &&
		  strstr(err, "twice"), "train: a label given twice is an error");
	Check(LinearTrain(&o, empty, 2, d.ex, 2, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT &&
		  strstr(err, "empty"), "train: an empty label is an error");
	Check(LinearTrain(&o, two, 2, d.ex, d.n, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT &&
		  strstr(err, "label 2"), "train: an example label out of range is an error");
	Check(LinearTrain(&o, Labels3, 3, d.ex, 3, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT &&
		  strstr(err, "give c"), "train: too few examples for cross-validation says to give c");
	o.min_df = 1000;
	Check(LinearTrain(&o, Labels3, 3, d.ex, d.n, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT &&
		  strstr(err, "min_df"), "train: no feature surviving min_df is an error");
	FreeData(&d);
}

/* ---------------------------------------------------------------------
 * Training, prediction, the format
 * --------------------------------------------------------------------- */

static void
TestTrainPredict(void)
{
	Data		train = MakeData(600, 1),
				test = MakeData(300, 2);
	LinearOptions o;
	LinearTrainStats st,
				st2;
	LinearModel *m,
			   *f,
			   *again,
			   *loaded = NULL;
	LinearScratch s;
	TriagePrediction p[3];
	int32_t		n = -1;
	char		err[256];
	uint8_t    *bytes = NULL,
			   *bytes2 = NULL,
			   *bytes3 = NULL;
	size_t		len = 0,
				len2 = 0,
				len3 = 0;
	int			bitwise;
	double		diff;
	float		logits[3];
	char		what[200];

	LinearDefaults(&o);
	o.seed = 42;
	m = Train(&o, &train, &st, err);
	Check(m != NULL, "train: three synthetic topics train");
	if (m == NULL)
		return;
	snprintf(what, sizeof(what), "train: held-out accuracy %.3f >= 0.85 (C %g, %d features, cv log loss %.3f)",
			 Accuracy(m, &test), st.c, st.features, st.cv_log_loss);
	Check(Accuracy(m, &test) >= 0.85, what);
	Check(st.examples_used == 600 && st.features > 20 && st.c >= 0.25 && st.c <= 32 && st.cv_log_loss > 0 &&
		  st.train_loss > 0 && st.train_loss < st.cv_log_loss && st.iterations > 0,
		  "train: stats are filled and plausible");
	Check(LinearLabelCount(m) == 3 && LinearFindLabel(m, "tech", 4) == 2 && LinearFindLabel(m, "tec", 3) == -1 &&
		  LinearLabelName(m, 3, NULL) == NULL, "model: labels by index and name");

	/* the same seed gives the same model, byte for byte */
	again = Train(&o, &train, &st2, err);
	Check(again != NULL && LinearSave(m, NULL, &bytes, &len, err, sizeof(err)) == TRIAGE_OK &&
		  LinearSave(again, NULL, &bytes2, &len2, err, sizeof(err)) == TRIAGE_OK &&
		  len == len2 && memcmp(bytes, bytes2, len) == 0 && st.c == st2.c,
		  "train: deterministic for a seed (identical saved bytes)");
	LinearFree(again);
	free(bytes2);
	bytes2 = NULL;

	/* save, load: identical predictions; save again: identical bytes */
	Check(LinearLoad(bytes, len, NULL, &loaded, err, sizeof(err)) == TRIAGE_OK && loaded != NULL,
		  "format: a saved model loads");
	if (loaded)
	{
		LinearOptions lo;

		diff = MaxProbDiff(m, loaded, &test, &bitwise);
		Check(bitwise, "format: the loaded model predicts bit for bit the same");
		Check(LinearSave(loaded, NULL, &bytes2, &len2, err, sizeof(err)) == TRIAGE_OK && len2 == len &&
			  memcmp(bytes, bytes2, len) == 0, "format: save, load, save gives the same bytes");
		LinearGetOptions(loaded, &lo);
		Check(lo.seed == 42 && lo.c == st.c && lo.ngram_max == 3 && lo.quantize && lo.normalize.strip_html &&
			  lo.progress == NULL, "format: the options come back (with the C used)");
		free(bytes2);
		bytes2 = NULL;
	}

	/* float against quantized: three labels, so the int8 rows are lossy */
	o.quantize = false;
	f = Train(&o, &train, &st2, err);
	if (f != NULL)
	{
		diff = MaxProbDiff(m, f, &test, &bitwise);
		snprintf(what, sizeof(what), "quantize: float and int8 models differ by %.4f < 0.02 in probability "
				 "(training rows: %.4f)", diff, st.quantization_max_prob_diff);
		Check(diff < 0.02 && st.quantization_max_prob_diff < 0.02 && st.quantization_max_prob_diff > 0 &&
			  st2.quantization_max_prob_diff == 0, what);
		Check(LinearSave(f, NULL, &bytes3, &len3, err, sizeof(err)) == TRIAGE_OK && len3 > len,
			  "quantize: the float model saves larger");
		LinearFree(f);
	}
	else
		Check(0, "quantize: the float model trains");

	/* prediction details */
	LinearScratchInit(&s, NULL);
	Check(LinearPredict(m, &s, "zzz qqq", 7, 1, 0.0f, p, &n, err, sizeof(err)) == TRIAGE_OK && n == 0 &&
		  s.features == 0, "predict: no known feature gives n = 0 and features = 0");
	Check(LinearPredict(m, &s, "", 0, 1, 0.0f, p, &n, err, sizeof(err)) == TRIAGE_OK && n == 0,
		  "predict: the empty text gives n = 0");
	Check(LinearPredict(m, &s, "goal TEAM coach!", 16, -1, 0.0f, p, &n, err, sizeof(err)) == TRIAGE_OK && n == 3 &&
		  p[0].label == 0 && p[0].probability >= p[1].probability && p[1].probability >= p[2].probability &&
		  fabs(p[0].probability + p[1].probability + p[2].probability - 1.0) < 1e-5 &&
		  fabs(p[0].score - log(p[0].probability)) < 1e-4 && s.features > 0,
		  "predict: k = -1 gives every label, best first, summing to 1, score = log p");
	Check(LinearPredict(m, &s, "goal TEAM coach!", 16, 2, 0.5f, p, &n, err, sizeof(err)) == TRIAGE_OK && n == 1,
		  "predict: the threshold drops unlikely labels");
	Check(LinearPredict(m, &s, "goal", 4, 0, 0.0f, p, &n, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT,
		  "predict: k = 0 is an error");
	{
		float		before = 0.0f;

		LinearPredict(m, &s, "goal match", 10, 1, 0.0f, p, &n, err, sizeof(err));
		before = p[0].probability;
		LinearSetTemperature(m, 2.0f);
		LinearPredict(m, &s, "goal match", 10, 1, 0.0f, p, &n, err, sizeof(err));
		Check(n == 1 && p[0].label == 0 && p[0].probability < before && p[0].probability > 1.0f / 3,
			  "predict: a temperature of 2 softens the answer, same label");
		LinearSetTemperature(m, -1.0f);
		Check(LinearGetTemperature(m) == 2.0f, "predict: a negative temperature is ignored");
		LinearSetTemperature(m, 1.0f);
		Check(LinearLogits(m, &s, "goal match", 10, logits, err, sizeof(err)) == TRIAGE_OK &&
			  logits[0] > logits[1] && logits[0] > logits[2], "logits: the raw logits rank as the prediction");
	}
	{
		/* a long text, cut at max_tokens */
		size_t		biglen = 200000;
		char	   *big = malloc(biglen);

		for (size_t i = 0; i < biglen; i++)
			big[i] = "goal team "[i % 10];
		s.max_tokens = 50;
		Check(LinearPredict(m, &s, big, biglen, 1, 0.0f, p, &n, err, sizeof(err)) == TRIAGE_OK && n == 1 &&
			  s.truncated && s.text_cap < 4096, "predict: max_tokens cuts a long text, reading only its start");
		s.max_tokens = 0;
		Check(LinearPredict(m, &s, big, biglen, 1, 0.0f, p, &n, err, sizeof(err)) == TRIAGE_OK && n == 1 &&
			  !s.truncated && p[0].label == 0, "predict: without max_tokens it reads it all");
		Check(LinearScratchTrim(&s, 4096) > 0 && s.text == NULL &&
			  LinearPredict(m, &s, "goal", 4, 1, 0.0f, p, &n, err, sizeof(err)) == TRIAGE_OK && n == 1,
			  "scratch: trimming frees the large buffers, and predicting grows them again");
		free(big);
	}
	LinearScratchFree(&s);

	/* hostile files: every prefix, byte flips, and a flip with a repaired checksum */
	{
		int			prefixes_ok = 1,
					flips_ok = 1,
					repaired_loaded = 0,
					repaired_ok = 1;
		TriageRng	rng = {7};

		for (size_t cut = 0; cut < len; cut++)
		{
			LinearModel *x = NULL;

			err[0] = '\0';
			if (LinearLoad(bytes, cut, NULL, &x, err, sizeof(err)) == TRIAGE_OK || x != NULL || err[0] == '\0')
			{
				prefixes_ok = 0;
				LinearFree(x);
			}
		}
		Check(prefixes_ok, "format: every proper prefix of a saved model is rejected with a message");
		for (int trial = 0; trial < 3000; trial++)
		{
			uint8_t    *copy = malloc(len);
			LinearModel *x = NULL;
			size_t		at = trial < 1000 ? (size_t) (TriageRngNext(&rng) % 120) : (size_t) (TriageRngNext(&rng) % len);
			uint64_t	sum;

			memcpy(copy, bytes, len);
			copy[at] ^= (uint8_t) (1 + TriageRngNext(&rng) % 255);
			err[0] = '\0';
			if (LinearLoad(copy, len, NULL, &x, err, sizeof(err)) == TRIAGE_OK || err[0] == '\0')
				flips_ok = 0;
			LinearFree(x);
			x = NULL;
			/* the same flip with a valid checksum: it loads or is rejected, and predicts if it loads */
			if (at < len - 8)
			{
				sum = LinearChecksum(copy, len - 8);
				for (int i = 0; i < 8; i++)
					copy[len - 8 + i] = (uint8_t) (sum >> (8 * i));
				err[0] = '\0';
				if (LinearLoad(copy, len, NULL, &x, err, sizeof(err)) == TRIAGE_OK)
				{
					LinearScratch s2;

					repaired_loaded++;
					LinearScratchInit(&s2, NULL);
					for (int i = 0; i < 5; i++)
						if (LinearPredict(x, &s2, test.ex[i].text, test.ex[i].len, -1, 0.0f, p, &n, err, sizeof(err)) == TRIAGE_OK &&
							(n < 0 || n > 3 || (n > 0 && !(p[0].probability >= 0 && p[0].probability <= 1))))
							repaired_ok = 0;
					LinearScratchFree(&s2);
				}
				else if (err[0] == '\0' || x != NULL)
					repaired_ok = 0;
				LinearFree(x);
			}
			free(copy);
		}
		Check(flips_ok, "format: 3,000 byte flips are all rejected (checksum) with a message");
		snprintf(what, sizeof(what), "format: the flips with a repaired checksum load (%d) or fail with a message, "
				 "and predict sanely", repaired_loaded);
		Check(repaired_ok, what);
	}
	{
		/* a NaN weight with a valid checksum: a numeric error */
		uint8_t    *copy = malloc(len3);
		LinearModel *x = NULL;
		uint32_t	nan_bits = 0x7FC00000u;
		uint64_t	sum;

		memcpy(copy, bytes3, len3);
		memcpy(copy + len3 - 12, &nan_bits, 4);
		sum = LinearChecksum(copy, len3 - 8);
		for (int i = 0; i < 8; i++)
			copy[len3 - 8 + i] = (uint8_t) (sum >> (8 * i));
		Check(LinearLoad(copy, len3, NULL, &x, err, sizeof(err)) == TRIAGE_NUMERIC && x == NULL &&
			  strstr(err, "non-finite"), "format: a NaN weight is rejected as TRIAGE_NUMERIC");
		memcpy(copy, "PGTLIN02", 8);
		Check(LinearLoad(copy, len3, NULL, &x, err, sizeof(err)) == TRIAGE_INVALID_MODEL && strstr(err, "magic"),
			  "format: a wrong magic is rejected");
		free(copy);
	}
	free(bytes);
	free(bytes3);
	LinearFree(loaded);
	LinearFree(m);
	FreeData(&train);
	FreeData(&test);
}

/* Two labels with NB ratios and with L1 (OWL-QN) */
static void
TestVariants(void)
{
	Data		train = MakeData(400, 5),
				test = MakeData(200, 6);
	LinearOptions o;
	LinearTrainStats st;
	LinearModel *m = NULL;
	static const char *const two[] = {"sports", "other"};
	char		err[256];
	char		what[200];

	for (int i = 0; i < train.n; i++)
		train.ex[i].label = train.ex[i].label != 0;
	for (int i = 0; i < test.n; i++)
		test.ex[i].label = test.ex[i].label != 0;
	LinearDefaults(&o);
	o.nb = true;
	o.char_min = 2;
	o.char_max = 4;
	if (LinearTrain(&o, two, 2, train.ex, train.n, NULL, &m, &st, err, sizeof(err)) != TRIAGE_OK)
		printf("# %s\n", err);
	snprintf(what, sizeof(what), "variants: NB ratios and character n-grams, two labels: accuracy %.3f >= 0.85",
			 m ? Accuracy(m, &test) : 0.0);
	Check(m != NULL && Accuracy(m, &test) >= 0.85, what);
	LinearFree(m);
	m = NULL;
	LinearDefaults(&o);
	o.l1 = 0.5;
	o.c = 4;
	if (LinearTrain(&o, two, 2, train.ex, train.n, NULL, &m, &st, err, sizeof(err)) != TRIAGE_OK)
		printf("# %s\n", err);
	snprintf(what, sizeof(what), "variants: L1 by OWL-QN, C given: accuracy %.3f >= 0.85, cv loss 0",
			 m ? Accuracy(m, &test) : 0.0);
	Check(m != NULL && Accuracy(m, &test) >= 0.85 && st.c == 4 && st.cv_log_loss == 0, what);
	LinearFree(m);
	FreeData(&train);
	FreeData(&test);
}

/* The inline sort against qsort */
static int
CompareU32(const void *a, const void *b)
{
	uint32_t	x = *(const uint32_t *) a,
				y = *(const uint32_t *) b;

	return x < y ? -1 : x > y;
}

static void
TestSort(void)
{
	TriageRng	rng = {99};
	int			ok = 1;

	for (int trial = 0; trial < 300 && ok; trial++)
	{
		size_t		n = (size_t) (TriageRngNext(&rng) % 3000);
		uint32_t	range = trial % 3 == 0 ? 4 : trial % 3 == 1 ? 100 : UINT32_MAX;
		uint32_t   *a = malloc((n + 1) * sizeof(uint32_t));
		uint32_t   *b = malloc((n + 1) * sizeof(uint32_t));
		float	   *counts = malloc((n + 1) * sizeof(float));
		size_t		k,
					j = 0;

		for (size_t i = 0; i < n; i++)
			a[i] = b[i] = (uint32_t) (TriageRngNext(&rng) % range);
		if (trial % 7 == 0)
			qsort(a, n, sizeof(uint32_t), CompareU32);	/* already sorted input */
		qsort(b, n, sizeof(uint32_t), CompareU32);
		k = LinearSortCount(a, n, counts);
		for (size_t i = 0; i < k && ok; i++)
		{
			if (j >= n || b[j] != a[i] || (i > 0 && a[i] <= a[i - 1]))
				ok = 0;
			j += (size_t) counts[i];
		}
		if (j != n)
			ok = 0;
		free(a);
		free(b);
		free(counts);
	}
	Check(ok, "features: sorting and counting bucket ids agrees with qsort on 300 arrays");
}

/* ---------------------------------------------------------------------
 * Real data: the fine-food reviews
 * --------------------------------------------------------------------- */

/* The review and score columns of fine_foods_train.csv (quoted CSV, one row a line) */
static int
ReadReviews(const char *path, char ***texts, int **labels)
{
	size_t		len;
	char	   *d = (char *) ReadFile(path, &len);
	int			n = 0,
				cap = 8192;
	size_t		i = 0;

	if (d == NULL)
		return -1;
	*texts = malloc(cap * sizeof(char *));
	*labels = malloc(cap * sizeof(int));
	while (i < len && d[i] != '\n')
		i++;
	i++;
	while (i < len && n < cap)
	{
		char	   *fields[3];
		int			f = 0;

		while (f < 3 && i < len)
		{
			char	   *buf = malloc(len - i + 1);
			size_t		o = 0;

			if (d[i] == '"')
			{
				for (i++; i < len; i++)
				{
					if (d[i] == '"' && i + 1 < len && d[i + 1] == '"')
						buf[o++] = d[i++];
					else if (d[i] == '"')
					{
						i++;
						break;
					}
					else
						buf[o++] = d[i];
				}
			}
			else
				while (i < len && d[i] != ',' && d[i] != '\n')
					buf[o++] = d[i++];
			buf[o] = '\0';
			fields[f++] = buf;
			if (i < len && d[i] == ',')
				i++;
		}
		while (i < len && d[i] != '\n')
			i++;
		i++;
		if (f < 3)
		{
			for (int k = 0; k < f; k++)
				free(fields[k]);
			break;
		}
		(*texts)[n] = fields[1];
		(*labels)[n] = strcmp(fields[2], "great") == 0 ? 0 : 1;
		free(fields[0]);
		free(fields[2]);
		n++;
	}
	free(d);
	return n;
}

static void
TestFineFoods(const char *dir)
{
	char		path[4096];
	char	  **texts = NULL;
	int		   *labels = NULL;
	int			n;
	static const char *const names[] = {"great", "other"};
	Data		train,
				test;
	LinearOptions o;
	LinearTrainStats st;
	LinearModel *m = NULL;
	char		err[256];
	char		what[256];
	double		acc;

	snprintf(path, sizeof(path), "%s/fine_foods_train.csv", dir);
	n = ReadReviews(path, &texts, &labels);
	Check(n == 4000, "fine foods: the 4,000 reviews are read");
	if (n != 4000)
		return;
	train.n = 3200;
	test.n = 800;
	train.ex = malloc(sizeof(LinearExample) * 3200);
	test.ex = malloc(sizeof(LinearExample) * 800);
	for (int i = 0; i < n; i++)
	{
		LinearExample *e = i < 3200 ? &train.ex[i] : &test.ex[i - 3200];

		e->text = texts[i];
		e->len = strlen(texts[i]);
		e->label = labels[i];
	}
	LinearDefaults(&o);
	o.seed = 1;
	if (LinearTrain(&o, names, 2, train.ex, train.n, NULL, &m, &st, err, sizeof(err)) != TRIAGE_OK)
		printf("# %s\n", err);
	acc = m ? Accuracy(m, &test) : 0.0;
	snprintf(what, sizeof(what), "fine foods: default options, first 3,200 rows: accuracy %.4f >= 0.78 on the last 800 "
			 "(C %g, %d features, quantization changed p by at most %.2g)",
			 acc, st.c, st.features, st.quantization_max_prob_diff);
	Check(acc >= 0.78, what);
	LinearFree(m);
	for (int i = 0; i < n; i++)
		free(texts[i]);
	free(texts);
	free(labels);
	free(train.ex);
	free(test.ex);
}

int
main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "test/data";

	TestNormalize();
	TestSort();
	TestOptions();
	TestTrainPredict();
	TestVariants();
	TestFineFoods(dir);
	printf("1..%d\n", checks);
	return failures ? 1 : 0;
}
