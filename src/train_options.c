/*
 * train_options.c
 *		Parse and validate options objects: every key checked against a
 *		table of specs (unknown keys rejected, values against their range),
 *		and the options of fastText training and quantization.
 */
#include "postgres.h"

#include <math.h>

#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "train_options.h"

static const OptionSpec TrainOptionSpecs[] = {
	{"epoch", OPTION_INT, 1, 10000},
	{"lr", OPTION_REAL, 1e-6, 10},
	{"dim", OPTION_INT, 1, 1000},
	{"wordNgrams", OPTION_INT, 1, 10},
	{"minn", OPTION_INT, 0, 20},
	{"maxn", OPTION_INT, 0, 20},
	{"bucket", OPTION_INT, 0, 10000000},
	{"minCount", OPTION_INT, 1, 1000000000},
	{"neg", OPTION_INT, 1, 100},
	{"loss", OPTION_STRING, 0, 0, "one of \"softmax\", \"ns\", \"hs\", \"ova\""},
	{"lrUpdateRate", OPTION_INT, 1, 1000000},
	{"seed", OPTION_INT, 0, 2147483647},
	{"thread", OPTION_INT, 1, FASTTEXT_MAX_THREADS},
	{"quantize", OPTION_OBJECT, 0, 0},
};

static const OptionSpec QuantizeOptionSpecs[] = {
	{"dsub", OPTION_INT, 1, 100},
	{"qnorm", OPTION_BOOL, 0, 0},
	{"qout", OPTION_BOOL, 0, 0},
	{"cutoff", OPTION_INT, 0, 100000000},
	{"retrain", OPTION_BOOL, 0, 0},
	{"method", OPTION_STRING, 0, 0, "\"pq\" (product quantization) or \"int8\""},
};

static const char *
AllowedNames(const OptionSpec *specs, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
		appendStringInfo(&buf, "%s%s", i ? ", " : "", specs[i].name);
	return buf.data;
}

static const char *
RangeText(const OptionSpec *spec)
{
	switch (spec->kind)
	{
		case OPTION_INT:
			return psprintf("an integer from %.0f to %.0f", spec->min, spec->max);
		case OPTION_REAL:
			return psprintf("a number from %g to %g", spec->min, spec->max);
		case OPTION_BOOL:
			return "true or false";
		case OPTION_STRING:
			return spec->values ? spec->values : "a string";
		case OPTION_OBJECT:
			return spec->values ? spec->values : "an object";
	}
	return "";
}

void
OptionBadValue(const char *prefix, const OptionSpec *spec)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("option \"%s%s\" must be %s", prefix, spec->name, RangeText(spec))));
}

double
OptionNumber(const JsonbValue *v, const char *prefix, const OptionSpec *spec)
{
	double		d;

	if (v->type != jbvNumeric)
		OptionBadValue(prefix, spec);
	d = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v->val.numeric)));
	if (isnan(d) || d < spec->min || d > spec->max ||
		(spec->kind == OPTION_INT && d != floor(d)))
		OptionBadValue(prefix, spec);
	return d;
}

/*
 * Walk one level of an options object, checking every key against specs,
 * each value against its spec's type (numbers against their range too),
 * and handing it to set.
 */
void
ParseOptionsObject(Jsonb *json, JsonbContainer *container, const OptionSpec *specs, int nspecs,
				   const char *prefix, OptionSetter set, void *target)
{
	JsonbIterator *it = JsonbIteratorInit(container);
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			depth = 0;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_OBJECT)
		{
			depth++;
			continue;
		}
		if (tok == WJB_END_OBJECT)
		{
			depth--;
			continue;
		}
		if (tok == WJB_BEGIN_ARRAY && depth == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("options must be a JSON object, such as '{\"epoch\": 25}'")));
		if (tok == WJB_KEY && depth == 1)
		{
			char	   *key = pnstrdup(v.val.string.val, v.val.string.len);
			const OptionSpec *spec = NULL;

			for (int i = 0; i < nspecs; i++)
				if (strcmp(specs[i].name, key) == 0)
					spec = &specs[i];
			if (spec == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("unknown option \"%s%s\"", prefix, key),
						 errhint("Known options: %s.", AllowedNames(specs, nspecs))));
			tok = JsonbIteratorNext(&it, &v, true);
			switch (spec->kind)
			{
				case OPTION_BOOL:
					if (v.type != jbvBool)
						OptionBadValue(prefix, spec);
					break;
				case OPTION_STRING:
					if (v.type != jbvString)
						OptionBadValue(prefix, spec);
					break;
				case OPTION_OBJECT:
					if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
						OptionBadValue(prefix, spec);
					break;
				default:
					(void) OptionNumber(&v, prefix, spec);
					break;
			}
			set(target, prefix, spec, &v, json);
		}
	}
}

/* A fastText option, checked against its spec, into a TriageTrainOptions */
static void
SetOption(void *target, const char *prefix, const OptionSpec *spec, JsonbValue *v, Jsonb *json)
{
	TriageTrainOptions *o = target;
	FastTextTrainOptions *f = &o->fasttext;
	const char *name = spec->name;

	if (strcmp(name, "epoch") == 0)
		f->epoch = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "lr") == 0)
		f->lr = OptionNumber(v, prefix, spec);
	else if (strcmp(name, "dim") == 0)
		f->dim = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "wordNgrams") == 0)
		f->wordNgrams = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "minn") == 0)
		f->minn = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "maxn") == 0)
		f->maxn = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "bucket") == 0)
		f->bucket = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "minCount") == 0)
		f->minCount = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "neg") == 0)
		f->neg = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "lrUpdateRate") == 0)
		f->lrUpdateRate = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "seed") == 0)
		f->seed = (uint64) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "thread") == 0)
		f->thread = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "method") == 0)
	{
		char	   *method = pnstrdup(v->val.string.val, v->val.string.len);

		if (strcmp(method, "int8") == 0)
			o->int8 = true;
		else if (strcmp(method, "pq") != 0)
			OptionBadValue(prefix, spec);
	}
	else if (strcmp(name, "loss") == 0)
	{
		char	   *loss = pnstrdup(v->val.string.val, v->val.string.len);

		if (strcmp(loss, "softmax") == 0)
			f->loss = FASTTEXT_LOSS_SOFTMAX;
		else if (strcmp(loss, "ns") == 0)
			f->loss = FASTTEXT_LOSS_NS;
		else if (strcmp(loss, "hs") == 0)
			f->loss = FASTTEXT_LOSS_HS;
		else if (strcmp(loss, "ova") == 0)
			f->loss = FASTTEXT_LOSS_OVA;
		else
			OptionBadValue(prefix, spec);
	}
	else if (strcmp(name, "quantize") == 0)
	{
		o->quantize = true;
		ParseOptionsObject(json, v->val.binary.data, QuantizeOptionSpecs,
						   lengthof(QuantizeOptionSpecs), "quantize.", SetOption, o);
	}
	else if (strcmp(name, "dsub") == 0)
		o->dsub = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "qnorm") == 0)
		o->qnorm = v->val.boolean;
	else if (strcmp(name, "qout") == 0)
		o->qout = v->val.boolean;
	else if (strcmp(name, "cutoff") == 0)
		o->cutoff = (int64) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "retrain") == 0)
		o->retrain = v->val.boolean;
}

/* Defaults, then the user's options, then checks across options */
void
ParseTrainOptions(Jsonb *json, TriageTrainOptions *options)
{
	FastTextTrainOptions *f = &options->fasttext;

	memset(options, 0, sizeof(*options));
	FastTextTrainDefaults(f);
	options->dsub = 2;
	options->qnorm = true;
	options->cutoff = 100000;
	options->retrain = true;

	if (!JB_ROOT_IS_OBJECT(json))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a JSON object, such as '{\"epoch\": 25}'")));
	ParseOptionsObject(json, &json->root, TrainOptionSpecs, lengthof(TrainOptionSpecs), "",
					   SetOption, options);

	if (f->maxn > 0 && f->minn > f->maxn)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"minn\" (%d) must not exceed \"maxn\" (%d)", f->minn, f->maxn)));
	if ((f->wordNgrams > 1 || f->maxn > 0) && f->bucket == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"bucket\" must be positive when wordNgrams > 1 or maxn > 0")));
	/* the input matrix must fit in a bytea with room for the vocabulary */
	if ((double) f->bucket * f->dim * sizeof(float) > 512.0 * 1024 * 1024)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("bucket %d x dim %d would make an input matrix of %.0f MB",
						f->bucket, f->dim, (double) f->bucket * f->dim * 4 / (1024 * 1024)),
				 errhint("Keep bucket * dim * 4 bytes under 512 MB.")));
	if (options->quantize && options->dsub > f->dim)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"quantize.dsub\" (%d) must not exceed \"dim\" (%d)", options->dsub, f->dim)));
}

/*
 * The options of triage.quantize(): those of "quantize" in train options,
 * with the same defaults, but no retraining (there is no training data).
 */
void
ParseQuantizeOptions(Jsonb *json, TriageTrainOptions *options)
{
	memset(options, 0, sizeof(*options));
	FastTextTrainDefaults(&options->fasttext);
	options->quantize = true;
	options->dsub = 2;
	options->qnorm = true;
	options->cutoff = 100000;
	if (!JB_ROOT_IS_OBJECT(json))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a JSON object, such as '{\"cutoff\": 50000}'")));
	ParseOptionsObject(json, &json->root, QuantizeOptionSpecs, lengthof(QuantizeOptionSpecs), "",
					   SetOption, options);
	if (options->retrain)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"retrain\" needs the training data"),
				 errhint("Pass \"quantize\": {\"retrain\": true, ...} to triage.train() instead.")));
}

/* The parameters stored with the model: every effective training option */
Datum
TrainOptionsJsonb(const TriageTrainOptions *o)
{
	const FastTextTrainOptions *f = &o->fasttext;
	static const char *const losses[] = {"", "hs", "ns", "softmax", "ova"};
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"format\": \"fasttext\", \"source\": \"train\", \"loss\": \"%s\", \"dim\": %d, "
					 "\"epoch\": %d, \"lr\": %g, \"wordNgrams\": %d, \"minn\": %d, \"maxn\": %d, "
					 "\"bucket\": %d, \"minCount\": %d, \"neg\": %d, \"lrUpdateRate\": %d, "
					 "\"seed\": %llu, \"thread\": %d, \"quantized\": %s, \"quantization\": \"%s\"",
					 losses[f->loss], f->dim, f->epoch, f->lr, f->wordNgrams, f->minn, f->maxn,
					 f->bucket, f->minCount, f->neg, f->lrUpdateRate,
					 (unsigned long long) f->seed, f->thread, o->quantize ? "true" : "false",
					 !o->quantize ? "none" : o->int8 ? "int8" : "pq");
	if (o->quantize && o->int8)
		appendStringInfo(&buf,
						 ", \"quantize\": {\"method\": \"int8\", \"cutoff\": %lld, \"retrain\": %s}",
						 (long long) o->cutoff, o->retrain ? "true" : "false");
	else if (o->quantize)
		appendStringInfo(&buf,
						 ", \"quantize\": {\"method\": \"pq\", \"dsub\": %d, \"qnorm\": %s, \"qout\": %s, \"cutoff\": %lld, \"retrain\": %s}",
						 o->dsub, o->qnorm ? "true" : "false", o->qout ? "true" : "false",
						 (long long) o->cutoff, o->retrain ? "true" : "false");
	appendStringInfoChar(&buf, '}');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}
