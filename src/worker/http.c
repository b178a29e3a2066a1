/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The chat-completions requests of triage-worker, on libcurl's multi
 *	  interface: building the body, starting a transfer, and sorting out
 *	  what its end means for the job and for the circuit breaker.
 *
 * The worker reads no JSON.  The body is the request the server built with
 * "model" spliced in after its opening brace; of a reply it reads the HTTP
 * status, the Retry-After header and the usage's total_tokens, and leaves
 * the rest to triage.complete().
 *
 * Every reply is masked (redact.c) as soon as it is in, before anything is
 * cut from it, logged, or handed to the server: an endpoint may echo the
 * Authorization header, whole, cut or escaped.  Of a 400, 401, 403 or 407
 * nothing of the body is kept at all, since those are the replies that
 * quote a request's headers.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "triage_worker.h"

/* A reply larger than this is no chat completion of a label */
#define MAX_REPLY (8 * 1024 * 1024)
/* The excerpt of a reply kept in an error, message included */
#define EXCERPT_MAX 200

/*
 * s as a JSON string literal, quotes included (malloc'd).  Only the model
 * name goes through here, but it comes from the command line: escape it.
 */
char *
json_string(const char *s)
{
	size_t		len = strlen(s);
	char	   *out = malloc(len * 6 + 3);
	char	   *p = out;

	if (out == NULL)
		return NULL;
	*p++ = '"';
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (c == '"' || c == '\\')
		{
			*p++ = '\\';
			*p++ = (char) c;
		}
		else if (c < 0x20)
			p += sprintf(p, "\\u%04x", c);
		else
			*p++ = (char) c;
	}
	*p++ = '"';
	*p = '\0';
	return out;
}

/*
 * The request with "model" added as its first key (malloc'd), or NULL if
 * request is not a JSON object.  request is jsonb's output, so it starts
 * with '{' unless it is some other kind of value.
 */
char *
http_build_body(const char *request, const char *model_json, size_t *len)
{
	const char *rest;
	const char *p;
	bool		empty;
	char	   *body;
	size_t		n;

	for (p = request; isspace((unsigned char) *p); p++)
		;
	if (*p != '{')
		return NULL;
	rest = p + 1;
	for (p = rest; isspace((unsigned char) *p); p++)
		;
	/* no comma before the closing brace of an empty object */
	empty = (*p == '}');

	n = strlen("{\"model\": ") + strlen(model_json) + 2 + strlen(rest) + 1;
	body = malloc(n);
	if (body == NULL)
		return NULL;
	*len = (size_t) snprintf(body, n, "{\"model\": %s%s%s", model_json,
							 empty ? "" : ", ", rest);
	return body;
}

/* libcurl's write callback: keep the reply, up to MAX_REPLY */
static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	Job		   *job = arg;
	size_t		n = size * nmemb;

	if (job->reply_len + n > MAX_REPLY)
	{
		job->reply_too_big = true;
		return 0;				/* makes the transfer fail */
	}
	if (job->reply_len + n + 1 > job->reply_cap)
	{
		size_t		cap = job->reply_cap ? job->reply_cap : 4096;
		char	   *grown;

		while (cap < job->reply_len + n + 1)
			cap *= 2;
		grown = realloc(job->reply, cap);
		if (grown == NULL)
			return 0;
		job->reply = grown;
		job->reply_cap = cap;
	}
	memcpy(job->reply + job->reply_len, data, n);
	job->reply_len += n;
	job->reply[job->reply_len] = '\0';
	return n;
}

/* libcurl's header callback: keep Retry-After, of the last response only */
static size_t
on_header(char *data, size_t size, size_t nitems, void *arg)
{
	Job		   *job = arg;
	size_t		n = size * nitems;
	static const char name[] = "retry-after:";

	/* a status line starts another response (after a 100 Continue) */
	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
		job->retry_after_hdr[0] = '\0';
	else if (n > sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0)
	{
		const char *v = data + sizeof(name) - 1;
		size_t		vlen = n - (sizeof(name) - 1);

		while (vlen > 0 && isspace((unsigned char) *v))
		{
			v++;
			vlen--;
		}
		while (vlen > 0 && isspace((unsigned char) v[vlen - 1]))
			vlen--;
		if (vlen >= sizeof(job->retry_after_hdr))
			vlen = sizeof(job->retry_after_hdr) - 1;
		memcpy(job->retry_after_hdr, v, vlen);
		job->retry_after_hdr[vlen] = '\0';
	}
	return n;
}

/*
 * Starts job's request on multi, limited to job->timeout_ms.  api_key may be
 * NULL (no Authorization header).  Returns false if libcurl could not set
 * it up.
 */
bool
http_start(CURLM *multi, Job *job, const WorkerConfig *cfg, const char *api_key)
{
	CURL	   *easy = curl_easy_init();
	struct curl_slist *h = NULL;
	struct curl_slist *next;

	if (easy == NULL)
		return false;
	job->easy = easy;

	h = curl_slist_append(h, "Content-Type: application/json");
	if (h && (next = curl_slist_append(h, "Accept: application/json")))
		h = next;
	/* without this, libcurl waits a second for "100 Continue" on big bodies */
	if (h && (next = curl_slist_append(h, "Expect:")))
		h = next;
	if (h && api_key)
	{
		size_t		len = strlen("Authorization: Bearer ") + strlen(api_key) + 1;
		char	   *auth = malloc(len);

		if (auth == NULL)
			next = NULL;
		else
		{
			snprintf(auth, len, "Authorization: Bearer %s", api_key);
			next = curl_slist_append(h, auth);
			memset(auth, 0, len);
			free(auth);
		}
		if (next == NULL)
		{
			curl_slist_free_all(h);
			h = NULL;
		}
		else
			h = next;
	}
	if (h == NULL)
	{
		curl_easy_cleanup(easy);
		job->easy = NULL;
		return false;
	}
	job->headers = h;

	job->curl_error[0] = '\0';
	job->retry_after_hdr[0] = '\0';
	curl_easy_setopt(easy, CURLOPT_URL, cfg->url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(easy, CURLOPT_POST, 1L);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, job->request);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) job->request_len);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "triage-worker/" WORKER_VERSION);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, job->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
					 job->timeout_ms < 10000 ? job->timeout_ms : 10000L);
	/* signals are ours (SIGTERM, SIGHUP); and resolve without alarm() */
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, job);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, job);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, job->curl_error);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, job);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);

	if (curl_multi_add_handle(multi, easy) != CURLM_OK)
	{
		curl_easy_cleanup(easy);
		curl_slist_free_all(h);
		job->easy = NULL;
		job->headers = NULL;
		return false;
	}
	job->started_ms = now_ms();
	return true;
}

static void
http_cleanup(CURLM *multi, Job *job)
{
	if (job->easy)
	{
		curl_multi_remove_handle(multi, job->easy);
		curl_easy_cleanup(job->easy);
		job->easy = NULL;
	}
	if (job->headers)
	{
		curl_slist_free_all(job->headers);
		job->headers = NULL;
	}
}

/* Stops a transfer in flight; the job is given back (never really tried) */
void
http_abort(CURLM *multi, Job *job)
{
	http_cleanup(multi, job);
	job->action = JOB_RELEASE;
	job->elapsed_ms = (long) (now_ms() - job->started_ms);
	job->retry_after = -1;
	snprintf(job->error, sizeof(job->error), "request stopped at shutdown");
}

/*
 * Seconds to wait from a Retry-After value: delta-seconds or an HTTP date
 * (RFC 9110).  -1 when absent or unreadable.
 */
double
parse_retry_after(const char *value, time_t now)
{
	char	   *end;
	double		secs;
	time_t		when;

	if (value == NULL || value[0] == '\0')
		return -1;
	if (isdigit((unsigned char) value[0]))
	{
		secs = strtod(value, &end);
		if (*end == '\0' && secs >= 0)
			return secs;
		return -1;
	}
	when = curl_getdate(value, NULL);
	if (when == -1)
		return -1;
	return when > now ? (double) (when - now) : 0;
}

/*
 * The reply's usage.KEY (key: "\"total_tokens\"", quotes included), or -1.
 * The last such key in the reply's text: the model's answer is a JSON
 * string inside it, where a quote is escaped, so it cannot forge one.
 */
long
usage_count(const char *reply, size_t len, const char *key)
{
	size_t		keylen = strlen(key);
	const char *p = reply;
	const char *found = NULL;
	const char *end = reply + len;

	if (reply == NULL)
		return -1;
	while ((p = memmem(p, end - p, key, keylen)) != NULL)
	{
		found = p;
		p += keylen;
	}
	if (found == NULL)
		return -1;
	p = found + keylen;
	while (p < end && isspace((unsigned char) *p))
		p++;
	if (p >= end || *p != ':')
		return -1;
	p++;
	while (p < end && isspace((unsigned char) *p))
		p++;
	if (p >= end || !isdigit((unsigned char) *p))
		return -1;
	return strtol(p, NULL, 10);
}

/* The reply's usage.total_tokens, or -1 */
long
usage_tokens(const char *reply, size_t len)
{
	return usage_count(reply, len, "\"total_tokens\"");
}

/* The job's error: what, then an excerpt of the (masked) reply */
static void
error_with_excerpt(Job *job, const char *what)
{
	char		prefix[128];

	if (job->reply_len == 0)
	{
		snprintf(job->error, sizeof(job->error), "%s", what);
		return;
	}
	snprintf(prefix, sizeof(prefix), "%s: ", what);
	redacted_excerpt(job->error, sizeof(job->error), EXCERPT_MAX, prefix, job->reply,
					 job->reply_len);
}

/*
 * Sorts out a finished transfer: sets job's action, status, error and
 * Retry-After (cut to cfg->max_retry_after), masks the reply, frees the
 * transfer and returns what it says about the endpoint.
 */
static Verdict
finish(CURLM *multi, Job *job, CURLcode result, const WorkerConfig *cfg)
{
	long		status = 0;
	long		sent = 0;
	Verdict		verdict;

	curl_easy_getinfo(job->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(job->easy, CURLINFO_REQUEST_SIZE, &sent);
	job->http_status = status;
	job->elapsed_ms = (long) (now_ms() - job->started_ms);
	job->retry_after = parse_retry_after(job->retry_after_hdr, time(NULL));
	/* the server clamps too, but an absurd value should not even be sent */
	if (job->retry_after > cfg->max_retry_after)
		job->retry_after = cfg->max_retry_after;
	job->error[0] = '\0';
	job->prompt_tokens = -1;
	job->completion_tokens = -1;
	http_cleanup(multi, job);
	if (job->reply != NULL)
		redact_text(job->reply, job->reply_len);

	if (result != CURLE_OK)
	{
		const char *detail = job->curl_error[0] ? job->curl_error : curl_easy_strerror(result);

		job->http_status = 0;
		if (job->reply_too_big)
		{
			job->action = JOB_FAIL;
			snprintf(job->error, sizeof(job->error), "reply larger than %d bytes", MAX_REPLY);
			return VERDICT_TROUBLE;
		}
		if (sent == 0 || result == CURLE_COULDNT_CONNECT ||
			result == CURLE_COULDNT_RESOLVE_HOST || result == CURLE_COULDNT_RESOLVE_PROXY ||
			result == CURLE_SSL_CONNECT_ERROR || result == CURLE_PEER_FAILED_VERIFICATION ||
			result == CURLE_UNSUPPORTED_PROTOCOL || result == CURLE_URL_MALFORMAT)
		{
			/* the request never reached the endpoint: the job is not to blame */
			job->action = JOB_RELEASE;
			snprintf(job->error, sizeof(job->error), "endpoint unreachable: %s", detail);
			return VERDICT_DOWN;
		}
		job->action = JOB_FAIL;
		if (result == CURLE_OPERATION_TIMEDOUT && job->timeout_cut)
			snprintf(job->error, sizeof(job->error),
					 "no answer before the lease's end (after %g s)",
					 (double) job->timeout_ms / 1000.0);
		else if (result == CURLE_OPERATION_TIMEDOUT)
			snprintf(job->error, sizeof(job->error), "timeout after %g s", cfg->timeout);
		else
			snprintf(job->error, sizeof(job->error), "broken reply: %s", detail);
		return VERDICT_TROUBLE;
	}

	if (status >= 200 && status < 300)
	{
		job->action = JOB_COMPLETE;
		job->tokens = usage_tokens(job->reply, job->reply_len);
		job->prompt_tokens = usage_count(job->reply, job->reply_len, "\"prompt_tokens\"");
		job->completion_tokens = usage_count(job->reply, job->reply_len, "\"completion_tokens\"");
		verdict = VERDICT_OK;
	}
	else if (status == 429)
	{
		job->action = JOB_FAIL;
		error_with_excerpt(job, "rate limited (429)");
		verdict = VERDICT_RATE_LIMITED;
	}
	else if (status == 401 || status == 403 || status == 407)
	{
		/*
		 * A refused key: every job would get the same, so none of them is
		 * charged an attempt.  The body may quote the key: not a word of it.
		 */
		job->action = JOB_RELEASE;
		snprintf(job->error, sizeof(job->error), "endpoint refused the request (%ld)", status);
		verdict = VERDICT_DOWN;
	}
	else if (status == 404)
	{
		/* a wrong URL or model name: the same for every job, as above */
		job->action = JOB_RELEASE;
		error_with_excerpt(job, "endpoint refused the request (404)");
		verdict = VERDICT_DOWN;
	}
	else if (status == 400)
	{
		/* about this request; the body may quote its headers */
		job->action = JOB_FAIL;
		snprintf(job->error, sizeof(job->error), "request rejected (400)");
		verdict = VERDICT_OK;
	}
	else if (status >= 500)
	{
		char		what[64];

		snprintf(what, sizeof(what), "server error (%ld)", status);
		job->action = JOB_FAIL;
		error_with_excerpt(job, what);
		verdict = VERDICT_TROUBLE;
	}
	else
	{
		/* 413, 422, ...: about this request */
		char		what[64];

		snprintf(what, sizeof(what), "request rejected (%ld)", status);
		job->action = JOB_FAIL;
		error_with_excerpt(job, what);
		verdict = VERDICT_OK;
	}
	return verdict;
}

/* finish(), and libcurl's own messages masked as well (they may quote a URL) */
Verdict
http_finish(CURLM *multi, Job *job, CURLcode result, const WorkerConfig *cfg)
{
	Verdict		verdict = finish(multi, job, result, cfg);

	redact(job->error);
	return verdict;
}
