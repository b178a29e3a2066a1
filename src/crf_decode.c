/*
 * crf_decode.c
 *		Field extraction with a trained CRF: state scores from the int8
 *		weights, Viterbi under the BIO constraints, and a confidence per span
 *		from scaled forward-backward.
 *
 * The confidence of a span s..e of field f is the posterior probability of
 * exactly that labeling: B-f at s, I-f up to e, and no I-f at e + 1.  The
 * posterior of a linear chain is itself a Markov chain, so this is the
 * marginal at s times the conditionals P(y_t | y_t-1) along the span, each
 * read off the scaled forward and backward vectors.
 *
 * Everything per call lives in the caller's CrfWorkspace; once it has grown
 * to fit the text, a call allocates nothing.
 */
#include <math.h>

#include "crf_internal.h"

/*
 * Four floats, with GCC/Clang vector extensions (plain scalar code where the
 * target has no SIMD).  Rows are padded to a multiple of 4 labels; loads and
 * stores go through memcpy, so no alignment is assumed.
 */
typedef float V4 __attribute__((vector_size(16)));
typedef int32_t I4 __attribute__((vector_size(16)));

static inline V4
Load(const void *p)
{
	V4			v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline void
Store(float *p, V4 v)
{
	memcpy(p, &v, sizeof(v));
}

static inline V4
Splat(float x)
{
	V4			v = {x, x, x, x};

	return v;
}

static inline V4
Max(V4 a, V4 b)
{
	I4			m = a > b;

	return (V4) (((I4) a & m) | ((I4) b & ~m));
}

/*
 * exp(x) for x <= 0 on four lanes, relative error about 2e-7 (x below -87
 * gives 0): x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor
 * polynomial of degree 6, 2^n put into the exponent bits.
 */
static inline V4
ExpNeg(V4 x)
{
	I4			n;
	V4			r,
				p;
	V4			lo = Splat(-87.0f);
	I4			small = x < lo;

	x = Max(x, lo);
	n = __builtin_convertvector(x * Splat(1.44269504f) - Splat(0.5f), I4);
	r = x - __builtin_convertvector(n, V4) * Splat(0.693145752f);
	r = r - __builtin_convertvector(n, V4) * Splat(1.42860677e-6f);
	p = Splat(1.0f / 720.0f);
	p = p * r + Splat(1.0f / 120.0f);
	p = p * r + Splat(1.0f / 24.0f);
	p = p * r + Splat(1.0f / 6.0f);
	p = p * r + Splat(0.5f);
	p = p * r + Splat(1.0f);
	p = p * r + Splat(1.0f);
	p = (V4) ((I4) p + ((n) << 23));
	return (V4) ((I4) p & ~small);
}

void
CrfWorkspaceInit(CrfWorkspace *ws, const TriageAllocator *allocator)
{
	memset(ws, 0, sizeof(*ws));
	ws->allocator = allocator ? *allocator : TriageMallocAllocator;
}

static void
FreeArrays(CrfWorkspace *ws)
{
	const TriageAllocator *a = &ws->allocator;

	TriageFree(a, ws->info);
	TriageFree(a, ws->scores);
	TriageFree(a, ws->alpha);
	TriageFree(a, ws->beta);
	TriageFree(a, ws->scale);
	TriageFree(a, ws->path);
	ws->info = NULL;
	ws->scores = NULL;
	ws->alpha = NULL;
	ws->beta = NULL;
	ws->scale = NULL;
	ws->path = NULL;
	ws->token_capacity = 0;
	ws->label_capacity = 0;
}

void
CrfWorkspaceFree(CrfWorkspace *ws)
{
	FreeArrays(ws);
	TriageFree(&ws->allocator, ws->tokens);
	ws->tokens = NULL;
}

static bool
Reserve(CrfWorkspace *ws, int32_t ntokens, int32_t lpad)
{
	const TriageAllocator *a = &ws->allocator;
	int32_t		tc,
				lc;
	size_t		cells;

	if (ntokens <= ws->token_capacity && lpad <= ws->label_capacity)
		return true;
	tc = ws->token_capacity > 0 ? ws->token_capacity : 128;
	while (tc < ntokens)
		tc *= 2;
	if (tc > CRF_MAX_TOKENS)
		tc = CRF_MAX_TOKENS;
	lc = lpad > ws->label_capacity ? lpad : ws->label_capacity;
	FreeArrays(ws);
	cells = (size_t) tc * lc;
	ws->info = TriageAllocArray(a, tc, sizeof(CrfTokenInfo));
	ws->scores = TriageAllocArray(a, cells, sizeof(float));
	ws->alpha = TriageAllocArray(a, cells, sizeof(float));
	ws->beta = TriageAllocArray(a, cells, sizeof(float));
	ws->scale = TriageAllocArray(a, tc, sizeof(float));
	ws->path = TriageAllocArray(a, tc, sizeof(int16_t));
	if (!ws->info || !ws->scores || !ws->alpha || !ws->beta || !ws->scale || !ws->path)
	{
		FreeArrays(ws);
		return false;
	}
	ws->token_capacity = tc;
	ws->label_capacity = lc;
	return true;
}

/* scores[t * P + y] = sum of the weights of token t's features for label y (0 in padding) */
static void
StateScores(const CrfModel *m, const char *text, const CrfToken *tokens,
			const CrfTokenInfo *info, int32_t n, float *scores)
{
	int32_t		P = m->lpad;
	uint64_t	hashes[CRF_MAX_TOKEN_FEATURES];
	float		part[4 * (CRF_MAX_LABELS + 3)];

	for (int32_t t = 0; t < n; t++)
	{
		float	   *row = scores + (size_t) t * P;
		int			nfixed;
		int			nh = CrfTokenFeatures(m->features, text, tokens, info, n, t, hashes, &nfixed);

		uint32_t	where[CRF_MAX_TOKEN_FEATURES];

		/* three passes, so the cache misses of one token's features overlap */
		for (int h = 0; h < nh; h++)
			__builtin_prefetch(&m->slots[hashes[h] & m->slot_mask]);
		for (int h = 0; h < nh; h++)
		{
			where[h] = CrfTableFind(m->slots, m->slot_mask, hashes[h]);
			if (where[h] != UINT32_MAX)
				__builtin_prefetch(m->blob + where[h]);
		}
		/*
		 * Four partial rows: nearly every feature has a weight for O, and
		 * one row would chain all those additions through one memory cell.
		 */
		memset(part, 0, (size_t) 4 * P * sizeof(float));
		for (int h = 0; h < nh; h++)
		{
			const uint8_t *rec;
			float	   *dst = part + (h & 3) * P;
			float		scale;
			uint32_t	cnt;

			if (where[h] == UINT32_MAX)
				continue;
			rec = m->blob + where[h];
			cnt = rec[0];
			if (cnt == 0)
			{
				const uint8_t *w = rec + 1;

				for (int32_t j = 0; j < P; j += 4)
					Store(dst + j, Load(dst + j) + Load(w + 4 * j));
				continue;
			}
			memcpy(&scale, rec + 1, 4);
			rec += 5;
			for (uint32_t k = 0; k < cnt; k++)
				dst[rec[2 * k]] += scale * (float) (int8_t) rec[2 * k + 1];
		}
		for (int32_t j = 0; j < P; j += 4)
			Store(row + j, (Load(part + j) + Load(part + P + j)) +
				  (Load(part + 2 * P + j) + Load(part + 3 * P + j)));
	}
}

/*
 * Best label path into ws->path[0..n).  The Viterbi scores of every
 * position are kept (in ws->alpha) and the path is recovered by redoing
 * each step's argmax backwards, which keeps the inner loop free of back
 * pointers.
 */
static void
Viterbi(const CrfModel *m, CrfWorkspace *ws, int32_t n)
{
	int32_t		L = m->nlabels;
	int32_t		P = m->lpad;
	const float *scores = ws->scores;
	float	   *V = ws->alpha;
	int32_t		best = 0;
	float		best_score = -INFINITY;

	for (int32_t j = 0; j < P; j += 4)
		Store(V + j, Load(m->vstart + j) + Load(scores + j));
	for (int32_t t = 1; t < n; t++)
	{
		const float *prev = V + (size_t) (t - 1) * P;
		float	   *cur = V + (size_t) t * P;
		const float *row = scores + (size_t) t * P;

		int32_t		src[CRF_MAX_LABELS];
		int32_t		ns = 0;

		float		top = prev[0];
		float		floor_;

		/*
		 * Sources within the beam of the best one, then one register
		 * accumulator per 4 targets.  For a target O or B-f that is exact:
		 * its best source is never worse than the best overall by more than
		 * vbeam.  A target I-f has only B-f and I-f as sources, which the
		 * beam may drop, so it is redone exactly below.
		 */
		for (int32_t i = 1; i < L; i++)
			top = prev[i] > top ? prev[i] : top;
		floor_ = top - m->vbeam;
		for (int32_t i = 0; i < L; i++)
			if (prev[i] >= floor_ && prev[i] != -INFINITY)
				src[ns++] = i;
		for (int32_t j = 0; j < P; j += 4)
		{
			V4			acc0 = Splat(-INFINITY);
			V4			acc1 = acc0;
			int32_t		k = 0;

			for (; k + 1 < ns; k += 2)
			{
				acc0 = Max(acc0, Splat(prev[src[k]]) + Load(m->vtrans + (size_t) src[k] * P + j));
				acc1 = Max(acc1, Splat(prev[src[k + 1]]) + Load(m->vtrans + (size_t) src[k + 1] * P + j));
			}
			if (k < ns)
				acc0 = Max(acc0, Splat(prev[src[k]]) + Load(m->vtrans + (size_t) src[k] * P + j));
			Store(cur + j, Max(acc0, acc1) + Load(row + j));
		}
		for (int32_t y = 2; y < L; y += 2)
		{
			float		a = prev[y - 1] + m->vtrans[(size_t) (y - 1) * P + y];
			float		b = prev[y] + m->vtrans[(size_t) y * P + y];

			cur[y] = (a > b ? a : b) + row[y];
		}
	}
	for (int32_t y = 0; y < L; y++)
	{
		float		v = V[(size_t) (n - 1) * P + y] + m->vend[y];

		if (v > best_score)
		{
			best_score = v;
			best = y;
		}
	}
	ws->path[n - 1] = (int16_t) best;
	for (int32_t t = n - 1; t > 0; t--)
	{
		const float *prev = V + (size_t) (t - 1) * P;
		int32_t		y = ws->path[t];
		int32_t		arg = 0;
		float		b = -INFINITY;

		for (int32_t i = 0; i < L; i++)
		{
			float		v = prev[i] + m->vtrans[(size_t) i * P + y];

			if (v > b)
			{
				b = v;
				arg = i;
			}
		}
		ws->path[t - 1] = (int16_t) arg;
	}
}

/* Scaled forward-backward over exp(score - max), which overwrites ws->scores */
static void
ForwardBackward(const CrfModel *m, CrfWorkspace *ws, int32_t n)
{
	int32_t		L = m->nlabels;
	int32_t		P = m->lpad;
	float	   *ps = ws->scores;
	float	   *alpha = ws->alpha;
	float	   *beta = ws->beta;
	float	   *scale = ws->scale;
	float		zend = 0.0f;

	for (int32_t t = 0; t < n; t++)
	{
		float	   *row = ps + (size_t) t * P;
		float		mx = row[0];

		for (int32_t y = 1; y < L; y++)
			if (row[y] > mx)
				mx = row[y];
		for (int32_t y = L; y < P; y++)
			row[y] = mx;		/* padding: exp(0), multiplied by 0 later */
		for (int32_t y = 0; y < P; y += 4)
			Store(row + y, ExpNeg(Load(row + y) - Splat(mx)));
	}
	for (int32_t t = 0; t < n; t++)
	{
		float	   *a = alpha + (size_t) t * P;
		const float *row = ps + (size_t) t * P;
		float		c = 0.0f;

		if (t == 0)
		{
			for (int32_t j = 0; j < P; j += 4)
				Store(a + j, Load(m->estart + j));
		}
		else
		{
			const float *ap = a - P;
			int32_t		src[CRF_MAX_LABELS];
			int32_t		ns = 0;

			for (int32_t i = 0; i < L; i++)
				if (ap[i] != 0.0f)
					src[ns++] = i;
			for (int32_t j = 0; j < P; j += 4)
			{
				V4			acc0 = Splat(0.0f);
				V4			acc1 = acc0;
				int32_t		k = 0;

				for (; k + 1 < ns; k += 2)
				{
					acc0 += Splat(ap[src[k]]) * Load(m->etrans + (size_t) src[k] * P + j);
					acc1 += Splat(ap[src[k + 1]]) * Load(m->etrans + (size_t) src[k + 1] * P + j);
				}
				if (k < ns)
					acc0 += Splat(ap[src[k]]) * Load(m->etrans + (size_t) src[k] * P + j);
				Store(a + j, acc0 + acc1);
			}
		}
		for (int32_t j = 0; j < L; j++)
		{
			a[j] *= row[j];
			c += a[j];
		}
		if (!(c > 0.0f))
			c = 1e-30f;
		scale[t] = c;
		{
			V4			inv = Splat(1.0f / c);

			for (int32_t j = 0; j < P; j += 4)
				Store(a + j, Load(a + j) * inv);
		}
	}
	for (int32_t y = 0; y < L; y++)
		zend += alpha[(size_t) (n - 1) * P + y] * m->eend[y];
	if (!(zend > 0.0f))
		zend = 1e-30f;
	{
		V4			inv = Splat(1.0f / zend);
		float	   *b = beta + (size_t) (n - 1) * P;

		for (int32_t j = 0; j < P; j += 4)
			Store(b + j, Load(m->eend + j) * inv);
	}
	for (int32_t t = n - 1; t > 0; t--)
	{
		const float *b = beta + (size_t) t * P;
		const float *row = ps + (size_t) t * P;
		float	   *bp = beta + (size_t) (t - 1) * P;
		float		inv = 1.0f / scale[t];

		int32_t		src[CRF_MAX_LABELS];
		float		tv[CRF_MAX_LABELS];
		int32_t		ns = 0;

		for (int32_t j = 0; j < L; j++)
		{
			float		tj = row[j] * b[j] * inv;

			if (tj != 0.0f)
			{
				src[ns] = j;
				tv[ns++] = tj;
			}
		}
		for (int32_t i = 0; i < P; i += 4)
		{
			V4			acc0 = Splat(0.0f);
			V4			acc1 = acc0;
			int32_t		k = 0;

			for (; k + 1 < ns; k += 2)
			{
				acc0 += Splat(tv[k]) * Load(m->etrans_t + (size_t) src[k] * P + i);
				acc1 += Splat(tv[k + 1]) * Load(m->etrans_t + (size_t) src[k + 1] * P + i);
			}
			if (k < ns)
				acc0 += Splat(tv[k]) * Load(m->etrans_t + (size_t) src[k] * P + i);
			Store(bp + i, acc0 + acc1);
		}
	}
}

/* P(y_t = to | y_t-1 = from) under the posterior */
static inline double
Conditional(const CrfModel *m, const CrfWorkspace *ws, int32_t t, int32_t from, int32_t to)
{
	int32_t		P = m->lpad;
	double		den = (double) ws->scale[t] * ws->beta[(size_t) (t - 1) * P + from];

	if (!(den > 0.0))
		return 0.0;
	return (double) m->etrans[from * P + to] * ws->scores[(size_t) t * P + to] *
		ws->beta[(size_t) t * P + to] / den;
}

static double
SpanConfidence(const CrfModel *m, const CrfWorkspace *ws, int32_t n, int32_t s, int32_t e,
			   int32_t f)
{
	int32_t		P = m->lpad;
	int32_t		B = CRF_LABEL_B(f),
				I = CRF_LABEL_I(f);
	double		p = (double) ws->alpha[(size_t) s * P + B] * ws->beta[(size_t) s * P + B];

	for (int32_t t = s + 1; t <= e; t++)
		p *= Conditional(m, ws, t, t == s + 1 ? B : I, I);
	if (e + 1 < n)
		p *= 1.0 - Conditional(m, ws, e + 1, e == s ? B : I, I);
	if (!(p > 0.0))
		return 0.0;
	return p > 1.0 ? 1.0 : p;
}

TriageStatus
CrfExtract(const CrfModel *model, CrfWorkspace *ws, const char *text, size_t len,
		   CrfResult *results, int32_t *nresults, char *errbuf, size_t errlen)
{
	int32_t		n;
	int32_t		best[CRF_MAX_FIELDS];
	int32_t		nr = 0;

	*nresults = 0;
	if (model == NULL || ws == NULL || results == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "CrfExtract: missing argument");
	if (text == NULL || len == 0)
		return TRIAGE_OK;
	if (ws->tokens == NULL)
	{
		ws->tokens = TriageAllocArray(&ws->allocator, CRF_MAX_TOKENS, sizeof(CrfToken));
		if (ws->tokens == NULL)
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for the CRF workspace");
	}
	n = CrfTokenize(text, len, ws->tokens, model->max_tokens);
	if (n == 0)
		return TRIAGE_OK;
	if (!Reserve(ws, n, model->lpad))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for the CRF workspace");

	CrfPrepareTokens(text, ws->tokens, n, ws->info);
	CrfApplyLexicon(model, ws->info, n);
	StateScores(model, text, ws->tokens, ws->info, n, ws->scores);
	Viterbi(model, ws, n);
	ForwardBackward(model, ws, n);

	for (int32_t f = 0; f < model->nfields; f++)
		best[f] = -1;
	for (int32_t t = 0; t < n;)
	{
		int32_t		y = ws->path[t];
		int32_t		f,
					e;
		double		conf;

		if (y == CRF_LABEL_O || !(y & 1))
		{
			t++;				/* O, or an I without its B (cannot happen) */
			continue;
		}
		f = (y - 1) / 2;
		e = t;
		while (e + 1 < n && ws->path[e + 1] == CRF_LABEL_I(f))
			e++;
		conf = SpanConfidence(model, ws, n, t, e, f);
		if (best[f] < 0 || conf > results[best[f]].confidence)
		{
			if (best[f] < 0)
				best[f] = nr++;
			results[best[f]].field = f;
			results[best[f]].start = ws->tokens[t].start;
			results[best[f]].end = ws->tokens[e].end;
			results[best[f]].confidence = (float) conf;
		}
		t = e + 1;
	}
	/* text order */
	for (int32_t i = 1; i < nr; i++)
	{
		CrfResult	r = results[i];
		int32_t		j = i;

		while (j > 0 && results[j - 1].start > r.start)
		{
			results[j] = results[j - 1];
			j--;
		}
		results[j] = r;
	}
	*nresults = nr;
	return TRIAGE_OK;
}
