/*
 * linear_kind.c
 *		The linear classifier kind (linear.h): stored versions loaded, run
 *		and trained through the ClassifierKind interface, and its training
 *		options.
 */
#include "postgres.h"

#include <math.h>

#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "linear.h"
#include "train_options.h"
#include "triage.h"

#define LINEAR_TITLE "linear model"

static void
ReportLinearError(TriageStatus status, const char *message, const char *context)
{
	ReportModelError(LINEAR_TITLE, "Train the model again with triage.train().",
					 status, message, context);
}

/* A stored version */

static void *
LinearKindLoad(const bytea *data, Jsonb *params, MemoryContext context, const char *what)
{
	TriageAllocator allocator = ContextAllocator(context);
	LinearModel *model;
	char		errbuf[256];
	TriageStatus status;

	status = LinearLoad((const uint8_t *) VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data),
						&allocator, &model, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportLinearError(status, errbuf, psprintf("loading %s", what));
	/* (LinearLoad refused labels that are not UTF-8, which classify converts from) */
	return model;
}

static void
LinearKindSetTemperature(void *model, float temperature)
{
	LinearSetTemperature(model, temperature);
}

static void *
LinearKindNewScratch(void *model, MemoryContext context)
{
	LinearScratch *scratch = MemoryContextAllocZero(context, sizeof(LinearScratch));
	TriageAllocator allocator = ContextAllocator(context);

	LinearScratchInit(scratch, &allocator);
	return scratch;
}

static void
LinearKindSetMaxTokens(void *scratch, int64 max_tokens)
{
	((LinearScratch *) scratch)->max_tokens = max_tokens;
}

static size_t
LinearKindTrim(void *model, void *scratch, size_t keep_bytes)
{
	return LinearScratchTrim(scratch, keep_bytes);
}

static int32
LinearKindLabelCount(const void *model)
{
	return LinearLabelCount(model);
}

static const char *
LinearKindLabelName(const void *model, int32 label, size_t *len)
{
	return LinearLabelName(model, label, len);
}

static int32
LinearKindFindLabel(const void *model, const char *name, size_t len)
{
	return LinearFindLabel(model, name, len);
}

static TriageStatus
LinearKindPredict(void *model, void *scratch, const char *text, size_t len, int32 k,
				  float threshold, TriagePrediction *out, int32 *n, char *errbuf, size_t errlen)
{
	return LinearPredict(model, scratch, text, len, k, threshold, out, n, errbuf, errlen);
}

static TriageStatus
LinearKindLogits(void *model, void *scratch, const char *text, size_t len, float *logits,
				 bool *found, char *errbuf, size_t errlen)
{
	TriageStatus status = LinearLogits(model, scratch, text, len, logits, errbuf, errlen);

	*found = ((LinearScratch *) scratch)->features > 0;
	return status;
}

static bool
LinearKindSoftmax(const void *model)
{
	return true;
}

static const char *
LinearKindNoTemperature(const void *model)
{
	return NULL;
}

/* Training options */

static const OptionSpec LinearOptionSpecs[] = {
	{"normalize", OPTION_OBJECT, 0, 0,
	"an object of lowercase, split_punct, strip_html and digit_shape (each true or false)"},
	{"ngram_min", OPTION_INT, 1, LINEAR_MAX_NGRAM},
	{"ngram_max", OPTION_INT, 1, LINEAR_MAX_NGRAM},
	{"char_min", OPTION_INT, 0, LINEAR_MAX_CHAR_NGRAM},
	{"char_max", OPTION_INT, 0, LINEAR_MAX_CHAR_NGRAM},
	{"buckets", OPTION_INT, LINEAR_MIN_BUCKETS, LINEAR_MAX_BUCKETS},
	{"min_df", OPTION_INT, 1, 1000000000},
	{"sublinear_tf", OPTION_BOOL, 0, 0},
	{"nb", OPTION_BOOL, 0, 0},
	{"c", OPTION_REAL, 0, 1e6},
	{"l1", OPTION_REAL, 0, 1e6},
	{"folds", OPTION_INT, 2, 20},
	{"max_iterations", OPTION_INT, 1, 100000},
	{"quantize", OPTION_BOOL, 0, 0},
	{"seed", OPTION_INT, 0, 2147483647},
};

static const OptionSpec NormalizeOptionSpecs[] = {
	{"lowercase", OPTION_BOOL, 0, 0},
	{"split_punct", OPTION_BOOL, 0, 0},
	{"strip_html", OPTION_BOOL, 0, 0},
	{"digit_shape", OPTION_BOOL, 0, 0},
};

static void
SetNormalizeOption(void *target, const char *prefix, const OptionSpec *spec, JsonbValue *v,
				   Jsonb *json)
{
	TextNormalizeOptions *n = target;
	const char *name = spec->name;

	if (strcmp(name, "lowercase") == 0)
		n->lowercase = v->val.boolean;
	else if (strcmp(name, "split_punct") == 0)
		n->split_punct = v->val.boolean;
	else if (strcmp(name, "strip_html") == 0)
		n->strip_html = v->val.boolean;
	else if (strcmp(name, "digit_shape") == 0)
		n->digit_shape = v->val.boolean;
}

static void
SetLinearOption(void *target, const char *prefix, const OptionSpec *spec, JsonbValue *v,
				Jsonb *json)
{
	LinearOptions *o = target;
	const char *name = spec->name;

	if (strcmp(name, "normalize") == 0)
		ParseOptionsObject(json, v->val.binary.data, NormalizeOptionSpecs,
						   lengthof(NormalizeOptionSpecs), "normalize.", SetNormalizeOption,
						   &o->normalize);
	else if (strcmp(name, "ngram_min") == 0)
		o->ngram_min = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "ngram_max") == 0)
		o->ngram_max = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "char_min") == 0)
		o->char_min = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "char_max") == 0)
		o->char_max = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "buckets") == 0)
		o->buckets = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "min_df") == 0)
		o->min_df = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "sublinear_tf") == 0)
		o->sublinear_tf = v->val.boolean;
	else if (strcmp(name, "nb") == 0)
		o->nb = v->val.boolean;
	else if (strcmp(name, "c") == 0)
		o->c = OptionNumber(v, prefix, spec);
	else if (strcmp(name, "l1") == 0)
		o->l1 = OptionNumber(v, prefix, spec);
	else if (strcmp(name, "folds") == 0)
		o->folds = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "max_iterations") == 0)
		o->max_iterations = (int32) OptionNumber(v, prefix, spec);
	else if (strcmp(name, "quantize") == 0)
		o->quantize = v->val.boolean;
	else if (strcmp(name, "seed") == 0)
		o->seed = (uint64) OptionNumber(v, prefix, spec);
}

static void *
LinearKindParseOptions(Jsonb *json)
{
	LinearOptions *options = palloc0(sizeof(LinearOptions));
	char		errbuf[256];

	LinearDefaults(options);
	if (!JB_ROOT_IS_OBJECT(json))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a JSON object, such as '{\"ngram_max\": 2}'")));
	ParseOptionsObject(json, &json->root, LinearOptionSpecs, lengthof(LinearOptionSpecs), "",
					   SetLinearOption, options);
	if (LinearCheckOptions(options, errbuf, sizeof(errbuf)) != TRIAGE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", errbuf)));
	return options;
}

/* Training */

/* Called by the core between optimizer runs: cancel and progress */
static bool
LinearProgress(void *arg, double done, double loss)
{
	TrainingProgress *progress = arg;
	double		elapsed;

	if (TrainingProgressDue(progress, &elapsed))
		ereport(NOTICE,
				(errmsg("%s: %.0f%% done, loss %.4f, %.0f s",
						progress->what, done * 100.0, loss, elapsed)));
	return true;
}

static void *
LinearKindTrain(void *options_arg, TrainingSet *set, MemoryContext context,
				TrainingProgress *progress, StringInfo metrics)
{
	LinearOptions *options = options_arg;
	TriageAllocator allocator = ContextAllocator(context);
	LinearModel *model;
	LinearTrainStats stats;
	TriageStatus status;
	char		errbuf[256];

	StaticAssertStmt(sizeof(TrainingExample) == sizeof(LinearExample) &&
					 offsetof(TrainingExample, label) == offsetof(LinearExample, label),
					 "a training example must be a linear example");
	options->progress = LinearProgress;
	options->progress_arg = progress;
	memset(&stats, 0, sizeof(stats));
	status = LinearTrain(options, (const char *const *) set->labels, set->nlabels,
						 (const LinearExample *) set->examples, set->n, &allocator, &model,
						 &stats, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportLinearError(status, errbuf, "training a linear model");
	appendStringInfo(metrics,
					 ", \"examples_used\": %lld, \"features\": %d, \"c\": %.6g, \"c_chosen_by\": \"%s\", "
					 "\"cv_log_loss\": %.6g, \"loss\": %.6g, \"iterations\": %d, "
					 "\"quantization_max_prob_diff\": %.6g",
					 (long long) stats.examples_used, stats.features, stats.c,
					 options->c > 0 ? "option" : "cross-validation",
					 isfinite(stats.cv_log_loss) ? stats.cv_log_loss : 0.0,
					 isfinite(stats.train_loss) ? stats.train_loss : 0.0, stats.iterations,
					 isfinite(stats.quantization_max_prob_diff) ? stats.quantization_max_prob_diff : 0.0);
	return model;
}

static bytea *
LinearKindSave(void *model, MemoryContext context)
{
	TriageAllocator allocator = ContextAllocator(context);
	uint8_t    *bytes;
	size_t		nbytes;
	char		errbuf[256];
	TriageStatus status;

	status = LinearSave(model, &allocator, &bytes, &nbytes, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportLinearError(status, errbuf, "saving the trained model");
	return ByteaFromBytes(bytes, nbytes, "the trained model", "Lower \"buckets\" or raise \"min_df\".");
}

/* The parameters stored with the model: every effective training option */
static Datum
LinearKindOptionsJsonb(void *options_arg)
{
	LinearOptions *o = options_arg;
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"format\": \"linear\", \"source\": \"train\", "
					 "\"normalize\": {\"lowercase\": %s, \"split_punct\": %s, \"strip_html\": %s, \"digit_shape\": %s}, "
					 "\"ngram_min\": %d, \"ngram_max\": %d, \"char_min\": %d, \"char_max\": %d, "
					 "\"buckets\": %d, \"min_df\": %d, \"sublinear_tf\": %s, \"nb\": %s, "
					 "\"c\": %.6g, \"l1\": %.6g, \"folds\": %d, \"max_iterations\": %d, "
					 "\"quantized\": %s, \"quantization\": \"%s\", \"seed\": %llu}",
					 o->normalize.lowercase ? "true" : "false",
					 o->normalize.split_punct ? "true" : "false",
					 o->normalize.strip_html ? "true" : "false",
					 o->normalize.digit_shape ? "true" : "false",
					 o->ngram_min, o->ngram_max, o->char_min, o->char_max, o->buckets, o->min_df,
					 o->sublinear_tf ? "true" : "false", o->nb ? "true" : "false",
					 o->c, o->l1, o->folds, o->max_iterations,
					 o->quantize ? "true" : "false", o->quantize ? "int8" : "none",
					 (unsigned long long) o->seed);
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

static uint64
LinearKindSeed(void *options)
{
	return ((LinearOptions *) options)->seed;
}

const ClassifierKind LinearKind = {
	.name = "linear",
	.title = LINEAR_TITLE,
	.load = LinearKindLoad,
	.set_temperature = LinearKindSetTemperature,
	.new_scratch = LinearKindNewScratch,
	.set_max_tokens = LinearKindSetMaxTokens,
	.trim_scratch = LinearKindTrim,
	.label_count = LinearKindLabelCount,
	.label_name = LinearKindLabelName,
	.find_label = LinearKindFindLabel,
	.predict = LinearKindPredict,
	.logits = LinearKindLogits,
	.softmax = LinearKindSoftmax,
	.no_temperature = LinearKindNoTemperature,
	.parse_options = LinearKindParseOptions,
	.train = LinearKindTrain,
	.save = LinearKindSave,
	.options_jsonb = LinearKindOptionsJsonb,
	.seed = LinearKindSeed,
};
