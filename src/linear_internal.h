/*
 * linear_internal.h
 *		What the files of the linear kind share: the model's layout, feature
 *		hashing, and the small helpers of training and prediction.
 */
#ifndef TRIAGE_LINEAR_INTERNAL_H
#define TRIAGE_LINEAR_INTERNAL_H

#include <math.h>
#include <string.h>

#include "linear.h"

#define LINEAR_VERSION 1
#define LINEAR_HEADER_SIZE 96

/* header flags */
#define LINEAR_FLAG_QUANTIZED		0x01
#define LINEAR_FLAG_SUBLINEAR_TF	0x02
#define LINEAR_FLAG_NB				0x04
#define LINEAR_FLAG_LOWERCASE		0x08
#define LINEAR_FLAG_SPLIT_PUNCT		0x10
#define LINEAR_FLAG_STRIP_HTML		0x20
#define LINEAR_FLAG_DIGIT_SHAPE		0x40
#define LINEAR_FLAG_ALL				0x7F

/* bounds the loader enforces on stored numbers, far above what training gives */
#define LINEAR_MAX_IDF 1e4f
#define LINEAR_MAX_WEIGHT 1e6f

/* a character n-gram reads at most this many bytes of a word */
#define LINEAR_MAX_WORD_BYTES 128

struct LinearModel
{
	TriageAllocator allocator;
	LinearOptions opt;			/* what it was trained with; no progress callback */
	int32_t		nlabels;
	char	   *label_blob;		/* the names, each NUL-terminated */
	uint32_t   *label_off;		/* nlabels + 1 offsets into label_blob */
	int32_t		nfeatures;
	uint32_t   *buckets;		/* kept buckets, strictly increasing */
	float	   *idf;			/* per feature: its IDF (times the NB ratio with nb) */
	float	   *bias;			/* per label */
	bool		quantized;
	float	   *scale;			/* quantized: per feature */
	int8_t	   *qweights;		/* quantized: nfeatures x nlabels */
	float	   *weights;		/* not quantized: nfeatures x nlabels */
	float		temperature;

	/* derived at load: bucket -> row, open addressing, (bucket << 32) | (row + 1) */
	uint64_t   *slots;
	uint32_t	slot_mask;
};

/* Allocation of a model with every array NULL */
extern LinearModel *LinearModelAlloc(const TriageAllocator *allocator);
/* Build the bucket -> row table of a model whose buckets are set */
extern TriageStatus LinearBuildIndex(LinearModel *m, char *errbuf, size_t errlen);

/* The row of bucket b, or -1 */
static inline int32_t
LinearFindRow(const LinearModel *m, uint32_t b)
{
	uint32_t	s = (uint32_t) (((uint64_t) b * 0x9E3779B97F4A7C15ULL) >> 32) & m->slot_mask;

	for (;;)
	{
		uint64_t	v = m->slots[s];

		if (v == 0)
			return -1;
		if ((uint32_t) (v >> 32) == b)
			return (int32_t) (v & 0xFFFFFFFFu) - 1;
		s = (s + 1) & m->slot_mask;
	}
}

/* Grow a scratch buffer to hold need elements of elem bytes (contents lost) */
extern bool LinearReserve(const TriageAllocator *a, void **buf, size_t *cap, size_t need, size_t elem);

/*
 * Normalize text and hash its features into s->ids (buckets, with repeats);
 * *nids their number.  Reads at most s->max_tokens tokens.
 */
extern TriageStatus LinearHashFeatures(const LinearOptions *o, LinearScratch *s, const char *text,
									   size_t len, size_t *nids, char *errbuf, size_t errlen);

/* Sort ids[0..n) and fold repeats: returns the distinct count, counts[i] of each */
extern size_t LinearSortCount(uint32_t *ids, size_t n, float *counts);

/* What a feature seen tf times contributes before IDF */
static inline float
LinearTf(float tf, bool sublinear)
{
	return sublinear ? 1.0f + logf(tf) : tf;
}

/* Label name checks shared by training and loading; NULL if fine, else why not */
extern const char *LinearBadLabel(const char *name, size_t len);

#endif
