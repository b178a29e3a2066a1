/*
 * route_trigger.c
 *		The triggers of attached tables: the BEFORE ROW trigger that writes
 *		the small model's answer into the row and queues escalated rows, and
 *		the AFTER statement trigger that counts the routed rows.
 *
 * The row trigger is BEFORE ROW: it sets the output column in the row being
 * written, so routing adds no second write of the row (an AFTER trigger
 * would UPDATE every row it routes).  It routes with the rights of the
 * table's owner (restricted, as complete() writes back), so that whoever
 * writes the row needs no rights on pg_triage; queueing and counting run as
 * the owner of pg_triage's tables (queue.c, BeginOwnSql), so that nobody
 * needs rights on the queue, where they could forge answers.  What the trigger's
 * arguments name (table, key, columns, policy) is checked against the
 * table and the policy's grants before anything is queued: a trigger
 * written by hand is held to what triage.attach() would have created.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "route.h"

/* Rows routed by attached tables and not yet counted in triage.policy_counters */
typedef struct PendingCount
{
	char		policy[NAMEDATALEN];	/* hash key */
	int64		seen;
	int64		escalated;
} PendingCount;

static HTAB *PendingCounts = NULL;

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
	PolicyInit();
	RegisterXactCallback(RouteXactCallback, NULL);
	RegisterSubXactCallback(RouteSubXactCallback, NULL);
}

/* The trigger's state: the route state plus where things are in the row */
typedef struct RouteTriggerState
{
	RouteState route;
	AnswerTarget target;
	Oid			table_owner;
	int			key_attno;
	int			input_attno;
	int			output_attno;
	int			provenance_attno;	/* 0: none */
	Oid			key_output_func;
	Policy	   *checked_policy; /* the policy the target was last checked for */
} RouteTriggerState;

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

/* The attribute number of a column named by the trigger's arguments */
static int
TriggerColumn(Relation rel, const char *name)
{
	int			attno = SPI_fnumber(RelationGetDescr(rel), name);

	if (attno <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of %s does not exist", name, RelationGetRelationName(rel)),
				 errhint("Detach and attach the table again with triage.detach() and triage.attach().")));
	return attno;
}

static RouteTriggerState *
RouteTriggerStateGet(FunctionCallInfo fcinfo, TriggerData *trigdata)
{
	RouteTriggerState *state = (RouteTriggerState *) fcinfo->flinfo->fn_extra;
	Trigger    *trigger = trigdata->tg_trigger;
	Relation	rel = trigdata->tg_relation;
	bool		varlena;

	if (state != NULL && state->target.relid == RelationGetRelid(rel))
		return state;
	if (trigger->tgnargs != 5)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("triage_internal.route_row() takes 5 trigger arguments, not %d", trigger->tgnargs),
				 errhint("Create the trigger with triage.attach().")));

	state = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(RouteTriggerState));
	state->route.context = fcinfo->flinfo->fn_mcxt;
	state->target.relid = RelationGetRelid(rel);
	state->target.key_column = trigger->tgargs[0];
	state->target.input_column = trigger->tgargs[1];
	state->target.output_column = trigger->tgargs[2];
	state->target.provenance_column = trigger->tgargs[4][0] != '\0' ? trigger->tgargs[4] : NULL;
	state->table_owner = rel->rd_rel->relowner;
	state->key_attno = TriggerColumn(rel, state->target.key_column);
	state->input_attno = TriggerColumn(rel, state->target.input_column);
	state->output_attno = TriggerColumn(rel, state->target.output_column);
	if (state->target.provenance_column != NULL)
		state->provenance_attno = TriggerColumn(rel, state->target.provenance_column);
	getTypeOutputInfo(TupleDescAttr(RelationGetDescr(rel), state->key_attno - 1)->atttypid,
					  &state->key_output_func, &varlena);
	fcinfo->flinfo->fn_extra = state;
	AcceptInvalidationMessages();
	return state;
}

/*
 * The small model's answer, as queued: {"label", "confidence"} or, for an
 * extraction policy, {"fields", "confidence"}
 */
static Jsonb *
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
		const char *label = ModelLabelName(result->model, result->label, &len);

		appendStringInfoString(&buf, "\"label\": ");
		escape_json(&buf, pnstrdup(label, len));
		appendStringInfoString(&buf, ", ");
	}
	appendStringInfo(&buf, "\"confidence\": %.6g}", result->confidence);
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
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
	Oid			save_userid;
	int			save_sec_context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) || TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("triage_internal.route_row() must be a BEFORE INSERT OR UPDATE row trigger"),
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

	/*
	 * Routed with the rights of the table's owner, who attached it: whoever
	 * writes the row needs no rights on pg_triage, and the owner's policy
	 * grant and model access are what count.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(state->table_owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	policy = RoutePolicy(&state->route, trigdata->tg_trigger->tgargs[3],
						 strlen(trigdata->tg_trigger->tgargs[3]));
	if (state->checked_policy != policy)
	{
		/* the table's owner chose the policy: it must be theirs to use */
		CheckPolicyUse(policy, state->table_owner);
		CheckAnswerTarget(&state->target, policy);
		state->checked_policy = policy;
	}
	RouteInput(&state->route, policy, input, false, &result);
	/* an extraction policy's answer: the values, for the row and the queue */
	if (policy->model[0] == '\0')
		field_values = FieldValuesJsonb(result.extractor, input);

	if (field_values != NULL || result.label >= 0)
	{
		columns[ncolumns] = state->output_attno;
		values[ncolumns++] = field_values != NULL
			? JsonbPGetDatum(field_values)
			: PointerGetDatum(ModelLabelText(result.model, result.label));
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
					 errmsg("the key column \"%s\" of %s is NULL", state->target.key_column,
							RelationGetRelationName(rel)),
					 errhint("Escalated answers are written back by key.")));
		QueueEscalation(policy, &state->target, input,
						KeyText(state->key_output_func, key),
						SmallAnswer(policy, &result, field_values), result.reason);
	}

	SetUserIdAndSecContext(save_userid, save_sec_context);

	/* counted at the end of the statement (triage_internal.count_routed_rows) */
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
	OwnSqlSection section;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) || trigdata->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("triage_internal.count_routed_rows() must be an AFTER statement trigger with a policy argument"),
				 errhint("Create it with triage.attach().")));
	policy = trigdata->tg_trigger->tgargs[0];
	count = PendingCountFor(policy);
	if (count->seen == 0)
		PG_RETURN_POINTER(NULL);

	args[0] = CStringGetTextDatum(policy);
	args[1] = Int64GetDatum(count->seen);
	args[2] = Int64GetDatum(count->escalated);
	/* only the row trigger counts, so only policies it was allowed to use */
	BeginOwnSql(&section, TriageOwner());
	if (SPI_execute_with_args("INSERT INTO triage.policy_counters (policy, seen, escalated) "
							  "VALUES ($1, $2, $3)", 3, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not count routed rows");
	EndOwnSql(&section);
	count->seen = count->escalated = 0;
	PG_RETURN_POINTER(NULL);
}
