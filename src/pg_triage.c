/*
 * pg_triage.c
 *		Module entry point: registers each subsystem.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "fasttext_batch.h"
#include "triage.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Lets long loops in the core honour cancel and statement_timeout */
static void
CoreCheckForInterrupts(void)
{
	CHECK_FOR_INTERRUPTS();
}

void
_PG_init(void)
{
	TriageInterruptHook = CoreCheckForInterrupts;
	FastTextBatchInit();
	ModelCacheInit();
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("triage");
#else
	EmitWarningsOnPlaceholders("triage");
#endif
}
