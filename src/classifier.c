/*
 * classifier.c
 *		Classification with a model of any kind: the kinds pg_triage knows,
 *		running a loaded model on an input, its labels as text, and the SQL
 *		functions triage.predict() and triage.classify().
 */
#include "postgres.h"

#include <math.h>

#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "triage.h"

/* Every classifier kind, by triage.models.kind */
static const ClassifierKind *const ClassifierKinds[] = {&FastTextKind, &LinearKind};

/* The kind called name; NULL if there is none and missing_ok */
const ClassifierKind *
FindClassifierKind(const char *name, bool missing_ok)
{
	for (int i = 0; i < lengthof(ClassifierKinds); i++)
		if (strcmp(ClassifierKinds[i]->name, name) == 0)
			return ClassifierKinds[i];
	if (!missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown classifier kind \"%s\"", name),
				 errhint("The kinds are \"linear\" (the default) and \"fasttext\".")));
	return NULL;
}

/* A label as users see it: text in the database encoding */
text *
ClassifierLabelText(const ClassifierKind *kind, const void *model, int32 label)
{
	size_t		len;
	const char *name = kind->label_name(model, label, &len);

	if (GetDatabaseEncoding() != PG_UTF8 && GetDatabaseEncoding() != PG_SQL_ASCII)
	{
		name = pg_any_to_server(pnstrdup(name, len), (int) len, PG_UTF8);
		len = strlen(name);
	}
	return cstring_to_text_with_len(name, (int) len);
}

text *
ModelLabelText(CachedModel *model, int32 label)
{
	return ClassifierLabelText(model->classifier, model->state, label);
}

/* A label as the model holds it (UTF-8), for messages and JSON */
const char *
ModelLabelName(CachedModel *model, int32 label, size_t *len)
{
	return model->classifier->label_name(model->state, label, len);
}

/*
 * Whether a progress NOTICE is due (5 seconds since the last one), and the
 * seconds since the start.  Checks for interrupts: may not return.
 */
bool
TrainingProgressDue(TrainingProgress *progress, double *elapsed)
{
	instr_time	now;

	CHECK_FOR_INTERRUPTS();
	INSTR_TIME_SET_CURRENT(now);
	if (INSTR_TIME_GET_DOUBLE(now) - INSTR_TIME_GET_DOUBLE(progress->last) < 5.0)
		return false;
	*elapsed = INSTR_TIME_GET_DOUBLE(now) - INSTR_TIME_GET_DOUBLE(progress->start);
	progress->last = now;
	return true;
}

/*
 * Run the model on input (up to triage.max_input_bytes of it, and
 * triage.max_tokens tokens); returns the number of predictions, 0 when the
 * input gives no evidence (no word or subword of it is known to the model:
 * the answer would be the model's prior, often with a confidence near 1, so
 * classify gives NULL and routing escalates instead).
 */
int32
ModelPredict(CachedModel *model, text *input, int32 k, float threshold)
{
	int32		n;
	char		errbuf[256];
	TriageStatus status;

	ModelRequireKind(model, MODEL_KIND_CLASSIFIER);
	status = model->classifier->predict(model->state, model->scratch, VARDATA_ANY(input),
										LimitInputLength(VARDATA_ANY(input), VARSIZE_ANY_EXHDR(input)),
										k, threshold, model->predictions, &n, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportModelError(model->classifier->title, NULL, status, errbuf,
						 psprintf("model \"%s\" version %d", model->name, model->version));
	/* a long input leaves nothing big behind, even in a long-lived caller */
	TrimModelScratch(model);
	return n;
}

static void
CheckTopK(int32 k, float threshold)
{
	if (k == 0 || k < -1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("k must be at least 1, or -1 for every label, not %d", k)));
	if (isnan(threshold))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("threshold must be a number, not NaN")));
}

PG_FUNCTION_INFO_V1(triage_predict);

/* The k most likely labels of input with probability >= threshold, best first */
Datum
triage_predict(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	text	   *input = LimitInput((text *) PG_GETARG_RAW_VARLENA_P(1));
	int32		k = PG_GETARG_INT32(2);
	float4		threshold = PG_GETARG_FLOAT4(3);
	TupleDesc	tupdesc;
	Tuplestorestate *store;
	CachedModel *model;
	int32		n;

	CheckTopK(k, threshold);
	store = BeginMaterialize(fcinfo, &tupdesc);

	model = ModelRefGet(fcinfo, name, 0);
	n = ModelPredict(model, input, k, threshold);

	for (int32 i = 0; i < n; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = PointerGetDatum(ModelLabelText(model, model->predictions[i].label));
		values[1] = Float4GetDatum(model->predictions[i].probability);
		tuplestore_putvalues(store, tupdesc, values, nulls);
	}
	return (Datum) 0;
}

/* The top label and its probability as a triage.prediction, or NULL */
static Datum
Classify(FunctionCallInfo fcinfo, text *name, int32 version, text *input)
{
	CachedModel *model = ModelRefGet(fcinfo, name, version);
	ModelRef   *ref = (ModelRef *) fcinfo->flinfo->fn_extra;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (ModelPredict(model, input, 1, 0.0f) == 0)
		PG_RETURN_NULL();
	if (ref->tupdesc == NULL)
	{
		TupleDesc	tupdesc;
		MemoryContext old;

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		ref->tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		MemoryContextSwitchTo(old);
	}
	values[0] = PointerGetDatum(ModelLabelText(model, model->predictions[0].label));
	values[1] = Float4GetDatum(model->predictions[0].probability);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(ref->tupdesc, values, nulls)));
}

PG_FUNCTION_INFO_V1(triage_classify);

/* classify(name, input): with the deployed version */
Datum
triage_classify(PG_FUNCTION_ARGS)
{
	return Classify(fcinfo, PG_GETARG_TEXT_PP(0), 0, LimitInput((text *) PG_GETARG_RAW_VARLENA_P(1)));
}

PG_FUNCTION_INFO_V1(triage_classify_version);

/* classify(name, version, input): a fixed version, so IMMUTABLE */
Datum
triage_classify_version(PG_FUNCTION_ARGS)
{
	int32		version = PG_GETARG_INT32(1);

	if (version <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model version %d is invalid", version),
				 errhint("Versions start at 1; omit the version to use the deployed one.")));
	return Classify(fcinfo, PG_GETARG_TEXT_PP(0), version,
					LimitInput((text *) PG_GETARG_RAW_VARLENA_P(2)));
}
