/*
 * train_options.h
 *		The options jsonb of triage.train(), validated.
 */
#ifndef TRIAGE_TRAIN_OPTIONS_H
#define TRIAGE_TRAIN_OPTIONS_H

#include "postgres.h"

#include "utils/jsonb.h"

#include "fasttext_train.h"

typedef struct TriageTrainOptions
{
	FastTextTrainOptions fasttext;
	bool		quantize;		/* product-quantize after training */
	int32		dsub;			/* dimensions per sub-quantizer */
	bool		qnorm;			/* quantize row norms separately */
	bool		qout;			/* quantize the output matrix too */
	int64		cutoff;			/* keep this many input rows (0: all) */
	bool		retrain;		/* fine-tune after the cutoff */
	bool		int8;			/* method "int8" instead of product quantization */
} TriageTrainOptions;

extern void ParseTrainOptions(Jsonb *json, TriageTrainOptions *options);
extern void ParseQuantizeOptions(Jsonb *json, TriageTrainOptions *options);
extern Datum TrainOptionsJsonb(const TriageTrainOptions *options);

#endif
