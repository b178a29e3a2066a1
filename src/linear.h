/*
 * linear.h
 *		The linear classifier kind: multinomial logistic regression on hashed
 *		word (and optionally character) n-grams of normalized text, with
 *		sublinear TF-IDF and L2-normalized rows, trained with L-BFGS (OWL-QN
 *		with an L1 term), the regularization chosen by stratified
 *		cross-validation, weights stored as int8 with a scale per feature.
 *
 * The model is read-only once loaded and may be shared; everything a
 * prediction writes is in the caller's LinearScratch.
 */
#ifndef TRIAGE_LINEAR_H
#define TRIAGE_LINEAR_H

#include "text_normalize.h"
#include "triage_core.h"

#define LINEAR_MAGIC "PGTLIN01"
#define LINEAR_MAX_NGRAM 5
#define LINEAR_MAX_CHAR_NGRAM 8
#define LINEAR_MIN_BUCKETS 1024
#define LINEAR_MAX_BUCKETS (1 << 26)
#define LINEAR_MAX_LABELS 10000
#define LINEAR_MAX_LABEL_BYTES 1024

typedef struct LinearModel LinearModel;

/* Per-call state of LinearPredict and LinearLogits: one per backend or thread */
typedef struct LinearScratch
{
	int64_t		features;		/* features of the last input found in the model: 0 means no evidence */
	bool		truncated;		/* the last input had more than max_tokens tokens */
	int64_t		max_tokens;		/* set by caller: read at most this many tokens, 0 = no limit */
	TriageAllocator allocator;

	/* reused buffers, grown as needed */
	char	   *text;			/* the normalized text */
	size_t		text_cap;
	uint32_t   *tokens;			/* hash of each token */
	size_t		tokens_cap;
	uint32_t   *ids;			/* hashed buckets, then model rows */
	size_t		ids_cap;
	float	   *values;			/* per distinct row: its feature value */
	size_t		values_cap;
	double	   *scores;			/* per label */
	size_t		scores_cap;
} LinearScratch;

typedef struct LinearOptions
{
	TextNormalizeOptions normalize; /* default TextNormalizeDefaults */
	int32_t		ngram_min;		/* word n-grams ngram_min..ngram_max: 1, 3 */
	int32_t		ngram_max;
	int32_t		char_min;		/* character n-grams inside words: 0, 0 = off */
	int32_t		char_max;
	int32_t		buckets;		/* hash space: 1 << 20; 1024 .. 1 << 26 */
	int32_t		min_df;			/* features in fewer documents are dropped: 2 */
	bool		sublinear_tf;	/* 1 + log tf rather than tf: true */
	bool		nb;				/* NB log-count-ratio feature scaling (two labels): false */
	double		c;				/* inverse regularization; 0: chosen by cross-validation */
	double		l1;				/* L1 weight (OWL-QN); 0: L2 only */
	int32_t		folds;			/* cross-validation folds: 5 */
	int32_t		max_iterations; /* of L-BFGS: 200 */
	bool		quantize;		/* int8 weights with a float scale per feature: true */
	uint64_t	seed;			/* fold assignment */

	/*
	 * Called between optimizer runs (never inside liblbfgs, so it may
	 * longjmp) with the share of work done and the last run's loss; it
	 * returns false to stop training, which then fails.
	 */
	bool		(*progress) (void *arg, double done, double loss);
	void	   *progress_arg;
} LinearOptions;

typedef struct LinearExample
{
	const char *text;
	size_t		len;
	int32_t		label;			/* index into the labels passed to LinearTrain */
} LinearExample;

typedef struct LinearTrainStats
{
	int64_t		examples_used;	/* examples with at least one kept feature */
	int32_t		features;		/* kept buckets */
	double		c;				/* the C used: given or chosen */
	double		cv_log_loss;	/* mean held-out log loss of that C (0 when C was given) */
	double		train_loss;		/* mean log loss on the training rows, float weights */
	int32_t		iterations;		/* of the final fit */
	double		quantization_max_prob_diff; /* max |p_float - p_int8| on the training rows */
} LinearTrainStats;

extern void LinearDefaults(LinearOptions *o);
extern TriageStatus LinearCheckOptions(const LinearOptions *o, char *errbuf, size_t errlen);

extern TriageStatus LinearTrain(const LinearOptions *o, const char *const *labels, int32_t nlabels,
								const LinearExample *examples, int64_t n,
								const TriageAllocator *allocator, LinearModel **model,
								LinearTrainStats *stats, char *errbuf, size_t errlen);

extern TriageStatus LinearLoad(const uint8_t *data, size_t len, const TriageAllocator *allocator,
							   LinearModel **model, char *errbuf, size_t errlen);
extern TriageStatus LinearSave(const LinearModel *m, const TriageAllocator *allocator,
							   uint8_t **data, size_t *len, char *errbuf, size_t errlen);
extern void LinearFree(LinearModel *m);

/* The checksum that ends a saved model: of every byte before it */
extern uint64_t LinearChecksum(const uint8_t *bytes, size_t len);

extern int32_t LinearLabelCount(const LinearModel *m);
extern const char *LinearLabelName(const LinearModel *m, int32_t label, size_t *len);
extern int32_t LinearFindLabel(const LinearModel *m, const char *name, size_t len);
extern void LinearGetOptions(const LinearModel *m, LinearOptions *o);
/* kept buckets (rows of weights) */
extern int32_t LinearFeatureCount(const LinearModel *m);
/* Divides the logits before softmax; t > 0 and finite, else ignored.  Default 1 */
extern void LinearSetTemperature(LinearModel *m, float t);
extern float LinearGetTemperature(const LinearModel *m);

extern void LinearScratchInit(LinearScratch *s, const TriageAllocator *a);
extern void LinearScratchFree(LinearScratch *s);
/* Frees the buffers larger than keep_bytes; returns the bytes freed */
extern size_t LinearScratchTrim(LinearScratch *s, size_t keep_bytes);

/*
 * The k most probable labels (k = -1: all) with probability >= threshold,
 * best first, into out (room for every label); *n their count.  No known
 * feature: *n = 0 and s->features = 0.
 */
extern TriageStatus LinearPredict(const LinearModel *m, LinearScratch *s, const char *text, size_t len,
								  int32_t k, float threshold, TriagePrediction *out, int32_t *n,
								  char *errbuf, size_t errlen);

/* Raw per-label logits (before temperature), for temperature fitting; logits has room for every label */
extern TriageStatus LinearLogits(const LinearModel *m, LinearScratch *s, const char *text, size_t len,
								 float *logits, char *errbuf, size_t errlen);

#endif
