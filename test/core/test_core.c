/*
 * test_core.c
 *		Unit tests of the server-independent core, run under ASan/UBSan by
 *		test/run-tests.sh.  Prints one TAP line per check.
 *
 * Usage: test_core DATA_DIR (the directory holding sentiment_v1.ftz)
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fasttext.h"
#include "fasttext_internal.h"
#include "fasttext_quantize.h"
#include "fasttext_train.h"
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

/*
 * Training
 *
 * The 4,000 reviews of fine_foods_train.csv, split as the SQL tests split
 * them: rows n % 5 <> 0 train, the 800 with n % 5 = 0 are held out.
 */
typedef struct Reviews
{
	char	   *data;			/* the file, its review fields unquoted in place */
	FastTextExample *train;
	int64_t		ntrain;
	FastTextExample *test;
	int64_t		ntest;
} Reviews;

static const char *const ReviewLabels[] = {"great", "other"};

/*
 * One CSV field at *p (quoted or not), unquoted in place; *p moves past its
 * separator.  Returns the field's start and sets *len.
 */
static char *
CsvField(char **p, size_t *len)
{
	char	   *start = *p,
			   *out = *p,
			   *in = *p;

	if (*in == '"')
	{
		in++;
		for (;;)
		{
			if (*in == '\0')
				break;
			if (*in == '"' && in[1] == '"')
			{
				*out++ = '"';
				in += 2;
				continue;
			}
			if (*in == '"')
			{
				in++;
				break;
			}
			*out++ = *in++;
		}
	}
	else
		while (*in != '\0' && *in != ',' && *in != '\n' && *in != '\r')
			*out++ = *in++;
	*len = (size_t) (out - start);
	if (*in == '\r')
		in++;
	if (*in == ',' || *in == '\n')
		in++;
	*p = in;
	return start;
}

static bool
ReadReviews(const char *dir, Reviews *r)
{
	char		path[4096];
	size_t		len;
	char	   *p;
	int64_t		n = 0;

	memset(r, 0, sizeof(*r));
	snprintf(path, sizeof(path), "%s/fine_foods_train.csv", dir);
	r->data = (char *) ReadFile(path, &len);
	if (r->data == NULL)
		return false;
	{
		char	   *grown = realloc(r->data, len + 1);

		if (grown == NULL)
			return false;
		r->data = grown;
		r->data[len] = '\0';
	}
	r->train = calloc(4000, sizeof(FastTextExample));
	r->test = calloc(4000, sizeof(FastTextExample));
	p = strchr(r->data, '\n');
	if (p == NULL)
		return false;
	p++;
	while (*p != '\0' && n < 4000)
	{
		size_t		flen,
					rlen,
					slen;
		char	   *review;
		char	   *score;
		FastTextExample *e;

		(void) CsvField(&p, &flen);
		review = CsvField(&p, &rlen);
		score = CsvField(&p, &slen);
		n++;
		e = (n % 5 == 0) ? &r->test[r->ntest++] : &r->train[r->ntrain++];
		e->text = review;
		e->len = rlen;
		e->label = (slen == 5 && memcmp(score, "great", 5) == 0) ? 0 : 1;
	}
	return n == 4000;
}

static void
FreeReviews(Reviews *r)
{
	free(r->data);
	free(r->train);
	free(r->test);
}

/* Held-out accuracy of model on r's test rows, in points */
static double
HeldOutAccuracy(const FastTextModel *model, const Reviews *r)
{
	FastTextScratch scratch;
	int64_t		right = 0;

	FastTextScratchInit(&scratch, NULL);
	for (int64_t i = 0; i < r->ntest; i++)
	{
		FastTextPrediction p[2];
		int32_t		n = 0;
		char		err[256];
		size_t		len;
		const char *label;

		if (FastTextPredict(model, &scratch, r->test[i].text, r->test[i].len, 1, 0.0f, p, &n,
							err, sizeof(err)) != TRIAGE_OK || n != 1)
			continue;
		label = FastTextLabel(model, p[0].label, &len);
		if (len == 9 + strlen(ReviewLabels[r->test[i].label]) &&
			memcmp(label + 9, ReviewLabels[r->test[i].label], len - 9) == 0)
			right++;
	}
	FastTextScratchFree(&scratch);
	return 100.0 * (double) right / (double) r->ntest;
}

/* The options of sql/train.sql's small model, in threads */
static void
SmallOptions(FastTextTrainOptions *o, int32_t loss, int threads)
{
	FastTextTrainDefaults(o);
	o->dim = 10;
	o->epoch = 20;
	o->lr = 0.5;
	o->wordNgrams = 2;
	o->bucket = 20000;
	o->seed = 7;
	o->loss = loss;
	o->thread = threads;
}

/* FNV-1a 64 of a trained model's saved bytes (0 when it did not train) */
static uint64_t
TrainedHash(const FastTextTrainOptions *o, const Reviews *r, FastTextModel **keep)
{
	FastTextModel *model = NULL;
	FastTextTrainStats stats;
	uint8_t    *bytes;
	size_t		nbytes;
	char		err[256];
	uint64_t	h = 1469598103934665603ull;

	if (keep != NULL)
		*keep = NULL;
	if (FastTextTrain(o, ReviewLabels, 2, r->train, r->ntrain, NULL, &model, &stats,
					  err, sizeof(err)) != TRIAGE_OK)
	{
		printf("# %s\n", err);
		return 0;
	}
	if (FastTextSave(model, NULL, &bytes, &nbytes, err, sizeof(err)) != TRIAGE_OK)
	{
		FastTextFree(model);
		return 0;
	}
	for (size_t i = 0; i < nbytes; i++)
		h = (h ^ bytes[i]) * 1099511628211ull;
	free(bytes);
	if (keep != NULL)
		*keep = model;
	else
		FastTextFree(model);
	return h;
}

/* The threads of this process, from /proc (-1 where there is none) */
static int
ThreadCount(void)
{
	FILE	   *f = fopen("/proc/self/status", "r");
	char		line[256];
	int			n = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	fclose(f);
	return n;
}

/*
 * What a training run did, seen from its hooks and allocator: allocations
 * live and made outside the calling thread, hook calls outside it, progress
 * calls (and after how many the cancel hook starts saying yes).
 */
typedef struct Watch
{
	pthread_t	main;
	atomic_long live;			/* allocations not yet freed */
	atomic_long foreign_allocs; /* made by another thread */
	atomic_long foreign_hooks;	/* hook or callback calls by another thread */
	atomic_long interrupts;
	atomic_long progress_calls;
	long		cancel_after;	/* 0: never */
	long		stop_after;		/* progress returns false after this many calls; 0: never */
} Watch;

static Watch watch;

static void *
WatchAlloc(void *context, size_t size)
{
	if (!pthread_equal(pthread_self(), watch.main))
		watch.foreign_allocs++;
	watch.live++;
	return malloc(size == 0 ? 1 : size);
}

static void
WatchFree(void *context, void *pointer)
{
	if (!pthread_equal(pthread_self(), watch.main))
		watch.foreign_allocs++;
	watch.live--;
	free(pointer);
}

static const TriageAllocator WatchAllocator = {WatchAlloc, WatchFree, NULL};

static void
WatchInterrupt(void)
{
	if (!pthread_equal(pthread_self(), watch.main))
		watch.foreign_hooks++;
	watch.interrupts++;
}

static bool
WatchCancelPending(void)
{
	if (!pthread_equal(pthread_self(), watch.main))
		watch.foreign_hooks++;
	return watch.cancel_after > 0 && watch.progress_calls >= watch.cancel_after;
}

static bool
WatchProgress(void *arg, double done, double loss, int64_t examples)
{
	if (!pthread_equal(pthread_self(), watch.main))
		watch.foreign_hooks++;
	watch.progress_calls++;
	return !(watch.stop_after > 0 && watch.progress_calls >= watch.stop_after);
}

static void
WatchReset(void)
{
	memset(&watch, 0, sizeof(watch));
	watch.main = pthread_self();
	TriageInterruptHook = WatchInterrupt;
	TriageCancelPendingHook = WatchCancelPending;
}

/*
 * Models trained with thread 1 before threads existed (commit ffbea89):
 * FNV-1a 64 of their saved bytes, for sql/train.sql's small options (seed
 * 7) and each loss (ova with subwords, minn 2, maxn 4).  Float results are
 * the same at -O1 and -O3 (no -ffast-math, no contraction); another
 * architecture or libm may round expf and log differently, so they are
 * checked on x86-64 only.
 */
static const struct
{
	int32_t		loss;
	uint64_t	hash;
}			BeforeThreads[] = {
	{FASTTEXT_LOSS_SOFTMAX, 0x8bf958a510bd1caeull},
	{FASTTEXT_LOSS_NS, 0xcb5b1d457933d38cull},
	{FASTTEXT_LOSS_HS, 0xa8e8e3f790b91f62ull},
	{FASTTEXT_LOSS_OVA, 0xd588e6d711970155ull},
};

/*
 * Training in one thread is reproducible and what it was; in several
 * (hogwild) it learns as well, calls back only from the calling thread,
 * allocates nothing in its threads, and a cancel or a stop joins every
 * thread and frees everything.
 */
static void
TestTraining(const char *dir)
{
	Reviews		r;
	FastTextTrainOptions o;
	FastTextTrainStats stats1,
				stats2;
	FastTextModel *m1 = NULL,
			   *m2 = NULL;
	char		err[256];
	char		what[512];
	double		acc1,
				acc2;
	int			threads_before;
	TriageStatus status;

	if (!ReadReviews(dir, &r))
	{
		Check(0, "training: fine_foods_train.csv reads as 4,000 reviews");
		FreeReviews(&r);
		return;
	}
	Check(r.ntrain == 3200 && r.ntest == 800, "training: 3,200 reviews train, 800 are held out");

	/* thread 1: the same bytes twice, and the bytes of before threads */
	for (size_t i = 0; i < sizeof(BeforeThreads) / sizeof(BeforeThreads[0]); i++)
	{
		uint64_t	h1,
					h2;

		SmallOptions(&o, BeforeThreads[i].loss, 1);
		if (BeforeThreads[i].loss == FASTTEXT_LOSS_OVA)
		{
			o.minn = 2;
			o.maxn = 4;
		}
		h1 = TrainedHash(&o, &r, NULL);
		h2 = TrainedHash(&o, &r, NULL);
		snprintf(what, sizeof(what), "training: thread 1, loss %d: the same bytes twice (%016llx)",
				 BeforeThreads[i].loss, (unsigned long long) h1);
		Check(h1 != 0 && h1 == h2, what);
#if defined(__x86_64__)
		snprintf(what, sizeof(what), "training: thread 1, loss %d: the bytes it trained before threads",
				 BeforeThreads[i].loss);
		Check(h1 == BeforeThreads[i].hash, what);
#endif
	}

	/*
	 * thread 2 against thread 1, on the 800 held-out reviews.  Over seeds 1
	 * to 20 (the -O3 build, this machine) thread 1 scored 75.53 points on
	 * average, standard deviation 0.33, and thread 2 75.29, 0.33: the
	 * difference of two runs has a standard deviation near 0.47 points.
	 * 1.5 points is over 3 of them, so a sound run fails about once in a
	 * thousand, while thread 1 trained on half the rows scores 73.75 (-1.9)
	 * and with 2 epochs instead of 20 73.12.  Fewer epochs can also score
	 * higher here (5 epochs: 77.25, lr 0.5 overfits), so the updates are
	 * checked too.  Both models answer the same rows, so the sampling error
	 * of each (1.5 points on 800 rows) is mostly shared and does not widen
	 * the tolerance.
	 */
	SmallOptions(&o, FASTTEXT_LOSS_SOFTMAX, 1);
	status = FastTextTrain(&o, ReviewLabels, 2, r.train, r.ntrain, NULL, &m1, &stats1, err, sizeof(err));
	Check(status == TRIAGE_OK, "training: thread 1 trains");
	WatchReset();
	SmallOptions(&o, FASTTEXT_LOSS_SOFTMAX, 2);
	o.progress = WatchProgress;
	o.progress_every = 1;
	status = FastTextTrain(&o, ReviewLabels, 2, r.train, r.ntrain, &WatchAllocator, &m2, &stats2,
						   err, sizeof(err));
	Check(status == TRIAGE_OK, "training: thread 2 trains");
	if (status != TRIAGE_OK)
		printf("# %s\n", err);
	if (m1 != NULL && m2 != NULL)
	{
		acc1 = HeldOutAccuracy(m1, &r);
		acc2 = HeldOutAccuracy(m2, &r);
		snprintf(what, sizeof(what),
				 "training: thread 2's held-out accuracy %.2f is within 1.5 points of thread 1's %.2f",
				 acc2, acc1);
		Check(fabs(acc2 - acc1) <= 1.5, what);
		snprintf(what, sizeof(what),
				 "training: ... after as many updates, within 1%% (%lld and %lld), on the same examples",
				 (long long) stats2.updates, (long long) stats1.updates);
		Check(llabs(stats2.updates - stats1.updates) <= stats1.updates / 100 &&
			  stats2.examples_used == stats1.examples_used, what);
	}
	FastTextFree(m1);
	FastTextFree(m2);
	Check(watch.live == 0, "training: thread 2 frees all it allocates (the model with FastTextFree)");
	snprintf(what, sizeof(what),
			 "training: thread 2's threads allocate nothing (%ld) and call no hook nor callback (%ld)",
			 (long) watch.foreign_allocs, (long) watch.foreign_hooks);
	Check(watch.foreign_allocs == 0 && watch.foreign_hooks == 0, what);
	Check(TriageInterruptHook == WatchInterrupt, "training: the interrupt hook is back after");
	printf("# thread 2: %ld progress calls\n", (long) watch.progress_calls);
	/* after threads have run once (ThreadSanitizer keeps one of its own from then) */
	threads_before = ThreadCount();

	/*
	 * Long examples (2,000 tokens): the tokenizer's own interrupt checks,
	 * which must not run on the workers; and more threads than examples
	 */
	{
		FastTextExample few[3];
		char	   *longtext = malloc(2000 * 6 + 1);
		FastTextModel *m = NULL;

		for (int i = 0; i < 2000; i++)
			memcpy(longtext + i * 6, i % 2 ? "tasty " : "stale ", 6);
		longtext[2000 * 6] = '\0';
		for (int i = 0; i < 3; i++)
		{
			few[i].text = longtext;
			few[i].len = 2000 * 6 - (size_t) i * 6;
			few[i].label = i % 2;
		}
		WatchReset();
		SmallOptions(&o, FASTTEXT_LOSS_NS, 8);
		o.epoch = 50;
		status = FastTextTrain(&o, ReviewLabels, 2, few, 3, &WatchAllocator, &m, &stats2, err, sizeof(err));
		snprintf(what, sizeof(what),
				 "training: thread 8 on 3 long examples trains; %ld interrupt checks, none in a thread",
				 (long) watch.interrupts);
		Check(status == TRIAGE_OK && m != NULL && watch.interrupts > 0 && watch.foreign_hooks == 0 &&
			  watch.foreign_allocs == 0, what);
		FastTextFree(m);
		Check(watch.live == 0, "training: ... and frees all it allocates");
		free(longtext);
	}

	/* cancel: the cancel hook says yes after 3 progress calls */
	WatchReset();
	watch.cancel_after = 3;
	SmallOptions(&o, FASTTEXT_LOSS_SOFTMAX, 2);
	o.epoch = 2000;
	o.progress = WatchProgress;
	o.progress_every = 1;
	m2 = NULL;
	status = FastTextTrain(&o, ReviewLabels, 2, r.train, r.ntrain, &WatchAllocator, &m2, &stats2,
						   err, sizeof(err));
	snprintf(what, sizeof(what), "training: a cancel during thread 2 stops it (%s) after %ld progress calls",
			 status == TRIAGE_OK ? "trained" : err, (long) watch.progress_calls);
	Check(status != TRIAGE_OK && m2 == NULL && strstr(err, "canceled") != NULL &&
		  watch.progress_calls == 3, what);
	Check(watch.interrupts > 0, "training: ... and then calls the interrupt hook to raise it");
	snprintf(what, sizeof(what), "training: ... with every thread joined (%d threads, %d before)",
			 ThreadCount(), threads_before);
	Check(ThreadCount() == threads_before, what);
	snprintf(what, sizeof(what), "training: ... and every allocation freed (%ld live)", (long) watch.live);
	Check(watch.live == 0 && watch.foreign_allocs == 0 && watch.foreign_hooks == 0, what);

	/* the progress callback says stop */
	WatchReset();
	watch.stop_after = 2;
	status = FastTextTrain(&o, ReviewLabels, 2, r.train, r.ntrain, &WatchAllocator, &m2, &stats2,
						   err, sizeof(err));
	Check(status != TRIAGE_OK && m2 == NULL && strstr(err, "stopped") != NULL &&
		  ThreadCount() == threads_before && watch.live == 0,
		  "training: a progress callback that says stop stops thread 2, joined, freed");

	/* the range */
	o.thread = 0;
	status = FastTextTrain(&o, ReviewLabels, 2, r.train, r.ntrain, NULL, &m2, &stats2, err, sizeof(err));
	Check(status == TRIAGE_INVALID_ARGUMENT, "training: thread 0 is rejected");
	o.thread = FASTTEXT_MAX_THREADS + 1;
	status = FastTextTrain(&o, ReviewLabels, 2, r.train, r.ntrain, NULL, &m2, &stats2, err, sizeof(err));
	Check(status == TRIAGE_INVALID_ARGUMENT, "training: thread 65 is rejected");
	FastTextTrainDefaults(&o);
	snprintf(what, sizeof(what), "training: the default thread is the online cores up to 4: %d", o.thread);
	Check(o.thread >= 1 && o.thread <= 4, what);

	TriageInterruptHook = NULL;
	TriageCancelPendingHook = NULL;
	FreeReviews(&r);
}

int
main(int argc, char **argv)
{
	TestHash();
	TestModel(argc > 1 ? argv[1] : "test/data");
	TestLimits(argc > 1 ? argv[1] : "test/data");
	TestSpeedups(argc > 1 ? argv[1] : "test/data");
	TestTraining(argc > 1 ? argv[1] : "test/data");
	printf("1..%d\n", checks);
	return failures > 0;
}
