/*
 * classifier.h
 *		The interface every classifier kind implements, so that the model
 *		store, classify, predict, evaluate, calibrate, route, distill and
 *		training need no code of their own per kind.
 *
 * A kind is one table of functions (like pgvector's HnswTypeInfo), named by
 * triage.models.kind.  A loaded version of a kind is an opaque model plus
 * per-backend scratch; CachedModel holds the kind and both.  Adding a kind
 * is one set of files: its core, and a ClassifierKind in its glue file,
 * listed in ClassifierKinds (classifier.c).
 */
#ifndef TRIAGE_CLASSIFIER_H
#define TRIAGE_CLASSIFIER_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "portability/instr_time.h"
#include "utils/jsonb.h"

#include "triage_core.h"

/* The labeled rows of a training query, read once for every kind */
typedef struct TrainingExample
{
	const char *text;
	size_t		len;
	int32		label;			/* index into TrainingSet.labels */
} TrainingExample;

typedef struct TrainingSet
{
	TrainingExample *examples;
	int64		n;
	int64		capacity;
	char	  **labels;
	int32		nlabels;
	int64		skipped_null_input;
	struct HTAB *label_index;
	MemoryContext target;		/* where the rows are copied */
} TrainingSet;

/*
 * One progress for a whole training run, whatever its phases (training,
 * retraining after a cutoff, the folds of cross-validation).
 */
typedef struct TrainingProgress
{
	instr_time	start;
	instr_time	last;			/* of the last NOTICE */
	const char *what;			/* "training", "cross-validation, fold 2 of 5" */
	int32		phase;			/* 0 .. phases - 1 */
	int32		phases;
} TrainingProgress;

typedef struct ClassifierKind
{
	const char *name;			/* triage.models.kind */
	const char *title;			/* in messages: "fastText model" */

	/*
	 * A stored version: validate the bytes and load them into context (an
	 * error is reported with what, "model \"x\" version 2", as context).
	 * params is the version's triage.models.params.
	 */
	void	   *(*load) (const bytea *data, Jsonb *params, MemoryContext context, const char *what);
	/*
	 * Optional, for a model mapped from a shared file (model_files.c): the
	 * offset in its bytes that should be 64-byte aligned (its large matrix),
	 * or -1 if it gains nothing from sharing; and the load that reads the
	 * mapped bytes in place (they outlive the model).
	 */
	int64		(*shared_offset) (const bytea *data, MemoryContext context);
	void	   *(*load_in_place) (const uint8 *data, size_t len, Jsonb *params,
								  MemoryContext context, const char *what);
	/* fitted by triage.calibrate_temperature(); 1 is the model's own */
	void		(*set_temperature) (void *model, float temperature);
	void	   *(*new_scratch) (void *model, MemoryContext context);
	/* read at most this many tokens of an input (triage.max_tokens) */
	void		(*set_max_tokens) (void *scratch, int64 max_tokens);
	/* give back scratch beyond keep_bytes; returns the bytes freed */
	size_t		(*trim_scratch) (void *model, void *scratch, size_t keep_bytes);
	int32		(*label_count) (const void *model);
	/* label as UTF-8, not NUL-terminated */
	const char *(*label_name) (const void *model, int32 label, size_t *len);
	int32		(*find_label) (const void *model, const char *name, size_t len);

	/*
	 * The k best labels (k = -1: all) of text with probability >= threshold,
	 * best first, into out (room for every label).  *n = 0 when nothing of
	 * the input is known to the model: no evidence, no answer.
	 */
	TriageStatus (*predict) (void *model, void *scratch, const char *text, size_t len,
							 int32 k, float threshold, TriagePrediction *out, int32 *n,
							 char *errbuf, size_t errlen);

	/*
	 * Per-label scores before temperature, for fitting one; *softmax says
	 * whether probabilities are their softmax (else each its sigmoid).
	 * *found false: no evidence.  NULL if the kind has no such scores for
	 * this model (the error says why).
	 */
	TriageStatus (*logits) (void *model, void *scratch, const char *text, size_t len,
							float *logits, bool *found, char *errbuf, size_t errlen);
	bool		(*softmax) (const void *model);
	/* NULL, or why temperature scaling cannot apply to this model */
	const char *(*no_temperature) (const void *model);

	/*
	 * Training: options parsed from triage.train()'s jsonb (errors name the
	 * bad key); a model trained on set in context, appending its measures
	 * as jsonb members ("train": {...}) to metrics; the file of a model; the
	 * options as stored in triage.models.params.
	 */
	void	   *(*parse_options) (Jsonb *options);
	void	   *(*train) (void *options, TrainingSet *set, MemoryContext context,
						  TrainingProgress *progress, StringInfo metrics);
	bytea	   *(*save) (void *model, MemoryContext context);
	Datum		(*options_jsonb) (void *options);
	uint64		(*seed) (void *options);	/* for cross-validation folds */
} ClassifierKind;

extern const ClassifierKind FastTextKind;
extern const ClassifierKind LinearKind;

/* classifier.c */
extern const ClassifierKind *FindClassifierKind(const char *name, bool missing_ok);
extern text *ClassifierLabelText(const ClassifierKind *kind, const void *model, int32 label);
extern bool TrainingProgressDue(TrainingProgress *progress, double *elapsed);

#endif
