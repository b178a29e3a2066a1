/*
 * pg_triage.c
 *		Module entry point: registers each subsystem.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "triage.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	ModelCacheInit();
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("triage");
#else
	EmitWarningsOnPlaceholders("triage");
#endif
}
