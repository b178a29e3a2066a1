/*
 * fasttext_kind.c
 *		The fastText classifier kind: stored versions loaded, run, trained
 *		(and quantized, as fastText's quantize does) through the
 *		ClassifierKind interface, and fastText files in and out of bytea.
 *
 * Imported models keep fastText's own tokenization, so that answers are
 * bit for bit those of the fasttext tool.
 */
#include "postgres.h"

#include <math.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "fasttext_quantize.h"
#include "fasttext_train.h"
#include "train_options.h"
#include "triage.h"

#define FASTTEXT_TITLE "fastText model"

/* Turn a core error about a fastText file into an ereport */
void
ReportFastTextError(TriageStatus status, const char *message, const char *context)
{
	ReportModelError(FASTTEXT_TITLE,
					 status == TRIAGE_UNSUPPORTED
					 ? "pg_triage runs supervised classifiers (\"fasttext supervised\") "
					 "saved in file format 11 or 12, as fastText 0.9 writes them."
					 : "Check that the file is a complete fastText .bin or .ftz model, "
					 "for example with \"fasttext predict\".",
					 status, message, context);
}

/*
 * Load the fastText file data[0..len) into context (its allocations are
 * freed with it), in place if asked (FastTextLoadInPlace); errors are
 * reported, with what as their context if not NULL.
 */
static FastTextModel *
LoadFastText(const uint8 *data, size_t len, bool in_place, MemoryContext context, const char *what)
{
	TriageAllocator allocator = ContextAllocator(context);
	FastTextModel *model;
	char		errbuf[256];
	TriageStatus status;

	status = (in_place ? FastTextLoadInPlace : FastTextLoad) (data, len, &allocator, &model,
															  errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportFastTextError(status, errbuf, what ? psprintf("loading %s", what) : NULL);
	return model;
}

/*
 * Load a fastText file into context.  Not cached: for inspecting,
 * converting, quantizing.
 */
FastTextModel *
LoadFastTextBytea(bytea *data, MemoryContext context)
{
	return LoadFastText((const uint8 *) VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data), false,
						context, NULL);
}

/* Serialize a model (allocated in context) to a bytea in the current context */
bytea *
SaveFastTextBytea(const FastTextModel *model, MemoryContext context, const char *what)
{
	TriageAllocator allocator = ContextAllocator(context);
	uint8_t    *bytes;
	size_t		nbytes;
	char		errbuf[256];
	TriageStatus status;

	status = FastTextSave(model, &allocator, &bytes, &nbytes, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportFastTextError(status, errbuf, what);
	return ByteaFromBytes(bytes, nbytes, what, "Lower \"dim\" or \"bucket\", or quantize the model.");
}

/*
 * Labels become text values, so they must be valid in the server encoding;
 * the file is untrusted, so check every one once, when the model is loaded.
 */
void
CheckFastTextLabels(const FastTextModel *model)
{
	for (int32 i = 0; i < FastTextLabelCount(model); i++)
	{
		size_t		len;
		const char *word = FastTextLabel(model, i, &len);

		if (!pg_verifymbstr(word, (int) len, true))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid fastText model: label %d is not valid in the database encoding", i),
					 errhint("Check that the file is a complete fastText .bin or .ftz model, "
							 "for example with \"fasttext predict\".")));
	}
}

/* A label as users see it, as text */
text *
FastTextLabelText(const FastTextModel *model, int32 label)
{
	return ClassifierLabelText(&FastTextKind, model, label);
}

/* A stored version */

static void *
FastTextKindLoad(const bytea *data, Jsonb *params, MemoryContext context, const char *what)
{
	FastTextModel *model = LoadFastText((const uint8 *) VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data),
										false, context, what);

	CheckFastTextLabels(model);
	return model;
}

/*
 * A dense model's input matrix is most of it (bucket x dim floats): the
 * shared file aligns it, so that it is read in place.  A quantized model is
 * decoded at load anyway, and gains nothing from sharing.
 */
static int64
FastTextKindSharedOffset(const bytea *data, MemoryContext context)
{
	MemoryContext scratch = AllocSetContextCreate(context, "pg_triage model check", ALLOCSET_DEFAULT_SIZES);
	FastTextModel *model = LoadFastTextBytea((bytea *) data, scratch);
	int64		offset = FastTextDenseInputOffset(model);

	/* worth it only when the matrix is most of the file */
	if (offset >= 0 && FastTextDenseInputBytes(model) < (int64) VARSIZE_ANY_EXHDR(data) / 2)
		offset = -1;
	MemoryContextDelete(scratch);
	return offset;
}

static void *
FastTextKindLoadInPlace(const uint8 *data, size_t len, Jsonb *params, MemoryContext context,
						const char *what)
{
	FastTextModel *model = LoadFastText(data, len, true, context, what);

	CheckFastTextLabels(model);
	return model;
}

static void
FastTextKindSetTemperature(void *model, float temperature)
{
	FastTextSetTemperature(model, temperature);
}

static void *
FastTextKindNewScratch(void *model, MemoryContext context)
{
	FastTextScratch *scratch = MemoryContextAllocZero(context, sizeof(FastTextScratch));
	TriageAllocator allocator = ContextAllocator(context);

	FastTextScratchInit(scratch, &allocator);
	return scratch;
}

static void
FastTextKindSetMaxTokens(void *scratch, int64 max_tokens)
{
	((FastTextScratch *) scratch)->max_tokens = max_tokens;
}

static size_t
FastTextKindTrim(void *model, void *scratch, size_t keep_bytes)
{
	return FastTextScratchTrim(model, scratch, keep_bytes);
}

static int32
FastTextKindLabelCount(const void *model)
{
	return FastTextLabelCount(model);
}

static const char *
FastTextKindLabelName(const void *model, int32 label, size_t *len)
{
	return FastTextLabelName(model, label, len);
}

static int32
FastTextKindFindLabel(const void *model, const char *name, size_t len)
{
	return FastTextFindLabel(model, name, len);
}

static TriageStatus
FastTextKindPredict(void *model, void *scratch, const char *text, size_t len, int32 k,
					float threshold, TriagePrediction *out, int32 *n, char *errbuf, size_t errlen)
{
	TriageStatus status = FastTextPredict(model, scratch, text, len, k, threshold, out, n,
										  errbuf, errlen);

	/*
	 * No word or subword of the input maps to a row: the answer would be the
	 * model's prior for an empty line ("</s>" alone).
	 */
	if (((FastTextScratch *) scratch)->text_rows == 0)
		*n = 0;
	return status;
}

static TriageStatus
FastTextKindLogits(void *model, void *scratch, const char *text, size_t len, float *logits,
				   bool *found, char *errbuf, size_t errlen)
{
	return FastTextLogits(model, scratch, text, len, logits, found, errbuf, errlen);
}

static bool
FastTextKindSoftmax(const void *model)
{
	return FastTextModelArgs(model)->loss == FASTTEXT_LOSS_SOFTMAX;
}

static const char *
FastTextKindNoTemperature(const void *model)
{
	if (FastTextModelArgs(model)->loss == FASTTEXT_LOSS_HS)
		return "temperature scaling needs per-label scores, which hierarchical softmax (loss \"hs\") does not have";
	return NULL;
}

/* Training */

typedef struct FastTextTrainRun
{
	TrainingProgress *progress;
	int32		epochs;
} FastTextTrainRun;

/* What a training run measured: the training's, and the retraining's if any */
typedef struct TrainMeasures
{
	FastTextTrainStats train;
	FastTextTrainStats retrain;
	bool		retrained;
} TrainMeasures;

/*
 * Called by the core every few hundred examples (with several threads,
 * every 100 ms or so, while they are paused and joined, so that it may
 * longjmp): cancel and progress
 */
static bool
TrainProgress(void *arg, double done, double loss, int64_t examples)
{
	FastTextTrainRun *run = arg;
	TrainingProgress *state = run->progress;
	double		elapsed;

	if (TrainingProgressDue(state, &elapsed))
	{
		/* one progress for the whole run: the retraining continues the training's */
		ereport(NOTICE,
				(errmsg("%s%s: epoch %d of %d, %.0f%% done, loss %.4f, %.0f examples/s",
						state->what, state->phase == 1 ? ", retraining after the cutoff" : "",
						Min((int) (done * run->epochs) + 1, run->epochs), run->epochs,
						(state->phase + done) * 100.0 / state->phases, loss,
						elapsed > 0 ? examples / elapsed : 0.0)));
	}
	return true;
}

/*
 * fastText's quantize: cutoff (keep the rows of largest norm), optionally
 * retrain the pruned dense model, then product-quantize.
 */
static TriageStatus
QuantizeTrainedModel(FastTextModel *model, TriageTrainOptions *options, TrainingSet *set,
					 const TriageAllocator *allocator, TrainingProgress *progress,
					 TrainMeasures *measures, char *errbuf, size_t errlen)
{
	FastTextQuantizeOptions q;
	TriageStatus status;

	FastTextQuantizeDefaults(&q);
	q.dsub = options->dsub;
	q.qnorm = options->qnorm;
	q.qout = options->qout;
	q.seed = (uint32_t) options->fasttext.seed + FASTTEXT_PQ_SEED;
	if (options->cutoff > 0 && options->cutoff < FastTextInputRows(model))
	{
		int32_t    *keep;
		int64_t		nkeep;

		status = FastTextSelectRows(model, options->cutoff, allocator, &keep, &nkeep, errbuf, errlen);
		if (status != TRIAGE_OK)
			return status;
		status = FastTextPrune(model, keep, nkeep, errbuf, errlen);
		TriageFree(allocator, keep);
		if (status != TRIAGE_OK)
			return status;
		if (options->retrain)
		{
			progress->phase = 1;
			status = FastTextRetrain(model, &options->fasttext, (const char *const *) set->labels,
									 set->nlabels, (const FastTextExample *) set->examples, set->n,
									 &measures->retrain, errbuf, errlen);
			if (status != TRIAGE_OK)
				return status;
			measures->retrained = true;
		}
	}
	if (options->int8)
		return FastTextQuantizeInt8(model, errbuf, errlen);
	q.cutoff = 0;
	return FastTextQuantize(model, &q, errbuf, errlen);
}

static void *
FastTextKindParseOptions(Jsonb *json)
{
	TriageTrainOptions *options = palloc(sizeof(TriageTrainOptions));

	ParseTrainOptions(json, options);
	return options;
}

/*
 * Train (and quantize, if the options say so) a model on the set, in
 * context; errors are reported.
 */
static void *
FastTextKindTrain(void *options_arg, TrainingSet *set, MemoryContext context,
				  TrainingProgress *progress, StringInfo metrics)
{
	TriageTrainOptions *options = options_arg;
	TriageAllocator allocator = ContextAllocator(context);
	FastTextModel *model;
	TrainMeasures measures;
	FastTextTrainRun run = {progress, options->fasttext.epoch};
	TriageStatus status;
	char		errbuf[256];

	StaticAssertStmt(sizeof(TrainingExample) == sizeof(FastTextExample) &&
					 offsetof(TrainingExample, label) == offsetof(FastTextExample, label),
					 "a training example must be a fastText example");
	options->fasttext.progress = TrainProgress;
	options->fasttext.progress_arg = &run;
	options->fasttext.progress_every = 500;
	/* the retraining after a cutoff is a second phase of the same progress */
	progress->phase = 0;
	progress->phases = options->quantize && options->retrain && options->cutoff > 0 ? 2 : 1;
	memset(&measures, 0, sizeof(measures));
	status = FastTextTrain(&options->fasttext, (const char *const *) set->labels, set->nlabels,
						   (const FastTextExample *) set->examples, set->n, &allocator, &model,
						   &measures.train, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportFastTextError(status, errbuf, "training a fastText model");
	if (options->quantize)
	{
		status = QuantizeTrainedModel(model, options, set, &allocator, progress, &measures,
									  errbuf, sizeof(errbuf));
		if (status != TRIAGE_OK)
			ReportFastTextError(status, errbuf, "quantizing the trained model");
	}

	/* the training's loss, and the retraining's as its own measure */
	appendStringInfo(metrics, ", \"words\": %d, \"updates\": %lld, \"loss\": %.6g",
					 FastTextWordCount(model), (long long) measures.train.updates,
					 isfinite(measures.train.loss) ? measures.train.loss : 0.0);
	if (measures.retrained)
		appendStringInfo(metrics, ", \"retrain\": {\"updates\": %lld, \"loss\": %.6g}",
						 (long long) measures.retrain.updates,
						 isfinite(measures.retrain.loss) ? measures.retrain.loss : 0.0);
	return model;
}

static bytea *
FastTextKindSave(void *model, MemoryContext context)
{
	return SaveFastTextBytea(model, context, "the trained model");
}

static Datum
FastTextKindOptionsJsonb(void *options)
{
	return TrainOptionsJsonb(options);
}

static uint64
FastTextKindSeed(void *options)
{
	return ((TriageTrainOptions *) options)->fasttext.seed;
}

const ClassifierKind FastTextKind = {
	.name = "fasttext",
	.title = FASTTEXT_TITLE,
	.load = FastTextKindLoad,
	.shared_offset = FastTextKindSharedOffset,
	.load_in_place = FastTextKindLoadInPlace,
	.set_temperature = FastTextKindSetTemperature,
	.new_scratch = FastTextKindNewScratch,
	.set_max_tokens = FastTextKindSetMaxTokens,
	.trim_scratch = FastTextKindTrim,
	.label_count = FastTextKindLabelCount,
	.label_name = FastTextKindLabelName,
	.find_label = FastTextKindFindLabel,
	.predict = FastTextKindPredict,
	.logits = FastTextKindLogits,
	.softmax = FastTextKindSoftmax,
	.no_temperature = FastTextKindNoTemperature,
	.parse_options = FastTextKindParseOptions,
	.train = FastTextKindTrain,
	.save = FastTextKindSave,
	.options_jsonb = FastTextKindOptionsJsonb,
	.seed = FastTextKindSeed,
};
