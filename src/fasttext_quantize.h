/*
 * fasttext_quantize.h
 *		fastText's model compression in the core: product quantization of a
 *		matrix, row selection and dictionary pruning (-cutoff), and writing a
 *		model back out in fastText's .bin/.ftz format.
 *
 * Together these do what `fasttext quantize` does, without -retrain: a
 * model quantized here and saved with FastTextSave is an .ftz file that the
 * fasttext tool and FastTextLoad both read.  The k-means follows fastText's
 * ProductQuantizer step by step but draws from its own seeded generator, so
 * the centroids are not bit-identical to the tool's; they are reproducible
 * for a given seed.  See shared/docs/fasttext-format.md, sections 1.5-1.8
 * and 5.
 *
 * Dictionary pruning ends by rebuilding the word table and the per-word
 * subword lists through FastTextIndexDictionary (fasttext_load.c, declared
 * in fasttext.h).
 */
#ifndef TRIAGE_FASTTEXT_QUANTIZE_H
#define TRIAGE_FASTTEXT_QUANTIZE_H

#include "fasttext.h"

/* fastText's ProductQuantizer constants (productquantizer.h) */
#define FASTTEXT_PQ_KSUB 256		/* centroids per sub-quantizer: one byte codes */
#define FASTTEXT_PQ_MAX_POINTS 65536	/* k-means sample per sub-quantizer */
#define FASTTEXT_PQ_NITER 25
#define FASTTEXT_PQ_SEED 1234		/* fastText's seed_, our default seed */
#define FASTTEXT_QOUT_DSUB 2		/* -qout always uses dsub 2 */

/* The options of `fasttext quantize` that do not involve retraining */
typedef struct FastTextQuantizeOptions
{
	int32_t		dsub;			/* -dsub: sub-vector size of the input PQ */
	bool		qnorm;			/* -qnorm: quantize row norms separately */
	bool		qout;			/* -qout: quantize the output matrix too */
	int64_t		cutoff;			/* -cutoff: keep this many input rows; 0 = all */
	uint32_t	seed;
} FastTextQuantizeOptions;

extern void FastTextQuantizeDefaults(FastTextQuantizeOptions *options);

/* fasttext_quantize.c: product quantization */
extern TriageStatus FastTextPQTrain(FastTextPQ *pq, const float *x, int64_t n,
									int32_t dim, int32_t dsub, uint32_t seed,
									const TriageAllocator *alloc,
									char *errbuf, size_t errlen);
extern TriageStatus FastTextPQEncode(const FastTextPQ *pq, const float *x, int64_t n,
									 uint8_t *codes);
extern TriageStatus FastTextQuantizeMatrix(const FastTextMatrix *dense, int32_t dsub,
										   bool qnorm, uint32_t seed,
										   const TriageAllocator *alloc,
										   FastTextMatrix *out,
										   char *errbuf, size_t errlen);
extern void FastTextMatrixFree(FastTextMatrix *matrix, const TriageAllocator *alloc);

/* fasttext_quantize.c: -cutoff */
extern TriageStatus FastTextSelectRows(const FastTextModel *model, int64_t cutoff,
									   const TriageAllocator *alloc,
									   int32_t **keep, int64_t *nkeep,
									   char *errbuf, size_t errlen);
extern TriageStatus FastTextPrune(FastTextModel *model, const int32_t *keep, int64_t nkeep,
								  char *errbuf, size_t errlen);

/* fasttext_quantize.c: all of the above, as `fasttext quantize` */
extern TriageStatus FastTextQuantize(FastTextModel *model,
									 const FastTextQuantizeOptions *options,
									 char *errbuf, size_t errlen);

/* fasttext_quantize.c: int8 rows with a scale each (a pg_triage format extension) */
extern TriageStatus FastTextQuantizeInt8(FastTextModel *model, char *errbuf, size_t errlen);
extern TriageStatus FastTextDequantizeInt8(FastTextModel *model, char *errbuf, size_t errlen);

/* fasttext_save.c */
extern TriageStatus FastTextSave(const FastTextModel *model, const TriageAllocator *alloc,
								 uint8_t **out, size_t *outlen,
								 char *errbuf, size_t errlen);

#endif
