/*
 * fasttext_train.h
 *		Supervised training of fastText-style classifiers in the core.
 */
#ifndef TRIAGE_FASTTEXT_TRAIN_H
#define TRIAGE_FASTTEXT_TRAIN_H

#include "fasttext.h"

/* the "thread" option's range */
#define FASTTEXT_MAX_THREADS 64

/* with several threads: how often, at most, they pause for the progress callback */
#define FASTTEXT_PROGRESS_MS 100

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
	 * Hogwild threads of FastTextTrain (FastTextRetrain runs in one).  1 is
	 * reproducible for a seed; more are not, as in fastText.
	 */
	int32_t		thread;

	/*
	 * Called about every progress_every examples with the share of work done
	 * and the running average loss.  In the server it checks for interrupts
	 * (and may not return); it returns false to stop training early.  It is
	 * only ever called from the calling thread, while no training thread
	 * runs; with several threads, at most every FASTTEXT_PROGRESS_MS.
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
extern int32_t FastTextDefaultThreads(void);

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
