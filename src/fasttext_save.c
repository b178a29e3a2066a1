/*
 * fasttext_save.c
 *		Write a FastTextModel in fastText's .bin/.ftz format, as
 *		FastText::saveModel does.
 *
 * The inverse of fasttext_load.c (layout in shared/docs/fasttext-format.md,
 * section 1): a model loaded from a file fastText wrote saves back to the
 * same bytes.  The loader keeps everything but one thing, the order of the
 * prune index pairs, which it sorts by bucket.  fastText writes them in the
 * iteration order of its std::unordered_map, which depends on the order
 * they were inserted in (quantize inserts them by new row) and on
 * libstdc++'s hash table growth; PruneIndexFileOrder replays those
 * insertions on a model of that hash table.  The order means nothing to
 * either loader; reproducing it makes our .ftz files byte-comparable with
 * the tool's.
 */
#include <stdlib.h>
#include <string.h>

#include "fasttext_quantize.h"
#include "fasttext_internal.h"

typedef struct ByteWriter
{
	uint8_t    *data;
	size_t		pos;
} ByteWriter;

static void
WriteBytes(ByteWriter *writer, const void *bytes, size_t n)
{
	if (n > 0)
		memcpy(writer->data + writer->pos, bytes, n);
	writer->pos += n;
}

static void
WriteUInt8(ByteWriter *writer, uint8_t value)
{
	writer->data[writer->pos++] = value;
}

static void
WriteInt32(ByteWriter *writer, int32_t value)
{
	uint32_t	v = (uint32_t) value;

	for (int i = 0; i < 4; i++)
		writer->data[writer->pos++] = (uint8_t) (v >> (8 * i));
}

static void
WriteInt64(ByteWriter *writer, int64_t value)
{
	uint64_t	v = (uint64_t) value;

	for (int i = 0; i < 8; i++)
		writer->data[writer->pos++] = (uint8_t) (v >> (8 * i));
}

static void
WriteDouble(ByteWriter *writer, double value)
{
	int64_t		bits;

	memcpy(&bits, &value, sizeof(bits));
	WriteInt64(writer, bits);
}

/* n floats, little-endian */
static void
WriteFloats(ByteWriter *writer, const float *x, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	for (size_t i = 0; i < n; i++)
	{
		uint32_t	u;

		memcpy(&u, &x[i], 4);
		WriteInt32(writer, (int32_t) u);
	}
#else
	WriteBytes(writer, x, n * sizeof(float));
#endif
}

/* A running byte count that remembers overflow instead of wrapping */
typedef struct SizeCount
{
	size_t		total;
	bool		overflow;
} SizeCount;

static void
AddSize(SizeCount *count, uint64_t n, uint64_t elemsize)
{
	uint64_t	bytes;

	if (__builtin_mul_overflow(n, elemsize, &bytes) || bytes > SIZE_MAX ||
		__builtin_add_overflow(count->total, (size_t) bytes, &count->total))
		count->overflow = true;
}

/*
 * std::unordered_map's bucket counts as it grows one insertion at a time
 * with the default max_load_factor of 1: 13 buckets for the first element,
 * then the next count here whenever the element count would exceed the
 * bucket count.  These are libstdc++'s _Prime_rehash_policy choices (each
 * the first of its prime list at or above twice the previous count), as
 * observed from GCC 12's library; the policy has been the same since GCC 5.
 * The last one covers more pairs than an int32 bucket count allows.
 */
static const uint64_t BucketCounts[] = {
	13, 29, 59, 127, 257, 541, 1109, 2357, 5087, 10273, 20753, 42043, 85229,
	172933, 351061, 712697, 1447153, 2938679, 5967347, 12117689, 24607243,
	49969847, 101473717, 206062531, 418451333, 849749479, 1725587117,
	UINT64_C(3504151727)
};

#define BUCKET_EMPTY (-2)
#define BEFORE_BEGIN (-1)		/* the list head, as libstdc++'s _M_before_begin */

/*
 * A model of libstdc++'s _Hashtable for unique int keys: one singly linked
 * list of all nodes, each bucket pointing at the node before its first
 * node (or at the list head).  Nodes are indices into the pairs.
 */
typedef struct HashModel
{
	const FastTextPruneEntry *pairs;
	int32_t    *next;			/* -1 ends the list */
	int32_t		head;
	int32_t    *buckets;		/* BUCKET_EMPTY, BEFORE_BEGIN or a node */
	uint64_t	nbuckets;
} HashModel;

/* std::hash<int> is the value converted to size_t */
static inline uint64_t
BucketOf(const HashModel *h, int32_t node, uint64_t nbuckets)
{
	return (uint64_t) (int64_t) h->pairs[node].bucket % nbuckets;
}

static inline int32_t
NextOf(const HashModel *h, int32_t prev)
{
	return prev == BEFORE_BEGIN ? h->head : h->next[prev];
}

static inline void
SetNext(HashModel *h, int32_t prev, int32_t node)
{
	if (prev == BEFORE_BEGIN)
		h->head = node;
	else
		h->next[prev] = node;
}

/* _Hashtable::_M_rehash_aux for unique keys */
static bool
HashRehash(HashModel *h, uint64_t nbuckets, const TriageAllocator *alloc)
{
	int32_t    *buckets = TriageAllocArray(alloc, (size_t) nbuckets, sizeof(int32_t));
	int32_t		p = h->head;
	uint64_t	bbegin = 0;

	if (buckets == NULL)
		return false;
	for (uint64_t b = 0; b < nbuckets; b++)
		buckets[b] = BUCKET_EMPTY;
	h->head = -1;
	while (p != -1)
	{
		int32_t		following = h->next[p];
		uint64_t	b = BucketOf(h, p, nbuckets);

		if (buckets[b] == BUCKET_EMPTY)
		{
			h->next[p] = h->head;
			h->head = p;
			buckets[b] = BEFORE_BEGIN;
			if (h->next[p] != -1)
				buckets[bbegin] = p;
			bbegin = b;
		}
		else
		{
			h->next[p] = NextOf(h, buckets[b]);
			SetNext(h, buckets[b], p);
		}
		p = following;
	}
	TriageFree(alloc, h->buckets);
	h->buckets = buckets;
	h->nbuckets = nbuckets;
	return true;
}

/* _Hashtable::_M_insert_bucket_begin */
static void
HashInsert(HashModel *h, int32_t node)
{
	uint64_t	b = BucketOf(h, node, h->nbuckets);

	if (h->buckets[b] != BUCKET_EMPTY)
	{
		h->next[node] = NextOf(h, h->buckets[b]);
		SetNext(h, h->buckets[b], node);
	}
	else
	{
		h->next[node] = h->head;
		h->head = node;
		if (h->next[node] != -1)
			h->buckets[BucketOf(h, h->next[node], h->nbuckets)] = node;
		h->buckets[b] = BEFORE_BEGIN;
	}
}

static int
ComparePairsByRow(const void *a, const void *b)
{
	const FastTextPruneEntry *x = a;
	const FastTextPruneEntry *y = b;

	if (x->row != y->row)
		return (x->row > y->row) - (x->row < y->row);
	return (x->bucket > y->bucket) - (x->bucket < y->bucket);
}

/*
 * The n prune index pairs in the order fastText writes them: inserted into
 * an unordered_map by new row (as Dictionary::prune does), then iterated.
 * Returns a new array from alloc, or NULL when out of memory.
 */
static FastTextPruneEntry *
PruneIndexFileOrder(const FastTextPruneEntry *pruneidx, int64_t n, const TriageAllocator *alloc)
{
	FastTextPruneEntry *byrow = TriageAllocArray(alloc, (size_t) n, sizeof(FastTextPruneEntry));
	FastTextPruneEntry *result = TriageAllocArray(alloc, (size_t) n, sizeof(FastTextPruneEntry));
	HashModel	h;
	size_t		nextsize = 0;
	bool		ok;

	memset(&h, 0, sizeof(h));
	h.head = -1;
	h.next = TriageAllocArray(alloc, (size_t) n, sizeof(int32_t));
	ok = (byrow != NULL && result != NULL && h.next != NULL);
	if (ok)
	{
		memcpy(byrow, pruneidx, sizeof(FastTextPruneEntry) * (size_t) n);
		qsort(byrow, (size_t) n, sizeof(FastTextPruneEntry), ComparePairsByRow);
		h.pairs = byrow;
	}
	/* n < 2^31 (the caller checked), so the bucket list never runs out */
	for (int64_t i = 0; ok && i < n; i++)
	{
		if ((uint64_t) i + 1 > h.nbuckets)
			ok = HashRehash(&h, BucketCounts[nextsize++], alloc);
		if (ok)
			HashInsert(&h, (int32_t) i);
	}
	if (ok)
	{
		int64_t		k = 0;

		for (int32_t p = h.head; p != -1; p = h.next[p])
			result[k++] = byrow[p];
	}
	TriageFree(alloc, byrow);
	TriageFree(alloc, h.next);
	TriageFree(alloc, h.buckets);
	if (!ok)
	{
		TriageFree(alloc, result);
		return NULL;
	}
	return result;
}

static bool
PQIsConsistent(const FastTextPQ *pq)
{
	return pq->centroids != NULL && pq->dim > 0 && pq->nsubq > 0 && pq->dsub > 0 &&
		pq->lastdsub > 0 && pq->lastdsub <= pq->dsub &&
		(int64_t) (pq->nsubq - 1) * pq->dsub + pq->lastdsub == pq->dim;
}

/*
 * Check that a matrix can be written and add its bytes to count.  what
 * names it in errors.
 */
static TriageStatus
SizeMatrix(const FastTextMatrix *matrix, SizeCount *count, const char *what,
		   char *errbuf, size_t errlen)
{
	if (matrix->m < 0 || matrix->n < 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "%s has negative size %lld x %lld", what,
						   (long long) matrix->m, (long long) matrix->n);
	if (matrix->int8)
	{
		uint64_t	values;

		if (__builtin_mul_overflow((uint64_t) matrix->m, (uint64_t) matrix->n, &values))
			count->overflow = true;
		else if (values > 0 && (matrix->q8 == NULL || matrix->scales == NULL))
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "%s has no values", what);
		AddSize(count, 16, 1);
		AddSize(count, (uint64_t) matrix->m, sizeof(float));
		AddSize(count, values, 1);
		return TRIAGE_OK;
	}
	if (!matrix->quantized)
	{
		uint64_t	floats;

		if (__builtin_mul_overflow((uint64_t) matrix->m, (uint64_t) matrix->n, &floats))
			count->overflow = true;
		else if (floats > 0 && matrix->dense == NULL)
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "%s has no values", what);
		AddSize(count, 16, 1);
		AddSize(count, floats, sizeof(float));
		return TRIAGE_OK;
	}

	if (!PQIsConsistent(&matrix->pq) || matrix->pq.dim != matrix->n)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "%s has an inconsistent product quantizer", what);
	/* the code count is stored as an int32 */
	if (matrix->m > INT32_MAX / matrix->pq.nsubq)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen,
						   "%s has too many codes for fastText's format", what);
	if (matrix->m > 0 && matrix->codes == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "%s has no codes", what);
	AddSize(count, 1 + 8 + 8 + 4, 1);
	AddSize(count, (uint64_t) matrix->m * (uint64_t) matrix->pq.nsubq, 1);
	AddSize(count, 16, 1);
	AddSize(count, (uint64_t) matrix->pq.dim * FASTTEXT_PQ_KSUB, sizeof(float));
	if (matrix->qnorm)
	{
		if (!PQIsConsistent(&matrix->npq) || (matrix->m > 0 && matrix->norm_codes == NULL))
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							   "%s has an inconsistent norm quantizer", what);
		AddSize(count, (uint64_t) matrix->m, 1);
		AddSize(count, 16, 1);
		AddSize(count, (uint64_t) matrix->npq.dim * FASTTEXT_PQ_KSUB, sizeof(float));
	}
	return TRIAGE_OK;
}

static void
WriteQuantizer(ByteWriter *writer, const FastTextPQ *pq)
{
	WriteInt32(writer, pq->dim);
	WriteInt32(writer, pq->nsubq);
	WriteInt32(writer, pq->dsub);
	WriteInt32(writer, pq->lastdsub);
	WriteFloats(writer, pq->centroids, (size_t) pq->dim * FASTTEXT_PQ_KSUB);
}

/* DenseMatrix::save or QuantMatrix::save */
static void
WriteMatrix(ByteWriter *writer, const FastTextMatrix *matrix)
{
	if (matrix->int8)
	{
		WriteInt64(writer, matrix->m);
		WriteInt64(writer, matrix->n);
		WriteFloats(writer, matrix->scales, (size_t) matrix->m);
		WriteBytes(writer, (const uint8_t *) matrix->q8, (size_t) (matrix->m * matrix->n));
		return;
	}
	if (!matrix->quantized)
	{
		WriteInt64(writer, matrix->m);
		WriteInt64(writer, matrix->n);
		WriteFloats(writer, matrix->dense, (size_t) (matrix->m * matrix->n));
		return;
	}
	WriteUInt8(writer, matrix->qnorm ? 1 : 0);
	WriteInt64(writer, matrix->m);
	WriteInt64(writer, matrix->n);
	WriteInt32(writer, (int32_t) (matrix->m * matrix->pq.nsubq));
	WriteBytes(writer, matrix->codes, (size_t) (matrix->m * matrix->pq.nsubq));
	WriteQuantizer(writer, &matrix->pq);
	if (matrix->qnorm)
	{
		WriteBytes(writer, matrix->norm_codes, (size_t) matrix->m);
		WriteQuantizer(writer, &matrix->npq);
	}
}

/* Check the dictionary fields the file depends on and add their bytes */
static TriageStatus
SizeDictionary(const FastTextModel *model, SizeCount *count, char *errbuf, size_t errlen)
{
	if (model->nwords < 0 || model->nlabels < 0 ||
		(int64_t) model->nwords + model->nlabels != model->size ||
		(model->size > 0 && model->entries == NULL))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "dictionary sizes disagree: %d entries, %d words, %d labels",
						   model->size, model->nwords, model->nlabels);
	AddSize(count, 4 + 4 + 4 + 8 + 8, 1);
	for (int32_t i = 0; i < model->size; i++)
	{
		const FastTextEntry *e = &model->entries[i];

		if (e->length < 0 || (e->length > 0 && e->word == NULL) ||
			(e->length > 0 && memchr(e->word, 0, (size_t) e->length) != NULL))
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							   "dictionary entry %d cannot be written (NUL in the word)", i);
		/* the loader derives ids from this order, and so does fastText */
		if ((i < model->nwords) != (e->type == 0) || e->type < 0 || e->type > 1)
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							   "dictionary entry %d has type %d but entries 0..%d are words",
							   i, e->type, model->nwords - 1);
		AddSize(count, (uint64_t) e->length + 1 + 8 + 1, 1);
	}

	if (model->pruneidx_size < -1 || model->pruneidx_size > INT32_MAX ||
		(model->pruneidx_size > 0 && model->pruneidx == NULL))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "prune index size %lld is invalid", (long long) model->pruneidx_size);
	for (int64_t i = 1; i < model->pruneidx_size; i++)
		if (model->pruneidx[i].bucket <= model->pruneidx[i - 1].bucket)
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							   "prune index is not sorted by bucket or lists bucket %d twice",
							   model->pruneidx[i].bucket);
	if (model->pruneidx_size > 0)
		AddSize(count, (uint64_t) model->pruneidx_size, 8);
	return TRIAGE_OK;
}

/*
 * Serialize model to fastText's file format: the bytes FastText::saveModel
 * would write for it (version 12).  *out is allocated from alloc (NULL:
 * malloc) and holds *outlen bytes; free it with TriageFree(alloc, *out).
 *
 * The input matrix is written quantized iff model->quant_input, the output
 * iff quant_input and qout, and the matrices must be in those forms.  A
 * pruned dictionary needs a quantized input: fastText refuses to load
 * anything else (its "issue #332" check), and so does FastTextLoad.
 */
TriageStatus
FastTextSave(const FastTextModel *model, const TriageAllocator *alloc,
			 uint8_t **out, size_t *outlen, char *errbuf, size_t errlen)
{
	const FastTextArgs *args = &model->args;
	SizeCount	count = {0, false};
	ByteWriter	writer;
	FastTextPruneEntry *pairs = NULL;
	TriageStatus status;

	*out = NULL;
	*outlen = 0;
	if (model->input.quantized != model->quant_input)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "input matrix is %s but the model says it is %s",
						   model->input.quantized ? "quantized" : "dense",
						   model->quant_input ? "quantized" : "dense");
	if (model->output.quantized != (model->quant_input && model->qout))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "output matrix is %s but the model's flags make it %s",
						   model->output.quantized ? "quantized" : "dense",
						   (model->quant_input && model->qout) ? "quantized" : "dense");
	if (model->input.int8 != model->int8_input || model->output.int8)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "int8 matrices disagree with the model's flags");
	if (model->pruneidx_size >= 0 && !model->quant_input && !model->int8_input)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "a pruned model can only be saved with a quantized input matrix");

	AddSize(&count, 8 + 56, 1);
	if ((status = SizeDictionary(model, &count, errbuf, errlen)) != TRIAGE_OK)
		return status;
	AddSize(&count, 1, 1);
	if ((status = SizeMatrix(&model->input, &count, "the input matrix", errbuf, errlen)) != TRIAGE_OK)
		return status;
	AddSize(&count, 1, 1);
	if ((status = SizeMatrix(&model->output, &count, "the output matrix", errbuf, errlen)) != TRIAGE_OK)
		return status;
	if (count.overflow)
		return TriageError(TRIAGE_UNSUPPORTED, errbuf, errlen, "model is too large to serialize");

	if (model->pruneidx_size > 0)
	{
		pairs = PruneIndexFileOrder(model->pruneidx, model->pruneidx_size, alloc);
		if (pairs == NULL)
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory saving a model");
	}
	writer.data = TriageAlloc(alloc, count.total);
	writer.pos = 0;
	if (writer.data == NULL)
	{
		TriageFree(alloc, pairs);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen,
						   "out of memory saving a model (%zu bytes)", count.total);
	}

	WriteInt32(&writer, FASTTEXT_MAGIC);
	WriteInt32(&writer, FASTTEXT_VERSION);

	WriteInt32(&writer, args->dim);
	WriteInt32(&writer, args->ws);
	WriteInt32(&writer, args->epoch);
	WriteInt32(&writer, args->minCount);
	WriteInt32(&writer, args->neg);
	WriteInt32(&writer, args->wordNgrams);
	WriteInt32(&writer, args->loss);
	WriteInt32(&writer, args->model);
	WriteInt32(&writer, args->bucket);
	WriteInt32(&writer, args->minn);
	WriteInt32(&writer, args->maxn);
	WriteInt32(&writer, args->lrUpdateRate);
	WriteDouble(&writer, args->t);

	WriteInt32(&writer, model->size);
	WriteInt32(&writer, model->nwords);
	WriteInt32(&writer, model->nlabels);
	WriteInt64(&writer, model->ntokens);
	WriteInt64(&writer, model->pruneidx_size);
	for (int32_t i = 0; i < model->size; i++)
	{
		const FastTextEntry *e = &model->entries[i];

		WriteBytes(&writer, e->word, (size_t) e->length);
		WriteUInt8(&writer, 0);
		WriteInt64(&writer, e->count);
		WriteUInt8(&writer, (uint8_t) e->type);
	}
	for (int64_t i = 0; i < model->pruneidx_size; i++)
	{
		WriteInt32(&writer, pairs[i].bucket);
		WriteInt32(&writer, pairs[i].row);
	}
	TriageFree(alloc, pairs);

	WriteUInt8(&writer, model->quant_input ? FASTTEXT_INPUT_PQ :
			   model->int8_input ? FASTTEXT_INPUT_INT8 : FASTTEXT_INPUT_DENSE);
	WriteMatrix(&writer, &model->input);
	WriteUInt8(&writer, model->qout ? 1 : 0);
	WriteMatrix(&writer, &model->output);

	*out = writer.data;
	*outlen = writer.pos;
	return TRIAGE_OK;
}
