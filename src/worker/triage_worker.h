/*-------------------------------------------------------------------------
 *
 * triage_worker.h
 *	  Shared declarations of triage-worker, the process that takes escalated
 *	  rows from the queue (triage.claim), asks an OpenAI-compatible
 *	  chat-completions endpoint and hands the raw reply back to the server
 *	  (triage.complete), which parses and validates it.
 *
 * The worker reads no JSON: it splices "model" into the request text and
 * looks at nothing in a reply but the HTTP status, the Retry-After header
 * and the usage count of tokens.
 *
 * Files: triage_worker.c (the main loop), config.c (options, environment,
 * API key), db.c (libpq), dsn.c (the connection string), http.c (libcurl),
 * url.c (the endpoint URL), limiter.c (rate limits and the circuit
 * breaker), log.c (one logfmt line per event), redact.c (secrets kept out
 * of the log and the queue), metrics.c (--metrics-listen: GET /metrics, on
 * a thread of its own).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TRIAGE_WORKER_H
#define TRIAGE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>

#include "redact.h"

#define WORKER_VERSION "0.1.0"

/* Exit statuses: 0 done or stopped by a signal, 1 fatal error, 2 bad usage */
#define EXIT_FATAL 1
#define EXIT_USAGE 2

typedef struct WorkerConfig
{
	char	   *dsn;
	char	   *base_url;		/* without the trailing slash */
	char	   *url;			/* base_url + "/chat/completions" */
	char	   *model;
	char	   *model_json;		/* model as a JSON string literal, quotes
								 * included */
	char	   *api_key_env;
	char	   *api_key_file;
	int			concurrency;
	double		rps;			/* requests per second; 0: unlimited */
	long		tpm;			/* tokens per minute; 0: unlimited */
	double		timeout;		/* seconds per request */
	int			max_attempts;	/* logged only: the policy's setting wins */
	char	   *policy;
	char	   *name;
	int			batch;
	double		visibility;		/* seconds a claim leases a job for */
	double		max_retry_after;	/* seconds: a longer Retry-After is cut */
	char	   *log_file;
	bool		once;
	char	   *response_format;	/* json_schema, json_object or none */
	bool		batch_mode;		/* --mode batch: through the Batch API */
	bool		visibility_set;
	int			batch_file_requests;	/* requests per batch file, at most */
	long		batch_file_bytes;	/* bytes per batch file, at most */
	double		batch_poll;		/* seconds before the first poll */
	double		batch_poll_max; /* seconds between polls, at most */
	double		batch_interval; /* seconds between claims of new batches */
	char	   *metrics_listen; /* HOST:PORT of GET /metrics, or NULL */
} WorkerConfig;

/* What the database is told about a job once its request is over */
typedef enum JobAction
{
	JOB_COMPLETE,				/* 2xx: hand the reply to complete() */
	JOB_FAIL,					/* a real try that failed: fail() */
	JOB_RELEASE					/* never really tried: release() */
} JobAction;

/* How a finished request bears on the circuit breaker */
typedef enum Verdict
{
	VERDICT_OK,					/* the endpoint answered about this job */
	VERDICT_RATE_LIMITED,		/* 429 */
	VERDICT_TROUBLE,			/* 5xx, timeout, broken reply: five in a
								 * row open the breaker */
	VERDICT_DOWN				/* not the job's fault (refused, DNS, 401,
								 * 403, 404): opens it at once */
} Verdict;

typedef struct Job
{
	struct Job *next;
	int64_t		id;
	int			attempt;		/* this try's number, 0 if the server does
								 * not say */
	char	   *request;		/* the body to POST, "model" included */
	size_t		request_len;
	long		est_tokens;
	bool		probe;			/* the one request of a half-open breaker */
	int64_t		claimed_ms;		/* taken before claim() ran */
	int64_t		lease_end_ms;	/* claimed_ms + visibility: by then the
								 * server gives the job to others */
	long		timeout_ms;		/* of this request: --timeout, or less to
								 * end before the lease does */
	bool		timeout_cut;	/* timeout_ms was cut to the lease */

	/* the transfer */
	CURL	   *easy;
	struct curl_slist *headers;
	char	   *reply;
	size_t		reply_len;
	size_t		reply_cap;
	bool		reply_too_big;
	char		retry_after_hdr[64];
	char		curl_error[CURL_ERROR_SIZE];
	int64_t		started_ms;

	/* the outcome */
	JobAction	action;
	long		http_status;
	long		elapsed_ms;
	long		tokens;			/* from the reply's usage, else the estimate */
	long		prompt_tokens;	/* from the reply's usage, else -1 */
	long		completion_tokens;	/* from the reply's usage, else -1 */
	double		retry_after;	/* seconds, at most --max-retry-after; < 0
								 * when the endpoint gave none */
	char		error[512];
} Job;

typedef struct JobQueue
{
	Job		   *head;
	Job		   *tail;
	int			count;
} JobQueue;

/* triage_worker.c */
extern int64_t now_ms(void);
extern double jitter(void);
extern void queue_push(JobQueue *q, Job *job);
extern Job *queue_pop(JobQueue *q);
extern void job_free(Job *job);
extern bool worker_stopping(void);
extern void worker_wait(int64_t ms, int fd);

/* config.c */
extern void config_parse(WorkerConfig *cfg, int argc, char **argv);
extern bool load_api_key(const WorkerConfig *cfg, char **key, char *err, size_t errlen);

/* dsn.c */
extern bool dsn_check(const char *dsn, char *err, size_t errlen);
extern void dsn_printable(const char *dsn, char *out, size_t len);
extern void dsn_add_secrets(const char *dsn);

/* url.c */
extern void url_printable(const char *url, char *out, size_t len);
extern bool host_is_loopback(const char *host);
extern bool url_plain_http_remote(const char *url, char *host, size_t len);
extern void url_add_secrets(const char *url);

/* log.c */
extern bool log_open(const char *path);
extern void log_reopen(void);
extern void log_msg(const char *level, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern void log_job(const Job *job, const char *outcome);

/* http.c */
extern char *json_string(const char *s);
extern char *http_build_body(const char *request, const char *model_json, size_t *len);
extern bool http_start(CURLM *multi, Job *job, const WorkerConfig *cfg,
					   const char *api_key);
extern Verdict http_finish(CURLM *multi, Job *job, CURLcode result, const WorkerConfig *cfg);
extern void http_abort(CURLM *multi, Job *job);
extern double parse_retry_after(const char *value, time_t now);
extern long usage_tokens(const char *reply, size_t len);
extern long usage_count(const char *reply, size_t len, const char *key);

/* limiter.c */
typedef struct Bucket
{
	bool		enabled;
	double		tokens;
	double		capacity;
	double		per_ms;
	int64_t		last_ms;
} Bucket;

typedef enum BreakerState
{
	BREAKER_CLOSED,
	BREAKER_OPEN,				/* waiting until retry_at_ms */
	BREAKER_PROBING				/* one request decides */
} BreakerState;

typedef struct Breaker
{
	BreakerState state;
	int			trouble_streak;
	int64_t		retry_at_ms;
	double		backoff;		/* seconds before the next probe */
	bool		probe_in_flight;
} Breaker;

extern void bucket_init(Bucket *b, double capacity, double per_second, int64_t now);
extern int64_t bucket_wait(Bucket *b, double n, int64_t now);
extern void bucket_take(Bucket *b, double n);
extern void bucket_give(Bucket *b, double n);
extern void breaker_init(Breaker *br);
extern bool breaker_record(Breaker *br, Verdict v, bool probe, int64_t now);
extern bool breaker_may_start(Breaker *br, int64_t now, bool *probe);
extern bool breaker_may_claim(const Breaker *br, int64_t now, int *n);

/* db.c */
typedef struct Db
{
	struct pg_conn *conn;
	const WorkerConfig *cfg;
	int64_t		next_try_ms;	/* when to reconnect */
	double		backoff;
	bool		ever_connected;
	char		host[256];
	int			pid;
	char		role[128];		/* who claims: current_user, for messages */
} Db;

struct pg_result;

/* what a database call says beyond its result */
typedef enum DbStatus
{
	DB_OK,
	DB_LOST,					/* the connection is gone: try again later */
	DB_TRANSIENT,				/* an error worth retrying */
	DB_FATAL					/* the database cannot serve this worker
								 * as configured: stop */
} DbStatus;

extern void db_init(Db *db, const WorkerConfig *cfg);
extern bool db_connected(const Db *db);
extern DbStatus db_connect(Db *db, int64_t now);
extern void db_close(Db *db);
extern int	db_socket(const Db *db);
extern DbStatus db_poll_notifies(Db *db, int *count);
extern DbStatus db_claim(Db *db, int n, int64_t now, JobQueue *out, int *claimed,
						 char *err, size_t errlen);
extern DbStatus db_record(Db *db, Job *job, const char **outcome);
extern DbStatus db_heartbeat(Db *db, long jobs_done, long jobs_failed);
extern DbStatus db_query(Db *db, const char *sql, int nparams, const char *const *params,
						 struct pg_result **res, const char *what);

/* metrics.c */
extern bool metrics_parse_listen(const char *value, char *host, size_t hostlen, int *port,
								 char *err, size_t errlen);
extern bool metrics_start(const WorkerConfig *cfg, int *bound_port, char *err, size_t errlen);
extern void metrics_stop(void);
extern void metrics_job(const char *outcome);
extern void metrics_request(long http_status, long elapsed_ms, long prompt, long completion);
extern void metrics_breaker_opened(void);
extern void metrics_gauges(int in_flight, int queued, const Breaker *br, int64_t pause_until_ms);

/* batch.c */
extern int	batch_run(const WorkerConfig *cfg, char *const *api_key, Db *db);

#endif							/* TRIAGE_WORKER_H */
