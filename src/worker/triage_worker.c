/*-------------------------------------------------------------------------
 *
 * triage_worker.c
 *	  triage-worker's main loop: claim jobs, run their requests in parallel,
 *	  record how each one ended, and stop cleanly.
 *
 * One thread, one database connection and one libcurl multi handle.  A job
 * moves from "queued" (claimed, not started) to "in flight" (its request
 * running) to "finished" (over, waiting to be recorded).  Finished jobs are
 * recorded as soon as the database is there; while it is away they wait, so
 * a database restart loses no answer.  The loop sleeps in curl_multi_poll()
 * on the transfers, the database socket (for NOTIFY) and a self-pipe that
 * the signal handlers write to.
 *
 * Leases: a job is leased for --visibility seconds by claim().  A job that
 * never got a real try (the breaker opened, the worker stops) is given back
 * with release(), which does not count an attempt.  If the worker dies, the
 * lease runs out and another worker takes the job.  The server takes
 * complete(), fail() and release() only from the lease's holder while the
 * lease lasts (else it answers "stale"), so a request is cut short to end
 * before its lease: an answer that came later would be thrown away.
 *
 * A NOTIFY on triage_escalations is a hint, from anyone: it brings the next
 * claim forward (no closer than NOTIFY_GAP_MS to the last one, and never
 * into the backoff after failed claims), nothing more.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "triage_worker.h"

/* --once stops after the breaker opened this many times in a row */
#define ONCE_MAX_BREAKER_OPENINGS 3
/* --once stops after this many failed claims in a row (about 30 s) */
#define ONCE_MAX_CLAIM_FAILURES 5
/* When nothing is claimable, look again this often even without NOTIFY */
#define IDLE_POLL_MS 2000
/* NOTIFYs bring claims no closer together than this */
#define NOTIFY_GAP_MS 200
/* After a failed claim: 1 s, doubling up to 60 s, with jitter */
#define CLAIM_BACKOFF_FIRST 1.0
#define CLAIM_BACKOFF_MAX 60.0
#define HEARTBEAT_MS 10000
/* Longest pause after a 429, whatever its Retry-After says */
#define MAX_PAUSE_MS 60000
/* A request ends this long (or a tenth of the lease) before its lease */
#define LEASE_MARGIN_MS 2000

typedef struct Worker
{
	WorkerConfig cfg;
	char	   *api_key;
	CURLM	   *multi;
	Db			db;
	JobQueue	queued;			/* claimed, not started */
	JobQueue	finished;		/* over, not yet recorded */
	Job		  **in_flight;		/* cfg.concurrency slots */
	int			running;
	Bucket		rps;
	Bucket		tpm;
	Breaker		breaker;
	int64_t		pause_until;	/* after a 429 */
	double		tokens_per_byte;	/* learnt from the replies' usage */
	double		avg_request_len;	/* bytes, of the recent requests */
	long		jobs_done;
	long		jobs_failed;
	int64_t		next_heartbeat;
	int64_t		next_claim;
	int64_t		last_claim;		/* when the last claim was made */
	int			claim_failures; /* in a row */
	double		claim_backoff;	/* seconds before the next claim after a
								 * failed one */
	bool		claim_wanted;	/* the last claim was full, or a reconnect */
	bool		drained;		/* --once: nothing was left to claim */
	bool		was_idle;		/* nothing claimed, in flight or to record */
	bool		stopping;
	bool		hurry;			/* a second signal: give back everything now */
	int64_t		stop_deadline;
	int			exit_code;
	int			breaker_openings;	/* in a row, without the endpoint answering */
} Worker;

static volatile sig_atomic_t stop_signals = 0;
static volatile sig_atomic_t reload_requested = 0;
static int	wake_pipe[2] = {-1, -1};

static void
on_signal(int sig)
{
	int			save_errno = errno;

	if (sig == SIGHUP)
		reload_requested = 1;
	else if (stop_signals < 2)
		stop_signals = stop_signals + 1;
	/* wakes curl_multi_poll(); a full pipe already will */
	if (wake_pipe[1] >= 0)
	{
		ssize_t		rc = write(wake_pipe[1], "x", 1);

		(void) rc;
	}
	errno = save_errno;
}

int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Uniform in [0, 1) */
double
jitter(void)
{
	return drand48();
}

void
queue_push(JobQueue *q, Job *job)
{
	job->next = NULL;
	if (q->tail)
		q->tail->next = job;
	else
		q->head = job;
	q->tail = job;
	q->count++;
}

Job *
queue_pop(JobQueue *q)
{
	Job		   *job = q->head;

	if (job)
	{
		q->head = job->next;
		if (q->head == NULL)
			q->tail = NULL;
		q->count--;
		job->next = NULL;
	}
	return job;
}

void
job_free(Job *job)
{
	free(job->request);
	free(job->reply);
	free(job);
}

static int64_t
min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* Gives back every claimed job that has not started: why says why */
static void
release_queued(Worker *w, const char *why)
{
	Job		   *job;

	while ((job = queue_pop(&w->queued)) != NULL)
	{
		job->action = JOB_RELEASE;
		snprintf(job->error, sizeof(job->error), "%s", why);
		queue_push(&w->finished, job);
	}
}

static void
begin_stop(Worker *w, int64_t now, const char *why)
{
	if (w->stopping)
		return;
	w->stopping = true;
	w->stop_deadline = now + (int64_t) (w->cfg.timeout * 1000);
	release_queued(w, "worker stopping");
	log_msg("info", "stopping (%s): %d requests in flight, waiting up to %g s for them",
			why, w->running, w->cfg.timeout);
}

/* Stops every request in flight; their jobs are given back */
static void
abort_running(Worker *w)
{
	for (int i = 0; i < w->cfg.concurrency; i++)
	{
		Job		   *job = w->in_flight[i];

		if (job == NULL)
			continue;
		http_abort(w->multi, job);
		if (job->probe)
			w->breaker.probe_in_flight = false;
		w->in_flight[i] = NULL;
		w->running--;
		queue_push(&w->finished, job);
	}
}

/*
 * The secrets to mask besides the API key: the database password and the
 * endpoint URL's credentials and query values.
 */
static void
add_config_secrets(const WorkerConfig *cfg)
{
	dsn_add_secrets(cfg->dsn);
	url_add_secrets(cfg->base_url);
}

/* SIGHUP: reopen the log, re-read the key file */
static void
reload(Worker *w)
{
	char		err[512];
	char	   *key;

	log_reopen();
	if (w->cfg.api_key_file == NULL)
		return;
	if (!load_api_key(&w->cfg, &key, err, sizeof(err)))
	{
		log_msg("error", "keeping the old API key: %s", err);
		return;
	}
	/* the old key stays masked too: replies to it may still come */
	if (!redact_add_secret(key))
	{
		redact_forget_all();
		add_config_secrets(&w->cfg);
		if (!redact_add_secret(key))
		{
			log_msg("error", "keeping the old API key: no memory to mask the new one");
			memset(key, 0, strlen(key));
			free(key);
			return;
		}
	}
	if (w->api_key)
	{
		memset(w->api_key, 0, strlen(w->api_key));
		free(w->api_key);
	}
	w->api_key = key;
	log_msg("info", "API key re-read from \"%s\"", w->cfg.api_key_file);
}

/* The batch mode's view of the signals (batch.c runs its own loop) */
static Worker *batch_worker;

bool
worker_stopping(void)
{
	return stop_signals > 0;
}

/*
 * Sleeps up to ms, or until a signal (or fd, if not -1, is readable);
 * serves a SIGHUP on the way out.
 */
void
worker_wait(int64_t ms, int fd)
{
	struct pollfd p[2];
	nfds_t		n = 0;
	char		drain[64];

	if (ms < 0)
		ms = 0;
	if (wake_pipe[0] >= 0)
	{
		p[n].fd = wake_pipe[0];
		p[n].events = POLLIN;
		n++;
	}
	if (fd >= 0)
	{
		p[n].fd = fd;
		p[n].events = POLLIN;
		n++;
	}
	if (stop_signals == 0)
		poll(p, n, (int) (ms > 60000 ? 60000 : ms));
	while (wake_pipe[0] >= 0 && read(wake_pipe[0], drain, sizeof(drain)) > 0)
		;
	if (reload_requested && batch_worker)
	{
		reload_requested = 0;
		reload(batch_worker);
	}
}

/* Records finished jobs while the database is there */
static void
record_finished(Worker *w)
{
	Job		   *job;

	while ((job = w->finished.head) != NULL && db_connected(&w->db))
	{
		const char *outcome;
		DbStatus	st = db_record(&w->db, job, &outcome);

		if (st == DB_LOST)
			return;				/* kept: recorded after reconnecting */
		queue_pop(&w->finished);
		metrics_job(outcome);
		if (strcmp(outcome, "done") == 0)
			w->jobs_done++;
		else if (strcmp(outcome, "invalid") == 0 || strcmp(outcome, "retry") == 0 ||
				 strcmp(outcome, "dead") == 0)
			w->jobs_failed++;
		if (st == DB_FATAL || st == DB_TRANSIENT)
			snprintf(job->error, sizeof(job->error), "not recorded: its lease will run out");
		log_job(job, outcome);
		job_free(job);
	}
}

/* Tokens a request will use, from what earlier replies reported */
static long
estimate_tokens(const Worker *w, const Job *job)
{
	long		est = (long) (job->request_len * w->tokens_per_byte);

	return est > 0 ? est : 1;
}

static void
claim_jobs(Worker *w, int64_t now, int64_t *wait)
{
	bool		idle = w->running == 0 && w->queued.count == 0 && w->finished.count == 0;
	int			n = w->cfg.concurrency - w->running - w->queued.count;
	int			claimed = 0;
	DbStatus	st;
	Job		   *job;
	JobQueue	fresh = {0};
	char		err[600];

	if (!db_connected(&w->db))
	{
		w->was_idle = false;
		return;
	}
	/* --once ends with a claim that finds nothing, made once idle */
	if ((w->cfg.once && idle && !w->was_idle) || now >= w->next_claim)
		w->claim_wanted = true;
	w->was_idle = idle;
	if (!w->claim_wanted)
	{
		*wait = min64(*wait, w->next_claim - now);
		return;
	}
	if (n > w->cfg.batch)
		n = w->cfg.batch;
	if (n <= 0)
		return;
	if (!breaker_may_claim(&w->breaker, now, &n))
	{
		if (w->breaker.state == BREAKER_OPEN)
			*wait = min64(*wait, w->breaker.retry_at_ms - now);
		return;
	}
	if (w->breaker.state != BREAKER_CLOSED && w->queued.count > 0)
		return;
	/* with --rps or --tpm, lease no more than can start soon */
	if (w->rps.enabled)
	{
		bucket_wait(&w->rps, 1, now);
		if (w->rps.tokens < n)
			n = w->rps.tokens >= 1 ? (int) w->rps.tokens : 1;
	}
	if (w->tpm.enabled)
	{
		double		per_job = w->avg_request_len * w->tokens_per_byte;

		bucket_wait(&w->tpm, 1, now);
		if (per_job < 1)
			n = 1;				/* the first request tells the size */
		else if (w->tpm.tokens < n * per_job)
			n = w->tpm.tokens >= per_job ? (int) (w->tpm.tokens / per_job) : 1;
	}

	w->last_claim = now;
	st = db_claim(&w->db, n, now, &fresh, &claimed, err, sizeof(err));
	if (st == DB_FATAL)
	{
		w->exit_code = EXIT_FATAL;
		begin_stop(w, now, "fatal database error");
		return;
	}
	if (st == DB_TRANSIENT)
	{
		/*
		 * One bad row, a lock, a full disk: whatever it is, the queue must
		 * go on when it clears, so back off and try again, never exit.
		 */
		double		delay = w->claim_backoff * (0.75 + 0.5 * jitter());

		w->claim_failures++;
		w->claim_wanted = false;
		w->next_claim = now + (int64_t) (delay * 1000);
		w->claim_backoff = w->claim_backoff * 2 < CLAIM_BACKOFF_MAX ?
			w->claim_backoff * 2 : CLAIM_BACKOFF_MAX;
		log_msg("warning", "triage.claim() failed (%d in a row, next try in %.1f s): %s",
				w->claim_failures, delay, err);
		if (w->cfg.once && w->claim_failures >= ONCE_MAX_CLAIM_FAILURES)
		{
			w->exit_code = EXIT_FATAL;
			begin_stop(w, now, "triage.claim() keeps failing");
		}
		return;
	}
	if (st != DB_OK)
	{
		w->claim_wanted = false;
		w->next_claim = now + 1000;
		return;
	}
	if (w->claim_failures > 0)
		log_msg("info", "triage.claim() works again after %d failures", w->claim_failures);
	w->claim_failures = 0;
	w->claim_backoff = CLAIM_BACKOFF_FIRST;
	if (claimed < n)
	{
		w->claim_wanted = false;
		w->next_claim = now + IDLE_POLL_MS;
	}
	if (claimed == 0 && idle)
		w->drained = true;
	while ((job = queue_pop(&fresh)) != NULL)
	{
		if (job->request == NULL)
		{
			queue_push(&w->finished, job);
			continue;
		}
		job->est_tokens = estimate_tokens(w, job);
		w->avg_request_len = w->avg_request_len > 0 ?
			0.8 * w->avg_request_len + 0.2 * (double) job->request_len : (double) job->request_len;
		queue_push(&w->queued, job);
	}
}

/* Starts queued requests within the concurrency, rate limits and breaker */
static void
start_jobs(Worker *w, int64_t now, int64_t *wait)
{
	while (w->queued.head && w->running < w->cfg.concurrency)
	{
		Job		   *job = w->queued.head;
		int64_t		d;
		bool		probe;
		int			slot;

		/*
		 * A job that waited most of its lease for the rate limits is given
		 * back: started now, it could outlive the lease and be answered by
		 * another worker too.
		 */
		if (now - job->claimed_ms > (int64_t) (w->cfg.visibility * 800))
		{
			queue_pop(&w->queued);
			job->action = JOB_RELEASE;
			snprintf(job->error, sizeof(job->error),
					 "lease nearly over before the rate limits let it start");
			queue_push(&w->finished, job);
			continue;
		}
		if (now < w->pause_until)
		{
			*wait = min64(*wait, w->pause_until - now);
			return;
		}
		if ((d = bucket_wait(&w->rps, 1, now)) > 0 ||
			(d = bucket_wait(&w->tpm, (double) job->est_tokens, now)) > 0)
		{
			*wait = min64(*wait, d);
			return;
		}
		if (!breaker_may_start(&w->breaker, now, &probe))
		{
			if (w->breaker.state == BREAKER_OPEN)
				*wait = min64(*wait, w->breaker.retry_at_ms - now);
			return;
		}
		queue_pop(&w->queued);
		job->probe = probe;

		/*
		 * End the request before the lease does, with time left to record
		 * it: after that the server would answer "stale" and the answer
		 * would be lost anyway.
		 */
		{
			int64_t		margin = (int64_t) (w->cfg.visibility * 100);
			int64_t		left;

			if (margin > LEASE_MARGIN_MS)
				margin = LEASE_MARGIN_MS;
			left = job->lease_end_ms - margin - now;
			job->timeout_ms = (long) (w->cfg.timeout * 1000);
			job->timeout_cut = left < job->timeout_ms;
			if (job->timeout_cut)
				job->timeout_ms = left > 100 ? (long) left : 100;
		}
		if (!http_start(w->multi, job, &w->cfg, w->api_key))
		{
			if (probe)
				w->breaker.probe_in_flight = false;
			log_msg("error", "could not start a request (out of memory?)");
			job->action = JOB_RELEASE;
			snprintf(job->error, sizeof(job->error), "could not start the request");
			queue_push(&w->finished, job);
			continue;
		}
		bucket_take(&w->rps, 1);
		bucket_take(&w->tpm, (double) job->est_tokens);
		for (slot = 0; w->in_flight[slot] != NULL; slot++)
			;
		w->in_flight[slot] = job;
		w->running++;
	}
}

/* Sorts out the requests that ended */
static void
collect(Worker *w)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(w->multi, &left)) != NULL)
	{
		CURLcode	result = msg->data.result;
		CURL	   *easy = msg->easy_handle;
		char	   *priv = NULL;
		Job		   *job;
		Verdict		v;
		int64_t		now = now_ms();

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
		job = (Job *) priv;
		for (int i = 0; i < w->cfg.concurrency; i++)
			if (w->in_flight[i] == job)
				w->in_flight[i] = NULL;
		w->running--;

		v = http_finish(w->multi, job, result, &w->cfg);
		metrics_request(job->http_status, job->elapsed_ms, job->prompt_tokens,
						job->completion_tokens);

		/* the estimate was charged at the start: settle with the real count */
		if (job->tokens > 0)
		{
			bucket_give(&w->tpm, (double) (job->est_tokens - job->tokens));
			w->tokens_per_byte = 0.8 * w->tokens_per_byte +
				0.2 * ((double) job->tokens / (double) job->request_len);
		}
		else if (job->action != JOB_COMPLETE)
			bucket_give(&w->tpm, (double) job->est_tokens);

		/* a 429 is about everyone's requests, not this one's */
		if (v == VERDICT_RATE_LIMITED)
		{
			int64_t		pause = job->retry_after >= 0 ? (int64_t) (job->retry_after * 1000) : 1000;

			w->pause_until = now + min64(pause, MAX_PAUSE_MS) > w->pause_until ?
				now + min64(pause, MAX_PAUSE_MS) : w->pause_until;
		}

		if (breaker_record(&w->breaker, v, job->probe, now))
		{
			log_msg("warning", "circuit breaker open, next probe in %.1f s: %s",
					(double) (w->breaker.retry_at_ms - now) / 1000.0, job->error);
			release_queued(w, "circuit breaker open");
			metrics_breaker_opened();
			/* the probe goes as soon as the breaker allows */
			w->claim_wanted = true;
			w->breaker_openings++;
			if (w->cfg.once && (job->http_status == 401 || job->http_status == 403))
			{
				w->exit_code = EXIT_FATAL;
				begin_stop(w, now, "the endpoint refuses the API key");
			}
			/* --once is for cron: give up (jobs unharmed) rather than wait forever */
			else if (w->cfg.once && w->breaker_openings >= ONCE_MAX_BREAKER_OPENINGS)
			{
				w->exit_code = EXIT_FATAL;
				begin_stop(w, now, "the endpoint is down (its probes failed)");
			}
		}
		else if (job->probe && w->breaker.state == BREAKER_CLOSED)
		{
			w->breaker_openings = 0;
			log_msg("info", "circuit breaker closed: the endpoint answers again");
		}
		queue_push(&w->finished, job);
	}
}

static void
setup_signals(void)
{
	struct sigaction sa;

	if (pipe(wake_pipe) == 0)
	{
		for (int i = 0; i < 2; i++)
		{
			fcntl(wake_pipe[i], F_SETFL, fcntl(wake_pipe[i], F_GETFL) | O_NONBLOCK);
			fcntl(wake_pipe[i], F_SETFD, FD_CLOEXEC);
		}
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* libpq's blocking calls resume after our handlers */
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

int
main(int argc, char **argv)
{
	static Worker w;
	char		err[512];
	char		url[1024];
	char		dsn[1024];
	char		host[256];

	config_parse(&w.cfg, argc, argv);
	if (!log_open(w.cfg.log_file))
		return EXIT_FATAL;
	if (!load_api_key(&w.cfg, &w.api_key, err, sizeof(err)))
	{
		log_msg("error", "%s", err);
		return EXIT_FATAL;
	}
	if (!redact_add_secret(w.api_key))
	{
		log_msg("error", "out of memory");
		return EXIT_FATAL;
	}
	add_config_secrets(&w.cfg);
	srand48((long) time(NULL) ^ ((long) getpid() << 16));
	setup_signals();

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
		(w.multi = curl_multi_init()) == NULL ||
		(w.in_flight = calloc(w.cfg.concurrency, sizeof(Job *))) == NULL ||
		w.cfg.model_json == NULL)
	{
		log_msg("error", "could not initialize libcurl");
		return EXIT_FATAL;
	}

	db_init(&w.db, &w.cfg);
	bucket_init(&w.rps, w.cfg.rps > 1 ? w.cfg.rps : 1, w.cfg.rps, now_ms());
	bucket_init(&w.tpm, (double) w.cfg.tpm, (double) w.cfg.tpm / 60.0, now_ms());
	breaker_init(&w.breaker);
	w.tokens_per_byte = 0.25;
	w.claim_wanted = true;
	w.claim_backoff = CLAIM_BACKOFF_FIRST;

	url_printable(w.cfg.base_url, url, sizeof(url));
	dsn_printable(w.cfg.dsn, dsn, sizeof(dsn));
	log_msg("info", "triage-worker %s starting: name=%s endpoint=%s model=%s concurrency=%d"
			" rps=%g tpm=%ld timeout=%g visibility=%g max_retry_after=%g policy=%s api_key=%s"
			" database=%s response_format=%s mode=%s%s",
			WORKER_VERSION, w.cfg.name, url, w.cfg.model, w.cfg.concurrency, w.cfg.rps,
			w.cfg.tpm, w.cfg.timeout, w.cfg.visibility, w.cfg.max_retry_after,
			w.cfg.policy ? w.cfg.policy : "(all)", w.api_key ? "set" : "none", dsn,
			w.cfg.response_format, w.cfg.batch_mode ? "batch" : "interactive",
			w.cfg.once ? " once" : "");
	/* the printable URL differs when the URL holds credentials or a query */
	if ((w.api_key != NULL || strcmp(url, w.cfg.base_url) != 0) &&
		url_plain_http_remote(w.cfg.base_url, host, sizeof(host)))
		log_msg("warning", "%s goes to %s over plain http://, in clear text to anyone on the"
				" way: use https://, or an endpoint on this machine (localhost, 127.0.0.0/8, ::1)",
				w.api_key ? "the API key" : "what the URL holds (user, password, query)", host);
	if (w.cfg.visibility <= w.cfg.timeout)
		log_msg("warning", "--visibility %g is not above --timeout %g: slow requests will be"
				" cut short to end before their lease", w.cfg.visibility, w.cfg.timeout);
	if (w.cfg.max_attempts > 0)
		log_msg("info", "--max-attempts %d is only logged: each policy's max_attempts decides",
				w.cfg.max_attempts);
	if (w.cfg.metrics_listen)
	{
		int			port;
		int			asked;

		if (!metrics_start(&w.cfg, &port, err, sizeof(err)))
		{
			log_msg("error", "%s", err);
			return EXIT_FATAL;
		}
		/* parsed once already by config_parse(): cannot fail */
		metrics_parse_listen(w.cfg.metrics_listen, host, sizeof(host), &asked, err, sizeof(err));
		log_msg("info", "metrics at http://%s%s%s:%d/metrics", strchr(host, ':') ? "[" : "",
				host, strchr(host, ':') ? "]" : "", port);
		if (!host_is_loopback(host))
			log_msg("warning", "--metrics-listen %s is not a loopback address: whoever can reach"
					" it reads this worker's name and counters", host);
	}

	if (w.cfg.batch_mode)
	{
		batch_worker = &w;
		w.exit_code = batch_run(&w.cfg, &w.api_key, &w.db);
		metrics_stop();
		db_close(&w.db);
		curl_multi_cleanup(w.multi);
		curl_global_cleanup();
		if (w.api_key)
			memset(w.api_key, 0, strlen(w.api_key));
		return w.exit_code;
	}

	for (;;)
	{
		int64_t		now = now_ms();
		int64_t		wait = 1000;
		struct curl_waitfd fds[2];
		unsigned int nfds = 0;
		int			still;
		char		drain[64];

		if (reload_requested)
		{
			reload_requested = 0;
			reload(&w);
		}
		if (stop_signals > 0)
			begin_stop(&w, now, "signal");
		if (stop_signals > 1 && !w.hurry)
		{
			w.hurry = true;
			log_msg("info", "second signal: giving back %d requests in flight", w.running);
			abort_running(&w);
		}

		/* the database: connect, read NOTIFYs, record, heartbeat */
		if (!db_connected(&w.db) && now >= w.db.next_try_ms)
		{
			DbStatus	st = db_connect(&w.db, now);

			if (st == DB_FATAL || (st == DB_LOST && w.cfg.once && !w.db.ever_connected))
			{
				w.exit_code = EXIT_FATAL;
				begin_stop(&w, now, "no usable database");
				abort_running(&w);
				break;
			}
			if (st == DB_OK)
			{
				w.claim_wanted = true;
				w.next_heartbeat = now;
			}
		}
		if (db_connected(&w.db))
		{
			int			notified = 0;

			/* a hint to claim soon, from anyone: not into a backoff */
			if (db_poll_notifies(&w.db, &notified) == DB_OK && notified > 0 &&
				w.claim_failures == 0)
			{
				int64_t		at = w.last_claim + NOTIFY_GAP_MS;

				if (at < now)
					at = now;
				if (at < w.next_claim)
					w.next_claim = at;
			}
		}
		record_finished(&w);
		if (db_connected(&w.db) && now >= w.next_heartbeat)
		{
			db_heartbeat(&w.db, w.jobs_done, w.jobs_failed);
			w.next_heartbeat = now + HEARTBEAT_MS;
		}

		if (w.stopping)
		{
			if (w.running == 0 && w.finished.count == 0)
				break;
			if (w.running > 0 && now >= w.stop_deadline)
			{
				log_msg("info", "giving back %d requests still in flight", w.running);
				abort_running(&w);
				continue;
			}
			if (w.running == 0 && !db_connected(&w.db) && now >= w.stop_deadline)
			{
				log_msg("warning", "database away: %d jobs not recorded, their leases will run out",
						w.finished.count);
				break;
			}
			wait = min64(wait, w.stop_deadline - now);
		}
		else
		{
			claim_jobs(&w, now, &wait);
			start_jobs(&w, now, &wait);
			if (w.cfg.once && w.drained && w.running == 0 && w.queued.count == 0 &&
				w.finished.count == 0)
				break;
			/* a job that never started is to be recorded at once */
			if (w.finished.count > 0 && db_connected(&w.db))
				wait = 0;
		}
		if (!db_connected(&w.db))
			wait = min64(wait, w.db.next_try_ms - now);
		if (wait < 0)
			wait = 0;

		if (wake_pipe[0] >= 0)
		{
			fds[nfds].fd = wake_pipe[0];
			fds[nfds].events = CURL_WAIT_POLLIN;
			fds[nfds].revents = 0;
			nfds++;
		}
		if (db_socket(&w.db) >= 0)
		{
			fds[nfds].fd = db_socket(&w.db);
			fds[nfds].events = CURL_WAIT_POLLIN;
			fds[nfds].revents = 0;
			nfds++;
		}
		metrics_gauges(w.running, w.queued.count, &w.breaker, w.pause_until);
		curl_multi_poll(w.multi, fds, nfds, (int) wait, NULL);
		while (wake_pipe[0] >= 0 && read(wake_pipe[0], drain, sizeof(drain)) > 0)
			;
		curl_multi_perform(w.multi, &still);
		collect(&w);
	}

	log_msg("info", "stopped: %ld jobs done, %ld failed", w.jobs_done, w.jobs_failed);
	metrics_stop();
	db_close(&w.db);
	curl_multi_cleanup(w.multi);
	curl_global_cleanup();
	if (w.api_key)
		memset(w.api_key, 0, strlen(w.api_key));
	return w.exit_code;
}
