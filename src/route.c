/*
 * route.c
 *		Routing: triage.route(policy, input) and the row trigger of attached
 *		tables, which keep the small model's answer or escalate the row.
 *
 * A policy (a row of triage.policies) is read once per call site and kept
 * until a change of triage.policies is signalled (a statement trigger
 * there sends a relcache invalidation), so a policy edited in place takes
 * effect at the next statement in every session, while routing a row costs
 * the classification plus a few comparisons.
 *
 * The trigger is BEFORE ROW: it sets the output column in the row being
 * written, so routing adds no second write of the row (an AFTER trigger
 * would UPDATE every row it routes).  Escalated rows are queued with one
 * INSERT each, run as the owner of triage.escalations: users who insert
 * into their own tables need no rights on the queue, where they could
 * forge answers.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "triage.h"

/* A routing policy, as read from triage.policies */
typedef struct Policy
{
	MemoryContext context;		/* holds the policy; deleted when it is read again */
	char		name[NAMEDATALEN];
	char		model[NAMEDATALEN];	/* the classifier; "" for an extraction policy */
	char		extractor[NAMEDATALEN]; /* "" when there is none */
	float4		default_threshold;
	int			nthresholds;	/* per-label thresholds, by label name */
	char	  **threshold_labels;
	float4	   *threshold_values;
	int32		max_length;		/* -1: no such rule */
	int32		min_length;
	text	   *escalate_if_matches;	/* NULL: no such rule */
	text	   *escalate_unless_matches;
	float4		audit_rate;
	int			nrequired;		/* fields that must be found */
	char	  **required_fields;
	float4		min_field_confidence;	/* -1: no such rule */

	/* the thresholds by label index of the model last used */
	CachedModel *model_for_labels;
	float4	   *label_threshold;
	bool	   *label_has_own;
} Policy;

/* One call site's policy and model */
typedef struct RouteState
{
	uint64		policy_generation;
	Policy	   *policy;
	MemoryContext context;		/* the call site's: holds the policy */
	ModelRef	model_ref;
	ModelRef	extractor_ref;
	TupleDesc	tupdesc;		/* triage.decision, for route() */
} RouteState;

/* What route decided for one input */
typedef struct RouteResult
{
	CachedModel *model;			/* the classifier, or NULL */
	CachedModel *extractor;		/* the extractor, or NULL */
	int32		label;			/* index into the model's labels, -1: none */
	float4		confidence;		/* the label's, or the least of the fields' */
	Jsonb	   *fields;			/* what the extractor found, or NULL */
	bool		escalate;
	char	   *reason;			/* NULL when the caller did not ask for it */
} RouteResult;

/* Bumped by a change of triage.policies */
static uint64 PolicyGeneration = 1;
static Oid	PoliciesRelid = InvalidOid;

/* Rows routed by attached tables and not yet counted in triage.policy_counters */
typedef struct PendingCount
{
	char		policy[NAMEDATALEN];	/* hash key */
	int64		seen;
	int64		escalated;
} PendingCount;

static HTAB *PendingCounts = NULL;

static void
PolicyInvalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == PoliciesRelid)
	{
		PolicyGeneration++;
		PoliciesRelid = InvalidOid;
	}
}

/* Counts of a statement that failed are not counted */
static void
ForgetPendingCounts(void)
{
	if (PendingCounts != NULL)
	{
		hash_destroy(PendingCounts);
		PendingCounts = NULL;
	}
}

static void
RouteXactCallback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		ForgetPendingCounts();
}

static void
RouteSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
					 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		ForgetPendingCounts();
}

void
RouteInit(void)
{
	CacheRegisterRelcacheCallback(PolicyInvalidate, (Datum) 0);
	RegisterXactCallback(RouteXactCallback, NULL);
	RegisterSubXactCallback(RouteSubXactCallback, NULL);
}

static void
ReportNoPolicy(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("policy \"%s\" does not exist", name),
			 errhint("Create one with triage.create_policy().")));
}

static char *
SpiText(int row, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);

	return *isnull ? NULL : TextDatumGetCString(d);
}

/*
 * Read a policy into context.  triage.check_policy(), a trigger on
 * triage.policies, has validated the shapes of its jsonb, so the casts here
 * cannot fail on a stored policy.
 */
static Policy *
LoadPolicy(const char *name, int len, MemoryContext context)
{
	Policy	   *policy;
	Datum		arg;
	Oid			argtype = TEXTOID;
	bool		isnull;
	MemoryContext old;
	char	   *value;

	if (len >= NAMEDATALEN)
		ReportNoPolicy(pnstrdup(name, len));
	arg = PointerGetDatum(cstring_to_text_with_len(name, len));

	SPI_connect();
	if (SPI_execute_with_args(
							  "SELECT model, coalesce((thresholds->>'default')::real, 0), "
							  "  ARRAY(SELECT k FROM jsonb_each_text(coalesce(thresholds->'labels', '{}')) AS t(k, v) ORDER BY k), "
							  "  ARRAY(SELECT v::real FROM jsonb_each_text(coalesce(thresholds->'labels', '{}')) AS t(k, v) ORDER BY k), "
							  "  coalesce((rules->>'max_length')::integer, -1), coalesce((rules->>'min_length')::integer, -1), "
							  "  rules->>'escalate_if_matches', rules->>'escalate_unless_matches', audit_rate, "
							  "  tableoid, coalesce(extractor, ''), coalesce(model, ''), "
							  "  ARRAY(SELECT jsonb_array_elements_text(coalesce(rules->'required_fields', '[]'))), "
							  "  coalesce((rules->>'min_field_confidence')::real, -1) "
							  "FROM triage.policies WHERE name = $1",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read triage.policies");
	if (SPI_processed != 1)
		ReportNoPolicy(pnstrdup(name, len));

	context = AllocSetContextCreate(context, "pg_triage policy", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(context);
	policy = palloc0(sizeof(Policy));
	policy->context = context;
	memcpy(policy->name, name, len);
	strlcpy(policy->model, SpiText(0, 12, &isnull), NAMEDATALEN);
	strlcpy(policy->extractor, SpiText(0, 11, &isnull), NAMEDATALEN);
	{
		ArrayType  *required = DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 13, &isnull));
		Datum	   *datums;

		deconstruct_array(required, TEXTOID, -1, false, TYPALIGN_INT, &datums, NULL, &policy->nrequired);
		policy->required_fields = palloc(sizeof(char *) * Max(policy->nrequired, 1));
		for (int i = 0; i < policy->nrequired; i++)
			policy->required_fields[i] = TextDatumGetCString(datums[i]);
	}
	policy->min_field_confidence = DatumGetFloat4(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 14, &isnull));
	policy->default_threshold = DatumGetFloat4(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	{
		ArrayType  *labels = DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		ArrayType  *values = DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
		Datum	   *label_datums;
		Datum	   *value_datums;
		int			nlabels;
		int			nvalues;

		deconstruct_array(labels, TEXTOID, -1, false, TYPALIGN_INT, &label_datums, NULL, &nlabels);
		deconstruct_array(values, FLOAT4OID, sizeof(float4), true, TYPALIGN_INT, &value_datums, NULL, &nvalues);
		Assert(nlabels == nvalues);
		policy->nthresholds = nlabels;
		policy->threshold_labels = palloc(sizeof(char *) * Max(nlabels, 1));
		policy->threshold_values = palloc(sizeof(float4) * Max(nlabels, 1));
		for (int i = 0; i < nlabels; i++)
		{
			policy->threshold_labels[i] = TextDatumGetCString(label_datums[i]);
			policy->threshold_values[i] = DatumGetFloat4(value_datums[i]);
		}
	}
	policy->max_length = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	policy->min_length = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull));
	value = SpiText(0, 7, &isnull);
	policy->escalate_if_matches = value ? cstring_to_text(value) : NULL;
	value = SpiText(0, 8, &isnull);
	policy->escalate_unless_matches = value ? cstring_to_text(value) : NULL;
	policy->audit_rate = DatumGetFloat4(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 9, &isnull));
	PoliciesRelid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 10, &isnull));
	MemoryContextSwitchTo(old);
	SPI_finish();
	return policy;
}

/* The policy of state, read again if triage.policies changed since */
static Policy *
RoutePolicy(RouteState *state, const char *name, int len)
{
	Policy	   *policy = state->policy;

	if (policy != NULL && state->policy_generation == PolicyGeneration &&
		strncmp(policy->name, name, len) == 0 && len < NAMEDATALEN && policy->name[len] == '\0')
		return policy;
	if (policy != NULL)
	{
		state->policy = NULL;
		MemoryContextDelete(policy->context);
	}
	state->policy_generation = PolicyGeneration;
	state->policy = LoadPolicy(name, len, state->context);
	/* loading may have processed the invalidation of an older change */
	state->policy_generation = PolicyGeneration;
	return state->policy;
}

/* Per-label thresholds by the label indexes of model */
static void
ResolveLabelThresholds(Policy *policy, CachedModel *model)
{
	MemoryContext context = policy->context;
	int32		nlabels = model->fasttext->nlabels;

	policy->label_threshold = MemoryContextAlloc(context, sizeof(float4) * nlabels);
	policy->label_has_own = MemoryContextAllocZero(context, sizeof(bool) * nlabels);
	for (int32 i = 0; i < nlabels; i++)
		policy->label_threshold[i] = policy->default_threshold;
	for (int i = 0; i < policy->nthresholds; i++)
	{
		int32		label = FastTextFindLabel(model->fasttext, policy->threshold_labels[i],
											  strlen(policy->threshold_labels[i]));

		if (label >= 0)
		{
			policy->label_threshold[label] = policy->threshold_values[i];
			policy->label_has_own[label] = true;
		}
	}
	policy->model_for_labels = model;
}

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
static void
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
		ModelRequireKind(model, MODEL_KIND_FASTTEXT);
		if (policy->model_for_labels != model)
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

		ModelRequireKind(extractor, MODEL_KIND_CRF);
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
		result->reason = pstrdup("no prediction: no token of the input is known to the model");
		return;
	}

	threshold = model != NULL ? policy->label_threshold[result->label] : 0;
	if (model != NULL && result->confidence < threshold)
	{
		size_t		len;
		const char *label = FastTextLabelName(model->fasttext, result->label, &len);

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
		values[0] = PointerGetDatum(FastTextLabelText(result.model->fasttext, result.label));
	nulls[1] = result.label < 0 && result.fields == NULL;
	values[1] = Float4GetDatum(result.confidence);
	nulls[2] = result.fields == NULL;
	if (result.fields != NULL)
		values[2] = JsonbPGetDatum(result.fields);
	values[3] = BoolGetDatum(result.escalate);
	values[4] = CStringGetTextDatum(result.reason);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(state->tupdesc, values, nulls)));
}

/* The trigger's state: the route state plus where things are in the row */
typedef struct RouteTriggerState
{
	RouteState route;
	Oid			relid;
	int			key_attno;
	int			input_attno;
	int			output_attno;
	int			provenance_attno;	/* 0: none */
	Oid			key_output_func;
	SPIPlanPtr	enqueue_plan;
	Oid			queue_owner;
	Oid			output_type;
} RouteTriggerState;

/* The output column must hold what the policy answers: a label, or fields */
static void
CheckOutputType(RouteTriggerState *state, Policy *policy, Relation rel)
{
	bool		extraction = policy->model[0] == '\0';

	if (extraction ? state->output_type != JSONBOID
		: state->output_type != TEXTOID && state->output_type != VARCHAROID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("output column of %s is %s, but policy \"%s\" answers %s",
						RelationGetRelationName(rel), format_type_be(state->output_type), policy->name,
						extraction ? "fields (jsonb)" : "labels (text)"),
				 errhint("Detach the table and attach it again with a matching output column.")));
}

/* The column of tupdesc named name, checked to be of one of the types */
static int
TriggerColumn(Relation rel, const char *name, Oid type1, Oid type2, const char *what)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	int			attno = SPI_fnumber(tupdesc, name);
	Oid			type;

	if (attno <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of %s does not exist", name, RelationGetRelationName(rel)),
				 errhint("Detach and attach the table again with triage.detach() and triage.attach().")));
	type = TupleDescAttr(tupdesc, attno - 1)->atttypid;
	if (InvalidOid != type1 && type != type1 && type != type2)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of %s is %s, not %s", name, RelationGetRelationName(rel),
						format_type_be(type), what),
				 errhint("Detach and attach the table again with triage.detach() and triage.attach().")));
	return attno;
}

/* The owner of triage.escalations, who queues escalations for everyone */
static Oid
QueueOwner(void)
{
	Oid			nsp = get_namespace_oid(TRIAGE_SCHEMA, false);
	Oid			relid = get_relname_relid("escalations", nsp);
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(relid))
		elog(ERROR, "triage.escalations does not exist");
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

static PendingCount *
PendingCountFor(const char *policy)
{
	char		key[NAMEDATALEN];
	bool		found;
	PendingCount *count;

	if (PendingCounts == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(PendingCount);
		ctl.hcxt = TopMemoryContext;
		PendingCounts = hash_create("pg_triage routed rows", 8, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(key, 0, sizeof(key));
	strlcpy(key, policy, NAMEDATALEN);
	count = hash_search(PendingCounts, key, HASH_ENTER, &found);
	if (!found)
		count->seen = count->escalated = 0;
	return count;
}

static RouteTriggerState *
RouteTriggerStateGet(FunctionCallInfo fcinfo, TriggerData *trigdata)
{
	RouteTriggerState *state = (RouteTriggerState *) fcinfo->flinfo->fn_extra;
	Trigger    *trigger = trigdata->tg_trigger;
	Relation	rel = trigdata->tg_relation;

	if (state != NULL && state->relid == RelationGetRelid(rel))
		return state;
	if (trigger->tgnargs != 5)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("triage.route_row() takes 5 trigger arguments, not %d", trigger->tgnargs),
				 errhint("Create the trigger with triage.attach().")));

	state = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(RouteTriggerState));
	state->route.context = fcinfo->flinfo->fn_mcxt;
	state->relid = RelationGetRelid(rel);
	state->key_attno = TriggerColumn(rel, trigger->tgargs[0], InvalidOid, InvalidOid, NULL);
	state->input_attno = TriggerColumn(rel, trigger->tgargs[1], TEXTOID, VARCHAROID, "text");
	state->output_attno = TriggerColumn(rel, trigger->tgargs[2], InvalidOid, InvalidOid, NULL);
	state->output_type = TupleDescAttr(RelationGetDescr(rel), state->output_attno - 1)->atttypid;
	if (trigger->tgargs[4][0] != '\0')
		state->provenance_attno = TriggerColumn(rel, trigger->tgargs[4], JSONBOID, JSONBOID, "jsonb");
	{
		bool		varlena;

		getTypeOutputInfo(TupleDescAttr(RelationGetDescr(rel), state->key_attno - 1)->atttypid,
						  &state->key_output_func, &varlena);
	}
	state->queue_owner = QueueOwner();
	fcinfo->flinfo->fn_extra = state;
	AcceptInvalidationMessages();
	return state;
}

/*
 * The small model's answer, as queued: {"label", "confidence"} or, for an
 * extraction policy, {"fields", "confidence"}
 */
static Datum
SmallAnswer(Policy *policy, RouteResult *result, Jsonb *field_values)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	if (policy->model[0] == '\0')
	{
		appendStringInfoString(&buf, "\"fields\": ");
		appendStringInfoString(&buf, JsonbToCString(NULL, &field_values->root, 0));
		appendStringInfoString(&buf, ", ");
	}
	else if (result->label >= 0)
	{
		size_t		len;
		const char *label = FastTextLabelName(result->model->fasttext, result->label, &len);

		appendStringInfoString(&buf, "\"label\": ");
		escape_json(&buf, pnstrdup(label, len));
		appendStringInfoString(&buf, ", ");
	}
	appendStringInfo(&buf, "\"confidence\": %.6g}", result->confidence);
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

/* Queue one escalation, as the owner of the queue */
static void
Enqueue(RouteTriggerState *state, TriggerData *trigdata, Policy *policy, text *input,
		Datum key, RouteResult *result, Jsonb *field_values)
{
	Oid			argtypes[10] = {TEXTOID, OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	JSONBOID, TEXTOID, TEXTOID};
	Datum		args[10];
	char		nulls[10];
	Oid			save_userid;
	int			save_sec_context;
	Trigger    *trigger = trigdata->tg_trigger;

	memset(nulls, ' ', sizeof(nulls));
	args[0] = CStringGetTextDatum(policy->name);
	args[1] = ObjectIdGetDatum(state->relid);
	args[2] = CStringGetTextDatum(trigger->tgargs[0]);
	args[3] = CStringGetTextDatum(OidOutputFunctionCall(state->key_output_func, key));
	args[4] = CStringGetTextDatum(trigger->tgargs[1]);
	args[5] = CStringGetTextDatum(trigger->tgargs[2]);
	args[6] = PointerGetDatum(input);
	args[7] = SmallAnswer(policy, result, field_values);
	args[8] = CStringGetTextDatum(result->reason);
	args[9] = CStringGetTextDatum(trigger->tgargs[4]);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(state->queue_owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		SPI_connect();
		if (state->enqueue_plan == NULL)
		{
			SPIPlanPtr	plan;

			plan = SPI_prepare("INSERT INTO triage.escalations (policy, source, source_key, input_column, "
							   "output_column, input, small_answer, reason, provenance_column) "
							   "VALUES ($1, $2::regclass, jsonb_build_object($3, $4), $5, $6, $7, $8, $9, "
							   "  nullif($10, ''))",
							   10, argtypes);
			if (plan == NULL)
				elog(ERROR, "could not prepare the queue insert: %s", SPI_result_code_string(SPI_result));
			SPI_keepplan(plan);
			state->enqueue_plan = plan;
		}
		if (SPI_execute_plan(state->enqueue_plan, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not queue an escalation");
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
	/* one notification per transaction and policy: PostgreSQL folds duplicates */
	Async_Notify("triage_escalations", policy->name);
}

/* The provenance of a small-model answer, as jsonb */
static Datum
ModelProvenance(RouteResult *result)
{
	StringInfoData buf;
	CachedModel *model = result->model != NULL ? result->model : result->extractor;

	initStringInfo(&buf);

	appendStringInfoString(&buf, "{\"by\": \"model\", \"model\": ");
	escape_json(&buf, model->name);
	appendStringInfo(&buf, ", \"version\": %d, \"confidence\": %.4f, \"at\": ",
					 model->version, result->confidence);
	escape_json(&buf, timestamptz_to_str(GetCurrentStatementStartTimestamp()));
	appendStringInfoChar(&buf, '}');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

PG_FUNCTION_INFO_V1(triage_route_row);

/*
 * BEFORE INSERT OR UPDATE OF input ROW trigger of attached tables: writes
 * the small model's label (and its provenance) into the row and queues the
 * row when the policy escalates it.  An UPDATE that leaves the input as it
 * was routes nothing.
 */
Datum
triage_route_row(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	RouteTriggerState *state;
	Relation	rel;
	HeapTuple	tuple;
	TupleDesc	tupdesc;
	Datum		input_datum;
	bool		isnull;
	text	   *input;
	Policy	   *policy;
	RouteResult result;
	Jsonb	   *field_values = NULL;
	PendingCount *count;
	Datum		values[2];
	bool		replace_nulls[2] = {false, false};
	int			columns[2];
	int			ncolumns = 0;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) || TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("triage.route_row() must be a BEFORE INSERT OR UPDATE row trigger"),
				 errhint("Create it with triage.attach().")));

	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);
	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple : trigdata->tg_trigtuple;
	state = RouteTriggerStateGet(fcinfo, trigdata);

	input_datum = heap_getattr(tuple, state->input_attno, tupdesc, &isnull);
	if (isnull)
		return PointerGetDatum(tuple);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		bool		old_isnull;
		Datum		old_input = heap_getattr(trigdata->tg_trigtuple, state->input_attno, tupdesc, &old_isnull);

		if (!old_isnull &&
			DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, old_input, input_datum)))
			return PointerGetDatum(tuple);
	}
	input = DatumGetTextPP(input_datum);

	policy = RoutePolicy(&state->route, trigdata->tg_trigger->tgargs[3],
						 strlen(trigdata->tg_trigger->tgargs[3]));
	RouteInput(&state->route, policy, input, false, &result);
	/* an extraction policy's answer: the values, for the row and the queue */
	if (policy->model[0] == '\0')
		field_values = FieldValuesJsonb(result.extractor, input);

	if (field_values != NULL || result.label >= 0)
	{
		CheckOutputType(state, policy, rel);
		columns[ncolumns] = state->output_attno;
		values[ncolumns++] = field_values != NULL
			? JsonbPGetDatum(field_values)
			: PointerGetDatum(FastTextLabelText(result.model->fasttext, result.label));
		if (state->provenance_attno > 0)
		{
			columns[ncolumns] = state->provenance_attno;
			values[ncolumns++] = ModelProvenance(&result);
		}
		tuple = heap_modify_tuple_by_cols(tuple, tupdesc, ncolumns, columns, values, replace_nulls);
	}
	if (result.escalate)
	{
		bool		key_isnull;
		Datum		key = heap_getattr(tuple, state->key_attno, tupdesc, &key_isnull);

		if (key_isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("the key column \"%s\" of %s is NULL", trigdata->tg_trigger->tgargs[0],
							RelationGetRelationName(rel)),
					 errhint("Escalated answers are written back by key.")));
		Enqueue(state, trigdata, policy, input, key, &result, field_values);
	}

	/* counted at the end of the statement (triage.count_routed_rows) */
	count = PendingCountFor(policy->name);
	count->seen++;
	if (result.escalate)
		count->escalated++;
	return PointerGetDatum(tuple);
}

PG_FUNCTION_INFO_V1(triage_count_routed_rows);

/*
 * AFTER statement trigger of attached tables: adds the rows the row
 * trigger routed to triage.policy_counters, one row per statement (no
 * update, so concurrent writers never wait on each other).
 */
Datum
triage_count_routed_rows(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *policy;
	PendingCount *count;
	Oid			argtypes[3] = {TEXTOID, INT8OID, INT8OID};
	Datum		args[3];
	Oid			save_userid;
	int			save_sec_context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) || trigdata->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("triage.count_routed_rows() must be an AFTER statement trigger with a policy argument"),
				 errhint("Create it with triage.attach().")));
	policy = trigdata->tg_trigger->tgargs[0];
	count = PendingCountFor(policy);
	if (count->seen == 0)
		PG_RETURN_POINTER(NULL);

	args[0] = CStringGetTextDatum(policy);
	args[1] = Int64GetDatum(count->seen);
	args[2] = Int64GetDatum(count->escalated);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(QueueOwner(), save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		SPI_connect();
		if (SPI_execute_with_args("INSERT INTO triage.policy_counters (policy, seen, escalated) "
								  "VALUES ($1, $2, $3)", 3, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not count routed rows");
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
	count->seen = count->escalated = 0;
	PG_RETURN_POINTER(NULL);
}
