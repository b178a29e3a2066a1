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
 * Speed: most weight lookups are per distinct token, not per token.  A
 * token's own features and those it gives its neighbours are functions of
 * the token alone, so their summed weights are cached in the workspace and
 * a recurring word costs a few vector additions.  Viterbi and the forward
 * pass share one loop, so their dependency chains overlap; both use that
 * only B-f and I-f move into I-f.
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
	TriageFree(a, ws->potential);
	TriageFree(a, ws->alpha);
	TriageFree(a, ws->beta);
	TriageFree(a, ws->scale);
	TriageFree(a, ws->path);
	ws->info = NULL;
	ws->scores = NULL;
	ws->potential = NULL;
	ws->alpha = NULL;
	ws->beta = NULL;
	ws->scale = NULL;
	ws->path = NULL;
	ws->token_capacity = 0;
	ws->label_capacity = 0;
}

/*
 * At most this many bytes of token cache per workspace: with 9 fields (20
 * padded labels) an entry is 400 bytes, so 4,096 entries.  On the
 * generator's messages 13.8% of tokens miss it (19.6% direct-mapped); about
 * 8% are tokens not seen before.
 */
#define CACHE_BYTES (2 * 1024 * 1024)

/* Sums in a token cache entry: its own features, then as each neighbour */
#define CACHE_SUMS 5

static void
FreeTokenCache(CrfWorkspace *ws)
{
	TriageFree(&ws->allocator, ws->cache_keys);
	TriageFree(&ws->allocator, ws->cache_sums);
	TriageFree(&ws->allocator, ws->cache_recent);
	ws->cache_keys = NULL;
	ws->cache_recent = NULL;
	ws->cache_sums = NULL;
	ws->cache_slots = 0;
	ws->cache_lpad = 0;
	ws->cache_model = 0;
}

/* An empty token cache for model m, unless the workspace holds its cache already */
static bool
ReserveTokenCache(CrfWorkspace *ws, const CrfModel *m)
{
	size_t		entry = (size_t) CACHE_SUMS * m->lpad * sizeof(float);
	int32_t		slots = 64;

	if (ws->cache_model == m->id && ws->cache_keys != NULL)
		return true;
	while (slots * 2 * entry <= CACHE_BYTES)
		slots *= 2;
	if (slots != ws->cache_slots || m->lpad != ws->cache_lpad || ws->cache_keys == NULL)
	{
		FreeTokenCache(ws);
		ws->cache_keys = TriageAllocArray(&ws->allocator, slots, sizeof(uint64_t));
		ws->cache_sums = TriageAllocArray(&ws->allocator, slots, entry);
		ws->cache_recent = TriageAllocArray(&ws->allocator, slots / 2, sizeof(uint8_t));
		if (ws->cache_keys == NULL || ws->cache_sums == NULL || ws->cache_recent == NULL)
		{
			FreeTokenCache(ws);
			return false;
		}
		ws->cache_slots = slots;
		ws->cache_lpad = m->lpad;
	}
	memset(ws->cache_keys, 0, (size_t) slots * sizeof(uint64_t));
	memset(ws->cache_recent, 0, (size_t) slots / 2);
	ws->cache_model = m->id;
	return true;
}

void
CrfWorkspaceFree(CrfWorkspace *ws)
{
	FreeArrays(ws);
	FreeTokenCache(ws);
	TriageFree(&ws->allocator, ws->tokens);
	ws->tokens = NULL;
}

/* Bytes of the per-token arrays of a workspace with these capacities */
static size_t
ArrayBytes(int32_t tokens, int32_t labels)
{
	size_t		cells = (size_t) tokens * (size_t) labels;

	return cells * 4 * sizeof(float) +
		(size_t) tokens * (sizeof(CrfTokenInfo) + sizeof(float) + sizeof(int16_t));
}

size_t
CrfWorkspaceTrim(CrfWorkspace *ws, size_t keep_bytes)
{
	size_t		bytes = ArrayBytes(ws->token_capacity, ws->label_capacity);

	if (bytes <= keep_bytes)
		return 0;
	FreeArrays(ws);
	return bytes;
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
	ws->potential = TriageAllocArray(a, cells, sizeof(float));
	ws->alpha = TriageAllocArray(a, cells, sizeof(float));
	ws->beta = TriageAllocArray(a, cells, sizeof(float));
	ws->scale = TriageAllocArray(a, tc, sizeof(float));
	ws->path = TriageAllocArray(a, tc, sizeof(int16_t));
	if (!ws->info || !ws->scores || !ws->potential || !ws->alpha || !ws->beta || !ws->scale || !ws->path)
	{
		FreeArrays(ws);
		return false;
	}
	ws->token_capacity = tc;
	ws->label_capacity = lc;
	return true;
}

/*
 * out[r * P .. r * P + P) = the sum of the weights for each label (0 in
 * padding) of the features hashes[h] with rows[h] = r (r = 0 for all when
 * rows is NULL), for r < nrows.
 */
static void
SumWeights(const CrfModel *m, const uint64_t *hashes, const uint8_t *rows, int nh, int nrows,
		   float *out)
{
	int32_t		P = m->lpad;
	uint32_t	where[CRF_MAX_TOKEN_FEATURES + 4 * 3];
	float		part[2 * CACHE_SUMS * (CRF_MAX_LABELS + 3)];

	/* three passes, so the cache misses of the features overlap */
	for (int h = 0; h < nh; h++)
		__builtin_prefetch(&m->slots[hashes[h] & m->slot_mask]);
	for (int h = 0; h < nh; h++)
	{
		where[h] = CrfTableFind(m->slots, m->slot_mask, hashes[h]);
		if (where[h] != UINT32_MAX)
			__builtin_prefetch(m->blob + where[h]);
	}

	/*
	 * Two partial sums per row: nearly every feature has a weight for O,
	 * and one row would chain all those additions through one memory cell.
	 */
	memset(part, 0, (size_t) 2 * nrows * P * sizeof(float));
	for (int h = 0; h < nh; h++)
	{
		const uint8_t *rec;
		float	   *dst = part + (size_t) ((h & 1) * nrows + (rows ? rows[h] : 0)) * P;
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
	for (int r = 0; r < nrows; r++)
		for (int32_t j = 0; j < P; j += 4)
			Store(out + (size_t) r * P + j,
				  Load(part + (size_t) r * P + j) + Load(part + (size_t) (nrows + r) * P + j));
}

/*
 * The cached sums of token t, filled on a miss.  Two ways per set, the one
 * used less recently replaced.
 */
static const float *
TokenSums(const CrfModel *m, CrfWorkspace *ws, const char *text, const CrfToken *tokens,
		  const CrfTokenInfo *info, int32_t t)
{
	static const int offsets[CACHE_SUMS - 1] = {-2, -1, 1, 2};
	size_t		entry = (size_t) CACHE_SUMS * m->lpad;
	uint64_t	key = CrfOwnKey(&info[t]);
	uint64_t	set = key & ((uint64_t) ws->cache_slots / 2 - 1);
	uint64_t	slot = 2 * set;
	uint64_t	hashes[CRF_MAX_TOKEN_FEATURES + 4 * 3];
	uint8_t		rows[CRF_MAX_TOKEN_FEATURES + 4 * 3];
	int			nh;

	if (ws->cache_keys[slot] == key || ws->cache_keys[slot + 1] == key)
	{
		slot += ws->cache_keys[slot] != key;
		ws->cache_recent[set] = (uint8_t) (slot & 1);
		return ws->cache_sums + slot * entry;
	}
	slot += 1 - ws->cache_recent[set];
	ws->cache_recent[set] = (uint8_t) (slot & 1);

	/* every sum in one pass over the weights */
	nh = CrfOwnFeatures(m->features, text, &tokens[t], &info[t], hashes);
	memset(rows, 0, nh);
	for (int i = 0; i < CACHE_SUMS - 1; i++)
	{
		int			nfixed;
		int			k = CrfNeighbourFeatures(m->features, &info[t], offsets[i], hashes + nh, &nfixed);

		memset(rows + nh, i + 1, k);
		nh += k;
	}
	SumWeights(m, hashes, rows, nh, CACHE_SUMS, ws->cache_sums + slot * entry);
	ws->cache_keys[slot] = key;
	return ws->cache_sums + slot * entry;
}

/*
 * scores[t * P + y] = the sum of the weights of token t's features for
 * label y (0 in padding): first the features looked up for each token
 * (lexicon, runs, the text's ends), then each token's cached sums added to
 * itself and to the neighbours it is a context of.  A token's entry is
 * used as soon as it is found, since a later token may evict it.
 */
static void
StateScores(const CrfModel *m, CrfWorkspace *ws, const char *text, const CrfToken *tokens,
			const CrfTokenInfo *info, int32_t n, float *scores)
{
	int32_t		P = m->lpad;
	uint64_t	hashes[CRF_MAX_TOKEN_FEATURES];

	for (int32_t t = 0; t < n; t++)
	{
		int			nfixed;
		int			nh = CrfContextFeatures(m->features, info, n, t, false, hashes, &nfixed);

		SumWeights(m, hashes, NULL, nh, 1, scores + (size_t) t * P);
	}
	for (int32_t j = 0; j < n; j++)
	{
		const float *sums = TokenSums(m, ws, text, tokens, info, j);

		/* token j is the neighbour at offset d of token j - d */
		for (int i = 0; i < CACHE_SUMS; i++)
		{
			int32_t		t = j - (i == 0 ? 0 : i <= 2 ? i - 3 : i - 2);
			float	   *row = scores + (size_t) t * P;
			const float *add = sums + (size_t) i * P;

			if (t < 0 || t >= n)
				continue;
			for (int32_t y = 0; y < P; y += 4)
				Store(row + y, Load(row + y) + Load(add + y));
		}
	}
}

/*
 * One Viterbi step: cur = the best score of a path ending in each label at
 * this token, from prev at the token before and this token's scores row.
 *
 * Sources within the beam of the best one, then for the targets O and B-f
 * one register accumulator per 4 of them.  That is exact: their best
 * source is never worse than the best overall by more than vbeam.  A target
 * I-f has only B-f and I-f as sources, which the beam may drop, so it is
 * done on its own.
 */
static inline void
ViterbiStep(const CrfModel *m, const float *prev, const float *row, float *cur)
{
	int32_t		L = m->nlabels;
	int32_t		P = m->lpad;
	int32_t		Q = m->bpad;
	int32_t		src[CRF_MAX_LABELS];
	int32_t		ns = 0;
	float		into[CRF_MAX_FIELDS + 4];
	float		top = prev[0];
	float		floor_;

	for (int32_t i = 1; i < L; i++)
		top = prev[i] > top ? prev[i] : top;
	floor_ = top - m->vbeam;
	for (int32_t i = 0; i < L; i++)
		if (prev[i] >= floor_ && prev[i] != -INFINITY)
			src[ns++] = i;
	for (int32_t q = 0; q < Q; q += 4)
	{
		V4			acc0 = Splat(-INFINITY);
		V4			acc1 = acc0;
		int32_t		k = 0;

		for (; k + 1 < ns; k += 2)
		{
			acc0 = Max(acc0, Splat(prev[src[k]]) + Load(m->vtrans_b + (size_t) src[k] * Q + q));
			acc1 = Max(acc1, Splat(prev[src[k + 1]]) + Load(m->vtrans_b + (size_t) src[k + 1] * Q + q));
		}
		if (k < ns)
			acc0 = Max(acc0, Splat(prev[src[k]]) + Load(m->vtrans_b + (size_t) src[k] * Q + q));
		Store(into + q, Max(acc0, acc1));
	}
	cur[CRF_LABEL_O] = into[0] + row[CRF_LABEL_O];
	for (int32_t f = 0; f < m->nfields; f++)
	{
		int32_t		b = CRF_LABEL_B(f),
					y = CRF_LABEL_I(f);
		float		from_b = prev[b] + m->vtrans[(size_t) b * P + y];
		float		from_i = prev[y] + m->vtrans[(size_t) y * P + y];

		cur[b] = into[f + 1] + row[b];
		cur[y] = (from_b > from_i ? from_b : from_i) + row[y];
	}
	for (int32_t y = L; y < P; y++)
		cur[y] = -INFINITY;
}

/*
 * One scaled forward step: a = the forward probabilities at this token
 * from ap at the token before and this token's potentials, scaled to sum
 * to 1; returns the scale.  Every label may move into O and each B-f, so
 * those targets take all sources, 4 at a time; only B-f and I-f move into
 * I-f.
 */
static inline float
ForwardStep(const CrfModel *m, const float *ap, const float *pot, float *a)
{
	int32_t		L = m->nlabels;
	int32_t		P = m->lpad;
	int32_t		Q = m->bpad;
	float		into[CRF_MAX_FIELDS + 4];
	V4			vc = Splat(0.0f);
	V4			inv;
	float		c;

	for (int32_t q = 0; q < Q; q += 4)
	{
		V4			acc0 = Splat(0.0f);
		V4			acc1 = acc0;
		int32_t		i = 0;

		for (; i + 1 < L; i += 2)
		{
			acc0 += Splat(ap[i]) * Load(m->etrans_b + (size_t) i * Q + q);
			acc1 += Splat(ap[i + 1]) * Load(m->etrans_b + (size_t) (i + 1) * Q + q);
		}
		if (i < L)
			acc0 += Splat(ap[i]) * Load(m->etrans_b + (size_t) i * Q + q);
		Store(into + q, acc0 + acc1);
	}
	a[CRF_LABEL_O] = into[0];
	for (int32_t f = 0; f < m->nfields; f++)
	{
		int32_t		b = CRF_LABEL_B(f),
					y = CRF_LABEL_I(f);

		a[b] = into[f + 1];
		a[y] = ap[b] * m->etrans[(size_t) b * P + y] + ap[y] * m->etrans[(size_t) y * P + y];
	}
	for (int32_t y = L; y < P; y++)
		a[y] = 0.0f;
	for (int32_t j = 0; j < P; j += 4)
	{
		V4			v = Load(a + j) * Load(pot + j);

		Store(a + j, v);
		vc += v;
	}
	c = (vc[0] + vc[1]) + (vc[2] + vc[3]);
	if (!(c > 0.0f))
		c = 1e-30f;
	inv = Splat(1.0f / c);
	for (int32_t j = 0; j < P; j += 4)
		Store(a + j, Load(a + j) * inv);
	return c;
}

/*
 * The Viterbi scores (into ws->beta, until Backward) and the scaled
 * forward probabilities (ws->alpha, scales in ws->scale) in one pass: the
 * two steps of a token do not depend on each other, so the processor
 * overlaps them.  The potentials exp(score - max) go to ws->potential.
 */
static void
ViterbiForward(const CrfModel *m, CrfWorkspace *ws, int32_t n)
{
	int32_t		P = m->lpad;
	const float *scores = ws->scores;
	float	   *pot = ws->potential;
	float	   *V = ws->beta;
	float	   *alpha = ws->alpha;
	float		c = 0.0f;

	for (int32_t t = 0; t < n; t++)
	{
		const float *row = scores + (size_t) t * P;
		V4			vmx = Splat(-INFINITY);
		float		mx;

		for (int32_t y = 0; y < P; y += 4)
			vmx = Max(vmx, Load(row + y) + Load(m->padding + y));
		mx = fmaxf(fmaxf(vmx[0], vmx[1]), fmaxf(vmx[2], vmx[3]));
		for (int32_t y = 0; y < P; y += 4)
			Store(pot + (size_t) t * P + y, ExpNeg(Load(row + y) + Load(m->padding + y) - Splat(mx)));
	}
	for (int32_t j = 0; j < P; j += 4)
	{
		V4			v = Load(m->estart + j) * Load(pot + j);

		Store(V + j, Load(m->vstart + j) + Load(scores + j));
		Store(alpha + j, v);
	}
	for (int32_t j = 0; j < P; j++)
		c += alpha[j];
	if (!(c > 0.0f))
		c = 1e-30f;
	ws->scale[0] = c;
	for (int32_t j = 0; j < P; j++)
		alpha[j] /= c;
	for (int32_t t = 1; t < n; t++)
	{
		size_t		at = (size_t) t * P;

		ViterbiStep(m, V + at - P, scores + at, V + at);
		ws->scale[t] = ForwardStep(m, alpha + at - P, pot + at, alpha + at);
	}
}

/*
 * Best label path into ws->path[0..n) from the Viterbi scores, redoing
 * each step's argmax backwards (which keeps the forward loop free of back
 * pointers).
 */
static void
ViterbiPath(const CrfModel *m, CrfWorkspace *ws, int32_t n)
{
	int32_t		L = m->nlabels;
	int32_t		P = m->lpad;
	const float *V = ws->beta;
	int32_t		best = 0;
	float		best_score = -INFINITY;

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

/* The scaled backward probabilities into ws->beta, with the forward's scales */
static void
Backward(const CrfModel *m, CrfWorkspace *ws, int32_t n)
{
	int32_t		L = m->nlabels;
	int32_t		P = m->lpad;
	const float *pot = ws->potential;
	const float *alpha = ws->alpha;
	float	   *beta = ws->beta;
	float		zend = 0.0f;

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
		const float *row = pot + (size_t) t * P;
		float	   *bp = beta + (size_t) (t - 1) * P;
		V4			inv = Splat(1.0f / ws->scale[t]);
		float		tv[CRF_MAX_LABELS + 3];

		for (int32_t j = 0; j < P; j += 4)
			Store(tv + j, Load(row + j) * Load(b + j) * inv);

		/* into O and every B-f from every label, 4 sources at a time */
		for (int32_t i = 0; i < P; i += 4)
		{
			V4			acc0 = Splat(tv[CRF_LABEL_O]) * Load(m->etrans_t + i);
			V4			acc1 = Splat(0.0f);
			int32_t		f = 0;

			for (; f + 1 < m->nfields; f += 2)
			{
				int32_t		j0 = CRF_LABEL_B(f),
							j1 = CRF_LABEL_B(f + 1);

				acc0 += Splat(tv[j0]) * Load(m->etrans_t + (size_t) j0 * P + i);
				acc1 += Splat(tv[j1]) * Load(m->etrans_t + (size_t) j1 * P + i);
			}
			if (f < m->nfields)
				acc0 += Splat(tv[CRF_LABEL_B(f)]) * Load(m->etrans_t + (size_t) CRF_LABEL_B(f) * P + i);
			Store(bp + i, acc0 + acc1);
		}
		/* into I-f only from B-f and I-f */
		for (int32_t f = 0; f < m->nfields; f++)
		{
			int32_t		b = CRF_LABEL_B(f),
						y = CRF_LABEL_I(f);

			bp[b] += m->etrans[(size_t) b * P + y] * tv[y];
			bp[y] += m->etrans[(size_t) y * P + y] * tv[y];
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
	return (double) m->etrans[from * P + to] * ws->potential[(size_t) t * P + to] *
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
	n = CrfTokenize(text, len, ws->tokens,
					ws->max_tokens > 0 && ws->max_tokens < model->max_tokens ? ws->max_tokens
					: model->max_tokens);
	if (n == 0)
		return TRIAGE_OK;
	if (!Reserve(ws, n, model->lpad) || !ReserveTokenCache(ws, model))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for the CRF workspace");

	CrfPrepareTokens(text, ws->tokens, n, ws->info);
	CrfApplyLexicon(model, ws->info, n);
	StateScores(model, ws, text, ws->tokens, ws->info, n, ws->scores);
	ViterbiForward(model, ws, n);
	ViterbiPath(model, ws, n);
	Backward(model, ws, n);

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
