/*
 * route.c
 *		The routing decision: triage.route(policy, input), and RouteInput(),
 *		which the row trigger of attached tables shares.  Rules first, then
 *		the model's confidence against the policy's threshold, then the
 *		audit sample.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_collation.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"

#include "route.h"


static char *
FormatReal(float4 value)
{
	return DatumGetCString(DirectFunctionCall1(float4out, Float4GetDatum(value)));
}

/*
 * The extraction rules: a required field the extractor did not find, or a
 * (required, else any) field found with less than min_field_confidence.
 * Sets the reason and returns true when one fires.
 */
static bool
FieldRules(Policy *policy, RouteResult *result)
{
	CachedModel *extractor = result->extractor;

	for (int i = 0; i < policy->nrequired; i++)
	{
		int32		field = CrfFindField(extractor->crf, policy->required_fields[i],
										 strlen(policy->required_fields[i]));
		bool		found = false;

		for (int32 j = 0; j < extractor->crf_nresults && field >= 0; j++)
			found |= extractor->crf_results[j].field == field;
		if (!found)
		{
			result->reason = psprintf("rule required_fields: %s missing", policy->required_fields[i]);
			return true;
		}
	}
	if (policy->min_field_confidence < 0)
		return false;
	for (int32 j = 0; j < extractor->crf_nresults; j++)
	{
		const CrfResult *r = &extractor->crf_results[j];
		const char *name = CrfFieldName(extractor->crf, r->field);
		bool		checked = policy->nrequired == 0;

		for (int i = 0; i < policy->nrequired && !checked; i++)
			checked = strcmp(policy->required_fields[i], name) == 0;
		if (checked && r->confidence < policy->min_field_confidence)
		{
			result->reason = psprintf("rule min_field_confidence: %s confidence %.3f < %s", name,
									  r->confidence, FormatReal(policy->min_field_confidence));
			return true;
		}
	}
	return false;
}

/*
 * Route input under the policy: rules first, then the model's confidence,
 * then the audit sample.  describe (for route(), not the trigger): also say
 * why a kept row is kept, and give the extractor's fields as jsonb.
 */
void
RouteInput(RouteState *state, Policy *policy, text *input, bool describe, RouteResult *result)
{
	CachedModel *model;
	const char *bytes = VARDATA_ANY(input);
	int			nbytes = VARSIZE_ANY_EXHDR(input);
	int			nchars = -1;
	float4		threshold;

	result->model = NULL;
	result->extractor = NULL;
	result->label = -1;
	result->confidence = 0;
	result->fields = NULL;
	result->escalate = true;
	result->reason = NULL;
	model = NULL;
	if (policy->model[0] != '\0')
	{
		model = ModelRefLookup(&state->model_ref, policy->model, strlen(policy->model), 0);
		ModelRequireKind(model, MODEL_KIND_CLASSIFIER);
		if (policy->labels_model_serial != model->serial)
			ResolveLabelThresholds(policy, model);
		result->model = model;
		if (ModelPredict(model, input, 1, 0.0f) > 0)
		{
			result->label = model->predictions[0].label;
			result->confidence = model->predictions[0].probability;
		}
	}
	if (policy->extractor[0] != '\0')
	{
		CachedModel *extractor = ModelRefLookup(&state->extractor_ref, policy->extractor,
												strlen(policy->extractor), 0);

		ModelRequireKind(extractor, MODEL_KIND_EXTRACTOR);
		result->extractor = extractor;
		if (describe)
			result->fields = ExtractJsonb(extractor, input);
		else
			ModelExtract(extractor, input);
		if (model == NULL)
		{
			/* an extraction policy: as sure as its least sure field */
			result->confidence = extractor->crf_nresults > 0 ? 1.0f : 0.0f;
			for (int32 i = 0; i < extractor->crf_nresults; i++)
				result->confidence = Min(result->confidence, extractor->crf_results[i].confidence);
		}
	}

	if (policy->max_length >= 0 || policy->min_length >= 0)
		nchars = pg_mbstrlen_with_len(bytes, nbytes);
	if (policy->max_length >= 0 && nchars > policy->max_length)
	{
		result->reason = psprintf("rule max_length: %d characters > %d", nchars, policy->max_length);
		return;
	}
	if (policy->min_length >= 0 && nchars < policy->min_length)
	{
		result->reason = psprintf("rule min_length: %d characters < %d", nchars, policy->min_length);
		return;
	}
	if (policy->escalate_if_matches != NULL &&
		DatumGetBool(DirectFunctionCall2Coll(texticregexeq, DEFAULT_COLLATION_OID,
											 PointerGetDatum(input),
											 PointerGetDatum(policy->escalate_if_matches))))
	{
		result->reason = psprintf("rule escalate_if_matches: %s",
								  text_to_cstring(policy->escalate_if_matches));
		return;
	}
	if (policy->escalate_unless_matches != NULL &&
		!DatumGetBool(DirectFunctionCall2Coll(texticregexeq, DEFAULT_COLLATION_OID,
											  PointerGetDatum(input),
											  PointerGetDatum(policy->escalate_unless_matches))))
	{
		result->reason = psprintf("rule escalate_unless_matches: %s",
								  text_to_cstring(policy->escalate_unless_matches));
		return;
	}
	if (model != NULL && result->label < 0)
	{
		result->reason = pstrdup("no evidence: no word of the input is known to the model");
		return;
	}

	threshold = model != NULL ? policy->label_threshold[result->label] : 0;
	if (model != NULL && result->confidence < threshold)
	{
		size_t		len;
		const char *label = ModelLabelName(model, result->label, &len);

		result->reason = psprintf("confidence %.3f < threshold %s%s%.*s", result->confidence,
								  FormatReal(threshold),
								  policy->label_has_own[result->label] ? " for " : "",
								  policy->label_has_own[result->label] ? (int) len : 0, label);
		return;
	}

	if (result->extractor != NULL && FieldRules(policy, result))
		return;

	/*
	 * A deterministic sample (by a hash of the input), so that a row is
	 * audited or not whoever routes it and however often.
	 */
	if (policy->audit_rate > 0 &&
		(double) (DatumGetUInt32(hash_any((const unsigned char *) bytes, nbytes)) & 1048575)
		< (double) policy->audit_rate * 1048576.0)
	{
		result->reason = psprintf("audit sample (%s of confident rows)", FormatReal(policy->audit_rate));
		return;
	}
	result->escalate = false;
	if (describe)
		result->reason = model != NULL
			? psprintf("confidence %.3f >= threshold %s", result->confidence, FormatReal(threshold))
			: pstrdup("every rule passed");
}

static RouteState *
RouteStateGet(FunctionCallInfo fcinfo)
{
	RouteState *state = (RouteState *) fcinfo->flinfo->fn_extra;

	if (state == NULL)
	{
		state = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(RouteState));
		state->context = fcinfo->flinfo->fn_mcxt;
		fcinfo->flinfo->fn_extra = state;
		/* a new statement: see policies and deployments committed since the last one */
		AcceptInvalidationMessages();
	}
	return state;
}

PG_FUNCTION_INFO_V1(triage_route);

/* route(policy, input) returns triage.decision */
Datum
triage_route(PG_FUNCTION_ARGS)
{
	text	   *policy_name = PG_GETARG_TEXT_PP(0);
	text	   *input = PG_GETARG_TEXT_PP(1);
	RouteState *state = RouteStateGet(fcinfo);
	Policy	   *policy;
	RouteResult result;
	Datum		values[5];
	bool		nulls[5] = {false, false, true, false, false};

	policy = RoutePolicy(state, VARDATA_ANY(policy_name), VARSIZE_ANY_EXHDR(policy_name));
	RouteInput(state, policy, input, true, &result);

	if (state->tupdesc == NULL)
	{
		TupleDesc	tupdesc;
		MemoryContext old;

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		state->tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		MemoryContextSwitchTo(old);
	}
	nulls[0] = result.label < 0;
	if (result.label >= 0)
		values[0] = PointerGetDatum(ModelLabelText(result.model, result.label));
	nulls[1] = result.label < 0 && result.fields == NULL;
	values[1] = Float4GetDatum(result.confidence);
	nulls[2] = result.fields == NULL;
	if (result.fields != NULL)
		values[2] = JsonbPGetDatum(result.fields);
	values[3] = BoolGetDatum(result.escalate);
	values[4] = CStringGetTextDatum(result.reason);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(state->tupdesc, values, nulls)));
}
