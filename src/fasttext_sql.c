/*
 * fasttext_sql.c
 *		SQL-callable functions over fastText classifiers: inspect a model
 *		file, predict the top k labels, classify.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "fasttext_batch.h"
#include "triage.h"

static const char *
LossName(int32 loss)
{
	switch (loss)
	{
		case FASTTEXT_LOSS_HS:
			return "hs";
		case FASTTEXT_LOSS_NS:
			return "ns";
		case FASTTEXT_LOSS_SOFTMAX:
			return "softmax";
		case FASTTEXT_LOSS_OVA:
			return "ova";
	}
	return "unknown";
}

/*
 * Labels become text values, so they must be valid in the server encoding;
 * the file is untrusted, so check every one once, when the model is loaded.
 */
void
CheckFastTextLabels(const FastTextModel *model)
{
	for (int32 i = 0; i < model->nlabels; i++)
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
	size_t		len;
	const char *name = FastTextLabelName(model, label, &len);

	/* labels are UTF-8 (checked at load): in the database's encoding, or an error */
	if (GetDatabaseEncoding() != PG_UTF8 && GetDatabaseEncoding() != PG_SQL_ASCII)
	{
		name = pg_any_to_server(pnstrdup(name, len), (int) len, PG_UTF8);
		len = strlen(name);
	}
	return cstring_to_text_with_len(name, (int) len);
}

static Datum
ParamsJsonb(const FastTextModel *model, size_t bytes)
{
	StringInfoData buf;
	const FastTextArgs *a = &model->args;

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"format\": \"fasttext\", \"file_version\": %d, \"bytes\": %zu, "
					 "\"dim\": %d, \"loss\": \"%s\", \"wordNgrams\": %d, \"minn\": %d, \"maxn\": %d, "
					 "\"bucket\": %d, \"epoch\": %d, \"minCount\": %d, \"neg\": %d, \"ws\": %d, "
					 "\"lrUpdateRate\": %d, \"t\": %.17g, \"nwords\": %d, \"nlabels\": %d, "
					 "\"quantized\": %s, \"quantization\": \"%s\", \"qout\": %s, \"pruned\": %s}",
					 model->version, bytes, a->dim, LossName(a->loss), a->wordNgrams,
					 a->minn, a->maxn, a->bucket, a->epoch, a->minCount, a->neg, a->ws,
					 a->lrUpdateRate, isfinite(a->t) ? a->t : 0.0, model->nwords, model->nlabels,
					 model->quant_input || model->int8_input ? "true" : "false",
					 model->quant_input ? "pq" : model->int8_input ? "int8" : "none",
					 model->quant_input && model->qout ? "true" : "false",
					 model->pruneidx_size >= 0 ? "true" : "false");
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

PG_FUNCTION_INFO_V1(triage_inspect_fasttext);

/* Validate a fastText model file and describe it: its labels and parameters */
Datum
triage_inspect_fasttext(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);
	MemoryContext context;
	FastTextModel *model;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	Datum	   *labels;
	HeapTuple	tuple;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	/* the model is thrown away: load it where one delete frees it all */
	context = AllocSetContextCreate(CurrentMemoryContext, "pg_triage inspect", ALLOCSET_DEFAULT_SIZES);
	model = LoadModelBytea(data, context);
	CheckFastTextLabels(model);

	labels = palloc(sizeof(Datum) * model->nlabels);
	for (int32 i = 0; i < model->nlabels; i++)
	{
		CHECK_FOR_INTERRUPTS();
		labels[i] = PointerGetDatum(FastTextLabelText(model, i));
	}
	values[0] = PointerGetDatum(construct_array(labels, model->nlabels, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = ParamsJsonb(model, VARSIZE_ANY_EXHDR(data));
	MemoryContextDelete(context);

	tupdesc = BlessTupleDesc(tupdesc);
	tuple = heap_form_tuple(tupdesc, values, nulls);
	PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
}

/*
 * A tuplestore and result descriptor for a set-returning function in
 * materialize mode (PostgreSQL 15's InitMaterializedSRF, written out so
 * that 13 and 14 build too).  Only the tuplestore goes in the query's
 * memory: the descriptor, and what building it leaves behind, stay in the
 * call's, which the executor resets (it frees the descriptor after reading
 * it).  Built in the query's memory, they cost a kilobyte per call for the
 * whole query.
 */
Tuplestorestate *
BeginMaterialize(FunctionCallInfo fcinfo, TupleDesc *tupdesc)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;
	Tuplestorestate *store;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	store = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(old);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = store;
	rsinfo->setDesc = *tupdesc;
	return store;
}

/*
 * Run the model on input (up to triage.max_input_bytes of it, and
 * triage.max_tokens tokens); returns the number of predictions.
 */
int32
ModelPredict(CachedModel *model, text *input, int32 k, float threshold)
{
	int32		n;
	char		errbuf[256];
	TriageStatus status;

	ModelRequireKind(model, MODEL_KIND_FASTTEXT);
	status = FastTextPredict(model->fasttext, &model->scratch, VARDATA_ANY(input),
							 LimitInputLength(VARDATA_ANY(input), VARSIZE_ANY_EXHDR(input)),
							 k, threshold, model->predictions, &n, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportCoreError(status, errbuf,
						psprintf("model \"%s\" version %d", model->name, model->version));

	/*
	 * No evidence: no word or subword of the input maps to a row, and the
	 * answer would be the model's prior for an empty line ("</s>" alone),
	 * often with a confidence near 1.  No prediction instead: classify gives
	 * NULL and routing escalates.
	 */
	if (model->scratch.text_rows == 0)
		n = 0;
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

		values[0] = PointerGetDatum(FastTextLabelText(model->fasttext, model->predictions[i].label));
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
	values[0] = PointerGetDatum(FastTextLabelText(model->fasttext, model->predictions[0].label));
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

PG_FUNCTION_INFO_V1(triage_classify_batch);

/*
 * classify_batch(name, inputs text[]) returns table(ord, label, confidence):
 * the top label of every input, the output layer computed for all of them
 * at once with OpenBLAS (fasttext_batch.c).  NULL inputs give NULL labels.
 */
Datum
triage_classify_batch(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	ArrayType  *inputs = PG_GETARG_ARRAYTYPE_P(1);
	CachedModel *model;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			n;
	const char **texts;
	size_t	   *lens;
	float	   *hidden;
	float	   *scores;
	FastTextPrediction *predictions;
	bool	   *found;
	TupleDesc	tupdesc;
	Tuplestorestate *store;
	char		errbuf[256];
	TriageStatus status;

	store = BeginMaterialize(fcinfo, &tupdesc);
	if (ARR_NDIM(inputs) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("inputs must be a one-dimensional array")));
	deconstruct_array(inputs, TEXTOID, -1, false, TYPALIGN_INT, &elems, &elem_nulls, &n);

	model = ModelRefGet(fcinfo, name, 0);
	ModelRequireKind(model, MODEL_KIND_FASTTEXT);
	texts = palloc(sizeof(char *) * Max(n, 1));
	lens = palloc(sizeof(size_t) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		text	   *t;

		if (elem_nulls[i])
		{
			texts[i] = NULL;
			lens[i] = 0;
			continue;
		}
		t = DatumGetTextPP(elems[i]);
		texts[i] = VARDATA_ANY(t);
		lens[i] = LimitInputLength(texts[i], VARSIZE_ANY_EXHDR(t));
	}
	hidden = palloc_extended(mul_size(Max(n, 1), mul_size(model->fasttext->args.dim, sizeof(float))),
							 MCXT_ALLOC_HUGE);
	scores = palloc_extended(mul_size(Max(n, 1), mul_size(model->fasttext->nlabels, sizeof(float))),
							 MCXT_ALLOC_HUGE);
	predictions = palloc(sizeof(FastTextPrediction) * Max(n, 1));
	found = palloc(sizeof(bool) * Max(n, 1));
	status = FastTextPredictBatch(model->fasttext, &model->scratch, texts, lens, n,
								  hidden, scores, predictions, found, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportCoreError(status, errbuf, psprintf("model \"%s\" version %d", model->name, model->version));
	TrimModelScratch(model);

	for (int i = 0; i < n; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, !found[i], !found[i]};

		values[0] = Int32GetDatum(i + 1);
		values[1] = found[i] ? PointerGetDatum(FastTextLabelText(model->fasttext, predictions[i].label)) : (Datum) 0;
		values[2] = found[i] ? Float4GetDatum(predictions[i].probability) : (Datum) 0;
		tuplestore_putvalues(store, tupdesc, values, nulls);
	}
	return (Datum) 0;
}
