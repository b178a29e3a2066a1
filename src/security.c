/*
 * security.c
 *		Whose rights pg_triage's own SQL runs with, and which names it sees.
 *
 * Design note.  pg_triage runs inside other people's statements: a row
 * trigger fires in whatever session inserts, a worker's complete() writes
 * into a table the worker knows nothing of, and a superuser may classify in
 * a database where anyone can create objects in public.  Two rules hold for
 * every statement the extension itself sends through SPI:
 *
 *	 - names resolve under search_path "pg_catalog, pg_temp" (pg_temp last,
 *	   where PostgreSQL never looks for functions or operators), so nobody's
 *	   function or operator can stand in for the catalog's: BeginOwnSql()
 *	   pins it for the section, the way PostgreSQL 17's RestrictSearchPath()
 *	   does for maintenance commands;
 *	 - a section that acts for another role (the owner of the queue, or of a
 *	   user's table) switches to that role with SECURITY_RESTRICTED_OPERATION,
 *	   as VACUUM and CREATE INDEX run index expressions: code the role owns
 *	   (triggers, casts, index expressions, defaults) then runs with that
 *	   role's rights only, and cannot SET ROLE back or leave temporary objects.
 *
 * Users' own query texts (a training query, a held-out query) are the only
 * SQL run outside such a section: they run as the caller, with the caller's
 * search_path, as if the caller had run them.
 *
 * An error inside a section needs no cleanup here: transaction (or
 * subtransaction) abort restores the user id and unwinds the GUC nest level.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "triage.h"

/* What PostgreSQL 17 calls GUC_SAFE_SEARCH_PATH */
#define SAFE_SEARCH_PATH "pg_catalog, pg_temp"

/*
 * Begin a section of the extension's own SQL: search_path pinned, and, if
 * role is valid, running as role under SECURITY_RESTRICTED_OPERATION.
 * Connects SPI; EndOwnSql() disconnects and restores everything.
 */
void
BeginOwnSql(OwnSqlSection *section, Oid role)
{
	GetUserIdAndSecContext(&section->save_userid, &section->save_sec_context);
	if (OidIsValid(role))
		SetUserIdAndSecContext(role, section->save_sec_context |
							   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	section->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", SAFE_SEARCH_PATH, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
EndOwnSql(OwnSqlSection *section)
{
	SPI_finish();
	AtEOXact_GUC(false, section->save_nestlevel);
	SetUserIdAndSecContext(section->save_userid, section->save_sec_context);
}

/* The owner of a relation, or InvalidOid if it no longer exists */
Oid
RelationOwner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		return InvalidOid;
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/* The oid of triage.<name>, a table of the extension */
Oid
TriageRelation(const char *name)
{
	Oid			nsp = get_namespace_oid(TRIAGE_SCHEMA, false);
	Oid			relid = get_relname_relid(name, nsp);

	if (!OidIsValid(relid))
		elog(ERROR, "%s.%s does not exist", TRIAGE_SCHEMA, name);
	return relid;
}

/*
 * The role that owns pg_triage's tables: the extension's own SQL that reads
 * or writes them for a caller without rights on them (queueing, loading a
 * model's bytes) runs as this role.
 */
Oid
TriageOwner(void)
{
	return RelationOwner(TriageRelation("escalations"));
}
