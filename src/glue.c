/*
 * glue.c
 *		What every server-side file shares to call the core: its allocator
 *		over a memory context, its errors as ereports, model files in and
 *		out of bytea, and set-returning functions in materialize mode.
 */
#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "triage.h"

static void *
ContextAlloc(void *context, size_t size)
{
	return MemoryContextAllocExtended((MemoryContext) context, size == 0 ? 1 : size,
									  MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
}

static void
ContextFree(void *context, void *pointer)
{
	pfree(pointer);
}

/* A core allocator that pallocs in context and returns NULL when out of memory */
TriageAllocator
ContextAllocator(MemoryContext context)
{
	TriageAllocator allocator = {ContextAlloc, ContextFree, context};

	return allocator;
}

/*
 * Turn a core error into an ereport with a matching SQLSTATE.  title names
 * what a malformed file was read as ("fastText model"), and hint says what
 * such a file must be; context, if not NULL, says what was being done.
 */
void
ReportModelError(const char *title, const char *hint, TriageStatus status,
				 const char *message, const char *context)
{
	switch (status)
	{
		case TRIAGE_OK:
			return;
		case TRIAGE_INVALID_MODEL:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid %s: %s", title, message),
					 context ? errcontext("%s", context) : 0,
					 hint ? errhint("%s", hint) : 0));
			break;
		case TRIAGE_UNSUPPORTED:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("unsupported %s: %s", title, message),
					 context ? errcontext("%s", context) : 0,
					 hint ? errhint("%s", hint) : 0));
			break;
		case TRIAGE_INVALID_ARGUMENT:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s", message),
					 context ? errcontext("%s", context) : 0));
			break;
		case TRIAGE_OUT_OF_MEMORY:
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory"),
					 errdetail("%s", message)));
			break;
		case TRIAGE_NUMERIC:
			ereport(ERROR,
					(errcode(ERRCODE_FLOATING_POINT_EXCEPTION),
					 errmsg("%s", message),
					 context ? errcontext("%s", context) : 0,
					 errhint("The model's weights contain NaN or infinity; retrain or re-import it.")));
			break;
	}
}

/* A core error where no model file is being read */
void
ReportCoreError(TriageStatus status, const char *message, const char *context)
{
	ReportModelError("model", NULL, status, message, context);
}

/*
 * nbytes of a file the core wrote, as a bytea in the current context; what
 * names it in the error if it is larger than a bytea can hold.
 */
bytea *
ByteaFromBytes(const uint8_t *bytes, size_t nbytes, const char *what, const char *hint)
{
	bytea	   *result;

	if (nbytes > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s takes %zu bytes, more than a bytea can hold", what, nbytes),
				 hint ? errhint("%s", hint) : 0));
	result = palloc(nbytes + VARHDRSZ);
	SET_VARSIZE(result, nbytes + VARHDRSZ);
	memcpy(VARDATA(result), bytes, nbytes);
	return result;
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
