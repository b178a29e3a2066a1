/*
 * crf.h
 *		Core (server-independent) linear-chain CRF field extractor: tokenizer,
 *		hashed features, training with L-BFGS, Viterbi decoding with span
 *		confidences, and a versioned, validated binary model format.
 *
 * Like fasttext.h, nothing here includes a PostgreSQL header: memory comes
 * from a TriageAllocator and errors are a TriageStatus plus a message.
 *
 * Labels are BIO per field: label 0 is O, 1 + 2 * f is B-f and 2 + 2 * f is
 * I-f for field f in 0 .. nfields - 1.  Transitions into I-f from anything
 * but B-f or I-f are forbidden, in training and in decoding alike.
 *
 * All offsets are byte offsets into the caller's text; end is exclusive.
 * Input longer than CRF_MAX_TEXT bytes is read only up to that length, and
 * at most CRF_MAX_TOKENS tokens of any input are used (the rest of the text
 * is ignored), so one call is bounded in time and memory whatever the input.
 *
 * A CrfModel is read-only once built; per-call scratch lives in a
 * CrfWorkspace owned by the caller, so one model can serve many callers.
 */
#ifndef TRIAGE_CRF_H
#define TRIAGE_CRF_H

#include <stddef.h>
#include <stdint.h>

#include "triage_core.h"

#define CRF_MAX_FIELDS 64
#define CRF_MAX_FIELD_NAME 63	/* bytes, without the terminator */
#define CRF_MAX_LABELS (2 * CRF_MAX_FIELDS + 1)
#define CRF_MAX_TOKENS 4096
#define CRF_MAX_TEXT ((size_t) 0x7FFFFFFF)

#define CRF_LABEL_O 0
#define CRF_LABEL_B(f) (1 + 2 * (f))
#define CRF_LABEL_I(f) (2 + 2 * (f))

/* ---------------------------------------------------------------------
 * Tokenizer
 * --------------------------------------------------------------------- */

typedef struct CrfToken
{
	uint32_t	start;			/* byte offset of the first byte */
	uint32_t	end;			/* byte offset after the last byte */
} CrfToken;

/*
 * Split text[0..len) into at most max_tokens tokens (and never more than
 * CRF_MAX_TOKENS): runs of letters and digits, keeping a joiner
 * (- . , / @ _ : ' + & #) that sits between two letters or digits
 * ("A-10293", "1,299.00", "john.doe@example.com"); every other punctuation
 * character is a token of its own; white space separates.  Valid non-ASCII
 * UTF-8 counts as a letter except for common Unicode spaces and punctuation;
 * each invalid byte is a token of its own.  Never reads text[len] or beyond.
 * Returns the number of tokens written.  Calls TRIAGE_CHECK_INTERRUPTS()
 * every megabyte read, since one token or run of spaces can be the whole text.
 */
extern int32_t CrfTokenize(const char *text, size_t len, CrfToken *tokens, int32_t max_tokens);

/* ---------------------------------------------------------------------
 * Model
 * --------------------------------------------------------------------- */

typedef struct CrfModel CrfModel;

/* Number of fields the model extracts */
extern int32_t CrfFieldCount(const CrfModel *model);

/* NUL-terminated name of field f (0 .. CrfFieldCount - 1), or NULL */
extern const char *CrfFieldName(const CrfModel *model, int32_t f);

/* Index of the field with this name, or -1 */
extern int32_t CrfFindField(const CrfModel *model, const char *name, size_t len);

/* Sizes for model cards: distinct features kept, (feature, label) weights, lexicon entries */
extern void CrfModelStats(const CrfModel *model, int64_t *features, int64_t *weights,
						  int64_t *lexicon);

/* Free a model from CrfTrain or CrfLoad (NULL is fine) */
extern void CrfFree(CrfModel *model);

/*
 * Serialize model into a new buffer from allocator (*bytes, *len); the caller
 * frees it with TriageFree(allocator, *bytes).
 */
extern TriageStatus CrfSave(const CrfModel *model, const TriageAllocator *allocator,
							uint8_t **bytes, size_t *len, char *errbuf, size_t errlen);

/*
 * Build a model from bytes[0..len) written by CrfSave.  The bytes are
 * untrusted: every count, size and value is checked against the buffer and
 * the format's limits before use, allocations never exceed a small multiple
 * of len, and a checksum over the whole file is verified last.  Returns
 * TRIAGE_INVALID_MODEL (malformed) or TRIAGE_UNSUPPORTED (unknown version)
 * with a message; *model is NULL then.
 */
extern TriageStatus CrfLoad(const uint8_t *bytes, size_t len, const TriageAllocator *allocator,
							CrfModel **model, char *errbuf, size_t errlen);

/* The checksum CrfSave stores in the last 8 bytes (for fuzz harnesses that repair it) */
extern uint64_t CrfChecksum(const uint8_t *bytes, size_t len);

/* ---------------------------------------------------------------------
 * Training
 * --------------------------------------------------------------------- */

typedef struct CrfTrainOptions
{
	int32_t		max_iterations;	/* L-BFGS iterations, 1 .. 10000 (150) */
	double		l2;				/* c2: objective is NLL + l2 * |w|^2, 0 .. 1e4 (0.05) */
	double		epsilon;		/* L-BFGS gradient-norm stop, 0 .. 1 (1e-5) */
	double		delta;			/* stop when the loss improves by less than this over 10 iterations (1e-5) */
	int32_t		min_feature_count;	/* drop features seen in fewer tokens, 1 .. 1000 (1) */
	int64_t		max_parameters; /* raise min_feature_count until the weights fit, 1000 .. 50M (2M) */
	uint64_t	seed;			/* folds and dropout; same seed and data give the same model (0) */
	double		context_dropout;	/* share of context words dropped per training token, 0 .. 0.9 (0.4) */
	int32_t		lexicon_folds;	/* 0 = no value lexicon; else out-of-fold lexicon over 2 .. 20 folds (5) */
	double		lexicon_min_ratio;	/* token must be inside field f at least this share of its occurrences, 0 .. 1 (0.3) */
	int32_t		max_tokens;		/* tokens used per text, 16 .. CRF_MAX_TOKENS (CRF_MAX_TOKENS) */
	uint32_t	features;		/* CRF_FEAT_* groups to use (CRF_FEAT_DEFAULT) */
} CrfTrainOptions;

/* Feature groups (stored in the model, so decoding computes the same ones) */
#define CRF_FEAT_WORD		0x0001	/* lowercased word */
#define CRF_FEAT_SHAPE		0x0002	/* shape and collapsed shape */
#define CRF_FEAT_AFFIX		0x0004	/* prefixes and suffixes of 1..3 bytes */
#define CRF_FEAT_FLAGS		0x0008	/* digit/upper/punctuation flags, length bucket */
#define CRF_FEAT_NGRAM		0x0010	/* character 3- and 4-grams of the token */
#define CRF_FEAT_CONTEXT	0x0020	/* words and shapes at -2..+2 */
#define CRF_FEAT_LEXICON	0x0040	/* token (and neighbours) seen inside field f's values */
#define CRF_FEAT_CAPRUN		0x0080	/* position in a run of capitalised words */
#define CRF_FEAT_LINE		0x0100	/* start of line, after ':', key words before ':' */
#define CRF_FEAT_BAG		0x0200	/* bag of words within 4 before and 2 after */
#define CRF_FEAT_ALL		0x03FF
/* bag and line measured no better on unseen phrasings (see crf_features.c) */
#define CRF_FEAT_DEFAULT	(CRF_FEAT_ALL & ~(CRF_FEAT_BAG | CRF_FEAT_LINE))

/*
 * One training text and its fields, as a person writes them: values carry
 * no offsets (CrfTrain finds them in the text).  field_names[i] and
 * values[i] are NUL-terminated; a NULL or empty value is skipped.
 */
typedef struct CrfExample
{
	const char *text;
	size_t		len;
	int32_t		nfields;
	const char *const *field_names;
	const char *const *values;
} CrfExample;

typedef struct CrfTrainReport
{
	int64_t		examples;
	int64_t		tokens;
	int64_t		truncated;		/* texts cut at max_tokens */
	int64_t		values;			/* non-empty values given */
	int64_t		aligned_exact;	/* found byte for byte on token boundaries */
	int64_t		aligned_fold;	/* found ignoring case and white space */
	int64_t		aligned_number; /* found as the same number (1,299.00 = 1299) */
	int64_t		unaligned;		/* not found: skipped, the rest of the row is used */
	int64_t		unaligned_by_field[CRF_MAX_FIELDS];
	int32_t		nfields;
	int64_t		features;		/* distinct features kept */
	int64_t		parameters;		/* L-BFGS variables */
	int32_t		min_feature_count;	/* the one used, after any raise for max_parameters */
	int32_t		iterations;
	int32_t		lbfgs_status;	/* liblbfgs return code, for diagnostics */
	double		loss;			/* final objective */
	bool		canceled;		/* stopped by TRIAGE_CANCEL_PENDING() */
} CrfTrainReport;

/* Fill options with the defaults shown above */
extern void CrfTrainDefaults(CrfTrainOptions *options);

/* Check options; on error the message names the option and its range */
extern TriageStatus CrfCheckOptions(const CrfTrainOptions *options, char *errbuf, size_t errlen);

/*
 * Train a model on examples[0..n).  Field names are collected from the
 * examples (sorted bytewise; 1 .. CRF_MAX_FIELDS names, each 1 ..
 * CRF_MAX_FIELD_NAME bytes), values are aligned to token spans (see
 * report), and the weights are fitted with L-BFGS.  report may be NULL.
 *
 * Cancellation: the L-BFGS callbacks poll TRIAGE_CANCEL_PENDING() and stop
 * liblbfgs cleanly; CrfTrain then frees everything, calls
 * TRIAGE_CHECK_INTERRUPTS() (which raises the cancel in the server) and,
 * if that returns, returns TRIAGE_INVALID_ARGUMENT with "training canceled"
 * and report->canceled set.  Outside liblbfgs it calls
 * TRIAGE_CHECK_INTERRUPTS() directly, which is safe because all its memory
 * comes from allocator.
 */
extern TriageStatus CrfTrain(const CrfTrainOptions *options, const CrfExample *examples,
							 int64_t n, const TriageAllocator *allocator, CrfModel **model,
							 CrfTrainReport *report, char *errbuf, size_t errlen);

/* ---------------------------------------------------------------------
 * Extraction
 * --------------------------------------------------------------------- */

typedef struct CrfResult
{
	int32_t		field;			/* 0 .. CrfFieldCount - 1 */
	uint32_t	start;			/* byte offset of the value in the text */
	uint32_t	end;			/* exclusive */
	float		confidence;		/* posterior probability of exactly this span, 0 .. 1 */
} CrfResult;

/*
 * Per-call scratch for CrfExtract.  It grows on first use to fit the
 * longest text seen (at most CRF_MAX_TOKENS tokens) and is reused after, so
 * steady-state extraction allocates nothing.  Not shareable between
 * concurrent callers; it may serve different models one after the other
 * (its token cache, 2 MB, is emptied when the model changes).
 */
typedef struct CrfWorkspace
{
	TriageAllocator allocator;
	int32_t		token_capacity;
	int32_t		label_capacity;	/* padded labels per row */
	struct CrfTokenInfo *info;
	CrfToken   *tokens;			/* CRF_MAX_TOKENS */
	float	   *scores;			/* token_capacity * label_capacity */
	float	   *potential;		/* exp(score - max) */
	float	   *alpha;			/* scaled forward */
	float	   *beta;			/* Viterbi scores, then the scaled backward */
	float	   *scale;			/* token_capacity */
	int16_t    *path;			/* token_capacity */

	/*
	 * Per distinct token (by CrfOwnKey), for the model numbered
	 * cache_model: the summed weights of its own features, then of the
	 * features it gives a neighbour at offsets -2, -1, 1 and 2, each
	 * cache_lpad floats.  Two-way set-associative, cache_slots entries
	 * (cache_recent: the way each set used last), key 0 when empty.  Words recur across messages, so most tokens cost a few
	 * vector additions instead of some forty weight lookups.
	 */
	uint64_t	cache_model;
	int32_t		cache_slots;
	int32_t		cache_lpad;
	uint64_t   *cache_keys;
	float	   *cache_sums;
	uint8_t    *cache_recent;

	/* set by the caller: use at most this many tokens, if fewer than the model's (0: the model's) */
	int32_t		max_tokens;
} CrfWorkspace;

/* Set up an empty workspace that allocates from allocator (NULL: malloc) */
extern void CrfWorkspaceInit(CrfWorkspace *workspace, const TriageAllocator *allocator);

/* Free a workspace's memory; it can be initialised again afterwards */
extern void CrfWorkspaceFree(CrfWorkspace *workspace);

/*
 * Give back the per-token arrays when a long text made them larger than
 * keep_bytes in all; the token cache (a fixed size) and the token buffer
 * stay.  Returns the bytes given back.
 */
extern size_t CrfWorkspaceTrim(CrfWorkspace *workspace, size_t keep_bytes);

/*
 * Extract fields from text[0..len): the Viterbi labeling, then for each
 * field its most confident span.  results must hold CrfFieldCount(model)
 * entries; *nresults gets how many were filled, in text order.  Empty or
 * punctuation-only text gives no results.
 */
extern TriageStatus CrfExtract(const CrfModel *model, CrfWorkspace *workspace,
							   const char *text, size_t len, CrfResult *results,
							   int32_t *nresults, char *errbuf, size_t errlen);

/* ---------------------------------------------------------------------
 * Alignment (exposed for tests and tools)
 * --------------------------------------------------------------------- */

typedef enum CrfAlignKind
{
	CRF_ALIGN_NONE = 0,
	CRF_ALIGN_EXACT,
	CRF_ALIGN_FOLD,
	CRF_ALIGN_NUMBER
} CrfAlignKind;

/*
 * Find value[0..vlen) in the tokens of text: byte for byte on token
 * boundaries, else ignoring ASCII case and white space, else as the same
 * number.  Writes up to max_spans non-overlapping token spans
 * [first, last] (inclusive) of the best kind found, in text order.
 */
extern CrfAlignKind CrfAlignValue(const char *text, const CrfToken *tokens, int32_t ntokens,
								  const char *value, size_t vlen, int32_t *first,
								  int32_t *last, int32_t max_spans, int32_t *nspans);

#endif
