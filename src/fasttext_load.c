/*
 * fasttext_load.c
 *		Parse and validate a fastText .bin or .ftz supervised model.
 *
 * The file is untrusted: every count is checked against the bytes that
 * remain before anything is allocated from it, so a model can never make us
 * allocate much more than its own size, plus what is derived from it for
 * speed, each capped in proportion to the file: the per-word subword lists
 * (PrecomputeSubwords), the bucket map of a pruned model (BuildBucketMap)
 * and the decoded input rows (FastTextDecodeRows; bounds in fasttext.h).
 * On any error everything allocated so far is released and the message
 * names what was wrong.
 *
 * Layout (all little-endian, packed): magic, version, the 56-byte Args,
 * the dictionary, a quant flag, the input matrix, the qout flag, the output
 * matrix.  See shared/docs/fasttext-format.md, section 1.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fasttext.h"
#include "fasttext_internal.h"

typedef struct ByteReader
{
	const uint8_t *data;
	size_t		len;
	size_t		pos;
	bool		borrow;			/* dense matrices may point into data */
} ByteReader;

static inline size_t
Remaining(const ByteReader *reader)
{
	return reader->len - reader->pos;
}

static bool
ReadBytes(ByteReader *reader, void *out, size_t n)
{
	if (Remaining(reader) < n)
		return false;
	memcpy(out, reader->data + reader->pos, n);
	reader->pos += n;
	return true;
}

static bool
ReadInt32(ByteReader *reader, int32_t *value)
{
	uint8_t		b[4];

	if (!ReadBytes(reader, b, 4))
		return false;
	*value = (int32_t) ((uint32_t) b[0] | (uint32_t) b[1] << 8 |
						(uint32_t) b[2] << 16 | (uint32_t) b[3] << 24);
	return true;
}

static bool
ReadInt64(ByteReader *reader, int64_t *value)
{
	uint8_t		b[8];
	uint64_t	v = 0;

	if (!ReadBytes(reader, b, 8))
		return false;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	*value = (int64_t) v;
	return true;
}

static bool
ReadDouble(ByteReader *reader, double *value)
{
	int64_t		bits;

	if (!ReadInt64(reader, &bits))
		return false;
	memcpy(value, &bits, sizeof(double));
	return true;
}

/* A C++ bool written as one byte; anything but 0 or 1 is corruption */
static bool
ReadBool(ByteReader *reader, bool *value, bool *valid)
{
	uint8_t		b;

	if (!ReadBytes(reader, &b, 1))
		return false;
	*valid = (b <= 1);
	*value = (b == 1);
	return true;
}

/* Read n little-endian floats into out */
static bool
ReadFloats(ByteReader *reader, float *out, size_t n)
{
	if (n > Remaining(reader) / sizeof(float))
		return false;
	memcpy(out, reader->data + reader->pos, n * sizeof(float));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	for (size_t i = 0; i < n; i++)
	{
		uint32_t	u;

		memcpy(&u, &out[i], 4);
		u = __builtin_bswap32(u);
		memcpy(&out[i], &u, 4);
	}
#endif
	reader->pos += n * sizeof(float);
	return true;
}

#define TRUNCATED(what) \
	TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, \
				"model file is truncated: it ends inside %s (offset %zu of %zu bytes)", \
				(what), reader->pos, reader->len)

static TriageStatus
ReadArgs(ByteReader *reader, FastTextArgs *args, char *errbuf, size_t errlen)
{
	int32_t    *fields[] = {&args->dim, &args->ws, &args->epoch, &args->minCount,
		&args->neg, &args->wordNgrams, &args->loss, &args->model, &args->bucket,
	&args->minn, &args->maxn, &args->lrUpdateRate};

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (!ReadInt32(reader, fields[i]))
			return TRUNCATED("the model arguments");
	if (!ReadDouble(reader, &args->t))
		return TRUNCATED("the model arguments");

	if (args->model == FASTTEXT_MODEL_CBOW || args->model == FASTTEXT_MODEL_SKIPGRAM)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "model is an unsupervised %s word-vector model, not a classifier",
						   args->model == FASTTEXT_MODEL_CBOW ? "cbow" : "skipgram");
	if (args->model != FASTTEXT_MODEL_SUPERVISED)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "model type %d is unknown (expected 3, supervised)", args->model);
	if (args->loss < FASTTEXT_LOSS_HS || args->loss > FASTTEXT_LOSS_OVA)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "loss %d is unknown (expected 1 hs, 2 ns, 3 softmax or 4 ova)", args->loss);
	if (args->dim <= 0)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "dimension %d is not positive", args->dim);
	/*
	 * Work per line grows with wordNgrams times the words and with maxn times
	 * the characters of each word; fastText models use single digits, so
	 * anything past 64 is a corrupt (or hostile) file.
	 */
	if (args->wordNgrams > 64 || args->maxn > 64)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "wordNgrams %d or maxn %d is implausibly large (at most 64)",
						   args->wordNgrams, args->maxn);
	if (args->bucket < 0)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "bucket count %d is negative", args->bucket);
	/* n-gram ids are hash % bucket: a zero bucket would divide by zero */
	if (args->bucket == 0 && (args->wordNgrams > 1 || args->maxn > 0))
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "model uses n-grams (wordNgrams %d, maxn %d) but has no hash buckets",
						   args->wordNgrams, args->maxn);
	return TRIAGE_OK;
}

/*
 * Read the dictionary entries in two passes: the first validates the layout
 * and sums the string bytes, the second copies into one pool.
 */
static TriageStatus
ReadEntries(ByteReader *reader, FastTextModel *model, char *errbuf, size_t errlen)
{
	const TriageAllocator *alloc = &model->allocator;
	size_t		start = reader->pos;
	size_t		pool_size = 0;
	char	   *pool;

	for (int32_t i = 0; i < model->size; i++)
	{
		const uint8_t *word = reader->data + reader->pos;
		const uint8_t *nul = memchr(word, 0, Remaining(reader));
		size_t		wordlen;
		int64_t		count;
		uint8_t		type;

		if (nul == NULL)
			return TRUNCATED("a dictionary word");
		wordlen = (size_t) (nul - word);
		if (wordlen > INT32_MAX)
			return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							   "dictionary entry %d is longer than 2 GB", i);
		reader->pos += wordlen + 1;
		if (!ReadInt64(reader, &count) || !ReadBytes(reader, &type, 1))
			return TRUNCATED("a dictionary entry");
		if (count < 0)
			return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							   "dictionary entry %d has a negative count (%lld)",
							   i, (long long) count);
		if (type > 1)
			return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							   "dictionary entry %d has unknown type %u (expected 0 word or 1 label)",
							   i, type);
		/* fastText sorts words before labels; the ids depend on it */
		if ((i < model->nwords) != (type == 0))
			return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							   "dictionary entry %d is a %s but the header says entries 0..%d are words",
							   i, type ? "label" : "word", model->nwords - 1);
		pool_size += wordlen + 1;
	}

	model->entries = TriageAllocArray(alloc, (size_t) model->size, sizeof(FastTextEntry));
	pool = model->strings = TriageAlloc(alloc, pool_size);
	if (model->entries == NULL || pool == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory reading the dictionary");

	reader->pos = start;
	for (int32_t i = 0; i < model->size; i++)
	{
		FastTextEntry *entry = &model->entries[i];
		size_t		wordlen = strlen((const char *) reader->data + reader->pos);
		uint8_t		type = 0;

		memcpy(pool, reader->data + reader->pos, wordlen + 1);
		reader->pos += wordlen + 1;
		entry->word = pool;
		entry->length = (int32_t) wordlen;
		entry->hash = FastTextHash(pool, wordlen);
		pool += wordlen + 1;
		(void) ReadInt64(reader, &entry->count);
		(void) ReadBytes(reader, &type, 1);
		entry->type = (int8_t) type;
	}
	return TRIAGE_OK;
}

static int
ComparePruneEntries(const void *a, const void *b)
{
	int32_t		x = ((const FastTextPruneEntry *) a)->bucket;
	int32_t		y = ((const FastTextPruneEntry *) b)->bucket;

	return (x > y) - (x < y);
}

static TriageStatus
ReadPruneIndex(ByteReader *reader, FastTextModel *model, char *errbuf, size_t errlen)
{
	int64_t		n = model->pruneidx_size;

	if (n <= 0)
		return TRIAGE_OK;
	if ((uint64_t) n > Remaining(reader) / 8)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "prune index claims %lld entries but only %zu bytes remain",
						   (long long) n, Remaining(reader));
	model->pruneidx = TriageAllocArray(&model->allocator, (size_t) n, sizeof(FastTextPruneEntry));
	if (model->pruneidx == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory reading the prune index");
	for (int64_t i = 0; i < n; i++)
	{
		FastTextPruneEntry *e = &model->pruneidx[i];

		(void) ReadInt32(reader, &e->bucket);
		(void) ReadInt32(reader, &e->row);
		if (e->bucket < 0 || e->bucket >= model->args.bucket || e->row < 0)
			return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							   "prune index entry %lld (%d -> %d) is out of range (bucket count %d)",
							   (long long) i, e->bucket, e->row, model->args.bucket);
	}
	qsort(model->pruneidx, (size_t) n, sizeof(FastTextPruneEntry), ComparePruneEntries);
	for (int64_t i = 1; i < n; i++)
		if (model->pruneidx[i].bucket == model->pruneidx[i - 1].bucket)
			return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							   "prune index lists bucket %d twice", model->pruneidx[i].bucket);
	return TRIAGE_OK;
}

static TriageStatus
ReadDictionary(ByteReader *reader, FastTextModel *model, char *errbuf, size_t errlen)
{
	TriageStatus status;

	if (!ReadInt32(reader, &model->size) || !ReadInt32(reader, &model->nwords) ||
		!ReadInt32(reader, &model->nlabels) || !ReadInt64(reader, &model->ntokens) ||
		!ReadInt64(reader, &model->pruneidx_size))
		return TRUNCATED("the dictionary header");

	if (model->nwords < 0 || model->nlabels < 0 ||
		(int64_t) model->nwords + model->nlabels != model->size)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "dictionary sizes disagree: %d entries, %d words, %d labels",
						   model->size, model->nwords, model->nlabels);
	if (model->nlabels == 0)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "model has no labels");
	/* each entry takes at least 10 bytes: a NUL, an int64 count and a type */
	if ((size_t) model->size > Remaining(reader) / 10)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "dictionary claims %d entries but only %zu bytes remain",
						   model->size, Remaining(reader));
	if (model->pruneidx_size < -1)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "prune index size %lld is invalid", (long long) model->pruneidx_size);

	status = ReadEntries(reader, model, errbuf, errlen);
	if (status != TRIAGE_OK)
		return status;
	return ReadPruneIndex(reader, model, errbuf, errlen);
}

static TriageStatus
ReadQuantizer(ByteReader *reader, FastTextPQ *pq, const TriageAllocator *alloc,
			  const char *what, char *errbuf, size_t errlen)
{
	if (!ReadInt32(reader, &pq->dim) || !ReadInt32(reader, &pq->nsubq) ||
		!ReadInt32(reader, &pq->dsub) || !ReadInt32(reader, &pq->lastdsub))
		return TRUNCATED(what);
	if (pq->dim <= 0 || pq->nsubq <= 0 || pq->dsub <= 0 || pq->lastdsub <= 0 ||
		pq->lastdsub > pq->dsub ||
		(int64_t) (pq->nsubq - 1) * pq->dsub + pq->lastdsub != pq->dim)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "%s is inconsistent: dim %d, nsubq %d, dsub %d, lastdsub %d",
						   what, pq->dim, pq->nsubq, pq->dsub, pq->lastdsub);
	if ((size_t) pq->dim > Remaining(reader) / (256 * sizeof(float)))
		return TRUNCATED(what);
	pq->centroids = TriageAllocArray(alloc, (size_t) pq->dim * 256, sizeof(float));
	if (pq->centroids == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory reading %s", what);
	(void) ReadFloats(reader, pq->centroids, (size_t) pq->dim * 256);
	return TRIAGE_OK;
}

static TriageStatus
ReadDenseMatrix(ByteReader *reader, FastTextMatrix *matrix, const TriageAllocator *alloc,
				const char *what, char *errbuf, size_t errlen)
{
	matrix->quantized = false;
	if (!ReadInt64(reader, &matrix->m) || !ReadInt64(reader, &matrix->n))
		return TRUNCATED(what);
	if (matrix->m < 0 || matrix->n < 0)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "%s has negative size %lld x %lld", what,
						   (long long) matrix->m, (long long) matrix->n);
	if (matrix->n != 0 &&
		(uint64_t) matrix->m > Remaining(reader) / sizeof(float) / (uint64_t) matrix->n)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "%s claims %lld x %lld floats but only %zu bytes remain", what,
						   (long long) matrix->m, (long long) matrix->n, Remaining(reader));
	matrix->dense_offset = (int64_t) reader->pos;
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__

	/*
	 * The file's floats as they are, where they are: no copy, so that every
	 * process mapping one file shares its pages.  Only when aligned for
	 * float loads (the shared file is laid out so that they are).
	 */
	if (reader->borrow && (uintptr_t) (reader->data + reader->pos) % sizeof(float) == 0)
	{
		matrix->dense = (float *) (reader->data + reader->pos);
		matrix->dense_borrowed = true;
		reader->pos += (size_t) (matrix->m * matrix->n) * sizeof(float);
		return TRIAGE_OK;
	}
#endif
	matrix->dense = TriageAllocArray(alloc, (size_t) (matrix->m * matrix->n), sizeof(float));
	if (matrix->dense == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory reading %s", what);
	(void) ReadFloats(reader, matrix->dense, (size_t) (matrix->m * matrix->n));
	return TRIAGE_OK;
}

static TriageStatus
ReadQuantMatrix(ByteReader *reader, FastTextMatrix *matrix, const TriageAllocator *alloc,
				const char *what, char *errbuf, size_t errlen)
{
	bool		valid;
	int32_t		codesize;
	TriageStatus status;

	matrix->quantized = true;
	if (!ReadBool(reader, &matrix->qnorm, &valid) ||
		!ReadInt64(reader, &matrix->m) || !ReadInt64(reader, &matrix->n) ||
		!ReadInt32(reader, &codesize))
		return TRUNCATED(what);
	if (!valid)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "%s has an invalid qnorm flag", what);
	if (matrix->m < 0 || matrix->n <= 0 || codesize < 0)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "%s has invalid size %lld x %lld (code size %d)", what,
						   (long long) matrix->m, (long long) matrix->n, codesize);
	if ((size_t) codesize > Remaining(reader))
		return TRUNCATED(what);
	matrix->codes = TriageAlloc(alloc, (size_t) codesize);
	if (matrix->codes == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory reading %s", what);
	(void) ReadBytes(reader, matrix->codes, (size_t) codesize);

	status = ReadQuantizer(reader, &matrix->pq, alloc, what, errbuf, errlen);
	if (status != TRIAGE_OK)
		return status;
	/* m <= codesize first, so that nsubq * m cannot overflow */
	if (matrix->pq.dim != matrix->n || matrix->m > codesize ||
		(int64_t) matrix->pq.nsubq * matrix->m != codesize)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "%s is inconsistent: %lld x %lld with %d codes of %d sub-quantizers",
						   what, (long long) matrix->m, (long long) matrix->n,
						   codesize, matrix->pq.nsubq);
	if (matrix->qnorm)
	{
		if ((uint64_t) matrix->m > Remaining(reader))
			return TRUNCATED(what);
		matrix->norm_codes = TriageAlloc(alloc, (size_t) matrix->m);
		if (matrix->norm_codes == NULL)
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory reading %s", what);
		(void) ReadBytes(reader, matrix->norm_codes, (size_t) matrix->m);
		status = ReadQuantizer(reader, &matrix->npq, alloc, what, errbuf, errlen);
		if (status != TRIAGE_OK)
			return status;
	}
	return TRIAGE_OK;
}

/* int64 m, int64 n, m float scales, m * n int8 values */
static TriageStatus
ReadInt8Matrix(ByteReader *reader, FastTextMatrix *matrix, const TriageAllocator *alloc,
			   const char *what, char *errbuf, size_t errlen)
{
	matrix->int8 = true;
	if (!ReadInt64(reader, &matrix->m) || !ReadInt64(reader, &matrix->n))
		return TRUNCATED(what);
	if (matrix->m < 0 || matrix->n <= 0)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "%s has invalid size %lld x %lld", what,
						   (long long) matrix->m, (long long) matrix->n);
	if ((uint64_t) matrix->m > Remaining(reader) / (sizeof(float) + (uint64_t) matrix->n))
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "%s claims %lld x %lld int8 values but only %zu bytes remain", what,
						   (long long) matrix->m, (long long) matrix->n, Remaining(reader));
	matrix->scales = TriageAllocArray(alloc, (size_t) matrix->m + 1, sizeof(float));
	matrix->q8 = TriageAlloc(alloc, (size_t) (matrix->m * matrix->n) + 1);
	if (matrix->scales == NULL || matrix->q8 == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory reading %s", what);
	(void) ReadFloats(reader, matrix->scales, (size_t) matrix->m);
	(void) ReadBytes(reader, matrix->q8, (size_t) (matrix->m * matrix->n));
	return TRIAGE_OK;
}

static TriageStatus
ReadMatrix(ByteReader *reader, FastTextMatrix *matrix, bool quantized,
		   const TriageAllocator *alloc, const char *what, char *errbuf, size_t errlen)
{
	if (quantized)
		return ReadQuantMatrix(reader, matrix, alloc, what, errbuf, errlen);
	return ReadDenseMatrix(reader, matrix, alloc, what, errbuf, errlen);
}

/* An open-addressing table from word hash to entry id; a power of two */
static TriageStatus
BuildWordTable(FastTextModel *model, char *errbuf, size_t errlen)
{
	int64_t		tsize = 1;

	while (tsize < (int64_t) model->size * 2 + 1)
		tsize <<= 1;
	model->word2int_size = tsize;
	model->word2int = TriageAllocArray(&model->allocator, (size_t) tsize, sizeof(int32_t));
	if (model->word2int == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the word table");
	memset(model->word2int, 0xff, (size_t) tsize * sizeof(int32_t));

	for (int32_t i = 0; i < model->size; i++)
	{
		const FastTextEntry *e = &model->entries[i];
		int64_t		slot = e->hash & (tsize - 1);

		while (model->word2int[slot] != -1)
		{
			const FastTextEntry *other = &model->entries[model->word2int[slot]];

			if (other->length == e->length && memcmp(other->word, e->word, e->length) == 0)
				return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
								   "dictionary lists \"%.64s\" twice (entries %d and %d)",
								   e->word, model->word2int[slot], i);
			slot = (slot + 1) & (tsize - 1);
		}
		model->word2int[slot] = i;
	}
	model->eos_id = FastTextFindWord(model, FASTTEXT_EOS, strlen(FASTTEXT_EOS),
									 FastTextHash(FASTTEXT_EOS, strlen(FASTTEXT_EOS)));
	return TRIAGE_OK;
}

/*
 * Precompute each word's [id, subword rows...] as fastText's initNgrams does,
 * unless the lists would be out of proportion to the file (absurd maxn or
 * huge words), in which case prediction computes them per token instead.
 */
static TriageStatus
PrecomputeSubwords(FastTextModel *model, size_t file_len, char *errbuf, size_t errlen)
{
	const TriageAllocator *alloc = &model->allocator;
	int64_t		bound = 0;
	int64_t		budget = (int64_t) file_len * 4 + ((int64_t) 1 << 22);
	FastTextScratch scratch;
	int64_t		used = 0;
	int64_t    *offsets;
	int32_t    *subwords;
	TriageStatus status = TRIAGE_OK;

	if (model->args.maxn <= 0)
		return TRIAGE_OK;
	for (int32_t i = 0; i < model->nwords && bound <= budget; i++)
		bound += 1 + FastTextCountSubwords(model, model->entries[i].word, model->entries[i].length);
	if (bound > budget)
		return TRIAGE_OK;

	offsets = TriageAllocArray(alloc, (size_t) model->nwords + 1, sizeof(int64_t));
	subwords = TriageAllocArray(alloc, (size_t) (bound > 0 ? bound : 1), sizeof(int32_t));
	if (offsets == NULL || subwords == NULL)
	{
		TriageFree(alloc, offsets);
		TriageFree(alloc, subwords);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory precomputing subwords");
	}

	/* model->subword_offsets is still NULL, so this computes them afresh */
	FastTextScratchInit(&scratch, alloc);
	for (int32_t i = 0; i < model->nwords && status == TRIAGE_OK; i++)
	{
		const FastTextEntry *e = &model->entries[i];

		offsets[i] = used;
		scratch.nrows = 0;
		status = FastTextAddSubwords(model, &scratch, e->word, (size_t) e->length, i,
									 errbuf, errlen);
		for (int64_t r = 0; r < scratch.nrows && used < bound; r++)
			subwords[used++] = scratch.rows[r];
	}
	offsets[model->nwords] = used;
	FastTextScratchFree(&scratch);
	model->subword_offsets = offsets;
	model->subwords = subwords;
	return status;
}

/*
 * The bucket map of a pruned model: the input row of every n-gram bucket,
 * or -1 for a bucket the prune index drops, so that each n-gram is one
 * load instead of a binary search of the prune index.  Built only within
 * the bound of fasttext.h (4 bytes a bucket: at most 4 times budget_bytes
 * plus FASTTEXT_BUCKET_MAP_SLACK); without it (too big, out of memory, or
 * rows past int32, possible only in theory), PushBucket searches.
 */
static void
BuildBucketMap(FastTextModel *model, size_t budget_bytes)
{
	int64_t		nbuckets = model->args.bucket;
	uint64_t	limit = (uint64_t) budget_bytes * 4 + FASTTEXT_BUCKET_MAP_SLACK;
	int32_t    *map;

	if (model->pruneidx_size <= 0 || nbuckets <= 0 ||
		(uint64_t) nbuckets > limit / sizeof(int32_t))
		return;
	for (int64_t i = 0; i < model->pruneidx_size; i++)
		if (model->pruneidx[i].row < 0 ||
			(int64_t) model->nwords + model->pruneidx[i].row > INT32_MAX ||
			model->pruneidx[i].bucket < 0 || model->pruneidx[i].bucket >= nbuckets)
			return;
	map = TriageAllocArray(&model->allocator, (size_t) nbuckets, sizeof(int32_t));
	if (map == NULL)
		return;					/* optional: predictions are the same without it */
	memset(map, 0xff, (size_t) nbuckets * sizeof(int32_t));
	for (int64_t i = 0; i < model->pruneidx_size; i++)
		map[model->pruneidx[i].bucket] = model->nwords + model->pruneidx[i].row;
	model->bucket_rows = map;
}

/*
 * Build the lookup structures of a dictionary whose entries are set: the
 * word table, the EOS id, the bucket map of a pruned model and the per-word
 * subword lists (both capped in proportion to budget_bytes).  Replaces any
 * built before, so training and pruning can call it again.
 */
TriageStatus
FastTextIndexDictionary(FastTextModel *model, size_t budget_bytes, char *errbuf, size_t errlen)
{
	TriageStatus status;

	TriageFree(&model->allocator, model->word2int);
	TriageFree(&model->allocator, model->bucket_rows);
	TriageFree(&model->allocator, model->subword_offsets);
	TriageFree(&model->allocator, model->subwords);
	model->word2int = NULL;
	model->bucket_rows = NULL;
	model->subword_offsets = NULL;
	model->subwords = NULL;
	status = BuildWordTable(model, errbuf, errlen);
	if (status != TRIAGE_OK)
		return status;
	BuildBucketMap(model, budget_bytes);
	return PrecomputeSubwords(model, budget_bytes, errbuf, errlen);
}

static TriageStatus
Validate(FastTextModel *model, char *errbuf, size_t errlen)
{
	int64_t		expected_rows;

	if (model->int8_input && model->qout)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "an int8 model cannot have a product-quantized output");
	if (model->pruneidx_size >= 0 && !model->quant_input && !model->int8_input)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "model has a pruned dictionary but an unquantized input matrix");
	if (model->input.n != model->args.dim || model->output.n != model->args.dim)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "matrix widths (%lld input, %lld output) differ from the dimension %d",
						   (long long) model->input.n, (long long) model->output.n, model->args.dim);
	if (model->output.m != model->nlabels)
		return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
						   "output matrix has %lld rows for %d labels",
						   (long long) model->output.m, model->nlabels);
	if (model->pruneidx_size < 0)
	{
		expected_rows = (int64_t) model->nwords + model->args.bucket;
		if (model->input.m != expected_rows)
			return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							   "input matrix has %lld rows, expected %lld (%d words + %d buckets)",
							   (long long) model->input.m, (long long) expected_rows,
							   model->nwords, model->args.bucket);
	}
	else
	{
		if (model->input.m < model->nwords)
			return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							   "input matrix has %lld rows for %d words",
							   (long long) model->input.m, model->nwords);
		for (int64_t i = 0; i < model->pruneidx_size; i++)
			if (model->pruneidx[i].row >= model->input.m - model->nwords)
				return TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
								   "prune index maps bucket %d to row %d, beyond the input matrix",
								   model->pruneidx[i].bucket, model->pruneidx[i].row);
	}
	return TRIAGE_OK;
}

void
FastTextInitSigmoidTable(FastTextModel *model)
{
	/* As fastText's Loss constructor: float x, float exp, double division */
	for (int i = 0; i <= 512; i++)
	{
		float		x = (float) (i * 2 * 8) / 512 - 8;

		model->sigmoid_table[i] = (float) (1.0 / (1.0 + (double) expf(-x)));
	}
}

static TriageStatus LoadModel(const uint8_t *data, size_t len, bool borrow,
							  const TriageAllocator *allocator, FastTextModel **result,
							  char *errbuf, size_t errlen);

/*
 * Load a model from data[0..len).  On success *model owns everything it
 * points to (free with FastTextFree); on failure *model is NULL and errbuf
 * says why.
 */
TriageStatus
FastTextLoad(const uint8_t *data, size_t len, const TriageAllocator *allocator,
			 FastTextModel **result, char *errbuf, size_t errlen)
{
	return LoadModel(data, len, false, allocator, result, errbuf, errlen);
}

/*
 * FastTextLoad, but a dense matrix whose floats are aligned in data is read
 * in place: data must stay mapped, unchanged, until the model is freed.  For
 * a file mapped read-only by every process (model_files.c), so that a large
 * model exists once in memory.
 */
TriageStatus
FastTextLoadInPlace(const uint8_t *data, size_t len, const TriageAllocator *allocator,
					FastTextModel **result, char *errbuf, size_t errlen)
{
	return LoadModel(data, len, true, allocator, result, errbuf, errlen);
}

static TriageStatus
LoadModel(const uint8_t *data, size_t len, bool borrow, const TriageAllocator *allocator,
		  FastTextModel **result, char *errbuf, size_t errlen)
{
	ByteReader	readerdata = {data, len, 0, borrow};
	ByteReader *reader = &readerdata;
	FastTextModel *model;
	int32_t		magic;
	bool		valid;
	uint8_t		input_format;
	TriageStatus status;

	*result = NULL;
	if (allocator == NULL)
		allocator = &TriageMallocAllocator;
	model = TriageAllocZero(allocator, sizeof(FastTextModel));
	if (model == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory loading a model");
	model->allocator = *allocator;
	model->eos_id = -1;
	model->temperature = 1.0f;

	if (!ReadInt32(reader, &magic) || !ReadInt32(reader, &model->version))
	{
		status = TRUNCATED("the header");
		goto fail;
	}
	if (magic != FASTTEXT_MAGIC)
	{
		status = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							 "not a fastText model: wrong magic number %d (expected %d)",
							 magic, FASTTEXT_MAGIC);
		goto fail;
	}
	if (model->version != 11 && model->version != FASTTEXT_VERSION)
	{
		status = TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
							 "fastText file format version %d is not supported (expected 11 or 12)",
							 model->version);
		goto fail;
	}
	status = ReadArgs(reader, &model->args, errbuf, errlen);
	if (status != TRIAGE_OK)
		goto fail;
	/* version 11 supervised models predate char n-grams for supervised */
	if (model->version == 11)
		model->args.maxn = 0;

	status = ReadDictionary(reader, model, errbuf, errlen);
	if (status != TRIAGE_OK)
		goto fail;

	if (!ReadBytes(reader, &input_format, 1))
	{
		status = TRUNCATED("the quantization flag");
		goto fail;
	}
	if (input_format > FASTTEXT_INPUT_INT8)
	{
		status = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							 "quantization flag %u is not 0, 1 or 2", input_format);
		goto fail;
	}
	model->quant_input = (input_format == FASTTEXT_INPUT_PQ);
	model->int8_input = (input_format == FASTTEXT_INPUT_INT8);
	if (model->int8_input)
		status = ReadInt8Matrix(reader, &model->input, allocator, "the input matrix", errbuf, errlen);
	else
		status = ReadMatrix(reader, &model->input, model->quant_input, allocator,
							"the input matrix", errbuf, errlen);
	if (status != TRIAGE_OK)
		goto fail;
	if (!ReadBool(reader, &model->qout, &valid))
	{
		status = TRUNCATED("the qout flag");
		goto fail;
	}
	if (!valid)
	{
		status = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen, "qout flag is not 0 or 1");
		goto fail;
	}
	status = ReadMatrix(reader, &model->output, model->quant_input && model->qout, allocator,
						"the output matrix", errbuf, errlen);
	if (status != TRIAGE_OK)
		goto fail;
	if (Remaining(reader) != 0)
	{
		status = TriageError(TRIAGE_INVALID_MODEL, errbuf, errlen,
							 "%zu unexpected bytes follow the output matrix", Remaining(reader));
		goto fail;
	}

	if ((status = Validate(model, errbuf, errlen)) != TRIAGE_OK ||
		(status = FastTextIndexDictionary(model, len, errbuf, errlen)) != TRIAGE_OK)
		goto fail;
	if (model->args.loss == FASTTEXT_LOSS_HS &&
		(status = FastTextBuildTree(model, errbuf, errlen)) != TRIAGE_OK)
		goto fail;
	FastTextInitSigmoidTable(model);
	/* optional: too big or out of memory, rows are decoded as they are added */
	(void) FastTextDecodeRows(&model->input,
							  len > FASTTEXT_DECODE_MAX_BYTES / FASTTEXT_DECODE_FILE_RATIO ?
							  FASTTEXT_DECODE_MAX_BYTES : len * FASTTEXT_DECODE_FILE_RATIO,
							  allocator);

	*result = model;
	return TRIAGE_OK;

fail:
	FastTextFree(model);
	return status;
}

static void
FreeMatrix(const TriageAllocator *alloc, FastTextMatrix *matrix)
{
	if (!matrix->dense_borrowed)
		TriageFree(alloc, matrix->dense);
	TriageFree(alloc, matrix->codes);
	TriageFree(alloc, matrix->pq.centroids);
	TriageFree(alloc, matrix->norm_codes);
	TriageFree(alloc, matrix->npq.centroids);
	TriageFree(alloc, matrix->q8);
	TriageFree(alloc, matrix->scales);
	TriageFree(alloc, matrix->decoded);
}

void
FastTextFree(FastTextModel *model)
{
	TriageAllocator alloc;

	if (model == NULL)
		return;
	alloc = model->allocator;
	TriageFree(&alloc, model->entries);
	TriageFree(&alloc, model->strings);
	TriageFree(&alloc, model->pruneidx);
	TriageFree(&alloc, model->bucket_rows);
	TriageFree(&alloc, model->word2int);
	TriageFree(&alloc, model->subword_offsets);
	TriageFree(&alloc, model->subwords);
	TriageFree(&alloc, model->tree);
	FreeMatrix(&alloc, &model->input);
	FreeMatrix(&alloc, &model->output);
	TriageFree(&alloc, model);
}

/* The label as users see it: without fastText's "__label__" prefix */
const char *
FastTextLabelName(const FastTextModel *model, int32_t label, size_t *len)
{
	const char *word = FastTextLabel(model, label, len);

	if (FastTextIsLabelToken(word, *len))
	{
		word += sizeof(FASTTEXT_LABEL_PREFIX) - 1;
		*len -= sizeof(FASTTEXT_LABEL_PREFIX) - 1;
	}
	return word;
}

/* The index of the label called name (without prefix), or -1 */
int32_t
FastTextFindLabel(const FastTextModel *model, const char *name, size_t len)
{
	for (int32_t i = 0; i < model->nlabels; i++)
	{
		size_t		l;
		const char *w = FastTextLabelName(model, i, &l);

		if (l == len && memcmp(w, name, len) == 0)
			return i;
	}
	return -1;
}

/* The label's text, prefix included, and its length in bytes */
const char *
FastTextLabel(const FastTextModel *model, int32_t label, size_t *len)
{
	const FastTextEntry *e = &model->entries[model->nwords + label];

	*len = (size_t) e->length;
	return e->word;
}

/* What the glue reads of a model (FastTextModel is opaque outside the core) */

const FastTextArgs *
FastTextModelArgs(const FastTextModel *model)
{
	return &model->args;
}

int32_t
FastTextFileVersion(const FastTextModel *model)
{
	return model->version;
}

int32_t
FastTextLabelCount(const FastTextModel *model)
{
	return model->nlabels;
}

int32_t
FastTextWordCount(const FastTextModel *model)
{
	return model->nwords;
}

int32_t
FastTextInputForm(const FastTextModel *model)
{
	return model->quant_input ? FASTTEXT_INPUT_PQ
		: model->int8_input ? FASTTEXT_INPUT_INT8 : FASTTEXT_INPUT_DENSE;
}

bool
FastTextOutputQuantized(const FastTextModel *model)
{
	return model->quant_input && model->qout;
}

bool
FastTextIsPruned(const FastTextModel *model)
{
	return model->pruneidx_size >= 0;
}

int64_t
FastTextInputRows(const FastTextModel *model)
{
	return model->input.m;
}

int64_t
FastTextDenseInputOffset(const FastTextModel *model)
{
	return model->quant_input || model->int8_input ? -1 : model->input.dense_offset;
}

int64_t
FastTextDenseInputBytes(const FastTextModel *model)
{
	return model->quant_input || model->int8_input ? 0
		: model->input.m * model->input.n * (int64_t) sizeof(float);
}

void
FastTextSetTemperature(FastTextModel *model, float temperature)
{
	model->temperature = temperature;
}
