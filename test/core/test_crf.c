/*
 * test_crf.c
 *		Unit tests of the CRF field extractor core (crf.h), meant to run
 *		under ASan/UBSan.  Prints one TAP line per check.
 *
 * Build: gcc -O2 -g -fsanitize=address,undefined -Isrc test/core/test_crf.c \
 *		src/crf_*.c src/triage_core.c -llbfgs -lm -o test_crf
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crf_internal.h"
#include "check.h"


/* ---------------------------------------------------------------------
 * Tokenizer
 * --------------------------------------------------------------------- */

/* Tokenize s from an exactly-sized heap copy (so ASan sees any overread) */
static int32_t
Tok(const char *s, size_t len, CrfToken *tokens, int32_t max)
{
	char	   *copy = malloc(len ? len : 1);
	int32_t		n;

	memcpy(copy, s, len);
	n = CrfTokenize(copy, len, tokens, max);
	free(copy);
	return n;
}

/* Whether s tokenizes to exactly the '|'-separated list want */
static int
TokensAre(const char *s, const char *want)
{
	CrfToken	tokens[64];
	int32_t		n = Tok(s, strlen(s), tokens, 64);
	char		got[512];
	size_t		o = 0;

	for (int32_t i = 0; i < n; i++)
	{
		if (i > 0)
			got[o++] = '|';
		memcpy(got + o, s + tokens[i].start, tokens[i].end - tokens[i].start);
		o += tokens[i].end - tokens[i].start;
	}
	got[o] = '\0';
	if (strcmp(got, want) != 0)
		printf("# tokens of \"%s\": got \"%s\", want \"%s\"\n", s, got, want);
	return strcmp(got, want) == 0;
}

static void
TestTokenizer(void)
{
	CrfToken   *tokens = malloc(CRF_MAX_TOKENS * sizeof(CrfToken));
	char	   *big;
	size_t		bigsize = 1 << 20;
	int32_t		n;
	clock_t		t0;

	Check(TokensAre("Order A-10293 costs $1,299.00.", "Order|A-10293|costs|$|1,299.00|."),
		  "tokenizer keeps A-10293 and 1,299.00 whole, splits $ and the final period");
	Check(TokensAre("mail john.doe@example.com, now", "mail|john.doe@example.com|,|now"),
		  "tokenizer keeps an e-mail address whole");
	Check(TokensAre("on 2024-03-05 or 05/03/2024 call 123-4567", "on|2024-03-05|or|05/03/2024|call|123-4567"),
		  "tokenizer keeps dates and phone numbers whole");
	Check(TokensAre("a--b (x) \"q\"", "a|-|-|b|(|x|)|\"|q|\""),
		  "tokenizer splits punctuation not between two alphanumerics");
	Check(TokensAre("Total:\t$5\n\nEnd", "Total|:|$|5|End"),
		  "tokenizer: trailing ':' splits, white space separates");
	Check(TokensAre("caf\xc3\xa9 M\xc3\xbcller \xe2\x82\xac" "5", "caf\xc3\xa9|M\xc3\xbcller|\xe2\x82\xac|5"),
		  "tokenizer: UTF-8 letters join words, the euro sign is its own token");
	Check(TokensAre("a\xc2\xa0" "b", "a|b"), "tokenizer: no-break space separates");
	Check(TokensAre("\xff\xfe" "abc", "\xff|\xfe|abc"), "tokenizer: invalid bytes are tokens of their own");
	Check(TokensAre("ab\xe2\x82", "ab|\xe2|\x82"), "tokenizer: a UTF-8 sequence cut at the end does not overread");
	Check(TokensAre("x\xc0\xaf" "y", "x|\xc0|\xaf|y"), "tokenizer: overlong UTF-8 is invalid");
	Check(TokensAre("\xed\xa0\x80", "\xed|\xa0|\x80"), "tokenizer: UTF-8 surrogates are invalid");

	n = Tok("", 0, tokens, 64);
	Check(n == 0, "tokenizer: empty text has no tokens");
	n = Tok(" \t\n ", 4, tokens, 64);
	Check(n == 0, "tokenizer: white space only has no tokens");
	Check(TokensAre("!?...", "!|?|.|.|."), "tokenizer: punctuation only gives one token per character");
	n = CrfTokenize("a b c d e", 9, tokens, 3);
	Check(n == 3, "tokenizer stops at max_tokens");
	{
		const char *s = "x  A-1";

		n = CrfTokenize(s, strlen(s), tokens, 8);
		Check(n == 2 && tokens[1].start == 3 && tokens[1].end == 6, "tokenizer reports byte offsets");
	}

	/* 1 MB: words, then one run without spaces, then random bytes */
	big = malloc(bigsize);
	for (size_t i = 0; i < bigsize; i++)
		big[i] = (i % 6 == 5) ? ' ' : (char) ('a' + i % 26);
	t0 = clock();
	n = Tok(big, bigsize, tokens, CRF_MAX_TOKENS);
	Check(n == CRF_MAX_TOKENS, "tokenizer caps a 1 MB text at CRF_MAX_TOKENS tokens");
	memset(big, 'a', bigsize);
	n = Tok(big, bigsize, tokens, CRF_MAX_TOKENS);
	Check(n == 1 && tokens[0].end == bigsize, "tokenizer: 1 MB without a space is one token");
	srand(7);
	for (size_t i = 0; i < bigsize; i++)
		big[i] = (char) (rand() & 0xff);
	n = Tok(big, bigsize, tokens, CRF_MAX_TOKENS);
	{
		int			inside = n > 0;

		for (int32_t i = 0; i < n; i++)
			if (tokens[i].start >= tokens[i].end || tokens[i].end > bigsize ||
				(i > 0 && tokens[i].start < tokens[i - 1].end))
				inside = 0;
		Check(inside, "tokenizer: 1 MB of random bytes gives ordered tokens inside the text");
	}
	Check((double) (clock() - t0) / CLOCKS_PER_SEC < 2.0, "tokenizer: three 1 MB texts in under 2 s");
	free(big);
	free(tokens);
}

/* ---------------------------------------------------------------------
 * Alignment
 * --------------------------------------------------------------------- */

/* The text covered by the first span value aligns to, or "" */
static CrfAlignKind
Align(const char *text, const char *value, char *got, int32_t *nspans)
{
	CrfToken	tokens[128];
	int32_t		n = CrfTokenize(text, strlen(text), tokens, 128);
	int32_t		first[4],
				last[4];
	CrfAlignKind kind = CrfAlignValue(text, tokens, n, value, strlen(value), first, last, 4, nspans);

	got[0] = '\0';
	if (*nspans > 0)
	{
		size_t		s = tokens[first[0]].start,
					e = tokens[last[0]].end;

		memcpy(got, text + s, e - s);
		got[e - s] = '\0';
	}
	return kind;
}

static void
TestAlign(void)
{
	char		got[256];
	int32_t		ns;
	CrfAlignKind k;

	k = Align("Order A-10293 shipped", "A-10293", got, &ns);
	Check(k == CRF_ALIGN_EXACT && strcmp(got, "A-10293") == 0 && ns == 1, "align: exact match");
	k = Align("Order A-102934 shipped", "A-10293", got, &ns);
	Check(k == CRF_ALIGN_NONE, "align: a value inside a longer token does not match");
	k = Align("Dear JOHN SMITH, hi", "John Smith", got, &ns);
	Check(k == CRF_ALIGN_FOLD && strcmp(got, "JOHN SMITH") == 0, "align: case-insensitive");
	k = Align("Dear John  \n Smith, hi", "John Smith", got, &ns);
	Check(k == CRF_ALIGN_FOLD && strcmp(got, "John  \n Smith") == 0, "align: white-space-insensitive");
	k = Align("Dear John Smith", " John\tSmith ", got, &ns);
	Check(k != CRF_ALIGN_NONE && strcmp(got, "John Smith") == 0, "align: value's own white space ignored");
	k = Align("Total: $1,299.00 today", "1299", got, &ns);
	Check(k == CRF_ALIGN_NUMBER && strcmp(got, "1,299.00") == 0, "align: 1299 finds 1,299.00");
	k = Align("Total: 1299 EUR", "1,299.00", got, &ns);
	Check(k == CRF_ALIGN_NUMBER && strcmp(got, "1299") == 0, "align: 1,299.00 finds 1299");
	k = Align("Total: 1299.50 EUR", "1,299.5", got, &ns);
	Check(k == CRF_ALIGN_NUMBER && strcmp(got, "1299.50") == 0, "align: 1,299.5 finds 1299.50");
	k = Align("Total: 1299.51 EUR", "1299.5", got, &ns);
	Check(k == CRF_ALIGN_NONE, "align: different numbers do not match");
	k = Align("Ref A-1 and again A-1.", "A-1", got, &ns);
	Check(k == CRF_ALIGN_EXACT && ns == 2, "align: every occurrence is found");
	k = Align("nothing here", "Jane Doe", got, &ns);
	Check(k == CRF_ALIGN_NONE && ns == 0, "align: missing value is reported");
	k = Align("something", "", got, &ns);
	Check(k == CRF_ALIGN_NONE, "align: empty value");
}

/* ---------------------------------------------------------------------
 * A small fixture
 * --------------------------------------------------------------------- */

#define NFIX_FIELDS 5
static const char *fix_names[NFIX_FIELDS] = {"order_id", "amount", "email", "customer_name", "date"};

typedef struct FixRow
{
	char		text[512];
	char		values[NFIX_FIELDS][64];
	const char *vptr[NFIX_FIELDS];
} FixRow;

static uint64_t fix_state;

static uint32_t
FixRand(void)
{
	fix_state = fix_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t) (fix_state >> 33);
}

static void
MakeFixture(FixRow *rows, int n, uint64_t seed)
{
	static const char *first[] = {"John", "Maria", "Wei", "Aisha", "Carlos", "Emma", "Liam", "Sofia", "Noah", "Olivia"};
	static const char *last[] = {"Smith", "Garcia", "Chen", "Khan", "Lopez", "Brown", "Rossi", "Kim"};
	static const char *templates[] = {
		"Hi %4$s,\nThanks for order %1$s on %5$s. Total: $%2$s\nWe will write to %3$s.",
		"Order %1$s confirmed for %4$s (%3$s). Amount %2$s USD, date %5$s.",
		"Dear %4$s, your refund of %2$s for order %1$s was sent on %5$s. Reply to %3$s.",
	};

	fix_state = seed;
	for (int i = 0; i < n; i++)
	{
		FixRow	   *r = &rows[i];
		const char *fn = first[FixRand() % 10];
		const char *ln = last[FixRand() % 8];

		snprintf(r->values[0], 64, "%c-%05u", "ABX"[FixRand() % 3], FixRand() % 100000);
		snprintf(r->values[1], 64, "%u.%02u", 5 + FixRand() % 900, FixRand() % 100);
		snprintf(r->values[2], 64, "%c%s@example.com", fn[0] + 32, ln);
		snprintf(r->values[3], 64, "%s %s", fn, ln);
		snprintf(r->values[4], 64, "2024-%02u-%02u", 1 + FixRand() % 12, 1 + FixRand() % 28);
		snprintf(r->text, sizeof(r->text), templates[FixRand() % 3],
				 r->values[0], r->values[1], r->values[2], r->values[3], r->values[4]);
		for (int f = 0; f < NFIX_FIELDS; f++)
			r->vptr[f] = r->values[f];
	}
}

static void
ToExamples(FixRow *rows, int n, CrfExample *ex)
{
	for (int i = 0; i < n; i++)
	{
		ex[i].text = rows[i].text;
		ex[i].len = strlen(rows[i].text);
		ex[i].nfields = NFIX_FIELDS;
		ex[i].field_names = fix_names;
		ex[i].values = rows[i].vptr;
	}
}

/* Fraction of test fields extracted exactly */
static double
FixtureAccuracy(const CrfModel *model, FixRow *rows, int n)
{
	CrfWorkspace ws;
	CrfResult	res[CRF_MAX_FIELDS];
	int32_t		nres;
	int			right = 0;
	char		err[256];

	CrfWorkspaceInit(&ws, NULL);
	for (int i = 0; i < n; i++)
	{
		if (CrfExtract(model, &ws, rows[i].text, strlen(rows[i].text), res, &nres, err, sizeof(err)) != TRIAGE_OK)
			continue;
		for (int k = 0; k < nres; k++)
		{
			const char *name = CrfFieldName(model, res[k].field);

			for (int f = 0; f < NFIX_FIELDS; f++)
				if (strcmp(name, fix_names[f]) == 0 &&
					strlen(rows[i].values[f]) == res[k].end - res[k].start &&
					memcmp(rows[i].values[f], rows[i].text + res[k].start, res[k].end - res[k].start) == 0)
					right++;
		}
	}
	CrfWorkspaceFree(&ws);
	return (double) right / (n * NFIX_FIELDS);
}

/* An allocator that refuses anything over a limit, to catch huge allocations from small inputs */
typedef struct Limited
{
	size_t		limit;
	size_t		largest;
} Limited;

static void *
LimitedAlloc(void *context, size_t size)
{
	Limited    *l = context;

	if (size > l->largest)
		l->largest = size;
	if (size > l->limit)
		return NULL;
	return malloc(size ? size : 1);
}

static void
LimitedFree(void *context, void *p)
{
	(void) context;
	free(p);
}

static int	cancel_after = -1;

static bool
CancelHook(void)
{
	if (cancel_after < 0)
		return false;
	if (cancel_after == 0)
		return true;
	cancel_after--;
	return false;
}

/*
 * The state score of label y for token t, summed from the model's stored
 * weights (keys, offsets, labels, weights, scales) by a linear search:
 * independent of the decoder's lookup tables and its per-token cache.
 */
static double
PlainStateScore(const CrfModel *m, const char *text, const CrfToken *tok,
				const CrfTokenInfo *info, int32_t n, int32_t t, int32_t y)
{
	uint64_t	hashes[CRF_MAX_TOKEN_FEATURES];
	int			nfixed;
	int			nh = CrfTokenFeatures(m->features, text, tok, info, n, t, hashes, &nfixed);
	double		s = 0.0;

	for (int h = 0; h < nh; h++)
		for (int64_t i = 0; i < m->nfeatures; i++)
			if (m->keys[i] == hashes[h])
				for (uint32_t k = m->offsets[i]; k < m->offsets[i + 1]; k++)
					if (m->labels[k] == y)
						s += (double) m->scales[i] * m->weights[k];
	return s;
}

/* The score of label path y[0..n), or -inf if the BIO constraints forbid it */
static double
PathScore(const CrfModel *m, double state[][CRF_MAX_LABELS], const int32_t *y, int32_t n)
{
	int32_t		L = m->nlabels;
	double		s;

	if (!CrfAllowed(-1, y[0]))
		return -INFINITY;
	s = m->start[y[0]] + state[0][y[0]] + m->end[y[n - 1]];
	for (int32_t t = 1; t < n; t++)
	{
		if (!CrfAllowed(y[t - 1], y[t]))
			return -INFINITY;
		s += m->trans[y[t - 1] * L + y[t]] + state[t][y[t]];
	}
	return s;
}

/* The next label path after y[0..n), as an odometer; false (and all 0) after the last */
static bool
NextPath(int32_t *y, int32_t n, int32_t L)
{
	int32_t		t = 0;

	while (t < n && ++y[t] == L)
		y[t++] = 0;
	return t < n;
}

/*
 * Every field CrfExtract finds in a short text against enumerating all
 * label paths: the span is one of the best path's, and its confidence is
 * the exact posterior probability of that span.
 */
static void
TestPosteriors(const CrfModel *m)
{
	static const char *texts[] = {
		"Order A-12345 paid", "John Smith $12.50", "mail x@y.com now", "on 2024-03-05 Jane",
		"ref B-77 for $9", "Zoe Quinn wrote"
	};
	int32_t		L = m->nlabels;
	int			spans_ok = 1,
				conf_ok = 1,
				checked = 0;
	double		worst = 0.0;
	CrfWorkspace ws;

	CrfWorkspaceInit(&ws, NULL);
	for (size_t x = 0; x < sizeof(texts) / sizeof(texts[0]); x++)
	{
		const char *text = texts[x];
		CrfToken	tok[8];
		CrfTokenInfo info[8];
		double		state[8][CRF_MAX_LABELS];
		int32_t		n = CrfTokenize(text, strlen(text), tok, 8);
		int32_t		y[8] = {0};
		int32_t		best[8] = {0};
		double		best_score = -INFINITY,
					z = 0.0;
		double		span_mass[CRF_MAX_FIELDS] = {0};
		CrfResult	r[CRF_MAX_FIELDS];
		int32_t		first[CRF_MAX_FIELDS],
					last[CRF_MAX_FIELDS];
		int32_t		nr;

		if (n < 1 || n > 5)
			continue;
		CrfPrepareTokens(text, tok, n, info);
		CrfApplyLexicon(m, info, n);
		for (int32_t t = 0; t < n; t++)
			for (int32_t l = 0; l < L; l++)
				state[t][l] = PlainStateScore(m, text, tok, info, n, t, l);
		CrfExtract(m, &ws, text, strlen(text), r, &nr, NULL, 0);

		/* each extracted span as token indices */
		for (int32_t k = 0; k < nr; k++)
		{
			first[k] = -1;
			last[k] = -1;
			for (int32_t t = 0; t < n; t++)
			{
				if (tok[t].start == r[k].start)
					first[k] = t;
				if (tok[t].end == r[k].end)
					last[k] = t;
			}
		}

		/* the best path and its score, over every path */
		do
		{
			double		s = PathScore(m, state, y, n);

			if (s > best_score)
			{
				best_score = s;
				memcpy(best, y, sizeof(best));
			}
		} while (NextPath(y, n, L));

		/* again, summing exp(score - best) into Z and into each extracted span's mass */
		do
		{
			double		p = exp(PathScore(m, state, y, n) - best_score);

			z += p;
			for (int32_t k = 0; k < nr; k++)
			{
				int32_t		f = r[k].field;
				bool		match = first[k] >= 0 && last[k] >= first[k] && y[first[k]] == CRF_LABEL_B(f);

				for (int32_t t = first[k] + 1; t <= last[k] && match; t++)
					match = y[t] == CRF_LABEL_I(f);
				if (match && last[k] + 1 < n)
					match = y[last[k] + 1] != CRF_LABEL_I(f);
				if (match)
					span_mass[k] += p;
			}
		} while (NextPath(y, n, L));

		for (int32_t k = 0; k < nr; k++)
		{
			int32_t		f = r[k].field;
			bool		on_path = false;
			double		exact = span_mass[k] / z;

			for (int32_t t = 0; t < n; t++)
				if (tok[t].start == r[k].start && best[t] == CRF_LABEL_B(f))
					on_path = true;
			spans_ok &= on_path;
			if (fabs(exact - r[k].confidence) > worst)
				worst = fabs(exact - r[k].confidence);
			conf_ok &= fabs(exact - r[k].confidence) <= 1e-4;
			checked++;
		}
	}
	CrfWorkspaceFree(&ws);
	printf("# posteriors: %d spans, largest confidence error %.2g\n", checked, worst);
	Check(checked >= 4 && spans_ok, "extract: each span found starts a B of the best path (all paths enumerated)");
	Check(checked >= 4 && conf_ok, "extract: each confidence is the exact posterior of its span, within 1e-4");
}

/*
 * The decoder's per-token cache: texts extracted in one workspace, where
 * later texts hit the sums cached for earlier ones, give what a fresh
 * workspace gives each text.
 */
static void
TestTokenCache(const CrfModel *m, FixRow *rows, int n)
{
	CrfWorkspace warm;
	int			same = 1;

	CrfWorkspaceInit(&warm, NULL);
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < n; i++)
		{
			CrfWorkspace cold;
			CrfResult	r1[CRF_MAX_FIELDS],
						r2[CRF_MAX_FIELDS];
			int32_t		n1,
						n2;

			CrfWorkspaceInit(&cold, NULL);
			CrfExtract(m, &warm, rows[i].text, strlen(rows[i].text), r1, &n1, NULL, 0);
			CrfExtract(m, &cold, rows[i].text, strlen(rows[i].text), r2, &n2, NULL, 0);
			CrfWorkspaceFree(&cold);
			if (n1 != n2 || memcmp(r1, r2, n1 * sizeof(CrfResult)) != 0)
				same = 0;
		}
	CrfWorkspaceFree(&warm);
	Check(same, "extract: a workspace's cached token sums change no result");
}

static int	interrupt_checks = 0;

static void
CountInterruptCheck(void)
{
	interrupt_checks++;
}

/*
 * The caller's limits: a workspace told to read fewer tokens than the model
 * extracts only from those; after a long text, trimming gives its arrays
 * back and the next extraction is the same; the tokenizer lets cancel in
 * on a text that is one long token.
 */
static void
TestLimits(const CrfModel *m, FixRow *rows, int n)
{
	CrfWorkspace ws;
	CrfResult	r1[CRF_MAX_FIELDS],
				r2[CRF_MAX_FIELDS];
	int32_t		n1,
				n2;
	int			inside = 1,
				same = 1;
	CrfToken	tokens[8];

	CrfWorkspaceInit(&ws, NULL);
	ws.max_tokens = 3;
	for (int i = 0; i < n; i++)
	{
		size_t		len = strlen(rows[i].text);
		int32_t		nt = CrfTokenize(rows[i].text, len, tokens, 3);
		char	   *prefix;

		CrfExtract(m, &ws, rows[i].text, len, r1, &n1, NULL, 0);
		for (int k = 0; k < n1; k++)
			if (nt == 3 && r1[k].end > tokens[2].end)
				inside = 0;
		/* the same as the text cut after its third token */
		prefix = strndup(rows[i].text, nt > 0 ? tokens[nt - 1].end : 0);
		ws.max_tokens = 0;
		CrfExtract(m, &ws, prefix, strlen(prefix), r2, &n2, NULL, 0);
		ws.max_tokens = 3;
		if (n1 != n2 || memcmp(r1, r2, n1 * sizeof(CrfResult)) != 0)
			same = 0;
		free(prefix);
	}
	Check(inside, "limits: a workspace's max_tokens 3 finds fields in the first 3 tokens only");
	Check(same, "limits: ... as if the text ended after them");

	ws.max_tokens = 0;
	{
		size_t		blen = 1 << 20;
		char	   *big = malloc(blen);
		size_t		freed;

		for (size_t i = 0; i < blen; i++)
			big[i] = "Order A-12345 for John Smith \n$12.50 x@y.com "[i % 45];
		CrfExtract(m, &ws, big, blen, r1, &n1, NULL, 0);
		freed = CrfWorkspaceTrim(&ws, 64 * 1024);
		Check(freed > 64 * 1024 && ws.token_capacity == 0 && ws.scores == NULL,
			  "limits: trimming gives back what a long text made the arrays grow to");
		Check(CrfWorkspaceTrim(&ws, 64 * 1024) == 0, "limits: ... once");
		CrfExtract(m, &ws, big, blen, r2, &n2, NULL, 0);
		Check(n1 == n2 && memcmp(r1, r2, n1 * sizeof(CrfResult)) == 0,
			  "limits: ... and the next extraction is the same");
		CrfExtract(m, &ws, rows[0].text, strlen(rows[0].text), r1, &n1, NULL, 0);
		Check(CrfWorkspaceTrim(&ws, 1 << 30) == 0, "limits: small arrays are kept");

		/* one token of 3 MB, then 3 MB of spaces: checked every megabyte */
		free(big);
		blen = 3 << 20;
		big = malloc(blen);
		memset(big, 'x', blen);
		interrupt_checks = 0;
		TriageInterruptHook = CountInterruptCheck;
		CrfExtract(m, &ws, big, blen, r1, &n1, NULL, 0);
		Check(interrupt_checks == 2, "limits: the tokenizer checks for cancel inside a 3 MB token");
		memset(big, ' ', blen);
		interrupt_checks = 0;
		CrfExtract(m, &ws, big, blen, r1, &n1, NULL, 0);
		TriageInterruptHook = NULL;
		Check(interrupt_checks == 2, "limits: ... and in 3 MB of spaces");
		free(big);
	}
	CrfWorkspaceFree(&ws);
}

static void
TestTrainAndModel(void)
{
	enum
	{
		NTRAIN = 150, NTEST = 60
	};
	FixRow	   *train = calloc(NTRAIN, sizeof(FixRow));
	FixRow	   *test = calloc(NTEST, sizeof(FixRow));
	CrfExample *ex = calloc(NTRAIN, sizeof(CrfExample));
	CrfTrainOptions opt;
	CrfTrainReport rep;
	CrfModel   *model = NULL,
			   *loaded = NULL;
	char		err[256];
	TriageStatus st;
	uint8_t    *bytes = NULL,
			   *bytes2 = NULL,
			   *copy;
	size_t		len = 0,
				len2 = 0;
	CrfWorkspace ws;
	CrfResult	r1[CRF_MAX_FIELDS],
				r2[CRF_MAX_FIELDS];
	int32_t		n1,
				n2;

	MakeFixture(train, NTRAIN, 1);
	MakeFixture(test, NTEST, 2);
	ToExamples(train, NTRAIN, ex);
	CrfTrainDefaults(&opt);
	opt.max_iterations = 60;

	st = CrfTrain(&opt, ex, NTRAIN, NULL, &model, &rep, err, sizeof(err));
	Check(st == TRIAGE_OK && model != NULL, "train on the fixture");
	if (st != TRIAGE_OK)
	{
		printf("# %s\n", err);
		return;
	}
	Check(rep.values == NTRAIN * NFIX_FIELDS && rep.unaligned == 0, "train: every fixture value aligned");
	Check(CrfFieldCount(model) == NFIX_FIELDS && strcmp(CrfFieldName(model, 0), "amount") == 0 &&
		  CrfFieldName(model, NFIX_FIELDS) == NULL && CrfFindField(model, "email", 5) >= 0 &&
		  CrfFindField(model, "nope", 4) == -1,
		  "field names are sorted and can be looked up");
	{
		double		acc = FixtureAccuracy(model, test, NTEST);

		printf("# fixture accuracy %.3f\n", acc);
		Check(acc >= 0.97, "extract: held-out fixture texts' fields found exactly");
	}
	TestPosteriors(model);
	TestTokenCache(model, test, NTEST);
	TestLimits(model, test, NTEST);

	/* save / load */
	st = CrfSave(model, NULL, &bytes, &len, err, sizeof(err));
	Check(st == TRIAGE_OK && len > 64, "save");
	st = CrfLoad(bytes, len, NULL, &loaded, err, sizeof(err));
	Check(st == TRIAGE_OK, "load what was saved");
	if (st != TRIAGE_OK)
	{
		printf("# %s\n", err);
		return;
	}
	st = CrfSave(loaded, NULL, &bytes2, &len2, err, sizeof(err));
	Check(st == TRIAGE_OK && len2 == len && memcmp(bytes, bytes2, len) == 0, "save(load(bytes)) == bytes");
	free(bytes2);
	{
		int			same = 1;

		CrfWorkspaceInit(&ws, NULL);
		for (int i = 0; i < NTEST && same; i++)
		{
			CrfExtract(model, &ws, test[i].text, strlen(test[i].text), r1, &n1, err, sizeof(err));
			CrfExtract(loaded, &ws, test[i].text, strlen(test[i].text), r2, &n2, err, sizeof(err));
			if (n1 != n2 || memcmp(r1, r2, n1 * sizeof(CrfResult)) != 0)
				same = 0;
			for (int k = 0; k < n1; k++)
				if (!(r1[k].confidence >= 0.0f && r1[k].confidence <= 1.0f) || r1[k].end > strlen(test[i].text))
					same = 0;
		}
		Check(same, "loaded model extracts identically (fields, offsets, confidences in [0,1])");

		CrfExtract(loaded, &ws, "", 0, r1, &n1, err, sizeof(err));
		Check(n1 == 0, "extract: empty text gives no fields");
		CrfExtract(loaded, &ws, "!!! ... ???", 11, r1, &n1, err, sizeof(err));
		Check(n1 == 0, "extract: punctuation-only text gives no fields");
		CrfExtract(loaded, &ws, "   \n\t ", 6, r1, &n1, err, sizeof(err));
		Check(n1 == 0, "extract: white-space-only text gives no fields");
		{
			size_t		blen = 1 << 20;
			char	   *big = malloc(blen);
			int			inside = 1;

			for (size_t i = 0; i < blen; i++)
				big[i] = "Order A-12345 for John Smith \n$12.50 x@y.com "[i % 45];
			st = CrfExtract(loaded, &ws, big, blen, r1, &n1, err, sizeof(err));
			for (int k = 0; k < n1; k++)
				if (r1[k].end > blen || r1[k].start >= r1[k].end)
					inside = 0;
			Check(st == TRIAGE_OK && inside, "extract: a 1 MB text is handled (bounded by max_tokens)");
			for (size_t i = 0; i < blen; i++)
				big[i] = (char) (rand() & 0xff);
			st = CrfExtract(loaded, &ws, big, blen, r1, &n1, err, sizeof(err));
			Check(st == TRIAGE_OK, "extract: 1 MB of random bytes");
			free(big);
		}
		CrfWorkspaceFree(&ws);
	}

	/* the loader against truncation and corruption, on a small model */
	free(bytes);
	{
		CrfModel   *small = NULL;
		CrfTrainOptions so = opt;

		so.features = CRF_FEAT_WORD | CRF_FEAT_SHAPE | CRF_FEAT_LEXICON;
		so.max_iterations = 20;
		st = CrfTrain(&so, ex, 12, NULL, &small, NULL, err, sizeof(err));
		bytes = NULL;
		if (st == TRIAGE_OK)
			st = CrfSave(small, NULL, &bytes, &len, err, sizeof(err));
		CrfFree(small);
		printf("# small model: %zu bytes\n", len);
		Check(st == TRIAGE_OK && len < 20000, "a small model for the loader tests");
		if (st != TRIAGE_OK)
			return;
	}
	{
		int			all_rejected = 1;

		for (size_t cut = 0; cut < len; cut++)
		{
			CrfModel   *m = NULL;

			copy = malloc(cut ? cut : 1);
			memcpy(copy, bytes, cut);
			if (CrfLoad(copy, cut, NULL, &m, err, sizeof(err)) == TRIAGE_OK || m != NULL)
				all_rejected = 0;
			CrfFree(m);
			free(copy);
		}
		Check(all_rejected, "load rejects every truncation of a model");
	}
	{
		int			all_rejected = 1;
		int			no_trouble = 1;
		Limited		lim = {len * 8 + 65536, 0};
		TriageAllocator la = {LimitedAlloc, LimitedFree, &lim};

		srand(11);
		copy = malloc(len);
		for (int trial = 0; trial < 3000; trial++)
		{
			CrfModel   *m = NULL;
			int			flips = 1 + rand() % 4;

			memcpy(copy, bytes, len);
			for (int k = 0; k < flips; k++)
				copy[rand() % len] ^= (uint8_t) (1 + rand() % 255);
			if (CrfLoad(copy, len, &la, &m, err, sizeof(err)) == TRIAGE_OK)
				all_rejected = 0;
			CrfFree(m);

			/* the same with the checksum repaired, so the structural checks are what stops it */
			{
				uint64_t	c = CrfChecksum(copy, len - 8);

				for (int b = 0; b < 8; b++)
					copy[len - 8 + b] = (uint8_t) (c >> (8 * b));
			}
			m = NULL;
			if (CrfLoad(copy, len, &la, &m, err, sizeof(err)) == TRIAGE_OK)
			{
				CrfWorkspace w2;

				CrfWorkspaceInit(&w2, NULL);
				for (int i = 0; i < 3; i++)
					if (CrfExtract(m, &w2, test[i].text, strlen(test[i].text), r1, &n1, err, sizeof(err)) != TRIAGE_OK)
						no_trouble = 0;
				CrfWorkspaceFree(&w2);
			}
			else if (err[0] == '\0')
				no_trouble = 0;
			CrfFree(m);
		}
		free(copy);
		Check(all_rejected, "load rejects 3000 randomly corrupted models (checksum)");
		Check(no_trouble, "corrupted models with a repaired checksum: rejected with a message or usable");
		Check(lim.largest <= len * 8 + 65536, "load never allocates more than a small multiple of the input");
	}
	{
		/* a header claiming huge counts, checksum repaired */
		CrfModel   *m = NULL;
		uint64_t	c;

		copy = malloc(len);
		memcpy(copy, bytes, len);
		for (int b = 0; b < 8; b++)
			copy[24 + b] = 0xff;	/* nfeatures */
		c = CrfChecksum(copy, len - 8);
		for (int b = 0; b < 8; b++)
			copy[len - 8 + b] = (uint8_t) (c >> (8 * b));
		st = CrfLoad(copy, len, NULL, &m, err, sizeof(err));
		Check(st == TRIAGE_INVALID_MODEL && m == NULL && strstr(err, "exceed") != NULL,
			  "load rejects a header with absurd counts before allocating");
		memcpy(copy, bytes, len);
		copy[4] = 99;
		st = CrfLoad(copy, len, NULL, &m, err, sizeof(err));
		Check(st == TRIAGE_UNSUPPORTED && strstr(err, "version") != NULL, "load reports an unknown version");
		copy[0] = 'X';
		st = CrfLoad(copy, len, NULL, &m, err, sizeof(err));
		Check(st == TRIAGE_INVALID_MODEL && strstr(err, "magic") != NULL, "load rejects a bad magic number");
		st = CrfLoad(NULL, 0, NULL, &m, err, sizeof(err));
		Check(st == TRIAGE_INVALID_MODEL, "load rejects NULL");
		free(copy);
	}

	/* determinism */
	free(bytes);
	bytes = NULL;
	CrfSave(model, NULL, &bytes, &len, err, sizeof(err));
	{
		CrfModel   *again = NULL;

		st = CrfTrain(&opt, ex, NTRAIN, NULL, &again, NULL, err, sizeof(err));
		bytes2 = NULL;
		if (st == TRIAGE_OK)
			CrfSave(again, NULL, &bytes2, &len2, err, sizeof(err));
		Check(st == TRIAGE_OK && bytes2 != NULL && len2 == len && memcmp(bytes, bytes2, len) == 0,
			  "training is deterministic for a seed");
		free(bytes2);
		CrfFree(again);
	}

	/* cancellation inside liblbfgs: stops, frees, reports */
	{
		CrfModel   *m = NULL;

		TriageCancelPendingHook = CancelHook;
		cancel_after = 5;
		st = CrfTrain(&opt, ex, NTRAIN, NULL, &m, &rep, err, sizeof(err));
		TriageCancelPendingHook = NULL;
		Check(st != TRIAGE_OK && m == NULL && rep.canceled && strstr(err, "canceled") != NULL,
			  "training stops cleanly when a cancel is pending");
	}

	/* an unalignable value is counted and skipped, the row still used */
	{
		FixRow		extra = train[0];
		CrfExample	e2[2];
		CrfModel   *m = NULL;

		strcpy(extra.values[1], "77777.77");
		for (int f = 0; f < NFIX_FIELDS; f++)
			extra.vptr[f] = extra.values[f];
		e2[0] = ex[1];
		ToExamples(&extra, 1, &e2[1]);
		st = CrfTrain(&opt, e2, 2, NULL, &m, &rep, err, sizeof(err));
		Check(st == TRIAGE_OK && rep.unaligned == 1 && rep.unaligned_by_field[0] == 1 &&
			  rep.values == 2 * NFIX_FIELDS, "train reports an unaligned value and uses the rest");
		CrfFree(m);
	}

	free(bytes);
	CrfFree(model);
	CrfFree(loaded);
	free(train);
	free(test);
	free(ex);
}

/* ---------------------------------------------------------------------
 * Options and bad training input
 * --------------------------------------------------------------------- */

static void
TestOptions(void)
{
	CrfTrainOptions o;
	char		err[256];
	const char *names[] = {"a"};
	const char *values[] = {"x"};
	CrfExample	ex = {"x y", 3, 1, names, values};
	CrfModel   *m = NULL;
	CrfTrainDefaults(&o);
	Check(CrfCheckOptions(&o, err, sizeof(err)) == TRIAGE_OK, "default options are valid");

#define BAD(field, value) \
	do { \
		CrfTrainDefaults(&o); \
		o.field = value; \
		Check(CrfCheckOptions(&o, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT && \
			  strstr(err, #field) != NULL, "option check rejects " #field " = " #value); \
	} while (0)
	BAD(max_iterations, 0);
	BAD(max_iterations, 100000);
	BAD(l2, -1.0);
	BAD(l2, NAN);
	BAD(epsilon, -0.5);
	BAD(delta, 2.0);
	BAD(min_feature_count, 0);
	BAD(max_parameters, 10);
	BAD(context_dropout, 0.95);
	BAD(lexicon_folds, 1);
	BAD(lexicon_folds, 21);
	BAD(lexicon_min_ratio, 1.5);
	BAD(max_tokens, 5);
	BAD(max_tokens, CRF_MAX_TOKENS + 1);
	BAD(features, 0);
	BAD(features, 0x80000000u);

	CrfTrainDefaults(&o);
	Check(CrfTrain(&o, &ex, 0, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT,
		  "train rejects zero examples");
	{
		const char *bad[] = {""};

		ex.field_names = bad;
		Check(CrfTrain(&o, &ex, 1, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT &&
			  strstr(err, "empty") != NULL, "train rejects an empty field name");
	}
	{
		const char *bad[] = {"a_field_name_that_is_much_longer_than_sixty_three_bytes_in_total_yes"};

		ex.field_names = bad;
		Check(CrfTrain(&o, &ex, 1, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT &&
			  strstr(err, "longer") != NULL, "train rejects a field name over 63 bytes");
	}
	{
		const char *dup[] = {"a", "a"};
		const char *vals[] = {"x", "y"};

		ex.field_names = dup;
		ex.values = vals;
		ex.nfields = 2;
		Check(CrfTrain(&o, &ex, 1, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT &&
			  strstr(err, "twice") != NULL, "train rejects a field named twice in one example");
	}
	{
		static char namebuf[70][8];
		const char *many[70];
		const char *vals[70];

		for (int i = 0; i < 70; i++)
		{
			snprintf(namebuf[i], 8, "f%d", i);
			many[i] = namebuf[i];
			vals[i] = "x";
		}
		ex.field_names = many;
		ex.values = vals;
		ex.nfields = 70;
		Check(CrfTrain(&o, &ex, 1, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT &&
			  strstr(err, "64") != NULL, "train rejects more than 64 fields");
	}
	{
		const char *vals[] = {"absent"};

		ex.field_names = names;
		ex.values = vals;
		ex.nfields = 1;
		Check(CrfTrain(&o, &ex, 1, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT &&
			  strstr(err, "could be found") != NULL, "train rejects data where no value aligns");
	}
	o.l2 = -3;
	ex.values = values;
	Check(CrfTrain(&o, &ex, 1, NULL, &m, NULL, err, sizeof(err)) == TRIAGE_INVALID_ARGUMENT && m == NULL,
		  "train checks its options");
}

int
main(void)
{
	TestTokenizer();
	TestAlign();
	TestOptions();
	TestTrainAndModel();
	printf("1..%d\n", checks);
	if (failures)
		printf("# %d of %d checks failed\n", failures, checks);
	return failures ? 1 : 0;
}
