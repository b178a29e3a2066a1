/*
 * fasttext_quantize.c
 *		fastText's model compression: the product quantizer, quantized
 *		matrices, and the -cutoff row selection with dictionary pruning.
 *
 * This follows fastText's ProductQuantizer, QuantMatrix, selectEmbeddings
 * and Dictionary::prune (shared/docs/fasttext-format.md, section 5) step by
 * step: the same sub-quantizer split, the same 65,536-point sample, initial
 * centroids from a random permutation, 25 E/M iterations, the same
 * empty-cluster split, the same centroid layout.  Only the random source
 * differs: fastText draws from std::minstd_rand, we from splitmix64 seeded
 * by the caller, so results are reproducible for a seed but not
 * bit-identical to the tool's.
 *
 * Nothing here modifies its input except FastTextPrune and FastTextQuantize,
 * which work on a model in place.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fasttext_quantize.h"
#include "fasttext_internal.h"

#define KSUB FASTTEXT_PQ_KSUB

/* fastText's eps_: how far apart the two halves of a split cluster start */
#define SPLIT_EPS 1e-7f

/*
 * The size-weighted walk that picks a cluster to split ends after about one
 * pass over the clusters; past this many steps we take the largest cluster,
 * so that termination never depends on the random numbers.
 */
#define MAX_SPLIT_STEPS (KSUB * 4096)

/* splitmix64: small, fast, and good enough for shuffles and k-means */
typedef struct PQRandom
{
	uint64_t	state;
} PQRandom;

static uint64_t
RandomNext(PQRandom *rng)
{
	uint64_t	z = (rng->state += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* Uniform in [0, 1), as std::uniform_real_distribution<>(0, 1) */
static double
RandomUniform(PQRandom *rng)
{
	return (double) (RandomNext(rng) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform in [0, bound), without modulo bias */
static uint64_t
RandomBelow(PQRandom *rng, uint64_t bound)
{
	uint64_t	floor = (0 - bound) % bound;	/* 2^64 mod bound */
	uint64_t	r;

	do
		r = RandomNext(rng);
	while (r < floor);
	return r % bound;
}

/* Fisher-Yates, as std::shuffle */
static void
Shuffle(int32_t *perm, int64_t n, PQRandom *rng)
{
	for (int64_t i = n - 1; i > 0; i--)
	{
		int64_t		j = (int64_t) RandomBelow(rng, (uint64_t) i + 1);
		int32_t		t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
}

static void
Iota(int32_t *perm, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		perm[i] = (int32_t) i;
}

/* count * size bytes, or NULL when that overflows; a, b and size multiply */
static void *
AllocArray2(const TriageAllocator *alloc, size_t a, size_t b, size_t size)
{
	if (b != 0 && a > SIZE_MAX / b)
		return NULL;
	return TriageAllocArray(alloc, a * b, size);
}

/* Index of the first non-finite value of x[0..count), or -1 */
static int64_t
FirstNonFinite(const float *x, int64_t count)
{
	for (int64_t i = 0; i < count; i++)
		if (!isfinite(x[i]))
			return i;
	return -1;
}

static TriageStatus
TooSmall(int64_t n, char *errbuf, size_t errlen)
{
	return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
					   "matrix too small for product quantization: %lld rows, need at least %d",
					   (long long) n, KSUB);
}

/*
 * fastText's DenseMatrix::l2NormRow: float products summed in double, the
 * square root rounded to float.
 */
static float
RowNorm(const float *row, int64_t n)
{
	double		sum = 0.0;

	for (int64_t j = 0; j < n; j++)
		sum += (double) (row[j] * row[j]);
	return (float) sqrt(sum);
}

static inline float
DistL2(const float *x, const float *y, int32_t d)
{
	float		dist = 0.0f;

	for (int32_t i = 0; i < d; i++)
	{
		float		t = x[i] - y[i];

		dist += t * t;
	}
	return dist;
}

/* The nearest of the 256 centroids at c (d floats each); ties go to the first */
static inline uint8_t
AssignCentroid(const float *x, const float *c, int32_t d)
{
	float		best = DistL2(x, c, d);
	uint8_t		code = 0;

	for (int32_t j = 1; j < KSUB; j++)
	{
		float		dist;

		c += d;
		dist = DistL2(x, c, d);
		if (dist < best)
		{
			code = (uint8_t) j;
			best = dist;
		}
	}
	return code;
}

/*
 * fastText's MStep: each centroid becomes the mean of its points; an empty
 * cluster takes a copy of a cluster chosen by a size-weighted walk, and
 * the two copies are pushed apart by eps so the next E-step splits them.
 */
static void
MStep(const float *x, float *c, const uint8_t *codes, int32_t d, int32_t n, PQRandom *rng)
{
	int32_t		nelts[KSUB];

	memset(nelts, 0, sizeof(nelts));
	memset(c, 0, sizeof(float) * (size_t) d * KSUB);
	for (int32_t i = 0; i < n; i++)
	{
		float	   *ck = c + (int64_t) codes[i] * d;
		const float *xi = x + (int64_t) i * d;

		for (int32_t j = 0; j < d; j++)
			ck[j] += xi[j];
		nelts[codes[i]]++;
	}
	for (int32_t k = 0; k < KSUB; k++)
	{
		float		z = (float) nelts[k];

		if (nelts[k] != 0)
			for (int32_t j = 0; j < d; j++)
				c[(int64_t) k * d + j] /= z;
	}

	for (int32_t k = 0; k < KSUB; k++)
	{
		int32_t		m = 0;
		int64_t		steps = 0;

		if (nelts[k] != 0)
			continue;
		while (RandomUniform(rng) * (double) (n - KSUB) >= (double) (nelts[m] - 1))
		{
			m = (m + 1) % KSUB;
			if (++steps >= MAX_SPLIT_STEPS)
			{
				for (int32_t i = 0; i < KSUB; i++)
					if (nelts[i] > nelts[m])
						m = i;
				break;
			}
		}
		memcpy(c + (int64_t) k * d, c + (int64_t) m * d, sizeof(float) * (size_t) d);
		for (int32_t j = 0; j < d; j++)
		{
			float		sign = (float) ((j % 2) * 2 - 1);

			c[(int64_t) k * d + j] += sign * SPLIT_EPS;
			c[(int64_t) m * d + j] -= sign * SPLIT_EPS;
		}
		nelts[k] = nelts[m] / 2;
		nelts[m] -= nelts[k];
	}
}

/*
 * fastText's kmeans over n points of d floats at x, into the 256 centroids
 * at c.  perm (n entries) and codes (n bytes) are scratch.
 */
static void
KMeans(const float *x, float *c, int32_t n, int32_t d, int32_t *perm, uint8_t *codes,
	   PQRandom *rng)
{
	Iota(perm, n);
	Shuffle(perm, n, rng);
	for (int32_t i = 0; i < KSUB; i++)
		memcpy(c + (int64_t) i * d, x + (int64_t) perm[i] * d, sizeof(float) * (size_t) d);
	for (int32_t iter = 0; iter < FASTTEXT_PQ_NITER; iter++)
	{
		TRIAGE_CHECK_INTERRUPTS();
		for (int32_t i = 0; i < n; i++)
			codes[i] = AssignCentroid(x + (int64_t) i * d, c, d);
		MStep(x, c, codes, d, n, rng);
	}
}

static bool
PQIsValid(const FastTextPQ *pq)
{
	return pq != NULL && pq->centroids != NULL && pq->dim > 0 && pq->nsubq > 0 &&
		pq->dsub > 0 && pq->lastdsub > 0 && pq->lastdsub <= pq->dsub &&
		(int64_t) (pq->nsubq - 1) * pq->dsub + pq->lastdsub == pq->dim;
}

/*
 * Train a product quantizer on the n rows of dim floats at x, as fastText's
 * ProductQuantizer(dim, dsub).train(n, x).  dsub: floats per sub-vector
 * (the last one takes the remainder).  On success pq->centroids is
 * allocated from alloc (dim * 256 floats); on failure pq is zeroed.
 */
TriageStatus
FastTextPQTrain(FastTextPQ *pq, const float *x, int64_t n, int32_t dim, int32_t dsub,
				uint32_t seed, const TriageAllocator *alloc, char *errbuf, size_t errlen)
{
	PQRandom	rng = {seed};
	int32_t		np;
	int32_t		width;
	int32_t    *perm = NULL;
	int32_t    *kperm = NULL;
	float	   *xslice = NULL;
	uint8_t    *codes = NULL;
	int64_t		bad;

	memset(pq, 0, sizeof(*pq));
	if (dim <= 0 || dsub <= 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "product quantization needs a positive dimension and sub-vector size, not %d and %d",
						   dim, dsub);
	if (n < KSUB)
		return TooSmall(n, errbuf, errlen);
	/* as in fastText, row numbers are int32 */
	if (n > INT32_MAX)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "matrix too large for product quantization: %lld rows, at most %d",
						   (long long) n, INT32_MAX);
	if (x == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "no matrix to quantize");
	/* n * dim cannot overflow: both are below 2^31 and x holds that many */
	bad = FirstNonFinite(x, n * dim);
	if (bad >= 0)
		return TriageError(TRIAGE_NUMERIC, errbuf, errlen,
						   "cannot quantize: row %lld holds a non-finite value",
						   (long long) (bad / dim));

	np = n < FASTTEXT_PQ_MAX_POINTS ? (int32_t) n : FASTTEXT_PQ_MAX_POINTS;
	width = dsub < dim ? dsub : dim;
	pq->dim = dim;
	pq->dsub = dsub;
	pq->nsubq = dim / dsub;
	pq->lastdsub = dim % dsub;
	if (pq->lastdsub == 0)
		pq->lastdsub = dsub;
	else
		pq->nsubq++;

	pq->centroids = AllocArray2(alloc, (size_t) dim, KSUB, sizeof(float));
	kperm = TriageAllocArray(alloc, (size_t) np, sizeof(int32_t));
	xslice = AllocArray2(alloc, (size_t) np, (size_t) width, sizeof(float));
	codes = TriageAlloc(alloc, (size_t) np);
	if (np < n)
		perm = TriageAllocArray(alloc, (size_t) n, sizeof(int32_t));
	if (pq->centroids == NULL || kperm == NULL || xslice == NULL || codes == NULL ||
		(np < n && perm == NULL))
	{
		TriageFree(alloc, pq->centroids);
		TriageFree(alloc, kperm);
		TriageFree(alloc, xslice);
		TriageFree(alloc, codes);
		TriageFree(alloc, perm);
		memset(pq, 0, sizeof(*pq));
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen,
						   "out of memory training a product quantizer");
	}
	if (perm != NULL)
		Iota(perm, n);

	for (int32_t m = 0; m < pq->nsubq; m++)
	{
		int32_t		d = (m == pq->nsubq - 1) ? pq->lastdsub : pq->dsub;
		int64_t		offset = (int64_t) m * pq->dsub;

		/* each sub-quantizer sees its own sample, as fastText reshuffles */
		if (perm != NULL)
			Shuffle(perm, n, &rng);
		for (int32_t j = 0; j < np; j++)
		{
			int64_t		row = perm != NULL ? perm[j] : j;

			memcpy(xslice + (int64_t) j * d, x + row * dim + offset, sizeof(float) * (size_t) d);
		}
		/* sub-quantizer m's centroids are contiguous, 256 * d floats */
		KMeans(xslice, pq->centroids + (int64_t) m * KSUB * pq->dsub, np, d, kperm, codes, &rng);
	}

	TriageFree(alloc, kperm);
	TriageFree(alloc, xslice);
	TriageFree(alloc, codes);
	TriageFree(alloc, perm);
	return TRIAGE_OK;
}

/*
 * The nearest-centroid codes of the n rows of pq->dim floats at x, into
 * codes[row * nsubq + m] (n * nsubq bytes), as fastText's compute_codes.
 */
TriageStatus
FastTextPQEncode(const FastTextPQ *pq, const float *x, int64_t n, uint8_t *codes)
{
	if (!PQIsValid(pq) || n < 0 || (n > 0 && (x == NULL || codes == NULL)))
		return TRIAGE_INVALID_ARGUMENT;
	for (int64_t i = 0; i < n; i++)
	{
		const float *row = x + i * pq->dim;
		uint8_t    *code = codes + i * pq->nsubq;

		if (i % 4096 == 0)
			TRIAGE_CHECK_INTERRUPTS();
		for (int32_t m = 0; m < pq->nsubq; m++)
		{
			int32_t		d = (m == pq->nsubq - 1) ? pq->lastdsub : pq->dsub;

			code[m] = AssignCentroid(row + (int64_t) m * pq->dsub,
									 pq->centroids + (int64_t) m * KSUB * pq->dsub, d);
		}
	}
	return TRIAGE_OK;
}

/* Free what a matrix points to (either form) and zero it */
void
FastTextMatrixFree(FastTextMatrix *matrix, const TriageAllocator *alloc)
{
	if (!matrix->dense_borrowed)
		TriageFree(alloc, matrix->dense);
	matrix->dense_borrowed = false;
	TriageFree(alloc, matrix->codes);
	TriageFree(alloc, matrix->pq.centroids);
	TriageFree(alloc, matrix->norm_codes);
	TriageFree(alloc, matrix->npq.centroids);
	TriageFree(alloc, matrix->decoded);
	memset(matrix, 0, sizeof(*matrix));
}

/*
 * Product-quantize a dense matrix as fastText's QuantMatrix(mat, dsub,
 * qnorm) does.  With qnorm, each row is divided by its L2 norm (on a copy:
 * dense is not modified) and the norms get their own one-dimensional
 * quantizer.  On success *out is a quantized matrix allocated from alloc,
 * laid out as FastTextLoad would read it from an .ftz file; pass the
 * model's allocator to put it into a model.  On failure *out is zeroed.
 */
TriageStatus
FastTextQuantizeMatrix(const FastTextMatrix *dense, int32_t dsub, bool qnorm, uint32_t seed,
					   const TriageAllocator *alloc, FastTextMatrix *out,
					   char *errbuf, size_t errlen)
{
	FastTextMatrix result;
	int64_t		m = dense->m;
	int64_t		n = dense->n;
	int64_t		nsubq;
	float	   *rows = NULL;
	float	   *norms = NULL;
	const float *train = dense->dense;
	int64_t		bad;
	TriageStatus status;

	if (out == dense)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "a matrix cannot be quantized into itself");
	memset(out, 0, sizeof(*out));
	memset(&result, 0, sizeof(result));
	if (dense->quantized || dense->dense == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "only a dense matrix can be quantized");
	if (dsub <= 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "sub-vector size %d is not positive", dsub);
	if (n <= 0 || n > INT32_MAX)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "matrix width %lld cannot be quantized", (long long) n);
	if (m < KSUB)
		return TooSmall(m, errbuf, errlen);
	/* the file stores the code count as an int32 */
	nsubq = n / dsub + (n % dsub != 0);
	if (m > INT32_MAX / nsubq)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "matrix of %lld rows by %lld columns is too large for fastText's quantized format",
						   (long long) m, (long long) n);
	/* m * n fits: m * nsubq < 2^31 and n < 2^31 */
	bad = FirstNonFinite(dense->dense, m * n);
	if (bad >= 0)
		return TriageError(TRIAGE_NUMERIC, errbuf, errlen,
						   "cannot quantize: row %lld holds a non-finite value",
						   (long long) (bad / n));

	result.codes = TriageAllocArray(alloc, (size_t) m, (size_t) nsubq);
	if (qnorm)
	{
		rows = AllocArray2(alloc, (size_t) m, (size_t) n, sizeof(float));
		norms = TriageAllocArray(alloc, (size_t) m, sizeof(float));
		result.norm_codes = TriageAlloc(alloc, (size_t) m);
	}
	if (result.codes == NULL ||
		(qnorm && (rows == NULL || norms == NULL || result.norm_codes == NULL)))
	{
		status = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen,
							 "out of memory quantizing a matrix");
		goto done;
	}

	if (qnorm)
	{
		memcpy(rows, dense->dense, sizeof(float) * (size_t) (m * n));
		for (int64_t i = 0; i < m; i++)
		{
			float	   *row = rows + i * n;

			norms[i] = RowNorm(row, n);
			if (!isfinite(norms[i]))
			{
				status = TriageError(TRIAGE_NUMERIC, errbuf, errlen,
									 "cannot quantize: the norm of row %lld overflows",
									 (long long) i);
				goto done;
			}
			/* fastText's divideRow leaves all-zero rows alone */
			if (norms[i] != 0.0f)
				for (int64_t j = 0; j < n; j++)
					row[j] /= norms[i];
		}
		status = FastTextPQTrain(&result.npq, norms, m, 1, 1, seed, alloc, errbuf, errlen);
		if (status != TRIAGE_OK)
			goto done;
		(void) FastTextPQEncode(&result.npq, norms, m, result.norm_codes);
		train = rows;
	}

	status = FastTextPQTrain(&result.pq, train, m, (int32_t) n, dsub, seed, alloc, errbuf, errlen);
	if (status != TRIAGE_OK)
		goto done;
	(void) FastTextPQEncode(&result.pq, train, m, result.codes);

	result.m = m;
	result.n = n;
	result.quantized = true;
	result.qnorm = qnorm;
	*out = result;

done:
	TriageFree(alloc, rows);
	TriageFree(alloc, norms);
	if (status != TRIAGE_OK)
		FastTextMatrixFree(&result, alloc);
	return status;
}

typedef struct RankedRow
{
	float		norm;
	int32_t		row;
	bool		first;			/* the EOS row, which always ranks first */
} RankedRow;

/* fastText's selectEmbeddings order; ties by row, so the result is unique */
static int
CompareRankedRows(const void *a, const void *b)
{
	const RankedRow *x = a;
	const RankedRow *y = b;

	if (x->first != y->first)
		return x->first ? -1 : 1;
	if (x->norm != y->norm)
		return x->norm > y->norm ? -1 : 1;
	return (x->row > y->row) - (x->row < y->row);
}

/*
 * fastText's selectEmbeddings(cutoff): the input rows ranked by L2 norm,
 * largest first, with the EOS word's row always first; the first
 * min(cutoff, rows) of them.  *keep is allocated from alloc (or malloc).
 * fastText only prunes when cutoff is below the row count; callers that
 * want the same should check that first.
 */
TriageStatus
FastTextSelectRows(const FastTextModel *model, int64_t cutoff, const TriageAllocator *alloc,
				   int32_t **keep, int64_t *nkeep, char *errbuf, size_t errlen)
{
	const FastTextMatrix *input = &model->input;
	RankedRow  *ranked;
	int32_t    *result;
	int64_t		count;

	*keep = NULL;
	*nkeep = 0;
	if (input->quantized || input->dense == NULL)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "rows can only be selected from a dense input matrix");
	if (cutoff <= 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "cutoff %lld is not positive", (long long) cutoff);
	/* rows are int32 in fastText's prune index */
	if (input->m > INT32_MAX)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "input matrix has too many rows (%lld) to select from",
						   (long long) input->m);

	ranked = TriageAllocArray(alloc, (size_t) input->m, sizeof(RankedRow));
	if (ranked == NULL && input->m > 0)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory ranking rows");
	for (int64_t i = 0; i < input->m; i++)
	{
		ranked[i].norm = RowNorm(input->dense + i * input->n, input->n);
		ranked[i].row = (int32_t) i;
		ranked[i].first = (i == model->eos_id);
		if (isnan(ranked[i].norm))
		{
			TriageFree(alloc, ranked);
			return TriageError(TRIAGE_NUMERIC, errbuf, errlen,
							   "input row %lld holds NaN", (long long) i);
		}
	}
	if (input->m > 1)
		qsort(ranked, (size_t) input->m, sizeof(RankedRow), CompareRankedRows);

	count = cutoff < input->m ? cutoff : input->m;
	result = TriageAllocArray(alloc, (size_t) (count > 0 ? count : 1), sizeof(int32_t));
	if (result == NULL)
	{
		TriageFree(alloc, ranked);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory ranking rows");
	}
	for (int64_t i = 0; i < count; i++)
		result[i] = ranked[i].row;
	TriageFree(alloc, ranked);
	*keep = result;
	*nkeep = count;
	return TRIAGE_OK;
}

/*
 * fastText's Dictionary::prune(keep) plus the input-row selection of its
 * quantize, on a model with a dense input, in place.
 *
 * keep: distinct input rows.  Kept words (rows below nwords), in ascending
 * order, become the new words; the labels follow them, in their order.
 * Kept n-gram rows are renumbered 0, 1, ... in the order given, and the
 * prune index maps each one's bucket to its new row.  The input matrix
 * becomes the kept word rows followed by the kept n-gram rows.  A model
 * pruned before (its prune index maps buckets to rows) is pruned again
 * through that index.
 *
 * Argument errors leave the model unchanged.  If indexing the new
 * dictionary runs out of memory the model is pruned but cannot predict;
 * it can only be freed.
 */
TriageStatus
FastTextPrune(FastTextModel *model, const int32_t *keep, int64_t nkeep,
			  char *errbuf, size_t errlen)
{
	const TriageAllocator *alloc = &model->allocator;
	FastTextMatrix *input = &model->input;
	int64_t		rows = input->m;
	int64_t		dim = input->n;
	int32_t		nwords = model->nwords;
	int32_t    *newpos;
	float	   *dense;
	FastTextPruneEntry *pruneidx = NULL;
	int64_t		npruneidx = 0;
	int32_t		newwords = 0;
	int64_t		newngrams = 0;
	int64_t		out;
	size_t		budget;

	if (input->quantized || input->dense == NULL)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "only a model with a dense input matrix can be pruned");
	if (nkeep < 0 || (nkeep > 0 && keep == NULL))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "invalid list of rows to keep");
	/* rows are int32, in keep and in the prune index */
	if (rows < nwords || rows > INT32_MAX)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "input matrix has %lld rows for %d words", (long long) rows, nwords);

	/* newpos[r]: -1 dropped; else the kept row's new index (n-grams: after words) */
	newpos = TriageAllocArray(alloc, (size_t) (rows > 0 ? rows : 1), sizeof(int32_t));
	if (newpos == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory pruning");
	memset(newpos, 0xff, sizeof(int32_t) * (size_t) rows);
	for (int64_t i = 0; i < nkeep; i++)
	{
		if (keep[i] < 0 || keep[i] >= rows)
		{
			TriageFree(alloc, newpos);
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							   "row %d to keep is outside the input matrix (%lld rows)",
							   keep[i], (long long) rows);
		}
		if (newpos[keep[i]] != -1)
		{
			TriageFree(alloc, newpos);
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							   "row %d is listed twice in the rows to keep", keep[i]);
		}
		newpos[keep[i]] = 0;
	}
	for (int32_t r = 0; r < nwords; r++)
		if (newpos[r] == 0)
			newpos[r] = newwords++;
	for (int64_t i = 0; i < nkeep; i++)
		if (keep[i] >= nwords)
			newpos[keep[i]] = newwords + (int32_t) newngrams++;

	dense = AllocArray2(alloc, (size_t) (nkeep > 0 ? nkeep : 1), (size_t) dim, sizeof(float));
	if (model->pruneidx_size < 0)
		npruneidx = newngrams;
	else
		npruneidx = model->pruneidx_size;
	if (npruneidx > 0)
		pruneidx = TriageAllocArray(alloc, (size_t) npruneidx, sizeof(FastTextPruneEntry));
	if (dense == NULL || (npruneidx > 0 && pruneidx == NULL))
	{
		TriageFree(alloc, newpos);
		TriageFree(alloc, dense);
		TriageFree(alloc, pruneidx);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory pruning");
	}

	/* the new prune index, sorted by bucket as the predictor searches it */
	if (model->pruneidx_size < 0)
	{
		/* n-gram row r is bucket r - nwords; walking rows keeps buckets sorted */
		npruneidx = 0;
		for (int64_t r = nwords; r < rows; r++)
			if (newpos[r] >= 0)
			{
				pruneidx[npruneidx].bucket = (int32_t) (r - nwords);
				pruneidx[npruneidx].row = newpos[r] - newwords;
				npruneidx++;
			}
	}
	else
	{
		/* already pruned: follow the old map; it is sorted by bucket already */
		int64_t		n = 0;

		for (int64_t i = 0; i < model->pruneidx_size; i++)
		{
			int64_t		r = (int64_t) nwords + model->pruneidx[i].row;

			if (r < rows && newpos[r] >= 0)
			{
				pruneidx[n].bucket = model->pruneidx[i].bucket;
				pruneidx[n].row = newpos[r] - newwords;
				n++;
			}
		}
		npruneidx = n;
	}

	/* the new input: kept words in id order, then kept n-grams in keep order */
	out = 0;
	for (int32_t r = 0; r < nwords; r++)
		if (newpos[r] >= 0)
			memcpy(dense + (out++) * dim, input->dense + (int64_t) r * dim,
				   sizeof(float) * (size_t) dim);
	for (int64_t i = 0; i < nkeep; i++)
		if (keep[i] >= nwords)
			memcpy(dense + (out++) * dim, input->dense + (int64_t) keep[i] * dim,
				   sizeof(float) * (size_t) dim);

	/* the entries: kept words keep their relative order, labels follow */
	{
		int32_t		j = 0;

		for (int32_t i = 0; i < model->size; i++)
			if (model->entries[i].type == 1 || (i < nwords && newpos[i] >= 0))
				model->entries[j++] = model->entries[i];
		model->nwords = newwords;
		model->size = j;
	}

	if (!input->dense_borrowed)
		TriageFree(alloc, input->dense);
	input->dense_borrowed = false;
	input->dense = dense;
	input->m = nkeep;
	TriageFree(alloc, model->pruneidx);
	model->pruneidx = pruneidx;
	model->pruneidx_size = npruneidx;
	TriageFree(alloc, newpos);

	/* the same proportion the loader allows: about the size of the file */
	budget = (size_t) nkeep * (size_t) dim * sizeof(float);
	for (int32_t i = 0; i < model->size; i++)
		budget += (size_t) model->entries[i].length + 10;
	return FastTextIndexDictionary(model, budget, errbuf, errlen);
}

void
FastTextQuantizeDefaults(FastTextQuantizeOptions *options)
{
	options->dsub = 2;
	options->qnorm = false;
	options->qout = false;
	options->cutoff = 0;
	options->seed = FASTTEXT_PQ_SEED;
}

/*
 * `fasttext quantize` without -retrain, on a model in place: with a cutoff
 * below the input row count, keep that many rows (FastTextSelectRows,
 * FastTextPrune); quantize the input with dsub and qnorm; with qout,
 * quantize the output too (dsub 2, as fastText hard-codes).  The model can
 * then be saved as an .ftz with FastTextSave.
 *
 * Everything that can be checked up front is, so argument errors leave the
 * model as it was; after another failure (out of memory, NaN) it may be
 * pruned but not quantized, and should be freed.
 */
TriageStatus
FastTextQuantize(FastTextModel *model, const FastTextQuantizeOptions *options,
				 char *errbuf, size_t errlen)
{
	const TriageAllocator *alloc = &model->allocator;
	FastTextMatrix qinput;
	FastTextMatrix qoutput;
	bool		prune;
	TriageStatus status;

	memset(&qoutput, 0, sizeof(qoutput));
	if (model->args.model != FASTTEXT_MODEL_SUPERVISED)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "only supervised models can be quantized");
	if (model->quant_input || model->int8_input || model->input.quantized || model->output.quantized)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "model is already quantized");
	if (options->dsub <= 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "sub-vector size %d is not positive", options->dsub);
	if (options->cutoff < 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "cutoff %lld is negative", (long long) options->cutoff);
	prune = options->cutoff > 0 && options->cutoff < model->input.m;
	if (prune && options->cutoff < KSUB)
		return TooSmall(options->cutoff, errbuf, errlen);

	/*
	 * The output first, since it can fail on a small label set and the
	 * input's pruning cannot be undone.  Each quantizer has its own random
	 * stream (as each fastText ProductQuantizer has), so order is free.
	 */
	if (options->qout)
	{
		status = FastTextQuantizeMatrix(&model->output, FASTTEXT_QOUT_DSUB, options->qnorm,
										options->seed, alloc, &qoutput, errbuf, errlen);
		if (status != TRIAGE_OK)
			return status;
	}
	if (prune)
	{
		int32_t    *keep;
		int64_t		nkeep;

		status = FastTextSelectRows(model, options->cutoff, alloc, &keep, &nkeep, errbuf, errlen);
		if (status == TRIAGE_OK)
		{
			status = FastTextPrune(model, keep, nkeep, errbuf, errlen);
			TriageFree(alloc, keep);
		}
		if (status != TRIAGE_OK)
		{
			FastTextMatrixFree(&qoutput, alloc);
			return status;
		}
	}
	status = FastTextQuantizeMatrix(&model->input, options->dsub, options->qnorm,
									options->seed, alloc, &qinput, errbuf, errlen);
	if (status != TRIAGE_OK)
	{
		FastTextMatrixFree(&qoutput, alloc);
		return status;
	}

	FastTextMatrixFree(&model->input, alloc);
	model->input = qinput;
	model->quant_input = true;
	if (options->qout)
	{
		FastTextMatrixFree(&model->output, alloc);
		model->output = qoutput;
	}
	model->qout = options->qout;
	return TRIAGE_OK;
}

/*
 * Int8 quantization of the input matrix, in place: each row becomes 127
 * steps of max |x| / 127, with its scale kept as a float.  Four times
 * smaller than dense, and closer to it than product quantization; prune
 * first (FastTextSelectRows, FastTextPrune) for more.
 */
TriageStatus
FastTextQuantizeInt8(FastTextModel *model, char *errbuf, size_t errlen)
{
	const TriageAllocator *alloc = &model->allocator;
	FastTextMatrix *input = &model->input;
	int8_t	   *q8;
	float	   *scales;

	if (model->quant_input || model->int8_input || input->quantized || input->dense == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "model is already quantized");
	q8 = TriageAlloc(alloc, (size_t) (input->m * input->n) + 1);
	scales = TriageAllocArray(alloc, (size_t) input->m + 1, sizeof(float));
	if (q8 == NULL || scales == NULL)
	{
		TriageFree(alloc, q8);
		TriageFree(alloc, scales);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory quantizing to int8");
	}
	for (int64_t i = 0; i < input->m; i++)
	{
		const float *row = input->dense + i * input->n;
		float		max = 0.0f;

		if (i % 4096 == 0)
			TRIAGE_CHECK_INTERRUPTS();
		for (int64_t j = 0; j < input->n; j++)
			max = fabsf(row[j]) > max ? fabsf(row[j]) : max;
		if (!isfinite(max))
		{
			TriageFree(alloc, q8);
			TriageFree(alloc, scales);
			return TriageError(TRIAGE_NUMERIC, errbuf, errlen, "input row %lld is not finite", (long long) i);
		}
		scales[i] = max / 127.0f;
		for (int64_t j = 0; j < input->n; j++)
			q8[i * input->n + j] = max > 0.0f ? (int8_t) lrintf(row[j] / scales[i]) : 0;
	}
	if (!input->dense_borrowed)
		TriageFree(alloc, input->dense);
	input->dense_borrowed = false;
	input->dense = NULL;
	input->q8 = q8;
	input->scales = scales;
	input->int8 = true;
	model->int8_input = true;
	return TRIAGE_OK;
}

/*
 * The inverse, for export to fastText, which has no int8 matrices: the
 * dense values are exactly scale * q, so predictions do not change.  A
 * pruned model cannot be dense in fastText's format.
 */
TriageStatus
FastTextDequantizeInt8(FastTextModel *model, char *errbuf, size_t errlen)
{
	const TriageAllocator *alloc = &model->allocator;
	FastTextMatrix *input = &model->input;
	float	   *dense;

	if (!model->int8_input)
		return TRIAGE_OK;
	if (model->pruneidx_size >= 0)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "an int8 model with a vocabulary cutoff has no fastText equivalent");
	dense = TriageAllocArray(alloc, (size_t) (input->m * input->n) + 1, sizeof(float));
	if (dense == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory");
	for (int64_t i = 0; i < input->m; i++)
		for (int64_t j = 0; j < input->n; j++)
			dense[i * input->n + j] = input->scales[i] * (float) input->q8[i * input->n + j];
	TriageFree(alloc, input->q8);
	TriageFree(alloc, input->scales);
	TriageFree(alloc, input->decoded);
	input->q8 = NULL;
	input->scales = NULL;
	input->decoded = NULL;
	input->int8 = false;
	input->dense = dense;
	model->int8_input = false;
	return TRIAGE_OK;
}
