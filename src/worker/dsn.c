/*-------------------------------------------------------------------------
 *
 * dsn.c
 *	  The --dsn connection string: checked once at start, shown in the log
 *	  without its passwords, and its passwords registered to be masked.
 *
 * The string is never logged as given.  libpq parses it (PQconninfoParse,
 * both key=value and URI forms) and the log gets a string rebuilt from the
 * parsed values without password and sslpassword.  A URI whose password
 * holds an unencoded "@" or "/" is refused at start: libpq would read part
 * of the password as the host name (or port) and quote it in its errors.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "triage_worker.h"

static bool
is_uri(const char *dsn)
{
	return strncmp(dsn, "postgresql://", 13) == 0 || strncmp(dsn, "postgres://", 11) == 0;
}

/* What libpq takes as a database name rather than a connection string */
static bool
is_dbname(const char *dsn)
{
	return !is_uri(dsn) && strchr(dsn, '=') == NULL;
}

static bool
is_secret_keyword(const char *keyword)
{
	return strcmp(keyword, "password") == 0 || strcmp(keyword, "sslpassword") == 0;
}

/*
 * Checks dsn; false with a message in err, which never quotes dsn (nor
 * libpq's message, which may).
 */
bool
dsn_check(const char *dsn, char *err, size_t errlen)
{
	PQconninfoOption *opts;
	char	   *perr = NULL;

	if (is_dbname(dsn))
		return true;
	if (is_uri(dsn))
	{
		const char *rest = strstr(dsn, "://") + 3;
		size_t		len = strcspn(rest, "?");
		const char *at = NULL;
		int			ats = 0;

		for (const char *p = rest; p < rest + len; p++)
			if (*p == '@')
			{
				ats++;
				at = p;
			}
		if (ats > 1 || (at != NULL && memchr(rest, '/', at - rest) != NULL))
		{
			snprintf(err, errlen, "the --dsn URI has an \"@\" or \"/\" in its user name or"
					 " password: write them %%-encoded (%%40 and %%2F)");
			return false;
		}
	}
	opts = PQconninfoParse(dsn, &perr);
	if (opts == NULL)
	{
		if (perr != NULL)
			PQfreemem(perr);
		snprintf(err, errlen, "--dsn is not a valid connection string or URI: check its"
				 " quoting (a value with spaces or quotes needs '...') or its %%-encoding");
		return false;
	}
	PQconninfoFree(opts);
	return true;
}

/* Appends " keyword=value" to out (at *pos), value quoted if it needs it */
static void
append_option(char *out, size_t len, size_t *pos, const char *keyword, const char *value)
{
	bool		quote = value[0] == '\0' || strpbrk(value, " \t\n\r\f\v'\\") != NULL;
	int			n;

	n = snprintf(out + *pos, len - *pos, "%s%s=%s", *pos > 0 ? " " : "", keyword,
				 quote ? "'" : "");
	if (n < 0 || (size_t) n >= len - *pos)
	{
		*pos = len - 1;
		return;
	}
	*pos += n;
	for (const char *p = value; *p && *pos + 3 < len; p++)
	{
		if (quote && (*p == '\'' || *p == '\\'))
			out[(*pos)++] = '\\';
		out[(*pos)++] = *p;
	}
	if (quote && *pos + 1 < len)
		out[(*pos)++] = '\'';
	out[*pos] = '\0';
}

/* dsn for the log: what libpq reads in it, passwords left out */
void
dsn_printable(const char *dsn, char *out, size_t len)
{
	PQconninfoOption *opts;
	char	   *perr = NULL;
	size_t		pos = 0;

	if (len == 0)
		return;
	out[0] = '\0';
	if (is_dbname(dsn))
	{
		if (dsn[0] != '\0')
			append_option(out, len, &pos, "dbname", dsn);
	}
	else if ((opts = PQconninfoParse(dsn, &perr)) == NULL)
	{
		if (perr != NULL)
			PQfreemem(perr);
		snprintf(out, len, "(not shown: libpq cannot parse it)");
		return;
	}
	else
	{
		for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
			if (o->val != NULL && o->val[0] != '\0' && !is_secret_keyword(o->keyword))
				append_option(out, len, &pos, o->keyword, o->val);
		PQconninfoFree(opts);
	}
	if (out[0] == '\0')
		snprintf(out, len, "(libpq's defaults)");
}

/* Registers the passwords in dsn as secrets to mask */
void
dsn_add_secrets(const char *dsn)
{
	PQconninfoOption *opts;
	char	   *perr = NULL;

	if (is_dbname(dsn))
		return;
	if ((opts = PQconninfoParse(dsn, &perr)) == NULL)
	{
		if (perr != NULL)
			PQfreemem(perr);
		return;
	}
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
		if (o->val != NULL && is_secret_keyword(o->keyword))
			redact_add_secret(o->val);
	PQconninfoFree(opts);
}
