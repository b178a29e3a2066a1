/*
 * queue.c
 *		The escalation queue's writes that cross a trust boundary: queueing a
 *		row (the row trigger and triage.enqueue()) and writing the large
 *		model's answer back into the row (triage_internal.write_answer(),
 *		called by triage.complete()).
 *
 * Design note.  An escalation names a table, a key and columns, and
 * complete() later writes into that row.  Whoever could choose those names
 * freely could make pg_triage write anywhere, so:
 *
 *	 - only the owner of pg_triage's tables writes triage.escalations; a row
 *	   is queued here after the caller's rights on that table and columns
 *	   and on the policy are checked;
 *	 - the target must be an attached table (pg_triage's own route trigger,
 *	   with exactly these columns and this policy), with the key its
 *	   single-column primary key and the columns of the right types: checked
 *	   when queueing and again when the answer is written, since the queue
 *	   may come from a dump, and the table may have changed since;
 *	 - the answer is read and written as the table's owner, under
 *	   SECURITY_RESTRICTED_OPERATION (BeginOwnSql), so that the table's own
 *	   triggers, casts, index expressions and policies run with its owner's
 *	   rights, never with the extension owner's.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/catalog.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "route.h"

/* Seconds: fail()'s retry_after, and the endpoint's Retry-After, at most */
static int	MaxRetryAfter = 3600;

void
QueueInit(void)
{
	DefineCustomIntVariable("triage.max_retry_after",
							"The longest a failed escalation waits before it is retried.",
							"Clamps fail()'s retry_after (an endpoint's Retry-After header), so "
							"that one reply cannot park a row for years.",
							&MaxRetryAfter, 3600, 0, 7 * 24 * 3600, PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
}

/*
 * Error if input is longer than triage.max_input_bytes: an escalation is
 * sent whole to the large model, so it is refused rather than cut.
 */
static void
CheckInputBytes(text *input)
{
	if (VARSIZE_ANY_EXHDR(input) > InputBytesLimit())
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("input of %d bytes is too long to escalate", (int) VARSIZE_ANY_EXHDR(input)),
				 errhint("The limit is triage.max_input_bytes (%d bytes); the small model reads only that many.",
						 InputBytesLimit())));
}

PG_FUNCTION_INFO_V1(triage_queue_limits);

/* queue_limits(OUT max_input_bytes bigint, OUT max_retry_after interval) */
Datum
triage_queue_limits(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	Interval   *retry = palloc0(sizeof(Interval));

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	retry->time = (int64) MaxRetryAfter * USECS_PER_SEC;
	values[0] = Int64GetDatum(InputBytesLimit());
	values[1] = IntervalPGetDatum(retry);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * Keys go into the queue as text and come back when the answer is written,
 * maybe in another session: both conversions run with the same date, interval
 * and float settings, so that a key's text never depends on who converted it.
 */
static int
BeginKeyTextSettings(void)
{
	int			nestlevel = NewGUCNestLevel();

	(void) set_config_option("datestyle", "ISO, YMD", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("intervalstyle", "postgres", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("extra_float_digits", "3", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

/* A key as the queue stores it: its text in the settings above */
Datum
KeyText(Oid output_func, Datum key)
{
	int			nestlevel = BeginKeyTextSettings();
	char	   *text = OidOutputFunctionCall(output_func, key);

	AtEOXact_GUC(false, nestlevel);
	return CStringGetTextDatum(text);
}

/* The type of a column of relid, or InvalidOid if there is no such column */
static Oid
ColumnType(Oid relid, const char *column, AttrNumber *attno)
{
	*attno = get_attnum(relid, column);
	return *attno == InvalidAttrNumber || *attno < 0 ? InvalidOid
		: get_atttype(relid, *attno);
}

static void
ReportBadTarget(const AnswerTarget *target, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
			 errmsg("table %s cannot receive the large model's answers: %s",
					get_rel_name(target->relid) ? get_rel_name(target->relid) : "the table", problem),
			 errhint("Attach the table with triage.attach(table, input_column, output_column, policy).")));
}

/* Does relid carry pg_triage's route trigger with exactly these arguments? */
static bool
HasRouteTrigger(const AnswerTarget *target, const char *policy)
{
	Oid			route_row = LookupFuncName(list_make2(makeString(TRIAGE_INTERNAL_SCHEMA), makeString("route_row")),
										   0, NULL, false);
	Relation	triggers = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	ScanKeyInit(&key, Anum_pg_trigger_tgrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(target->relid));
	scan = systable_beginscan(triggers, TriggerRelidNameIndexId, true, NULL, 1, &key);
	while (!found && HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_trigger trigger = (Form_pg_trigger) GETSTRUCT(tuple);
		bool		isnull;
		Datum		args;
		bytea	   *argbytes;
		const char *arg;
		const char *expected[5];

		if (trigger->tgfoid != route_row || trigger->tgnargs != 5 || trigger->tgenabled == TRIGGER_DISABLED)
			continue;
		expected[0] = target->key_column;
		expected[1] = target->input_column;
		expected[2] = target->output_column;
		expected[3] = policy;
		expected[4] = target->provenance_column ? target->provenance_column : "";
		args = heap_getattr(tuple, Anum_pg_trigger_tgargs, RelationGetDescr(triggers), &isnull);
		if (isnull)
			continue;
		/* tgargs: the arguments, each ended by a NUL */
		argbytes = DatumGetByteaPP(args);
		arg = VARDATA_ANY(argbytes);
		found = true;
		for (int i = 0; i < 5 && found; i++)
		{
			if (arg >= VARDATA_ANY(argbytes) + VARSIZE_ANY_EXHDR(argbytes) || strcmp(arg, expected[i]) != 0)
				found = false;
			else
				arg += strlen(arg) + 1;
		}
	}
	systable_endscan(scan);
	table_close(triggers, AccessShareLock);
	return found;
}

/* The column number of relid's primary key, if it is a single column */
static AttrNumber
PrimaryKeyColumn(Oid relid, Oid *opfamily)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Oid			pk = RelationGetPrimaryKeyIndex(rel);
	AttrNumber	attno = InvalidAttrNumber;

	if (OidIsValid(pk))
	{
		HeapTuple	tuple = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pk));
		Form_pg_index index;

		if (!HeapTupleIsValid(tuple))
			elog(ERROR, "cache lookup failed for index %u", pk);
		index = (Form_pg_index) GETSTRUCT(tuple);
		if (index->indnkeyatts == 1)
		{
			attno = index->indkey.values[0];
			*opfamily = get_opclass_family(((oidvector *) DatumGetPointer(
				SysCacheGetAttr(INDEXRELID, tuple, Anum_pg_index_indclass, &(bool){false})))->values[0]);
		}
		ReleaseSysCache(tuple);
	}
	table_close(rel, AccessShareLock);
	return attno;
}

/*
 * Error unless target is a table attached to policy with these columns:
 * pg_triage's route trigger with exactly these arguments, the key its
 * single-column primary key, an input of text, an output of what the
 * policy answers (text for a label, jsonb for fields), a jsonb provenance;
 * never a system catalog.
 */
void
CheckAnswerTarget(const AnswerTarget *target, Policy *policy)
{
	char		relkind = get_rel_relkind(target->relid);
	AttrNumber	attno;
	Oid			opfamily;
	Oid			type;
	bool		extraction = policy->model[0] == '\0';

	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ReportBadTarget(target, "not a table");
	if (IsCatalogRelationOid(target->relid) ||
		get_rel_namespace(target->relid) == get_namespace_oid(TRIAGE_SCHEMA, false))
		ReportBadTarget(target, "a system or pg_triage table");
	if (!HasRouteTrigger(target, policy->name))
		ReportBadTarget(target, "no triage_internal.route_row() trigger with these columns and this policy");
	if (PrimaryKeyColumn(target->relid, &opfamily) != get_attnum(target->relid, target->key_column))
		ReportBadTarget(target, "the key is not the table's single-column primary key");
	type = ColumnType(target->relid, target->input_column, &attno);
	if (type != TEXTOID && type != VARCHAROID)
		ReportBadTarget(target, "the input column is not text");
	type = ColumnType(target->relid, target->output_column, &attno);
	if (extraction ? type != JSONBOID : type != TEXTOID && type != VARCHAROID)
		ReportBadTarget(target, extraction ? "the output column of an extraction policy is not jsonb"
						: "the output column is not text");
	if (target->provenance_column != NULL &&
		ColumnType(target->relid, target->provenance_column, &attno) != JSONBOID)
		ReportBadTarget(target, "the provenance column is not jsonb");
}

/* Error unless role may do mode (ACL_SELECT, ACL_UPDATE) on a column of relid */
static void
CheckColumnPrivilege(Oid relid, const char *column, Oid role, AclMode mode)
{
	AttrNumber	attno = get_attnum(relid, column);

	/* a table-wide grant, or one on the column (which alone does not see the table's) */
	if (attno == InvalidAttrNumber ||
		(pg_class_aclcheck(relid, role, mode) != ACLCHECK_OK &&
		 pg_attribute_aclcheck(relid, attno, role, mode) != ACLCHECK_OK))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s column \"%s\" of %s", mode == ACL_UPDATE ? "update" : "read",
						column, get_rel_name(relid)),
				 errhint("Escalated answers are written back into the row: who queues it needs "
						 "SELECT on its key and input and UPDATE on its output.")));
}

/*
 * Queue one escalation as the owner of the queue.  The caller has checked
 * target (CheckAnswerTarget) and the right to use policy; key_text is the
 * row's key as text.  Returns the escalation's id.
 */
int64
QueueEscalation(Policy *policy, const AnswerTarget *target, text *input, Datum key_text,
				Jsonb *small_answer, const char *reason)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[11] = {TEXTOID, OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	JSONBOID, TEXTOID, TEXTOID, OIDOID};
	Datum		args[11];
	char		nulls[11];
	Oid			queued_by = GetUserId();
	OwnSqlSection section;
	int64		id;
	bool		isnull;

	memset(nulls, ' ', sizeof(nulls));
	args[0] = CStringGetTextDatum(policy->name);
	args[1] = ObjectIdGetDatum(target ? target->relid : InvalidOid);
	nulls[1] = target ? ' ' : 'n';
	args[2] = target ? CStringGetTextDatum(target->key_column) : (Datum) 0;
	nulls[2] = nulls[3] = nulls[4] = nulls[5] = nulls[1];
	args[3] = key_text;
	args[4] = target ? CStringGetTextDatum(target->input_column) : (Datum) 0;
	args[5] = target ? CStringGetTextDatum(target->output_column) : (Datum) 0;
	args[6] = PointerGetDatum(input);
	args[7] = small_answer ? JsonbPGetDatum(small_answer) : (Datum) 0;
	nulls[7] = small_answer ? ' ' : 'n';
	args[8] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
	nulls[8] = reason ? ' ' : 'n';
	args[9] = target && target->provenance_column ? CStringGetTextDatum(target->provenance_column) : (Datum) 0;
	nulls[9] = target && target->provenance_column ? ' ' : 'n';
	args[10] = ObjectIdGetDatum(queued_by);

	BeginOwnSql(&section, TriageOwner());
	if (plan == NULL)
	{
		SPIPlanPtr	new_plan;

		new_plan = SPI_prepare("INSERT INTO triage.escalations (policy, source, source_key, input_column, "
							   "output_column, input, small_answer, reason, provenance_column, queued_by) "
							   "VALUES ($1, $2::pg_catalog.regclass, "
							   "CASE WHEN $3 IS NOT NULL THEN pg_catalog.jsonb_build_object($3, $4) END, "
							   "$5, $6, $7, $8, $9, $10, $11::pg_catalog.regrole) RETURNING id",
							   11, argtypes);
		if (new_plan == NULL)
			elog(ERROR, "could not prepare the queue insert: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(new_plan);
		plan = new_plan;
	}
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not queue an escalation");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	EndOwnSql(&section);
	/* a wake-up for workers: anyone may LISTEN, so the payload is the id only */
	Async_Notify("triage_escalations", psprintf(INT64_FORMAT, id));
	return id;
}

/* Per call site of triage.enqueue(): the policy, and the target last checked */
typedef struct EnqueueState
{
	RouteState route;
	Policy	   *checked_policy;
	Oid			checked_role;
	AnswerTarget checked;
} EnqueueState;

static bool
SameTarget(const AnswerTarget *a, const AnswerTarget *b)
{
	return a->relid == b->relid && strcmp(a->key_column, b->key_column) == 0 &&
		strcmp(a->input_column, b->input_column) == 0 &&
		strcmp(a->output_column, b->output_column) == 0 &&
		((a->provenance_column == NULL && b->provenance_column == NULL) ||
		 (a->provenance_column != NULL && b->provenance_column != NULL &&
		  strcmp(a->provenance_column, b->provenance_column) == 0));
}

static char *
NameArg(FunctionCallInfo fcinfo, int arg)
{
	return PG_ARGISNULL(arg) ? NULL : pstrdup(NameStr(*PG_GETARG_NAME(arg)));
}

/*
 * The key column and its value (as text) of a source_key: a JSON object of
 * exactly one member whose value is a string or a number
 */
static void
ParseSourceKey(Jsonb *source_key, char **column, Datum *value)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken token;
	int			members = 0;

	*column = NULL;
	if (JB_ROOT_IS_SCALAR(source_key) || !JB_ROOT_IS_OBJECT(source_key) ||
		JB_ROOT_COUNT(source_key) != 1)
		goto bad;
	it = JsonbIteratorInit(&source_key->root);
	while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (token == WJB_KEY)
		{
			*column = pnstrdup(v.val.string.val, v.val.string.len);
			members++;
		}
		else if (token == WJB_VALUE)
		{
			if (v.type == jbvString)
				*value = PointerGetDatum(cstring_to_text_with_len(v.val.string.val, v.val.string.len));
			else if (v.type == jbvNumeric)
				*value = DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)),
					*value = CStringGetTextDatum(DatumGetCString(*value));
			else
				goto bad;
		}
	}
	if (members == 1)
		return;
bad:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("source_key must be a JSON object of one member: {\"<primary key column>\": \"<value>\"}")));
}

PG_FUNCTION_INFO_V1(triage_enqueue);

/*
 * enqueue(policy, input, small_answer, source, source_key, reason,
 *		   input_column, output_column, provenance_column) returns bigint
 *
 * Queues a row for the large model.  With a source, the answer will be
 * written back into that row: the caller must be allowed to read its key
 * and input and to update its output (and provenance), and the table must
 * be attached to the policy with those columns.
 */
Datum
triage_enqueue(PG_FUNCTION_ARGS)
{
	EnqueueState *state = (EnqueueState *) fcinfo->flinfo->fn_extra;
	text	   *policy_name;
	text	   *input;
	Policy	   *policy;
	AnswerTarget target;
	char	   *key_column = NULL;
	Datum		key_value = (Datum) 0;
	Oid			role = GetUserId();
	bool		has_source = !PG_ARGISNULL(3);

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("enqueue needs a policy")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cannot escalate a NULL input")));
	if (state == NULL)
	{
		state = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(EnqueueState));
		state->route.context = fcinfo->flinfo->fn_mcxt;
		fcinfo->flinfo->fn_extra = state;
	}
	policy_name = PG_GETARG_TEXT_PP(0);
	input = PG_GETARG_TEXT_PP(1);
	CheckInputBytes(input);
	policy = RoutePolicy(&state->route, VARDATA_ANY(policy_name), VARSIZE_ANY_EXHDR(policy_name));

	if (has_source)
	{
		if (PG_ARGISNULL(4) || PG_ARGISNULL(6) || PG_ARGISNULL(7))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("an escalation with a source table needs its key, input column and output column")));
		ParseSourceKey(PG_GETARG_JSONB_P(4), &key_column, &key_value);
		target.relid = PG_GETARG_OID(3);
		target.key_column = key_column;
		target.input_column = NameArg(fcinfo, 6);
		target.output_column = NameArg(fcinfo, 7);
		target.provenance_column = NameArg(fcinfo, 8);
		if (get_rel_relkind(target.relid) == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation with OID %u does not exist", target.relid)));
	}
	else if (!PG_ARGISNULL(4) || !PG_ARGISNULL(6) || !PG_ARGISNULL(7) || !PG_ARGISNULL(8))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("source_key and the columns of an escalation need its source table")));

	/* checked once per call site while the policy, role and target stay */
	if (state->checked_policy != policy || state->checked_role != role ||
		(has_source && (state->checked.relid == InvalidOid || !SameTarget(&state->checked, &target))) ||
		(!has_source && state->checked.relid != InvalidOid))
	{
		state->checked_policy = NULL;
		CheckPolicyUse(policy, role);
		if (has_source)
		{
			CheckAnswerTarget(&target, policy);
			CheckColumnPrivilege(target.relid, target.key_column, role, ACL_SELECT);
			CheckColumnPrivilege(target.relid, target.input_column, role, ACL_SELECT);
			CheckColumnPrivilege(target.relid, target.output_column, role, ACL_UPDATE);
			if (target.provenance_column != NULL)
				CheckColumnPrivilege(target.relid, target.provenance_column, role, ACL_UPDATE);
			state->checked.relid = target.relid;
			state->checked.key_column = MemoryContextStrdup(fcinfo->flinfo->fn_mcxt, target.key_column);
			state->checked.input_column = MemoryContextStrdup(fcinfo->flinfo->fn_mcxt, target.input_column);
			state->checked.output_column = MemoryContextStrdup(fcinfo->flinfo->fn_mcxt, target.output_column);
			state->checked.provenance_column = target.provenance_column
				? MemoryContextStrdup(fcinfo->flinfo->fn_mcxt, target.provenance_column) : NULL;
		}
		else
			state->checked.relid = InvalidOid;
		state->checked_policy = policy;
		state->checked_role = role;
	}
	PG_RETURN_INT64(QueueEscalation(policy, has_source ? &target : NULL, input, key_value,
									PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2),
									PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5))));
}

/* "OPERATOR(schema.op)": the btree equality of the key's opfamily, qualified */
static char *
KeyEqualityOperator(Oid opfamily, Oid type)
{
	Oid			opno = get_opfamily_member(opfamily, type, type, BTEqualStrategyNumber);
	HeapTuple	tuple;
	char	   *result;

	if (!OidIsValid(opno))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("no equality operator for the key type %s", format_type_be(type))));
	tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for operator %u", opno);
	result = psprintf("OPERATOR(%s.%s)",
					  quote_identifier(get_namespace_name(((Form_pg_operator) GETSTRUCT(tuple))->oprnamespace)),
					  NameStr(((Form_pg_operator) GETSTRUCT(tuple))->oprname));
	ReleaseSysCache(tuple);
	return result;
}

PG_FUNCTION_INFO_V1(triage_write_answer);

/*
 * write_answer(escalation bigint, label text, fields jsonb, provenance jsonb)
 * returns text
 *
 * For triage.complete() only (it runs as the owner of the queue): writes
 * the answer (label, or fields for an extraction policy) into the
 * escalation's source row if that row still holds the escalated input and
 * nobody wrote another answer meanwhile.  Returns the outcome: written,
 * source_deleted, source_changed, source_overwritten, or no_source.
 */
Datum
triage_write_answer(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	Oid			argtype = INT8OID;
	Datum		arg = Int64GetDatum(id);
	OwnSqlSection section;
	RouteState	route;
	Policy	   *policy;
	AnswerTarget target;
	char	   *key_column;
	char	   *key_text;
	char	   *policy_name;
	text	   *input;
	char	   *small_label;
	Jsonb	   *small_fields;
	bool		isnull;
	bool		extraction;
	Oid			owner;
	Oid			opfamily;
	Oid			key_type;
	int32		key_typmod;
	Oid			typinput;
	Oid			typioparam;
	StringInfoData sql;
	Oid			argtypes[3];
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	char	   *outcome;
	MemoryContext caller_context = CurrentMemoryContext;

	if (!has_privs_of_role(GetUserId(), TriageOwner()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("triage_internal.write_answer() is for triage.complete() only")));
	if (PG_ARGISNULL(1) == PG_ARGISNULL(2))
		elog(ERROR, "write_answer needs a label or fields");

	/* the escalation, read as the queue's owner (we are) */
	BeginOwnSql(&section, InvalidOid);
	if (SPI_execute_with_args("SELECT e.source::pg_catalog.oid, "
							  "  (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(e.source_key)), "
							  "  (SELECT k.key FROM pg_catalog.jsonb_each_text(e.source_key) k LIMIT 1), "
							  "  (SELECT k.value FROM pg_catalog.jsonb_each_text(e.source_key) k LIMIT 1), "
							  "  e.input_column::text, e.output_column::text, e.provenance_column::text, "
							  "  e.policy, e.input, e.small_answer OPERATOR(pg_catalog.->>) 'label', "
							  "  e.small_answer OPERATOR(pg_catalog.->) 'fields' "
							  "FROM triage.escalations e WHERE e.id OPERATOR(pg_catalog.=) $1",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read triage.escalations");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("escalation " INT64_FORMAT " does not exist", id)));
	{
		HeapTuple	row = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		value;
		MemoryContext spi_context = MemoryContextSwitchTo(caller_context);

		target.relid = DatumGetObjectId(SPI_getbinval(row, desc, 1, &isnull));
		if (isnull)
		{
			MemoryContextSwitchTo(spi_context);
			EndOwnSql(&section);
			PG_RETURN_TEXT_P(cstring_to_text("no_source"));
		}
		if (DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull)) != 1)
			elog(ERROR, "escalation " INT64_FORMAT " has a source_key of more than one column", id);
		key_column = SPI_getvalue(row, desc, 3);
		key_text = SPI_getvalue(row, desc, 4);
		target.key_column = key_column;
		target.input_column = SPI_getvalue(row, desc, 5);
		target.output_column = SPI_getvalue(row, desc, 6);
		target.provenance_column = SPI_getvalue(row, desc, 7);
		policy_name = SPI_getvalue(row, desc, 8);
		input = DatumGetTextPCopy(SPI_getbinval(row, desc, 9, &isnull));
		small_label = SPI_getvalue(row, desc, 10);
		value = SPI_getbinval(row, desc, 11, &isnull);
		small_fields = isnull ? NULL : DatumGetJsonbPCopy(value);
		MemoryContextSwitchTo(spi_context);
	}
	EndOwnSql(&section);

	if (key_column == NULL || key_text == NULL || target.input_column == NULL ||
		target.output_column == NULL || get_rel_relkind(target.relid) == '\0')
		PG_RETURN_TEXT_P(cstring_to_text("source_deleted"));

	/* checked again now: the queue may come from a dump, the table may have changed */
	memset(&route, 0, sizeof(route));
	route.context = CurrentMemoryContext;
	policy = RoutePolicy(&route, policy_name, strlen(policy_name));
	extraction = policy->model[0] == '\0';
	if (extraction == PG_ARGISNULL(2))
		elog(ERROR, "write_answer got a %s for a policy that answers %s",
			 extraction ? "label" : "fields", extraction ? "fields" : "labels");
	CheckAnswerTarget(&target, policy);
	owner = RelationOwner(target.relid);
	CheckPolicyUse(policy, owner);

	(void) PrimaryKeyColumn(target.relid, &opfamily);
	{
		Oid			collation;

		get_atttypetypmodcoll(target.relid, get_attnum(target.relid, key_column),
							  &key_type, &key_typmod, &collation);
	}
	getTypeInputInfo(key_type, &typinput, &typioparam);

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT t.%s, t.%s FROM %s t WHERE t.%s %s $1 FOR UPDATE",
					 quote_identifier(target.input_column), quote_identifier(target.output_column),
					 quote_qualified_identifier(get_namespace_name(get_rel_namespace(target.relid)),
												get_rel_name(target.relid)),
					 quote_identifier(key_column), KeyEqualityOperator(opfamily, key_type));

	/* everything the table runs (its triggers, casts, defaults) runs as its owner */
	BeginOwnSql(&section, owner);
	/* the key's own input function, as the owner too, in the settings it was written in */
	{
		int			nestlevel = BeginKeyTextSettings();

		args[0] = OidInputFunctionCall(typinput, key_text, typioparam, key_typmod);
		AtEOXact_GUC(false, nestlevel);
	}
	argtypes[0] = key_type;
	if (SPI_execute_with_args(sql.data, 1, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the source row");
	if (SPI_processed == 0)
		outcome = "source_deleted";
	else
	{
		HeapTuple	row = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		output_isnull;
		Datum		src_input = SPI_getbinval(row, desc, 1, &isnull);
		Datum		src_output = SPI_getbinval(row, desc, 2, &output_isnull);

		if (isnull || !DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, src_input,
															 PointerGetDatum(input))))
			outcome = "source_changed";
		else if (!output_isnull &&
				 (extraction
				  ? small_fields == NULL ||
				  !DatumGetBool(DirectFunctionCall2(jsonb_eq, src_output, JsonbPGetDatum(small_fields)))
				  : small_label == NULL ||
				  !DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, src_output,
														CStringGetTextDatum(small_label)))))
			outcome = "source_overwritten";
		else
		{
			resetStringInfo(&sql);
			appendStringInfo(&sql, "UPDATE %s t SET %s = $2",
							 quote_qualified_identifier(get_namespace_name(get_rel_namespace(target.relid)),
														get_rel_name(target.relid)),
							 quote_identifier(target.output_column));
			argtypes[1] = extraction ? JSONBOID : TEXTOID;
			args[1] = extraction ? PG_GETARG_DATUM(2) : PG_GETARG_DATUM(1);
			argtypes[2] = JSONBOID;
			args[2] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
			nulls[2] = PG_ARGISNULL(3) ? 'n' : ' ';
			if (target.provenance_column != NULL)
				appendStringInfo(&sql, ", %s = $3", quote_identifier(target.provenance_column));
			appendStringInfo(&sql, " WHERE t.%s %s $1", quote_identifier(key_column),
							 KeyEqualityOperator(opfamily, key_type));
			if (SPI_execute_with_args(sql.data, 3, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not write the answer into the source row");
			outcome = "written";
		}
	}
	EndOwnSql(&section);
	PG_RETURN_TEXT_P(cstring_to_text(outcome));
}

PG_FUNCTION_INFO_V1(triage_check_attachment);

/*
 * check_attachment(policy, tbl, key_column, input_column, output_column,
 * provenance_column): error unless the current role may use policy and tbl
 * is attached to it with these columns
 */
Datum
triage_check_attachment(PG_FUNCTION_ARGS)
{
	text	   *policy_name;
	RouteState	route;
	Policy	   *policy;
	AnswerTarget target;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("check_attachment needs a policy, a table, and its key, input and output columns")));
	policy_name = PG_GETARG_TEXT_PP(0);
	memset(&route, 0, sizeof(route));
	route.context = CurrentMemoryContext;
	policy = RoutePolicy(&route, VARDATA_ANY(policy_name), VARSIZE_ANY_EXHDR(policy_name));
	CheckPolicyUse(policy, GetUserId());
	target.relid = PG_GETARG_OID(1);
	target.key_column = NameArg(fcinfo, 2);
	target.input_column = NameArg(fcinfo, 3);
	target.output_column = NameArg(fcinfo, 4);
	target.provenance_column = NameArg(fcinfo, 5);
	CheckAnswerTarget(&target, policy);
	PG_RETURN_VOID();
}
