/*
 * crf_model.c
 *		The CRF model: accessors, freeing, and the binary format (CrfSave,
 *		and CrfLoad, which treats its input as hostile).
 *
 * Format, version 1, all integers and floats little-endian:
 *
 *	header (64 bytes)
 *		u32 magic "TCRF", u32 version, u32 header size (64), u32 nfields,
 *		u32 feature groups, u32 max_tokens, u64 nfeatures, u64 npairs,
 *		u64 nlex, then 16 reserved bytes that must be 0
 *	field names: nfields times (u8 length 1..63, bytes)
 *	transitions: f32 trans[L * L] (from-major), f32 start[L], f32 end[L],
 *		L = 2 * nfields + 1; forbidden BIO moves are stored as 0
 *	lexicon: nlex times (u64 word hash, u64 field mask), keys distinct
 *	features: u64 key[nfeatures] (distinct), u32 nlabels[nfeatures] (1..L,
 *		summing to npairs), f32 scale[nfeatures] (0 < scale <= 10),
 *		u8 label[npairs] (strictly increasing within a feature), i8 weight[npairs]
 *	u64 checksum (CrfChecksum) of everything before it
 *
 * The loader checks each section's size against the bytes left before it
 * allocates, so memory stays within a small multiple of the file's size,
 * and rebuilds the hash tables itself rather than trusting stored ones.
 */
#include <math.h>
#include <stdio.h>

#include "crf_internal.h"
#include "triage_bytes.h"

#define HEADER_SIZE 64
#define MAX_TRANSITION 100.0f
#define MAX_SCALE 10.0f

CrfModel *
CrfModelAlloc(const TriageAllocator *allocator)
{
	CrfModel   *m;

	if (allocator == NULL)
		allocator = &TriageMallocAllocator;
	m = TriageAllocZero(allocator, sizeof(CrfModel));
	if (m != NULL)
		m->allocator = *allocator;
	return m;
}

void
CrfFree(CrfModel *m)
{
	const TriageAllocator *a;

	if (m == NULL)
		return;
	a = &m->allocator;
	TriageFree(a, m->trans);
	TriageFree(a, m->start);
	TriageFree(a, m->end);
	TriageFree(a, m->xblock);
	TriageFree(a, m->keys);
	TriageFree(a, m->offsets);
	TriageFree(a, m->labels);
	TriageFree(a, m->weights);
	TriageFree(a, m->scales);
	TriageFree(a, m->slots);
	TriageFree(a, m->blob);
	TriageFree(a, m->lex_keys);
	TriageFree(a, m->lex_masks);
	TriageFree(a, m->lex_slots);
	{
		TriageAllocator copy = *a;

		TriageFree(&copy, m);
	}
}

int32_t
CrfFieldCount(const CrfModel *model)
{
	return model ? model->nfields : 0;
}

const char *
CrfFieldName(const CrfModel *model, int32_t f)
{
	if (model == NULL || f < 0 || f >= model->nfields)
		return NULL;
	return model->names[f];
}

int32_t
CrfFindField(const CrfModel *model, const char *name, size_t len)
{
	if (model == NULL || name == NULL)
		return -1;
	for (int32_t f = 0; f < model->nfields; f++)
		if (strlen(model->names[f]) == len && memcmp(model->names[f], name, len) == 0)
			return f;
	return -1;
}

void
CrfModelStats(const CrfModel *model, int64_t *features, int64_t *weights, int64_t *lexicon)
{
	if (features)
		*features = model ? model->nfeatures : 0;
	if (weights)
		*weights = model ? model->npairs : 0;
	if (lexicon)
		*lexicon = model ? model->nlex : 0;
}

uint64_t
CrfChecksum(const uint8_t *bytes, size_t len)
{
	return TriageChecksum(0x243F6A8885A308D3ULL, bytes, len);
}

/* ---------------------------------------------------------------------
 * Writing
 * --------------------------------------------------------------------- */

TriageStatus
CrfSave(const CrfModel *m, const TriageAllocator *allocator, uint8_t **bytes, size_t *len,
		char *errbuf, size_t errlen)
{
	int32_t		L;
	size_t		size;
	TriageWriter		w;

	*bytes = NULL;
	*len = 0;
	if (m == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "no model to save");
	L = m->nlabels;
	size = HEADER_SIZE;
	for (int32_t f = 0; f < m->nfields; f++)
		size += 1 + strlen(m->names[f]);
	size += ((size_t) L * L + 2 * (size_t) L) * 4;
	size += (size_t) m->nlex * 16;
	size += (size_t) m->nfeatures * (8 + 4 + 4);
	size += (size_t) m->npairs * 2;
	size += 8;
	w.p = TriageAlloc(allocator, size);
	w.pos = 0;
	if (w.p == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory saving a model of %zu bytes", size);

	TriagePutU32(&w, CRF_MAGIC);
	TriagePutU32(&w, CRF_FORMAT_VERSION);
	TriagePutU32(&w, HEADER_SIZE);
	TriagePutU32(&w, (uint32_t) m->nfields);
	TriagePutU32(&w, m->features);
	TriagePutU32(&w, (uint32_t) m->max_tokens);
	TriagePutU64(&w, (uint64_t) m->nfeatures);
	TriagePutU64(&w, (uint64_t) m->npairs);
	TriagePutU64(&w, (uint64_t) m->nlex);
	TriagePutU64(&w, 0);
	TriagePutU64(&w, 0);
	for (int32_t f = 0; f < m->nfields; f++)
	{
		size_t		n = strlen(m->names[f]);

		TriagePutU8(&w, (uint8_t) n);
		memcpy(w.p + w.pos, m->names[f], n);
		w.pos += n;
	}
	for (int32_t i = 0; i < L * L; i++)
		TriagePutF32(&w, m->trans[i]);
	for (int32_t i = 0; i < L; i++)
		TriagePutF32(&w, m->start[i]);
	for (int32_t i = 0; i < L; i++)
		TriagePutF32(&w, m->end[i]);
	for (int64_t i = 0; i < m->nlex; i++)
	{
		TriagePutU64(&w, m->lex_keys[i]);
		TriagePutU64(&w, m->lex_masks[i]);
	}
	for (int64_t i = 0; i < m->nfeatures; i++)
		TriagePutU64(&w, m->keys[i]);
	for (int64_t i = 0; i < m->nfeatures; i++)
		TriagePutU32(&w, m->offsets[i + 1] - m->offsets[i]);
	for (int64_t i = 0; i < m->nfeatures; i++)
		TriagePutF32(&w, m->scales[i]);
	if (m->npairs > 0)
	{
		memcpy(w.p + w.pos, m->labels, (size_t) m->npairs);
		w.pos += (size_t) m->npairs;
		memcpy(w.p + w.pos, m->weights, (size_t) m->npairs);
		w.pos += (size_t) m->npairs;
	}
	TriagePutU64(&w, CrfChecksum(w.p, w.pos));
	*bytes = w.p;
	*len = w.pos;
	return TRIAGE_OK;
}

/* ---------------------------------------------------------------------
 * Reading
 * --------------------------------------------------------------------- */

typedef struct Reader
{
	const uint8_t *p;
	size_t		len;			/* excluding the checksum */
	size_t		pos;
} Reader;

static inline bool
Has(const Reader *r, uint64_t count, uint64_t size)
{
	/* count * size <= left, without overflow */
	return size == 0 || count <= (r->len - r->pos) / size;
}

static inline uint32_t
GetU32(Reader *r)
{
	r->pos += 4;
	return TriageLoadU32(r->p + r->pos - 4);
}

static inline uint64_t
GetU64(Reader *r)
{
	r->pos += 8;
	return TriageLoadU64(r->p + r->pos - 8);
}

static inline float
GetF32(Reader *r)
{
	r->pos += 4;
	return TriageLoadF32(r->p + r->pos - 4);
}

static TriageStatus
Bad(CrfModel *m, char *errbuf, size_t errlen, const char *what)
{
	CrfFree(m);
	return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "invalid CRF model: %s", what);
}

TriageStatus
CrfLoad(const uint8_t *bytes, size_t len, const TriageAllocator *allocator, CrfModel **out,
		char *errbuf, size_t errlen)
{
	Reader		r;
	CrfModel   *m;
	uint32_t	version,
				header_size,
				nfields,
				groups,
				max_tokens;
	uint64_t	nfeatures,
				npairs,
				nlex;
	int32_t		L;
	uint64_t	sum = 0;
	TriageStatus st;

	*out = NULL;
	if (bytes == NULL || len < HEADER_SIZE + 8)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "invalid CRF model: %zu bytes is too short", bytes ? len : 0);
	r.p = bytes;
	r.len = len - 8;
	r.pos = 0;
	if (GetU32(&r) != CRF_MAGIC)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "invalid CRF model: bad magic number");
	version = GetU32(&r);
	if (version != CRF_FORMAT_VERSION)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "unsupported CRF model version %u (this build reads version %d)",
						   version, CRF_FORMAT_VERSION);
	header_size = GetU32(&r);
	nfields = GetU32(&r);
	groups = GetU32(&r);
	max_tokens = GetU32(&r);
	nfeatures = GetU64(&r);
	npairs = GetU64(&r);
	nlex = GetU64(&r);
	if (GetU64(&r) != 0 || GetU64(&r) != 0)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "invalid CRF model: reserved header bytes are not zero");
	if (header_size != HEADER_SIZE)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "invalid CRF model: header size %u", header_size);
	if (nfields < 1 || nfields > CRF_MAX_FIELDS)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "invalid CRF model: %u fields (1 to %d allowed)", nfields, CRF_MAX_FIELDS);
	if (groups == 0 || (groups & ~(uint32_t) CRF_FEAT_ALL) != 0)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "invalid CRF model: feature groups 0x%x", groups);
	if (max_tokens < 16 || max_tokens > CRF_MAX_TOKENS)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "invalid CRF model: max_tokens %u", max_tokens);
	L = 2 * (int32_t) nfields + 1;
	/* all sections must fit in what is left: this bounds every allocation below */
	if (!Has(&r, nfeatures, 18) || !Has(&r, nlex, 16) || !Has(&r, npairs, 2) ||
		nfeatures >= UINT32_MAX / 2 || npairs >= UINT32_MAX ||
		nfeatures * 16 + npairs * 2 + nlex * 16 > r.len - r.pos)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "invalid CRF model: counts (%llu features, %llu weights, %llu lexicon entries) exceed the %zu bytes given",
						   (unsigned long long) nfeatures, (unsigned long long) npairs,
						   (unsigned long long) nlex, len);

	if (npairs > nfeatures * (uint64_t) L || npairs < nfeatures)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "invalid CRF model: %llu weights for %llu features",
						   (unsigned long long) npairs, (unsigned long long) nfeatures);
	m = CrfModelAlloc(allocator);
	if (m == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory loading a CRF model");
	m->nfields = (int32_t) nfields;
	m->nlabels = L;
	m->features = groups;
	m->max_tokens = (int32_t) max_tokens;
	m->nfeatures = (int64_t) nfeatures;
	m->npairs = (int64_t) npairs;
	m->nlex = (int64_t) nlex;

	for (uint32_t f = 0; f < nfields; f++)
	{
		uint8_t		n;

		if (!Has(&r, 1, 1))
			return Bad(m, errbuf, errlen, "truncated in the field names");
		n = r.p[r.pos++];
		if (n == 0 || n > CRF_MAX_FIELD_NAME)
			return Bad(m, errbuf, errlen, "a field name is empty or longer than 63 bytes");
		if (!Has(&r, n, 1))
			return Bad(m, errbuf, errlen, "truncated in the field names");
		if (memchr(r.p + r.pos, 0, n) != NULL)
			return Bad(m, errbuf, errlen, "a field name contains a zero byte");
		memcpy(m->names[f], r.p + r.pos, n);
		m->names[f][n] = '\0';
		r.pos += n;
		for (uint32_t g = 0; g < f; g++)
			if (strcmp(m->names[g], m->names[f]) == 0)
				return Bad(m, errbuf, errlen, "a field name appears twice");
	}

	if (!Has(&r, (uint64_t) L * L + 2 * (uint64_t) L, 4))
		return Bad(m, errbuf, errlen, "truncated in the transitions");
	m->trans = TriageAllocArray(allocator, (size_t) L * L, sizeof(float));
	m->start = TriageAllocArray(allocator, L, sizeof(float));
	m->end = TriageAllocArray(allocator, L, sizeof(float));
	if (!m->trans || !m->start || !m->end)
	{
		CrfFree(m);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory loading a CRF model");
	}
	for (int32_t i = 0; i < L * L + 2 * L; i++)
	{
		float		v = GetF32(&r);

		if (!isfinite(v) || fabsf(v) > MAX_TRANSITION)
			return Bad(m, errbuf, errlen, "a transition weight is not finite or out of range");
		if (i < L * L)
			m->trans[i] = CrfAllowed(i / L, i % L) ? v : 0.0f;
		else if (i < L * L + L)
			m->start[i - L * L] = CrfAllowed(-1, i - L * L) ? v : 0.0f;
		else
			m->end[i - L * L - L] = v;
	}
	if (!CrfPrepareTransitions(m))
	{
		CrfFree(m);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory loading a CRF model");
	}

	/* lexicon (size checked above) */
	m->lex_keys = TriageAllocArray(allocator, (size_t) nlex + 1, sizeof(uint64_t));
	m->lex_masks = TriageAllocArray(allocator, (size_t) nlex + 1, sizeof(uint64_t));
	if (!m->lex_keys || !m->lex_masks)
	{
		CrfFree(m);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory loading a CRF model");
	}
	if (!Has(&r, nlex, 16))
		return Bad(m, errbuf, errlen, "truncated in the lexicon");
	for (uint64_t i = 0; i < nlex; i++)
	{
		m->lex_keys[i] = GetU64(&r);
		m->lex_masks[i] = GetU64(&r);
		if (m->lex_masks[i] == 0 ||
			(nfields < 64 && (m->lex_masks[i] >> nfields) != 0))
			return Bad(m, errbuf, errlen, "a lexicon entry names a field the model does not have");
	}

	/* features */
	if (!Has(&r, nfeatures, 16))
		return Bad(m, errbuf, errlen, "truncated in the features");
	m->keys = TriageAllocArray(allocator, (size_t) nfeatures + 1, sizeof(uint64_t));
	m->offsets = TriageAllocArray(allocator, (size_t) nfeatures + 1, sizeof(uint32_t));
	m->scales = TriageAllocArray(allocator, (size_t) nfeatures + 1, sizeof(float));
	if (!m->keys || !m->offsets || !m->scales)
	{
		CrfFree(m);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory loading a CRF model");
	}
	for (uint64_t i = 0; i < nfeatures; i++)
		m->keys[i] = GetU64(&r);
	m->offsets[0] = 0;
	for (uint64_t i = 0; i < nfeatures; i++)
	{
		uint32_t	c = GetU32(&r);

		if (c < 1 || c > (uint32_t) L)
			return Bad(m, errbuf, errlen, "a feature has an invalid number of labels");
		sum += c;
		if (sum > npairs)
			return Bad(m, errbuf, errlen, "the features' label counts exceed the number of weights");
		m->offsets[i + 1] = (uint32_t) sum;
	}
	if (sum != npairs)
		return Bad(m, errbuf, errlen, "the features' label counts do not add up to the number of weights");
	for (uint64_t i = 0; i < nfeatures; i++)
	{
		float		s = GetF32(&r);

		if (!isfinite(s) || !(s > 0.0f) || s > MAX_SCALE)
			return Bad(m, errbuf, errlen, "a feature scale is not finite or out of range");
		m->scales[i] = s;
	}
	if (!Has(&r, npairs, 2))
		return Bad(m, errbuf, errlen, "truncated in the weights");
	m->labels = TriageAlloc(allocator, (size_t) npairs + 1);
	m->weights = TriageAlloc(allocator, (size_t) npairs + 1);
	if (!m->labels || !m->weights)
	{
		CrfFree(m);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory loading a CRF model");
	}
	if (npairs > 0)
	{
		memcpy(m->labels, r.p + r.pos, (size_t) npairs);
		r.pos += (size_t) npairs;
		memcpy(m->weights, r.p + r.pos, (size_t) npairs);
		r.pos += (size_t) npairs;
	}
	for (uint64_t i = 0; i < nfeatures; i++)
		for (uint32_t k = m->offsets[i]; k < m->offsets[i + 1]; k++)
		{
			if (m->labels[k] >= L)
				return Bad(m, errbuf, errlen, "a weight names a label the model does not have");
			if (k > m->offsets[i] && m->labels[k] <= m->labels[k - 1])
				return Bad(m, errbuf, errlen, "a feature's labels are not in increasing order");
		}
	if (r.pos != r.len)
		return Bad(m, errbuf, errlen, "trailing bytes after the weights");
	{
		Reader		c = {bytes, len, len - 8};

		if (GetU64(&c) != CrfChecksum(bytes, len - 8))
			return Bad(m, errbuf, errlen, "checksum mismatch (the bytes are corrupted)");
	}

	st = CrfIndexModel(m);
	if (st == TRIAGE_INVALID_MODEL)
		return Bad(m, errbuf, errlen, "a feature key appears twice");
	if (st == TRIAGE_OK)
		st = CrfTableBuild(m->lex_keys, m->nlex, allocator, &m->lex_slots, &m->lex_slot_mask);
	if (st == TRIAGE_INVALID_MODEL)
		return Bad(m, errbuf, errlen, "a lexicon key appears twice");
	if (st != TRIAGE_OK)
	{
		CrfFree(m);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory loading a CRF model");
	}
	*out = m;
	return TRIAGE_OK;
}
