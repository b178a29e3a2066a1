/*
 * quantize_sql.c
 *		triage.quantize_fasttext(model bytea, options jsonb): fastText's
 *		quantize (cutoff by norm, product quantization of the input, and of
 *		the output with qout) on a stored dense model.  triage.quantize()
 *		stores the result as a new version.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "fasttext_quantize.h"
#include "train_options.h"
#include "triage.h"

PG_FUNCTION_INFO_V1(triage_quantize_fasttext);

Datum
triage_quantize_fasttext(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);
	Jsonb	   *options_json = PG_GETARG_JSONB_P(1);
	TriageTrainOptions options;
	FastTextQuantizeOptions q;
	MemoryContext context;
	TriageAllocator allocator;
	FastTextModel *model;
	TriageStatus status;
	char		errbuf[256];
	bytea	   *result;

	ParseQuantizeOptions(options_json, &options);
	context = AllocSetContextCreate(CurrentMemoryContext, "pg_triage quantize", ALLOCSET_DEFAULT_SIZES);
	allocator = ContextAllocator(context);
	model = LoadFastTextBytea(data, context);
	if (FastTextInputForm(model) != FASTTEXT_INPUT_DENSE)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model is already quantized"),
				 errhint("Quantize a dense version (params->>'quantized' = 'false').")));

	FastTextQuantizeDefaults(&q);
	q.dsub = options.dsub;
	q.qnorm = options.qnorm;
	q.qout = options.qout;
	q.cutoff = options.cutoff;
	if (q.dsub > FastTextModelArgs(model)->dim)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"dsub\" (%d) must not exceed the model's dimension (%d)",
						q.dsub, FastTextModelArgs(model)->dim)));
	CHECK_FOR_INTERRUPTS();
	if (options.int8)
	{
		/* the cutoff the PQ path does inside FastTextQuantize */
		if (q.cutoff > 0 && q.cutoff < FastTextInputRows(model))
		{
			int32_t    *keep;
			int64_t		nkeep;

			status = FastTextSelectRows(model, q.cutoff, &allocator, &keep, &nkeep, errbuf, sizeof(errbuf));
			if (status == TRIAGE_OK)
				status = FastTextPrune(model, keep, nkeep, errbuf, sizeof(errbuf));
			if (status != TRIAGE_OK)
				ReportFastTextError(status, errbuf, "pruning a model");
		}
		status = FastTextQuantizeInt8(model, errbuf, sizeof(errbuf));
	}
	else
		status = FastTextQuantize(model, &q, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ReportFastTextError(status, errbuf, "quantizing a model");
	result = SaveFastTextBytea(model, context, "the quantized model");
	MemoryContextDelete(context);
	PG_RETURN_BYTEA_P(result);
}

PG_FUNCTION_INFO_V1(triage_fasttext_file);

/*
 * fasttext_file(model bytea): the model as a file the fasttext tool reads.
 * fastText files pass through unchanged; int8 models are dequantized.
 */
Datum
triage_fasttext_file(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);
	MemoryContext context;
	FastTextModel *model;
	TriageStatus status;
	char		errbuf[256];
	bytea	   *result;

	context = AllocSetContextCreate(CurrentMemoryContext, "pg_triage export", ALLOCSET_DEFAULT_SIZES);
	model = LoadFastTextBytea(data, context);
	if (FastTextInputForm(model) != FASTTEXT_INPUT_INT8)
	{
		MemoryContextDelete(context);
		PG_RETURN_BYTEA_P(data);
	}
	status = FastTextDequantizeInt8(model, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot export this model to fastText: %s", errbuf),
				 errhint("Quantize with method \"pq\" for a model the fasttext tool can read, or int8 without a cutoff.")));
	result = SaveFastTextBytea(model, context, "the dense model");
	MemoryContextDelete(context);
	PG_RETURN_BYTEA_P(result);
}
