/*
 * linear_train.c
 *		Training of the linear kind: hashed n-gram features of the normalized
 *		texts, the buckets seen in at least min_df examples kept, sublinear
 *		TF times smooth IDF (log((1 + N) / (1 + df)) + 1), optionally NB
 *		log-count ratios (Wang & Manning 2012), L2-normalized rows; then
 *		softmax regression minimizing C * sum(log loss) + |W|^2 / 2 (+ l1 |W|
 *		by OWL-QN) with liblbfgs, C chosen by stratified k-fold
 *		cross-validation on the held-out log loss (what ranks confidence),
 *		and the weights quantized to int8 with a scale per bucket.
 *
 * The cross-validation walks the grid of C upwards inside each fold,
 * starting each fit from the last one's weights: neighbouring C have
 * nearby optima, so a warm start needs a fraction of the iterations.  NB
 * ratios, which use the labels, are computed on each fold's training part
 * only; IDF and min_df use no label and are computed once.
 *
 * Design note on cancellation (as in crf_train.c): liblbfgs allocates with
 * malloc, so nothing may longjmp out of its callbacks.  They poll
 * TRIAGE_CANCEL_PENDING() and make liblbfgs stop; LinearTrain then frees
 * everything and only then calls TRIAGE_CHECK_INTERRUPTS().  The caller's
 * progress callback, which may longjmp, runs only between optimizer runs.
 */
#include <lbfgs.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "linear_internal.h"

static const double CGrid[] = {0.25, 0.5, 1, 2, 4, 8, 16, 32};

#define NGRID ((int32_t) (sizeof(CGrid) / sizeof(CGrid[0])))

typedef struct Trainer
{
	const LinearOptions *o;
	const TriageAllocator *a;
	const LinearExample *ex;
	int64_t		n;
	int32_t		L;
	int32_t		K;				/* weights per column: L, or 1 for two labels */
	bool		binary;

	/* rows: example i has entries row_start[i] .. row_start[i + 1] */
	int64_t    *row_start;
	uint32_t   *col;			/* bucket while collecting, then column */
	float	   *tf;				/* LinearTf of the count, then times IDF */
	size_t		nnz;
	size_t		cap;
	int32_t		ncols;
	uint32_t   *kept;			/* the bucket of each column */
	float	   *idf;
	float	   *ratio;			/* NB ratio per column, or NULL */
	float	   *val;			/* the rows as the optimizer sees them */
	uint8_t    *fold;

	/* the current fit: rows of fold skip are left out (-1: none) */
	int32_t		skip;
	double		c;
	double	   *z;				/* per label */
	bool		canceled;
	int32_t		iterations;
} Trainer;

static void
TrainerFree(Trainer *t)
{
	TriageFree(t->a, t->row_start);
	TriageFree(t->a, t->col);
	TriageFree(t->a, t->tf);
	TriageFree(t->a, t->kept);
	TriageFree(t->a, t->idf);
	TriageFree(t->a, t->ratio);
	TriageFree(t->a, t->val);
	TriageFree(t->a, t->fold);
	TriageFree(t->a, t->z);
}

/* Grow col and tf to hold need entries, keeping their contents */
static bool
GrowEntries(Trainer *t, size_t need)
{
	size_t		cap = t->cap ? t->cap : 65536;
	uint32_t   *col;
	float	   *tf;

	if (need <= t->cap)
		return true;
	while (cap < need)
		cap *= 2;
	col = TriageAllocArray(t->a, cap, sizeof(uint32_t));
	tf = TriageAllocArray(t->a, cap, sizeof(float));
	if (col == NULL || tf == NULL)
	{
		TriageFree(t->a, col);
		TriageFree(t->a, tf);
		return false;
	}
	if (t->nnz > 0)
	{
		memcpy(col, t->col, t->nnz * sizeof(uint32_t));
		memcpy(tf, t->tf, t->nnz * sizeof(float));
	}
	TriageFree(t->a, t->col);
	TriageFree(t->a, t->tf);
	t->col = col;
	t->tf = tf;
	t->cap = cap;
	return true;
}

static int
CompareStrings(const void *a, const void *b)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static TriageStatus
CheckInput(const LinearOptions *o, const char *const *labels, int32_t nlabels,
		   const LinearExample *examples, int64_t n, const TriageAllocator *a,
		   char *errbuf, size_t errlen)
{
	const char **sorted;
	TriageStatus st = TRIAGE_OK;

	if (nlabels < 2 || nlabels > LINEAR_MAX_LABELS)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "a linear classifier needs between 2 and %d labels, not %d", LINEAR_MAX_LABELS, nlabels);
	if (labels == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "no labels");
	if (o->nb && nlabels != 2)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "nb (NB log-count ratio features) needs exactly two labels, not %d", nlabels);
	for (int32_t l = 0; l < nlabels; l++)
	{
		const char *bad = labels[l] ? LinearBadLabel(labels[l], strlen(labels[l])) : "is missing";

		if (bad != NULL)
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "label %d %s", l + 1, bad);
	}
	sorted = TriageAllocArray(a, (size_t) nlabels, sizeof(char *));
	if (sorted == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory checking labels");
	memcpy(sorted, labels, (size_t) nlabels * sizeof(char *));
	qsort(sorted, (size_t) nlabels, sizeof(char *), CompareStrings);
	for (int32_t l = 1; l < nlabels; l++)
		if (strcmp(sorted[l - 1], sorted[l]) == 0)
		{
			st = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "label \"%s\" is given twice", sorted[l]);
			break;
		}
	TriageFree(a, sorted);
	if (st != TRIAGE_OK)
		return st;

	if (examples == NULL || n < 2)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "a linear classifier needs at least 2 examples, not %lld", (long long) (examples ? n : 0));
	if (n > (int64_t) INT32_MAX)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "too many examples (%lld)", (long long) n);
	if (o->c == 0.0 && n < o->folds)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "choosing c by %d-fold cross-validation needs at least %d examples, not %lld; give c",
						   o->folds, o->folds, (long long) n);
	for (int64_t i = 0; i < n; i++)
	{
		if (examples[i].label < 0 || examples[i].label >= nlabels)
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							   "example %lld has label %d, not between 0 and %d",
							   (long long) i + 1, examples[i].label, nlabels - 1);
		if (examples[i].text == NULL && examples[i].len > 0)
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "example %lld has no text", (long long) i + 1);
	}
	return TRIAGE_OK;
}

/* Hash every example's features: (bucket, LinearTf(count)) per row, buckets sorted */
static TriageStatus
Collect(Trainer *t, char *errbuf, size_t errlen)
{
	LinearScratch s;
	float	   *counts = NULL;
	size_t		counts_cap = 0;
	TriageStatus st = TRIAGE_OK;

	LinearScratchInit(&s, t->a);
	t->row_start = TriageAllocArray(t->a, (size_t) t->n + 1, sizeof(int64_t));
	if (t->row_start == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for %lld examples", (long long) t->n);
	for (int64_t i = 0; i < t->n; i++)
	{
		size_t		nids,
					k;

		if ((i & 255) == 0)
			TRIAGE_CHECK_INTERRUPTS();
		t->row_start[i] = (int64_t) t->nnz;
		st = LinearHashFeatures(t->o, &s, t->ex[i].text, t->ex[i].len, &nids, errbuf, errlen);
		if (st != TRIAGE_OK)
			break;
		if (!LinearReserve(t->a, (void **) &counts, &counts_cap, nids + 1, sizeof(float)) ||
			!GrowEntries(t, t->nnz + nids))
		{
			st = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen,
							 "out of memory for the features of %lld examples", (long long) t->n);
			break;
		}
		k = LinearSortCount(s.ids, nids, counts);
		memcpy(t->col + t->nnz, s.ids, k * sizeof(uint32_t));
		for (size_t j = 0; j < k; j++)
			t->tf[t->nnz + j] = LinearTf(counts[j], t->o->sublinear_tf);
		t->nnz += k;
	}
	t->row_start[t->n] = (int64_t) t->nnz;
	TriageFree(t->a, counts);
	LinearScratchFree(&s);
	return st;
}

/* Keep the buckets in min_df or more rows as columns; compute their IDF */
static TriageStatus
SelectColumns(Trainer *t, char *errbuf, size_t errlen)
{
	uint32_t   *all = TriageAllocArray(t->a, t->nnz + 1, sizeof(uint32_t));
	float	   *dummy = TriageAllocArray(t->a, t->nnz + 1, sizeof(float));
	size_t		nd,
				out = 0;

	if (all == NULL || dummy == NULL)
	{
		TriageFree(t->a, all);
		TriageFree(t->a, dummy);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory counting %zu features", t->nnz);
	}
	/* each row holds a bucket once, so the count of a bucket is its document frequency */
	memcpy(all, t->col, t->nnz * sizeof(uint32_t));
	nd = LinearSortCount(all, t->nnz, dummy);
	t->ncols = 0;
	for (size_t i = 0; i < nd; i++)
		if (dummy[i] >= (float) t->o->min_df)
		{
			all[t->ncols] = all[i];
			dummy[t->ncols] = dummy[i];
			t->ncols++;
		}
	if (t->ncols == 0)
	{
		TriageFree(t->a, all);
		TriageFree(t->a, dummy);
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "no feature occurs in %d or more examples (min_df)", t->o->min_df);
	}
	t->kept = all;
	t->idf = dummy;
	for (int32_t c = 0; c < t->ncols; c++)
		t->idf[c] = (float) (log((1.0 + (double) t->n) / (1.0 + (double) t->idf[c])) + 1.0);

	/* bucket -> column by binary search; drop the rest */
	for (int64_t i = 0; i < t->n; i++)
	{
		int64_t		start = t->row_start[i];

		if ((i & 1023) == 0)
			TRIAGE_CHECK_INTERRUPTS();
		/* row_start[i + 1] still holds the old end: rows are compacted in order */
		t->row_start[i] = (int64_t) out;
		for (int64_t k = start; k < t->row_start[i + 1]; k++)
		{
			int32_t		lo = 0,
						hi = t->ncols - 1;
			uint32_t	b = t->col[k];

			while (lo <= hi)
			{
				int32_t		mid = lo + (hi - lo) / 2;

				if (t->kept[mid] == b)
				{
					t->col[out] = (uint32_t) mid;
					t->tf[out] = t->tf[k] * t->idf[mid];
					out++;
					break;
				}
				if (t->kept[mid] < b)
					lo = mid + 1;
				else
					hi = mid - 1;
			}
		}
	}
	t->row_start[t->n] = (int64_t) out;
	t->nnz = out;
	t->val = TriageAllocArray(t->a, t->nnz + 1, sizeof(float));
	if (t->val == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for %zu features", t->nnz);
	return TRIAGE_OK;
}

/*
 * The rows as the optimizer sees them: TF-IDF, times the NB ratios of the
 * rows outside fold skip when nb, L2-normalized.
 */
static TriageStatus
BuildValues(Trainer *t, int32_t skip, char *errbuf, size_t errlen)
{
	if (t->o->nb)
	{
		double	   *p = TriageAllocArray(t->a, (size_t) t->ncols * 2, sizeof(double));
		double		sp = 0.0,
					sq = 0.0;

		if (p == NULL)
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for NB ratios");
		if (t->ratio == NULL)
			t->ratio = TriageAllocArray(t->a, (size_t) t->ncols, sizeof(float));
		if (t->ratio == NULL)
		{
			TriageFree(t->a, p);
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for NB ratios");
		}
		/* smoothed (alpha = 1) counts of rows holding each feature, per label */
		for (int32_t c = 0; c < 2 * t->ncols; c++)
			p[c] = 1.0;
		for (int64_t i = 0; i < t->n; i++)
		{
			if (t->fold[i] == skip)
				continue;
			for (int64_t k = t->row_start[i]; k < t->row_start[i + 1]; k++)
				p[2 * (size_t) t->col[k] + (t->ex[i].label == 1)] += 1.0;
		}
		for (int32_t c = 0; c < t->ncols; c++)
		{
			sq += p[2 * c];
			sp += p[2 * c + 1];
		}
		for (int32_t c = 0; c < t->ncols; c++)
			t->ratio[c] = (float) log((p[2 * c + 1] / sp) / (p[2 * c] / sq));
		TriageFree(t->a, p);
	}
	for (int64_t i = 0; i < t->n; i++)
	{
		double		norm = 0.0;

		for (int64_t k = t->row_start[i]; k < t->row_start[i + 1]; k++)
		{
			float		v = t->tf[k] * (t->ratio ? t->ratio[t->col[k]] : 1.0f);

			t->val[k] = v;
			norm += (double) v * v;
		}
		if (norm > 0.0)
		{
			norm = 1.0 / sqrt(norm);
			for (int64_t k = t->row_start[i]; k < t->row_start[i + 1]; k++)
				t->val[k] = (float) (t->val[k] * norm);
		}
	}
	return TRIAGE_OK;
}

/* Stratified folds: each label's examples shuffled, then dealt round the folds */
static TriageStatus
AssignFolds(Trainer *t, char *errbuf, size_t errlen)
{
	int64_t    *idx = TriageAllocArray(t->a, (size_t) t->n, sizeof(int64_t));
	TriageRng	rng = {t->o->seed ^ 0x11AEA2F01DULL};
	int64_t		dealt = 0;

	t->fold = TriageAllocArray(t->a, (size_t) t->n, 1);
	if (idx == NULL || t->fold == NULL)
	{
		TriageFree(t->a, idx);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory assigning folds");
	}
	for (int32_t l = 0; l < t->L; l++)
	{
		int64_t		m = 0;

		for (int64_t i = 0; i < t->n; i++)
			if (t->ex[i].label == l)
				idx[m++] = i;
		for (int64_t i = m - 1; i > 0; i--)
		{
			int64_t		j = (int64_t) (TriageRngNext(&rng) % (uint64_t) (i + 1));
			int64_t		tmp = idx[i];

			idx[i] = idx[j];
			idx[j] = tmp;
		}
		for (int64_t i = 0; i < m; i++)
			t->fold[idx[i]] = (uint8_t) (dealt++ % t->o->folds);
	}
	TriageFree(t->a, idx);
	return TRIAGE_OK;
}

/*
 * Two labels: one weight per column, the logit of label 1 against label 0
 * (binary logistic regression), half the parameters of the softmax.  The
 * logits are left in t->z as the softmax's would be: 0 and d.
 */
static inline double
BinaryRowLoss(Trainer *t, int64_t i, const double *x, double *g)
{
	double		d = x[t->ncols];
	double		loss,
				p;
	int32_t		y = t->ex[i].label;

	for (int64_t k = t->row_start[i]; k < t->row_start[i + 1]; k++)
		d += t->val[k] * x[t->col[k]];
	/* log(1 + exp(-s)) for the margin s of the right label, without overflow */
	{
		double		s = y == 1 ? d : -d;

		loss = s > 0 ? log1p(exp(-s)) : -s + log1p(exp(s));
	}
	t->z[0] = 0.0;
	t->z[1] = d;
	if (g != NULL)
	{
		p = d >= 0 ? 1.0 / (1.0 + exp(-d)) : exp(d) / (1.0 + exp(d));
		p = t->c * (p - (y == 1 ? 1.0 : 0.0));
		g[t->ncols] += p;
		for (int64_t k = t->row_start[i]; k < t->row_start[i + 1]; k++)
			g[t->col[k]] += t->val[k] * p;
	}
	return loss;
}

/* Log loss of row i at parameters x; with g, adds C times its gradient */
static inline double
RowLoss(Trainer *t, int64_t i, const double *x, double *g)
{
	int32_t		L = t->L;
	const double *b = x + (size_t) t->ncols * L;
	double	   *z = t->z;
	double		max = -INFINITY,
				sum = 0.0,
				lse,
				loss;
	int32_t		y = t->ex[i].label;

	if (t->binary)
		return BinaryRowLoss(t, i, x, g);
	for (int32_t l = 0; l < L; l++)
		z[l] = b[l];
	for (int64_t k = t->row_start[i]; k < t->row_start[i + 1]; k++)
	{
		const double *w = x + (size_t) t->col[k] * L;
		double		v = t->val[k];

		for (int32_t l = 0; l < L; l++)
			z[l] += v * w[l];
	}
	for (int32_t l = 0; l < L; l++)
		if (z[l] > max)
			max = z[l];
	for (int32_t l = 0; l < L; l++)
		sum += exp(z[l] - max);
	lse = max + log(sum);
	loss = lse - z[y];
	if (g != NULL)
	{
		double	   *gb = g + (size_t) t->ncols * L;

		for (int32_t l = 0; l < L; l++)
			z[l] = t->c * (exp(z[l] - lse) - (l == y ? 1.0 : 0.0));
		for (int32_t l = 0; l < L; l++)
			gb[l] += z[l];
		for (int64_t k = t->row_start[i]; k < t->row_start[i + 1]; k++)
		{
			double	   *gw = g + (size_t) t->col[k] * L;
			double		v = t->val[k];

			for (int32_t l = 0; l < L; l++)
				gw[l] += v * z[l];
		}
		return loss;
	}
	return loss;
}

static lbfgsfloatval_t
Evaluate(void *instance, const lbfgsfloatval_t *x, lbfgsfloatval_t *g, const int n,
		 const lbfgsfloatval_t step)
{
	Trainer    *t = instance;
	size_t		nw = (size_t) t->ncols * t->K;
	double		fx = 0.0,
				reg = 0.0;

	(void) step;
	memset(g, 0, (size_t) n * sizeof(double));
	if (t->canceled)
		return 0.0;
	for (int64_t i = 0; i < t->n; i++)
	{
		if ((i & 255) == 0 && TRIAGE_CANCEL_PENDING())
		{
			t->canceled = true;
			memset(g, 0, (size_t) n * sizeof(double));
			return 0.0;
		}
		if (t->fold[i] == t->skip)
			continue;
		fx += RowLoss(t, i, x, g);
	}
	fx *= t->c;
	for (size_t j = 0; j < nw; j++)
	{
		reg += x[j] * x[j];
		g[j] += x[j];
	}
	fx += 0.5 * reg;
	if (!isfinite(fx))
		fx = 1e300;
	return fx;
}

static int
Progress(void *instance, const lbfgsfloatval_t *x, const lbfgsfloatval_t *g,
		 const lbfgsfloatval_t fx, const lbfgsfloatval_t xnorm, const lbfgsfloatval_t gnorm,
		 const lbfgsfloatval_t step, int n, int k, int ls)
{
	Trainer    *t = instance;

	(void) x;
	(void) g;
	(void) fx;
	(void) xnorm;
	(void) gnorm;
	(void) step;
	(void) n;
	(void) ls;
	t->iterations = k;
	if (t->canceled || TRIAGE_CANCEL_PENDING())
	{
		t->canceled = true;
		return 1;
	}
	return 0;
}

/* Minimize from x (warm start) with C c, leaving out fold skip; *fx the objective */
static TriageStatus
Fit(Trainer *t, double *x, double c, int32_t skip, double *fx, char *errbuf, size_t errlen)
{
	lbfgs_parameter_t param;
	int			ret;
	int			nparams = (int) ((size_t) t->ncols * t->K + t->K);

	t->c = c;
	t->skip = skip;
	t->iterations = 0;
	lbfgs_parameter_init(&param);
	param.max_iterations = t->o->max_iterations;
	param.epsilon = 1e-4;
	param.past = 3;
	/* a cross-validation fit only ranks C: a looser stop is enough */
	param.delta = skip >= 0 ? 1e-5 : 1e-6;
	if (t->o->l1 > 0.0)
	{
		param.orthantwise_c = t->o->l1;
		param.orthantwise_start = 0;
		param.orthantwise_end = (int) ((size_t) t->ncols * t->K);
		param.linesearch = LBFGS_LINESEARCH_BACKTRACKING;
	}
	ret = lbfgs(nparams, x, fx, Evaluate, Progress, t, &param);
	if (t->canceled)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "training canceled");
	if (ret == LBFGSERR_OUTOFMEMORY)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory in L-BFGS");
	for (int i = 0; i < nparams; i++)
		if (!isfinite(x[i]))
			return TriageError(TRIAGE_NUMERIC, errbuf, errlen, "training diverged (non-finite weights)");
	/* other codes (iteration limit, a line search that gave up) leave a usable x */
	return TRIAGE_OK;
}

static TriageStatus
CallProgress(const LinearOptions *o, double done, double loss, char *errbuf, size_t errlen)
{
	if (o->progress != NULL && !o->progress(o->progress_arg, done, loss))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "training was stopped");
	return TRIAGE_OK;
}

/* Build the model out of the fitted x; quantize; fill the stats that need it */
static TriageStatus
BuildModel(Trainer *t, const double *x, double c, const char *const *labels, LinearModel **model,
		   LinearTrainStats *stats, char *errbuf, size_t errlen)
{
	LinearModel *m = LinearModelAlloc(t->a);
	int32_t		L = t->L;
	size_t		nw = (size_t) t->ncols * L;
	size_t		label_bytes = 0;
	double		loss = 0.0,
				maxdiff = 0.0;
	double	   *zq;
	TriageStatus st;

	if (m == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the model");
	m->opt = *t->o;
	m->opt.c = c;
	m->opt.progress = NULL;
	m->opt.progress_arg = NULL;
	m->nlabels = L;
	m->nfeatures = t->ncols;
	m->quantized = t->o->quantize;
	for (int32_t l = 0; l < L; l++)
		label_bytes += strlen(labels[l]) + 1;
	m->label_blob = TriageAlloc(t->a, label_bytes);
	m->label_off = TriageAllocArray(t->a, (size_t) L + 1, sizeof(uint32_t));
	m->buckets = TriageAllocArray(t->a, (size_t) t->ncols, sizeof(uint32_t));
	m->idf = TriageAllocArray(t->a, (size_t) t->ncols, sizeof(float));
	m->bias = TriageAllocArray(t->a, (size_t) L, sizeof(float));
	m->weights = TriageAllocArray(t->a, nw, sizeof(float));
	zq = TriageAllocArray(t->a, (size_t) L, sizeof(double));
	if (m->quantized)
	{
		m->scale = TriageAllocArray(t->a, (size_t) t->ncols, sizeof(float));
		m->qweights = TriageAlloc(t->a, nw);
	}
	if (!m->label_blob || !m->label_off || !m->buckets || !m->idf || !m->bias || !m->weights || !zq ||
		(m->quantized && (!m->scale || !m->qweights)))
	{
		TriageFree(t->a, zq);
		LinearFree(m);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the model");
	}
	m->label_off[0] = 0;
	for (int32_t l = 0; l < L; l++)
	{
		size_t		n = strlen(labels[l]) + 1;

		memcpy(m->label_blob + m->label_off[l], labels[l], n);
		m->label_off[l + 1] = m->label_off[l] + (uint32_t) n;
		if (!t->binary)
			m->bias[l] = (float) x[nw + l];
	}
	/* two labels: the logit d split evenly, -d/2 and d/2, the same softmax */
	if (t->binary)
	{
		m->bias[0] = (float) (-0.5 * x[t->ncols]);
		m->bias[1] = (float) (0.5 * x[t->ncols]);
	}
	memcpy(m->buckets, t->kept, (size_t) t->ncols * sizeof(uint32_t));
	for (int32_t col = 0; col < t->ncols; col++)
		m->idf[col] = t->idf[col] * (t->ratio ? t->ratio[col] : 1.0f);
	for (size_t j = 0; j < nw; j++)
		m->weights[j] = (float) (t->binary ? (j % 2 ? 0.5 : -0.5) * x[j / 2] : x[j]);
	if (m->quantized)
	{
		for (int32_t col = 0; col < t->ncols; col++)
		{
			float		max = 0.0f;
			const float *w = m->weights + (size_t) col * L;

			for (int32_t l = 0; l < L; l++)
				if (fabsf(w[l]) > max)
					max = fabsf(w[l]);
			m->scale[col] = max / 127.0f;
			for (int32_t l = 0; l < L; l++)
				m->qweights[(size_t) col * L + l] =
					max > 0.0f ? (int8_t) lrintf(w[l] / m->scale[col]) : 0;
		}
	}

	/* the training loss with float weights, and what quantizing changed */
	for (int64_t i = 0; i < t->n; i++)
	{
		double		fmax = -INFINITY,
					qmax = -INFINITY,
					fsum = 0.0,
					qsum = 0.0;

		loss += RowLoss(t, i, x, NULL);
		if (!m->quantized)
			continue;
		for (int32_t l = 0; l < L; l++)
			zq[l] = m->bias[l];
		for (int64_t k = t->row_start[i]; k < t->row_start[i + 1]; k++)
		{
			uint32_t	col = t->col[k];
			double		v = t->val[k] * m->scale[col];

			for (int32_t l = 0; l < L; l++)
				zq[l] += v * m->qweights[(size_t) col * L + l];
		}
		/* RowLoss left the float logits in t->z */
		for (int32_t l = 0; l < L; l++)
		{
			fmax = fmax > t->z[l] ? fmax : t->z[l];
			qmax = qmax > zq[l] ? qmax : zq[l];
		}
		for (int32_t l = 0; l < L; l++)
		{
			fsum += exp(t->z[l] - fmax);
			qsum += exp(zq[l] - qmax);
		}
		for (int32_t l = 0; l < L; l++)
		{
			double		d = fabs(exp(t->z[l] - fmax) / fsum - exp(zq[l] - qmax) / qsum);

			if (d > maxdiff)
				maxdiff = d;
		}
	}
	TriageFree(t->a, zq);
	if (m->quantized)
	{
		TriageFree(t->a, m->weights);
		m->weights = NULL;
	}
	stats->train_loss = loss / (double) t->n;
	stats->quantization_max_prob_diff = maxdiff;
	if ((st = LinearBuildIndex(m, errbuf, errlen)) != TRIAGE_OK)
	{
		LinearFree(m);
		return st;
	}
	*model = m;
	return TRIAGE_OK;
}

TriageStatus
LinearTrain(const LinearOptions *o, const char *const *labels, int32_t nlabels,
			const LinearExample *examples, int64_t n, const TriageAllocator *allocator,
			LinearModel **model, LinearTrainStats *stats, char *errbuf, size_t errlen)
{
	Trainer		t;
	LinearTrainStats dummy;
	TriageStatus st;
	double	   *x = NULL;
	double		cvloss[NGRID];
	double		c = o ? o->c : 0.0;
	double		fx = 0.0;
	int32_t		runs,
				done = 0;
	size_t		nparams;

	*model = NULL;
	if (stats == NULL)
		stats = &dummy;
	memset(stats, 0, sizeof(*stats));
	if (allocator == NULL)
		allocator = &TriageMallocAllocator;
	if (o == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "no options");
	if ((st = LinearCheckOptions(o, errbuf, errlen)) != TRIAGE_OK ||
		(st = CheckInput(o, labels, nlabels, examples, n, allocator, errbuf, errlen)) != TRIAGE_OK)
		return st;

	memset(&t, 0, sizeof(t));
	t.o = o;
	t.a = allocator;
	t.ex = examples;
	t.n = n;
	t.L = nlabels;
	t.binary = nlabels == 2;
	t.K = t.binary ? 1 : nlabels;
	t.skip = -1;
	t.z = TriageAllocArray(allocator, (size_t) nlabels, sizeof(double));
	if (t.z == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for %d labels", nlabels);
	if ((st = Collect(&t, errbuf, errlen)) != TRIAGE_OK ||
		(st = SelectColumns(&t, errbuf, errlen)) != TRIAGE_OK ||
		(st = AssignFolds(&t, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	for (int64_t i = 0; i < n; i++)
		if (t.row_start[i + 1] > t.row_start[i])
			stats->examples_used++;
	stats->features = t.ncols;

	nparams = (size_t) t.ncols * t.K + t.K;
	if (nparams > (size_t) INT_MAX / 2)
	{
		st = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						 "%d features times %d labels is too many weights; raise min_df or lower buckets",
						 t.ncols, nlabels);
		goto done;
	}
	x = lbfgs_malloc((int) nparams);
	if (x == NULL)
	{
		st = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for %zu weights", nparams);
		goto done;
	}
	runs = (c == 0.0 ? o->folds * NGRID : 0) + 1;

	if (c == 0.0)
	{
		int32_t		best = 0;

		for (int32_t g = 0; g < NGRID; g++)
			cvloss[g] = 0.0;
		for (int32_t f = 0; f < o->folds; f++)
		{
			if ((st = BuildValues(&t, f, errbuf, errlen)) != TRIAGE_OK)
				goto done;
			memset(x, 0, nparams * sizeof(double));
			for (int32_t g = 0; g < NGRID; g++)
			{
				double		held = 0.0;

				if ((st = Fit(&t, x, CGrid[g], f, &fx, errbuf, errlen)) != TRIAGE_OK)
					goto done;
				for (int64_t i = 0; i < n; i++)
					if (t.fold[i] == f)
						held += RowLoss(&t, i, x, NULL);
				cvloss[g] += held;
				if ((st = CallProgress(o, (double) ++done / runs, held, errbuf, errlen)) != TRIAGE_OK)
					goto done;
			}
		}
		/* the least mean held-out log loss; on a tie the smaller C, the simpler model */
		for (int32_t g = 1; g < NGRID; g++)
			if (cvloss[g] < cvloss[best] * (1.0 - 1e-9))
				best = g;
		c = CGrid[best];
		stats->cv_log_loss = cvloss[best] / (double) n;
	}
	stats->c = c;

	if ((st = BuildValues(&t, -1, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	memset(x, 0, nparams * sizeof(double));
	if ((st = Fit(&t, x, c, -1, &fx, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	stats->iterations = t.iterations;
	if ((st = BuildModel(&t, x, c, labels, model, stats, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	if ((st = CallProgress(o, 1.0, stats->train_loss, errbuf, errlen)) != TRIAGE_OK)
	{
		LinearFree(*model);
		*model = NULL;
	}

done:
	if (x != NULL)
		lbfgs_free(x);
	TrainerFree(&t);
	if (t.canceled)
	{
		/* now that nothing is held, let the server raise the cancel */
		TRIAGE_CHECK_INTERRUPTS();
	}
	return st;
}
