/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  triage-worker --mode batch: escalations answered through an
 *	  OpenAI-compatible Batch API, at its price (half, at OpenAI).
 *
 * The loop, one batch at a time per step, all blocking (a batch takes
 * minutes to hours; nothing here needs parallel transfers):
 *
 *	claim_batch()		leases rows of batch policies, records the batch
 *	POST /files			the JSONL file, one request per line, custom_id = id
 *	batch_uploaded()	the file id in, the body of the next call out
 *	POST /batches		completion_window 24h
 *	batch_created()		the endpoint's batch id, stored
 *	GET /batches/{id}	polled with backoff; extend_batch() meanwhile
 *	batch_polled()		its state, output and error file ids
 *	GET /files/{id}/content	each line to batch_result(): complete, fail
 *	finish_batch()		the rows without an answer back to the queue
 *
 * The state is in triage.batches, not here: at start (and after each
 * reconnect) take_batches() hands back this worker's open batches, and a
 * submitted one is polled again, never sent twice.  A batch killed between
 * claim and creation is rebuilt from its rows (batch_requests) and sent;
 * the only window for a second batch at the endpoint is between its reply
 * to POST /batches and batch_created(), one statement.
 *
 * As in interactive mode, the worker reads no JSON: the endpoint's replies
 * go, masked, to the database functions above, which check every id and
 * line (a line's custom_id must be a row of this batch).  The worker only
 * splits the output files into lines, at most MAX_LINE bytes each.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "triage_worker.h"

/* A reply of the JSON API (files, batches): no more than this */
#define MAX_API_REPLY (1024 * 1024)
/* One line of an output file: a chat completion, as in interactive mode */
#define MAX_LINE (8 * 1024 * 1024)
/* Submissions of one batch before its rows go back to the queue */
#define MAX_SUBMIT_ATTEMPTS 5
#define HEARTBEAT_MS 10000

typedef enum BatchState
{
	BATCH_TO_SUBMIT,			/* claimed, not yet created at the endpoint */
	BATCH_SUBMITTED				/* created: polled */
} BatchState;

typedef struct Batch
{
	struct Batch *next;
	int64_t		id;				/* triage.batches.id */
	char		provider[256];	/* the endpoint's batch id */
	BatchState	state;
	char	   *jsonl;			/* the file, for a fresh claim */
	size_t		jsonl_len;
	int			rows;
	int64_t		next_step_ms;	/* the next submission or poll */
	double		delay;			/* seconds: the poll backoff */
	int64_t		next_extend_ms;
	int			failures;		/* submissions or polls failed in a row */
} Batch;

typedef struct Buffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
	size_t		max;
	bool		too_big;
	FILE	   *file;			/* downloads go to a file instead */
} Buffer;

typedef struct BatchRun
{
	const WorkerConfig *cfg;
	char	   *const *api_key;
	Db		   *db;
	Batch	   *batches;
	int64_t		next_claim_ms;
	int64_t		next_heartbeat_ms;
	bool		taken;			/* take_batches() since the last connect */
	bool		drained;		/* --once: the last claim found nothing */
	long		done;
	long		failed;
	bool		endpoint_down;	/* a batch could not be sent at all */
} BatchRun;

static size_t
on_data(char *data, size_t size, size_t nmemb, void *arg)
{
	Buffer	   *b = arg;
	size_t		n = size * nmemb;

	if (b->len + n > b->max)
	{
		b->too_big = true;
		return 0;
	}
	if (b->file)
	{
		if (fwrite(data, 1, n, b->file) != n)
			return 0;
		b->len += n;
		return n;
	}
	if (b->len + n + 1 > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 4096;
		char	   *grown;

		while (cap < b->len + n + 1)
			cap *= 2;
		if ((grown = realloc(b->data, cap)) == NULL)
			return 0;
		b->data = grown;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/*
 * One request to the endpoint: path after the base URL; body (JSON) or
 * jsonl (uploaded as the file of a multipart form, purpose batch), or
 * neither for a GET.  The reply goes to out, masked.  Returns the HTTP
 * status, or 0 with err set when there was none.
 */
static long
api_call(BatchRun *r, const char *path, const char *body, const char *jsonl, size_t jsonl_len,
		 const char *filename, Buffer *out, char *err, size_t errlen)
{
	const WorkerConfig *cfg = r->cfg;
	CURL	   *easy = curl_easy_init();
	struct curl_slist *h = NULL;
	curl_mime  *mime = NULL;
	char	   *url;
	char		curl_error[CURL_ERROR_SIZE] = "";
	long		status = 0;
	CURLcode	rc;

	err[0] = '\0';
	url = malloc(strlen(cfg->base_url) + strlen(path) + 1);
	if (easy == NULL || url == NULL)
	{
		snprintf(err, errlen, "out of memory");
		free(url);
		if (easy)
			curl_easy_cleanup(easy);
		return 0;
	}
	strcpy(url, cfg->base_url);
	strcat(url, path);
	h = curl_slist_append(h, "Accept: application/json");
	h = h ? curl_slist_append(h, "Expect:") : NULL;
	if (h && body)
		h = curl_slist_append(h, "Content-Type: application/json");
	if (h && *r->api_key)
	{
		size_t		len = strlen("Authorization: Bearer ") + strlen(*r->api_key) + 1;
		char	   *auth = malloc(len);

		if (auth)
		{
			snprintf(auth, len, "Authorization: Bearer %s", *r->api_key);
			h = curl_slist_append(h, auth);
			memset(auth, 0, len);
			free(auth);
		}
		else
			h = NULL;
	}
	if (h == NULL)
	{
		snprintf(err, errlen, "out of memory");
		curl_easy_cleanup(easy);
		free(url);
		return 0;
	}
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "triage-worker/" WORKER_VERSION);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, curl_error);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, out);
	if (out->file)
	{
		/* a file may be large: give up only on a stalled transfer */
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, (long) (cfg->timeout + 1));
	}
	else
		curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) (cfg->timeout * 1000));
	if (body)
	{
		curl_easy_setopt(easy, CURLOPT_POST, 1L);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(body));
	}
	else if (jsonl)
	{
		curl_mimepart *part;

		mime = curl_mime_init(easy);
		part = curl_mime_addpart(mime);
		curl_mime_name(part, "purpose");
		curl_mime_data(part, "batch", CURL_ZERO_TERMINATED);
		part = curl_mime_addpart(mime);
		curl_mime_name(part, "file");
		curl_mime_filename(part, filename);
		curl_mime_type(part, "application/jsonl");
		curl_mime_data(part, jsonl, jsonl_len);
		curl_easy_setopt(easy, CURLOPT_MIMEPOST, mime);
		/* an upload of 100 MB takes longer than one answer */
		curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 0L);
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, (long) (cfg->timeout + 1));
	}

	rc = curl_easy_perform(easy);
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK)
	{
		snprintf(err, errlen, "%s", out->too_big ? "reply too large" :
				 curl_error[0] ? curl_error : curl_easy_strerror(rc));
		redact(err);
		status = 0;
	}
	if (out->data)
		redact_text(out->data, out->len);
	curl_easy_cleanup(easy);
	curl_mime_free(mime);
	curl_slist_free_all(h);
	free(url);
	return status;
}

/* err: what, the status, and (except for 400, 401, 403, 407) a masked excerpt */
static void
http_error(char *err, size_t errlen, const char *what, long status, const Buffer *out,
		   const char *transport)
{
	char		prefix[160];

	if (status == 0)
		snprintf(err, errlen, "%s: %s", what, transport);
	else if (status == 400 || status == 401 || status == 403 || status == 407 || out->len == 0 ||
			 out->data == NULL)
		snprintf(err, errlen, "%s: HTTP %ld", what, status);
	else
	{
		snprintf(prefix, sizeof(prefix), "%s: HTTP %ld: ", what, status);
		redacted_excerpt(err, errlen, 200, prefix, out->data, out->len);
	}
}

static void
buffer_free(Buffer *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

static Batch *
batch_new(int64_t id)
{
	Batch	   *b = calloc(1, sizeof(Batch));

	if (b)
		b->id = id;
	return b;
}

static void
batch_drop(BatchRun *r, Batch *b)
{
	Batch	  **p;

	for (p = &r->batches; *p; p = &(*p)->next)
		if (*p == b)
		{
			*p = b->next;
			break;
		}
	free(b->jsonl);
	free(b);
}

static Batch *
batch_find(BatchRun *r, int64_t id)
{
	for (Batch *b = r->batches; b; b = b->next)
		if (b->id == id)
			return b;
	return NULL;
}

/*
 * Appends the JSONL lines of res's rows (columns id_col and request_col) to
 * b's file.  Returns false when out of memory.
 */
static bool
append_lines(BatchRun *r, Batch *b, PGresult *res, int id_col, int request_col)
{
	for (int i = 0; i < PQntuples(res); i++)
	{
		size_t		body_len;
		char	   *body = http_build_body(PQgetvalue(res, i, request_col), r->cfg->model_json,
										   &body_len);
		const char *id = PQgetvalue(res, i, id_col);
		size_t		need;
		char	   *grown;

		if (body == NULL)
			return false;
		need = b->jsonl_len + body_len + strlen(id) + 128;
		if ((grown = realloc(b->jsonl, need)) == NULL)
		{
			free(body);
			return false;
		}
		b->jsonl = grown;
		b->jsonl_len += (size_t) snprintf(b->jsonl + b->jsonl_len, need - b->jsonl_len,
										  "{\"custom_id\": \"%s\", \"method\": \"POST\", \"url\":"
										  " \"/v1/chat/completions\", \"body\": %s}\n", id, body);
		b->rows++;
		free(body);
	}
	return true;
}

/* Per line, what the JSONL adds to a request: the wrapper and the model */
static int
line_overhead(const WorkerConfig *cfg)
{
	return (int) (strlen(cfg->model_json) + 128);
}

/* Closes batch b with status (rows back to the queue); false if the database went */
static bool
finish(BatchRun *r, Batch *b, const char *status, const char *error)
{
	char		id_text[32];
	const char *params[3];
	PGresult   *res;
	DbStatus	st;

	snprintf(id_text, sizeof(id_text), "%" PRId64, b->id);
	params[0] = id_text;
	params[1] = status;
	params[2] = error;
	st = db_query(r->db, "SELECT triage.finish_batch($1::pg_catalog.int8, $2::pg_catalog.text,"
				  " $3::pg_catalog.text)", 3, params, &res, "triage.finish_batch()");
	if (st == DB_LOST)
		return false;
	log_msg(strcmp(status, "completed") == 0 ? "info" : "warning",
			"batch=%" PRId64 " provider=%s finished %s: %s rows back to the queue%s%s", b->id,
			b->provider[0] ? b->provider : "(none)", status,
			res ? PQgetvalue(res, 0, 0) : "?", error ? ": " : "", error ? error : "");
	PQclear(res);
	batch_drop(r, b);
	return true;
}

/* A submission or poll that failed: try again later, with backoff */
static void
step_failed(BatchRun *r, Batch *b, const char *err)
{
	double		delay = r->cfg->batch_poll;

	b->failures++;
	for (int i = 1; i < b->failures && delay < r->cfg->batch_poll_max; i++)
		delay *= 2;
	if (delay > r->cfg->batch_poll_max)
		delay = r->cfg->batch_poll_max;
	delay *= 0.75 + 0.5 * jitter();
	b->next_step_ms = now_ms() + (int64_t) (delay * 1000);
	log_msg("warning", "batch=%" PRId64 " %s (%d in a row, next try in %.1f s)", b->id, err,
			b->failures, delay);
}

/*
 * A submission that failed with HTTP status (0: none): tried again later;
 * after MAX_SUBMIT_ATTEMPTS the rows go back to the queue, with an attempt
 * counted if the endpoint refused the file itself (400, 413, 422: the rows
 * may be at fault), without one if it was down or refused the key.
 */
static void
submit_failed(BatchRun *r, Batch *b, long status, const char *msg)
{
	if (b->failures + 1 < MAX_SUBMIT_ATTEMPTS)
	{
		step_failed(r, b, msg);
		return;
	}
	if (status == 400 || status == 413 || status == 422)
		finish(r, b, "failed", msg);
	else
	{
		finish(r, b, "abandoned", msg);
		r->endpoint_down = true;
	}
}

/*
 * Sends batch b: its file (rebuilt from its rows after a restart), then
 * the batch.  On success b is submitted.
 */
static void
submit(BatchRun *r, Batch *b)
{
	char		id_text[32];
	char		err[600];
	char		filename[64];
	const char *params[3];
	PGresult   *res;
	DbStatus	st;
	Buffer		out = {0};
	long		status;
	char	   *create_body = NULL;

	snprintf(id_text, sizeof(id_text), "%" PRId64, b->id);
	params[0] = id_text;
	if (b->jsonl == NULL)
	{
		params[1] = r->cfg->response_format;
		st = db_query(r->db, "SELECT id, request FROM triage.batch_requests($1::pg_catalog.int8,"
					  " $2::pg_catalog.text)", 2, params, &res, "triage.batch_requests()");
		if (st != DB_OK)
		{
			if (st == DB_TRANSIENT)
				step_failed(r, b, "could not read its rows");
			return;
		}
		b->rows = 0;
		if (!append_lines(r, b, res, 0, 1))
		{
			PQclear(res);
			step_failed(r, b, "out of memory");
			return;
		}
		PQclear(res);
		if (b->rows == 0)
		{
			finish(r, b, "abandoned", "no row of it is leased any more");
			return;
		}
	}

	snprintf(filename, sizeof(filename), "triage-batch-%" PRId64 ".jsonl", b->id);
	out.max = MAX_API_REPLY;
	status = api_call(r, "/files", NULL, b->jsonl, b->jsonl_len, filename, &out, err, sizeof(err));
	if (status < 200 || status >= 300)
	{
		char		msg[700];

		http_error(msg, sizeof(msg), "upload (POST /files)", status, &out, err);
		buffer_free(&out);
		submit_failed(r, b, status, msg);
		return;
	}
	params[1] = out.data ? out.data : "";
	params[2] = "24h";
	st = db_query(r->db, "SELECT triage.batch_uploaded($1::pg_catalog.int8, $2::pg_catalog.jsonb,"
				  " $3::pg_catalog.text)", 3, params, &res, "triage.batch_uploaded()");
	buffer_free(&out);
	if (st != DB_OK || PQgetisnull(res, 0, 0))
	{
		PQclear(res);
		if (st != DB_LOST)
			step_failed(r, b, "the reply to the upload has no file id");
		return;
	}
	create_body = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (create_body == NULL)
		return;

	out.max = MAX_API_REPLY;
	status = api_call(r, "/batches", create_body, NULL, 0, NULL, &out, err, sizeof(err));
	free(create_body);
	if (status < 200 || status >= 300)
	{
		char		msg[700];

		http_error(msg, sizeof(msg), "creating the batch (POST /batches)", status, &out, err);
		buffer_free(&out);
		submit_failed(r, b, status, msg);
		return;
	}
	params[1] = out.data ? out.data : "";
	st = db_query(r->db, "SELECT triage.batch_created($1::pg_catalog.int8, $2::pg_catalog.jsonb)",
				  2, params, &res, "triage.batch_created()");
	buffer_free(&out);
	if (st != DB_OK || PQgetisnull(res, 0, 0))
	{
		PQclear(res);
		if (st != DB_LOST)
			step_failed(r, b, "the reply to POST /batches has no batch id");
		return;
	}
	snprintf(b->provider, sizeof(b->provider), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	free(b->jsonl);
	b->jsonl = NULL;
	b->jsonl_len = 0;
	b->state = BATCH_SUBMITTED;
	b->failures = 0;
	b->delay = r->cfg->batch_poll;
	b->next_step_ms = now_ms() + (int64_t) (b->delay * 1000);
	log_msg("info", "batch=%" PRId64 " provider=%s submitted: %d requests", b->id, b->provider,
			b->rows);
}

/*
 * Downloads file_id and hands each line to batch_result().  Returns false
 * when the database went or the download failed (the whole file is read
 * again later: lines already recorded then come back stale).
 */
static bool
read_file(BatchRun *r, Batch *b, const char *file_id)
{
	char		path[512];
	char		err[600];
	char		id_text[32];
	const char *params[2];
	Buffer		out = {0};
	long		status;
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		n;
	long		lines = 0;
	long		too_long = 0;
	bool		ok = true;

	snprintf(path, sizeof(path), "/files/%s/content", file_id);
	out.file = tmpfile();
	if (out.file == NULL)
	{
		step_failed(r, b, "no temporary file for the output");
		return false;
	}
	/* an output holds answers besides the requests: room for ten times the input */
	out.max = (size_t) r->cfg->batch_file_bytes * 10 + MAX_LINE;
	status = api_call(r, path, NULL, NULL, 0, NULL, &out, err, sizeof(err));
	if (status < 200 || status >= 300)
	{
		char		msg[700];

		http_error(msg, sizeof(msg), "downloading a result file", status, &out, err);
		fclose(out.file);
		step_failed(r, b, msg);
		return false;
	}
	rewind(out.file);
	snprintf(id_text, sizeof(id_text), "%" PRId64, b->id);
	params[0] = id_text;
	while ((n = getline(&line, &cap, out.file)) >= 0)
	{
		PGresult   *res;
		DbStatus	st;

		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0)
			continue;
		lines++;
		/* as for a reply in interactive mode: no NUL, no monster */
		if ((size_t) n > MAX_LINE || memchr(line, '\0', (size_t) n) != NULL)
		{
			too_long++;
			continue;
		}
		redact_text(line, (size_t) n);
		params[1] = line;
		st = db_query(r->db, "SELECT triage.batch_result($1::pg_catalog.int8, $2::pg_catalog.text)",
					  2, params, &res, "triage.batch_result()");
		if (st == DB_LOST || st == DB_FATAL)
		{
			ok = false;
			break;
		}
		if (st == DB_OK)
		{
			const char *outcome = PQgetvalue(res, 0, 0);

			metrics_job(outcome);
			if (strcmp(outcome, "done") == 0)
				r->done++;
			else if (strcmp(outcome, "invalid") == 0 || strcmp(outcome, "retry") == 0 ||
					 strcmp(outcome, "dead") == 0)
				r->failed++;
			if (strcmp(outcome, "done") != 0)
				log_msg("warning", "batch=%" PRId64 " line %ld: %s", b->id, lines, outcome);
			PQclear(res);
		}
	}
	free(line);
	fclose(out.file);
	if (too_long > 0)
		log_msg("warning", "batch=%" PRId64 " file %s: %ld lines longer than %d bytes or with a"
				" NUL byte skipped", b->id, file_id, too_long, MAX_LINE);
	return ok;
}

/* Polls a submitted batch; reads its files and closes it once it is over */
static void
poll_batch(BatchRun *r, Batch *b)
{
	char		path[512];
	char		err[600];
	char		id_text[32];
	const char *params[2];
	Buffer		out = {0};
	long		status;
	PGresult   *res;
	DbStatus	st;
	char		state[32];
	char		output_id[256];
	char		error_id[256];

	snprintf(path, sizeof(path), "/batches/%s", b->provider);
	out.max = MAX_API_REPLY;
	status = api_call(r, path, NULL, NULL, 0, NULL, &out, err, sizeof(err));
	if (status == 404)
	{
		/* the endpoint lost it: the rows would wait for nothing */
		buffer_free(&out);
		finish(r, b, "cancelled", "the endpoint does not know the batch (404)");
		return;
	}
	if (status < 200 || status >= 300)
	{
		char		msg[700];

		http_error(msg, sizeof(msg), "polling (GET /batches)", status, &out, err);
		buffer_free(&out);
		step_failed(r, b, msg);
		return;
	}
	snprintf(id_text, sizeof(id_text), "%" PRId64, b->id);
	params[0] = id_text;
	params[1] = out.data ? out.data : "";
	st = db_query(r->db, "SELECT status, output_file_id, error_file_id FROM"
				  " triage.batch_polled($1::pg_catalog.int8, $2::pg_catalog.jsonb)",
				  2, params, &res, "triage.batch_polled()");
	buffer_free(&out);
	if (st != DB_OK)
	{
		if (st == DB_TRANSIENT)
			step_failed(r, b, "the poll's reply is not JSON");
		return;
	}
	if (PQgetisnull(res, 0, 0))
	{
		PQclear(res);
		step_failed(r, b, "the poll's reply is not about this batch, or its status is unknown");
		return;
	}
	snprintf(state, sizeof(state), "%s", PQgetvalue(res, 0, 0));
	snprintf(output_id, sizeof(output_id), "%s", PQgetvalue(res, 0, 1));
	snprintf(error_id, sizeof(error_id), "%s", PQgetvalue(res, 0, 2));
	PQclear(res);
	b->failures = 0;
	if (strcmp(state, "in_progress") == 0)
	{
		b->delay = b->delay * 2 < r->cfg->batch_poll_max ? b->delay * 2 : r->cfg->batch_poll_max;
		b->next_step_ms = now_ms() + (int64_t) (b->delay * 1000);
		return;
	}
	/* over: what it answered, then the rest back to the queue */
	if (output_id[0] && !read_file(r, b, output_id))
		return;
	if (error_id[0] && !read_file(r, b, error_id))
		return;
	finish(r, b, state, NULL);
}

/* Keeps the leases of b's rows while the endpoint has them */
static void
extend(BatchRun *r, Batch *b, int64_t now)
{
	char		id_text[32];
	char		vis_text[32];
	const char *params[2];
	PGresult   *res;

	snprintf(id_text, sizeof(id_text), "%" PRId64, b->id);
	snprintf(vis_text, sizeof(vis_text), "%.3f", r->cfg->visibility);
	params[0] = id_text;
	params[1] = vis_text;
	if (db_query(r->db, "SELECT triage.extend_batch($1::pg_catalog.int8,"
				 " pg_catalog.make_interval(secs => $2::pg_catalog.float8))",
				 2, params, &res, "triage.extend_batch()") == DB_OK)
	{
		PQclear(res);
		/* three times per lease: one missed extension does not lose it */
		b->next_extend_ms = now + (int64_t) (r->cfg->visibility * 1000 / 3);
	}
}

/* The open batches this worker takes back after a (re)start */
static DbStatus
take(BatchRun *r)
{
	const char *params[1] = {r->cfg->name};
	PGresult   *res;
	DbStatus	st = db_query(r->db, "SELECT batch, status, provider_batch_id, escalations FROM"
							  " triage.take_batches($1::pg_catalog.text)", 1, params, &res,
							  "triage.take_batches()");

	if (st != DB_OK)
		return st;
	for (int i = 0; i < PQntuples(res); i++)
	{
		int64_t		id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		Batch	   *b = batch_find(r, id);

		if (b == NULL)
		{
			if ((b = batch_new(id)) == NULL)
				break;
			b->next = r->batches;
			r->batches = b;
		}
		b->rows = atoi(PQgetvalue(res, i, 3));
		if (strcmp(PQgetvalue(res, i, 1), "submitted") == 0)
		{
			b->state = BATCH_SUBMITTED;
			snprintf(b->provider, sizeof(b->provider), "%s", PQgetvalue(res, i, 2));
			b->delay = r->cfg->batch_poll;
		}
		else
			b->state = BATCH_TO_SUBMIT;
		b->next_step_ms = 0;	/* at once */
		b->next_extend_ms = 0;
		log_msg("info", "batch=%" PRId64 " taken back (%s%s%s, %d rows leased)", id,
				PQgetvalue(res, i, 1), b->provider[0] ? " as " : "", b->provider, b->rows);
	}
	PQclear(res);
	return DB_OK;
}

/* Claims the rows of a new batch; true if it found some */
static bool
claim(BatchRun *r, DbStatus *st)
{
	char		n_text[16];
	char		bytes_text[32];
	char		vis_text[32];
	char		overhead_text[16];
	const char *params[7];
	PGresult   *res;
	Batch	   *b;

	snprintf(n_text, sizeof(n_text), "%d", r->cfg->batch_file_requests);
	snprintf(bytes_text, sizeof(bytes_text), "%ld", r->cfg->batch_file_bytes);
	snprintf(vis_text, sizeof(vis_text), "%.3f", r->cfg->visibility);
	snprintf(overhead_text, sizeof(overhead_text), "%d", line_overhead(r->cfg));
	params[0] = r->cfg->name;
	params[1] = n_text;
	params[2] = bytes_text;
	params[3] = vis_text;
	params[4] = r->cfg->policy;
	params[5] = r->cfg->response_format;
	params[6] = overhead_text;
	*st = db_query(r->db, "SELECT batch, id, request FROM triage.claim_batch($1::pg_catalog.text,"
				   " $2::pg_catalog.int4, $3::pg_catalog.int8,"
				   " pg_catalog.make_interval(secs => $4::pg_catalog.float8), $5::pg_catalog.text,"
				   " $6::pg_catalog.text, $7::pg_catalog.int4)", 7, params, &res,
				   "triage.claim_batch()");
	if (*st != DB_OK)
		return false;
	if (PQntuples(res) == 0)
	{
		PQclear(res);
		return false;
	}
	if ((b = batch_new(strtoll(PQgetvalue(res, 0, 0), NULL, 10))) == NULL ||
		!append_lines(r, b, res, 1, 2))
	{
		/* the rows stay leased in the batch: resent from the database */
		if (b)
		{
			free(b->jsonl);
			b->jsonl = NULL;
			b->jsonl_len = 0;
		}
	}
	PQclear(res);
	if (b == NULL)
		return true;
	b->state = BATCH_TO_SUBMIT;
	b->next = r->batches;
	r->batches = b;
	log_msg("info", "batch=%" PRId64 " claimed: %d rows, %zu bytes", b->id, b->rows, b->jsonl_len);
	/* a full file: there may be more */
	r->next_claim_ms = b->rows >= r->cfg->batch_file_requests ? now_ms() :
		now_ms() + (int64_t) (r->cfg->batch_interval * 1000);
	submit(r, b);
	return true;
}

/*
 * The batch mode's loop, until a signal (or with --once, until nothing is
 * claimable and no batch is open).  Batches still open at the end stay in
 * triage.batches, their rows leased: the next run takes them back.
 */
int
batch_run(const WorkerConfig *cfg, char *const *api_key, Db *db)
{
	BatchRun	r = {0};

	r.cfg = cfg;
	r.api_key = api_key;
	r.db = db;
	while (!worker_stopping())
	{
		int64_t		now = now_ms();
		int64_t		wake = now + 1000;
		DbStatus	st;
		Batch	   *b;
		Batch	   *next;

		if (!db_connected(db))
		{
			if (now >= db->next_try_ms)
			{
				st = db_connect(db, now);
				if (st == DB_FATAL || (st == DB_LOST && cfg->once && !db->ever_connected))
					return EXIT_FATAL;
				r.taken = false;
			}
			if (!db_connected(db))
			{
				worker_wait(db->next_try_ms - now, -1);
				continue;
			}
		}
		if (now >= r.next_heartbeat_ms)
		{
			db_heartbeat(db, r.done, r.failed);
			r.next_heartbeat_ms = now + HEARTBEAT_MS;
		}
		if (!r.taken)
		{
			st = take(&r);
			if (st == DB_FATAL)
				return EXIT_FATAL;
			r.taken = st == DB_OK;
		}

		for (b = r.batches; b && db_connected(db) && !worker_stopping(); b = next)
		{
			next = b->next;
			now = now_ms();
			if (b->state == BATCH_SUBMITTED && now >= b->next_extend_ms)
				extend(&r, b, now);
			if (now >= b->next_step_ms)
			{
				if (b->state == BATCH_TO_SUBMIT)
					submit(&r, b);
				else
					poll_batch(&r, b);
			}
		}

		now = now_ms();
		/* --once: once the open batches are over, look again at once */
		if (cfg->once && r.batches == NULL && !r.drained)
			r.next_claim_ms = now;
		if (db_connected(db) && !worker_stopping() && now >= r.next_claim_ms)
		{
			if (claim(&r, &st))
				r.drained = false;
			else
			{
				if (st == DB_FATAL)
					return EXIT_FATAL;
				/* with batches open, their failed rows may come back */
				r.drained = st == DB_OK && r.batches == NULL;
				r.next_claim_ms = now + (int64_t) (cfg->batch_interval * 1000);
			}
		}
		if (cfg->once && r.drained && r.batches == NULL)
			break;
		if (r.endpoint_down)
		{
			r.endpoint_down = false;
			/* --once is for cron: give up rather than retry forever */
			if (cfg->once)
			{
				log_msg("error", "stopping: the endpoint did not take a batch");
				return EXIT_FATAL;
			}
			r.next_claim_ms = now_ms() + (int64_t) (cfg->batch_interval * 1000);
		}

		for (b = r.batches; b; b = b->next)
		{
			if (b->next_step_ms < wake)
				wake = b->next_step_ms;
			if (b->state == BATCH_SUBMITTED && b->next_extend_ms < wake)
				wake = b->next_extend_ms;
		}
		if (r.next_claim_ms < wake)
			wake = r.next_claim_ms;
		worker_wait(wake - now_ms(), db_socket(db));
		if (db_connected(db))
		{
			int			ignored;

			db_poll_notifies(db, &ignored);
		}
	}
	log_msg("info", "stopped: %ld jobs done, %ld failed; %s", r.done, r.failed,
			r.batches ? "open batches stay in triage.batches for the next run" : "no batch open");
	while (r.batches)
		batch_drop(&r, r.batches);
	return 0;
}
