/*
 * text_normalize.c
 *		Token normalization: lower case, HTML tags and character references,
 *		punctuation and symbols as tokens of their own, digit shapes.
 *
 * One pass over the text, one code point at a time (libutf8proc decodes,
 * classifies and lower-cases; ASCII takes a shortcut with the same
 * answers).  The output is built token by token: a word character extends
 * the open token, a separator closes it, and a punctuation character is a
 * token alone.  Bytes that are not valid UTF-8 are word bytes, copied as
 * they are, so that no input is lost or misread.
 */
#include <string.h>
#include <utf8proc.h>

#include "text_normalize.h"

/* how far a '<' looks for its '>': a longer "tag" is more likely text */
#define MAX_TAG_BYTES 1024

void
TextNormalizeDefaults(TextNormalizeOptions *o)
{
	o->lowercase = true;
	o->split_punct = true;
	o->strip_html = true;
	o->digit_shape = false;
}

bool
TextNormalizeIsIdentity(const TextNormalizeOptions *o)
{
	return !o->lowercase && !o->split_punct && !o->strip_html && !o->digit_shape;
}

typedef struct Norm
{
	const TextNormalizeOptions *o;
	const TriageAllocator *allocator;
	char	  **out;
	size_t	   *cap;
	size_t		pos;
	bool		in_token;		/* the last byte written belongs to an open token */
	int64_t		ntokens;
	int64_t		max_tokens;
	bool		stop;			/* max_tokens reached and another token began */
} Norm;

/* Make room for extra more bytes; false when out of memory */
static bool
Room(Norm *st, size_t extra)
{
	size_t		need = st->pos + extra;
	size_t		newcap;
	char	   *p;

	if (*st->cap >= need && *st->out != NULL)
		return true;
	newcap = *st->cap < 256 ? 256 : *st->cap;
	while (newcap < need)
		newcap *= 2;
	p = TriageAlloc(st->allocator, newcap);
	if (p == NULL)
		return false;
	if (st->pos > 0)
		memcpy(p, *st->out, st->pos);
	TriageFree(st->allocator, *st->out);
	*st->out = p;
	*st->cap = newcap;
	return true;
}

/* Start a token if none is open; false when max_tokens forbids it */
static inline bool
OpenToken(Norm *st)
{
	if (st->in_token)
		return true;
	if (st->max_tokens > 0 && st->ntokens >= st->max_tokens)
	{
		st->stop = true;
		return false;
	}
	if (st->pos > 0)
		(*st->out)[st->pos++] = ' ';
	st->ntokens++;
	st->in_token = true;
	return true;
}

/* Append the bytes of a word character (at most 4) to the open token */
static inline void
WordBytes(Norm *st, const char *bytes, size_t n)
{
	if (!OpenToken(st))
		return;
	memcpy(*st->out + st->pos, bytes, n);
	st->pos += n;
}

/* A punctuation or symbol character: a token of its own */
static inline void
PunctBytes(Norm *st, const char *bytes, size_t n)
{
	st->in_token = false;
	WordBytes(st, bytes, n);
	st->in_token = false;
}

/* One decoded code point cp, whose UTF-8 bytes in the input were raw[0..n) */
static void
CodePoint(Norm *st, int32_t cp, const char *raw, size_t n)
{
	const TextNormalizeOptions *o = st->o;
	utf8proc_category_t cat = utf8proc_category(cp);
	utf8proc_uint8_t enc[4];
	utf8proc_ssize_t elen;

	switch (cat)
	{
		case UTF8PROC_CATEGORY_ZS:
		case UTF8PROC_CATEGORY_ZL:
		case UTF8PROC_CATEGORY_ZP:
		case UTF8PROC_CATEGORY_CC:
			st->in_token = false;
			return;
		case UTF8PROC_CATEGORY_CF:
			/* soft hyphens, zero-width spaces and joiners: invisible, so dropped */
			return;
		case UTF8PROC_CATEGORY_PC:
		case UTF8PROC_CATEGORY_PD:
		case UTF8PROC_CATEGORY_PS:
		case UTF8PROC_CATEGORY_PE:
		case UTF8PROC_CATEGORY_PI:
		case UTF8PROC_CATEGORY_PF:
		case UTF8PROC_CATEGORY_PO:
		case UTF8PROC_CATEGORY_SM:
		case UTF8PROC_CATEGORY_SC:
		case UTF8PROC_CATEGORY_SK:
		case UTF8PROC_CATEGORY_SO:
			if (o->split_punct)
			{
				PunctBytes(st, raw, n);
				return;
			}
			break;
		case UTF8PROC_CATEGORY_ND:
			if (o->digit_shape)
			{
				WordBytes(st, "0", 1);
				return;
			}
			break;
		default:
			break;
	}
	if (o->lowercase)
	{
		int32_t		lower = utf8proc_tolower(cp);

		if (lower != cp && (elen = utf8proc_encode_char(lower, enc)) > 0)
		{
			WordBytes(st, (const char *) enc, (size_t) elen);
			return;
		}
	}
	WordBytes(st, raw, n);
}

/* The named character references worth decoding in reviews and messages */
static const struct
{
	const char *name;
	int32_t		cp;
}			Entities[] =
{
	{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''},
	{"nbsp", 0xA0}, {"hellip", 0x2026}, {"mdash", 0x2014}, {"ndash", 0x2013},
	{"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201C}, {"rdquo", 0x201D},
	{"copy", 0xA9}, {"reg", 0xAE}, {"trade", 0x2122}, {"deg", 0xB0},
	{"eacute", 0xE9}, {"egrave", 0xE8}, {"agrave", 0xE0}, {"aacute", 0xE1},
	{"ccedil", 0xE7}, {"uuml", 0xFC}, {"ouml", 0xF6}, {"auml", 0xE4},
	{"iacute", 0xED}, {"oacute", 0xF3}, {"uacute", 0xFA}, {"ntilde", 0xF1},
	{"frac12", 0xBD}, {"frac14", 0xBC}, {"times", 0xD7}, {"euro", 0x20AC},
	{"pound", 0xA3}, {"cent", 0xA2}, {"middot", 0xB7}, {"bull", 0x2022},
};

/*
 * The character reference at text[i] == '&', if it is one we decode: its
 * code point, and the bytes it takes in *n.  -1 if not.
 */
static int32_t
Entity(const char *text, size_t len, size_t i, size_t *n)
{
	size_t		j = i + 1;
	int32_t		cp = 0;

	if (j < len && text[j] == '#')
	{
		bool		hex = j + 1 < len && (text[j + 1] == 'x' || text[j + 1] == 'X');
		size_t		start = j = j + (hex ? 2 : 1);

		for (; j < len && j - start < 8; j++)
		{
			unsigned char c = (unsigned char) text[j];
			int			d;

			if (c >= '0' && c <= '9')
				d = c - '0';
			else if (hex && c >= 'a' && c <= 'f')
				d = c - 'a' + 10;
			else if (hex && c >= 'A' && c <= 'F')
				d = c - 'A' + 10;
			else
				break;
			cp = cp * (hex ? 16 : 10) + d;
		}
		if (j == start || j >= len || text[j] != ';' || !utf8proc_codepoint_valid(cp) || cp == 0)
			return -1;
		*n = j + 1 - i;
		return cp;
	}
	for (; j < len && j - i <= 8; j++)
	{
		unsigned char c = (unsigned char) text[j];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			break;
	}
	if (j == i + 1 || j >= len || text[j] != ';')
		return -1;
	for (size_t e = 0; e < sizeof(Entities) / sizeof(Entities[0]); e++)
		if (strlen(Entities[e].name) == j - i - 1 && memcmp(Entities[e].name, text + i + 1, j - i - 1) == 0)
		{
			*n = j + 1 - i;
			return Entities[e].cp;
		}
	return -1;
}

/* Whether text[i] == '<' opens a tag; if so, the bytes up to its '>' in *n */
static bool
Tag(const char *text, size_t len, size_t i, size_t *n)
{
	unsigned char c;

	if (i + 1 >= len)
		return false;
	c = (unsigned char) text[i + 1];
	if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '/' || c == '!' || c == '?'))
		return false;
	for (size_t j = i + 2; j < len && j - i < MAX_TAG_BYTES; j++)
	{
		if (text[j] == '>')
		{
			*n = j + 1 - i;
			return true;
		}
		if (text[j] == '<')
			return false;
	}
	return false;
}

/* The identity, limited to max_tokens runs of non-blanks */
static size_t
IdentityPrefix(const char *text, size_t len, int64_t max_tokens, bool *truncated)
{
	int64_t		ntokens = 0;
	bool		in_token = false;

	*truncated = false;
	if (max_tokens <= 0)
		return len;
	for (size_t i = 0; i < len; i++)
	{
		char		c = text[i];
		bool		blank = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';

		if (!blank && !in_token && ntokens++ == max_tokens)
		{
			*truncated = true;
			return i;
		}
		in_token = !blank;
	}
	return len;
}

TriageStatus
TextNormalizePrefix(const TextNormalizeOptions *o, const char *text, size_t len, int64_t max_tokens,
					const TriageAllocator *allocator, char **out, size_t *cap, size_t *outlen,
					bool *truncated, char *errbuf, size_t errlen)
{
	Norm		st;
	size_t		i = 0;

	*outlen = 0;
	*truncated = false;
	if (text == NULL && len > 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "no text to normalize");
	if (len > (SIZE_MAX - 16) / 3)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "text of %zu bytes is too long", len);

	st.o = o;
	st.allocator = allocator;
	st.out = out;
	st.cap = cap;
	st.pos = 0;
	st.in_token = false;
	st.ntokens = 0;
	st.max_tokens = max_tokens;
	st.stop = false;

	if (TextNormalizeIsIdentity(o))
	{
		size_t		n = IdentityPrefix(text, len, max_tokens, truncated);

		if (!Room(&st, n))
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory normalizing %zu bytes", len);
		if (n > 0)
			memcpy(*out, text, n);
		*outlen = n;
		return TRIAGE_OK;
	}

	/* without a limit the output is bounded, so reserve it at once */
	if (!Room(&st, max_tokens > 0 ? 64 : TEXT_NORMALIZE_BOUND(len)))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory normalizing %zu bytes", len);

	while (i < len && !st.stop)
	{
		unsigned char c = (unsigned char) text[i];
		size_t		n;

		if ((i & 0xFFFF) == 0)
			TRIAGE_CHECK_INTERRUPTS();
		/* a separator, at most 4 bytes of a code point, and slack */
		if (!Room(&st, 16))
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory normalizing %zu bytes", len);

		if (c < 0x80)
		{
			if (o->strip_html && c == '<' && Tag(text, len, i, &n))
			{
				st.in_token = false;
				i += n;
				continue;
			}
			if (o->strip_html && c == '&')
			{
				int32_t		cp = Entity(text, len, i, &n);

				if (cp >= 0)
				{
					utf8proc_uint8_t enc[4];
					utf8proc_ssize_t elen = utf8proc_encode_char(cp, enc);

					CodePoint(&st, cp, (const char *) enc, (size_t) elen);
					i += n;
					continue;
				}
			}
			if (c <= ' ' || c == 0x7F)
				st.in_token = false;
			else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
			{
				char		b = (o->digit_shape && c <= '9') ? '0' : (char) c;

				WordBytes(&st, &b, 1);
			}
			else if (c >= 'A' && c <= 'Z')
			{
				char		b = o->lowercase ? (char) (c - 'A' + 'a') : (char) c;

				WordBytes(&st, &b, 1);
			}
			else if (o->split_punct)
				PunctBytes(&st, (const char *) &text[i], 1);
			else
				WordBytes(&st, (const char *) &text[i], 1);
			i++;
		}
		else
		{
			utf8proc_int32_t cp;
			utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *) text + i,
												  (utf8proc_ssize_t) (len - i), &cp);

			if (r <= 0)
			{
				/* not UTF-8: the byte passes through, part of a word */
				WordBytes(&st, (const char *) &text[i], 1);
				i++;
			}
			else
			{
				CodePoint(&st, cp, text + i, (size_t) r);
				i += (size_t) r;
			}
		}
	}
	*truncated = st.stop;
	*outlen = st.pos;
	return TRIAGE_OK;
}

TriageStatus
TextNormalize(const TextNormalizeOptions *o, const char *text, size_t len,
			  const TriageAllocator *allocator, char **out, size_t *cap, size_t *outlen,
			  char *errbuf, size_t errlen)
{
	bool		truncated;

	return TextNormalizePrefix(o, text, len, 0, allocator, out, cap, outlen, &truncated,
							   errbuf, errlen);
}
