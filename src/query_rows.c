/*
 * query_rows.c
 *		Reading the rows of a query a user passed (training sets): through a
 *		cursor, a batch at a time, so that SPI never holds more than one
 *		batch, with the same errors for every caller.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "miscadmin.h"

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
