/*
 * crf_align.c
 *		Find a field value, written as a person writes it, in the tokens of
 *		its text, so training can label the span B-f I-f ...
 *
 * Three tries, strictest first: the value's bytes on token boundaries; the
 * value's tokens ignoring ASCII case (white space is already gone between
 * tokens); a single token holding the same number (1,299.00 = 1299 =
 * 1299.0).  Every non-overlapping occurrence of the first kind that
 * matches is returned, so a value repeated in the text is labeled
 * everywhere and the model is not taught that the repeat is O.
 */
#include "crf_internal.h"

#define ALIGN_MAX_VALUE_TOKENS 64
#define NUMBER_MAX 48

static inline unsigned char
Lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char) (c + 32) : c;
}

static inline bool
IsSpace(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/*
 * Canonical form of a number written with digits, thousands separators and
 * one decimal separator: integer digits without leading zeros, then '.' and
 * the fraction without trailing zeros.  The last separator is the decimal
 * one when it is a '.', or a ',' not followed by exactly three digits.
 * False when s is not such a number.
 */
static bool
CanonicalNumber(const char *s, size_t len, char *out, size_t *outlen)
{
	size_t		last_sep = SIZE_MAX;
	size_t		ndigits = 0;
	size_t		o = 0;
	size_t		dec = SIZE_MAX;
	size_t		i = 0;
	bool		neg = false;

	if (len > 0 && (s[0] == '-' || s[0] == '+'))
	{
		neg = s[0] == '-';
		i = 1;
	}
	if (i >= len || s[i] < '0' || s[i] > '9')
		return false;
	for (size_t k = i; k < len; k++)
	{
		if (s[k] >= '0' && s[k] <= '9')
			ndigits++;
		else if (s[k] == ',' || s[k] == '.')
		{
			if (k + 1 >= len || s[k + 1] < '0' || s[k + 1] > '9')
				return false;
			last_sep = k;
		}
		else
			return false;
	}
	if (ndigits > NUMBER_MAX - 4)
		return false;
	if (last_sep != SIZE_MAX)
	{
		size_t		after = len - last_sep - 1;

		if (s[last_sep] == '.' || after != 3)
			dec = last_sep;
		/* "1.299.000": a repeated '.' is a thousands separator */
		if (s[last_sep] == '.' && memchr(s + i, '.', last_sep - i) != NULL)
			dec = SIZE_MAX;
	}
	if (neg)
		out[o++] = '-';
	{
		bool		leading = true;
		size_t		int_end = dec == SIZE_MAX ? len : dec;

		for (size_t k = i; k < int_end; k++)
		{
			if (s[k] < '0' || s[k] > '9')
				continue;
			if (leading && s[k] == '0')
				continue;
			leading = false;
			out[o++] = s[k];
		}
		if (leading)
			out[o++] = '0';
		if (dec != SIZE_MAX)
		{
			size_t		frac_end = len;

			while (frac_end > dec + 1 && s[frac_end - 1] == '0')
				frac_end--;
			if (frac_end > dec + 1)
			{
				out[o++] = '.';
				for (size_t k = dec + 1; k < frac_end; k++)
				{
					if (s[k] < '0' || s[k] > '9')
						return false;	/* "1.2,5" */
					out[o++] = s[k];
				}
			}
		}
	}
	*outlen = o;
	return true;
}

static void
AddSpan(int32_t a, int32_t b, int32_t *first, int32_t *last, int32_t max_spans, int32_t *nspans)
{
	if (*nspans < max_spans)
	{
		first[*nspans] = a;
		last[*nspans] = b;
		(*nspans)++;
	}
}

CrfAlignKind
CrfAlignValue(const char *text, const CrfToken *tokens, int32_t ntokens,
			  const char *value, size_t vlen, int32_t *first, int32_t *last,
			  int32_t max_spans, int32_t *nspans)
{
	CrfToken	vtok[ALIGN_MAX_VALUE_TOKENS];
	int32_t		nv;

	*nspans = 0;
	if (value == NULL || max_spans <= 0)
		return CRF_ALIGN_NONE;
	while (vlen > 0 && IsSpace(value[0]))
	{
		value++;
		vlen--;
	}
	while (vlen > 0 && IsSpace(value[vlen - 1]))
		vlen--;
	if (vlen == 0 || ntokens <= 0)
		return CRF_ALIGN_NONE;

	/* 1: byte for byte, starting and ending on token boundaries */
	for (int32_t i = 0; i < ntokens && *nspans < max_spans; i++)
	{
		uint64_t	target = (uint64_t) tokens[i].start + vlen;
		int32_t		j = i;

		while (j < ntokens && tokens[j].end < target)
			j++;
		if (j < ntokens && tokens[j].end == target &&
			memcmp(text + tokens[i].start, value, vlen) == 0)
		{
			AddSpan(i, j, first, last, max_spans, nspans);
			i = j;
		}
	}
	if (*nspans > 0)
		return CRF_ALIGN_EXACT;

	/* 2: the value's tokens, ignoring ASCII case */
	nv = CrfTokenize(value, vlen, vtok, ALIGN_MAX_VALUE_TOKENS);
	if (nv > 0 && nv < ALIGN_MAX_VALUE_TOKENS)
	{
		for (int32_t i = 0; i + nv <= ntokens && *nspans < max_spans; i++)
		{
			bool		match = true;

			for (int32_t k = 0; k < nv && match; k++)
			{
				const CrfToken *a = &tokens[i + k];
				const CrfToken *b = &vtok[k];
				uint32_t	la = a->end - a->start;

				if (la != b->end - b->start)
					match = false;
				for (uint32_t c = 0; c < la && match; c++)
					if (Lower((unsigned char) text[a->start + c]) !=
						Lower((unsigned char) value[b->start + c]))
						match = false;
			}
			if (match)
			{
				AddSpan(i, i + nv - 1, first, last, max_spans, nspans);
				i += nv - 1;
			}
		}
		if (*nspans > 0)
			return CRF_ALIGN_FOLD;
	}

	/* 3: one token with the same number */
	{
		char		want[NUMBER_MAX];
		size_t		wlen;

		if (vlen < NUMBER_MAX && CanonicalNumber(value, vlen, want, &wlen))
		{
			for (int32_t i = 0; i < ntokens && *nspans < max_spans; i++)
			{
				char		have[NUMBER_MAX];
				size_t		hlen;
				uint32_t	tl = tokens[i].end - tokens[i].start;

				if (tl < NUMBER_MAX &&
					CanonicalNumber(text + tokens[i].start, tl, have, &hlen) &&
					hlen == wlen && memcmp(have, want, wlen) == 0)
					AddSpan(i, i, first, last, max_spans, nspans);
			}
			if (*nspans > 0)
				return CRF_ALIGN_NUMBER;
		}
	}
	return CRF_ALIGN_NONE;
}
