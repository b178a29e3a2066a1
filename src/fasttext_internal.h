/*
 * fasttext_internal.h
 *		The fastText model's layout, for the fastText core files (and its
 *		unit tests) only: everything else sees FastTextModel as opaque and
 *		reads it through fasttext.h's functions.
 */
#ifndef TRIAGE_FASTTEXT_INTERNAL_H
#define TRIAGE_FASTTEXT_INTERNAL_H

#include "fasttext.h"

/* fastText's ProductQuantizer: 256 centroids per sub-quantizer */
struct FastTextPQ
{
	int32_t		dim;
	int32_t		nsubq;
	int32_t		dsub;
	int32_t		lastdsub;
	float	   *centroids;		/* dim * 256 floats */
};

/*
 * A matrix of m rows by n columns, dense or product-quantized.  The two
 * operations prediction needs are row addition and row dot product.
 */
struct FastTextMatrix
{
	int64_t		m;
	int64_t		n;
	bool		quantized;
	float	   *dense;			/* m * n floats, when !quantized */
	bool		dense_borrowed; /* dense points into the loaded bytes (FastTextLoadInPlace) */
	int64_t		dense_offset;	/* where dense's floats start in the file */
	/* product-quantized form */
	bool		qnorm;
	uint8_t    *codes;			/* m * pq.nsubq */
	FastTextPQ	pq;
	uint8_t    *norm_codes;		/* m, when qnorm */
	FastTextPQ	npq;			/* 1-dimensional norm quantizer, when qnorm */
	/* int8 form (a pg_triage extension of the format): row i is scales[i] * q8[i] */
	bool		int8;
	int8_t	   *q8;				/* m * n */
	float	   *scales;			/* m */

	/*
	 * The quantized (PQ or int8) rows decoded to floats, m * n, or NULL.
	 * Each value is the product the row addition would compute (alpha *
	 * c[k], scale * q), so adding a decoded row gives the same sum bit for
	 * bit.  Built by FastTextDecodeRows for the input matrix when it fits in
	 * the bounds below; otherwise rows are decoded as they are added.
	 */
	float	   *decoded;
};

struct FastTextEntry
{
	char	   *word;			/* NUL-terminated, points into the model's string pool */
	int32_t		length;			/* bytes, without the terminator */
	uint32_t	hash;			/* FastTextHash(word) */
	int64_t		count;
	int8_t		type;			/* 0 word, 1 label */
};

/* A node of the hierarchical-softmax Huffman tree */
struct FastTextNode
{
	int32_t		parent;
	int32_t		left;
	int32_t		right;
	int64_t		count;
	bool		binary;
};

struct FastTextPruneEntry
{
	int32_t		bucket;			/* n-gram bucket index before pruning */
	int32_t		row;			/* row after pruning, relative to nwords */
};

struct FastTextModel
{
	int32_t		version;
	FastTextArgs args;

	/* dictionary */
	int32_t		size;			/* nwords + nlabels */
	int32_t		nwords;
	int32_t		nlabels;
	int64_t		ntokens;
	int64_t		pruneidx_size;	/* -1 when not pruned */
	FastTextEntry *entries;
	char	   *strings;		/* pool holding every entry's word */
	FastTextPruneEntry *pruneidx;	/* sorted by bucket */
	/* pruned models: input row of each n-gram bucket (-1: dropped), or NULL */
	int32_t    *bucket_rows;
	int32_t    *word2int;		/* open addressing, -1 = empty */
	int64_t		word2int_size;
	int32_t		eos_id;			/* id of "</s>", or -1 */

	/* precomputed [wid, subword rows...] of each word, as fastText's initNgrams */
	int64_t    *subword_offsets;	/* size + 1 offsets into subwords, or NULL */
	int32_t    *subwords;

	bool		quant_input;	/* input is product-quantized */
	bool		int8_input;		/* input is int8 with per-row scales */
	bool		qout;
	FastTextMatrix input;
	FastTextMatrix output;

	FastTextNode *tree;			/* hs only: 2 * nlabels - 1 nodes */
	float		temperature;	/* logits are divided by it; 1 reproduces fastText */
	float		sigmoid_table[513];	/* ova and ns */

	TriageAllocator allocator;
};

/* fastText's table sigmoid (Loss::sigmoid), used by ova and ns */
static inline float
FastTextSigmoid(const FastTextModel *model, float x)
{
	if (x < -8.0f)
		return 0.0f;
	if (x > 8.0f)
		return 1.0f;
	return model->sigmoid_table[(int64_t) ((x + 8.0f) * 512.0f / 8.0f / 2.0f)];
}

extern TriageStatus FastTextIndexDictionary(FastTextModel *model, size_t budget_bytes,
											char *errbuf, size_t errlen);
extern void FastTextInitSigmoidTable(FastTextModel *model);
extern TriageStatus FastTextTokenize(const FastTextModel *model, FastTextScratch *scratch,
									 const char *text, size_t len, char *errbuf, size_t errlen);
extern TriageStatus FastTextAddSubwords(const FastTextModel *model, FastTextScratch *scratch,
										const char *token, size_t len, int32_t wid,
										char *errbuf, size_t errlen);
extern int64_t FastTextCountSubwords(const FastTextModel *model, const char *word, size_t len);
extern bool FastTextDecodeRows(FastTextMatrix *matrix, size_t limit_bytes,
							   const TriageAllocator *allocator);
extern TriageStatus FastTextBuildTree(FastTextModel *model, char *errbuf, size_t errlen);


#endif
