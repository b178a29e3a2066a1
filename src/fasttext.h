/*
 * fasttext.h
 *		Core (server-independent) fastText supervised model: loading of
 *		.bin/.ftz files and prediction, bit-compatible with the fasttext tool.
 *
 * This header and the files that implement it (fasttext_*.c) include no
 * PostgreSQL header: they allocate through a TriageAllocator, report errors
 * as a TriageStatus plus a message, and can be linked into the fuzz
 * harnesses, the benchmarks and the worker.
 *
 * A loaded FastTextModel is read-only; everything that changes during one
 * prediction lives in a FastTextScratch, so one model can serve many callers.
 */
#ifndef TRIAGE_FASTTEXT_H
#define TRIAGE_FASTTEXT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "triage_core.h"

#define FASTTEXT_MAGIC 793712314
#define FASTTEXT_VERSION 12
#define FASTTEXT_LABEL_PREFIX "__label__"
#define FASTTEXT_EOS "</s>"

/*
 * The byte after the dictionary: 0 dense input, 1 product-quantized (both
 * fastText's), 2 int8 rows with a float scale each (pg_triage only; such a
 * file is exported to fastText dequantized).
 */
#define FASTTEXT_INPUT_DENSE 0
#define FASTTEXT_INPUT_PQ 1
#define FASTTEXT_INPUT_INT8 2

typedef enum FastTextLoss
{
	FASTTEXT_LOSS_HS = 1,
	FASTTEXT_LOSS_NS = 2,
	FASTTEXT_LOSS_SOFTMAX = 3,
	FASTTEXT_LOSS_OVA = 4
} FastTextLoss;

typedef enum FastTextModelName
{
	FASTTEXT_MODEL_CBOW = 1,
	FASTTEXT_MODEL_SKIPGRAM = 2,
	FASTTEXT_MODEL_SUPERVISED = 3
} FastTextModelName;

/* The 56-byte Args block of a model file */
typedef struct FastTextArgs
{
	int32_t		dim;
	int32_t		ws;
	int32_t		epoch;
	int32_t		minCount;
	int32_t		neg;
	int32_t		wordNgrams;
	int32_t		loss;
	int32_t		model;
	int32_t		bucket;
	int32_t		minn;
	int32_t		maxn;
	int32_t		lrUpdateRate;
	double		t;
} FastTextArgs;

/* Opaque outside the fastText core (fasttext_internal.h) */
typedef struct FastTextPQ FastTextPQ;
typedef struct FastTextMatrix FastTextMatrix;
typedef struct FastTextEntry FastTextEntry;
typedef struct FastTextNode FastTextNode;
typedef struct FastTextPruneEntry FastTextPruneEntry;
typedef struct FastTextModel FastTextModel;

/*
 * Bounds on what loading derives from a model file to predict faster (the
 * structures are optional: without them prediction gives the same results,
 * more slowly), so that a small or hostile file cannot make it allocate much:
 *
 * - the bucket map of a pruned model (bucket_rows, an int32 per bucket,
 *   replacing a binary search of the prune index per n-gram) is built when
 *   it takes at most 4 times the file's size plus FASTTEXT_BUCKET_MAP_SLACK,
 *   so fastText's default 2M buckets (8 MB) always qualify;
 * - the decoded input rows (FastTextMatrix.decoded, 4 bytes per value) are
 *   built when they take at most FASTTEXT_DECODE_FILE_RATIO times the file's
 *   size and at most FASTTEXT_DECODE_MAX_BYTES: a product-quantized .ftz
 *   with fastText's default -dsub 2 decodes to about 8 times its size.
 */
#define FASTTEXT_BUCKET_MAP_SLACK ((size_t) 8 << 20)
#define FASTTEXT_DECODE_FILE_RATIO 16
#define FASTTEXT_DECODE_MAX_BYTES ((size_t) 128 << 20)

/*
 * With a token limit (FastTextScratch.max_tokens), the input rows read for
 * one input stay within this many per token allowed: a word row, its
 * character n-grams (up to maxn per character, and a hostile model may set
 * maxn to 64) and its word n-grams (wordNgrams - 1).  Natural text with
 * fastText's usual maxn of 6 or less averages well under this.
 */
#define FASTTEXT_ROWS_PER_TOKEN 64

/*
 * Per-call working memory; grows as needed and may be reused across calls
 * (FastTextScratchTrim gives back what an oversized input made it grow to).
 */
typedef struct FastTextScratch
{
	int32_t    *rows;
	int64_t		nrows;
	int64_t		text_rows;		/* rows from the text's own tokens, before its "</s>" */
	int64_t		rows_capacity;
	int32_t    *hashes;
	int64_t		nhashes;
	int64_t		hashes_capacity;
	float	   *hidden;
	float	   *output;
	int32_t		dim_capacity;
	int32_t		output_capacity;
	struct FastTextScored *heap;
	int64_t		heap_capacity;
	char	   *word;			/* a token wrapped in "<" and ">" */
	size_t		word_capacity;
	TriageAllocator allocator;

	/*
	 * Set by the caller: read at most max_tokens tokens of an input (0: no
	 * limit), and at most FASTTEXT_ROWS_PER_TOKEN * (max_tokens + 1) input
	 * rows (the tokens and the line's "</s>");
	 * the rest of the input is ignored, as if the line ended there.
	 */
	int64_t		max_tokens;
	bool		truncated;		/* set when the last input was cut short */
} FastTextScratch;

typedef struct FastTextScored
{
	float		score;			/* log(p + 1e-5), as fastText keeps it */
	int32_t		label;			/* label index, 0 .. nlabels - 1 */
} FastTextScored;

/* fastText's score is log(p + 1e-5), as fastText keeps it */
typedef TriagePrediction FastTextPrediction;

/* fastText's white space: the bytes that end a token */
static inline bool
FastTextIsSpace(char c)
{
	return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f' || c == '\0';
}

/*
 * The next token of text[0..len) from *pos: sets *start and *end and
 * advances *pos; false when only white space is left.
 */
static inline bool
FastTextNextToken(const char *text, size_t len, size_t *pos, size_t *start, size_t *end)
{
	size_t		i = *pos;

	while (i < len && FastTextIsSpace(text[i]))
		i++;
	if (i >= len)
	{
		*pos = i;
		return false;
	}
	*start = i;
	while (i < len && !FastTextIsSpace(text[i]))
		i++;
	*end = *pos = i;
	return true;
}

static inline bool
FastTextIsLabelToken(const char *token, size_t len)
{
	return len >= sizeof(FASTTEXT_LABEL_PREFIX) - 1 &&
		memcmp(token, FASTTEXT_LABEL_PREFIX, sizeof(FASTTEXT_LABEL_PREFIX) - 1) == 0;
}

extern uint32_t FastTextHash(const char *str, size_t len);

extern TriageStatus FastTextLoad(const uint8_t *data, size_t len,
								 const TriageAllocator *allocator,
								 FastTextModel **model, char *errbuf, size_t errlen);
extern TriageStatus FastTextLoadInPlace(const uint8_t *data, size_t len,
										const TriageAllocator *allocator,
										FastTextModel **model, char *errbuf, size_t errlen);
extern void FastTextFree(FastTextModel *model);
extern const char *FastTextLabel(const FastTextModel *model, int32_t label, size_t *len);
extern const char *FastTextLabelName(const FastTextModel *model, int32_t label, size_t *len);
extern int32_t FastTextFindLabel(const FastTextModel *model, const char *name, size_t len);
extern int32_t FastTextFindWord(const FastTextModel *model, const char *word, size_t len, uint32_t hash);

extern void FastTextScratchInit(FastTextScratch *scratch, const TriageAllocator *allocator);
extern void FastTextScratchFree(FastTextScratch *scratch);
extern size_t FastTextScratchTrim(const FastTextModel *model, FastTextScratch *scratch,
								  size_t keep_bytes);

extern TriageStatus FastTextPredict(const FastTextModel *model, FastTextScratch *scratch,
									const char *text, size_t len, int32_t k, float threshold,
									FastTextPrediction *predictions, int32_t *npredictions,
									char *errbuf, size_t errlen);

extern TriageStatus FastTextHidden(const FastTextModel *model, FastTextScratch *scratch,
								   const char *text, size_t len, char *errbuf, size_t errlen);
extern TriageStatus FastTextPredictFromScores(const FastTextModel *model, FastTextScratch *scratch,
											  const float *scores, int32_t k, float threshold,
											  FastTextPrediction *predictions, int32_t *npredictions,
											  char *errbuf, size_t errlen);
extern TriageStatus FastTextLogits(const FastTextModel *model, FastTextScratch *scratch,
								   const char *text, size_t len, float *logits, bool *found,
								   char *errbuf, size_t errlen);

/* Internal to the fasttext_*.c files */
/* What the glue reads of a model */
extern const FastTextArgs *FastTextModelArgs(const FastTextModel *model);
extern int32_t FastTextFileVersion(const FastTextModel *model);
extern int32_t FastTextLabelCount(const FastTextModel *model);
extern int32_t FastTextWordCount(const FastTextModel *model);
extern int32_t FastTextInputForm(const FastTextModel *model);	/* FASTTEXT_INPUT_* */
extern bool FastTextOutputQuantized(const FastTextModel *model);
extern bool FastTextIsPruned(const FastTextModel *model);
extern int64_t FastTextInputRows(const FastTextModel *model);
/* A dense input matrix: where its floats start in the file, and their size (else -1, 0) */
extern int64_t FastTextDenseInputOffset(const FastTextModel *model);
extern int64_t FastTextDenseInputBytes(const FastTextModel *model);
/* Divides the logits (t > 0); 1 reproduces fastText */
extern void FastTextSetTemperature(FastTextModel *model, float temperature);

#endif
