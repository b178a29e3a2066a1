/*
 * crf_sql.c
 *		SQL-callable functions over CRF field extractors: train one from a
 *		query of (input, fields) rows, extract fields as jsonb.
 *
 * The extractor itself is the core in crf_*.c; this file converts Datums,
 * reads the training rows through a cursor, and turns byte offsets into
 * character offsets for users.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "crf.h"
#include "triage.h"

/* The training rows, copied out of SPI */
typedef struct ExtractorTrainingSet
{
	CrfExample *examples;
	int64		n;
	int64		capacity;
	int64		skipped_null_input;
	MemoryContext target;		/* where the rows are copied */
} ExtractorTrainingSet;

/* One numeric option of train_extractor */
typedef struct CrfOptionSpec
{
	const char *name;
	bool		integer;
} CrfOptionSpec;

static const CrfOptionSpec CrfOptionSpecs[] = {
	{"max_iterations", true},
	{"l2", false},
	{"epsilon", false},
	{"delta", false},
	{"min_feature_count", true},
	{"max_parameters", true},
	{"seed", true},
	{"context_dropout", false},
	{"lexicon_folds", true},
	{"lexicon_min_ratio", false},
	{"max_tokens", true},
};

static void
SetCrfOption(CrfTrainOptions *options, const char *name, double value)
{
	if (strcmp(name, "max_iterations") == 0)
		options->max_iterations = (int32) value;
	else if (strcmp(name, "l2") == 0)
		options->l2 = value;
	else if (strcmp(name, "epsilon") == 0)
		options->epsilon = value;
	else if (strcmp(name, "delta") == 0)
		options->delta = value;
	else if (strcmp(name, "min_feature_count") == 0)
		options->min_feature_count = (int32) value;
	else if (strcmp(name, "max_parameters") == 0)
		options->max_parameters = (int64) value;
	else if (strcmp(name, "seed") == 0)
		options->seed = (uint64) value;
	else if (strcmp(name, "context_dropout") == 0)
		options->context_dropout = value;
	else if (strcmp(name, "lexicon_folds") == 0)
		options->lexicon_folds = (int32) value;
	else if (strcmp(name, "lexicon_min_ratio") == 0)
		options->lexicon_min_ratio = value;
	else if (strcmp(name, "max_tokens") == 0)
		options->max_tokens = (int32) value;
}

/* Options jsonb -> CrfTrainOptions: known keys, numbers, ranges checked by the core */
static void
ParseExtractorOptions(Jsonb *json, CrfTrainOptions *options)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken token;
	char		errbuf[256];
	char	   *key = NULL;

	CrfTrainDefaults(options);
	if (!JB_ROOT_IS_OBJECT(json))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("extractor options must be a JSON object"),
				 errhint("For example '{\"max_iterations\": 100, \"l2\": 0.05}'.")));
	it = JsonbIteratorInit(&json->root);
	while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		const CrfOptionSpec *spec = NULL;
		double		value;

		if (token == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (token != WJB_VALUE)
			continue;
		for (int i = 0; i < lengthof(CrfOptionSpecs); i++)
			if (strcmp(CrfOptionSpecs[i].name, key) == 0)
				spec = &CrfOptionSpecs[i];
		if (spec == NULL)
		{
			StringInfoData names;

			initStringInfo(&names);
			for (int i = 0; i < lengthof(CrfOptionSpecs); i++)
				appendStringInfo(&names, "%s%s", i ? ", " : "", CrfOptionSpecs[i].name);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown extractor option \"%s\"", key),
					 errhint("Known options: %s.", names.data)));
		}
		if (v.type != jbvNumeric)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("extractor option \"%s\" must be a number", key)));
		value = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric)));
		if (!isfinite(value) || (spec->integer && (value != floor(value) || fabs(value) > 9e15)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("extractor option \"%s\" must be %s", key,
							spec->integer ? "a whole number" : "a finite number")));
		if (spec->integer && value < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("extractor option \"%s\" must not be negative", key)));
		SetCrfOption(options, key, value);
	}
	if (CrfCheckOptions(options, errbuf, sizeof(errbuf)) != TRIAGE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", errbuf)));
}

/* The (field, value) pairs of one row's fields jsonb, checked */
static void
ReadFields(Jsonb *fields, int64 row, CrfExample *example)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken token;
	int			n = JB_ROOT_COUNT(fields);
	const char **names;
	const char **values;
	char	   *key = NULL;
	int			count = 0;

	if (!JB_ROOT_IS_OBJECT(fields) || JB_ROOT_IS_SCALAR(fields))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("fields of training row %lld must be a JSON object of field names to values",
						(long long) row),
				 errhint("For example {\"order_id\": \"A-10293\", \"amount\": \"129.99\"}.")));
	names = palloc(sizeof(char *) * Max(n, 1));
	values = palloc(sizeof(char *) * Max(n, 1));
	it = JsonbIteratorInit(&fields->root);
	while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (token == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (token != WJB_VALUE)
			continue;
		if (v.type == jbvNull)
			continue;			/* a field the row does not have */
		if (v.type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("field \"%s\" of training row %lld is not a string", key, (long long) row),
					 errhint("Write every value as a JSON string, as it reads in the text: {\"amount\": \"129.99\"}.")));
		if (strlen(key) == 0 || strlen(key) > CRF_MAX_FIELD_NAME)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("field name of training row %lld must have 1 to %d bytes", (long long) row,
							CRF_MAX_FIELD_NAME)));
		CheckTrainingText(key, strlen(key));
		CheckTrainingText(v.val.string.val, v.val.string.len);
		names[count] = key;
		values[count] = pnstrdup(v.val.string.val, v.val.string.len);
		count++;
	}
	example->nfields = count;
	example->field_names = names;
	example->values = values;
}

static void
CheckExtractorColumns(TupleDesc tupdesc, void *arg)
{
	if (tupdesc->natts != 2 ||
		(SPI_gettypeid(tupdesc, 1) != TEXTOID && SPI_gettypeid(tupdesc, 1) != VARCHAROID) ||
		SPI_gettypeid(tupdesc, 2) != JSONBOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("training query must return two columns (input text, fields jsonb)"),
				 errhint("Cast the columns: SELECT body::text, fields::jsonb FROM ...")));
}

/* Copy one (input, fields) row into the set, out of SPI's memory */
static void
AddExtractorRow(HeapTuple tuple, TupleDesc tupdesc, int64 row, void *arg)
{
	ExtractorTrainingSet *set = (ExtractorTrainingSet *) arg;
	bool		input_null,
				fields_null;
	Datum		input = SPI_getbinval(tuple, tupdesc, 1, &input_null);
	Datum		fields = SPI_getbinval(tuple, tupdesc, 2, &fields_null);
	MemoryContext old;
	text	   *input_text;
	CrfExample *example;

	if (input_null || fields_null)
	{
		set->skipped_null_input++;
		return;
	}
	old = MemoryContextSwitchTo(set->target);
	if (set->n == set->capacity)
	{
		set->capacity = set->capacity ? set->capacity * 2 : 1024;
		set->examples = set->examples == NULL
			? MemoryContextAllocHuge(set->target, sizeof(CrfExample) * set->capacity)
			: repalloc_huge(set->examples, sizeof(CrfExample) * set->capacity);
	}
	example = &set->examples[set->n];
	input_text = (text *) PG_DETOAST_DATUM_COPY(input);
	example->text = VARDATA_ANY(input_text);
	example->len = VARSIZE_ANY_EXHDR(input_text);
	CheckTrainingText(example->text, example->len);
	ReadFields(DatumGetJsonbP(fields), row, example);
	set->n++;
	MemoryContextSwitchTo(old);
}

/* Run query and copy its (input, fields) rows into target */
static void
ReadExtractorTrainingSet(const char *query, ExtractorTrainingSet *set, MemoryContext target)
{
	static const QueryRowsSpec spec = {
		.purpose = "training",
		.columns = "(input text, fields jsonb)",
		.example = "SELECT body, fields FROM labeled_messages",
		.batch = 1000,
		.check = CheckExtractorColumns,
		.row = AddExtractorRow
	};

	set->target = target;
	ForEachQueryRow(query, &spec, set);
	if (set->n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("training query returned no rows with an input and fields"),
				 errhint("It must return (input text, fields jsonb) rows.")));
}

static Datum
TrainReportJsonb(const CrfModel *model, const CrfTrainReport *report, const CrfTrainOptions *options,
				 int64 skipped, Datum *params)
{
	StringInfoData buf;
	int64		features,
				weights,
				lexicon;

	CrfModelStats(model, &features, &weights, &lexicon);
	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"train\": {\"rows\": %lld, \"rows_skipped_null\": %lld, \"tokens\": %lld, "
					 "\"truncated\": %lld, \"values\": %lld, \"aligned_exact\": %lld, "
					 "\"aligned_ignoring_case\": %lld, \"aligned_as_number\": %lld, "
					 "\"unaligned\": %lld, \"unaligned_by_field\": {",
					 (long long) report->examples, (long long) skipped, (long long) report->tokens,
					 (long long) report->truncated, (long long) report->values,
					 (long long) report->aligned_exact, (long long) report->aligned_fold,
					 (long long) report->aligned_number, (long long) report->unaligned);
	for (int32 f = 0; f < CrfFieldCount(model); f++)
	{
		if (f > 0)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, CrfFieldName(model, f));
		appendStringInfo(&buf, ": %lld", (long long) report->unaligned_by_field[f]);
	}
	appendStringInfo(&buf, "}, \"iterations\": %d, \"loss\": %.6g}}",
					 report->iterations, isfinite(report->loss) ? report->loss : 0.0);

	*params = DirectFunctionCall1(jsonb_in, CStringGetDatum(psprintf(
		"{\"format\": \"crf\", \"fields\": %d, \"features\": %lld, \"weights\": %lld, "
		"\"lexicon\": %lld, \"max_iterations\": %d, \"l2\": %.17g, \"epsilon\": %.17g, "
		"\"delta\": %.17g, \"min_feature_count\": %d, \"max_parameters\": %lld, \"seed\": %llu, "
		"\"context_dropout\": %.17g, \"lexicon_folds\": %d, \"lexicon_min_ratio\": %.17g, "
		"\"max_tokens\": %d}",
		CrfFieldCount(model), (long long) features, (long long) weights, (long long) lexicon,
		options->max_iterations, options->l2, options->epsilon, options->delta,
		report->min_feature_count, (long long) options->max_parameters,
		(unsigned long long) options->seed, options->context_dropout, options->lexicon_folds,
		options->lexicon_min_ratio, options->max_tokens)));
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

PG_FUNCTION_INFO_V1(triage_train_crf);

/*
 * train_crf(query, options, OUT data, OUT fields, OUT params, OUT metrics):
 * trains an extractor on the (input, fields) rows of query, without storing
 * it (triage.train_extractor stores it).
 */
Datum
triage_train_crf(PG_FUNCTION_ARGS)
{
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *options_json = PG_GETARG_JSONB_P(1);
	CrfTrainOptions options;
	ExtractorTrainingSet set;
	MemoryContext context;
	MemoryContext old;
	TriageAllocator allocator;
	CrfModel   *model = NULL;
	CrfTrainReport report;
	TriageStatus status;
	char		errbuf[256];
	uint8_t    *bytes;
	size_t		nbytes;
	bytea	   *data;
	Datum	   *names;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	ParseExtractorOptions(options_json, &options);

	/* the rows and the model live here, and go with one delete */
	context = AllocSetContextCreate(CurrentMemoryContext, "pg_triage extractor training",
									ALLOCSET_DEFAULT_SIZES);
	memset(&set, 0, sizeof(set));
	ReadExtractorTrainingSet(query, &set, context);

	allocator = ContextAllocator(context);
	memset(&report, 0, sizeof(report));
	status = CrfTrain(&options, set.examples, set.n, &allocator, &model, &report, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ereport(ERROR,
				(errcode(status == TRIAGE_OUT_OF_MEMORY ? ERRCODE_OUT_OF_MEMORY : ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("could not train the extractor: %s", errbuf)));
	if (report.unaligned > 0)
		ereport(NOTICE,
				(errmsg("%lld of %lld field values were not found in their input and were left out",
						(long long) report.unaligned, (long long) report.values),
				 errhint("See metrics->'train'->'unaligned_by_field' of the new version.")));

	status = CrfSave(model, &allocator, &bytes, &nbytes, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportCoreError(status, errbuf, "saving the extractor");
	if (nbytes > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the extractor takes %zu bytes, more than a bytea can hold", nbytes),
				 errhint("Raise \"min_feature_count\" or lower \"max_parameters\".")));

	old = MemoryContextSwitchTo(MemoryContextGetParent(context));
	data = palloc(nbytes + VARHDRSZ);
	SET_VARSIZE(data, nbytes + VARHDRSZ);
	memcpy(VARDATA(data), bytes, nbytes);
	names = palloc(sizeof(Datum) * Max(CrfFieldCount(model), 1));
	for (int32 f = 0; f < CrfFieldCount(model); f++)
		names[f] = CStringGetTextDatum(CrfFieldName(model, f));
	values[0] = PointerGetDatum(data);
	values[1] = PointerGetDatum(construct_array(names, CrfFieldCount(model), TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = TrainReportJsonb(model, &report, &options, set.skipped_null_input, &values[2]);
	MemoryContextSwitchTo(old);

	CrfFree(model);
	MemoryContextDelete(context);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * Field names become jsonb keys and text, so they must be valid in the
 * database encoding (a name with a stray byte would be stored, and then
 * make a dump of triage.models impossible to restore).  The file is
 * untrusted: checked when it is imported and when it is loaded.
 */
void
CheckCrfFieldNames(const CrfModel *model, const char *what)
{
	for (int32 f = 0; f < CrfFieldCount(model); f++)
	{
		const char *name = CrfFieldName(model, f);

		if (!pg_verifymbstr(name, (int) strlen(name), true))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid extractor file: field name %d is not valid in the database encoding", f),
					 what ? errcontext("%s", what) : 0,
					 errhint("Pass the bytes of an extractor saved by pg_triage (triage.export_extractor()).")));
	}
}

PG_FUNCTION_INFO_V1(triage_inspect_crf);

/* Validate an extractor file and describe it: its fields and sizes */
Datum
triage_inspect_crf(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);
	MemoryContext context;
	TriageAllocator allocator;
	CrfModel   *model;
	TriageStatus status;
	char		errbuf[256];
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	Datum	   *names;
	int64		features,
				weights,
				lexicon;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	context = AllocSetContextCreate(CurrentMemoryContext, "pg_triage inspect extractor",
									ALLOCSET_DEFAULT_SIZES);
	allocator = ContextAllocator(context);
	status = CrfLoad((const uint8_t *) VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data), &allocator,
					 &model, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ereport(ERROR,
				(errcode(status == TRIAGE_UNSUPPORTED ? ERRCODE_FEATURE_NOT_SUPPORTED
						 : status == TRIAGE_OUT_OF_MEMORY ? ERRCODE_OUT_OF_MEMORY
						 : ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid extractor file: %s", errbuf),
				 errhint("Pass the bytes of an extractor saved by pg_triage (triage.export_extractor()).")));
	CheckCrfFieldNames(model, NULL);
	names = palloc(sizeof(Datum) * Max(CrfFieldCount(model), 1));
	for (int32 f = 0; f < CrfFieldCount(model); f++)
		names[f] = CStringGetTextDatum(CrfFieldName(model, f));
	values[0] = PointerGetDatum(construct_array(names, CrfFieldCount(model), TEXTOID, -1, false, TYPALIGN_INT));
	CrfModelStats(model, &features, &weights, &lexicon);
	values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(psprintf(
		"{\"format\": \"crf\", \"bytes\": %zu, \"fields\": %d, \"features\": %lld, "
		"\"weights\": %lld, \"lexicon\": %lld}",
		(size_t) VARSIZE_ANY_EXHDR(data), CrfFieldCount(model), (long long) features,
		(long long) weights, (long long) lexicon)));
	CrfFree(model);
	MemoryContextDelete(context);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * Run the extractor on input (up to triage.max_input_bytes of it, and
 * triage.max_tokens tokens): fills model->crf_results, returns how many.
 */
int32
ModelExtract(CachedModel *model, text *input)
{
	int32		n = 0;
	char		errbuf[256];
	TriageStatus status;

	ModelRequireKind(model, MODEL_KIND_EXTRACTOR);
	model->crf_nresults = 0;
	status = CrfExtract(model->crf, &model->crf_workspace, VARDATA_ANY(input),
						LimitInputLength(VARDATA_ANY(input), VARSIZE_ANY_EXHDR(input)),
						model->crf_results, &n, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportCoreError(status, errbuf,
						psprintf("extractor \"%s\" version %d", model->name, model->version));
	model->crf_nresults = n;
	TrimModelScratch(model);
	return n;
}

static void
PushKey(JsonbParseState **state, const char *key)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) key;
	v.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &v);
}

static void
PushNumber(JsonbParseState **state, Datum numeric)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = DatumGetNumeric(numeric);
	pushJsonbValue(state, WJB_VALUE, &v);
}

/* An offset as a numeric */
static Datum
OffsetNumeric(int64 offset)
{
#if PG_VERSION_NUM >= 140000
	return NumericGetDatum(int64_to_numeric(offset));
#else
	return DirectFunctionCall1(int8_numeric, Int64GetDatum(offset));
#endif
}

/*
 * A confidence rounded to 4 decimals, as the numeric float8_numeric would
 * give (no trailing zeros) without printing and parsing the float.
 */
static Datum
ConfidenceNumeric(float confidence)
{
#if PG_VERSION_NUM >= 140000
	int64		units = (int64) llround((double) confidence * 10000.0);
	int			decimals = 4;

	while (decimals > 0 && units % 10 == 0)
	{
		units /= 10;
		decimals--;
	}
	return NumericGetDatum(int64_div_fast_to_numeric(units, decimals));
#else
	return DirectFunctionCall1(float8_numeric, Float8GetDatum(round(confidence * 10000.0) / 10000.0));
#endif
}

/*
 * The fields of input as jsonb: {"field": {"value", "start", "end",
 * "confidence"}}, offsets in characters (end exclusive).
 */
Jsonb *
ExtractJsonb(CachedModel *model, text *input)
{
	const char *bytes = VARDATA_ANY(input);
	int32		n = ModelExtract(model, input);
	JsonbParseState *state = NULL;
	JsonbValue *result;
	uint32		byte_at = 0;
	int64		char_at = 0;

	/* jsonb sorts keys itself; offsets are counted walking the text once, in order */
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int32 i = 0; i < n; i++)
	{
		CrfResult  *r = &model->crf_results[i];
		int64		start,
					end;
		JsonbValue	v;

		if (r->start < byte_at)
		{
			byte_at = 0;
			char_at = 0;
		}
		char_at += pg_mbstrlen_with_len(bytes + byte_at, r->start - byte_at);
		start = char_at;
		end = start + pg_mbstrlen_with_len(bytes + r->start, r->end - r->start);
		byte_at = r->start;
		char_at = start;

		PushKey(&state, CrfFieldName(model->crf, r->field));
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		PushKey(&state, "value");
		v.type = jbvString;
		v.val.string.val = (char *) bytes + r->start;
		v.val.string.len = r->end - r->start;
		pushJsonbValue(&state, WJB_VALUE, &v);
		PushKey(&state, "start");
		PushNumber(&state, OffsetNumeric(start));
		PushKey(&state, "end");
		PushNumber(&state, OffsetNumeric(end));
		PushKey(&state, "confidence");
		PushNumber(&state, ConfidenceNumeric(r->confidence));
		pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	}
	result = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(result);
}

/*
 * The values of the last extraction of input by model, as a person would
 * write them down: {"field": "value"} (what an extraction policy stores in
 * the output column).
 */
Jsonb *
FieldValuesJsonb(CachedModel *model, text *input)
{
	const char *bytes = VARDATA_ANY(input);
	JsonbParseState *state = NULL;
	JsonbValue *result;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int32 i = 0; i < model->crf_nresults; i++)
	{
		CrfResult  *r = &model->crf_results[i];
		JsonbValue	v;

		PushKey(&state, CrfFieldName(model->crf, r->field));
		v.type = jbvString;
		v.val.string.val = (char *) bytes + r->start;
		v.val.string.len = r->end - r->start;
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	result = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(result);
}

PG_FUNCTION_INFO_V1(triage_extract);

/* extract(name, input) with the deployed version */
Datum
triage_extract(PG_FUNCTION_ARGS)
{
	CachedModel *model = ModelRefGet(fcinfo, PG_GETARG_TEXT_PP(0), 0);

	PG_RETURN_JSONB_P(ExtractJsonb(model, LimitInput((text *) PG_GETARG_RAW_VARLENA_P(1))));
}

PG_FUNCTION_INFO_V1(triage_extract_version);

/* extract(name, version, input): a fixed version, so IMMUTABLE */
Datum
triage_extract_version(PG_FUNCTION_ARGS)
{
	int32		version = PG_GETARG_INT32(1);
	CachedModel *model;

	if (version <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model version %d is invalid", version),
				 errhint("Versions start at 1; omit the version to use the deployed one.")));
	model = ModelRefGet(fcinfo, PG_GETARG_TEXT_PP(0), version);
	PG_RETURN_JSONB_P(ExtractJsonb(model, LimitInput((text *) PG_GETARG_RAW_VARLENA_P(2))));
}
