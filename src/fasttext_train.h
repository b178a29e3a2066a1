/*
 * fasttext_train.h
 *		Supervised training of fastText-style classifiers in the core.
 */
#ifndef TRIAGE_FASTTEXT_TRAIN_H
#define TRIAGE_FASTTEXT_TRAIN_H

#include "fasttext.h"

typedef struct FastTextTrainOptions
{
	double		lr;
	int32_t		dim;
	int32_t		epoch;
	int32_t		wordNgrams;
	int32_t		minn;
	int32_t		maxn;
	int32_t		bucket;
	int32_t		minCount;
	int32_t		neg;
	int32_t		loss;			/* FastTextLoss */
	int32_t		lrUpdateRate;
	uint64_t	seed;

	/*
	 * Called about every progress_every examples with the share of work done
	 * and the running average loss.  In the server it checks for interrupts
	 * (and may not return); it returns false to stop training early.
	 */
	bool		(*progress) (void *arg, double done, double loss, int64_t examples);
	void	   *progress_arg;
	int64_t		progress_every;
} FastTextTrainOptions;

/* One labeled example: text, and an index into the caller's label list */
typedef struct FastTextExample
{
	const char *text;
	size_t		len;
	int32_t		label;
} FastTextExample;

typedef struct FastTextTrainStats
{
	int64_t		examples_used;	/* examples with at least one input row */
	int64_t		updates;		/* SGD steps taken */
	double		loss;			/* average loss of the last epoch */
	int32_t		nwords;
} FastTextTrainStats;

extern void FastTextTrainDefaults(FastTextTrainOptions *options);

extern TriageStatus FastTextTrain(const FastTextTrainOptions *options,
								  const char *const *labels, int32_t nlabels,
								  const FastTextExample *examples, int64_t nexamples,
								  const TriageAllocator *allocator,
								  FastTextModel **model, FastTextTrainStats *stats,
								  char *errbuf, size_t errlen);

extern TriageStatus FastTextRetrain(FastTextModel *model, const FastTextTrainOptions *options,
									const char *const *labels, int32_t nlabels,
									const FastTextExample *examples, int64_t nexamples,
									FastTextTrainStats *stats, char *errbuf, size_t errlen);

#endif
