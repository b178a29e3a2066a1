/*
 * crf_tokenize.c
 *		The CRF tokenizer: UTF-8 aware, bounded, byte offsets.
 *
 * Every character is classified as space, alphanumeric or punctuation.  A
 * joiner punctuation character between two alphanumerics stays inside the
 * token, so identifiers, amounts, dates, e-mail addresses and phone numbers
 * stay whole; everything else that is not alphanumeric is a token by
 * itself.  Decoding checks the remaining length before every byte it reads.
 */
#include "crf_internal.h"

static inline CrfCharClass
AsciiClass(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return CRF_CHAR_ALNUM;
	if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == 0)
		return CRF_CHAR_SPACE;
	return CRF_CHAR_PUNCT;
}

/*
 * Decode one character at text[i], i < len: its class and byte length.
 * Invalid UTF-8 (bad lead, truncated, overlong, surrogate) is one byte of
 * class PUNCT, so it ends up as a token of its own.
 */
CrfCharClass
CrfCharAt(const char *text, size_t len, size_t i, int *nbytes)
{
	const unsigned char *s = (const unsigned char *) text + i;
	size_t		avail = len - i;
	uint32_t	cp;
	int			n;

	if (s[0] < 0x80)
	{
		*nbytes = 1;
		return AsciiClass(s[0]);
	}
	*nbytes = 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
	{
		n = 2;
		cp = s[0] & 0x1F;
	}
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
	{
		n = 3;
		cp = s[0] & 0x0F;
	}
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
	{
		n = 4;
		cp = s[0] & 0x07;
	}
	else
		return CRF_CHAR_PUNCT;
	if (avail < (size_t) n)
		return CRF_CHAR_PUNCT;
	for (int k = 1; k < n; k++)
	{
		if ((s[k] & 0xC0) != 0x80)
			return CRF_CHAR_PUNCT;
		cp = (cp << 6) | (s[k] & 0x3F);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
		(cp >= 0xD800 && cp <= 0xDFFF))
		return CRF_CHAR_PUNCT;
	*nbytes = n;

	/* Unicode spaces */
	if (cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200B) ||
		cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000 ||
		cp == 0xFEFF)
		return CRF_CHAR_SPACE;
	/* Latin-1 symbols, general punctuation, currency signs, CJK punctuation */
	if ((cp >= 0x80 && cp <= 0xBF && cp != 0xAA && cp != 0xB5 && cp != 0xBA) ||
		cp == 0xD7 || cp == 0xF7 ||
		(cp >= 0x2010 && cp <= 0x206F) || (cp >= 0x20A0 && cp <= 0x20CF) ||
		(cp >= 0x2190 && cp <= 0x23FF) || (cp >= 0x2500 && cp <= 0x27BF) ||
		(cp >= 0x3001 && cp <= 0x303F) || (cp >= 0xFF01 && cp <= 0xFF0F))
		return CRF_CHAR_PUNCT;
	return CRF_CHAR_ALNUM;
}

static inline bool
IsJoiner(char c)
{
	switch (c)
	{
		case '-':
		case '.':
		case ',':
		case '/':
		case '@':
		case '_':
		case ':':
		case '\'':
		case '+':
		case '&':
		case '#':
			return true;
		default:
			return false;
	}
}

/* CrfCharAt with the ASCII case inline: most text is ASCII */
static inline CrfCharClass
CharAt(const char *text, size_t len, size_t i, int *nbytes)
{
	unsigned char c = (unsigned char) text[i];

	if (c >= 0x80)
		return CrfCharAt(text, len, i, nbytes);
	*nbytes = 1;
	return AsciiClass(c);
}

/* Bytes read between checks for cancel: a token or a run of spaces may be the whole text */
#define CHECK_EVERY_BYTES ((size_t) 1 << 20)

int32_t
CrfTokenize(const char *text, size_t len, CrfToken *tokens, int32_t max_tokens)
{
	int32_t		n = 0;
	size_t		i = 0;
	size_t		next_check = CHECK_EVERY_BYTES;

	if (text == NULL || tokens == NULL)
		return 0;
	if (len > CRF_MAX_TEXT)
		len = CRF_MAX_TEXT;
	if (max_tokens > CRF_MAX_TOKENS)
		max_tokens = CRF_MAX_TOKENS;

	while (i < len && n < max_tokens)
	{
		int			nb;
		CrfCharClass cls;
		size_t		start = i;

		if (i >= next_check)
		{
			TRIAGE_CHECK_INTERRUPTS();
			next_check = i + CHECK_EVERY_BYTES;
		}
		cls = CharAt(text, len, i, &nb);
		if (cls == CRF_CHAR_SPACE)
		{
			i += nb;
			continue;
		}
		i += nb;
		if (cls == CRF_CHAR_ALNUM)
		{
			while (i < len)
			{
				int			nb2;
				CrfCharClass c2;

				if (i >= next_check)
				{
					TRIAGE_CHECK_INTERRUPTS();
					next_check = i + CHECK_EVERY_BYTES;
				}
				c2 = CharAt(text, len, i, &nb2);
				if (c2 == CRF_CHAR_ALNUM)
					i += nb2;
				else if (c2 == CRF_CHAR_PUNCT && nb2 == 1 && IsJoiner(text[i]) && i + 1 < len)
				{
					int			nb3;

					if (CharAt(text, len, i + 1, &nb3) != CRF_CHAR_ALNUM)
						break;
					i += 1 + nb3;
				}
				else
					break;
			}
		}
		tokens[n].start = (uint32_t) start;
		tokens[n].end = (uint32_t) i;
		n++;
	}
	return n;
}
