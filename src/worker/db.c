/*-------------------------------------------------------------------------
 *
 * db.c
 *	  triage-worker's side of the database: the connection (with reconnects),
 *	  LISTEN triage_escalations, and the queue functions claim, complete,
 *	  fail, release and heartbeat.
 *
 * Every call is one autocommit statement: the queue functions are written
 * to be their own transactions.  When the connection drops in the middle of
 * complete() or fail(), the worker cannot know whether it committed, so it
 * calls again after reconnecting; the server answers "stale" if the first
 * call had gone through, so no job is answered twice.
 *
 * Nothing here resolves a name through the login role's search_path, which
 * anyone with CREATE on a schema in it could fill with look-alike functions
 * or operators: every connection starts with SET search_path = pg_catalog,
 * pg_temp, and every statement names its functions, operators and types
 * with their schema (a SET rather than a startup option, which poolers such
 * as PgBouncer refuse, and which would replace the options of a service
 * file or PGOPTIONS).
 *
 * A failed claim() is transient: one bad row or a busy server must not stop
 * the queue.  Fatal are only a database without pg_triage's queue and a
 * role that may not claim there (insufficient_privilege: an admin must run
 * triage.allow_worker for it).
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "triage_worker.h"

#define RECONNECT_FIRST 1.0
#define RECONNECT_MAX 30.0
/* The excerpt of a reply complete() could not take, message included */
#define COMPLETE_EXCERPT_MAX 300

void
db_init(Db *db, const WorkerConfig *cfg)
{
	memset(db, 0, sizeof(*db));
	db->cfg = cfg;
	db->backoff = RECONNECT_FIRST;
	if (gethostname(db->host, sizeof(db->host)) != 0)
		strcpy(db->host, "localhost");
	db->host[sizeof(db->host) - 1] = '\0';
	db->pid = (int) getpid();
}

bool
db_connected(const Db *db)
{
	return db->conn != NULL;
}

int
db_socket(const Db *db)
{
	return db->conn ? PQsocket(db->conn) : -1;
}

void
db_close(Db *db)
{
	if (db->conn)
		PQfinish(db->conn);
	db->conn = NULL;
}

/*
 * Copies a libpq message into buf as one line: its line breaks and the
 * indentation after them become one space, the final newline goes.  The
 * message is masked first (it may quote a reply), then cut.
 */
static void
one_line(char *buf, size_t len, const char *msg)
{
	size_t		n = 0;
	bool		space = false;
	char	   *masked = strdup(msg);

	if (masked == NULL)
	{
		snprintf(buf, len, "(out of memory)");
		return;
	}
	redact(masked);
	for (const char *p = masked; *p && n + 1 < len; p++)
	{
		if (*p == '\n' || *p == '\t' || *p == ' ')
			space = true;
		else
		{
			if (space && n > 0 && n + 2 < len)
				buf[n++] = ' ';
			space = false;
			buf[n++] = *p;
		}
	}
	buf[n] = '\0';
	free(masked);
}

/* The connection is gone: drop it and try again soon */
static void
db_lost(Db *db, const char *what)
{
	char		msg[512];

	one_line(msg, sizeof(msg), PQerrorMessage(db->conn));
	log_msg("warning", "lost the database connection %s: %s", what, msg);
	db_close(db);
	db->backoff = RECONNECT_FIRST;
	db->next_try_ms = now_ms() + 200;
}

/* Whether a statement that failed with SQLSTATE state lost the connection */
static bool
connection_lost(Db *db, const char *state)
{
	return PQstatus(db->conn) == CONNECTION_BAD || state == NULL ||
		strncmp(state, "57P", 3) == 0 || strncmp(state, "08", 2) == 0;
}

/*
 * What a failed statement means: the connection is gone, an error worth
 * trying again later (serialization, resources, locks, a server shutting
 * down or a read-only standby after a failover), or one that will not go
 * away (a missing function, no privilege).
 */
static DbStatus
db_error(Db *db, PGresult *res, const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn);
	char		text[512];

	if (connection_lost(db, state))
	{
		char		phrase[128];

		snprintf(phrase, sizeof(phrase), "in %s", what);
		db_lost(db, phrase);
		return DB_LOST;
	}
	one_line(text, sizeof(text), msg);
	if (strncmp(state, "40", 2) == 0 || strncmp(state, "53", 2) == 0 ||
		strncmp(state, "55", 2) == 0 || strncmp(state, "57", 2) == 0 ||
		strncmp(state, "58", 2) == 0 || strncmp(state, "25", 2) == 0)
	{
		log_msg("warning", "%s failed (SQLSTATE %s): %s", what, state, text);
		return DB_TRANSIENT;
	}
	log_msg("error", "%s failed (SQLSTATE %s): %s", what, state, text);
	return DB_FATAL;
}

/*
 * Logs that db->role may not use this database's queue (res: the error,
 * insufficient_privilege), with the fix.
 */
static void
log_not_allowed(Db *db, const PGresult *res)
{
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	char		text[512];
	char		quoted[2 * sizeof(db->role) + 3];
	size_t		q = 0;

	one_line(text, sizeof(text), primary ? primary : "permission denied");

	/* the role as an SQL literal */
	quoted[q++] = '\'';
	for (const char *p = db->role; *p && q + 3 < sizeof(quoted); p++)
	{
		if (*p == '\'')
			quoted[q++] = '\'';
		quoted[q++] = *p;
	}
	quoted[q++] = '\'';
	quoted[q] = '\0';
	log_msg("error", "role \"%s\" may not claim escalations in database \"%s\""
			" (SQLSTATE 42501): %s; a database admin must run"
			" SELECT triage.allow_worker(%s); in database \"%s\" (and"
			" GRANT triage_worker TO \"%s\"; if it is not a member)",
			db->role, PQdb(db->conn), text, quoted, PQdb(db->conn), db->role);
}

/*
 * What a failed statement of db_connect means: DB_LOST (try again later;
 * the connection is closed) or DB_FATAL.
 */
static DbStatus
connect_failed(Db *db, PGresult *res, const char *what)
{
	DbStatus	st = db_error(db, res, what);

	if (st == DB_TRANSIENT)
	{
		db_close(db);
		db->next_try_ms = now_ms() + 1000;
		return DB_LOST;
	}
	return st == DB_LOST ? DB_LOST : DB_FATAL;
}

/* Runs a statement of db_connect that returns no rows */
static DbStatus
connect_command(Db *db, const char *sql, const char *what)
{
	PGresult   *res = PQexec(db->conn, sql);
	DbStatus	st = DB_OK;

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		st = connect_failed(db, res, what);
	PQclear(res);
	return st;
}

/*
 * Connects, pins the session's search_path, checks that pg_triage's queue
 * is there and LISTENs.  DB_LOST (retry later, at db->next_try_ms) or
 * DB_FATAL when the database is reachable but cannot serve.
 */
DbStatus
db_connect(Db *db, int64_t now)
{
	/* the worker's defaults come first, so that the DSN overrides them */
	const char *keywords[] = {"fallback_application_name", "connect_timeout",
		"keepalives_idle", "keepalives_interval", "keepalives_count",
	"dbname", NULL};
	const char *values[] = {"triage-worker", "10", "30", "10", "3", db->cfg->dsn, NULL};
	PGresult   *res;
	DbStatus	st;
	char		path[256];

	db->conn = PQconnectdbParams(keywords, values, 1);
	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK)
	{
		char		msg[512];

		one_line(msg, sizeof(msg), db->conn ? PQerrorMessage(db->conn) : "out of memory");
		log_msg("warning", "could not connect to the database (next try in %.0f s): %s",
				db->backoff, msg);
		db_close(db);
		db->next_try_ms = now + (int64_t) (db->backoff * 1000 * (0.75 + 0.5 * jitter()));
		db->backoff = db->backoff * 2 < RECONNECT_MAX ? db->backoff * 2 : RECONNECT_MAX;
		return DB_LOST;
	}

	/* first, before any statement that names anything */
	st = connect_command(db, "SET search_path = pg_catalog, pg_temp", "SET search_path");
	if (st != DB_OK)
		return st;

	res = PQexec(db->conn, "SELECT pg_catalog.current_setting('search_path'),"
				 " CURRENT_USER::pg_catalog.text");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
	{
		st = connect_failed(db, res, "reading the session's settings");
		PQclear(res);
		return st;
	}
	snprintf(path, sizeof(path), "%s", PQgetvalue(res, 0, 0));
	snprintf(db->role, sizeof(db->role), "%s", PQgetvalue(res, 0, 1));
	PQclear(res);

	/* the queue functions with the arguments this worker passes them */
	res = PQexec(db->conn,
				 "SELECT pg_catalog.num_nonnulls("
				 "  pg_catalog.to_regprocedure('triage.claim(pg_catalog.text, pg_catalog.int4,"
				 " pg_catalog.interval, pg_catalog.text, pg_catalog.text)'),"
				 "  pg_catalog.to_regprocedure('triage.complete(pg_catalog.int8, pg_catalog.jsonb)'),"
				 "  pg_catalog.to_regprocedure('triage.fail(pg_catalog.int8, pg_catalog.text,"
				 " pg_catalog.interval)'),"
				 "  pg_catalog.to_regprocedure('triage.release(pg_catalog.int8)'),"
				 "  pg_catalog.to_regprocedure('triage.heartbeat(pg_catalog.text, pg_catalog.text,"
				 " pg_catalog.int4, pg_catalog.int8, pg_catalog.int8)'))");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		/* no USAGE on schema triage: the role is no triage_worker here */
		if (state != NULL && strcmp(state, "42501") == 0)
		{
			log_not_allowed(db, res);
			PQclear(res);
			db_close(db);
			return DB_FATAL;
		}
		st = connect_failed(db, res, "checking for pg_triage");
		PQclear(res);
		return st;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "5") != 0)
	{
		log_msg("error", "database \"%s\" has no pg_triage queue (triage.claim, complete, fail,"
				" release and heartbeat, with the arguments of this worker): CREATE EXTENSION"
				" pg_triage there, or update it", PQdb(db->conn));
		PQclear(res);
		db_close(db);
		return DB_FATAL;
	}
	PQclear(res);

	st = connect_command(db, "LISTEN triage_escalations", "LISTEN");
	if (st != DB_OK)
		return st;

	log_msg("info", "connected to database \"%s\" as \"%s\"%s (search_path %s)",
			PQdb(db->conn), db->role, db->ever_connected ? " again" : "", path);
	db->ever_connected = true;
	db->backoff = RECONNECT_FIRST;
	return DB_OK;
}

/*
 * Reads what the server sent; *count: how many notifications came on our
 * channel.  Any role may NOTIFY triage_escalations, so a notification is
 * only a hint that there may be work: its payload is not read.
 */
DbStatus
db_poll_notifies(Db *db, int *count)
{
	PGnotify   *n;

	*count = 0;
	if (db->conn == NULL)
		return DB_LOST;
	if (!PQconsumeInput(db->conn) || PQstatus(db->conn) == CONNECTION_BAD)
	{
		db_lost(db, "while waiting for work");
		return DB_LOST;
	}
	while ((n = PQnotifies(db->conn)) != NULL)
	{
		if (strcmp(n->relname, "triage_escalations") == 0)
			(*count)++;
		PQfreemem(n);
	}
	return DB_OK;
}

/*
 * Leases up to n jobs with triage.claim() and appends them to out;
 * *claimed: how many.  now: the time before the call, from which the
 * leases are counted (the server's start a little later).  A job whose
 * request is not a JSON object comes with a NULL request and its action
 * already set to fail.
 *
 * DB_TRANSIENT (with the reason in err): try again later.  DB_FATAL, after
 * logging why: the role may not claim here, or the queue is missing.
 */
DbStatus
db_claim(Db *db, int n, int64_t now, JobQueue *out, int *claimed, char *err, size_t errlen)
{
	const WorkerConfig *cfg = db->cfg;
	char		n_text[16];
	char		vis_text[32];
	const char *params[5];
	PGresult   *res;
	int			id_col;
	int			request_col;
	int			attempts_col;

	*claimed = 0;
	err[0] = '\0';
	snprintf(n_text, sizeof(n_text), "%d", n);
	snprintf(vis_text, sizeof(vis_text), "%.3f", cfg->visibility);
	params[0] = cfg->name;
	params[1] = n_text;
	params[2] = vis_text;
	params[3] = cfg->policy;
	params[4] = cfg->response_format;
	res = PQexecParams(db->conn,
					   "SELECT * FROM triage.claim($1::pg_catalog.text, $2::pg_catalog.int4,"
					   " pg_catalog.make_interval(secs => $3::pg_catalog.float8),"
					   " $4::pg_catalog.text, $5::pg_catalog.text)",
					   5, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		char		text[512];

		if (connection_lost(db, state))
		{
			PQclear(res);
			db_lost(db, "in triage.claim()");
			return DB_LOST;
		}
		if (strcmp(state, "42501") == 0)
		{
			log_not_allowed(db, res);
			PQclear(res);
			return DB_FATAL;
		}
		one_line(text, sizeof(text), PQresultErrorMessage(res));
		PQclear(res);
		if (strcmp(state, "42883") == 0 || strcmp(state, "3F000") == 0)
		{
			log_msg("error", "triage.claim() failed (SQLSTATE %s): %s; is pg_triage's queue in"
					" database \"%s\" of another version?", state, text, PQdb(db->conn));
			return DB_FATAL;
		}
		snprintf(err, errlen, "SQLSTATE %s: %s", state, text);
		return DB_TRANSIENT;
	}
	id_col = PQfnumber(res, "id");
	request_col = PQfnumber(res, "request");
	/* not in the contract yet: used if a later version returns it */
	attempts_col = PQfnumber(res, "attempts");
	if (id_col < 0 || request_col < 0)
	{
		log_msg("error", "triage.claim() returned no id or request column");
		PQclear(res);
		return DB_FATAL;
	}

	for (int i = 0; i < PQntuples(res); i++)
	{
		Job		   *job = calloc(1, sizeof(Job));

		if (job == NULL)
		{
			log_msg("error", "out of memory");
			break;
		}
		job->id = strtoll(PQgetvalue(res, i, id_col), NULL, 10);
		job->retry_after = -1;
		job->claimed_ms = now;
		job->lease_end_ms = now + (int64_t) (cfg->visibility * 1000);
		if (attempts_col >= 0 && !PQgetisnull(res, i, attempts_col))
			job->attempt = atoi(PQgetvalue(res, i, attempts_col)) + 1;
		job->request = http_build_body(PQgetvalue(res, i, request_col), cfg->model_json,
									   &job->request_len);
		if (job->request == NULL)
		{
			job->action = JOB_FAIL;
			snprintf(job->error, sizeof(job->error), "the queued request is not a JSON object");
		}
		queue_push(out, job);
		(*claimed)++;
	}
	PQclear(res);
	return DB_OK;
}

/* The server's answer to complete() or fail(), as one of our static strings */
static const char *
outcome_of(PGresult *res)
{
	static const char *known[] = {"done", "invalid", "stale", "retry", "dead"};
	const char *v = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "";

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(v, known[i]) == 0)
			return known[i];
	return "unknown";
}

/* The job's error when the server answered "stale" */
static void
set_stale(Job *job)
{
	snprintf(job->error, sizeof(job->error),
			 "the lease was lost (it ran out, or the job was given back): another worker"
			 " may have the job");
}

/*
 * Tells the database how job's request ended: complete(), fail() or
 * release().  *outcome: done, invalid, stale, retry, dead, released, or
 * error when the server would not take it (the lease then runs out).
 * DB_LOST: nothing is known to have been recorded; call again after
 * reconnecting.
 */
DbStatus
db_record(Db *db, Job *job, const char **outcome)
{
	char		id_text[32];
	char		secs_text[32];
	const char *params[3];
	PGresult   *res;
	DbStatus	st;

	snprintf(id_text, sizeof(id_text), "%lld", (long long) job->id);
	params[0] = id_text;
	*outcome = "error";

	if (job->action == JOB_COMPLETE)
	{
		/* text parameters end at a NUL byte: such a reply is no JSON anyway */
		if (job->reply == NULL || memchr(job->reply, '\0', job->reply_len) != NULL)
		{
			job->action = JOB_FAIL;
			snprintf(job->error, sizeof(job->error), "reply is not JSON (empty or binary)");
		}
		else
		{
			params[1] = job->reply;
			res = PQexecParams(db->conn,
							   "SELECT triage.complete($1::pg_catalog.int8, $2::pg_catalog.jsonb)",
							   2, NULL, params, NULL, NULL, 0);
			if (PQresultStatus(res) == PGRES_TUPLES_OK)
			{
				*outcome = outcome_of(res);
				if (strcmp(*outcome, "invalid") == 0)
					snprintf(job->error, sizeof(job->error), "the server rejected the answer");
				else if (strcmp(*outcome, "stale") == 0)
					set_stale(job);
				PQclear(res);
				return DB_OK;
			}
			if (PQstatus(db->conn) == CONNECTION_BAD)
			{
				st = db_error(db, res, "triage.complete()");
				PQclear(res);
				return st;
			}

			/*
			 * The reply is no JSON (the cast failed: SQLSTATE class 22), or
			 * the server could not use it: a failed try either way, so that a
			 * reply that can never be recorded ends in the dead letters.  The
			 * server's message may quote the reply: masked before it is cut.
			 */
			{
				const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
				const char *msg = PQresultErrorMessage(res);
				char	   *prefix = malloc(strlen(msg) + 64);

				if (prefix != NULL && state && strncmp(state, "22", 2) == 0)
					strcpy(prefix, "reply is not JSON: ");
				else if (prefix != NULL)
				{
					strcpy(prefix, "complete() failed: ");
					one_line(prefix + strlen(prefix), strlen(msg) + 1, msg);
					strcat(prefix, "; reply: ");
				}
				redacted_excerpt(job->error, sizeof(job->error), COMPLETE_EXCERPT_MAX,
								 prefix ? prefix : "complete() failed; reply: ",
								 job->reply, job->reply_len);
				free(prefix);
			}
			PQclear(res);
			job->action = JOB_FAIL;
		}
	}

	if (job->action == JOB_FAIL)
	{
		params[1] = job->error;
		if (job->retry_after >= 0)
		{
			snprintf(secs_text, sizeof(secs_text), "%.3f", job->retry_after);
			params[2] = secs_text;
		}
		else
			params[2] = NULL;
		res = PQexecParams(db->conn,
						   "SELECT triage.fail($1::pg_catalog.int8, $2::pg_catalog.text,"
						   " pg_catalog.make_interval(secs => $3::pg_catalog.float8))",
						   3, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
		{
			*outcome = outcome_of(res);
			if (strcmp(*outcome, "stale") == 0)
				set_stale(job);
			PQclear(res);
			return DB_OK;
		}
		st = db_error(db, res, "triage.fail()");
		PQclear(res);
		return st;
	}

	res = PQexecParams(db->conn, "SELECT triage.release($1::pg_catalog.int8)",
					   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		*outcome = "released";
		PQclear(res);
		return DB_OK;
	}
	st = db_error(db, res, "triage.release()");
	PQclear(res);
	return st;
}

DbStatus
db_heartbeat(Db *db, long jobs_done, long jobs_failed)
{
	char		pid_text[16];
	char		done_text[32];
	char		failed_text[32];
	const char *params[5];
	PGresult   *res;
	DbStatus	st;

	snprintf(pid_text, sizeof(pid_text), "%d", db->pid);
	snprintf(done_text, sizeof(done_text), "%ld", jobs_done);
	snprintf(failed_text, sizeof(failed_text), "%ld", jobs_failed);
	params[0] = db->cfg->name;
	params[1] = db->host;
	params[2] = pid_text;
	params[3] = done_text;
	params[4] = failed_text;
	res = PQexecParams(db->conn,
					   "SELECT triage.heartbeat($1::pg_catalog.text, $2::pg_catalog.text,"
					   " $3::pg_catalog.int4, $4::pg_catalog.int8, $5::pg_catalog.int8)",
					   5, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		PQclear(res);
		return DB_OK;
	}
	st = db_error(db, res, "triage.heartbeat()");
	PQclear(res);
	return st;
}

/*
 * Runs one statement of the batch mode (params as text).  DB_OK with *res,
 * which the caller clears; DB_LOST; DB_FATAL, logged, when the queue's
 * functions are missing or the role may not call them; DB_TRANSIENT,
 * logged, for any other error (a reply that is no JSON, a lock, ...).
 */
DbStatus
db_query(Db *db, const char *sql, int nparams, const char *const *params, PGresult **res,
		 const char *what)
{
	PGresult   *r;
	const char *state;
	char		text[512];

	*res = NULL;
	if (db->conn == NULL)
		return DB_LOST;
	r = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK)
	{
		*res = r;
		return DB_OK;
	}
	state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	if (connection_lost(db, state))
	{
		char		phrase[128];

		PQclear(r);
		snprintf(phrase, sizeof(phrase), "in %s", what);
		db_lost(db, phrase);
		return DB_LOST;
	}
	one_line(text, sizeof(text), PQresultErrorMessage(r));
	if (strcmp(state, "42501") == 0 && strstr(text, "may not claim") != NULL)
	{
		log_not_allowed(db, r);
		PQclear(r);
		return DB_FATAL;
	}
	PQclear(r);
	if (strcmp(state, "42883") == 0 || strcmp(state, "3F000") == 0 || strcmp(state, "42P01") == 0)
	{
		log_msg("error", "%s failed (SQLSTATE %s): %s; is pg_triage in database \"%s\" of"
				" another version?", what, state, text, PQdb(db->conn));
		return DB_FATAL;
	}
	log_msg("warning", "%s failed (SQLSTATE %s): %s", what, state, text);
	return DB_TRANSIENT;
}
