/*
 * fasttext_predict.c
 *		Prediction with a loaded fastText model: hidden vector, output layer
 *		(softmax, one-vs-all, negative sampling, hierarchical softmax) and
 *		top-k selection.
 *
 * Arithmetic follows fastText exactly (float accumulation in the same order,
 * the 512-entry sigmoid table, scores kept as log(p + 1e-5)), and top-k uses
 * a port of libstdc++'s heap algorithms, because fastText orders tied scores
 * by them and ties are common with the sigmoid table.
 */
#include <math.h>
#include <string.h>

#include "fasttext.h"
#include "fasttext_internal.h"

static bool EnsureScratch(const FastTextModel *model, FastTextScratch *scratch, int32_t k);
static TriageStatus FinishPredictions(const FastTextModel *model, FastTextScratch *scratch,
									  int64_t size, FastTextPrediction *predictions,
									  int32_t *npredictions);

/* fastText's std_log: float in, log of p + 1e-5 in double, float out */
static inline float
StdLog(float p)
{
	return (float) log((double) p + 1e-5);
}

static inline const float *
Centroid(const FastTextPQ *pq, int32_t m, uint8_t code)
{
	if (m == pq->nsubq - 1)
		return &pq->centroids[(int64_t) m * 256 * pq->dsub + (int64_t) code * pq->lastdsub];
	return &pq->centroids[((int64_t) m * 256 + code) * pq->dsub];
}

static inline float
QuantNorm(const FastTextMatrix *matrix, int64_t row)
{
	if (!matrix->qnorm)
		return 1.0f;
	return Centroid(&matrix->npq, 0, matrix->norm_codes[row])[0];
}

/*
 * Decode every row of a product-quantized or int8 matrix into
 * matrix->decoded, as AddRow would add it: value j of row i is the very
 * float product AddRow adds to x[j] (alpha * c[k], scale * q), so that
 * adding decoded rows in the same order gives bit-identical sums (the
 * build keeps the compiler from fusing multiply-adds: -ffp-contract=off).
 * Nothing is done, and false returned, for a dense matrix, when the rows
 * would take more than limit_bytes, or when out of memory: AddRow then
 * decodes each row as it adds it.  Only FastTextHidden reads the decoded
 * rows: DotRow (the output layer) multiplies before it scales, so its
 * products are not these.
 */
bool
FastTextDecodeRows(FastTextMatrix *matrix, size_t limit_bytes, const TriageAllocator *allocator)
{
	int64_t		m = matrix->m;
	int64_t		n = matrix->n;
	float	   *out;

	if ((!matrix->quantized && !matrix->int8) || matrix->decoded != NULL || m <= 0 || n <= 0 ||
		(uint64_t) m > limit_bytes / sizeof(float) / (uint64_t) n)
		return false;
	out = TriageAllocArray(allocator, (size_t) (m * n), sizeof(float));
	if (out == NULL)
		return false;
	for (int64_t i = 0; i < m; i++)
	{
		float	   *x = out + i * n;

		if ((i & 4095) == 4095)
			TRIAGE_CHECK_INTERRUPTS();
		if (matrix->int8)
		{
			const int8_t *row = matrix->q8 + i * n;
			float		scale = matrix->scales[i];

			for (int64_t j = 0; j < n; j++)
				x[j] = scale * (float) row[j];
		}
		else
		{
			const FastTextPQ *pq = &matrix->pq;
			const uint8_t *code = matrix->codes + (int64_t) pq->nsubq * i;
			float		alpha = QuantNorm(matrix, i);

			for (int32_t s = 0; s < pq->nsubq; s++)
			{
				const float *c = Centroid(pq, s, code[s]);
				int32_t		d = (s == pq->nsubq - 1) ? pq->lastdsub : pq->dsub;

				for (int32_t k = 0; k < d; k++)
					x[s * pq->dsub + k] = alpha * c[k];
			}
		}
	}
	matrix->decoded = out;
	return true;
}

/* x += row i of matrix (fastText's addRowToVector) */
static void
AddRow(const FastTextMatrix *matrix, int64_t i, float *x)
{
	int64_t		n = matrix->n;

	if (matrix->int8)
	{
		const int8_t *row = matrix->q8 + i * n;
		float		scale = matrix->scales[i];

		for (int64_t j = 0; j < n; j++)
			x[j] += scale * (float) row[j];
	}
	else if (!matrix->quantized)
	{
		const float *row = matrix->dense + i * n;

		for (int64_t j = 0; j < n; j++)
			x[j] += row[j];
	}
	else
	{
		const FastTextPQ *pq = &matrix->pq;
		const uint8_t *code = matrix->codes + (int64_t) pq->nsubq * i;
		float		alpha = QuantNorm(matrix, i);

		for (int32_t m = 0; m < pq->nsubq; m++)
		{
			const float *c = Centroid(pq, m, code[m]);
			int32_t		d = (m == pq->nsubq - 1) ? pq->lastdsub : pq->dsub;

			for (int32_t k = 0; k < d; k++)
				x[m * pq->dsub + k] += alpha * c[k];
		}
	}
}

/*
 * The rows of matrix as floats, m * n, when it has them: dense, or decoded
 * at load; else NULL.
 */
static inline const float *
FlatRows(const FastTextMatrix *matrix)
{
	if (matrix->decoded != NULL)
		return matrix->decoded;
	if (!matrix->quantized && !matrix->int8)
		return matrix->dense;
	return NULL;
}

/*
 * x += rows[0..nrows) of flat (FlatRows of a matrix n wide), in order, as
 * AddRow adds them.  The rows are known in advance and scattered over a
 * table often larger than the cache, so each is prefetched a few rows
 * ahead: prediction with a 46 MB dense .bin took 0.68 times as long with
 * the prefetch, the shipped .ftz (decoded: 4 MB) about 0.95 times.
 */
#define PREFETCH_AHEAD 8
static void
SumFlatRows(const float *flat, int64_t n, const int32_t *rows, int64_t nrows, float *x)
{
	for (int64_t r = 0; r < nrows; r++)
	{
		const float *row = flat + rows[r] * n;

		if ((r & 4095) == 4095)
			TRIAGE_CHECK_INTERRUPTS();
		if (r + PREFETCH_AHEAD < nrows)
		{
			const char *next = (const char *) (flat + rows[r + PREFETCH_AHEAD] * n);

			for (int64_t b = 0; b < n * (int64_t) sizeof(float); b += 64)
				__builtin_prefetch(next + b);
		}
		for (int64_t j = 0; j < n; j++)
			x[j] += row[j];
	}
}

/* row i of matrix . x, accumulated in float (fastText's dotRow and mulcode) */
static float
DotRow(const FastTextMatrix *matrix, int64_t i, const float *x)
{
	float		d = 0.0f;

	if (matrix->int8)
	{
		const int8_t *row = matrix->q8 + i * matrix->n;

		for (int64_t j = 0; j < matrix->n; j++)
			d += (matrix->scales[i] * (float) row[j]) * x[j];
	}
	else if (!matrix->quantized)
	{
		const float *row = matrix->dense + i * matrix->n;

		for (int64_t j = 0; j < matrix->n; j++)
			d += row[j] * x[j];
	}
	else
	{
		const FastTextPQ *pq = &matrix->pq;
		const uint8_t *code = matrix->codes + (int64_t) pq->nsubq * i;

		for (int32_t m = 0; m < pq->nsubq; m++)
		{
			const float *c = Centroid(pq, m, code[m]);
			int32_t		dd = (m == pq->nsubq - 1) ? pq->lastdsub : pq->dsub;

			for (int32_t k = 0; k < dd; k++)
				d += x[m * pq->dsub + k] * c[k];
		}
		d *= QuantNorm(matrix, i);
	}
	return d;
}

/*
 * libstdc++'s heap primitives with fastText's comparator (a > b on score),
 * which make a min-heap on score.  Ported for their tie behaviour.
 */
static inline bool
HeapLess(const FastTextScored *a, const FastTextScored *b)
{
	return a->score > b->score;
}

static void
HeapPushUp(FastTextScored *h, int64_t hole, int64_t top, FastTextScored value)
{
	int64_t		parent = (hole - 1) / 2;

	while (hole > top && HeapLess(&h[parent], &value))
	{
		h[hole] = h[parent];
		hole = parent;
		parent = (hole - 1) / 2;
	}
	h[hole] = value;
}

static void
HeapAdjust(FastTextScored *h, int64_t len, FastTextScored value)
{
	int64_t		hole = 0;
	int64_t		child = 0;

	while (child < (len - 1) / 2)
	{
		child = 2 * (child + 1);
		if (HeapLess(&h[child], &h[child - 1]))
			child--;
		h[hole] = h[child];
		hole = child;
	}
	if ((len & 1) == 0 && child == (len - 2) / 2)
	{
		child = 2 * (child + 1);
		h[hole] = h[child - 1];
		hole = child - 1;
	}
	HeapPushUp(h, hole, 0, value);
}

/* std::pop_heap over h[0..len): moves the top to h[len - 1] */
static void
HeapPop(FastTextScored *h, int64_t len)
{
	FastTextScored value;

	if (len <= 1)
		return;
	value = h[len - 1];
	h[len - 1] = h[0];
	HeapAdjust(h, len - 1, value);
}

static void
HeapSort(FastTextScored *h, int64_t len)
{
	while (len > 1)
	{
		FastTextScored value;

		len--;
		value = h[len];
		h[len] = h[0];
		HeapAdjust(h, len, value);
	}
}

/* Push one candidate into the k-best heap, dropping the worst past k */
static void
HeapOffer(FastTextScored *heap, int64_t *size, int32_t k, float score, int32_t label)
{
	heap[*size].score = score;
	heap[*size].label = label;
	(*size)++;
	HeapPushUp(heap, *size - 1, 0, heap[*size - 1]);
	if (*size > k)
	{
		HeapPop(heap, *size);
		(*size)--;
	}
}

/* fastText's findKBest over per-label probabilities */
static int64_t
FindKBest(const float *output, int32_t nlabels, int32_t k, float threshold, FastTextScored *heap)
{
	int64_t		size = 0;

	for (int32_t i = 0; i < nlabels; i++)
	{
		if (output[i] < threshold)
			continue;
		if (size == k && StdLog(output[i]) < heap[0].score)
			continue;
		HeapOffer(heap, &size, k, StdLog(output[i]), i);
	}
	return size;
}

/*
 * fastText's hierarchical-softmax dfs, with an explicit stack so that a
 * deep, unbalanced tree cannot overflow the C stack.  Left children are
 * visited first, as in the recursive original, so ties resolve the same way.
 */
static TriageStatus
HsSearch(const FastTextModel *model, FastTextScratch *scratch, int32_t k, float threshold,
		 int64_t *size, char *errbuf, size_t errlen)
{
	typedef struct
	{
		int32_t		node;
		float		score;
	} Frame;
	int32_t		osz = model->nlabels;
	float		floor_score = StdLog(threshold);
	FastTextScored *heap = scratch->heap;
	Frame	   *stack = (Frame *) scratch->rows;	/* rows are no longer needed */
	int64_t		depth = 0;

	*size = 0;
	/* the stack never holds more than one frame per tree level plus one */
	if (scratch->rows_capacity * (int64_t) sizeof(int32_t) < (int64_t) (2 * osz + 1) * (int64_t) sizeof(Frame))
	{
		TriageFree(&scratch->allocator, scratch->rows);
		scratch->rows = TriageAllocArray(&scratch->allocator, (size_t) (2 * osz + 1), sizeof(Frame));
		scratch->rows_capacity = scratch->rows ? (int64_t) (2 * osz + 1) * 2 : 0;
		scratch->nrows = 0;
		if (scratch->rows == NULL)
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory in prediction");
		stack = (Frame *) scratch->rows;
	}
	stack[depth].node = 2 * osz - 2;
	stack[depth].score = 0.0f;
	depth++;
	while (depth > 0)
	{
		Frame		frame = stack[--depth];
		const FastTextNode *node = &model->tree[frame.node];
		float		f;

		if (frame.score < floor_score)
			continue;
		if (*size == k && frame.score < heap[0].score)
			continue;
		if (node->left == -1 && node->right == -1)
		{
			HeapOffer(heap, size, k, frame.score, frame.node);
			continue;
		}
		f = DotRow(&model->output, frame.node - osz, scratch->hidden);
		if (isnan(f))
			return TriageError(TRIAGE_NUMERIC, errbuf, errlen, "model produced NaN");
		f = (float) (1.0 / (1 + (double) expf(-f)));
		stack[depth].node = node->right;
		stack[depth].score = frame.score + StdLog(f);
		depth++;
		stack[depth].node = node->left;
		stack[depth].score = frame.score + StdLog((float) (1.0 - f));
		depth++;
	}
	return TRIAGE_OK;
}

static bool
EnsureScratch(const FastTextModel *model, FastTextScratch *scratch, int32_t k)
{
	const TriageAllocator *alloc = &scratch->allocator;

	if (scratch->dim_capacity < model->args.dim)
	{
		TriageFree(alloc, scratch->hidden);
		scratch->hidden = TriageAllocArray(alloc, (size_t) model->args.dim, sizeof(float));
		scratch->dim_capacity = scratch->hidden ? model->args.dim : 0;
	}
	if (scratch->output_capacity < model->nlabels)
	{
		TriageFree(alloc, scratch->output);
		scratch->output = TriageAllocArray(alloc, (size_t) model->nlabels, sizeof(float));
		scratch->output_capacity = scratch->output ? model->nlabels : 0;
	}
	if (scratch->heap_capacity < (int64_t) k + 1)
	{
		TriageFree(alloc, scratch->heap);
		scratch->heap = TriageAllocArray(alloc, (size_t) k + 1, sizeof(FastTextScored));
		scratch->heap_capacity = scratch->heap ? (int64_t) k + 1 : 0;
	}
	return scratch->hidden != NULL && scratch->output != NULL && scratch->heap != NULL;
}

/* The average of the input rows of text, summed in order, then scaled */
TriageStatus
FastTextHidden(const FastTextModel *model, FastTextScratch *scratch, const char *text, size_t len,
			  char *errbuf, size_t errlen)
{
	int32_t		dim = model->args.dim;
	float	   *hidden;
	float		inverse;
	TriageStatus status;

	if (!EnsureScratch(model, scratch, 1))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory in prediction");
	hidden = scratch->hidden;
	status = FastTextTokenize(model, scratch, text, len, errbuf, errlen);
	if (status != TRIAGE_OK || scratch->nrows == 0)
		return status;
	memset(hidden, 0, sizeof(float) * (size_t) dim);
	if (FlatRows(&model->input) != NULL)
		SumFlatRows(FlatRows(&model->input), model->input.n, scratch->rows, scratch->nrows, hidden);
	else
		for (int64_t r = 0; r < scratch->nrows; r++)
		{
			if ((r & 4095) == 4095)
				TRIAGE_CHECK_INTERRUPTS();
			AddRow(&model->input, scratch->rows[r], hidden);
		}
	inverse = (float) (1.0 / (double) scratch->nrows);
	for (int32_t j = 0; j < dim; j++)
		hidden[j] *= inverse;
	return TRIAGE_OK;
}

/*
 * The output-layer scores (logits) of every label for text, before softmax
 * or sigmoid and before temperature, into logits[0..nlabels); *found is
 * false when no token of text maps to a row.  Not for hierarchical softmax,
 * whose outputs are per tree node.
 */
TriageStatus
FastTextLogits(const FastTextModel *model, FastTextScratch *scratch, const char *text, size_t len,
			   float *logits, bool *found, char *errbuf, size_t errlen)
{
	TriageStatus status;

	*found = false;
	if (model->args.loss == FASTTEXT_LOSS_HS)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "hierarchical softmax models have no per-label logits");
	if (!EnsureScratch(model, scratch, 1))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory in prediction");
	status = FastTextHidden(model, scratch, text, len, errbuf, errlen);
	if (status != TRIAGE_OK || scratch->nrows == 0)
		return status;
	for (int32_t i = 0; i < model->nlabels; i++)
	{
		logits[i] = DotRow(&model->output, i, scratch->hidden);
		if (isnan(logits[i]))
			return TriageError(TRIAGE_NUMERIC, errbuf, errlen, "model produced NaN");
	}
	*found = true;
	return TRIAGE_OK;
}

/*
 * Predict the k most likely labels of text (k = -1: all labels) whose
 * probability is at least threshold, best first, as `fasttext predict-prob`
 * does for the same line.  predictions must have room for min(k, nlabels)
 * entries; *npredictions may be 0 (no word of the text maps to a row, or
 * the threshold removed everything).
 */
TriageStatus
FastTextPredict(const FastTextModel *model, FastTextScratch *scratch,
				const char *text, size_t len, int32_t k, float threshold,
				FastTextPrediction *predictions, int32_t *npredictions,
				char *errbuf, size_t errlen)
{
	TriageStatus status;
	int32_t		nlabels = model->nlabels;
	float	   *hidden;
	int64_t		size = 0;

	*npredictions = 0;
	if (k == -1 || k > nlabels)
		k = nlabels;
	if (k <= 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "k must be 1 or more, or -1 for all labels");
	if (!EnsureScratch(model, scratch, k))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory in prediction");

	status = FastTextHidden(model, scratch, text, len, errbuf, errlen);
	if (status != TRIAGE_OK || scratch->nrows == 0)
		return status;
	hidden = scratch->hidden;

	if (model->args.loss == FASTTEXT_LOSS_HS)
	{
		status = HsSearch(model, scratch, k, threshold, &size, errbuf, errlen);
		if (status != TRIAGE_OK)
			return status;
	}
	else
	{
		float	   *out = scratch->output;

		for (int32_t i = 0; i < nlabels; i++)
		{
			out[i] = DotRow(&model->output, i, hidden);
			if (isnan(out[i]))
				return TriageError(TRIAGE_NUMERIC, errbuf, errlen, "model produced NaN");
		}
		return FastTextPredictFromScores(model, scratch, out, k, threshold, predictions,
										 npredictions, errbuf, errlen);
	}

	return FinishPredictions(model, scratch, size, predictions, npredictions);
}

/* Sort the k-best heap and turn it into predictions, best first */
static TriageStatus
FinishPredictions(const FastTextModel *model, FastTextScratch *scratch, int64_t size,
				  FastTextPrediction *predictions, int32_t *npredictions)
{
	HeapSort(scratch->heap, size);
	for (int64_t i = 0; i < size; i++)
	{
		FastTextPrediction *p = &predictions[i];
		float		score = scratch->heap[i].score;

		p->label = scratch->heap[i].label;
		p->score = score;
		if (model->args.loss == FASTTEXT_LOSS_HS)
			p->probability = fminf(1.0f, expf(score));
		else
			p->probability = scratch->output[p->label];
	}
	*npredictions = (int32_t) size;
	return TRIAGE_OK;
}

/*
 * The predictions from output-layer scores (logits) of every label, for the
 * losses with per-label outputs: temperature, softmax or sigmoid, top k.
 * scores may be scratch->output; the probabilities end up there.
 */
TriageStatus
FastTextPredictFromScores(const FastTextModel *model, FastTextScratch *scratch, const float *scores,
						  int32_t k, float threshold, FastTextPrediction *predictions,
						  int32_t *npredictions, char *errbuf, size_t errlen)
{
	int32_t		nlabels = model->nlabels;
	float	   *out = scratch->output;
	int64_t		size;

	*npredictions = 0;
	if (k == -1 || k > nlabels)
		k = nlabels;
	if (out != scores)
		memcpy(out, scores, sizeof(float) * (size_t) nlabels);
	for (int32_t i = 0; i < nlabels; i++)
		if (isnan(out[i]))
			return TriageError(TRIAGE_NUMERIC, errbuf, errlen, "model produced NaN");
	/* temperature scaling; skipped at 1 so that results stay bit-exact */
	if (model->temperature != 1.0f)
		for (int32_t i = 0; i < nlabels; i++)
			out[i] /= model->temperature;
	if (model->args.loss == FASTTEXT_LOSS_SOFTMAX)
	{
		float		max = out[0],
					z = 0.0f;

		for (int32_t i = 0; i < nlabels; i++)
			max = out[i] > max ? out[i] : max;
		for (int32_t i = 0; i < nlabels; i++)
		{
			out[i] = (float) exp((double) (out[i] - max));
			z += out[i];
		}
		for (int32_t i = 0; i < nlabels; i++)
		{
			out[i] /= z;
			/* infinite weights give inf - inf above */
			if (isnan(out[i]))
				return TriageError(TRIAGE_NUMERIC, errbuf, errlen, "model produced NaN");
		}
	}
	else
	{
		for (int32_t i = 0; i < nlabels; i++)
			out[i] = FastTextSigmoid(model, out[i]);
	}
	size = FindKBest(out, nlabels, k, threshold, scratch->heap);
	return FinishPredictions(model, scratch, size, predictions, npredictions);
}

/*
 * The Huffman tree of hierarchical softmax, built from the label counts in
 * dictionary order exactly as fastText's buildTree, so that internal node v
 * uses output row v - nlabels.
 */
TriageStatus
FastTextBuildTree(FastTextModel *model, char *errbuf, size_t errlen)
{
	int32_t		osz = model->nlabels;
	int32_t		nnodes = 2 * osz - 1;
	FastTextNode *tree;
	int32_t		leaf = osz - 1;
	int32_t		node = osz;

	tree = model->tree = TriageAllocArray(&model->allocator, (size_t) nnodes, sizeof(FastTextNode));
	if (tree == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the label tree");
	for (int32_t i = 0; i < nnodes; i++)
	{
		tree[i].parent = tree[i].left = tree[i].right = -1;
		tree[i].count = (int64_t) 1e15;
		tree[i].binary = false;
	}
	for (int32_t i = 0; i < osz; i++)
	{
		/* larger counts would let the build pick nodes not yet made */
		if (model->entries[model->nwords + i].count >= (int64_t) 1e15)
			return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							   "label %d has an implausible count %lld", i,
							   (long long) model->entries[model->nwords + i].count);
		tree[i].count = model->entries[model->nwords + i].count;
	}
	for (int32_t i = osz; i < nnodes; i++)
	{
		int32_t		mini[2];

		for (int j = 0; j < 2; j++)
		{
			if (leaf >= 0 && tree[leaf].count < tree[node].count)
				mini[j] = leaf--;
			else
				mini[j] = node++;
		}
		tree[i].left = mini[0];
		tree[i].right = mini[1];
		if (__builtin_add_overflow(tree[mini[0]].count, tree[mini[1]].count, &tree[i].count))
			tree[i].count = INT64_MAX;
		tree[mini[0]].parent = i;
		tree[mini[1]].parent = i;
		tree[mini[1]].binary = true;
	}
	/* the hs output matrix needs one row per internal node */
	if (model->output.m < osz - 1)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "output matrix is too small for %d labels", osz);
	return TRIAGE_OK;
}
