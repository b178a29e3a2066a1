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

	if (PQstatus(db->conn) == CONNECTION_BAD || state == NULL ||
		strncmp(state, "57P", 3) == 0 || strncmp(state, "08", 2) == 0)
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
 * Connects, checks that pg_triage's queue is there and LISTENs.  DB_LOST
 * (retry later, at db->next_try_ms) or DB_FATAL when the database is
 * reachable but cannot serve.
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
	res = PQexec(db->conn, "SET search_path = pg_catalog, pg_temp");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		st = db_error(db, res, "SET search_path");
		PQclear(res);
		return st == DB_LOST ? DB_LOST : DB_FATAL;
	}
	PQclear(res);

	res = PQexec(db->conn,
				 "SELECT (SELECT pg_catalog.count(DISTINCT p.proname)"
				 "          FROM pg_catalog.pg_proc p"
				 "          JOIN pg_catalog.pg_namespace n"
				 "            ON n.oid OPERATOR(pg_catalog.=) p.pronamespace"
				 "         WHERE n.nspname OPERATOR(pg_catalog.=) 'triage'::pg_catalog.name"
				 "           AND p.proname OPERATOR(pg_catalog.=) ANY"
				 "               ('{claim,complete,fail,release,heartbeat}'::pg_catalog.name[])),"
				 "       pg_catalog.current_setting('search_path')");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
	{
		st = db_error(db, res, "checking for pg_triage");
		PQclear(res);
		return st == DB_LOST ? DB_LOST : DB_FATAL;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "5") != 0)
	{
		log_msg("error", "database \"%s\" has no pg_triage queue (triage.claim, complete, fail,"
				" release and heartbeat): CREATE EXTENSION pg_triage there, or update it",
				PQdb(db->conn));
		PQclear(res);
		db_close(db);
		return DB_FATAL;
	}
	snprintf(path, sizeof(path), "%s", PQgetvalue(res, 0, 1));
	PQclear(res);

	res = PQexec(db->conn, "LISTEN triage_escalations");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		st = db_error(db, res, "LISTEN");
		PQclear(res);
		return st == DB_LOST ? DB_LOST : DB_FATAL;
	}
	PQclear(res);

	log_msg("info", "connected to database \"%s\" as \"%s\"%s (search_path %s)",
			PQdb(db->conn), PQuser(db->conn), db->ever_connected ? " again" : "", path);
	db->ever_connected = true;
	db->backoff = RECONNECT_FIRST;
	return DB_OK;
}

/* Reads what the server sent; *count: how many NOTIFYs concern us */
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
		/* the payload is the job's policy: others' work is not for us */
		if (db->cfg->policy == NULL || n->extra[0] == '\0' ||
			strcmp(n->extra, db->cfg->policy) == 0)
			(*count)++;
		PQfreemem(n);
	}
	return DB_OK;
}

/*
 * Leases up to n jobs with triage.claim() and appends them to out;
 * *claimed: how many.  A job whose request is not a JSON object comes with
 * a NULL request and its action already set to fail.
 */
DbStatus
db_claim(Db *db, int n, JobQueue *out, int *claimed)
{
	const WorkerConfig *cfg = db->cfg;
	char		n_text[16];
	char		vis_text[32];
	const char *params[4];
	PGresult   *res;
	int			id_col;
	int			request_col;
	int			attempts_col;
	DbStatus	st;

	*claimed = 0;
	snprintf(n_text, sizeof(n_text), "%d", n);
	snprintf(vis_text, sizeof(vis_text), "%.3f", cfg->visibility);
	params[0] = cfg->name;
	params[1] = n_text;
	params[2] = vis_text;
	params[3] = cfg->policy;
	res = PQexecParams(db->conn,
					   "SELECT * FROM triage.claim($1::pg_catalog.text, $2::pg_catalog.int4,"
					   " pg_catalog.make_interval(secs => $3::pg_catalog.float8),"
					   " $4::pg_catalog.text)",
					   4, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		st = db_error(db, res, "triage.claim()");
		PQclear(res);
		return st;
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
