/*
 * fasttext_sql.c
 *		SQL-callable functions over fastText files and models: inspect a
 *		file, and classify arrays of inputs with OpenBLAS.
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

static Datum
ParamsJsonb(const FastTextModel *model, size_t bytes)
{
	StringInfoData buf;
	const FastTextArgs *a = FastTextModelArgs(model);
	int32		form = FastTextInputForm(model);

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"format\": \"fasttext\", \"file_version\": %d, \"bytes\": %zu, "
					 "\"dim\": %d, \"loss\": \"%s\", \"wordNgrams\": %d, \"minn\": %d, \"maxn\": %d, "
					 "\"bucket\": %d, \"epoch\": %d, \"minCount\": %d, \"neg\": %d, \"ws\": %d, "
					 "\"lrUpdateRate\": %d, \"t\": %.17g, \"nwords\": %d, \"nlabels\": %d, "
					 "\"quantized\": %s, \"quantization\": \"%s\", \"qout\": %s, \"pruned\": %s}",
					 FastTextFileVersion(model), bytes, a->dim, LossName(a->loss), a->wordNgrams,
					 a->minn, a->maxn, a->bucket, a->epoch, a->minCount, a->neg, a->ws,
					 a->lrUpdateRate, isfinite(a->t) ? a->t : 0.0, FastTextWordCount(model),
					 FastTextLabelCount(model),
					 form != FASTTEXT_INPUT_DENSE ? "true" : "false",
					 form == FASTTEXT_INPUT_PQ ? "pq" : form == FASTTEXT_INPUT_INT8 ? "int8" : "none",
					 FastTextOutputQuantized(model) ? "true" : "false",
					 FastTextIsPruned(model) ? "true" : "false");
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
	model = LoadFastTextBytea(data, context);
	CheckFastTextLabels(model);

	labels = palloc(sizeof(Datum) * FastTextLabelCount(model));
	for (int32 i = 0; i < FastTextLabelCount(model); i++)
	{
		CHECK_FOR_INTERRUPTS();
		labels[i] = PointerGetDatum(FastTextLabelText(model, i));
	}
	values[0] = PointerGetDatum(construct_array(labels, FastTextLabelCount(model), TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = ParamsJsonb(model, VARSIZE_ANY_EXHDR(data));
	MemoryContextDelete(context);

	tupdesc = BlessTupleDesc(tupdesc);
	tuple = heap_form_tuple(tupdesc, values, nulls);
	PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
}

PG_FUNCTION_INFO_V1(triage_classify_batch);

/*
 * classify_batch(name, inputs text[]) returns table(ord, label, confidence):
 * the top label of every input.  For fastText models the output layer is
 * computed for all of them at once with OpenBLAS (fasttext_batch.c); other
 * kinds answer one input at a time.  NULL inputs, and inputs with no
 * evidence, give NULL labels.
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
	TriagePrediction *predictions;
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
	ModelRequireKind(model, MODEL_KIND_CLASSIFIER);
	predictions = palloc(sizeof(TriagePrediction) * Max(n, 1));
	found = palloc(sizeof(bool) * Max(n, 1));
	if (model->classifier != &FastTextKind)
	{
		/* a kind without a batched output layer: one input at a time */
		for (int i = 0; i < n; i++)
		{
			CHECK_FOR_INTERRUPTS();
			found[i] = !elem_nulls[i] &&
				ModelPredict(model, LimitInput(DatumGetTextPP(elems[i])), 1, 0.0f) > 0;
			if (found[i])
				predictions[i] = model->predictions[0];
		}
	}
	else
	{
		FastTextModel *fasttext = model->state;

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
		hidden = palloc_extended(mul_size(Max(n, 1), mul_size(FastTextModelArgs(fasttext)->dim, sizeof(float))),
								 MCXT_ALLOC_HUGE);
		scores = palloc_extended(mul_size(Max(n, 1), mul_size(FastTextLabelCount(fasttext), sizeof(float))),
								 MCXT_ALLOC_HUGE);
		status = FastTextPredictBatch(fasttext, model->scratch, texts, lens, n,
									  hidden, scores, predictions, found, errbuf, sizeof(errbuf));
		if (status != TRIAGE_OK)
			ReportFastTextError(status, errbuf, psprintf("model \"%s\" version %d", model->name, model->version));
		TrimModelScratch(model);
	}

	for (int i = 0; i < n; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, !found[i], !found[i]};

		values[0] = Int32GetDatum(i + 1);
		values[1] = found[i] ? PointerGetDatum(ModelLabelText(model, predictions[i].label)) : (Datum) 0;
		values[2] = found[i] ? Float4GetDatum(predictions[i].probability) : (Datum) 0;
		tuplestore_putvalues(store, tupdesc, values, nulls);
	}
	return (Datum) 0;
}
