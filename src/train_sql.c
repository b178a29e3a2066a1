/*
 * train_sql.c
 *		triage_internal.train_classifier(kind, query, options): train a
 *		classifier of any kind on the rows of a query and return the model
 *		file, its labels, parameters and training metrics.  The SQL function
 *		triage.train() stores the result as a new version.
 *		triage.cross_validate(query, options, folds): each row's answer from
 *		a model trained on the other folds.
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

#include "triage.h"

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
			? MemoryContextAllocHuge(set->target, sizeof(TrainingExample) * set->capacity)
			: repalloc_huge(set->examples, sizeof(TrainingExample) * set->capacity);
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

/*
 * The kind that options name ("kind", default "linear"), and the options
 * without that key, for the kind's own parser.
 */
static const ClassifierKind *
KindOfOptions(Jsonb *options, Jsonb **rest)
{
	JsonbValue	key;
	JsonbValue *value;
	const char *name = "linear";

	*rest = options;
	if (!JB_ROOT_IS_OBJECT(options))
		return &LinearKind;		/* the kind's parser says what is wrong */
	key.type = jbvString;
	key.val.string.val = "kind";
	key.val.string.len = 4;
	value = findJsonbValueFromContainer(&options->root, JB_FOBJECT, &key);
	if (value == NULL)
		return &LinearKind;
	if (value->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"kind\" must be a string"),
				 errhint("The kinds are \"linear\" (the default) and \"fasttext\".")));
	name = pnstrdup(value->val.string.val, value->val.string.len);
	*rest = DatumGetJsonbP(DirectFunctionCall2(jsonb_delete, JsonbPGetDatum(options),
											   CStringGetTextDatum("kind")));
	return FindClassifierKind(name, false);
}

static void
StartProgress(TrainingProgress *progress, const char *what)
{
	INSTR_TIME_SET_CURRENT(progress->start);
	progress->last = progress->start;
	progress->what = what;
	progress->phase = 0;
	progress->phases = 1;
}

PG_FUNCTION_INFO_V1(triage_train_classifier);

/*
 * train_classifier(query text, options jsonb) returns (kind text, data
 * bytea, labels text[], params jsonb, metrics jsonb): a classifier of the
 * kind options name, trained on the (input, label) rows of query.
 */
Datum
triage_train_classifier(PG_FUNCTION_ARGS)
{
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *options_json;
	const ClassifierKind *kind = KindOfOptions(PG_GETARG_JSONB_P(1), &options_json);
	void	   *options;
	MemoryContext context;
	MemoryContext old;
	TrainingSet set;
	void	   *model;
	TrainingProgress progress;
	size_t		nbytes;
	bytea	   *data;
	Datum	   *labels;
	int32		nlabels;
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	StringInfoData metrics;
	StringInfoData kind_metrics;
	instr_time	end;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	options = kind->parse_options(options_json);

	context = AllocSetContextCreate(CurrentMemoryContext, "pg_triage training", ALLOCSET_DEFAULT_SIZES);
	memset(&set, 0, sizeof(set));
	StartProgress(&progress, "training");
	old = MemoryContextSwitchTo(context);
	ReadTrainingSet(query, &set, context);
	MemoryContextSwitchTo(old);

	initStringInfo(&kind_metrics);
	model = kind->train(options, &set, context, &progress, &kind_metrics);
	data = kind->save(model, context);
	nbytes = VARSIZE(data) - VARHDRSZ;
	INSTR_TIME_SET_CURRENT(end);

	nlabels = kind->label_count(model);
	labels = palloc(sizeof(Datum) * nlabels);
	for (int32 i = 0; i < nlabels; i++)
		labels[i] = PointerGetDatum(ClassifierLabelText(kind, model, i));

	initStringInfo(&metrics);
	appendStringInfo(&metrics,
					 "{\"train\": {\"rows\": %lld, \"skipped_null_input\": %lld, \"labels\": %d%s, "
					 "\"seconds\": %.3f, \"bytes\": %zu}}",
					 (long long) set.n, (long long) set.skipped_null_input, nlabels,
					 kind_metrics.data,
					 INSTR_TIME_GET_DOUBLE(end) - INSTR_TIME_GET_DOUBLE(progress.start), nbytes);

	values[0] = CStringGetTextDatum(kind->name);
	values[1] = PointerGetDatum(data);
	values[2] = PointerGetDatum(construct_array(labels, nlabels, TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = kind->options_jsonb(options);
	values[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum(metrics.data));
	MemoryContextDelete(context);

	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * The fold of an example: from a hash of its text, so that copies of one
 * text share a fold and are never both trained on and predicted.
 */
static int32
FoldOf(const TrainingExample *example, int32 folds, uint64 seed)
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
	Jsonb	   *options_json;
	const ClassifierKind *kind = KindOfOptions(PG_GETARG_JSONB_P(1), &options_json);
	int32		folds = PG_GETARG_INT32(2);
	void	   *options;
	MemoryContext context;
	MemoryContext old;
	TrainingSet set;
	int32	   *fold_of;
	int64	   *fold_rows;
	int32		nonempty_folds = 0;
	TupleDesc	tupdesc;
	Tuplestorestate *store;
	TrainingProgress progress;

	if (folds < 2 || folds > 100)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("folds must be between 2 and 100, not %d", folds),
				 errhint("5 is usual: each model trains on 80%% of the rows.")));
	options = kind->parse_options(options_json);
	store = BeginMaterialize(fcinfo, &tupdesc);

	context = AllocSetContextCreate(CurrentMemoryContext, "pg_triage cross-validation", ALLOCSET_DEFAULT_SIZES);
	memset(&set, 0, sizeof(set));
	old = MemoryContextSwitchTo(context);
	ReadTrainingSet(query, &set, context);
	fold_of = palloc(sizeof(int32) * set.n);
	fold_rows = palloc0(sizeof(int64) * folds);
	for (int64 i = 0; i < set.n; i++)
	{
		fold_of[i] = FoldOf(&set.examples[i], folds, kind->seed(options));
		if (fold_rows[fold_of[i]]++ == 0)
			nonempty_folds++;
	}
	MemoryContextSwitchTo(old);
	if (nonempty_folds < 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cross-validation needs rows with at least two different inputs"),
				 errhint("Copies of one input share a fold, so every row here would be held out at once.")));

	StartProgress(&progress, NULL);
	for (int32 f = 0; f < folds; f++)
	{
		MemoryContext fold_context;
		TrainingSet rest = set;
		void	   *model;
		void	   *scratch;
		TriagePrediction *predictions;
		StringInfoData ignored;

		if (fold_rows[f] == 0)
			continue;			/* fewer distinct inputs than folds */
		fold_context = AllocSetContextCreate(context, "pg_triage fold", ALLOCSET_DEFAULT_SIZES);
		old = MemoryContextSwitchTo(fold_context);
		/* the other folds' rows, in their order */
		rest.examples = MemoryContextAllocHuge(fold_context, sizeof(TrainingExample) * (set.n - fold_rows[f]));
		rest.n = 0;
		for (int64 i = 0; i < set.n; i++)
		{
			if (fold_of[i] != f)
				rest.examples[rest.n++] = set.examples[i];
		}
		progress.what = psprintf("cross-validation, fold %d of %d", f + 1, folds);
		initStringInfo(&ignored);
		model = kind->train(options, &rest, fold_context, &progress, &ignored);

		scratch = kind->new_scratch(model, fold_context);
		predictions = palloc(sizeof(TriagePrediction) * kind->label_count(model));
		for (int64 i = 0; i < set.n; i++)
		{
			const TrainingExample *example = &set.examples[i];
			Datum		values[5];
			bool		nulls[5] = {false, false, false, false, false};
			int32		n;
			char		errbuf[256];
			TriageStatus status;

			if (fold_of[i] != f)
				continue;
			CHECK_FOR_INTERRUPTS();
			status = kind->predict(model, scratch, example->text, example->len, 1, 0.0f,
								   predictions, &n, errbuf, sizeof(errbuf));
			if (status != TRIAGE_OK)
				ReportModelError(kind->title, NULL, status, errbuf, "predicting a held-out row");
			values[0] = PointerGetDatum(cstring_to_text_with_len(example->text, (int) example->len));
			values[1] = CStringGetTextDatum(set.labels[example->label]);
			if (n > 0)
			{
				values[2] = PointerGetDatum(ClassifierLabelText(kind, model, predictions[0].label));
				values[3] = Float4GetDatum(predictions[0].probability);
			}
			else
				nulls[2] = nulls[3] = true; /* no word of the row is known */
			values[4] = Int32GetDatum(f + 1);
			tuplestore_putvalues(store, tupdesc, values, nulls);
		}
		MemoryContextSwitchTo(old);
		MemoryContextDelete(fold_context);
	}
	MemoryContextDelete(context);
	return (Datum) 0;
}
