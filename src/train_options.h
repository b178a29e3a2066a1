/*
 * train_options.h
 *		Options objects validated against a table of specs; fastText's
 *		training and quantization options.
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

/* What an option's value must be */
typedef enum OptionKind
{
	OPTION_INT,
	OPTION_REAL,
	OPTION_BOOL,
	OPTION_STRING,
	OPTION_OBJECT
} OptionKind;

typedef struct OptionSpec
{
	const char *name;
	OptionKind	kind;
	double		min;			/* numbers: their range */
	double		max;
	const char *values;			/* strings and objects: what they may be, for errors */
} OptionSpec;

/* Stores one checked option into target; errors for values out of its own rules */
typedef void (*OptionSetter) (void *target, const char *prefix, const OptionSpec *spec,
							  JsonbValue *value, Jsonb *json);

extern void ParseOptionsObject(Jsonb *json, JsonbContainer *container, const OptionSpec *specs,
							   int nspecs, const char *prefix, OptionSetter set, void *target);
extern double OptionNumber(const JsonbValue *v, const char *prefix, const OptionSpec *spec);
extern void OptionBadValue(const char *prefix, const OptionSpec *spec) pg_attribute_noreturn();

extern void ParseTrainOptions(Jsonb *json, TriageTrainOptions *options);
extern void ParseQuantizeOptions(Jsonb *json, TriageTrainOptions *options);
extern Datum TrainOptionsJsonb(const TriageTrainOptions *options);

#endif
