/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  The secrets triage-worker must never write (the API key, the database
 *	  password, credentials in the endpoint URL) and their masking in any
 *	  text before it reaches the log or the queue.
 *
 * An endpoint can send a key back in many shapes: whole, cut, or escaped (an
 * error that quotes the Authorization header as JSON may write "/" as "\/"
 * or any character as "\u00XX"; a URL in it may hold "%XX").  So text is
 * read through those escapes, and every run of at least REDACT_MIN_RUN
 * consecutive characters of a secret (the whole secret when it is shorter)
 * is masked, escapes included.  Masking keeps the length: text is masked in
 * place, and a JSON reply stays JSON when the run lies inside a string.
 *
 * Text is masked before it is cut: cut first, a key at the end of an
 * excerpt would leave a piece too short to be recognised, yet long enough
 * to help guess the key (redacted_excerpt does it in that order).
 *
 * A run is found by its first REDACT_MIN_RUN characters (packed in 64 bits
 * and looked up among the secret's substrings of that length, sorted), then
 * followed as far as the secret goes: linear in the text for a random key.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "redact.h"

/* The key, its rotations on SIGHUP, a password and a few URL parts */
#define MAX_SECRETS 64
/* A run is followed from at most this many places of a secret */
#define MAX_CANDIDATES 16
/* An escaped character takes at most this many bytes ("\u00XX") */
#define MAX_ESCAPE 6

/* a run's first characters are packed into one 64-bit word */
_Static_assert(REDACT_MIN_RUN <= 8, "REDACT_MIN_RUN characters must fit in 64 bits");

typedef struct Gram
{
	uint64_t	gram;			/* g characters, one per byte */
	size_t		pos;			/* where they start in the secret */
} Gram;

typedef struct Secret
{
	char	   *text;
	size_t		len;
	size_t		g;				/* the shortest run masked */
	Gram	   *grams;			/* every substring of length g, sorted */
	size_t		ngrams;
} Secret;

static Secret secrets[MAX_SECRETS];
static int	nsecrets = 0;

static int
gram_cmp(const void *a, const void *b)
{
	const Gram *x = a;
	const Gram *y = b;

	if (x->gram != y->gram)
		return x->gram < y->gram ? -1 : 1;
	if (x->pos != y->pos)
		return x->pos < y->pos ? -1 : 1;
	return 0;
}

static uint64_t
gram_mask(size_t g)
{
	return g >= 8 ? UINT64_MAX : (((uint64_t) 1) << (8 * g)) - 1;
}

/*
 * Registers secret (copied) to be masked from now on.  Secrets shorter than
 * REDACT_MIN_SECRET are ignored.  Returns false when there is no room (or
 * memory) for it.
 */
bool
redact_add_secret(const char *secret)
{
	Secret	   *s;
	size_t		len;

	if (secret == NULL || (len = strlen(secret)) < REDACT_MIN_SECRET)
		return true;
	for (int i = 0; i < nsecrets; i++)
		if (strcmp(secrets[i].text, secret) == 0)
			return true;
	if (nsecrets == MAX_SECRETS)
		return false;

	s = &secrets[nsecrets];
	s->len = len;
	s->g = len < REDACT_MIN_RUN ? len : REDACT_MIN_RUN;
	s->ngrams = len - s->g + 1;
	s->text = strdup(secret);
	s->grams = malloc(s->ngrams * sizeof(Gram));
	if (s->text == NULL || s->grams == NULL)
	{
		free(s->text);
		free(s->grams);
		return false;
	}
	for (size_t i = 0; i < s->ngrams; i++)
	{
		uint64_t	gram = 0;

		for (size_t k = 0; k < s->g; k++)
			gram = (gram << 8) | (unsigned char) secret[i + k];
		s->grams[i].gram = gram;
		s->grams[i].pos = i;
	}
	qsort(s->grams, s->ngrams, sizeof(Gram), gram_cmp);
	nsecrets++;
	return true;
}

/* Forgets every secret (and wipes the copies) */
void
redact_forget_all(void)
{
	for (int i = 0; i < nsecrets; i++)
	{
		memset(secrets[i].text, 0, secrets[i].len);
		free(secrets[i].text);
		free(secrets[i].grams);
	}
	memset(secrets, 0, sizeof(secrets));
	nsecrets = 0;
}

/* The length of the longest secret, 0 when there is none */
size_t
redact_longest_secret(void)
{
	size_t		longest = 0;

	for (int i = 0; i < nsecrets; i++)
		if (secrets[i].len > longest)
			longest = secrets[i].len;
	return longest;
}

static int
hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Reads the character at text[pos] as an endpoint may have escaped it: a
 * JSON escape (\/ \\ \" \u00XX), a URL escape (%XX) or itself.  Sets *c (0
 * for a character no secret holds) and returns the bytes it took.
 */
static size_t
next_char(const char *text, size_t len, size_t pos, unsigned char *c)
{
	const unsigned char *p = (const unsigned char *) text + pos;
	size_t		left = len - pos;

	if (p[0] == '\\' && left >= 2)
	{
		if (p[1] == '/' || p[1] == '\\' || p[1] == '"')
		{
			*c = p[1];
			return 2;
		}
		if (p[1] == 'u' && left >= 6 && hex_value(p[2]) >= 0 && hex_value(p[3]) >= 0 &&
			hex_value(p[4]) >= 0 && hex_value(p[5]) >= 0)
		{
			int			v = (hex_value(p[2]) << 12) | (hex_value(p[3]) << 8) |
				(hex_value(p[4]) << 4) | hex_value(p[5]);

			*c = v < 0x80 ? (unsigned char) v : 0;
			return 6;
		}
	}
	else if (p[0] == '%' && left >= 3 && hex_value(p[1]) >= 0 && hex_value(p[2]) >= 0)
	{
		*c = (unsigned char) ((hex_value(p[1]) << 4) | hex_value(p[2]));
		return 3;
	}
	*c = p[0];
	return 1;
}

/* The first of s's grams equal to gram, or -1 */
static long
find_gram(const Secret *s, uint64_t gram)
{
	size_t		lo = 0;
	size_t		hi = s->ngrams;

	while (lo < hi)
	{
		size_t		mid = lo + (hi - lo) / 2;

		if (s->grams[mid].gram < gram)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (lo < s->ngrams && s->grams[lo].gram == gram) ? (long) lo : -1;
}

/*
 * The text's first g characters before pos match s at the places listed
 * from grams[first]: follows each as far as s goes and returns where the
 * longest run ends in text.
 */
static size_t
run_end(const Secret *s, size_t first, const char *text, size_t len, size_t pos)
{
	size_t		best = pos;

	for (size_t i = first; i < s->ngrams && i < first + MAX_CANDIDATES &&
		 s->grams[i].gram == s->grams[first].gram; i++)
	{
		size_t		k = s->grams[i].pos + s->g;
		size_t		p = pos;

		while (k < s->len && p < len)
		{
			unsigned char c;
			size_t		n = next_char(text, len, p, &c);

			if (c != (unsigned char) s->text[k])
				break;
			p += n;
			k++;
		}
		if (p > best)
			best = p;
		/* places further on in the secret cannot give a longer run */
		if (k == s->len)
			break;
	}
	return best;
}

/* Masks the runs of one secret in text */
static void
redact_one(const Secret *s, char *text, size_t len)
{
	uint64_t	mask = gram_mask(s->g);
	size_t		starts[REDACT_MIN_RUN];	/* where the last g characters
										 * start, in a ring */
	size_t		count = 0;
	uint64_t	gram = 0;
	size_t		pos = 0;

	while (pos < len)
	{
		unsigned char c;
		size_t		n = next_char(text, len, pos, &c);
		size_t		start;
		size_t		end;
		long		first;

		starts[count % s->g] = pos;
		count++;
		gram = ((gram << 8) | c) & mask;
		pos += n;
		if (count < s->g || (first = find_gram(s, gram)) < 0)
			continue;
		start = starts[(count - s->g) % s->g];
		end = run_end(s, (size_t) first, text, len, pos);
		memset(text + start, REDACT_CHAR, end - start);
		pos = end;
		count = 0;
		gram = 0;
	}
}

/* Masks every secret in text[0 .. len), in place */
void
redact_text(char *text, size_t len)
{
	if (text == NULL)
		return;
	for (int i = 0; i < nsecrets; i++)
		redact_one(&secrets[i], text, len);
}

/* The same for a string */
void
redact(char *text)
{
	if (text != NULL)
		redact_text(text, strlen(text));
}

/*
 * Writes into dst (dstlen bytes) prefix followed by the start of text (len
 * bytes, maybe not a string), masked, then cut to limit bytes in all, with
 * everything but printable ASCII turned into spaces.  What follows the cut
 * is masked too, as far as a secret starting before it could reach.
 */
void
redacted_excerpt(char *dst, size_t dstlen, size_t limit, const char *prefix,
				 const char *text, size_t len)
{
	size_t		plen = prefix ? strlen(prefix) : 0;
	size_t		reach = limit + MAX_ESCAPE * redact_longest_secret();
	size_t		window = (text == NULL) ? 0 : len;
	size_t		n;
	char	   *buf;

	if (dstlen == 0)
		return;
	if (window > reach)
		window = reach;
	buf = malloc(plen + window + 1);
	if (buf == NULL)
	{
		/* no excerpt rather than an unmasked one */
		dst[0] = '\0';
		return;
	}
	if (plen > 0)
		memcpy(buf, prefix, plen);
	if (window > 0)
		memcpy(buf + plen, text, window);
	buf[plen + window] = '\0';
	redact_text(buf, plen + window);

	n = plen + window;
	if (n > limit)
		n = limit;
	if (n > dstlen - 1)
		n = dstlen - 1;
	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) buf[i];

		dst[i] = (c >= 0x20 && c < 0x7f) ? (char) c : ' ';
	}
	dst[n] = '\0';
	free(buf);
}
