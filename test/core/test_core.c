/*
 * test_core.c
 *		Unit tests of the server-independent core, run under ASan/UBSan by
 *		test/run-tests.sh.  Prints one TAP line per check.
 *
 * Usage: test_core DATA_DIR (the directory holding sentiment_v1.ftz)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fasttext.h"
#include "fasttext_internal.h"
#include "fasttext_quantize.h"
#include "check.h"
#include "read_file.h"

/* fasttext-format.md 2.1: values of the C++ function, sign-extension included */
static void
TestHash(void)
{
	struct
	{
		const char *s;
		uint32_t	h;
	}			vectors[] = {
		{"", 2166136261u}, {"a", 3826002220u}, {"</s>", 3617362777u},
		{"hello", 1335831723u}, {"__label__en", 3409607150u},
		{"caf\xc3\xa9", 1970454601u}, {"<\xc3\xa9>", 1002806231u},
		{"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 308035559u},
	};

	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
	{
		char		what[128];

		snprintf(what, sizeof(what), "hash of \"%s\" is %u", vectors[i].s, vectors[i].h);
		Check(FastTextHash(vectors[i].s, strlen(vectors[i].s)) == vectors[i].h, what);
	}
}

static void
TestModel(const char *dir)
{
	char		path[4096];
	size_t		len;
	uint8_t    *data;
	FastTextModel *model = NULL;
	FastTextScratch scratch;
	FastTextPrediction p[8];
	int32_t		n = 0;
	char		err[256];
	TriageStatus status;
	size_t		label_len;
	const char *label;
	int			rejected = 0;
	int			all_rejected = 1;

	snprintf(path, sizeof(path), "%s/sentiment_v1.ftz", dir);
	data = ReadFile(path, &len);
	Check(data != NULL, "fixture sentiment_v1.ftz is readable");
	if (data == NULL)
		return;

	status = FastTextLoad(data, len, NULL, &model, err, sizeof(err));
	Check(status == TRIAGE_OK, "fixture loads");
	if (status != TRIAGE_OK)
	{
		printf("# %s\n", err);
		free(data);
		return;
	}
	Check(model->nlabels == 2 && model->quant_input && model->pruneidx_size > 0,
		  "fixture is a pruned, quantized model with 2 labels");
	label = FastTextLabel(model, 0, &label_len);
	Check(label_len > 9 && strncmp(label, "__label__", 9) == 0, "labels keep their prefix in the core");

	FastTextScratchInit(&scratch, NULL);
	status = FastTextPredict(model, &scratch, "stale and bitter", 16, -1, 0.0f, p, &n, err, sizeof(err));
	Check(status == TRIAGE_OK && n == 2, "k = -1 predicts every label");
	Check(n == 2 && p[0].probability >= p[1].probability, "predictions are sorted best first");
	Check(n == 2 && fabsf(p[0].probability + p[1].probability - 1.0f) < 1e-5f,
		  "softmax probabilities sum to 1");
	status = FastTextPredict(model, &scratch, "", 0, 1, 0.0f, p, &n, err, sizeof(err));
	Check(status == TRIAGE_OK && n == 1, "empty input is predicted from </s>");
	status = FastTextPredict(model, &scratch, "x", 1, 0, 0.0f, p, &n, err, sizeof(err));
	Check(status == TRIAGE_INVALID_ARGUMENT, "k = 0 is rejected");
	status = FastTextPredict(model, &scratch, "stale", 5, 2, 1.5f, p, &n, err, sizeof(err));
	Check(status == TRIAGE_OK && n == 0, "a threshold above 1 leaves nothing");
	FastTextScratchFree(&scratch);
	FastTextFree(model);

	/* every truncation of the header and dictionary region, then a sample */
	for (size_t cut = 0; cut < len; cut += (cut < 4096 ? 1 : 211))
	{
		status = FastTextLoad(data, cut, NULL, &model, err, sizeof(err));
		if (status == TRIAGE_OK)
		{
			all_rejected = 0;
			FastTextFree(model);
		}
		else if (strstr(err, "truncated") != NULL)
			rejected++;
	}
	Check(all_rejected, "every truncated file is rejected");
	Check(rejected > 0, "truncation errors say \"truncated\"");
	free(data);
}

static int	interrupt_checks = 0;

static void
CountInterruptCheck(void)
{
	interrupt_checks++;
}

/* Predict text with scratch; p gets every label, best first */
static int32_t
PredictAll(const FastTextModel *model, FastTextScratch *scratch, const char *text,
		   FastTextPrediction *p)
{
	int32_t		n = -1;
	char		err[256];

	if (FastTextPredict(model, scratch, text, strlen(text), -1, 0.0f, p, &n, err, sizeof(err)) != TRIAGE_OK)
		return -1;
	return n;
}

static int
SamePredictions(const FastTextPrediction *a, int32_t na, const FastTextPrediction *b, int32_t nb)
{
	return na == nb && na >= 0 && memcmp(a, b, sizeof(FastTextPrediction) * (size_t) na) == 0;
}

/*
 * The caller's limits (FastTextScratch.max_tokens): a cut input predicts as
 * its first tokens do, an input within the limits exactly as without them;
 * the rows stay within the budget on a model with maxn 64; cancel is
 * checked while reading and summing; trimming gives back what a big input
 * made the scratch grow to.
 */
static void
TestLimits(const char *dir)
{
	char		path[4096];
	size_t		len;
	uint8_t    *data;
	FastTextModel *model = NULL;
	FastTextScratch scratch;
	FastTextPrediction p1[8],
				p2[8];
	int32_t		n1,
				n2;
	char		err[256];
	size_t		blen = 4 << 20;
	char	   *big;

	snprintf(path, sizeof(path), "%s/sentiment_v1.ftz", dir);
	data = ReadFile(path, &len);
	if (data == NULL || FastTextLoad(data, len, NULL, &model, err, sizeof(err)) != TRIAGE_OK)
	{
		Check(0, "limits: fixture loads");
		free(data);
		return;
	}
	FastTextScratchInit(&scratch, NULL);

	n1 = PredictAll(model, &scratch, "stale bitter awful", p1);
	scratch.max_tokens = 3;
	n2 = PredictAll(model, &scratch, "stale bitter awful great great great", p2);
	Check(SamePredictions(p1, n1, p2, n2) && scratch.truncated,
		  "limits: max_tokens 3 predicts as the first 3 tokens do, and says it cut");
	n2 = PredictAll(model, &scratch, "  stale\tbitter awful  \n ", p2);
	Check(SamePredictions(p1, n1, p2, n2) && !scratch.truncated,
		  "limits: an input of exactly max_tokens tokens is read whole");
	scratch.max_tokens = 1;
	n1 = PredictAll(model, &scratch, "great", p1);
	scratch.max_tokens = 0;
	n2 = PredictAll(model, &scratch, "great", p2);
	Check(SamePredictions(p1, n1, p2, n2), "limits: max_tokens 1 reads one token");

	/* a model whose subword n-grams go up to 64 (args.maxn is at byte 48) */
	FastTextFree(model);
	model = NULL;
	data[48] = 64;
	if (FastTextLoad(data, len, NULL, &model, err, sizeof(err)) != TRIAGE_OK)
	{
		Check(0, "limits: the fixture with maxn 64 loads");
		printf("# %s\n", err);
		FastTextScratchFree(&scratch);
		free(data);
		return;
	}
	big = malloc(blen + 1);
	memset(big, 'x', blen);
	big[blen] = '\0';
	memcpy(big, "great ", 6);

	/* a 4 MB token after "great": its n-grams alone would be 256 million rows */
	scratch.max_tokens = 1000;
	n1 = PredictAll(model, &scratch, big, p1);
	Check(n1 > 0 && scratch.truncated && scratch.nrows <= 1001 * FASTTEXT_ROWS_PER_TOKEN,
		  "limits: maxn 64 on a 4 MB token: reading stops before it, rows within the budget");
	n2 = PredictAll(model, &scratch, "great", p2);
	Check(SamePredictions(p1, n1, p2, n2), "limits: ... and predicts as the tokens before it");

	/* a million two-letter tokens: cancel is checked while reading and summing */
	for (size_t i = 0; i < blen; i += 4)
		memcpy(big + i, "ab  ", 4);
	scratch.max_tokens = 0;
	interrupt_checks = 0;
	TriageInterruptHook = CountInterruptCheck;
	n1 = PredictAll(model, &scratch, big, p1);
	TriageInterruptHook = NULL;
	printf("# %lld rows, %d checks for cancel\n", (long long) scratch.nrows, interrupt_checks);
	Check(n1 > 0 && interrupt_checks >= 1000, "limits: a million tokens check for cancel at least 1,000 times");
	{
		int64_t		grown = scratch.rows_capacity;
		size_t		freed = FastTextScratchTrim(model, &scratch, 1 << 20);

		Check(grown > (1 << 20) / 4 && freed >= (size_t) grown * 4 && scratch.rows == NULL &&
			  scratch.hashes == NULL, "limits: trimming gives back the rows and hashes a big input grew");
		Check(FastTextScratchTrim(model, &scratch, 1 << 20) == 0, "limits: ... once");
		n2 = PredictAll(model, &scratch, big, p2);
		Check(SamePredictions(p1, n1, p2, n2), "limits: ... and the same input predicts the same after");
		FastTextScratchTrim(model, &scratch, 1 << 20);
		n2 = PredictAll(model, &scratch, "great", p2);
		Check(FastTextScratchTrim(model, &scratch, 1 << 20) == 0, "limits: a small input's scratch is kept");
	}

	free(big);
	FastTextScratchFree(&scratch);
	FastTextFree(model);
	free(data);
}

/* An allocator that counts the bytes it hands out, at most limit */
typedef struct CountingAllocator
{
	size_t		bytes;
	size_t		limit;
} CountingAllocator;

static void *
CountingAlloc(void *context, size_t size)
{
	CountingAllocator *c = context;

	if (size > c->limit - c->bytes)
		return NULL;
	c->bytes += size;
	return malloc(size);
}

static void
CountingFree(void *context, void *pointer)
{
	free(pointer);
}

/*
 * Predict every line of lines[0..len) with model, once with the structures
 * loading derives for speed and once without each, and count the lines
 * whose predictions differ (labels and probabilities, bit for bit).
 */
static int
DiffWithoutSpeedups(FastTextModel *model, const char *lines, size_t len, int *nlines)
{
	int32_t    *map = model->bucket_rows;
	float	   *decoded = model->input.decoded;
	FastTextScratch scratch;
	FastTextPrediction *p1 = malloc(sizeof(FastTextPrediction) * (size_t) model->nlabels);
	FastTextPrediction *p2 = malloc(sizeof(FastTextPrediction) * (size_t) model->nlabels);
	int			differ = 0;
	size_t		pos = 0;

	*nlines = 0;
	FastTextScratchInit(&scratch, NULL);
	while (pos < len)
	{
		const char *nl = memchr(lines + pos, '\n', len - pos);
		size_t		end = nl ? (size_t) (nl - lines) : len;
		char		err[256];
		int32_t		n1 = -1;

		model->bucket_rows = map;
		model->input.decoded = decoded;
		if (FastTextPredict(model, &scratch, lines + pos, end - pos, -1, 0.0f, p1, &n1,
							err, sizeof(err)) != TRIAGE_OK)
			n1 = -1;
		/* without the bucket map, without the decoded rows, without both */
		for (int without = 1; without <= 3; without++)
		{
			int32_t		n2 = -1;

			model->bucket_rows = (without & 1) ? NULL : map;
			model->input.decoded = (without & 2) ? NULL : decoded;
			if (FastTextPredict(model, &scratch, lines + pos, end - pos, -1, 0.0f, p2, &n2,
								err, sizeof(err)) != TRIAGE_OK)
				n2 = -2;
			if (!SamePredictions(p1, n1, p2, n2))
			{
				differ++;
				break;
			}
		}
		(*nlines)++;
		pos = end + 1;
	}
	model->bucket_rows = map;
	model->input.decoded = decoded;
	FastTextScratchFree(&scratch);
	free(p1);
	free(p2);
	return differ;
}

/*
 * Replace the product-quantized input of model (decoded at load) by int8
 * rows, through the dense matrix it decodes to, then save and reload: an
 * int8 model as FastTextLoad reads it.
 */
static FastTextModel *
Int8Copy(FastTextModel *model)
{
	FastTextMatrix *q = &model->input;
	int64_t		m = q->m,
				n = q->n;
	float	   *dense;
	FastTextModel *result = NULL;
	uint8_t    *bytes;
	size_t		nbytes;
	char		err[256];

	if (q->decoded == NULL || (dense = malloc(sizeof(float) * (size_t) (m * n) + 1)) == NULL)
		return NULL;
	memcpy(dense, q->decoded, sizeof(float) * (size_t) (m * n));
	FastTextMatrixFree(q, &model->allocator);
	q->m = m;
	q->n = n;
	q->dense = dense;
	model->quant_input = false;
	if (FastTextQuantizeInt8(model, err, sizeof(err)) == TRIAGE_OK &&
		FastTextSave(model, NULL, &bytes, &nbytes, err, sizeof(err)) == TRIAGE_OK)
	{
		if (FastTextLoad(bytes, nbytes, NULL, &result, err, sizeof(err)) != TRIAGE_OK)
			printf("# int8 copy: %s\n", err);
		free(bytes);
	}
	else
		printf("# int8 copy: %s\n", err);
	return result;
}

/*
 * What loading derives to predict faster (the bucket map of a pruned model,
 * the quantized input rows decoded to floats) changes no prediction, bit for
 * bit, on the 4,000 reviews of fine_foods_train.csv (one text per line of
 * the file), and stays within its bounds on a hostile bucket count.
 */
static void
TestSpeedups(const char *dir)
{
	static const char *const fixtures[] = {"sentiment_v1.ftz", "sentiment_v2.ftz"};
	char		path[4096];
	char		what[256];
	size_t		tlen,
				len;
	char	   *lines;
	uint8_t    *data;
	FastTextModel *model;
	char		err[256];
	int			nlines = 0;

	snprintf(path, sizeof(path), "%s/fine_foods_train.csv", dir);
	lines = (char *) ReadFile(path, &tlen);
	Check(lines != NULL, "speedups: fine_foods_train.csv is readable");
	if (lines == NULL)
		return;

	for (size_t f = 0; f < sizeof(fixtures) / sizeof(fixtures[0]); f++)
	{
		snprintf(path, sizeof(path), "%s/%s", dir, fixtures[f]);
		data = ReadFile(path, &len);
		if (data == NULL || FastTextLoad(data, len, NULL, &model, err, sizeof(err)) != TRIAGE_OK)
		{
			Check(0, "speedups: fixture loads");
			free(data);
			continue;
		}
		snprintf(what, sizeof(what), "speedups: %s has decoded input rows%s", fixtures[f],
				 model->pruneidx_size > 0 ? " and a bucket map" : " (not pruned: no bucket map)");
		Check(model->input.decoded != NULL &&
			  (model->bucket_rows != NULL) == (model->pruneidx_size > 0), what);
		snprintf(what, sizeof(what),
				 "speedups: %s predicts the same with and without them, bit for bit", fixtures[f]);
		Check(DiffWithoutSpeedups(model, lines, tlen, &nlines) == 0 && nlines > 4000, what);

		if (model->pruneidx_size > 0)
		{
			FastTextModel *int8 = Int8Copy(model);

			Check(int8 != NULL && int8->int8_input && int8->input.decoded != NULL &&
				  int8->bucket_rows != NULL,
				  "speedups: its int8 copy reloads with decoded rows and a bucket map");
			Check(int8 != NULL && DiffWithoutSpeedups(int8, lines, tlen, &nlines) == 0,
				  "speedups: ... and predicts the same with and without them");
			FastTextFree(int8);
		}
		FastTextFree(model);
		free(data);
	}

	snprintf(path, sizeof(path), "%s/sentiment_v1.ftz", dir);
	data = ReadFile(path, &len);
	if (data != NULL && FastTextLoad(data, len, NULL, &model, err, sizeof(err)) == TRIAGE_OK)
	{
		FastTextMatrix *input = &model->input;
		size_t		bytes = (size_t) (input->m * input->n) * sizeof(float);

		TriageFree(&model->allocator, input->decoded);
		input->decoded = NULL;
		Check(!FastTextDecodeRows(input, bytes - 1, &model->allocator) && input->decoded == NULL,
			  "speedups: rows are not decoded past the limit");
		Check(FastTextDecodeRows(input, bytes, &model->allocator) && input->decoded != NULL,
			  "speedups: ... and are within it");
		Check(!FastTextDecodeRows(&model->output, SIZE_MAX, &model->allocator) &&
			  model->output.decoded == NULL, "speedups: a dense matrix is not decoded");
		FastTextFree(model);
	}
	else
		Check(0, "speedups: sentiment_v1.ftz loads");

	/*
	 * args.bucket (byte 40) raised: fastText's default 2M buckets get a map
	 * (8 MB), INT32_MAX buckets (an 8 GB map) do not, and the load takes
	 * about what it takes without a map
	 */
	if (data != NULL)
	{
		static const int32_t buckets[] = {2000000, INT32_MAX};

		for (int b = 0; b < 2; b++)
		{
			CountingAllocator counter = {0, (size_t) 64 << 20};
			TriageAllocator allocator = {CountingAlloc, CountingFree, &counter};
			int32_t		v = buckets[b];

			memcpy(data + 40, &v, 4);
			model = NULL;
			if (FastTextLoad(data, len, &allocator, &model, err, sizeof(err)) != TRIAGE_OK)
				printf("# %s\n", err);
			snprintf(what, sizeof(what),
					 "speedups: with %d buckets the model loads %s a bucket map (%zu bytes allocated)",
					 v, b == 0 ? "with" : "without", counter.bytes);
			Check(model != NULL && (model->bucket_rows != NULL) == (b == 0) &&
				  counter.bytes < (b == 0 ? (size_t) 9 << 20 : (size_t) 1 << 20), what);
			FastTextFree(model);
		}
	}
	free(data);
	free(lines);
}

int
main(int argc, char **argv)
{
	TestHash();
	TestModel(argc > 1 ? argv[1] : "test/data");
	TestLimits(argc > 1 ? argv[1] : "test/data");
	TestSpeedups(argc > 1 ? argv[1] : "test/data");
	printf("1..%d\n", checks);
	return failures > 0;
}
