/*
 * policy.c
 *		Routing policies: reading a row of triage.policies, keeping it per
 *		call site until triage.policies changes, and who may use it.
 *
 * A policy is read once per call site and kept until a change of
 * triage.policies or triage.policy_grants is signalled (a statement trigger
 * there sends a relcache invalidation), so a policy edited in place takes
 * effect at the next statement in every session, while routing a row costs
 * the classification plus a few comparisons.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "route.h"

/* Bumped by a change of triage.policies or triage.policy_grants */
static uint64 PolicyGeneration = 1;
static Oid	PoliciesRelid = InvalidOid;
static Oid	PolicyGrantsRelid = InvalidOid;

static void
PolicyInvalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == PoliciesRelid || relid == PolicyGrantsRelid)
	{
		PolicyGeneration++;
		PoliciesRelid = PolicyGrantsRelid = InvalidOid;
	}
}

void
PolicyInit(void)
{
	CacheRegisterRelcacheCallback(PolicyInvalidate, (Datum) 0);
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

/* The elements of an array column of the SPI result */
static Datum *
SpiArray(int col, Oid elemtype, int *n)
{
	bool		isnull;
	ArrayType  *array = DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
														col, &isnull));
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *datums;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(array, elemtype, typlen, typbyval, typalign, &datums, NULL, n);
	return datums;
}

/*
 * Read a policy into context.  triage_internal.check_policy(), a trigger on
 * triage.policies, has validated the shapes of its jsonb, so the casts here
 * cannot fail on a stored policy.  Read as the current user, who needs
 * SELECT on triage.policies (triage_user has it).
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
	Datum	   *datums;
	Datum	   *values;
	int			n;
	OwnSqlSection section;

	if (len >= NAMEDATALEN)
		ReportNoPolicy(pnstrdup(name, len));
	arg = PointerGetDatum(cstring_to_text_with_len(name, len));

	BeginOwnSql(&section, InvalidOid);
	if (SPI_execute_with_args(
							  "SELECT p.model, coalesce((p.thresholds OPERATOR(pg_catalog.->>) 'default')::real, 0), "
							  "  ARRAY(SELECT t.k FROM pg_catalog.jsonb_each_text(coalesce(p.thresholds OPERATOR(pg_catalog.->) 'labels', '{}')) AS t(k, v) ORDER BY t.k), "
							  "  ARRAY(SELECT t.v::real FROM pg_catalog.jsonb_each_text(coalesce(p.thresholds OPERATOR(pg_catalog.->) 'labels', '{}')) AS t(k, v) ORDER BY t.k), "
							  "  coalesce((p.rules OPERATOR(pg_catalog.->>) 'max_length')::integer, -1), "
							  "  coalesce((p.rules OPERATOR(pg_catalog.->>) 'min_length')::integer, -1), "
							  "  p.rules OPERATOR(pg_catalog.->>) 'escalate_if_matches', "
							  "  p.rules OPERATOR(pg_catalog.->>) 'escalate_unless_matches', p.audit_rate, "
							  "  p.tableoid, coalesce(p.extractor, ''), coalesce(p.model, ''), "
							  "  ARRAY(SELECT pg_catalog.jsonb_array_elements_text(coalesce(p.rules OPERATOR(pg_catalog.->) 'required_fields', '[]'))), "
							  "  coalesce((p.rules OPERATOR(pg_catalog.->>) 'min_field_confidence')::real, -1), "
							  "  p.owner::oid, "
							  "  ARRAY(SELECT g.grantee::oid FROM triage.policy_grants g WHERE g.policy OPERATOR(pg_catalog.=) p.name), "
							  "  'triage.policy_grants'::pg_catalog.regclass::oid "
							  "FROM triage.policies p WHERE p.name OPERATOR(pg_catalog.=) $1",
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
	datums = SpiArray(13, TEXTOID, &policy->nrequired);
	policy->required_fields = palloc(sizeof(char *) * Max(policy->nrequired, 1));
	for (int i = 0; i < policy->nrequired; i++)
		policy->required_fields[i] = TextDatumGetCString(datums[i]);
	policy->min_field_confidence = DatumGetFloat4(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 14, &isnull));
	policy->default_threshold = DatumGetFloat4(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	datums = SpiArray(3, TEXTOID, &policy->nthresholds);
	values = SpiArray(4, FLOAT4OID, &n);
	Assert(n == policy->nthresholds);
	policy->threshold_labels = palloc(sizeof(char *) * Max(policy->nthresholds, 1));
	policy->threshold_values = palloc(sizeof(float4) * Max(policy->nthresholds, 1));
	for (int i = 0; i < policy->nthresholds; i++)
	{
		policy->threshold_labels[i] = TextDatumGetCString(datums[i]);
		policy->threshold_values[i] = DatumGetFloat4(values[i]);
	}
	policy->max_length = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	policy->min_length = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull));
	value = SpiText(0, 7, &isnull);
	policy->escalate_if_matches = value ? cstring_to_text(value) : NULL;
	value = SpiText(0, 8, &isnull);
	policy->escalate_unless_matches = value ? cstring_to_text(value) : NULL;
	policy->audit_rate = DatumGetFloat4(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 9, &isnull));
	policy->owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 15, &isnull));
	datums = SpiArray(16, OIDOID, &policy->ngrantees);
	policy->grantees = palloc(sizeof(Oid) * Max(policy->ngrantees, 1));
	for (int i = 0; i < policy->ngrantees; i++)
		policy->grantees[i] = DatumGetObjectId(datums[i]);
	PoliciesRelid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 10, &isnull));
	PolicyGrantsRelid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 17, &isnull));
	MemoryContextSwitchTo(old);
	EndOwnSql(&section);
	return policy;
}

/* The policy of state, read again if triage.policies changed since */
Policy *
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

/*
 * May role queue rows under policy (spend its large-model budget, and give
 * its model training examples)?  Its owner, roles granted it with
 * triage.grant_policy(), and members of either may.
 */
static bool
PolicyUsableBy(Policy *policy, Oid role)
{
	if (has_privs_of_role(role, policy->owner))
		return true;
	for (int i = 0; i < policy->ngrantees; i++)
		if (has_privs_of_role(role, policy->grantees[i]))
			return true;
	return false;
}

void
CheckPolicyUse(Policy *policy, Oid role)
{
	if (PolicyUsableBy(policy, role))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" may not use policy \"%s\"", GetUserNameFromId(role, false), policy->name),
			 errdetail("Rows routed under a policy spend its large-model budget and train its model."),
			 errhint("The policy's owner (or an admin) can allow it: SELECT triage.grant_policy('%s', '%s');",
					 policy->name, GetUserNameFromId(role, false))));
}

/* Per-label thresholds by the label indexes of model */
void
ResolveLabelThresholds(Policy *policy, CachedModel *model)
{
	MemoryContext context = policy->context;
	int32		nlabels = model->nlabels;

	policy->label_threshold = MemoryContextAlloc(context, sizeof(float4) * nlabels);
	policy->label_has_own = MemoryContextAllocZero(context, sizeof(bool) * nlabels);
	for (int32 i = 0; i < nlabels; i++)
		policy->label_threshold[i] = policy->default_threshold;
	for (int i = 0; i < policy->nthresholds; i++)
	{
		int32		label = model->classifier->find_label(model->state, policy->threshold_labels[i],
														  strlen(policy->threshold_labels[i]));

		if (label >= 0)
		{
			policy->label_threshold[label] = policy->threshold_values[i];
			policy->label_has_own[label] = true;
		}
	}
	policy->labels_model_serial = model->serial;
}

PG_FUNCTION_INFO_V1(triage_may_use_policy);

/* may_use_policy(policy text, role oid) returns boolean */
Datum
triage_may_use_policy(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	RouteState *route = (RouteState *) fcinfo->flinfo->fn_extra;

	/* one policy read per call site while triage.policies stays as it is */
	if (route == NULL)
	{
		route = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(RouteState));
		route->context = fcinfo->flinfo->fn_mcxt;
		fcinfo->flinfo->fn_extra = route;
	}
	PG_RETURN_BOOL(PolicyUsableBy(RoutePolicy(route, VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name)),
								  PG_GETARG_OID(1)));
}
