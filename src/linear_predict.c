/*
 * linear_predict.c
 *		Prediction with a linear model: hash the normalized text's features
 *		into the scratch, keep those the model has, weigh them (sublinear TF
 *		times IDF, L2-normalized) and take softmax(W x + b) / temperature.
 *
 * Everything a call writes lives in the caller's LinearScratch, whose
 * buffers only grow: after the first few texts a prediction allocates
 * nothing.
 */
#include <math.h>
#include <stdlib.h>

#include "linear_internal.h"

void
LinearScratchInit(LinearScratch *s, const TriageAllocator *a)
{
	memset(s, 0, sizeof(*s));
	s->allocator = a ? *a : TriageMallocAllocator;
}

void
LinearScratchFree(LinearScratch *s)
{
	(void) LinearScratchTrim(s, 0);
}

size_t
LinearScratchTrim(LinearScratch *s, size_t keep_bytes)
{
	size_t		freed = 0;

#define TRIM(buf, cap, elem) \
	do { \
		if ((buf) != NULL && (cap) * (elem) > keep_bytes) \
		{ \
			freed += (cap) * (elem); \
			TriageFree(&s->allocator, (buf)); \
			(buf) = NULL; \
			(cap) = 0; \
		} \
	} while (0)

	TRIM(s->text, s->text_cap, 1);
	TRIM(s->tokens, s->tokens_cap, sizeof(uint32_t));
	TRIM(s->ids, s->ids_cap, sizeof(uint32_t));
	TRIM(s->values, s->values_cap, sizeof(float));
	TRIM(s->scores, s->scores_cap, sizeof(double));
#undef TRIM
	return freed;
}

/*
 * The logits of text into s->scores (before temperature); s->features set.
 */
static TriageStatus
Scores(const LinearModel *m, LinearScratch *s, const char *text, size_t len, char *errbuf, size_t errlen)
{
	const TriageAllocator *a = &s->allocator;
	int32_t		L = m->nlabels;
	size_t		nids,
				found = 0,
				nrows;
	double		norm = 0.0;
	double	   *z;
	TriageStatus st;

	s->features = 0;
	if (m->slots == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "the linear model has no index");
	if (!LinearReserve(a, (void **) &s->scores, &s->scores_cap, (size_t) L, sizeof(double)))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for %d labels", L);
	st = LinearHashFeatures(&m->opt, s, text, len, &nids, errbuf, errlen);
	if (st != TRIAGE_OK)
		return st;

	/* buckets to rows, in place, dropping those the model does not have */
	for (size_t i = 0; i < nids; i++)
	{
		int32_t		r = LinearFindRow(m, s->ids[i]);

		if (r >= 0)
			s->ids[found++] = (uint32_t) r;
	}
	z = s->scores;
	for (int32_t l = 0; l < L; l++)
		z[l] = m->bias[l];
	if (found == 0)
		return TRIAGE_OK;
	if (!LinearReserve(a, (void **) &s->values, &s->values_cap, found, sizeof(float)))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for %zu features", found);
	nrows = LinearSortCount(s->ids, found, s->values);
	for (size_t i = 0; i < nrows; i++)
	{
		float		v = LinearTf(s->values[i], m->opt.sublinear_tf) * m->idf[s->ids[i]];

		s->values[i] = v;
		norm += (double) v * v;
	}
	s->features = (int64_t) nrows;
	if (norm <= 0.0)
		return TRIAGE_OK;
	norm = 1.0 / sqrt(norm);
	if (m->quantized)
	{
		for (size_t i = 0; i < nrows; i++)
		{
			uint32_t	r = s->ids[i];
			double		v = s->values[i] * norm * m->scale[r];
			const int8_t *w = m->qweights + (size_t) r * L;

			for (int32_t l = 0; l < L; l++)
				z[l] += v * w[l];
		}
	}
	else
	{
		for (size_t i = 0; i < nrows; i++)
		{
			uint32_t	r = s->ids[i];
			double		v = s->values[i] * norm;
			const float *w = m->weights + (size_t) r * L;

			for (int32_t l = 0; l < L; l++)
				z[l] += v * w[l];
		}
	}
	return TRIAGE_OK;
}

TriageStatus
LinearLogits(const LinearModel *m, LinearScratch *s, const char *text, size_t len, float *logits,
			 char *errbuf, size_t errlen)
{
	TriageStatus st;

	if (m == NULL || s == NULL || logits == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "no model, scratch or output");
	st = Scores(m, s, text, len, errbuf, errlen);
	if (st != TRIAGE_OK)
		return st;
	for (int32_t l = 0; l < m->nlabels; l++)
	{
		if (!isfinite(s->scores[l]))
			return TriageError(TRIAGE_NUMERIC, errbuf, errlen, "the linear model's logits are not finite");
		logits[l] = (float) s->scores[l];
	}
	return TRIAGE_OK;
}

/* best first; among equals the lower label first, so the order is stable */
static int
ComparePredictions(const void *a, const void *b)
{
	const TriagePrediction *x = a;
	const TriagePrediction *y = b;

	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->label < y->label ? -1 : (x->label > y->label);
}

TriageStatus
LinearPredict(const LinearModel *m, LinearScratch *s, const char *text, size_t len, int32_t k,
			  float threshold, TriagePrediction *out, int32_t *n, char *errbuf, size_t errlen)
{
	int32_t		L;
	double	   *z;
	double		max = -INFINITY,
				sum = 0.0,
				logsum;
	int32_t		count = 0;
	TriageStatus st;

	*n = 0;
	if (m == NULL || s == NULL || out == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "no model, scratch or output");
	if (k == 0 || k < -1)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "k must be positive or -1 (all labels), not %d", k);
	if (isnan(threshold))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "threshold must not be NaN");
	st = Scores(m, s, text, len, errbuf, errlen);
	if (st != TRIAGE_OK || s->features == 0)
		return st;

	L = m->nlabels;
	z = s->scores;
	for (int32_t l = 0; l < L; l++)
	{
		z[l] /= m->temperature;
		if (!isfinite(z[l]))
			return TriageError(TRIAGE_NUMERIC, errbuf, errlen, "the linear model's logits are not finite");
		if (z[l] > max)
			max = z[l];
	}
	for (int32_t l = 0; l < L; l++)
		sum += exp(z[l] - max);
	logsum = max + log(sum);

	/* the labels that pass the threshold, then the best k of them */
	for (int32_t l = 0; l < L; l++)
	{
		double		lp = z[l] - logsum;
		float		p = (float) exp(lp);

		if (p < threshold)
			continue;
		out[count].label = l;
		out[count].probability = p;
		out[count].score = (float) lp;
		count++;
	}
	if (k < 0 || k > count)
		k = count;
	if (k == 1)
	{
		int32_t		best = 0;

		for (int32_t i = 1; i < count; i++)
			if (out[i].score > out[best].score)
				best = i;
		out[0] = out[best];
	}
	else if (count > 1)
		qsort(out, (size_t) count, sizeof(TriagePrediction), ComparePredictions);
	count = k;
	*n = count;
	return TRIAGE_OK;
}
