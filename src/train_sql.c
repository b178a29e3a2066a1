/*
 * train_sql.c
 *		triage.train_fasttext(query, options): train a classifier on the rows
 *		of a query and return the model file, its labels, parameters and
 *		training metrics.  The SQL function triage.train() stores the result
 *		as a new version.  triage.cross_validate(query, options, folds): each
 *		row's answer from a model trained on the other folds.
 *
 * Memory: the examples and the model live in one context, deleted at the
 * end; an error or a cancel (CHECK_FOR_INTERRUPTS in the progress callback
 * may not return) frees it with the transaction, and nothing is stored.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "fasttext_quantize.h"
#include "fasttext_train.h"
#include "train_options.h"
#include "triage.h"

/* The labeled rows of the query, copied out of SPI */
typedef struct TrainingSet
{
	FastTextExample *examples;
	int64		n;
	int64		capacity;
	char	  **labels;
	int32		nlabels;
	int64		skipped_null_input;
	HTAB	   *label_index;
	MemoryContext target;		/* where the rows are copied */
} TrainingSet;

typedef struct LabelEntry
{
	char		key[NAMEDATALEN * 4];	/* hashed prefix; label_id resolves clashes */
	int32		label_id;
} LabelEntry;

static bool
IsTextType(Oid type)
{
	return type == TEXTOID || type == VARCHAROID || type == BPCHAROID || type == NAMEOID;
}

/* "text, integer" for the error message */
static char *
ColumnTypes(TupleDesc tupdesc)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 1; i <= tupdesc->natts; i++)
		appendStringInfo(&buf, "%s%s", i > 1 ? ", " : "", format_type_be(SPI_gettypeid(tupdesc, i)));
	return buf.data;
}

static int32
LabelId(TrainingSet *set, const char *label, int64 row)
{
	LabelEntry *entry;
	bool		found;
	char		key[NAMEDATALEN * 4];

	if (strlen(label) >= sizeof(key))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("label of row %lld is longer than %zu bytes", (long long) row, sizeof(key) - 1)));
	memset(key, 0, sizeof(key));
	strlcpy(key, label, sizeof(key));
	entry = hash_search(set->label_index, key, HASH_ENTER, &found);
	if (!found)
	{
		if (set->nlabels % 64 == 0)
			set->labels = set->labels == NULL ? palloc(sizeof(char *) * 64)
				: repalloc(set->labels, sizeof(char *) * (set->nlabels + 64));
		set->labels[set->nlabels] = pstrdup(label);
		entry->label_id = set->nlabels++;
	}
	return entry->label_id;
}

static void
CheckTrainingColumns(TupleDesc tupdesc, void *arg)
{
	if (tupdesc->natts != 2 ||
		!IsTextType(SPI_gettypeid(tupdesc, 1)) || !IsTextType(SPI_gettypeid(tupdesc, 2)))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("training query must return two text columns (input, label), not (%s)",
						ColumnTypes(tupdesc)),
				 errhint("Cast the columns: SELECT body::text, label::text FROM ...")));
}

/*
 * Error unless a model can read bytes[0..len), text in the database encoding,
 * as the characters it is.  Models read UTF-8, so in a database of another
 * encoding only ASCII text is read right: the check, and its error, are
 * classification's (LimitInputLength), run on every triage.max_input_bytes
 * window of the text, since training reads a row whole.  For the inputs and
 * labels of classifiers and the inputs and fields of extractors, so that
 * training fails where classifying the same rows would.
 */
void
CheckTrainingText(const char *bytes, int32 len)
{
	int			encoding = GetDatabaseEncoding();

	if (encoding == PG_UTF8 || encoding == PG_SQL_ASCII)
		return;
	while (len > 0)
	{
		/* 0 only before a character of several bytes, which it rejects */
		int32		n = Max(LimitInputLength(bytes, len), 1);

		bytes += n;
		len -= n;
	}
}

/* Copy one (input, label) row into the set, out of SPI's memory */
static void
AddTrainingRow(HeapTuple tuple, TupleDesc tupdesc, int64 row, void *arg)
{
	TrainingSet *set = (TrainingSet *) arg;
	bool		input_null,
				label_null;
	Datum		input = SPI_getbinval(tuple, tupdesc, 1, &input_null);
	Datum		label = SPI_getbinval(tuple, tupdesc, 2, &label_null);
	MemoryContext old;
	char	   *label_str;
	text	   *input_text;

	if (label_null)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("label of training row %lld is NULL", (long long) row),
				 errhint("Filter unlabeled rows out: ... WHERE label IS NOT NULL.")));
	if (input_null)
	{
		set->skipped_null_input++;
		return;
	}
	old = MemoryContextSwitchTo(set->target);
	label_str = TextDatumGetCString(label);
	if (SPI_gettypeid(tupdesc, 2) == BPCHAROID)
		label_str = TextDatumGetCString(DirectFunctionCall1(rtrim1, label));
	if (label_str[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("label of training row %lld is empty", (long long) row),
				 errhint("Every row needs a non-empty label.")));
	CheckTrainingText(label_str, strlen(label_str));
	input_text = DatumGetTextPP(input);
	if ((Pointer) input_text == DatumGetPointer(input))
		input_text = (text *) PG_DETOAST_DATUM_COPY(input);
	CheckTrainingText(VARDATA_ANY(input_text), VARSIZE_ANY_EXHDR(input_text));
	if (set->n == set->capacity)
	{
		set->capacity = set->capacity ? set->capacity * 2 : 1024;
		set->examples = set->examples == NULL
			? MemoryContextAllocHuge(set->target, sizeof(FastTextExample) * set->capacity)
			: repalloc_huge(set->examples, sizeof(FastTextExample) * set->capacity);
	}
	set->examples[set->n].text = VARDATA_ANY(input_text);
	set->examples[set->n].len = VARSIZE_ANY_EXHDR(input_text);
	set->examples[set->n].label = LabelId(set, label_str, row);
	set->n++;
	MemoryContextSwitchTo(old);
}

/* Run query and copy its (input, label) rows into target */
static void
ReadTrainingSet(const char *query, TrainingSet *set, MemoryContext target)
{
	static const QueryRowsSpec spec = {
		.purpose = "training",
		.columns = "(input text, label text)",
		.example = "SELECT body, label FROM tickets",
		.batch = 10000,
		.check = CheckTrainingColumns,
		.row = AddTrainingRow
	};
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN * 4;
	ctl.entrysize = sizeof(LabelEntry);
	ctl.hcxt = target;
	set->label_index = hash_create("pg_triage labels", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	set->target = target;
	ForEachQueryRow(query, &spec, set);

	if (set->n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("training query returned no rows with an input"),
				 errhint("Check the query: it must return (input text, label text) rows.")));
	if (set->nlabels < 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("training query returned only one label (\"%s\")", set->labels[0]),
				 errhint("A classifier needs examples of at least two labels.")));
}

typedef struct ProgressState
{
	instr_time	start;
	instr_time	last;
	int32		epochs;
	const char *what;			/* "training", "fold 2 of 5" */
	int32		phase;			/* 0: training; 1: retraining after a cutoff */
	int32		phases;			/* 2 when the model is retrained, else 1 */
} ProgressState;

/* What a training run measured: the training's, and the retraining's if any */
typedef struct TrainMeasures
{
	FastTextTrainStats train;
	FastTextTrainStats retrain;
	bool		retrained;
} TrainMeasures;

/*
 * fastText's quantize: cutoff (keep the rows of largest norm), optionally
 * retrain the pruned dense model, then product-quantize.
 */
static TriageStatus
QuantizeTrainedModel(FastTextModel *model, TriageTrainOptions *options, TrainingSet *set,
					 const TriageAllocator *allocator, ProgressState *progress,
					 TrainMeasures *measures, char *errbuf, size_t errlen)
{
	FastTextQuantizeOptions q;
	TriageStatus status;

	FastTextQuantizeDefaults(&q);
	q.dsub = options->dsub;
	q.qnorm = options->qnorm;
	q.qout = options->qout;
	q.seed = (uint32_t) options->fasttext.seed + FASTTEXT_PQ_SEED;
	if (options->cutoff > 0 && options->cutoff < model->input.m)
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
									 set->nlabels, set->examples, set->n, &measures->retrain,
									 errbuf, errlen);
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


/* Called by the core every few hundred examples: cancel and progress */
static bool
TrainProgress(void *arg, double done, double loss, int64_t examples)
{
	ProgressState *state = arg;
	instr_time	now;
	double		since_last;
	double		elapsed;

	CHECK_FOR_INTERRUPTS();
	INSTR_TIME_SET_CURRENT(now);
	since_last = INSTR_TIME_GET_DOUBLE(now) - INSTR_TIME_GET_DOUBLE(state->last);
	if (since_last >= 5.0)
	{
		elapsed = INSTR_TIME_GET_DOUBLE(now) - INSTR_TIME_GET_DOUBLE(state->start);
		/* one progress for the whole run: the retraining continues the training's */
		ereport(NOTICE,
				(errmsg("%s%s: epoch %d of %d, %.0f%% done, loss %.4f, %.0f examples/s",
						state->what, state->phase == 1 ? ", retraining after the cutoff" : "",
						Min((int) (done * state->epochs) + 1, state->epochs), state->epochs,
						(state->phase + done) * 100.0 / state->phases, loss,
						elapsed > 0 ? examples / elapsed : 0.0)));
		state->last = now;
	}
	return true;
}

/*
 * Train (and quantize, if the options say so) a model on the set, in
 * context; errors are reported.
 */
static FastTextModel *
TrainModel(TriageTrainOptions *options, TrainingSet *set, MemoryContext context,
		   ProgressState *progress, TrainMeasures *measures)
{
	TriageAllocator allocator = ContextAllocator(context);
	FastTextModel *model;
	TriageStatus status;
	char		errbuf[256];

	options->fasttext.progress = TrainProgress;
	options->fasttext.progress_arg = progress;
	options->fasttext.progress_every = 500;
	progress->phase = 0;
	progress->phases = options->quantize && options->retrain && options->cutoff > 0 ? 2 : 1;
	memset(measures, 0, sizeof(*measures));
	status = FastTextTrain(&options->fasttext, (const char *const *) set->labels, set->nlabels,
						   set->examples, set->n, &allocator, &model, &measures->train,
						   errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportCoreError(status, errbuf, "training a fastText model");
	if (options->quantize)
	{
		status = QuantizeTrainedModel(model, options, set, &allocator, progress, measures,
									  errbuf, sizeof(errbuf));
		if (status != TRIAGE_OK)
			ReportCoreError(status, errbuf, "quantizing the trained model");
	}
	return model;
}

PG_FUNCTION_INFO_V1(triage_train_fasttext);

/*
 * train_fasttext(query text, options jsonb) returns (data bytea, labels
 * text[], params jsonb, metrics jsonb)
 */
Datum
triage_train_fasttext(PG_FUNCTION_ARGS)
{
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *options_json = PG_GETARG_JSONB_P(1);
	TriageTrainOptions options;
	MemoryContext context;
	MemoryContext old;
	TrainingSet set;
	FastTextModel *model;
	TrainMeasures measures;
	ProgressState progress;
	size_t		nbytes;
	bytea	   *data;
	Datum	   *labels;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	StringInfoData metrics;
	instr_time	start,
				end;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	ParseTrainOptions(options_json, &options);

	context = AllocSetContextCreate(CurrentMemoryContext, "pg_triage training", ALLOCSET_DEFAULT_SIZES);
	memset(&set, 0, sizeof(set));
	INSTR_TIME_SET_CURRENT(start);
	old = MemoryContextSwitchTo(context);
	ReadTrainingSet(query, &set, context);
	MemoryContextSwitchTo(old);

	progress.start = progress.last = start;
	progress.epochs = options.fasttext.epoch;
	progress.what = "training";
	model = TrainModel(&options, &set, context, &progress, &measures);

	data = SaveModelBytea(model, context, "the trained model");
	nbytes = VARSIZE(data) - VARHDRSZ;
	INSTR_TIME_SET_CURRENT(end);

	labels = palloc(sizeof(Datum) * model->nlabels);
	for (int32 i = 0; i < model->nlabels; i++)
		labels[i] = PointerGetDatum(FastTextLabelText(model, i));

	initStringInfo(&metrics);
	/* the training's loss, and the retraining's as its own measure */
	appendStringInfo(&metrics,
					 "{\"train\": {\"rows\": %lld, \"skipped_null_input\": %lld, \"labels\": %d, "
					 "\"words\": %d, \"updates\": %lld, \"loss\": %.6g, \"seconds\": %.3f, \"bytes\": %zu",
					 (long long) set.n, (long long) set.skipped_null_input, model->nlabels,
					 model->nwords, (long long) measures.train.updates,
					 isfinite(measures.train.loss) ? measures.train.loss : 0.0,
					 INSTR_TIME_GET_DOUBLE(end) - INSTR_TIME_GET_DOUBLE(start), nbytes);
	if (measures.retrained)
		appendStringInfo(&metrics, ", \"retrain\": {\"updates\": %lld, \"loss\": %.6g}",
						 (long long) measures.retrain.updates,
						 isfinite(measures.retrain.loss) ? measures.retrain.loss : 0.0);
	appendStringInfoString(&metrics, "}}");

	values[0] = PointerGetDatum(data);
	values[1] = PointerGetDatum(construct_array(labels, model->nlabels, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = TrainOptionsJsonb(&options);
	values[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(metrics.data));
	MemoryContextDelete(context);

	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * The fold of an example: from a hash of its text, so that copies of one
 * text share a fold and are never both trained on and predicted.
 */
static int32
FoldOf(const FastTextExample *example, int32 folds, uint64 seed)
{
	return (int32) (hash_bytes_extended((const unsigned char *) example->text,
										(int) example->len, seed) % (uint64) folds);
}

PG_FUNCTION_INFO_V1(triage_cross_validate);

/*
 * cross_validate(query text, options jsonb, folds integer) returns setof
 * (input text, label text, predicted text, confidence real, fold integer):
 * every row of query with the answer of a model trained, with options, on
 * the other folds.  Out-of-fold answers are what a model trained on all the
 * rows will do on new ones, so thresholds can be chosen on every labeled row
 * instead of a held-out part (see triage.train_and_calibrate).
 */
Datum
triage_cross_validate(PG_FUNCTION_ARGS)
{
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *options_json = PG_GETARG_JSONB_P(1);
	int32		folds = PG_GETARG_INT32(2);
	TriageTrainOptions options;
	MemoryContext context;
	MemoryContext old;
	TrainingSet set;
	int32	   *fold_of;
	int64	   *fold_rows;
	int32		nonempty_folds = 0;
	TupleDesc	tupdesc;
	Tuplestorestate *store;
	ProgressState progress;

	if (folds < 2 || folds > 100)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("folds must be between 2 and 100, not %d", folds),
				 errhint("5 is usual: each model trains on 80%% of the rows.")));
	ParseTrainOptions(options_json, &options);
	store = BeginMaterialize(fcinfo, &tupdesc);

	context = AllocSetContextCreate(CurrentMemoryContext, "pg_triage cross-validation", ALLOCSET_DEFAULT_SIZES);
	memset(&set, 0, sizeof(set));
	old = MemoryContextSwitchTo(context);
	ReadTrainingSet(query, &set, context);
	fold_of = palloc(sizeof(int32) * set.n);
	fold_rows = palloc0(sizeof(int64) * folds);
	for (int64 i = 0; i < set.n; i++)
	{
		fold_of[i] = FoldOf(&set.examples[i], folds, options.fasttext.seed);
		if (fold_rows[fold_of[i]]++ == 0)
			nonempty_folds++;
	}
	MemoryContextSwitchTo(old);
	if (nonempty_folds < 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cross-validation needs rows with at least two different inputs"),
				 errhint("Copies of one input share a fold, so every row here would be held out at once.")));

	INSTR_TIME_SET_CURRENT(progress.start);
	progress.last = progress.start;
	progress.epochs = options.fasttext.epoch;
	for (int32 f = 0; f < folds; f++)
	{
		MemoryContext fold_context;
		TrainingSet rest = set;
		FastTextModel *model;
		TrainMeasures measures;
		FastTextScratch scratch;
		FastTextPrediction *predictions;
		TriageAllocator allocator;

		if (fold_rows[f] == 0)
			continue;			/* fewer distinct inputs than folds */
		fold_context = AllocSetContextCreate(context, "pg_triage fold", ALLOCSET_DEFAULT_SIZES);
		allocator = ContextAllocator(fold_context);
		old = MemoryContextSwitchTo(fold_context);
		/* the other folds' rows, in their order */
		rest.examples = MemoryContextAllocHuge(fold_context, sizeof(FastTextExample) * (set.n - fold_rows[f]));
		rest.n = 0;
		for (int64 i = 0; i < set.n; i++)
		{
			if (fold_of[i] != f)
				rest.examples[rest.n++] = set.examples[i];
		}
		progress.what = psprintf("cross-validation, fold %d of %d", f + 1, folds);
		model = TrainModel(&options, &rest, fold_context, &progress, &measures);

		FastTextScratchInit(&scratch, &allocator);
		predictions = palloc(sizeof(FastTextPrediction) * model->nlabels);
		for (int64 i = 0; i < set.n; i++)
		{
			const FastTextExample *example = &set.examples[i];
			Datum		values[5];
			bool		nulls[5] = {false, false, false, false, false};
			int32		n;
			char		errbuf[256];
			TriageStatus status;

			if (fold_of[i] != f)
				continue;
			CHECK_FOR_INTERRUPTS();
			status = FastTextPredict(model, &scratch, example->text, example->len, 1, 0.0f,
									 predictions, &n, errbuf, sizeof(errbuf));
			if (status != TRIAGE_OK)
				ReportCoreError(status, errbuf, "predicting a held-out row");
			values[0] = PointerGetDatum(cstring_to_text_with_len(example->text, (int) example->len));
			values[1] = CStringGetTextDatum(set.labels[example->label]);
			if (n > 0)
			{
				values[2] = PointerGetDatum(FastTextLabelText(model, predictions[0].label));
				values[3] = Float4GetDatum(predictions[0].probability);
			}
			else
				nulls[2] = nulls[3] = true; /* no word of the row is known */
			values[4] = Int32GetDatum(f + 1);
			tuplestore_putvalues(store, tupdesc, values, nulls);
		}
		FastTextScratchFree(&scratch);
		MemoryContextSwitchTo(old);
		MemoryContextDelete(fold_context);
	}
	MemoryContextDelete(context);
	return (Datum) 0;
}
