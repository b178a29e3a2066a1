/*
 * test_worker_redact.c
 *		Unit tests of triage-worker's masking of secrets (src/worker/redact.c)
 *		and of what it says about the endpoint URL (src/worker/url.c): the
 *		API key whole, cut, JSON-escaped and URL-encoded; excerpts masked
 *		before they are cut; the URL without credentials or query; which
 *		hosts are loopback.  The stub LLM cannot echo the key, so this is
 *		where echoed keys are tested.
 *
 *	gcc -fsanitize=address,undefined -Isrc/worker test/core/test_worker_redact.c \
 *		src/worker/redact.c src/worker/url.c -o test_worker_redact
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "redact.h"
#include "triage_worker.h"

/* A 164-character key, as in issue 21, with a "/" to be escaped */
static char key[165];

/* Whether text holds a run of n or more consecutive characters of s */
static int
has_run(const char *text, size_t tlen, const char *s, size_t n)
{
	size_t		slen = strlen(s);

	for (size_t i = 0; i + n <= tlen; i++)
		for (size_t j = 0; j + n <= slen; j++)
			if (memcmp(text + i, s + j, n) == 0)
				return 1;
	return 0;
}

/* s with every character as \u00XX (every even one when alternate) */
static char *
json_unicode(const char *s, int alternate)
{
	char	   *out = malloc(strlen(s) * 6 + 1);
	char	   *p = out;

	for (size_t i = 0; s[i]; i++)
	{
		if (!alternate || i % 2 == 0)
			p += sprintf(p, "\\u%04X", (unsigned char) s[i]);
		else
			*p++ = s[i];
	}
	*p = '\0';
	return out;
}

/* s as JSON writes it with escaped slashes */
static char *
json_slashes(const char *s)
{
	char	   *out = malloc(strlen(s) * 2 + 1);
	char	   *p = out;

	for (size_t i = 0; s[i]; i++)
	{
		if (s[i] == '/')
			*p++ = '\\';
		*p++ = s[i];
	}
	*p = '\0';
	return out;
}

static char *
url_encoded(const char *s)
{
	char	   *out = malloc(strlen(s) * 3 + 1);
	char	   *p = out;

	for (size_t i = 0; s[i]; i++)
		p += sprintf(p, "%%%02x", (unsigned char) s[i]);
	*p = '\0';
	return out;
}

/* Masks a copy of text; returns whether it is exactly expected afterwards */
static int
masks_to(const char *text, const char *expected)
{
	char	   *copy = strdup(text);
	int			ok;

	redact(copy);
	ok = strcmp(copy, expected) == 0;
	if (!ok)
		printf("# got:      %s\n# expected: %s\n", copy, expected);
	free(copy);
	return ok;
}

/* Masks text (a malloc'd string) and says whether all of it but the ends became stars */
static int
masked_between(char *text, const char *before, const char *after)
{
	size_t		b = strlen(before);
	size_t		a = strlen(after);
	size_t		n;
	int			ok;

	redact(text);
	n = strlen(text);
	ok = n >= a + b && strncmp(text, before, b) == 0 && strcmp(text + n - a, after) == 0;
	for (size_t i = b; ok && i < n - a; i++)
		ok = text[i] == REDACT_CHAR;
	if (!ok)
		printf("# got: %s\n", text);
	free(text);
	return ok;
}

static char *
concat3(const char *a, const char *b, const char *c)
{
	char	   *out = malloc(strlen(a) + strlen(b) + strlen(c) + 1);

	sprintf(out, "%s%s%s", a, b, c);
	return out;
}

static void
test_key_forms(void)
{
	char		buf[512];
	char	   *s;

	Check(masks_to("no secret here", "no secret here"), "text without the key is unchanged");
	Check(masked_between(concat3("Bearer ", key, " end"), "Bearer ", " end"),
		  "the whole key is masked");
	Check(masked_between(concat3("{\"auth\": \"Bearer ", s = json_slashes(key), "\"}"),
						 "{\"auth\": \"Bearer ", "\"}"),
		  "a JSON-escaped key (\\/ for /) is masked, and the JSON around it is kept");
	free(s);
	Check(masked_between(concat3("\"", s = json_unicode(key, 0), "\""), "\"", "\""),
		  "a key written all in \\u00XX escapes is masked");
	free(s);
	Check(masked_between(concat3("x=", s = json_unicode(key, 1), "&"), "x=", "&"),
		  "a key with every other character \\u00XX-escaped is masked");
	free(s);
	Check(masked_between(concat3("?key=", s = url_encoded(key), " HTTP/1.1"), "?key=", " HTTP/1.1"),
		  "a URL-encoded key is masked");
	free(s);

	/* runs of the key: prefix, suffix, middle */
	snprintf(buf, sizeof(buf), "Bearer %.106s...", key);
	s = strdup(buf);
	Check(masked_between(s, "Bearer ", "..."), "the key's first 106 characters are masked");
	snprintf(buf, sizeof(buf), "[%s]", key + 150);
	s = strdup(buf);
	Check(masked_between(s, "[", "]"), "its last 14 characters are masked");
	snprintf(buf, sizeof(buf), "<%.8s>", key + 77);
	s = strdup(buf);
	Check(masked_between(s, "<", ">"), "any 8 consecutive characters of it are masked");
	snprintf(buf, sizeof(buf), "<%.7s>", key + 77);
	Check(masks_to(buf, buf), "7 characters of it are below the threshold (REDACT_MIN_RUN)");
	snprintf(buf, sizeof(buf), "%.20s|%.20s", key, key + 100);
	s = strdup(buf);
	redact(s);
	Check(strspn(s, "*") == 20 && s[20] == '|' && strspn(s + 21, "*") == 20,
		  "two runs from different places of the key are both masked");
	free(s);
}

static void
test_excerpt(void)
{
	char		reply[1024];
	char		error[512];
	size_t		prefix_len;
	int			ok = 1;

	/*
	 * Issue 21: an endpoint echoes the Authorization header in a 400; cut to
	 * 200 characters first, 106 characters of the key were left.  The key
	 * starts at 120 and crosses the cut: what is before the cut must be
	 * stars, however little of the key that is.
	 */
	snprintf(reply, sizeof(reply),
			 "{\"error\": {\"message\": \"Invalid header. You sent: Authorization: Bearer %s\", "
			 "\"type\": \"invalid_request_error\"}}", key);
	redacted_excerpt(error, sizeof(error), 200, "request rejected (400): ", reply, strlen(reply));
	Check(strlen(error) == 200, "the excerpt is cut to 200 characters");
	Check(!has_run(error, strlen(error), key, 4),
		  "no 4 characters of the key are left in the excerpt (masked before the cut)");
	prefix_len = strlen("request rejected (400): ") + (strstr(reply, key) - reply);
	for (size_t i = prefix_len; i < 200; i++)
		ok = ok && error[i] == REDACT_CHAR;
	Check(ok, "where the key was, up to the cut, are stars");

	/* a cut that leaves 5 characters of the key: still masked */
	snprintf(reply, sizeof(reply), "%-195s%s", "x", key);
	redacted_excerpt(error, sizeof(error), 200, NULL, reply, strlen(reply));
	Check(strcmp(error + 195, "*****") == 0, "5 characters of the key before the cut are masked");

	/* JSON-escaped, crossing the cut */
	{
		char	   *esc = json_unicode(key, 0);
		char	   *big = concat3("{\"echo\": \"", esc, "\"}");

		redacted_excerpt(error, sizeof(error), 300, "complete() failed; reply: ", big, strlen(big));
		Check(strspn(error + strlen("complete() failed; reply: {\"echo\": \""), "*") ==
			  300 - strlen("complete() failed; reply: {\"echo\": \""),
			  "an escaped key crossing the cut is stars up to the cut");
		free(esc);
		free(big);
	}

	/* non-printable bytes become spaces; NUL bytes in the reply are no end */
	memcpy(reply, "a\nb\0c\x01", 6);
	redacted_excerpt(error, sizeof(error), 200, "p: ", reply, 6);
	Check(strcmp(error, "p: a b c ") == 0, "controls and NUL bytes become spaces");

	/* the destination is smaller than the limit */
	redacted_excerpt(error, 10, 200, "prefix: ", "abcdef", 6);
	Check(strcmp(error, "prefix: a") == 0, "a short destination cuts the excerpt");
}

static void
test_secrets(void)
{
	char		text[256];

	Check(redact_add_secret("pw1"), "a 3-character secret is accepted");
	Check(masks_to("pw1 pw1", "pw1 pw1"), "and not masked (shorter than REDACT_MIN_SECRET)");
	Check(redact_add_secret("hunter2"), "a 7-character password is accepted");
	Check(masks_to("password=hunter2 hunter", "password=******* hunter"),
		  "a secret shorter than 8 is masked whole, and only whole");
	Check(redact_add_secret("hunter2"), "registering it again is harmless");

	/* masking is in place and keeps the length, NUL bytes included */
	memcpy(text, "a\0hunter2\0b", 11);
	redact_text(text, 11);
	Check(memcmp(text, "a\0*******\0b", 11) == 0, "redact_text masks past NUL bytes");

	/* the periodic secret: linear, not quadratic */
	{
		char		periodic[65];
		size_t		n = 4 * 1024 * 1024;
		char	   *big = malloc(n + 1);
		clock_t		t0 = clock();
		int			all = 1;

		memset(periodic, 'a', 64);
		periodic[64] = '\0';
		redact_add_secret(periodic);
		memset(big, 'a', n);
		big[n] = '\0';
		redact_text(big, n);
		for (size_t i = 0; i < n; i++)
			all = all && big[i] == REDACT_CHAR;
		Check(all, "4 MB of a periodic secret's character are all masked");
		Check((double) (clock() - t0) / CLOCKS_PER_SEC < 5.0, "in well under 5 s");
		free(big);
	}
	redact_forget_all();
	Check(masks_to("hunter2", "hunter2"), "redact_forget_all forgets every secret");
}

static void
test_url(void)
{
	char		out[256];
	char		host[64];

	url_printable("https://user:pa55word@api.example.com:8443/v1?api-key=s3cr3tvalue#frag",
				  out, sizeof(out));
	Check(strcmp(out, "https://api.example.com:8443/v1?(hidden)") == 0,
		  "the printable URL has no user, password or query");
	url_printable("http://127.0.0.1:8000/v1", out, sizeof(out));
	Check(strcmp(out, "http://127.0.0.1:8000/v1") == 0, "a plain URL prints as it is");
	url_printable("http://u@[::1]:80", out, sizeof(out));
	Check(strcmp(out, "http://[::1]:80") == 0, "an IPv6 URL without path loses its user");

	Check(host_is_loopback("localhost") && host_is_loopback("LOCALHOST") &&
		  host_is_loopback("127.0.0.1") && host_is_loopback("127.8.9.10") &&
		  host_is_loopback("127.1") && host_is_loopback("::1") &&
		  host_is_loopback("::ffff:127.0.0.1"),
		  "localhost, 127.0.0.0/8 and ::1 are loopback");
	Check(!host_is_loopback("128.0.0.1") && !host_is_loopback("10.0.0.1") &&
		  !host_is_loopback("localhost.example.com") && !host_is_loopback("::2") &&
		  !host_is_loopback("api.openai.com") && !host_is_loopback(""),
		  "other hosts are not");
	Check(url_plain_http_remote("http://192.0.2.7:8000/v1", host, sizeof(host)) &&
		  strcmp(host, "192.0.2.7") == 0, "plain http to 192.0.2.7 crosses the network");
	Check(url_plain_http_remote("HTTP://user:pw@Example.COM/v1", host, sizeof(host)) &&
		  strcmp(host, "Example.COM") == 0, "so does HTTP:// to a name, after its userinfo");
	Check(!url_plain_http_remote("https://192.0.2.7/v1", host, sizeof(host)),
		  "https does not");
	Check(!url_plain_http_remote("http://127.0.0.1:8000/v1", host, sizeof(host)) &&
		  !url_plain_http_remote("http://localhost/v1", host, sizeof(host)) &&
		  !url_plain_http_remote("http://[::1]:8000/v1", host, sizeof(host)),
		  "nor plain http to loopback");

	url_add_secrets("https://keyuser:pa%40ss%2Fword@api.example.com/v1?api-key=s3cr3tvalue&x=1");
	Check(masks_to("GET /v1?api-key=s3cr3tvalue", "GET /v1?api-key=***********"),
		  "a query value of the URL is masked");
	Check(masks_to("as keyuser, pa@ss/word", "as *******, **********"),
		  "its user and %-decoded password are masked");
	Check(masks_to("x=1", "x=1"), "a query value shorter than 4 is not");
	redact_forget_all();
}

int
main(void)
{
	/* a random-looking key of printable ASCII, with slashes */
	srand(21);
	for (size_t i = 0; i < sizeof(key) - 1; i++)
		key[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_/"[rand() % 65];
	key[0] = 's';
	key[1] = 'k';
	key[2] = '-';
	key[10] = '/';
	key[sizeof(key) - 1] = '\0';
	redact_add_secret(key);

	test_key_forms();
	test_excerpt();
	redact_forget_all();
	test_secrets();
	test_url();

	printf("1..%d\n", checks);
	return failures > 0;
}
