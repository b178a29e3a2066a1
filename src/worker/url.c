/*-------------------------------------------------------------------------
 *
 * url.c
 *	  What triage-worker may say about the endpoint URL: its form for the
 *	  log (no user:password@, no query string, where some endpoints take a
 *	  key), whether what is sent to it crosses the network in clear text,
 *	  and which of its parts are secrets to mask.
 *
 *-------------------------------------------------------------------------
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "triage_worker.h"

/*
 * The authority of url: after "scheme://", up to its path, query or
 * fragment; NULL when url has no scheme.
 */
static const char *
authority(const char *url, size_t *len)
{
	const char *p = strstr(url, "://");

	*len = 0;
	if (p == NULL)
		return NULL;
	p += 3;
	*len = strcspn(p, "/?#");
	return p;
}

/* Where the host starts in an authority: after the last '@' */
static const char *
after_userinfo(const char *auth, size_t alen)
{
	const char *host = auth;

	for (const char *p = auth; p < auth + alen; p++)
		if (*p == '@')
			host = p + 1;
	return host;
}

/* url for the log: scheme, host, port and path only */
void
url_printable(const char *url, char *out, size_t len)
{
	size_t		alen;
	const char *auth = authority(url, &alen);
	const char *host;
	const char *path;
	size_t		plen;

	if (auth == NULL)
	{
		snprintf(out, len, "(not a URL)");
		return;
	}
	host = after_userinfo(auth, alen);
	path = auth + alen;
	plen = strcspn(path, "?#");
	snprintf(out, len, "%.*s%.*s%.*s%s", (int) (auth - url), url,
			 (int) (auth + alen - host), host, (int) plen, path,
			 path[plen] != '\0' ? "?(hidden)" : "");
}

/* The host of url, without the brackets of an IPv6 address */
static bool
url_host(const char *url, char *host, size_t len)
{
	size_t		alen;
	const char *auth = authority(url, &alen);
	const char *start;
	const char *end;

	if (auth == NULL || len == 0)
		return false;
	start = after_userinfo(auth, alen);
	end = auth + alen;
	if (start < end && *start == '[')
	{
		const char *close = memchr(start, ']', end - start);

		if (close == NULL)
			return false;
		start++;
		end = close;
	}
	else
	{
		const char *colon = memchr(start, ':', end - start);

		if (colon != NULL)
			end = colon;
	}
	snprintf(host, len, "%.*s", (int) (end - start), start);
	return true;
}

/* Whether host names this machine: localhost, 127.0.0.0/8 or ::1 */
bool
host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0)
		return true;
	/* inet_aton reads every form getaddrinfo does (127.1, 0x7f.0.0.1) */
	if (inet_aton(host, &a4) != 0)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6) ||
			(IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
	return false;
}

/*
 * Whether what is sent to url crosses the network in clear text: plain
 * http:// to a host that is not loopback.  host: that host, for a message.
 */
bool
url_plain_http_remote(const char *url, char *host, size_t len)
{
	if (strncasecmp(url, "http://", 7) != 0)
		return false;
	if (!url_host(url, host, len))
	{
		snprintf(host, len, "(unknown)");
		return true;
	}
	return !host_is_loopback(host);
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Registers text[0 .. len), %-decoded as libcurl sends it, as a secret */
static void
add_decoded(const char *text, size_t len)
{
	char	   *s = malloc(len + 1);
	size_t		n = 0;

	if (s == NULL)
		return;
	for (size_t i = 0; i < len; i++)
	{
		if (text[i] == '%' && i + 2 < len && hex_digit(text[i + 1]) >= 0 &&
			hex_digit(text[i + 2]) >= 0)
		{
			s[n++] = (char) ((hex_digit(text[i + 1]) << 4) | hex_digit(text[i + 2]));
			i += 2;
		}
		else
			s[n++] = text[i];
	}
	s[n] = '\0';
	redact_add_secret(s);
	memset(s, 0, n);
	free(s);
}

/*
 * Registers the secrets of url: the user and password of its userinfo and
 * the values of its query string (an endpoint may take its key there).
 */
void
url_add_secrets(const char *url)
{
	size_t		alen;
	const char *auth = authority(url, &alen);
	const char *host;
	const char *query;

	if (auth == NULL)
		return;
	host = after_userinfo(auth, alen);
	if (host > auth)
	{
		size_t		ulen = host - 1 - auth;
		const char *colon = memchr(auth, ':', ulen);

		if (colon != NULL)
		{
			add_decoded(auth, colon - auth);
			add_decoded(colon + 1, auth + ulen - colon - 1);
		}
		else
			add_decoded(auth, ulen);
	}
	query = strchr(auth + alen, '?');
	if (query == NULL)
		return;
	query++;
	while (*query != '\0' && *query != '#')
	{
		size_t		plen = strcspn(query, "&#");
		const char *eq = memchr(query, '=', plen);

		if (eq != NULL)
			add_decoded(eq + 1, query + plen - eq - 1);
		else
			add_decoded(query, plen);
		query += plen;
		if (*query == '&')
			query++;
	}
}
