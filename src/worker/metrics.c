/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  --metrics-listen: the worker's own counters, served at GET /metrics in
 *	  the Prometheus text exposition format (version 0.0.4).
 *
 * Design: a thread of its own, with a mutex over the counters.  The main
 * loop blocks in libpq (claim, complete, a reconnect) and batch mode has a
 * loop of its own, so a responder inside either would stall while the
 * worker does; the thread answers a scrape whatever the worker is doing.
 * The worker's threads touch nothing of each other but the counters below,
 * each update a few additions under the mutex.  The thread blocks the
 * worker's signals (they stay the main loop's), logs nothing (the log's
 * masking is not thread-safe: the secrets change on SIGHUP) and allocates
 * nothing but the reply's text.
 *
 * The responder is HTTP/1.0, one connection at a time, closed after each
 * reply: a request header of at most 8 KB, read within 5 s, and the reply
 * written within 5 s, else the connection is closed; so a slow or hostile
 * client holds up other scrapes for 10 s at most, and the worker not at
 * all.  GET /metrics (with any query) answers 200, another path 404,
 * another method 405.
 *
 *-------------------------------------------------------------------------
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "triage_worker.h"

#define MAX_HEADER 8192
#define READ_TIMEOUT_MS 5000
#define WRITE_TIMEOUT_MS 5000
#define MAX_STATUS 600

/* Request latency buckets, in seconds: a chat completion takes 0.3 to 30 s */
static const double buckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

/* The outcomes db_record() and batch_result() give, shown even at 0 */
static const char *const outcomes[] = {"done", "invalid", "retry", "dead", "stale",
"released", "error", "unknown"};
#define NOUTCOMES (sizeof(outcomes) / sizeof(outcomes[0]))

typedef struct Counters
{
	long		jobs[NOUTCOMES];
	long		requests_by_status[MAX_STATUS]; /* [0]: no HTTP reply */
	long		latency[NBUCKETS + 1];	/* not cumulative; the last is +Inf */
	double		latency_sum;
	long		latency_count;
	long		prompt_tokens;
	long		completion_tokens;
	int			in_flight;
	int			queued;
	int			breaker_state;	/* a BreakerState */
	int64_t		breaker_retry_at_ms;
	long		breaker_openings;
	int64_t		pause_until_ms;
} Counters;

static Counters m;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int	listen_fd = -1;
static int	stop_pipe[2] = {-1, -1};
static pthread_t thread;
static bool thread_started;
static char *info_labels;		/* the labels of triage_worker_info */
static double start_time;		/* Unix seconds */

/*
 * Splits --metrics-listen's HOST:PORT, [IPV6]:PORT or :PORT (host
 * 127.0.0.1) into host and port.  Returns false with a message in err.
 */
bool
metrics_parse_listen(const char *value, char *host, size_t hostlen, int *port,
					 char *err, size_t errlen)
{
	const char *colon;
	const char *h = value;
	size_t		hlen;
	char	   *end;
	long		p;

	if (value[0] == '[')
	{
		const char *close = strchr(value, ']');

		if (close == NULL || close[1] != ':')
		{
			snprintf(err, errlen, "\"%s\" is not [ADDRESS]:PORT", value);
			return false;
		}
		h = value + 1;
		hlen = (size_t) (close - h);
		colon = close + 1;
	}
	else
	{
		colon = strrchr(value, ':');
		if (colon == NULL || memchr(value, ':', (size_t) (colon - value)) != NULL)
		{
			snprintf(err, errlen, "\"%s\" is not HOST:PORT, [ADDRESS]:PORT or :PORT", value);
			return false;
		}
		hlen = (size_t) (colon - value);
	}
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno != 0 || p < 0 || p > 65535)
	{
		snprintf(err, errlen, "the port of \"%s\" is not a number from 0 to 65535", value);
		return false;
	}
	if (hlen == 0)
	{
		/* no host: loopback only; any other address must be asked for */
		h = "127.0.0.1";
		hlen = strlen(h);
	}
	if (hlen >= hostlen)
	{
		snprintf(err, errlen, "the host of \"%s\" is too long", value);
		return false;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (int) p;
	return true;
}

/* Appends s to a label value: backslash, double quote and line feed escaped */
static void
append_label_value(char *out, size_t len, const char *s)
{
	size_t		pos = strlen(out);

	for (; *s && pos + 3 < len; s++)
	{
		if (*s == '\\' || *s == '"')
		{
			out[pos++] = '\\';
			out[pos++] = *s;
		}
		else if (*s == '\n')
		{
			out[pos++] = '\\';
			out[pos++] = 'n';
		}
		else
			out[pos++] = *s;
	}
	out[pos] = '\0';
}

/* Accepts and answers scrapes until metrics_stop() */
static void *metrics_thread(void *arg);

/*
 * Binds --metrics-listen (cfg->metrics_listen) and starts the thread that
 * serves it.  Returns false with a message in err if the address cannot be
 * bound.  *bound_port: the port bound (when 0 was asked for, the kernel's).
 */
bool
metrics_start(const WorkerConfig *cfg, int *bound_port, char *err, size_t errlen)
{
	char		host[256];
	char		portstr[16];
	int			port;
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	struct sockaddr_storage ss;
	socklen_t	sslen = sizeof(ss);
	sigset_t	all;
	sigset_t	old;
	int			rc;
	int			one = 1;
	char		labels[1024];

	if (!metrics_parse_listen(cfg->metrics_listen, host, sizeof(host), &port, err, errlen))
		return false;
	snprintf(portstr, sizeof(portstr), "%d", port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0)
	{
		snprintf(err, errlen, "--metrics-listen %s: %s", cfg->metrics_listen, gai_strerror(rc));
		return false;
	}
	listen_fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 ||
		setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
		bind(listen_fd, res->ai_addr, res->ai_addrlen) != 0 ||
		listen(listen_fd, 16) != 0 ||
		getsockname(listen_fd, (struct sockaddr *) &ss, &sslen) != 0)
	{
		snprintf(err, errlen, "--metrics-listen %s: %s", cfg->metrics_listen, strerror(errno));
		freeaddrinfo(res);
		if (listen_fd >= 0)
			close(listen_fd);
		listen_fd = -1;
		return false;
	}
	freeaddrinfo(res);
	*bound_port = ntohs(ss.ss_family == AF_INET6 ?
						((struct sockaddr_in6 *) &ss)->sin6_port :
						((struct sockaddr_in *) &ss)->sin_port);

	snprintf(labels, sizeof(labels), "version=\"" WORKER_VERSION "\",worker=\"");
	append_label_value(labels, sizeof(labels), cfg->name);
	snprintf(labels + strlen(labels), sizeof(labels) - strlen(labels),
			 "\",mode=\"%s\",libcurl=\"", cfg->batch_mode ? "batch" : "interactive");
	append_label_value(labels, sizeof(labels), curl_version_info(CURLVERSION_NOW)->version);
	snprintf(labels + strlen(labels), sizeof(labels) - strlen(labels), "\",libpq=\"%d\"",
			 PQlibVersion());
	info_labels = strdup(labels);
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		start_time = (double) ts.tv_sec + ts.tv_nsec / 1e9;
	}

	if (info_labels == NULL || pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
	{
		snprintf(err, errlen, "--metrics-listen: out of resources");
		return false;
	}
	/* the worker's signals stay with the main loop */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&thread, NULL, metrics_thread, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
	{
		snprintf(err, errlen, "--metrics-listen: could not start a thread: %s", strerror(rc));
		return false;
	}
	thread_started = true;
	return true;
}

/* Stops the thread (after the scrape it is answering, if any) */
void
metrics_stop(void)
{
	ssize_t		rc;

	if (!thread_started)
		return;
	rc = write(stop_pipe[1], "x", 1);
	(void) rc;
	pthread_join(thread, NULL);
	thread_started = false;
	close(listen_fd);
	listen_fd = -1;
}

/* Counts a job's outcome, as db_record() or batch_result() gave it */
void
metrics_job(const char *outcome)
{
	size_t		i;

	for (i = 0; i < NOUTCOMES - 1; i++)
		if (strcmp(outcome, outcomes[i]) == 0)
			break;
	pthread_mutex_lock(&lock);
	m.jobs[i]++;
	pthread_mutex_unlock(&lock);
}

/*
 * Counts a finished request: its HTTP status (0: no reply), its duration,
 * and the tokens its reply's usage reports (< 0: none).
 */
void
metrics_request(long http_status, long elapsed_ms, long prompt, long completion)
{
	double		secs = (double) elapsed_ms / 1000.0;
	size_t		b;

	for (b = 0; b < NBUCKETS && secs > buckets[b]; b++)
		;
	pthread_mutex_lock(&lock);
	m.requests_by_status[http_status > 0 && http_status < MAX_STATUS ? http_status : 0]++;
	m.latency[b]++;
	m.latency_sum += secs;
	m.latency_count++;
	if (prompt > 0)
		m.prompt_tokens += prompt;
	if (completion > 0)
		m.completion_tokens += completion;
	pthread_mutex_unlock(&lock);
}

/* The breaker opened (again) */
void
metrics_breaker_opened(void)
{
	pthread_mutex_lock(&lock);
	m.breaker_openings++;
	pthread_mutex_unlock(&lock);
}

/*
 * The gauges, as the main loop sees them before it sleeps: requests in
 * flight, jobs claimed and not started, the breaker, and the pause after a
 * 429 (until_ms, on now_ms()'s clock).
 */
void
metrics_gauges(int in_flight, int queued, const Breaker *br, int64_t pause_until_ms)
{
	pthread_mutex_lock(&lock);
	m.in_flight = in_flight;
	m.queued = queued;
	m.breaker_state = (int) br->state;
	m.breaker_retry_at_ms = br->retry_at_ms;
	m.pause_until_ms = pause_until_ms;
	pthread_mutex_unlock(&lock);
}

/* A growing text buffer; on a failed allocation it stays failed */
typedef struct Text
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		failed;
} Text;

static void text_printf(Text *t, const char *fmt,...) __attribute__((format(printf, 2, 3)));

static void
text_printf(Text *t, const char *fmt,...)
{
	va_list		ap;
	int			n;

	if (t->failed)
		return;
	for (;;)
	{
		va_start(ap, fmt);
		n = vsnprintf(t->data + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0)
		{
			t->failed = true;
			return;
		}
		if ((size_t) n < t->cap - t->len)
		{
			t->len += (size_t) n;
			return;
		}
		{
			size_t		cap = (t->cap + (size_t) n + 1) * 2;
			char	   *grown = realloc(t->data, cap);

			if (grown == NULL)
			{
				t->failed = true;
				return;
			}
			t->data = grown;
			t->cap = cap;
		}
	}
}

static void
family(Text *t, const char *name, const char *type, const char *help)
{
	text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The exposition (malloc'd), or NULL when out of memory */
static char *
render(size_t *len)
{
	Text		t = {0};
	int64_t		now = now_ms();
	long		cumulative = 0;
	Counters	s;

	t.cap = 8192;
	t.data = malloc(t.cap);
	if (t.data == NULL)
		return NULL;
	t.data[0] = '\0';

	/* a consistent snapshot, formatted outside the lock */
	pthread_mutex_lock(&lock);
	s = m;
	pthread_mutex_unlock(&lock);

	family(&t, "triage_worker_info", "gauge",
		   "The worker: its version, name, mode and libraries (always 1).");
	text_printf(&t, "triage_worker_info{%s} 1\n", info_labels);
	family(&t, "triage_worker_start_time_seconds", "gauge",
		   "When the worker started, in Unix seconds.");
	text_printf(&t, "triage_worker_start_time_seconds %.3f\n", start_time);

	family(&t, "triage_worker_jobs_total", "counter",
		   "Jobs this worker recorded, by what the server answered: done, invalid (answer"
		   " rejected, retried), retry, dead, stale (lease lost), released (given back"
		   " untried), error (not recorded), unknown.");
	for (size_t i = 0; i < NOUTCOMES; i++)
		text_printf(&t, "triage_worker_jobs_total{outcome=\"%s\"} %ld\n", outcomes[i], s.jobs[i]);

	family(&t, "triage_worker_requests_total", "counter",
		   "Chat-completions requests that ended, by HTTP status (code=\"none\": no reply:"
		   " refused, timed out or broken).");
	text_printf(&t, "triage_worker_requests_total{code=\"none\"} %ld\n", s.requests_by_status[0]);
	for (int c = 1; c < MAX_STATUS; c++)
		if (s.requests_by_status[c] > 0)
			text_printf(&t, "triage_worker_requests_total{code=\"%d\"} %ld\n", c,
						s.requests_by_status[c]);

	family(&t, "triage_worker_request_duration_seconds", "histogram",
		   "Duration of the chat-completions requests that ended, from start to the end of the"
		   " reply.");
	for (size_t b = 0; b < NBUCKETS; b++)
	{
		cumulative += s.latency[b];
		text_printf(&t, "triage_worker_request_duration_seconds_bucket{le=\"%g\"} %ld\n",
					buckets[b], cumulative);
	}
	cumulative += s.latency[NBUCKETS];
	text_printf(&t, "triage_worker_request_duration_seconds_bucket{le=\"+Inf\"} %ld\n", cumulative);
	text_printf(&t, "triage_worker_request_duration_seconds_sum %.6f\n", s.latency_sum);
	text_printf(&t, "triage_worker_request_duration_seconds_count %ld\n", s.latency_count);

	family(&t, "triage_worker_tokens_total", "counter",
		   "Tokens of the replies, by kind, as their usage reports them (2xx replies only).");
	text_printf(&t, "triage_worker_tokens_total{kind=\"prompt\"} %ld\n", s.prompt_tokens);
	text_printf(&t, "triage_worker_tokens_total{kind=\"completion\"} %ld\n", s.completion_tokens);

	family(&t, "triage_worker_requests_in_flight", "gauge", "Requests running now.");
	text_printf(&t, "triage_worker_requests_in_flight %d\n", s.in_flight);
	family(&t, "triage_worker_jobs_queued", "gauge",
		   "Jobs claimed and waiting to start (for the rate limits, the breaker or a pause).");
	text_printf(&t, "triage_worker_jobs_queued %d\n", s.queued);

	family(&t, "triage_worker_breaker_open", "gauge",
		   "1 while the circuit breaker is open or probing (no new requests but the probe),"
		   " else 0.");
	text_printf(&t, "triage_worker_breaker_open %d\n", s.breaker_state != BREAKER_CLOSED);
	family(&t, "triage_worker_breaker_remaining_seconds", "gauge",
		   "Seconds until the open breaker sends its probe; 0 when closed or probing.");
	text_printf(&t, "triage_worker_breaker_remaining_seconds %.3f\n",
				s.breaker_state == BREAKER_OPEN && s.breaker_retry_at_ms > now ?
				(double) (s.breaker_retry_at_ms - now) / 1000.0 : 0.0);
	family(&t, "triage_worker_breaker_openings_total", "counter",
		   "Times the circuit breaker opened (a failed probe opens it again).");
	text_printf(&t, "triage_worker_breaker_openings_total %ld\n", s.breaker_openings);

	family(&t, "triage_worker_cooldown", "gauge",
		   "1 while requests pause after a 429 (for its Retry-After, 1 s without, at most"
		   " 60 s), else 0.");
	text_printf(&t, "triage_worker_cooldown %d\n", s.pause_until_ms > now);
	family(&t, "triage_worker_cooldown_remaining_seconds", "gauge",
		   "Seconds until requests start again after a 429; 0 when not paused.");
	text_printf(&t, "triage_worker_cooldown_remaining_seconds %.3f\n",
				s.pause_until_ms > now ? (double) (s.pause_until_ms - now) / 1000.0 : 0.0);

	if (t.failed)
	{
		free(t.data);
		return NULL;
	}
	*len = t.len;
	return t.data;
}

/*
 * Waits until fd is ready for events, or deadline (now_ms()) or a stop.
 * Returns 1 when ready, 0 on timeout or stop.
 */
static int
wait_fd(int fd, short events, int64_t deadline)
{
	for (;;)
	{
		struct pollfd p[2] = {{fd, events, 0}, {stop_pipe[0], POLLIN, 0}};
		int64_t		left = deadline - now_ms();
		int			rc;

		if (left <= 0)
			return 0;
		rc = poll(p, 2, (int) left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0 || (p[1].revents & POLLIN))
			return 0;
		return 1;
	}
}

/* Writes all of buf within the deadline; false if the client is too slow */
static bool
write_all(int fd, const char *buf, size_t len, int64_t deadline)
{
	while (len > 0)
	{
		ssize_t		n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n > 0)
		{
			buf += n;
			len -= (size_t) n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(fd, POLLOUT, deadline))
			continue;
		return false;
	}
	return true;
}

/*
 * Ends the connection after a reply: reads and drops what the client still
 * sends (for up to a second, 64 KB) before closing, since a close with
 * unread input resets the connection, and the client might lose the reply.
 */
static void
linger_close(int fd)
{
	char		buf[4096];
	size_t		total = 0;
	int64_t		deadline = now_ms() + 1000;

	shutdown(fd, SHUT_WR);
	while (total < 65536)
	{
		ssize_t		n = recv(fd, buf, sizeof(buf), 0);

		if (n > 0)
			total += (size_t) n;
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(fd, POLLIN, deadline))
			continue;
		else
			break;
	}
	close(fd);
}

static void
reply(int fd, const char *status, const char *extra_headers, const char *body, size_t len)
{
	char		head[512];
	int			n;
	int64_t		deadline = now_ms() + WRITE_TIMEOUT_MS;

	n = snprintf(head, sizeof(head),
				 "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
				 status, strncmp(status, "200", 3) == 0 ? "text/plain; version=0.0.4" :
				 "text/plain; charset=utf-8", len, extra_headers);
	if (write_all(fd, head, (size_t) n, deadline))
		write_all(fd, body, len, deadline);
}

/* Reads one request from fd and answers it; false if it gave up unanswered */
static bool
serve(int fd)
{
	char		buf[MAX_HEADER + 1];
	size_t		len = 0;
	int64_t		deadline = now_ms() + READ_TIMEOUT_MS;
	char	   *end;
	char	   *sp;
	char	   *path;

	for (;;)
	{
		ssize_t		n = recv(fd, buf + len, MAX_HEADER - len, 0);

		if (n > 0)
		{
			len += (size_t) n;
			buf[len] = '\0';
			if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
				break;
			if (len >= MAX_HEADER)
			{
				static const char msg[] = "request header larger than 8 KB\n";

				reply(fd, "431 Request Header Fields Too Large", "", msg, sizeof(msg) - 1);
				return true;
			}
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(fd, POLLIN, deadline))
			continue;
		return false;			/* closed, an error, too slow, or stopping */
	}

	/* the request line: METHOD SP PATH SP HTTP/x.y */
	end = strpbrk(buf, "\r\n");
	*end = '\0';
	sp = strchr(buf, ' ');
	if (sp == NULL || strncmp(end - 8 > sp ? end - 8 : sp, "HTTP/1.", 7) != 0)
	{
		static const char msg[] = "bad request\n";

		reply(fd, "400 Bad Request", "", msg, sizeof(msg) - 1);
		return true;
	}
	*sp = '\0';
	path = sp + 1;
	path[strcspn(path, " ?")] = '\0';
	if (strcmp(buf, "GET") != 0)
	{
		static const char msg[] = "only GET\n";

		reply(fd, "405 Method Not Allowed", "Allow: GET\r\n", msg, sizeof(msg) - 1);
	}
	else if (strcmp(path, "/metrics") != 0)
	{
		static const char msg[] = "not found: the metrics are at /metrics\n";

		reply(fd, "404 Not Found", "", msg, sizeof(msg) - 1);
	}
	else
	{
		size_t		blen = 0;
		char	   *body = render(&blen);

		if (body == NULL)
		{
			static const char msg[] = "out of memory\n";

			reply(fd, "503 Service Unavailable", "", msg, sizeof(msg) - 1);
			return true;
		}
		reply(fd, "200 OK", "", body, blen);
		free(body);
	}
	return true;
}

static void *
metrics_thread(void *arg)
{
	(void) arg;
	for (;;)
	{
		struct pollfd p[2] = {{listen_fd, POLLIN, 0}, {stop_pipe[0], POLLIN, 0}};
		int			fd;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents & POLLIN)
			break;
		fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
		{
			/* out of descriptors: do not spin on a connection we cannot take */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				wait_fd(-1, 0, now_ms() + 100);
			continue;
		}
		if (serve(fd))
			linger_close(fd);
		else
			close(fd);
	}
	return NULL;
}
