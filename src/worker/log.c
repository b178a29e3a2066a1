/*-------------------------------------------------------------------------
 *
 * log.c
 *	  triage-worker's log: one logfmt line per event, to standard error or
 *	  to --log-file (reopened on SIGHUP, for logrotate).
 *
 * Each line is written with a single write() on an O_APPEND descriptor, so
 * that the lines of several workers sharing a file do not interleave.  The
 * secrets (redact.c) are masked in every line: the worker never logs them
 * on purpose, but an endpoint could echo the key back in an error message.
 * A message is masked before it is quoted (quoting doubles backslashes,
 * which would hide an escaped key from the masking) and the whole line
 * again after.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "triage_worker.h"

#define LOG_LINE_MAX 4096

static int	log_fd = STDERR_FILENO;
static const char *log_path;

bool
log_open(const char *path)
{
	int			fd;

	log_path = path;
	if (path == NULL)
	{
		log_fd = STDERR_FILENO;
		return true;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
	{
		fprintf(stderr, "triage-worker: could not open log file \"%s\": %s\n",
				path, strerror(errno));
		return false;
	}
	log_fd = fd;
	return true;
}

/* After logrotate moved the file away: keep the old one if the new fails */
void
log_reopen(void)
{
	int			fd;

	if (log_path == NULL)
		return;
	fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
	{
		log_msg("error", "could not reopen log file \"%s\": %s", log_path, strerror(errno));
		return;
	}
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = fd;
	log_msg("info", "log file reopened");
}

static size_t
timestamp(char *buf, size_t len)
{
	struct timeval tv;
	struct tm	tm;
	size_t		n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(buf, len, "ts=%Y-%m-%dT%H:%M:%S", &tm);
	n += snprintf(buf + n, len - n, ".%03dZ", (int) (tv.tv_usec / 1000));
	return n;
}

/* Appends value as a logfmt string: quoted, with quotes and controls escaped */
static size_t
append_quoted(char *buf, size_t pos, size_t len, const char *value)
{
	if (pos + 1 >= len)
		return pos;
	buf[pos++] = '"';
	for (const char *p = value; *p && pos + 4 < len; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c == '"' || c == '\\')
		{
			buf[pos++] = '\\';
			buf[pos++] = (char) c;
		}
		else if (c == '\n')
		{
			buf[pos++] = '\\';
			buf[pos++] = 'n';
		}
		else if (c < 0x20 || c == 0x7f)
			buf[pos++] = ' ';
		else
			buf[pos++] = (char) c;
	}
	buf[pos++] = '"';
	buf[pos] = '\0';
	return pos;
}

/* snprintf at buf + pos that never moves pos past the end of buf */
static size_t
appendf(char *buf, size_t pos, size_t len, const char *fmt,...)
			__attribute__((format(printf, 4, 5)));

static size_t
appendf(char *buf, size_t pos, size_t len, const char *fmt,...)
{
	va_list		ap;
	int			n;

	if (pos + 1 >= len)
		return pos;
	va_start(ap, fmt);
	n = vsnprintf(buf + pos, len - pos, fmt, ap);
	va_end(ap);
	if (n < 0)
		return pos;
	return (pos + n >= len) ? len - 1 : pos + n;
}

static void
emit(char *line, size_t len)
{
	ssize_t		rc;

	if (len >= LOG_LINE_MAX - 1)
		len = LOG_LINE_MAX - 2;
	line[len++] = '\n';
	line[len] = '\0';
	redact(line);
	/* a log that cannot be written must not stop the work */
	do
		rc = write(log_fd, line, len);
	while (rc < 0 && errno == EINTR);
}

/* A free-form event: ts=... level=... msg="..." */
void
log_msg(const char *level, const char *fmt,...)
{
	char		msg[LOG_LINE_MAX];
	char		line[LOG_LINE_MAX];
	size_t		pos;
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	redact(msg);

	pos = timestamp(line, sizeof(line));
	pos = appendf(line, pos, sizeof(line), " level=%s msg=", level);
	pos = append_quoted(line, pos, sizeof(line) - 1, msg);
	emit(line, pos);
}

/*
 * A job's outcome: ts=... level=... job=N outcome=... http=... ms=...
 * "stale" is no failure of this worker: its lease ran out (or an admin gave
 * the job back) and the server kept the job for whoever holds it now.
 */
void
log_job(const Job *job, const char *outcome)
{
	char		line[LOG_LINE_MAX];
	char		error[sizeof(job->error)];
	size_t		pos;
	bool		bad = strcmp(outcome, "done") != 0 && strcmp(outcome, "released") != 0 &&
		strcmp(outcome, "stale") != 0;

	pos = timestamp(line, sizeof(line));
	pos = appendf(line, pos, sizeof(line), " level=%s job=%lld outcome=%s http=%ld ms=%ld",
				  bad ? "warning" : "info", (long long) job->id, outcome,
				  job->http_status, job->elapsed_ms);
	if (job->attempt > 0)
		pos = appendf(line, pos, sizeof(line), " attempt=%d", job->attempt);
	if (job->tokens > 0)
		pos = appendf(line, pos, sizeof(line), " tokens=%ld", job->tokens);
	if (job->retry_after >= 0)
		pos = appendf(line, pos, sizeof(line), " retry_after=%.0f", job->retry_after);
	if (job->probe)
		pos = appendf(line, pos, sizeof(line), " probe=true");
	if (job->error[0] != '\0' && strcmp(outcome, "done") != 0)
	{
		snprintf(error, sizeof(error), "%s", job->error);
		redact(error);
		pos = appendf(line, pos, sizeof(line), " error=");
		pos = append_quoted(line, pos, sizeof(line) - 1, error);
	}
	emit(line, pos);
}
