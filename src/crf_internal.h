/*
 * crf_internal.h
 *		What the crf_*.c files share and callers of crf.h do not need: the
 *		model struct, per-token feature inputs, hashing, lookup tables.
 */
#ifndef TRIAGE_CRF_INTERNAL_H
#define TRIAGE_CRF_INTERNAL_H

#include <stdbool.h>
#include <string.h>

#include "crf.h"

#define CRF_MAGIC 0x46524354u	/* "TCRF" little-endian */
#define CRF_FORMAT_VERSION 1

/* At most this many features come out of CrfTokenFeatures for one token */
#define CRF_MAX_TOKEN_FEATURES 128
/* At most this many lexicon features per position, however many fields match */
#define CRF_MAX_LEX_PER_TOKEN 8

typedef enum CrfCharClass
{
	CRF_CHAR_SPACE,
	CRF_CHAR_ALNUM,
	CRF_CHAR_PUNCT
} CrfCharClass;

extern CrfCharClass CrfCharAt(const char *text, size_t len, size_t i, int *nbytes);

/* Token flags */
#define CRF_TF_DIGIT	0x01		/* has a digit */
#define CRF_TF_ALLDIGIT	0x02		/* digits only */
#define CRF_TF_ALPHA	0x04		/* has an ASCII letter */
#define CRF_TF_INITCAP	0x08		/* starts with an ASCII upper-case letter */
#define CRF_TF_ALLCAP	0x10		/* letters, all upper case */
#define CRF_TF_INNERP	0x20		/* has punctuation inside */
#define CRF_TF_PUNCT	0x40		/* a single punctuation character */
#define CRF_TF_NONASCII	0x80		/* has a non-ASCII byte */
#define CRF_TF_LOWER	0x100		/* has a lower-case ASCII letter */

/* What CrfPrepareTokens computes once per token, for every feature of it and its neighbours */
typedef struct CrfTokenInfo
{
	uint64_t	word;			/* hash of the lowercased token */
	uint64_t	shape;			/* hash of the shape ("X-ddddd") */
	uint64_t	cshape;			/* hash of the collapsed shape ("X-d") */
	uint64_t	lex;			/* fields whose training values held this word */
	uint32_t	flags;			/* CRF_TF_* */
	int32_t		key_first;		/* key words before ':' on this line, or -1 */
	int32_t		key_last;
	uint16_t	line_pos;		/* index in its line, capped at 7 */
	uint8_t		line_no;		/* line index, capped at 3 */
	uint8_t		last_in_line;
	uint8_t		run_len;		/* length of its run of capitalised words, 0..4 */
	uint8_t		run_pos;		/* 0 single, 1 first, 2 inside, 3 last */
	uint8_t		len_bucket;
	uint8_t		after_colon;
} CrfTokenInfo;

/* Open-addressing slot: the key's high 32 bits and the row it maps to */
typedef struct CrfSlot
{
	uint32_t	check;
	uint32_t	row;			/* UINT32_MAX when empty */
} CrfSlot;

struct CrfModel
{
	TriageAllocator allocator;
	int32_t		nfields;
	int32_t		nlabels;
	char		names[CRF_MAX_FIELDS][CRF_MAX_FIELD_NAME + 1];
	uint32_t	features;		/* CRF_FEAT_* */
	int32_t		max_tokens;

	/* transitions: raw weights (saved), 0 where forbidden */
	float	   *trans;			/* nlabels * nlabels, [from * nlabels + to] */
	float	   *start;			/* nlabels */
	float	   *end;			/* nlabels */

	/*
	 * For decoding, rows padded to lpad (a multiple of 4) labels so the
	 * inner loops run on 4-float vectors: weights with -inf and their
	 * exponentials with 0 where a move is forbidden or a label is padding.
	 * One allocation, xblock.
	 */
	int32_t		lpad;
	float	   *xblock;
	float	   *vtrans;			/* nlabels * lpad, [from * lpad + to] */
	float	   *etrans;			/* nlabels * lpad, [from * lpad + to] */
	float	   *etrans_t;		/* nlabels * lpad, [to * lpad + from] */
	float	   *vstart;			/* lpad each */
	float	   *vend;
	float	   *estart;
	float	   *eend;
	float	   *padding;		/* lpad: 0 for a label, -inf for padding */
	int32_t		bpad;			/* nfields + 1 padded to a multiple of 4 */
	float	   *vtrans_b;		/* nlabels * bpad: the columns of O and each B-f */
	float	   *etrans_b;		/* of vtrans and etrans, [from * bpad + (0 or f + 1)] */
	float		vbeam;			/* max - min of the allowed moves into O and B-f */

	/* state weights: feature i has labels[offsets[i] .. offsets[i + 1]) */
	int64_t		nfeatures;
	int64_t		npairs;
	uint64_t   *keys;
	uint32_t   *offsets;
	uint8_t    *labels;
	int8_t	   *weights;		/* weight = scales[i] * weights[k] */
	float	   *scales;

	/*
	 * Lookup for decoding: slots map a key to the byte offset of its record
	 * in blob, either sparse, "u8 n, f32 scale, n times (u8 label, i8
	 * weight)", or for a feature with many labels dense, "u8 0, lpad
	 * floats"; one feature costs two cache misses, not five.
	 */
	CrfSlot    *slots;
	uint64_t	slot_mask;
	uint8_t    *blob;
	uint64_t	id;				/* unique in the process, for workspaces' caches */

	/* value lexicon: word hash -> field mask */
	int64_t		nlex;
	uint64_t   *lex_keys;
	uint64_t   *lex_masks;
	CrfSlot    *lex_slots;
	uint64_t	lex_slot_mask;
};

/*
 * Combine a feature kind with a value hash: one multiply, then the high
 * half folded into the low bits, which index the lookup tables.
 */
static inline uint64_t
CrfMix(uint64_t kind, uint64_t value)
{
	uint64_t	h = (value ^ (kind * 0xD6E8FEB86659FD93ULL)) * 0x9E3779B97F4A7C15ULL;

	return h ^ (h >> 29) ^ (h >> 47);
}

extern uint64_t CrfHashBytes(const char *s, size_t len);
extern uint64_t CrfHashLower(const char *s, size_t len);

/* Row of key in a table built by CrfTableBuild, or UINT32_MAX */
static inline uint32_t
CrfTableFind(const CrfSlot *slots, uint64_t mask, uint64_t key)
{
	uint64_t	i = key & mask;
	uint32_t	check = (uint32_t) (key >> 32);

	for (;;)
	{
		const CrfSlot *s = &slots[i];

		if (s->row == UINT32_MAX)
			return UINT32_MAX;
		if (s->check == check)
			return s->row;
		i = (i + 1) & mask;
	}
}

/*
 * Build a table of keys[0..n) (n < UINT32_MAX) at load factor <= 0.6.
 * Returns TRIAGE_INVALID_MODEL on a duplicate key, TRIAGE_OUT_OF_MEMORY.
 */
extern TriageStatus CrfTableBuild(const uint64_t *keys, int64_t n, const TriageAllocator *allocator,
								  CrfSlot **slots, uint64_t *mask);

/* Build slots and blob from keys, offsets, labels, weights and scales */
extern TriageStatus CrfIndexModel(CrfModel *model);

/* Fill info[0..n) for the tokens of text; lex is left 0 */
extern void CrfPrepareTokens(const char *text, const CrfToken *tokens, int32_t n,
							 CrfTokenInfo *info);

/* Set info[t].lex from the model's lexicon */
extern void CrfApplyLexicon(const CrfModel *model, CrfTokenInfo *info, int32_t n);

/*
 * Feature hashes of token t into out[0..CRF_MAX_TOKEN_FEATURES): returns
 * how many.  The first *nfixed describe the token itself and its
 * neighbours' shapes; the rest are context words (what dropout may drop).
 * They are CrfOwnFeatures followed by CrfContextFeatures.
 */
extern int	CrfTokenFeatures(uint32_t groups, const char *text, const CrfToken *tokens,
							 const CrfTokenInfo *info, int32_t n, int32_t t, uint64_t *out,
							 int *nfixed);

/*
 * The features of the token alone (its word, shapes, affixes, flags,
 * character n-grams): a function of what CrfOwnKey hashes, so decoding can
 * cache their summed weights per distinct token.
 */
extern int	CrfOwnFeatures(uint32_t groups, const char *text, const CrfToken *token,
						   const CrfTokenInfo *in, uint64_t *out);
extern uint64_t CrfOwnKey(const CrfTokenInfo *in);

/*
 * The features of token t that depend on its neighbours or the lexicon;
 * the first *nfixed are not context words.  Without neighbours_in_text, the
 * CrfNeighbourFeatures of neighbours inside the text are left out (the
 * decoder caches those per distinct token); those of the text's ends stay.
 */
extern int	CrfContextFeatures(uint32_t groups, const CrfTokenInfo *info, int32_t n, int32_t t,
							   bool neighbours_in_text, uint64_t *out, int *nfixed);

/*
 * The features a token gets from its neighbour at offset d (-2..2, not 0),
 * nb, or NULL past an end of the text: shapes (the first *nfixed), then
 * the word.  A function of what CrfOwnKey hashes of the neighbour.
 */
extern int	CrfNeighbourFeatures(uint32_t groups, const CrfTokenInfo *nb, int d, uint64_t *out,
								 int *nfixed);

/* Fill the padded decoding transitions (xblock) from trans, start and end */
extern bool CrfPrepareTransitions(CrfModel *model);

/* Whether the move from -> to is allowed (from = -1: the start of the text) */
static inline bool
CrfAllowed(int32_t from, int32_t to)
{
	if (to == 0 || (to & 1))
		return true;			/* O or B-f */
	return from == to || from == to - 1;	/* I-f after B-f or I-f */
}

extern CrfModel *CrfModelAlloc(const TriageAllocator *allocator);

#endif
