/*
 * linear_model.c
 *		The linear model: accessors, freeing, the bucket index, and the
 *		binary format (LinearSave, and LinearLoad, which treats its input as
 *		hostile).
 *
 * Format, version 1, all integers and floats little-endian:
 *
 *	header (96 bytes)
 *		8 bytes magic "PGTLIN01", u32 version, u32 header size (96),
 *		u32 nlabels, u32 nfeatures, u32 buckets, u32 flags (LINEAR_FLAG_*),
 *		u8 ngram_min, ngram_max, char_min, char_max, u32 min_df, u32 folds,
 *		u32 max_iterations, f64 c, f64 l1, u64 seed, then 24 reserved bytes
 *		that must be 0
 *	labels: nlabels times (u16 length 1..1024, UTF-8 bytes), distinct
 *	bias: f32[nlabels]
 *	buckets: u32[nfeatures], strictly increasing, below buckets
 *	idf: f32[nfeatures]
 *	quantized: f32 scale[nfeatures], i8 weight[nfeatures * nlabels] (-127..127)
 *	otherwise: f32 weight[nfeatures * nlabels]
 *	u64 checksum (LinearChecksum) of everything before it
 *
 * The loader checks that the sizes the counts imply add up to the file's
 * length exactly before it allocates anything, so memory stays within a
 * small multiple of the file's size, and it builds the bucket index itself.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "linear_internal.h"
#include "triage_bytes.h"

LinearModel *
LinearModelAlloc(const TriageAllocator *allocator)
{
	LinearModel *m;

	if (allocator == NULL)
		allocator = &TriageMallocAllocator;
	m = TriageAllocZero(allocator, sizeof(LinearModel));
	if (m != NULL)
	{
		m->allocator = *allocator;
		m->temperature = 1.0f;
	}
	return m;
}

void
LinearFree(LinearModel *m)
{
	TriageAllocator a;

	if (m == NULL)
		return;
	a = m->allocator;
	TriageFree(&a, m->label_blob);
	TriageFree(&a, m->label_off);
	TriageFree(&a, m->buckets);
	TriageFree(&a, m->idf);
	TriageFree(&a, m->bias);
	TriageFree(&a, m->scale);
	TriageFree(&a, m->qweights);
	TriageFree(&a, m->weights);
	TriageFree(&a, m->slots);
	TriageFree(&a, m);
}

int32_t
LinearLabelCount(const LinearModel *m)
{
	return m ? m->nlabels : 0;
}

const char *
LinearLabelName(const LinearModel *m, int32_t label, size_t *len)
{
	if (m == NULL || label < 0 || label >= m->nlabels)
	{
		if (len)
			*len = 0;
		return NULL;
	}
	if (len)
		*len = m->label_off[label + 1] - m->label_off[label] - 1;
	return m->label_blob + m->label_off[label];
}

int32_t
LinearFindLabel(const LinearModel *m, const char *name, size_t len)
{
	if (m == NULL || name == NULL)
		return -1;
	for (int32_t l = 0; l < m->nlabels; l++)
	{
		size_t		n = m->label_off[l + 1] - m->label_off[l] - 1;

		if (n == len && memcmp(m->label_blob + m->label_off[l], name, len) == 0)
			return l;
	}
	return -1;
}

void
LinearGetOptions(const LinearModel *m, LinearOptions *o)
{
	*o = m->opt;
	o->progress = NULL;
	o->progress_arg = NULL;
}

int32_t
LinearFeatureCount(const LinearModel *m)
{
	return m ? m->nfeatures : 0;
}

void
LinearSetTemperature(LinearModel *m, float t)
{
	if (m != NULL && isfinite(t) && t > 0.0f)
		m->temperature = t;
}

float
LinearGetTemperature(const LinearModel *m)
{
	return m ? m->temperature : 1.0f;
}

uint64_t
LinearChecksum(const uint8_t *bytes, size_t len)
{
	return TriageChecksum(0x9AE16A3B2F90404FULL, bytes, len);
}

TriageStatus
LinearBuildIndex(LinearModel *m, char *errbuf, size_t errlen)
{
	size_t		nslots = 16;

	/* at most half full, so probes stay short */
	while (nslots < (size_t) m->nfeatures * 2)
		nslots *= 2;
	m->slots = TriageAllocArray(&m->allocator, nslots, sizeof(uint64_t));
	if (m->slots == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen,
						   "out of memory for the index of %d features", m->nfeatures);
	memset(m->slots, 0, nslots * sizeof(uint64_t));
	m->slot_mask = (uint32_t) (nslots - 1);
	for (int32_t r = 0; r < m->nfeatures; r++)
	{
		uint32_t	b = m->buckets[r];
		uint32_t	s = (uint32_t) (((uint64_t) b * 0x9E3779B97F4A7C15ULL) >> 32) & m->slot_mask;

		while (m->slots[s] != 0)
			s = (s + 1) & m->slot_mask;
		m->slots[s] = ((uint64_t) b << 32) | (uint64_t) (r + 1);
	}
	return TRIAGE_OK;
}

/* ---------------------------------------------------------------------
 * Writing
 * --------------------------------------------------------------------- */

static uint32_t
Flags(const LinearModel *m)
{
	const LinearOptions *o = &m->opt;

	return (m->quantized ? LINEAR_FLAG_QUANTIZED : 0) |
		(o->sublinear_tf ? LINEAR_FLAG_SUBLINEAR_TF : 0) |
		(o->nb ? LINEAR_FLAG_NB : 0) |
		(o->normalize.lowercase ? LINEAR_FLAG_LOWERCASE : 0) |
		(o->normalize.split_punct ? LINEAR_FLAG_SPLIT_PUNCT : 0) |
		(o->normalize.strip_html ? LINEAR_FLAG_STRIP_HTML : 0) |
		(o->normalize.digit_shape ? LINEAR_FLAG_DIGIT_SHAPE : 0);
}

TriageStatus
LinearSave(const LinearModel *m, const TriageAllocator *allocator, uint8_t **data, size_t *len,
		   char *errbuf, size_t errlen)
{
	const LinearOptions *o;
	size_t		size;
	size_t		nw;
	TriageWriter		w;

	*data = NULL;
	*len = 0;
	if (m == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "no model to save");
	o = &m->opt;
	nw = (size_t) m->nfeatures * (size_t) m->nlabels;
	size = LINEAR_HEADER_SIZE;
	size += m->label_off[m->nlabels] + (size_t) m->nlabels * 2 - (size_t) m->nlabels;	/* no NULs */
	size += (size_t) m->nlabels * 4;
	size += (size_t) m->nfeatures * 8;
	size += m->quantized ? (size_t) m->nfeatures * 4 + nw : nw * 4;
	size += 8;
	w.p = TriageAlloc(allocator, size);
	w.pos = 0;
	if (w.p == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen,
						   "out of memory saving a model of %zu bytes", size);

	memcpy(w.p, LINEAR_MAGIC, 8);
	w.pos = 8;
	TriagePutU32(&w, LINEAR_VERSION);
	TriagePutU32(&w, LINEAR_HEADER_SIZE);
	TriagePutU32(&w, (uint32_t) m->nlabels);
	TriagePutU32(&w, (uint32_t) m->nfeatures);
	TriagePutU32(&w, (uint32_t) o->buckets);
	TriagePutU32(&w, Flags(m));
	TriagePutU8(&w, (uint8_t) o->ngram_min);
	TriagePutU8(&w, (uint8_t) o->ngram_max);
	TriagePutU8(&w, (uint8_t) o->char_min);
	TriagePutU8(&w, (uint8_t) o->char_max);
	TriagePutU32(&w, (uint32_t) o->min_df);
	TriagePutU32(&w, (uint32_t) o->folds);
	TriagePutU32(&w, (uint32_t) o->max_iterations);
	TriagePutF64(&w, o->c);
	TriagePutF64(&w, o->l1);
	TriagePutU64(&w, o->seed);
	while (w.pos < LINEAR_HEADER_SIZE)
		TriagePutU8(&w, 0);

	for (int32_t l = 0; l < m->nlabels; l++)
	{
		size_t		n;
		const char *name = LinearLabelName(m, l, &n);

		TriagePutU16(&w, (uint16_t) n);
		memcpy(w.p + w.pos, name, n);
		w.pos += n;
	}
	for (int32_t l = 0; l < m->nlabels; l++)
		TriagePutF32(&w, m->bias[l]);
	for (int32_t r = 0; r < m->nfeatures; r++)
		TriagePutU32(&w, m->buckets[r]);
	for (int32_t r = 0; r < m->nfeatures; r++)
		TriagePutF32(&w, m->idf[r]);
	if (m->quantized)
	{
		for (int32_t r = 0; r < m->nfeatures; r++)
			TriagePutF32(&w, m->scale[r]);
		for (size_t i = 0; i < nw; i++)
			TriagePutU8(&w, (uint8_t) m->qweights[i]);
	}
	else
		for (size_t i = 0; i < nw; i++)
			TriagePutF32(&w, m->weights[i]);
	TriagePutU64(&w, LinearChecksum(w.p, w.pos));
	if (w.pos != size)
	{
		TriageFree(allocator, w.p);
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "internal error: wrote %zu bytes of a %zu-byte model", w.pos, size);
	}
	*data = w.p;
	*len = size;
	return TRIAGE_OK;
}

/* ---------------------------------------------------------------------
 * Reading
 * --------------------------------------------------------------------- */

typedef struct LabelRef
{
	const uint8_t *p;
	uint32_t	len;
} LabelRef;

static int
CompareLabels(const void *a, const void *b)
{
	const LabelRef *x = a;
	const LabelRef *y = b;
	int			c;

	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	c = memcmp(x->p, y->p, x->len);
	return c;
}

/* Check a stored float: finite and within bound */
#define CHECK_FLOAT(v, bound, what, index) \
	do { \
		if (!isfinite(v)) \
		{ \
			st = TriageError(TRIAGE_NUMERIC, errbuf, errlen, \
							 "linear model has a non-finite %s (at %lld)", what, (long long) (index)); \
			goto fail; \
		} \
		if (fabsf(v) > (bound)) \
		{ \
			st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, \
							 "linear model has a %s of %g, beyond %g (at %lld)", what, (double) (v), \
							 (double) (bound), (long long) (index)); \
			goto fail; \
		} \
	} while (0)

TriageStatus
LinearLoad(const uint8_t *data, size_t len, const TriageAllocator *allocator, LinearModel **model,
		   char *errbuf, size_t errlen)
{
	LinearModel *m = NULL;
	LinearOptions *o;
	TriageStatus st;
	uint32_t	version,
				header,
				nlabels,
				nfeatures,
				flags;
	size_t		pos,
				left,
				per_feature,
				label_bytes = 0,
				nw;
	LabelRef   *refs = NULL;
	char		why[200];

	*model = NULL;
	if (data == NULL || len < LINEAR_HEADER_SIZE + 8)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "linear model of %zu bytes is shorter than its %d-byte header and checksum",
						   len, LINEAR_HEADER_SIZE);
	if (memcmp(data, LINEAR_MAGIC, 8) != 0)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "not a linear model (no \"%s\" magic)", LINEAR_MAGIC);
	version = TriageLoadU32(data + 8);
	if (version != LINEAR_VERSION)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "linear model version %u is not supported (only %d)", version, LINEAR_VERSION);
	header = TriageLoadU32(data + 12);
	if (header != LINEAR_HEADER_SIZE)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "linear model header size %u is not %d", header, LINEAR_HEADER_SIZE);
	for (size_t i = 72; i < LINEAR_HEADER_SIZE; i++)
		if (data[i] != 0)
			return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							   "linear model header has non-zero reserved byte %zu", i);

	m = LinearModelAlloc(allocator);
	if (m == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory loading a linear model");
	o = &m->opt;
	LinearDefaults(o);
	nlabels = TriageLoadU32(data + 16);
	nfeatures = TriageLoadU32(data + 20);
	o->buckets = (int32_t) (TriageLoadU32(data + 24) & 0x7FFFFFFF);
	if (TriageLoadU32(data + 24) > (uint32_t) LINEAR_MAX_BUCKETS)
		o->buckets = 0;			/* out of range: LinearCheckOptions says so */
	flags = TriageLoadU32(data + 28);
	o->ngram_min = data[32];
	o->ngram_max = data[33];
	o->char_min = data[34];
	o->char_max = data[35];
	o->min_df = (int32_t) (TriageLoadU32(data + 36) > 1000000 ? 0 : TriageLoadU32(data + 36));
	o->folds = (int32_t) (TriageLoadU32(data + 40) > 20 ? 0 : TriageLoadU32(data + 40));
	o->max_iterations = (int32_t) (TriageLoadU32(data + 44) > 10000 ? 0 : TriageLoadU32(data + 44));
	o->c = TriageLoadF64(data + 48);
	o->l1 = TriageLoadF64(data + 56);
	o->seed = TriageLoadU64(data + 64);
	o->quantize = (flags & LINEAR_FLAG_QUANTIZED) != 0;
	o->sublinear_tf = (flags & LINEAR_FLAG_SUBLINEAR_TF) != 0;
	o->nb = (flags & LINEAR_FLAG_NB) != 0;
	o->normalize.lowercase = (flags & LINEAR_FLAG_LOWERCASE) != 0;
	o->normalize.split_punct = (flags & LINEAR_FLAG_SPLIT_PUNCT) != 0;
	o->normalize.strip_html = (flags & LINEAR_FLAG_STRIP_HTML) != 0;
	o->normalize.digit_shape = (flags & LINEAR_FLAG_DIGIT_SHAPE) != 0;
	m->quantized = o->quantize;
	if ((flags & ~(uint32_t) LINEAR_FLAG_ALL) != 0)
	{
		st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "linear model has unknown flags 0x%x", flags);
		goto fail;
	}
	if (LinearCheckOptions(o, why, sizeof(why)) != TRIAGE_OK)
	{
		st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "linear model options are invalid: %s", why);
		goto fail;
	}
	if (nlabels < 2 || nlabels > LINEAR_MAX_LABELS)
	{
		st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						 "linear model label count %u is not between 2 and %d", nlabels, LINEAR_MAX_LABELS);
		goto fail;
	}

	/* every section must fit what is left: this bounds each allocation below */
	pos = LINEAR_HEADER_SIZE;
	left = len - 8 - pos;
	if ((size_t) nlabels * 7 > left)
	{
		st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						 "linear model is too short for its %u labels", nlabels);
		goto fail;
	}
	refs = TriageAllocArray(&m->allocator, nlabels, sizeof(LabelRef));
	if (refs == NULL)
	{
		st = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for %u labels", nlabels);
		goto fail;
	}
	for (uint32_t l = 0; l < nlabels; l++)
	{
		const char *bad;
		uint16_t	n;

		if (len - 8 - pos < 2)
		{
			st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "linear model is cut inside its labels");
			goto fail;
		}
		n = TriageLoadU16(data + pos);
		pos += 2;
		if (n > len - 8 - pos)
		{
			st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "linear model is cut inside label %u", l + 1);
			goto fail;
		}
		if ((bad = LinearBadLabel((const char *) data + pos, n)) != NULL)
		{
			st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "linear model label %u %s", l + 1, bad);
			goto fail;
		}
		refs[l].p = data + pos;
		refs[l].len = n;
		label_bytes += n;
		pos += n;
	}
	left = len - 8 - pos;
	per_feature = 8 + (m->quantized ? 4 + (size_t) nlabels : 4 * (size_t) nlabels);
	if ((size_t) nlabels * 4 > left || nfeatures > (left - (size_t) nlabels * 4) / per_feature ||
		(size_t) nlabels * 4 + (size_t) nfeatures * per_feature != left)
	{
		st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						 "linear model size %zu does not match its %u labels and %u features",
						 len, nlabels, nfeatures);
		goto fail;
	}
	if (LinearChecksum(data, len - 8) != TriageLoadU64(data + len - 8))
	{
		st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "linear model checksum does not match: the file is corrupt");
		goto fail;
	}

	/* labels: copy, then check they are distinct */
	m->nlabels = (int32_t) nlabels;
	m->label_blob = TriageAlloc(&m->allocator, label_bytes + nlabels);
	m->label_off = TriageAllocArray(&m->allocator, (size_t) nlabels + 1, sizeof(uint32_t));
	if (m->label_blob == NULL || m->label_off == NULL)
	{
		st = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for %u labels", nlabels);
		goto fail;
	}
	m->label_off[0] = 0;
	for (uint32_t l = 0; l < nlabels; l++)
	{
		memcpy(m->label_blob + m->label_off[l], refs[l].p, refs[l].len);
		m->label_blob[m->label_off[l] + refs[l].len] = '\0';
		m->label_off[l + 1] = m->label_off[l] + refs[l].len + 1;
	}
	qsort(refs, nlabels, sizeof(LabelRef), CompareLabels);
	for (uint32_t l = 1; l < nlabels; l++)
		if (CompareLabels(&refs[l - 1], &refs[l]) == 0)
		{
			st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							 "linear model names label \"%.*s\" twice", (int) refs[l].len, (const char *) refs[l].p);
			goto fail;
		}
	TriageFree(&m->allocator, refs);
	refs = NULL;

	nw = (size_t) nfeatures * nlabels;
	m->nfeatures = (int32_t) nfeatures;
	m->bias = TriageAllocArray(&m->allocator, nlabels, sizeof(float));
	m->buckets = TriageAllocArray(&m->allocator, nfeatures + 1, sizeof(uint32_t));
	m->idf = TriageAllocArray(&m->allocator, nfeatures + 1, sizeof(float));
	if (m->quantized)
	{
		m->scale = TriageAllocArray(&m->allocator, nfeatures + 1, sizeof(float));
		m->qweights = TriageAlloc(&m->allocator, nw + 1);
	}
	else
		m->weights = TriageAllocArray(&m->allocator, nw + 1, sizeof(float));
	if (m->bias == NULL || m->buckets == NULL || m->idf == NULL ||
		(m->quantized ? (m->scale == NULL || m->qweights == NULL) : m->weights == NULL))
	{
		st = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for %u features", nfeatures);
		goto fail;
	}
	for (uint32_t l = 0; l < nlabels; l++, pos += 4)
	{
		m->bias[l] = TriageLoadF32(data + pos);
		CHECK_FLOAT(m->bias[l], LINEAR_MAX_WEIGHT, "bias", l);
	}
	for (uint32_t r = 0; r < nfeatures; r++, pos += 4)
	{
		m->buckets[r] = TriageLoadU32(data + pos);
		if (m->buckets[r] >= (uint32_t) o->buckets || (r > 0 && m->buckets[r] <= m->buckets[r - 1]))
		{
			st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							 "linear model bucket %u of feature %u is out of order or not below %d",
							 m->buckets[r], r + 1, o->buckets);
			goto fail;
		}
	}
	for (uint32_t r = 0; r < nfeatures; r++, pos += 4)
	{
		m->idf[r] = TriageLoadF32(data + pos);
		CHECK_FLOAT(m->idf[r], LINEAR_MAX_IDF, "idf", r);
	}
	if (m->quantized)
	{
		for (uint32_t r = 0; r < nfeatures; r++, pos += 4)
		{
			m->scale[r] = TriageLoadF32(data + pos);
			CHECK_FLOAT(m->scale[r], LINEAR_MAX_WEIGHT, "scale", r);
			if (m->scale[r] < 0.0f)
			{
				st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
								 "linear model has a negative scale (at %u)", r);
				goto fail;
			}
		}
		for (size_t i = 0; i < nw; i++, pos++)
		{
			m->qweights[i] = (int8_t) data[pos];
			if (m->qweights[i] == -128)
			{
				st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
								 "linear model has a quantized weight of -128 (at %zu)", i);
				goto fail;
			}
		}
	}
	else
		for (size_t i = 0; i < nw; i++, pos += 4)
		{
			m->weights[i] = TriageLoadF32(data + pos);
			CHECK_FLOAT(m->weights[i], LINEAR_MAX_WEIGHT, "weight", i);
		}
	if (pos != len - 8)
	{
		st = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "internal error: read %zu of %zu bytes", pos, len - 8);
		goto fail;
	}
	if ((st = LinearBuildIndex(m, errbuf, errlen)) != TRIAGE_OK)
		goto fail;
	*model = m;
	return TRIAGE_OK;

fail:
	if (m != NULL)
		TriageFree(&m->allocator, refs);
	LinearFree(m);
	return st;
}
