/*
 * linear_features.c
 *		The linear kind's options and features: normalize the text, split it
 *		into tokens, and hash word n-grams and character n-grams (inside
 *		words, padded with a space at each end as scikit-learn's char_wb
 *		does) into buckets, each family with its own seed so that the word
 *		"ab" and the character bigram "ab" land apart.
 */
#include <math.h>
#include <utf8proc.h>

#include "linear_internal.h"

void
LinearDefaults(LinearOptions *o)
{
	memset(o, 0, sizeof(*o));
	TextNormalizeDefaults(&o->normalize);
	o->ngram_min = 1;
	o->ngram_max = 3;
	o->char_min = 0;
	o->char_max = 0;
	o->buckets = 1 << 20;
	o->min_df = 2;
	o->sublinear_tf = true;
	o->nb = false;
	o->c = 0.0;
	o->l1 = 0.0;
	o->folds = 5;
	o->max_iterations = 200;
	o->quantize = true;
	o->seed = 0;
}

TriageStatus
LinearCheckOptions(const LinearOptions *o, char *errbuf, size_t errlen)
{
	if (o->ngram_min < 1 || o->ngram_min > LINEAR_MAX_NGRAM)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "ngram_min must be between 1 and %d, not %d", LINEAR_MAX_NGRAM, o->ngram_min);
	if (o->ngram_max < o->ngram_min || o->ngram_max > LINEAR_MAX_NGRAM)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "ngram_max must be between ngram_min (%d) and %d, not %d",
						   o->ngram_min, LINEAR_MAX_NGRAM, o->ngram_max);
	if (o->char_min < 0 || o->char_min > LINEAR_MAX_CHAR_NGRAM)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "char_min must be 0 (no character n-grams) or between 1 and %d, not %d",
						   LINEAR_MAX_CHAR_NGRAM, o->char_min);
	if (o->char_min == 0 && o->char_max != 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "char_max must be 0 when char_min is 0, not %d", o->char_max);
	if (o->char_min > 0 && (o->char_max < o->char_min || o->char_max > LINEAR_MAX_CHAR_NGRAM))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "char_max must be between char_min (%d) and %d, not %d",
						   o->char_min, LINEAR_MAX_CHAR_NGRAM, o->char_max);
	if (o->buckets < LINEAR_MIN_BUCKETS || o->buckets > LINEAR_MAX_BUCKETS)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "buckets must be between %d and %d, not %d",
						   LINEAR_MIN_BUCKETS, LINEAR_MAX_BUCKETS, o->buckets);
	if (o->min_df < 1 || o->min_df > 1000000)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "min_df must be between 1 and 1000000, not %d", o->min_df);
	if (!(o->c == 0.0 || (o->c >= 1e-6 && o->c <= 1e6)))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "c must be 0 (chosen by cross-validation) or between 1e-06 and 1e+06, not %g", o->c);
	if (!(o->l1 >= 0.0 && o->l1 <= 1e6))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "l1 must be between 0 and 1e+06, not %g", o->l1);
	if (o->folds < 2 || o->folds > 20)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "folds must be between 2 and 20, not %d", o->folds);
	if (o->max_iterations < 1 || o->max_iterations > 10000)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "max_iterations must be between 1 and 10000, not %d", o->max_iterations);
	return TRIAGE_OK;
}

const char *
LinearBadLabel(const char *name, size_t len)
{
	size_t		i = 0;

	if (name == NULL || len == 0)
		return "is empty";
	if (len > LINEAR_MAX_LABEL_BYTES)
		return "is longer than 1024 bytes";
	if (memchr(name, '\0', len) != NULL)
		return "contains a zero byte";
	while (i < len)
	{
		utf8proc_int32_t cp;
		utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *) name + i,
											  (utf8proc_ssize_t) (len - i), &cp);

		if (r <= 0)
			return "is not valid UTF-8";
		i += (size_t) r;
	}
	return NULL;
}

bool
LinearReserve(const TriageAllocator *a, void **buf, size_t *cap, size_t need, size_t elem)
{
	size_t		newcap;
	void	   *p;

	if (need <= *cap && *buf != NULL)
		return true;
	newcap = *cap < 64 ? 64 : *cap;
	while (newcap < need)
	{
		if (newcap > SIZE_MAX / 2)
			return false;
		newcap *= 2;
	}
	p = TriageAllocArray(a, newcap, elem);
	if (p == NULL)
		return false;
	TriageFree(a, *buf);
	*buf = p;
	*cap = newcap;
	return true;
}

/* ---------------------------------------------------------------------
 * Hashing
 * --------------------------------------------------------------------- */

#define FNV_OFFSET 0x811C9DC5u
#define FNV_PRIME 0x01000193u

/* a different start per feature family: word n-grams of each n, character n-grams of each n */
#define SEED_WORD(n) (0x9E3779B97F4A7C15ULL * (uint64_t) (n))
#define SEED_CHAR(n) (0xC2B2AE3D27D4EB4FULL * (uint64_t) (n) + 0x165667B19E3779F9ULL)

static inline uint32_t
Fnv1a(const char *p, size_t n)
{
	uint32_t	h = FNV_OFFSET;

	for (size_t i = 0; i < n; i++)
	{
		h ^= (unsigned char) p[i];
		h *= FNV_PRIME;
	}
	return h;
}

/* Map a 64-bit hash onto 0 .. buckets - 1 without a division */
static inline uint32_t
Bucket(uint64_t h, uint32_t buckets)
{
	return (uint32_t) (((TriageFmix64(h) >> 32) * (uint64_t) buckets) >> 32);
}

static inline bool
IsBlank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

TriageStatus
LinearHashFeatures(const LinearOptions *o, LinearScratch *s, const char *text, size_t len,
				   size_t *nids, char *errbuf, size_t errlen)
{
	const TriageAllocator *a = &s->allocator;
	size_t		tlen;
	size_t		ntok = 0;
	size_t		need;
	size_t		charwork = 0;
	size_t		k = 0;
	TriageStatus st;
	uint32_t	buckets = (uint32_t) o->buckets;
	int32_t		nwords = o->ngram_max - o->ngram_min + 1;
	int32_t		nchars = o->char_min > 0 ? o->char_max - o->char_min + 1 : 0;

	*nids = 0;
	st = TextNormalizePrefix(&o->normalize, text, len, s->max_tokens, a, &s->text, &s->text_cap,
							 &tlen, &s->truncated, errbuf, errlen);
	if (st != TRIAGE_OK)
		return st;

	/* token hashes; a token count at most half the bytes plus one */
	if (!LinearReserve(a, (void **) &s->tokens, &s->tokens_cap, tlen / 2 + 1, sizeof(uint32_t)))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory hashing %zu bytes", tlen);
	for (size_t i = 0; i < tlen;)
	{
		size_t		start;

		while (i < tlen && IsBlank(s->text[i]))
			i++;
		if (i == tlen)
			break;
		start = i;
		while (i < tlen && !IsBlank(s->text[i]))
			i++;
		s->tokens[ntok++] = Fnv1a(s->text + start, i - start);
		if (nchars > 0)
			charwork += (i - start < LINEAR_MAX_WORD_BYTES ? i - start : LINEAR_MAX_WORD_BYTES) + 2;
	}

	need = ntok * (size_t) nwords + charwork * (size_t) nchars + 1;
	if (!LinearReserve(a, (void **) &s->ids, &s->ids_cap, need, sizeof(uint32_t)))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory hashing %zu tokens", ntok);

	for (int32_t n = o->ngram_min; n <= o->ngram_max; n++)
	{
		uint64_t	seed = SEED_WORD(n);

		for (size_t i = 0; i + (size_t) n <= ntok; i++)
		{
			uint64_t	h = seed;

			for (int32_t j = 0; j < n; j++)
				h = (h ^ s->tokens[i + j]) * 0x100000001B3ULL;
			s->ids[k++] = Bucket(h, buckets);
		}
	}

	if (nchars > 0)
	{
		char		word[LINEAR_MAX_WORD_BYTES + 2];
		uint16_t	starts[LINEAR_MAX_WORD_BYTES + 3];

		for (size_t i = 0; i < tlen;)
		{
			size_t		start,
						wlen;
			int32_t		ncp = 0;

			while (i < tlen && IsBlank(s->text[i]))
				i++;
			if (i == tlen)
				break;
			start = i;
			while (i < tlen && !IsBlank(s->text[i]))
				i++;
			wlen = i - start;
			if (wlen > LINEAR_MAX_WORD_BYTES)
			{
				/* cut on a character boundary */
				wlen = LINEAR_MAX_WORD_BYTES;
				while (wlen > 1 && ((unsigned char) s->text[start + wlen] & 0xC0) == 0x80)
					wlen--;
			}
			word[0] = ' ';
			memcpy(word + 1, s->text + start, wlen);
			word[wlen + 1] = ' ';
			/* character starts: bytes that are not UTF-8 continuation bytes */
			for (size_t b = 0; b < wlen + 2; b++)
				if (b == 0 || b == wlen + 1 || ((unsigned char) word[b] & 0xC0) != 0x80)
					starts[ncp++] = (uint16_t) b;
			starts[ncp] = (uint16_t) (wlen + 2);
			for (int32_t n = o->char_min; n <= o->char_max; n++)
			{
				uint64_t	seed = SEED_CHAR(n);

				for (int32_t c = 0; c + n <= ncp; c++)
				{
					uint32_t	h32 = Fnv1a(word + starts[c], starts[c + n] - starts[c]);

					s->ids[k++] = Bucket(seed ^ h32, buckets);
				}
			}
		}
	}
	*nids = k;
	return TRIAGE_OK;
}

/* ---------------------------------------------------------------------
 * Sorting bucket ids: a quicksort with insertion sort for short runs,
 * inline on uint32 (qsort's callback costs more than the compare)
 * --------------------------------------------------------------------- */

static void
SortU32(uint32_t *a, size_t n)
{
	while (n > 16)
	{
		uint32_t	pivot;
		size_t		i = 0,
					j = n - 1;
		uint32_t	x = a[0],
					y = a[n / 2],
					z = a[n - 1];

		/* median of three */
		pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
		for (;;)
		{
			while (a[i] < pivot)
				i++;
			while (a[j] > pivot)
				j--;
			if (i >= j)
				break;
			{
				uint32_t	t = a[i];

				a[i] = a[j];
				a[j] = t;
			}
			i++;
			j--;
		}
		/* recurse into the smaller part, loop on the larger */
		if (j + 1 < n - j - 1)
		{
			SortU32(a, j + 1);
			a += j + 1;
			n -= j + 1;
		}
		else
		{
			SortU32(a + j + 1, n - j - 1);
			n = j + 1;
		}
	}
	for (size_t i = 1; i < n; i++)
	{
		uint32_t	v = a[i];
		size_t		j = i;

		while (j > 0 && a[j - 1] > v)
		{
			a[j] = a[j - 1];
			j--;
		}
		a[j] = v;
	}
}

size_t
LinearSortCount(uint32_t *ids, size_t n, float *counts)
{
	size_t		out = 0;

	if (n == 0)
		return 0;
	SortU32(ids, n);
	for (size_t i = 0; i < n;)
	{
		size_t		j = i + 1;

		while (j < n && ids[j] == ids[i])
			j++;
		ids[out] = ids[i];
		counts[out] = (float) (j - i);
		out++;
		i = j;
	}
	return out;
}
