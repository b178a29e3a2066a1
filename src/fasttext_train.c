/*
 * fasttext_train.c
 *		Train a fastText supervised classifier from labeled examples.
 *
 * The method is fastText's (fasttext-format.md, section 4): a dictionary of
 * words counted over the examples, an input matrix of word and hashed
 * n-gram rows initialised uniformly in +-1/dim, a zero output matrix, and
 * SGD over the examples with a learning rate decaying linearly to zero over
 * epoch * ntokens tokens, in steps of lrUpdateRate tokens.  Losses:
 * softmax, negative sampling, hierarchical softmax, one-vs-all.
 *
 * Differences, on purpose: with thread 1, training is reproducible for a
 * seed (fastText's hogwild threads are not); the examples are visited in a
 * new seeded random order each epoch (a query may return rows sorted by
 * label, which plain sequential SGD handles badly); and the whole input
 * matrix is randomised (fastText 0.9.2 leaves most of it zero when it runs
 * fewer than 10 threads, issues #935 and #1061).
 *
 * Design note on threads (thread > 1): as fastText, hogwild: each worker
 * runs SGD on its share of the examples (worker i gets positions i*n/T to
 * (i+1)*n/T of one seeded shuffle, and reshuffles its share each pass with
 * its own generator, seeded from seed + i), updates the shared matrices
 * without locks, and takes its learning rate from a shared token counter.
 * Workers run inside a server backend, so they never call anything of the
 * server: everything they use is allocated first, by the calling thread
 * (their tokenizer scratch is sized by tokenizing every example once, and
 * allocates nothing after: its allocator fails), they start with every
 * signal blocked (so the backend thread gets them), and while they run the
 * interrupt hook is cleared (FastTextTokenize checks it).  The calling
 * thread sleeps and polls: on TRIAGE_CANCEL_PENDING it stops and joins the
 * workers before anything that may longjmp; for the progress callback
 * (which may longjmp too) it pauses them the same way, joined, and starts
 * them again where they were.  So no worker runs when control leaves.
 *
 * The model produced is an ordinary FastTextModel, so prediction,
 * quantization and saving in fastText's file format work on it unchanged.
 */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fasttext_train.h"
#include "fasttext_internal.h"

/* fastText's default is 12 threads; ours: the online cores, up to 4 */
int32_t
FastTextDefaultThreads(void)
{
	long		n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > 4 ? 4 : (int32_t) n;
}

void
FastTextTrainDefaults(FastTextTrainOptions *options)
{
	memset(options, 0, sizeof(*options));
	options->lr = 0.1;
	options->dim = 100;
	options->epoch = 5;
	options->wordNgrams = 1;
	options->minn = 0;
	options->maxn = 0;
	options->bucket = 200000;
	options->minCount = 1;
	options->neg = 5;
	options->loss = FASTTEXT_LOSS_SOFTMAX;
	options->lrUpdateRate = 100;
	options->seed = 0;
	options->thread = FastTextDefaultThreads();
	options->progress_every = 1000;
}

/*
 * Counting the vocabulary: an open-addressing table of distinct tokens,
 * their first occurrence and their count.
 */
typedef struct VocabWord
{
	const char *word;			/* points into an example's text */
	int32_t		len;
	uint32_t	hash;
	int64_t		count;
	int64_t		first;			/* order of first occurrence, for stable sorting */
} VocabWord;

typedef struct Vocab
{
	VocabWord  *words;
	int64_t		nwords;
	int64_t		capacity;		/* of words */
	int32_t    *slots;
	int64_t		nslots;			/* a power of two, at least 2 * capacity */
	const TriageAllocator *alloc;
} Vocab;

static bool
VocabGrow(Vocab *vocab)
{
	int64_t		capacity = vocab->capacity ? vocab->capacity * 2 : 1024;
	int64_t		nslots = capacity * 2;
	VocabWord  *words = TriageAllocArray(vocab->alloc, (size_t) capacity, sizeof(VocabWord));
	int32_t    *slots = TriageAllocArray(vocab->alloc, (size_t) nslots, sizeof(int32_t));

	if (words == NULL || slots == NULL)
	{
		TriageFree(vocab->alloc, words);
		TriageFree(vocab->alloc, slots);
		return false;
	}
	if (vocab->nwords > 0)
		memcpy(words, vocab->words, (size_t) vocab->nwords * sizeof(VocabWord));
	memset(slots, 0xff, (size_t) nslots * sizeof(int32_t));
	for (int64_t i = 0; i < vocab->nwords; i++)
	{
		int64_t		s = words[i].hash & (nslots - 1);

		while (slots[s] >= 0)
			s = (s + 1) & (nslots - 1);
		slots[s] = (int32_t) i;
	}
	TriageFree(vocab->alloc, vocab->words);
	TriageFree(vocab->alloc, vocab->slots);
	vocab->words = words;
	vocab->slots = slots;
	vocab->capacity = capacity;
	vocab->nslots = nslots;
	return true;
}

static bool
VocabAdd(Vocab *vocab, const char *word, size_t len)
{
	uint32_t	h = FastTextHash(word, len);
	int64_t		s;

	if (vocab->nwords == vocab->capacity && !VocabGrow(vocab))
		return false;
	s = h & (vocab->nslots - 1);
	while (vocab->slots[s] >= 0)
	{
		VocabWord  *w = &vocab->words[vocab->slots[s]];

		if (w->hash == h && (size_t) w->len == len && memcmp(w->word, word, len) == 0)
		{
			w->count++;
			return true;
		}
		s = (s + 1) & (vocab->nslots - 1);
	}
	vocab->slots[s] = (int32_t) vocab->nwords;
	vocab->words[vocab->nwords].word = word;
	vocab->words[vocab->nwords].len = (int32_t) len;
	vocab->words[vocab->nwords].hash = h;
	vocab->words[vocab->nwords].count = 1;
	vocab->words[vocab->nwords].first = vocab->nwords;
	vocab->nwords++;
	return true;
}

/*
 * Count the tokens of every example into vocab; ntokens[i] gets the
 * example's token count as fastText's lr schedule counts it (its words,
 * its label and the end of line).
 */
static TriageStatus
CountVocabulary(Vocab *vocab, const FastTextExample *examples, int64_t n, int32_t *ntokens,
				int64_t *total, char *errbuf, size_t errlen)
{
	*total = 0;
	for (int64_t e = 0; e < n; e++)
	{
		const char *text = examples[e].text;
		size_t		pos = 0,
					start,
					end;
		int32_t		count = 2;

		while (FastTextNextToken(text, examples[e].len, &pos, &start, &end))
		{
			if (FastTextIsLabelToken(text + start, end - start))
				continue;
			if (!VocabAdd(vocab, text + start, end - start))
				return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory counting words");
			if (count < INT32_MAX)
				count++;
		}
		if (!VocabAdd(vocab, FASTTEXT_EOS, strlen(FASTTEXT_EOS)))
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory counting words");
		ntokens[e] = count;
		*total += count;
	}
	return TRIAGE_OK;
}

static int
CompareByCount(const void *a, const void *b)
{
	const VocabWord *x = a;
	const VocabWord *y = b;

	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return (x->first > y->first) - (x->first < y->first);
}

typedef struct LabelCount
{
	int32_t		label;			/* the caller's index */
	int64_t		count;
} LabelCount;

static int
CompareLabelCounts(const void *a, const void *b)
{
	const LabelCount *x = a;
	const LabelCount *y = b;

	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return (x->label > y->label) - (x->label < y->label);
}

/*
 * The dictionary, fastText's way: words with at least minCount occurrences
 * by count descending, then the labels by count descending.  label_order
 * maps the caller's label index to the label's position in the model.
 */
static TriageStatus
BuildDictionary(FastTextModel *model, Vocab *vocab, const FastTextTrainOptions *options,
				const char *const *labels, int32_t nlabels, const FastTextExample *examples,
				int64_t nexamples, int32_t *label_order, char *errbuf, size_t errlen)
{
	const TriageAllocator *alloc = &model->allocator;
	LabelCount *counts;
	int64_t		nwords = 0;
	size_t		pool = 0;
	char	   *p;

	qsort(vocab->words, (size_t) vocab->nwords, sizeof(VocabWord), CompareByCount);
	while (nwords < vocab->nwords && vocab->words[nwords].count >= options->minCount)
		nwords++;
	if (nwords + nlabels > INT32_MAX / 2)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "vocabulary of %lld words is too large", (long long) nwords);

	counts = TriageAllocZero(alloc, sizeof(LabelCount) * (size_t) nlabels);
	if (counts == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the dictionary");
	for (int32_t i = 0; i < nlabels; i++)
		counts[i].label = i;
	for (int64_t e = 0; e < nexamples; e++)
		counts[examples[e].label].count++;
	qsort(counts, (size_t) nlabels, sizeof(LabelCount), CompareLabelCounts);

	for (int64_t i = 0; i < nwords; i++)
		pool += (size_t) vocab->words[i].len + 1;
	for (int32_t i = 0; i < nlabels; i++)
		pool += strlen(FASTTEXT_LABEL_PREFIX) + strlen(labels[i]) + 1;

	model->nwords = (int32_t) nwords;
	model->nlabels = nlabels;
	model->size = (int32_t) nwords + nlabels;
	model->pruneidx_size = -1;
	model->entries = TriageAllocArray(alloc, (size_t) model->size, sizeof(FastTextEntry));
	model->strings = p = TriageAlloc(alloc, pool);
	if (model->entries == NULL || p == NULL)
	{
		TriageFree(alloc, counts);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the dictionary");
	}
	for (int64_t i = 0; i < nwords; i++)
	{
		FastTextEntry *e = &model->entries[i];

		memcpy(p, vocab->words[i].word, (size_t) vocab->words[i].len);
		p[vocab->words[i].len] = '\0';
		e->word = p;
		e->length = vocab->words[i].len;
		e->hash = vocab->words[i].hash;
		e->count = vocab->words[i].count;
		e->type = 0;
		p += e->length + 1;
	}
	for (int32_t i = 0; i < nlabels; i++)
	{
		FastTextEntry *e = &model->entries[nwords + i];
		int			n = sprintf(p, "%s%s", FASTTEXT_LABEL_PREFIX, labels[counts[i].label]);

		e->word = p;
		e->length = n;
		e->hash = FastTextHash(p, (size_t) n);
		e->count = counts[i].count;
		e->type = 1;
		label_order[counts[i].label] = i;
		p += n + 1;
	}
	TriageFree(alloc, counts);
	return TRIAGE_OK;
}

static TriageStatus
AllocDense(FastTextMatrix *matrix, int64_t m, int64_t n, const TriageAllocator *alloc,
		   char *errbuf, size_t errlen)
{
	memset(matrix, 0, sizeof(*matrix));
	matrix->m = m;
	matrix->n = n;
	matrix->dense = TriageAllocArray(alloc, (size_t) (m * n), sizeof(float));
	if (matrix->dense == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen,
						   "out of memory allocating a %lld x %lld matrix",
						   (long long) m, (long long) n);
	return TRIAGE_OK;
}

/* Per-run state of the SGD loop */
typedef struct Trainer
{
	FastTextModel *model;
	const FastTextTrainOptions *options;
	FastTextScratch scratch;
	float	   *grad;
	float	   *output;
	TriageRng	rng;
	int32_t    *negatives;		/* ns: labels in proportion to sqrt(count) */
	int64_t		nnegatives;
	int64_t		negpos;
	int32_t    *paths;			/* hs: for each label, its internal nodes ... */
	uint8_t    *codes;			/* ... and which branch leads to it */
	int64_t    *path_offsets;
} Trainer;

static inline float
Dot(const float *a, const float *b, int32_t n)
{
	float		d = 0.0f;

	for (int32_t i = 0; i < n; i++)
		d += a[i] * b[i];
	return d;
}

/* y += a * x */
static inline void
Axpy(float *y, float a, const float *x, int32_t n)
{
	for (int32_t i = 0; i < n; i++)
		y[i] += a * x[i];
}

/* fastText's binaryLogistic: one logistic unit on output row `row` */
static float
BinaryLogistic(Trainer *t, int32_t row, bool positive, float lr, const float *hidden)
{
	int32_t		dim = t->model->args.dim;
	float	   *wo = t->model->output.dense + (int64_t) row * dim;
	float		score = FastTextSigmoid(t->model, Dot(wo, hidden, dim));
	float		alpha = lr * ((positive ? 1.0f : 0.0f) - score);

	Axpy(t->grad, alpha, wo, dim);
	Axpy(wo, alpha, hidden, dim);
	return (float) -log((positive ? score : 1.0f - score) + 1e-5);
}

static float
SoftmaxForward(Trainer *t, int32_t target, float lr, const float *hidden)
{
	int32_t		dim = t->model->args.dim;
	int32_t		nlabels = t->model->nlabels;
	float	   *wo = t->model->output.dense;
	float	   *out = t->output;
	float		max,
				z = 0.0f;

	for (int32_t i = 0; i < nlabels; i++)
		out[i] = Dot(wo + (int64_t) i * dim, hidden, dim);
	max = out[0];
	for (int32_t i = 1; i < nlabels; i++)
		max = out[i] > max ? out[i] : max;
	for (int32_t i = 0; i < nlabels; i++)
	{
		out[i] = expf(out[i] - max);
		z += out[i];
	}
	for (int32_t i = 0; i < nlabels; i++)
	{
		float		alpha;

		out[i] /= z;
		alpha = lr * ((i == target ? 1.0f : 0.0f) - out[i]);
		Axpy(t->grad, alpha, wo + (int64_t) i * dim, dim);
		Axpy(wo + (int64_t) i * dim, alpha, hidden, dim);
	}
	return (float) -log(out[target] + 1e-5);
}

static float
Forward(Trainer *t, int32_t target, float lr, const float *hidden)
{
	const FastTextModel *model = t->model;
	float		loss = 0.0f;

	switch (model->args.loss)
	{
		case FASTTEXT_LOSS_SOFTMAX:
			return SoftmaxForward(t, target, lr, hidden);
		case FASTTEXT_LOSS_NS:
			loss = BinaryLogistic(t, target, true, lr, hidden);
			for (int32_t n = 0; n < model->args.neg; n++)
			{
				int32_t		negative;

				/* at least two labels exist, so this ends */
				do
				{
					negative = t->negatives[t->negpos];
					t->negpos = (t->negpos + 1) % t->nnegatives;
				} while (negative == target);
				loss += BinaryLogistic(t, negative, false, lr, hidden);
			}
			return loss;
		case FASTTEXT_LOSS_HS:
			for (int64_t i = t->path_offsets[target]; i < t->path_offsets[target + 1]; i++)
				loss += BinaryLogistic(t, t->paths[i], t->codes[i] != 0, lr, hidden);
			return loss;
		case FASTTEXT_LOSS_OVA:
			for (int32_t i = 0; i < model->nlabels; i++)
				loss += BinaryLogistic(t, i, i == target, lr, hidden);
			return loss;
	}
	return 0.0f;
}

/* ns: fastText's negative table, labels repeated in proportion to sqrt(count) */
static TriageStatus
InitNegatives(Trainer *t, char *errbuf, size_t errlen)
{
	const FastTextModel *model = t->model;
	const TriageAllocator *alloc = &model->allocator;
	int64_t		target_size = (int64_t) model->nlabels * 1000;
	double		z = 0.0;
	int64_t		n = 0;

	if (target_size > 10000000)
		target_size = 10000000;
	for (int32_t i = 0; i < model->nlabels; i++)
		z += sqrt((double) model->entries[model->nwords + i].count);
	t->negatives = TriageAllocArray(alloc, (size_t) (target_size + model->nlabels), sizeof(int32_t));
	if (t->negatives == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for negative sampling");
	for (int32_t i = 0; i < model->nlabels; i++)
	{
		double		c = sqrt((double) model->entries[model->nwords + i].count);

		for (int64_t j = 0; j < c * target_size / z && n < target_size + model->nlabels; j++)
			t->negatives[n++] = i;
	}
	/* Fisher-Yates, seeded */
	for (int64_t i = n - 1; i > 0; i--)
	{
		int64_t		j = (int64_t) (TriageRngNext(&t->rng) % (uint64_t) (i + 1));
		int32_t		tmp = t->negatives[i];

		t->negatives[i] = t->negatives[j];
		t->negatives[j] = tmp;
	}
	t->nnegatives = n;
	return TRIAGE_OK;
}

/* hs: each label's path of internal nodes (as output rows) and branch codes */
static TriageStatus
InitPaths(Trainer *t, char *errbuf, size_t errlen)
{
	const FastTextModel *model = t->model;
	const TriageAllocator *alloc = &model->allocator;
	int32_t		osz = model->nlabels;
	int64_t		total = 0;
	int64_t		k = 0;

	for (int32_t i = 0; i < osz; i++)
		for (int32_t node = i; model->tree[node].parent != -1; node = model->tree[node].parent)
			total++;
	t->path_offsets = TriageAllocArray(alloc, (size_t) osz + 1, sizeof(int64_t));
	t->paths = TriageAllocArray(alloc, (size_t) (total + 1), sizeof(int32_t));
	t->codes = TriageAlloc(alloc, (size_t) (total + 1));
	if (t->path_offsets == NULL || t->paths == NULL || t->codes == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for the label tree");
	for (int32_t i = 0; i < osz; i++)
	{
		t->path_offsets[i] = k;
		for (int32_t node = i; model->tree[node].parent != -1; node = model->tree[node].parent)
		{
			t->paths[k] = model->tree[node].parent - osz;
			t->codes[k] = model->tree[node].binary ? 1 : 0;
			k++;
		}
	}
	t->path_offsets[osz] = k;
	return TRIAGE_OK;
}

static void
TrainerFree(Trainer *t)
{
	const TriageAllocator *alloc = &t->model->allocator;

	FastTextScratchFree(&t->scratch);
	TriageFree(alloc, t->grad);
	TriageFree(alloc, t->output);
	TriageFree(alloc, t->negatives);
	TriageFree(alloc, t->paths);
	TriageFree(alloc, t->codes);
	TriageFree(alloc, t->path_offsets);
}

/*
 * One SGD step on the example whose input rows are in t->scratch (at least
 * one): the hidden layer is their average, the loss's gradient goes back to
 * each row.  Returns the example's loss.
 */
static float
SgdStep(Trainer *t, int32_t target, float lr)
{
	FastTextModel *model = t->model;
	FastTextScratch *s = &t->scratch;
	int32_t		dim = model->args.dim;
	float	   *hidden = s->hidden;
	float		scale;
	float		loss;

	memset(hidden, 0, sizeof(float) * (size_t) dim);
	for (int64_t r = 0; r < s->nrows; r++)
		Axpy(hidden, 1.0f, model->input.dense + (int64_t) s->rows[r] * dim, dim);
	scale = (float) (1.0 / (double) s->nrows);
	for (int32_t j = 0; j < dim; j++)
		hidden[j] *= scale;

	memset(t->grad, 0, sizeof(float) * (size_t) dim);
	loss = Forward(t, target, lr, hidden);
	for (int32_t j = 0; j < dim; j++)
		t->grad[j] *= scale;
	for (int64_t r = 0; r < s->nrows; r++)
		Axpy(model->input.dense + (int64_t) s->rows[r] * dim, 1.0f, t->grad, dim);
	return loss;
}

/* Fisher-Yates over order[from, to), seeded */
static void
Shuffle(int64_t *order, int64_t from, int64_t to, TriageRng *rng)
{
	for (int64_t i = to - 1; i > from; i--)
	{
		int64_t		j = from + (int64_t) (TriageRngNext(rng) % (uint64_t) (i - from + 1));
		int64_t		tmp = order[i];

		order[i] = order[j];
		order[j] = tmp;
	}
}

/* The SGD loop over shuffled examples until epoch * ntokens tokens are seen */
static TriageStatus
RunSgd(Trainer *t, const FastTextExample *examples, int64_t n, const int32_t *ntokens,
	   int64_t total_tokens, const int32_t *label_order, FastTextTrainStats *stats,
	   char *errbuf, size_t errlen)
{
	FastTextModel *model = t->model;
	const FastTextTrainOptions *o = t->options;
	const TriageAllocator *alloc = &model->allocator;
	int64_t    *order;
	int64_t		budget = (int64_t) o->epoch * total_tokens;
	int64_t		token_count = 0;
	int64_t		local_tokens = 0;
	int64_t		steps = 0;
	double		loss_sum = 0.0;
	int64_t		loss_n = 0;
	float		lr = (float) o->lr;
	TriageStatus status = TRIAGE_OK;

	order = TriageAllocArray(alloc, (size_t) n, sizeof(int64_t));
	if (order == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory ordering examples");
	for (int64_t i = 0; i < n; i++)
		order[i] = i;

	stats->examples_used = 0;
	while (token_count < budget && status == TRIAGE_OK)
	{
		/* a new epoch: a new order */
		Shuffle(order, 0, n, &t->rng);
		loss_sum = 0.0;
		loss_n = 0;
		for (int64_t i = 0; i < n && token_count < budget; i++)
		{
			const FastTextExample *ex = &examples[order[i]];

			local_tokens += ntokens[order[i]];
			if (local_tokens > o->lrUpdateRate)
			{
				token_count += local_tokens;
				local_tokens = 0;
				lr = (float) (o->lr * (1.0 - (double) token_count / (double) budget));
			}

			status = FastTextTokenize(model, &t->scratch, ex->text, ex->len, errbuf, errlen);
			if (status != TRIAGE_OK)
				break;
			if (t->scratch.nrows == 0)
				continue;

			loss_sum += SgdStep(t, label_order[ex->label], lr);
			loss_n++;
			steps++;

			if (o->progress != NULL && o->progress_every > 0 && steps % o->progress_every == 0 &&
				!o->progress(o->progress_arg, (double) token_count / (double) budget,
							 loss_n ? loss_sum / loss_n : 0.0, steps))
			{
				status = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "training was stopped");
				break;
			}
		}
		if (steps == 0)
		{
			status = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
								 "no example has any word or n-gram the model can use");
			break;
		}
		if (stats->examples_used == 0)
			stats->examples_used = loss_n;
	}
	stats->updates = steps;
	stats->loss = loss_n ? loss_sum / loss_n : 0.0;
	TriageFree(alloc, order);
	return status;
}

/* ---------------------------------------------------------------------
 * Hogwild threads (see the design note at the top)
 * --------------------------------------------------------------------- */

typedef struct Hogwild Hogwild;

/* One worker: its trainer (own scratch, grad, output, generator) and place */
typedef struct Worker
{
	Trainer		t;
	Hogwild    *run;
	int64_t		from;			/* its share of run->order */
	int64_t		to;
	int64_t		pos;			/* next position in its share; to: start a pass */
	int64_t		passes;
	int64_t		local_tokens;	/* not yet added to run->token_count */
	int64_t		local_steps;	/* not yet added to run->steps */
	int64_t		steps;
	double		loss_sum;		/* of the current pass */
	int64_t		loss_n;
	double		last_loss_sum;	/* of the last whole pass */
	int64_t		last_loss_n;
	TriageStatus status;
	char		errbuf[256];
	pthread_t	thread;
	bool		running;		/* started and not yet joined */
} Worker;

struct Hogwild
{
	const FastTextTrainOptions *options;
	const FastTextExample *examples;
	const int32_t *ntokens;
	const int32_t *label_order;
	int64_t    *order;
	int64_t		budget;
	int32_t		nworkers;
	Worker	   *workers;
	void		(*saved_hook) (void);
	bool		started;		/* workers started, hook cleared, until StopWorkers */
	atomic_llong token_count;	/* tokens seen by all workers: the lr schedule */
	atomic_llong steps;			/* examples trained on by all workers */
	atomic_int	active;			/* workers still in their loop */
	atomic_bool stop;
};

/* The allocator of a worker's scratch: it must not grow (nor palloc) */
static void *
NoAlloc(void *context, size_t size)
{
	return NULL;
}

static void
NoFree(void *context, void *pointer)
{
}

static const TriageAllocator NoAllocator = {NoAlloc, NoFree, NULL};

static void
Publish(Worker *w)
{
	atomic_fetch_add_explicit(&w->run->token_count, w->local_tokens, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->run->steps, w->local_steps, memory_order_relaxed);
	w->local_tokens = 0;
	w->local_steps = 0;
}

/* A worker thread: SGD over its share until the budget is spent or it is told to stop */
static void *
WorkerMain(void *arg)
{
	Worker	   *w = arg;
	Hogwild    *run = w->run;
	Trainer    *t = &w->t;
	const FastTextTrainOptions *o = run->options;

	while (!atomic_load_explicit(&run->stop, memory_order_relaxed))
	{
		int64_t		seen = atomic_load_explicit(&run->token_count, memory_order_relaxed);
		int64_t		e;
		float		lr;

		if (seen >= run->budget)
			break;
		if (w->pos == w->to)
		{
			/* a new pass over its share, in a new order */
			if (w->loss_n > 0)
			{
				w->last_loss_sum = w->loss_sum;
				w->last_loss_n = w->loss_n;
			}
			w->loss_sum = 0.0;
			w->loss_n = 0;
			Shuffle(run->order, w->from, w->to, &t->rng);
			w->pos = w->from;
			w->passes++;
		}
		e = run->order[w->pos++];
		lr = (float) (o->lr * (1.0 - (double) seen / (double) run->budget));
		w->local_tokens += run->ntokens[e];

		w->status = FastTextTokenize(t->model, &t->scratch, run->examples[e].text,
									 run->examples[e].len, w->errbuf, sizeof(w->errbuf));
		if (w->status != TRIAGE_OK)
		{
			atomic_store(&run->stop, true);
			break;
		}
		if (t->scratch.nrows > 0)
		{
			w->loss_sum += SgdStep(t, run->label_order[run->examples[e].label], lr);
			w->loss_n++;
			w->steps++;
			w->local_steps++;
		}
		if (w->local_tokens > o->lrUpdateRate)
			Publish(w);
	}
	Publish(w);
	atomic_fetch_sub(&run->active, 1);
	return NULL;
}

/* Stop every worker and join it; then the interrupt hook is back */
static void
StopWorkers(Hogwild *run)
{
	if (!run->started)
		return;
	run->started = false;
	atomic_store(&run->stop, true);
	for (int32_t i = 0; i < run->nworkers; i++)
		if (run->workers[i].running)
		{
			pthread_join(run->workers[i].thread, NULL);
			run->workers[i].running = false;
		}
	TriageInterruptHook = run->saved_hook;
}

/*
 * Start (or resume) every worker, with every signal blocked in them and the
 * interrupt hook cleared.  On failure, the workers started are stopped again.
 */
static TriageStatus
StartWorkers(Hogwild *run, char *errbuf, size_t errlen)
{
	sigset_t	all,
				old;
	int			err = 0;

	run->saved_hook = TriageInterruptHook;
	TriageInterruptHook = NULL;
	run->started = true;
	atomic_store(&run->stop, false);
	atomic_store(&run->active, run->nworkers);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (int32_t i = 0; i < run->nworkers && err == 0; i++)
	{
		err = pthread_create(&run->workers[i].thread, NULL, WorkerMain, &run->workers[i]);
		run->workers[i].running = (err == 0);
		if (err != 0)
			atomic_fetch_sub(&run->active, run->nworkers - i);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0)
	{
		StopWorkers(run);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen,
						   "could not start %d training threads: %s", run->nworkers, strerror(err));
	}
	return TRIAGE_OK;
}

static double
NowMs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec * 1000.0 + (double) ts.tv_nsec / 1e6;
}

/* The running loss of all workers: their current passes (call with them joined) */
static double
RunningLoss(const Hogwild *run)
{
	double		sum = 0.0;
	int64_t		count = 0;

	for (int32_t i = 0; i < run->nworkers; i++)
	{
		sum += run->workers[i].loss_sum;
		count += run->workers[i].loss_n;
	}
	return count ? sum / count : 0.0;
}

/*
 * Allocate a worker's own buffers, in the calling thread: the scratch gets
 * the capacities that tokenizing every example needed (sized), then an
 * allocator that fails, so that it never grows.
 */
static bool
InitWorker(Worker *w, const Trainer *main, const FastTextScratch *sized)
{
	const FastTextModel *model = main->model;
	const TriageAllocator *alloc = &model->allocator;
	FastTextScratch *s = &w->t.scratch;

	w->t = *main;
	memset(s, 0, sizeof(*s));
	s->allocator = NoAllocator;
	w->t.grad = TriageAllocArray(alloc, (size_t) model->args.dim, sizeof(float));
	w->t.output = TriageAllocArray(alloc, (size_t) model->nlabels, sizeof(float));
	s->hidden = TriageAllocArray(alloc, (size_t) model->args.dim, sizeof(float));
	s->dim_capacity = model->args.dim;
	s->rows = TriageAllocArray(alloc, (size_t) sized->rows_capacity + 1, sizeof(int32_t));
	s->rows_capacity = sized->rows_capacity;
	s->hashes = TriageAllocArray(alloc, (size_t) sized->hashes_capacity + 1, sizeof(int32_t));
	s->hashes_capacity = sized->hashes_capacity;
	s->word = TriageAlloc(alloc, sized->word_capacity + 1);
	s->word_capacity = sized->word_capacity;
	return w->t.grad != NULL && w->t.output != NULL && s->hidden != NULL && s->rows != NULL &&
		s->hashes != NULL && s->word != NULL;
}

static void
FreeWorker(Worker *w, const TriageAllocator *alloc)
{
	TriageFree(alloc, w->t.grad);
	TriageFree(alloc, w->t.output);
	TriageFree(alloc, w->t.scratch.hidden);
	TriageFree(alloc, w->t.scratch.rows);
	TriageFree(alloc, w->t.scratch.hashes);
	TriageFree(alloc, w->t.scratch.word);
}

/*
 * RunSgd with nworkers hogwild threads: same budget, same lr schedule
 * (fastText's: from the tokens all threads have seen), not reproducible.
 */
static TriageStatus
RunHogwild(Trainer *t, int32_t nworkers, const FastTextExample *examples, int64_t n,
		   const int32_t *ntokens, int64_t total_tokens, const int32_t *label_order,
		   FastTextTrainStats *stats, char *errbuf, size_t errlen)
{
	FastTextModel *model = t->model;
	const FastTextTrainOptions *o = t->options;
	const TriageAllocator *alloc = &model->allocator;
	Hogwild		run;
	int64_t		used = 0;
	int64_t		last_steps = 0;
	double		last_ms;
	bool		canceled = false;
	TriageStatus status = TRIAGE_OK;

	memset(&run, 0, sizeof(run));
	run.options = o;
	run.examples = examples;
	run.ntokens = ntokens;
	run.label_order = label_order;
	run.budget = (int64_t) o->epoch * total_tokens;
	run.nworkers = nworkers;
	run.order = TriageAllocArray(alloc, (size_t) n, sizeof(int64_t));
	run.workers = TriageAllocZero(alloc, sizeof(Worker) * (size_t) nworkers);
	if (run.order == NULL || run.workers == NULL)
	{
		status = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory ordering examples");
		goto done;
	}
	for (int64_t i = 0; i < n; i++)
		run.order[i] = i;
	Shuffle(run.order, 0, n, &t->rng);

	/* every example once, here: what the workers' scratch must hold, and what can train */
	for (int64_t e = 0; e < n; e++)
	{
		if ((e & 1023) == 0)
			TRIAGE_CHECK_INTERRUPTS();
		status = FastTextTokenize(model, &t->scratch, examples[e].text, examples[e].len,
								  errbuf, errlen);
		if (status != TRIAGE_OK)
			goto done;
		if (t->scratch.nrows > 0)
			used++;
	}
	if (used == 0)
	{
		status = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							 "no example has any word or n-gram the model can use");
		goto done;
	}

	for (int32_t i = 0; i < nworkers; i++)
	{
		Worker	   *w = &run.workers[i];

		if (!InitWorker(w, t, &t->scratch))
		{
			status = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for training threads");
			goto done;
		}
		w->run = &run;
		w->from = (int64_t) i * n / nworkers;
		w->to = (int64_t) (i + 1) * n / nworkers;
		w->pos = w->to;
		/* its own stream: seed + i, mixed apart from the initialisation's */
		w->t.rng.state = (o->seed + (uint64_t) i) ^ 0x2545F4914F6CDD1Dull;
		if (t->nnegatives > 0)
			w->t.negpos = (int64_t) i * t->nnegatives / nworkers;
	}

	if ((status = StartWorkers(&run, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	last_ms = NowMs();
	for (;;)
	{
		struct timespec nap = {0, 2 * 1000 * 1000};
		int64_t		steps;

		nanosleep(&nap, NULL);
		if (atomic_load(&run.active) == 0)
			break;
		if (TRIAGE_CANCEL_PENDING())
		{
			canceled = true;
			break;
		}
		steps = atomic_load_explicit(&run.steps, memory_order_relaxed);
		if (o->progress != NULL && o->progress_every > 0 && steps - last_steps >= o->progress_every &&
			NowMs() - last_ms >= FASTTEXT_PROGRESS_MS)
		{
			bool		go_on;

			/* the callback may longjmp: nothing may run then */
			StopWorkers(&run);
			go_on = o->progress(o->progress_arg,
								(double) atomic_load(&run.token_count) / (double) run.budget,
								RunningLoss(&run), atomic_load(&run.steps));
			if (!go_on)
			{
				status = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "training was stopped");
				goto done;
			}
			last_steps = steps;
			last_ms = NowMs();
			if ((status = StartWorkers(&run, errbuf, errlen)) != TRIAGE_OK)
				goto done;
		}
	}
	StopWorkers(&run);

	for (int32_t i = 0; i < nworkers && status == TRIAGE_OK; i++)
		if (run.workers[i].status != TRIAGE_OK)
			status = TriageError(run.workers[i].status, errbuf, errlen, "%s", run.workers[i].errbuf);
	/* the loss of each worker's last whole pass (its current one if none) */
	{
		double		sum = 0.0;
		int64_t		count = 0;

		for (int32_t i = 0; i < nworkers; i++)
		{
			Worker	   *w = &run.workers[i];

			stats->updates += w->steps;
			sum += w->last_loss_n > 0 ? w->last_loss_sum : w->loss_sum;
			count += w->last_loss_n > 0 ? w->last_loss_n : w->loss_n;
		}
		stats->loss = count ? sum / count : 0.0;
		stats->examples_used = used;
	}

done:
	if (run.workers != NULL)
	{
		StopWorkers(&run);
		for (int32_t i = 0; i < nworkers; i++)
			FreeWorker(&run.workers[i], alloc);
	}
	TriageFree(alloc, run.workers);
	TriageFree(alloc, run.order);
	if (canceled)
	{
		/* now that no thread runs and nothing is held, let the server raise the cancel */
		TRIAGE_CHECK_INTERRUPTS();
		status = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "training canceled");
	}
	return status;
}

/* Set up the per-loss tables and scratch of a trainer, then run SGD in threads */
static TriageStatus
TrainLoaded(Trainer *trainer, int32_t threads, const FastTextExample *examples, int64_t n,
			const int32_t *ntokens, int64_t total_tokens, const int32_t *label_order,
			FastTextTrainStats *stats, char *errbuf, size_t errlen)
{
	FastTextModel *model = trainer->model;
	const TriageAllocator *alloc = &model->allocator;
	int32_t		dim = model->args.dim;
	TriageStatus status;

	if (model->args.loss == FASTTEXT_LOSS_HS &&
		(status = InitPaths(trainer, errbuf, errlen)) != TRIAGE_OK)
		return status;
	if (model->args.loss == FASTTEXT_LOSS_NS &&
		(status = InitNegatives(trainer, errbuf, errlen)) != TRIAGE_OK)
		return status;

	trainer->grad = TriageAllocArray(alloc, (size_t) dim, sizeof(float));
	trainer->output = TriageAllocArray(alloc, (size_t) model->nlabels, sizeof(float));
	trainer->scratch.hidden = TriageAllocArray(alloc, (size_t) dim, sizeof(float));
	trainer->scratch.dim_capacity = dim;
	if (trainer->grad == NULL || trainer->output == NULL || trainer->scratch.hidden == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory");
	/* no more workers than examples: each gets a share */
	if (threads > n)
		threads = (int32_t) n;
	if (threads > 1)
		return RunHogwild(trainer, threads, examples, n, ntokens, total_tokens, label_order,
						  stats, errbuf, errlen);
	return RunSgd(trainer, examples, n, ntokens, total_tokens, label_order, stats, errbuf, errlen);
}

/*
 * Fine-tune a trained model whose input matrix is still dense (after
 * FastTextPrune, for example), as `fasttext quantize -retrain` does: the
 * same SGD over the examples with options' lr and epoch.  labels are the
 * caller's label names, as given to FastTextTrain.
 */
TriageStatus
FastTextRetrain(FastTextModel *model, const FastTextTrainOptions *options,
				const char *const *labels, int32_t nlabels,
				const FastTextExample *examples, int64_t nexamples,
				FastTextTrainStats *stats, char *errbuf, size_t errlen)
{
	const TriageAllocator *alloc = &model->allocator;
	Trainer		trainer;
	int32_t    *ntokens;
	int32_t    *label_order;
	int64_t		total = 0;
	TriageStatus status = TRIAGE_OK;

	memset(stats, 0, sizeof(*stats));
	if (model->input.quantized || model->output.quantized)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "only a model with dense matrices can be retrained");
	memset(&trainer, 0, sizeof(trainer));
	trainer.model = model;
	trainer.options = options;
	trainer.rng.state = options->seed ^ 0x5bd1e995u;
	FastTextScratchInit(&trainer.scratch, alloc);
	ntokens = TriageAllocArray(alloc, (size_t) nexamples, sizeof(int32_t));
	label_order = TriageAllocArray(alloc, (size_t) nlabels, sizeof(int32_t));
	if (ntokens == NULL || label_order == NULL)
	{
		status = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory");
		goto done;
	}
	/* the model's label order, found by name */
	for (int32_t i = 0; i < nlabels; i++)
	{
		label_order[i] = FastTextFindLabel(model, labels[i], strlen(labels[i]));
		if (label_order[i] < 0)
		{
			status = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
								 "label \"%s\" is not one of the model's labels", labels[i]);
			goto done;
		}
	}
	for (int64_t e = 0; e < nexamples; e++)
	{
		int32_t		count = 2;

		size_t		pos = 0,
					start,
					end;

		while (FastTextNextToken(examples[e].text, examples[e].len, &pos, &start, &end))
			count++;
		ntokens[e] = count;
		total += count;
	}
	/* one thread: a retraining is short, and so stays reproducible */
	status = TrainLoaded(&trainer, 1, examples, nexamples, ntokens, total, label_order, stats,
						 errbuf, errlen);
	stats->nwords = model->nwords;
done:
	TrainerFree(&trainer);
	TriageFree(alloc, ntokens);
	TriageFree(alloc, label_order);
	return status;
}

/*
 * Train a model on examples whose labels index into labels[0..nlabels).
 * Every label must occur at least once; at least two labels are needed.
 */
TriageStatus
FastTextTrain(const FastTextTrainOptions *options, const char *const *labels, int32_t nlabels,
			  const FastTextExample *examples, int64_t nexamples,
			  const TriageAllocator *allocator, FastTextModel **result,
			  FastTextTrainStats *stats, char *errbuf, size_t errlen)
{
	FastTextModel *model;
	Vocab		vocab;
	Trainer		trainer;
	int32_t    *ntokens = NULL;
	int32_t    *label_order = NULL;
	int64_t		total_tokens = 0;
	size_t		text_bytes = 0;
	int32_t		dim = options->dim;
	float		bound = 1.0f / (float) dim;
	TriageStatus status;

	*result = NULL;
	memset(stats, 0, sizeof(*stats));
	if (allocator == NULL)
		allocator = &TriageMallocAllocator;
	if (nlabels < 2)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "training needs at least two distinct labels, found %d", nlabels);
	if (nexamples <= 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "training needs examples, found none");
	if (options->thread < 1 || options->thread > FASTTEXT_MAX_THREADS)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "thread must be from 1 to %d, not %d", FASTTEXT_MAX_THREADS, options->thread);

	model = TriageAllocZero(allocator, sizeof(FastTextModel));
	if (model == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory");
	model->allocator = *allocator;
	model->version = FASTTEXT_VERSION;
	model->eos_id = -1;
	model->temperature = 1.0f;
	model->args.dim = dim;
	model->args.ws = 5;
	model->args.epoch = options->epoch;
	model->args.minCount = options->minCount;
	model->args.neg = options->neg;
	model->args.wordNgrams = options->wordNgrams;
	model->args.loss = options->loss;
	model->args.model = FASTTEXT_MODEL_SUPERVISED;
	model->args.minn = options->minn;
	model->args.maxn = options->maxn;
	model->args.lrUpdateRate = options->lrUpdateRate;
	model->args.t = 1e-4;
	/* as fastText: no buckets when nothing is hashed */
	model->args.bucket = (options->wordNgrams <= 1 && options->maxn <= 0) ? 0 : options->bucket;

	memset(&vocab, 0, sizeof(vocab));
	vocab.alloc = allocator;
	memset(&trainer, 0, sizeof(trainer));
	trainer.model = model;
	trainer.options = options;
	trainer.rng.state = options->seed;
	FastTextScratchInit(&trainer.scratch, allocator);

	ntokens = TriageAllocArray(allocator, (size_t) nexamples, sizeof(int32_t));
	label_order = TriageAllocArray(allocator, (size_t) nlabels, sizeof(int32_t));
	if (ntokens == NULL || label_order == NULL)
	{
		status = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory");
		goto done;
	}
	for (int64_t e = 0; e < nexamples; e++)
	{
		if (examples[e].label < 0 || examples[e].label >= nlabels)
		{
			status = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
								 "example %lld has label index %d of %d",
								 (long long) e, examples[e].label, nlabels);
			goto done;
		}
		text_bytes += examples[e].len;
	}

	if ((status = CountVocabulary(&vocab, examples, nexamples, ntokens, &total_tokens,
								  errbuf, errlen)) != TRIAGE_OK ||
		(status = BuildDictionary(model, &vocab, options, labels, nlabels, examples, nexamples,
								  label_order, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	model->ntokens = total_tokens;
	if ((status = FastTextIndexDictionary(model, text_bytes, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	FastTextInitSigmoidTable(model);

	/* the saved model must fit in a bytea */
	if (((double) model->nwords + model->args.bucket) * dim * sizeof(float) > 900.0 * 1024 * 1024)
	{
		status = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							 "a model of %d words, %d buckets and dimension %d would exceed 900 MB; "
							 "lower dim, bucket or raise minCount",
							 model->nwords, model->args.bucket, dim);
		goto done;
	}
	if ((status = AllocDense(&model->input, (int64_t) model->nwords + model->args.bucket, dim,
							 allocator, errbuf, errlen)) != TRIAGE_OK ||
		(status = AllocDense(&model->output, model->nlabels, dim, allocator, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	for (int64_t i = 0; i < model->input.m * dim; i++)
		model->input.dense[i] = (float) (TriageRngUniform(&trainer.rng) * 2.0 - 1.0) * bound;
	memset(model->output.dense, 0, sizeof(float) * (size_t) (model->output.m * dim));

	if (options->loss == FASTTEXT_LOSS_HS &&
		(status = FastTextBuildTree(model, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	status = TrainLoaded(&trainer, options->thread, examples, nexamples, ntokens, total_tokens,
						 label_order, stats, errbuf, errlen);
	stats->nwords = model->nwords;

done:
	TrainerFree(&trainer);
	TriageFree(allocator, vocab.words);
	TriageFree(allocator, vocab.slots);
	TriageFree(allocator, ntokens);
	TriageFree(allocator, label_order);
	if (status != TRIAGE_OK)
	{
		FastTextFree(model);
		return status;
	}
	*result = model;
	return TRIAGE_OK;
}
