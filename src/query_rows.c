/*
 * query_rows.c
 *		Reading the rows of a query a user passed (training sets, held-out
 *		sets): through a cursor, a batch at a time, so that SPI never holds
 *		more than one batch, with the same errors for every caller.
 *
 * A user's query text is the only SQL the extension runs as written by
 * someone else: as the caller, with the caller's search_path.  The SQL
 * functions that take one run with a pinned search_path themselves
 * (security.c), so they receive the caller's search_path from a thin
 * wrapper and read the rows through triage_internal.query_rows(), which
 * runs the text under that path and hands back each row as text[].
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/tuplestore.h"

#include "triage.h"

/*
 * Run query and call spec->row for each of its rows, in order; spec->check
 * first sees the result's columns and raises an error if they do not fit.
 * row runs inside SPI: what it keeps must go to a context of its own.
 */
void
ForEachQueryRow(const char *query, const QueryRowsSpec *spec, void *arg)
{
	SPIPlanPtr	plan;
	Portal		portal;
	int64		row = 0;
	bool		checked = false;

	SPI_connect();
	plan = SPI_prepare(query, 0, NULL);
	if (plan == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("%s query could not be prepared: %s", spec->purpose,
						SPI_result_code_string(SPI_result)),
				 errhint("Pass a query such as %s.", spec->example)));
	if (!SPI_is_cursor_plan(plan))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s query must be a single SELECT returning %s", spec->purpose, spec->columns)));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, spec->batch);
		if (SPI_processed == 0)
			break;
		if (!checked)
		{
			spec->check(SPI_tuptable->tupdesc, arg);
			checked = true;
		}
		for (uint64 i = 0; i < SPI_processed; i++)
			spec->row(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, ++row, arg);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_finish();
}

PG_FUNCTION_INFO_V1(triage_query_rows);

/* Does a column of type fit where types[] says "text" or "jsonb"? */
static bool
ColumnFits(Oid type, const char *wanted)
{
	if (strcmp(wanted, "jsonb") == 0)
		return type == JSONBOID;
	return type == TEXTOID || type == VARCHAROID || type == BPCHAROID || type == NAMEOID;
}

/* "(text, integer)": the types of a result, for errors */
static char *
ColumnTypes(TupleDesc tupdesc)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	for (int c = 0; c < tupdesc->natts; c++)
		appendStringInfo(&buf, "%s%s", c > 0 ? ", " : "",
						 format_type_be(TupleDescAttr(tupdesc, c)->atttypid));
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * query_rows(query text, search_path text, types text[]) returns table
 * (r text[]): the rows of a user's query, run as the caller under
 * search_path, each as the text of its columns (NULL stays NULL).  An
 * error unless its columns are of types ("text": any string type, or
 * "jsonb").
 */
Datum
triage_query_rows(PG_FUNCTION_ARGS)
{
	char	   *query;
	char	   *search_path;
	int			columns;
	Datum	   *type_datums;
	char	  **types;
	char	   *wanted;
	char	   *example;
	TupleDesc	tupdesc;
	Tuplestorestate *store;
	SPIPlanPtr	plan;
	Portal		portal;
	int			nestlevel;
	Oid		   *output_funcs;
	Datum	   *texts;
	bool	   *text_nulls;
	bool		checked = false;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("query must not be NULL")));
	query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	search_path = text_to_cstring(PG_GETARG_TEXT_PP(1));
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), TEXTOID, -1, false, TYPALIGN_INT,
					  &type_datums, NULL, &columns);
	if (columns < 1)
		elog(ERROR, "query_rows needs the types of the columns");
	types = palloc(sizeof(char *) * columns);
	wanted = "(";
	example = "SELECT ";
	for (int c = 0; c < columns; c++)
	{
		types[c] = TextDatumGetCString(type_datums[c]);
		wanted = psprintf("%s%s%s", wanted, c > 0 ? ", " : "", types[c]);
		example = psprintf("%s%scolumn%d::%s", example, c > 0 ? ", " : "", c + 1, types[c]);
	}
	wanted = psprintf("%s)", wanted);
	{
		/* one column of text[]: a scalar result, which BeginMaterialize does not take */
		ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
		MemoryContext old;

		if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
			(rsinfo->allowedModes & SFRM_Materialize) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("set-valued function called in context that cannot accept a set")));
		old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
		tupdesc = CreateTemplateTupleDesc(1);
		TupleDescInitEntry(tupdesc, (AttrNumber) 1, "r", TEXTARRAYOID, -1, 0);
		store = tuplestore_begin_heap(true, false, work_mem);
		MemoryContextSwitchTo(old);
		rsinfo->returnMode = SFRM_Materialize;
		rsinfo->setResult = store;
		rsinfo->setDesc = tupdesc;
	}
	output_funcs = palloc(sizeof(Oid) * columns);
	texts = palloc(sizeof(Datum) * columns);
	text_nulls = palloc(sizeof(bool) * columns);

	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", search_path, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	SPI_connect();
	plan = SPI_prepare(query, 0, NULL);
	if (plan == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("query could not be prepared: %s", SPI_result_code_string(SPI_result))));
	if (!SPI_is_cursor_plan(plan))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("query must be a single SELECT returning %s", wanted)));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		if (!checked)
		{
			bool		fits = SPI_tuptable->tupdesc->natts == columns;

			for (int c = 0; c < columns && fits; c++)
				fits = ColumnFits(TupleDescAttr(SPI_tuptable->tupdesc, c)->atttypid, types[c]);
			if (!fits)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("query must return %s, not %s", wanted, ColumnTypes(SPI_tuptable->tupdesc)),
						 errhint("Cast the columns: %s FROM ...", example)));
			for (int c = 0; c < columns; c++)
			{
				bool		varlena;

				getTypeOutputInfo(TupleDescAttr(SPI_tuptable->tupdesc, c)->atttypid,
								  &output_funcs[c], &varlena);
			}
			checked = true;
		}
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			Datum		value;
			bool		isnull = false;
			int			dims[1] = {columns};
			int			lbs[1] = {1};

			for (int c = 0; c < columns; c++)
			{
				Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1,
											  &text_nulls[c]);

				texts[c] = text_nulls[c] ? (Datum) 0
					: CStringGetTextDatum(OidOutputFunctionCall(output_funcs[c], d));
			}
			value = PointerGetDatum(construct_md_array(texts, text_nulls, 1, dims, lbs,
													   TEXTOID, -1, false, TYPALIGN_INT));
			tuplestore_putvalues(store, tupdesc, &value, &isnull);
			for (int c = 0; c < columns; c++)
				if (!text_nulls[c])
					pfree(DatumGetPointer(texts[c]));
			pfree(DatumGetPointer(value));
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_finish();
	AtEOXact_GUC(false, nestlevel);
	return (Datum) 0;
}
