/*
 * pg_triage.c
 *		Module entry point: registers each subsystem.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "fasttext_batch.h"
#include "route.h"
#include "triage.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Prices of the large model, for triage.escalation_stats */
static double LlmPromptPricePer1k = 0.0;
static double LlmCompletionPricePer1k = 0.0;
static double LlmBatchPromptPricePer1k = -1.0;
static double LlmBatchCompletionPricePer1k = -1.0;

/* Lets long loops in the core honour cancel and statement_timeout */
static void
CoreCheckForInterrupts(void)
{
	CHECK_FOR_INTERRUPTS();
}

/*
 * Lets core code inside malloc-based libraries stop cleanly first: only for
 * interrupts that end the statement (cancel, statement_timeout, terminate);
 * others (catch-up signals, notifications) are served by the next
 * CHECK_FOR_INTERRUPTS and must not stop anything.
 */
static bool
CoreCancelPending(void)
{
	return QueryCancelPending || ProcDiePending;
}

void
_PG_init(void)
{
	TriageInterruptHook = CoreCheckForInterrupts;
	TriageCancelPendingHook = CoreCancelPending;
	FastTextBatchInit();
	RouteInit();
	QueueInit();
	DefineCustomRealVariable("triage.llm_prompt_price_per_1k",
							 "Price of 1,000 prompt tokens of the large model.",
							 "Used by triage.escalation_stats to estimate costs and savings.",
							 &LlmPromptPricePer1k, 0.0, 0.0, 1e6, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomRealVariable("triage.llm_completion_price_per_1k",
							 "Price of 1,000 completion tokens of the large model.",
							 "Used by triage.escalation_stats to estimate costs and savings.",
							 &LlmCompletionPricePer1k, 0.0, 0.0, 1e6, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	/* -1: half the interactive price, the Batch API's usual discount */
	DefineCustomRealVariable("triage.llm_batch_prompt_price_per_1k",
							 "Price of 1,000 prompt tokens of the large model through the Batch API.",
							 "-1 (the default) means half of triage.llm_prompt_price_per_1k.",
							 &LlmBatchPromptPricePer1k, -1.0, -1.0, 1e6, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomRealVariable("triage.llm_batch_completion_price_per_1k",
							 "Price of 1,000 completion tokens of the large model through the Batch API.",
							 "-1 (the default) means half of triage.llm_completion_price_per_1k.",
							 &LlmBatchCompletionPricePer1k, -1.0, -1.0, 1e6, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	ModelCacheInit();
	ModelFilesInit();
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("triage");
#else
	EmitWarningsOnPlaceholders("triage");
#endif
}
