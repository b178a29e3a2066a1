/*
 * crf_train.c
 *		Train a linear-chain CRF field extractor with L-BFGS (liblbfgs).
 *
 * Steps: tokenize every text and align its values to token spans (BIO
 * labels); build the value lexicon out of fold (a training text sees only
 * what the other folds' values looked like, so the model learns how far to
 * trust the lexicon on values it has not seen); extract hashed features,
 * with seeded dropout of context words; keep a weight only for (feature,
 * label) pairs seen in training, CRFsuite-style, raising the minimum
 * feature count until they fit max_parameters; minimise NLL + l2 * |w|^2
 * with scaled forward-backward; quantize state weights to int8 per feature.
 *
 * Design note on cancellation: liblbfgs allocates with malloc, so nothing
 * may longjmp out of its callbacks.  They poll TRIAGE_CANCEL_PENDING()
 * instead and make liblbfgs stop; CrfTrain then frees everything and only
 * then calls TRIAGE_CHECK_INTERRUPTS().
 */
#include <lbfgs.h>
#include <math.h>
#include <stdlib.h>

#include "crf_internal.h"

#define ALIGN_MAX_SPANS 4

void
CrfTrainDefaults(CrfTrainOptions *options)
{
	memset(options, 0, sizeof(*options));
	options->max_iterations = 150;
	options->l2 = 0.05;
	options->epsilon = 1e-5;
	options->delta = 1e-5;
	options->min_feature_count = 1;
	options->max_parameters = 2000000;
	options->seed = 0;
	options->context_dropout = 0.4;
	options->lexicon_folds = 5;
	options->lexicon_min_ratio = 0.3;
	options->max_tokens = CRF_MAX_TOKENS;
	options->features = CRF_FEAT_DEFAULT;
}

TriageStatus
CrfCheckOptions(const CrfTrainOptions *o, char *errbuf, size_t errlen)
{
	if (o->max_iterations < 1 || o->max_iterations > 10000)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "max_iterations must be between 1 and 10000, not %d", o->max_iterations);
	if (!(o->l2 >= 0.0 && o->l2 <= 1e4))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "l2 must be between 0 and 10000, not %g", o->l2);
	if (!(o->epsilon >= 0.0 && o->epsilon <= 1.0))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "epsilon must be between 0 and 1, not %g", o->epsilon);
	if (!(o->delta >= 0.0 && o->delta <= 1.0))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "delta must be between 0 and 1, not %g", o->delta);
	if (o->min_feature_count < 1 || o->min_feature_count > 1000)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "min_feature_count must be between 1 and 1000, not %d", o->min_feature_count);
	if (o->max_parameters < 1000 || o->max_parameters > 50000000)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "max_parameters must be between 1000 and 50000000, not %lld",
						   (long long) o->max_parameters);
	if (!(o->context_dropout >= 0.0 && o->context_dropout <= 0.9))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "context_dropout must be between 0 and 0.9, not %g", o->context_dropout);
	if (o->lexicon_folds != 0 && (o->lexicon_folds < 2 || o->lexicon_folds > 20))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "lexicon_folds must be 0 or between 2 and 20, not %d", o->lexicon_folds);
	if (!(o->lexicon_min_ratio >= 0.0 && o->lexicon_min_ratio <= 1.0))
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "lexicon_min_ratio must be between 0 and 1, not %g", o->lexicon_min_ratio);
	if (o->max_tokens < 16 || o->max_tokens > CRF_MAX_TOKENS)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "max_tokens must be between 16 and %d, not %d", CRF_MAX_TOKENS, o->max_tokens);
	if (o->features == 0 || (o->features & ~(uint32_t) CRF_FEAT_ALL) != 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "features must be a non-empty set of feature groups (mask 0x%x), not 0x%x",
						   CRF_FEAT_ALL, o->features);
	return TRIAGE_OK;
}

/* ---------------------------------------------------------------------
 * A growable map from 64-bit keys to dense ids 0, 1, 2, ...
 * --------------------------------------------------------------------- */

typedef struct KeyMap
{
	uint64_t   *keys;			/* by id */
	int64_t		n;
	int64_t		capacity;
	uint32_t   *slots;			/* id + 1, 0 empty */
	uint64_t	mask;
	const TriageAllocator *alloc;
} KeyMap;

static void
KeyMapFree(KeyMap *m)
{
	TriageFree(m->alloc, m->keys);
	TriageFree(m->alloc, m->slots);
	m->keys = NULL;
	m->slots = NULL;
}

static bool
KeyMapGrow(KeyMap *m)
{
	int64_t		capacity = m->capacity ? m->capacity * 2 : 4096;
	uint64_t	nslots = (uint64_t) capacity * 2;
	uint64_t   *keys;
	uint32_t   *slots;

	if (capacity >= (int64_t) UINT32_MAX / 2)
		return false;
	keys = TriageAllocArray(m->alloc, (size_t) capacity, sizeof(uint64_t));
	slots = TriageAllocArray(m->alloc, (size_t) nslots, sizeof(uint32_t));
	if (keys == NULL || slots == NULL)
	{
		TriageFree(m->alloc, keys);
		TriageFree(m->alloc, slots);
		return false;
	}
	if (m->n > 0)
		memcpy(keys, m->keys, (size_t) m->n * sizeof(uint64_t));
	memset(slots, 0, (size_t) nslots * sizeof(uint32_t));
	for (int64_t i = 0; i < m->n; i++)
	{
		uint64_t	s = TriageFmix64(keys[i]) & (nslots - 1);

		while (slots[s] != 0)
			s = (s + 1) & (nslots - 1);
		slots[s] = (uint32_t) (i + 1);
	}
	KeyMapFree(m);
	m->keys = keys;
	m->slots = slots;
	m->capacity = capacity;
	m->mask = nslots - 1;
	return true;
}

/* The slot of key (linear probing): the one holding it, or the empty one where it would go */
static inline uint64_t
KeyMapSlot(const KeyMap *m, uint64_t key)
{
	uint64_t	s = TriageFmix64(key) & m->mask;

	while (m->slots[s] != 0 && m->keys[m->slots[s] - 1] != key)
		s = (s + 1) & m->mask;
	return s;
}

/* id of key, or -1 */
static inline int64_t
KeyMapFind(const KeyMap *m, uint64_t key)
{
	if (m->n == 0)
		return -1;
	return (int64_t) m->slots[KeyMapSlot(m, key)] - 1;
}

/* id of key, added if new (*added set); -1 when out of memory */
static inline int64_t
KeyMapAdd(KeyMap *m, uint64_t key, bool *added)
{
	uint64_t	s;

	*added = false;
	if (m->n == m->capacity && !KeyMapGrow(m))
		return -1;
	s = KeyMapSlot(m, key);
	if (m->slots[s] != 0)
		return m->slots[s] - 1;
	m->keys[m->n] = key;
	m->slots[s] = (uint32_t) (m->n + 1);
	*added = true;
	return m->n++;
}

/* Grow *array (of elem-byte elements) to hold at least need, doubling */
static bool
Reserve(const TriageAllocator *alloc, void **array, int64_t *capacity, int64_t need, size_t elem)
{
	int64_t		cap = *capacity ? *capacity : 1024;
	void	   *p;

	if (need <= *capacity)
		return true;
	while (cap < need)
		cap *= 2;
	p = TriageAllocArray(alloc, (size_t) cap, elem);
	if (p == NULL)
		return false;
	if (*capacity > 0)
		memcpy(p, *array, (size_t) *capacity * elem);
	TriageFree(alloc, *array);
	*array = p;
	*capacity = cap;
	return true;
}

/* ---------------------------------------------------------------------
 * Training state
 * --------------------------------------------------------------------- */

typedef struct Trainer
{
	const CrfTrainOptions *opt;
	const CrfExample *examples;
	int64_t		nexamples;
	const TriageAllocator *alloc;
	CrfTrainReport *report;

	int32_t		nfields;
	int32_t		nlabels;
	char		names[CRF_MAX_FIELDS][CRF_MAX_FIELD_NAME + 1];

	/* all tokens of all texts: sequence s has tokens seq_start[s] .. seq_start[s + 1] */
	int64_t    *seq_start;
	CrfToken   *tokens;
	int64_t		tokens_cap;
	uint8_t    *gold;
	int64_t		gold_cap;
	int64_t		ntokens;
	int32_t		max_seq;
	uint8_t    *fold;

	/* value lexicon */
	KeyMap		lexpairs;		/* CrfMix(word, field) */
	int32_t    *lexpair_counts; /* per pair: folds + 1 counts, the last the total */
	int64_t		lexpair_cap;
	KeyMap		lexwords;		/* words occurring inside any value */
	int32_t    *lexword_counts; /* per word: folds + 1 counts of all occurrences */
	int64_t		lexword_cap;

	/* features: token i has feat_ids[feat_start[i] .. feat_start[i + 1]) */
	KeyMap		feats;
	int32_t    *feat_count;
	uint64_t   *feat_labels;	/* per feature: label_words words of label bits */
	int64_t		feat_cap;
	int64_t		feat_labels_cap;
	int32_t		label_words;
	int64_t    *feat_start;
	uint32_t   *feat_ids;
	int64_t		feat_ids_cap;
	int64_t		nfeat_ids;

	/* parameters: kept feature i has pairs pair_off[i] .. pair_off[i + 1] */
	int64_t		nkept;
	uint64_t   *kept_keys;
	int64_t    *pair_off;
	uint8_t    *pair_label;
	int64_t		npairs;
	int64_t		ntrans;			/* offset of the transitions in x */
	int64_t		nparams;

	/* evaluation scratch */
	double	   *score;
	double	   *alpha;
	double	   *beta;
	double	   *scale;
	double	   *exp_trans;
	double	   *exp_start;
	double	   *exp_end;

	bool		canceled;
	int32_t		iterations;
	double		last_fx;
} Trainer;

static void
TrainerFree(Trainer *tr)
{
	const TriageAllocator *a = tr->alloc;

	TriageFree(a, tr->seq_start);
	TriageFree(a, tr->tokens);
	TriageFree(a, tr->gold);
	TriageFree(a, tr->fold);
	KeyMapFree(&tr->lexpairs);
	TriageFree(a, tr->lexpair_counts);
	KeyMapFree(&tr->lexwords);
	TriageFree(a, tr->lexword_counts);
	KeyMapFree(&tr->feats);
	TriageFree(a, tr->feat_count);
	TriageFree(a, tr->feat_labels);
	TriageFree(a, tr->feat_start);
	TriageFree(a, tr->feat_ids);
	TriageFree(a, tr->kept_keys);
	TriageFree(a, tr->pair_off);
	TriageFree(a, tr->pair_label);
	TriageFree(a, tr->score);
	TriageFree(a, tr->alpha);
	TriageFree(a, tr->beta);
	TriageFree(a, tr->scale);
	TriageFree(a, tr->exp_trans);
	TriageFree(a, tr->exp_start);
	TriageFree(a, tr->exp_end);
}

static int
CompareNames(const void *a, const void *b)
{
	return strcmp((const char *) a, (const char *) b);
}

/* Collect and check the field names of all examples, sorted */
static TriageStatus
CollectFields(Trainer *tr, char *errbuf, size_t errlen)
{
	for (int64_t e = 0; e < tr->nexamples; e++)
	{
		const CrfExample *ex = &tr->examples[e];

		if (ex->nfields < 0 || (ex->nfields > 0 && (ex->field_names == NULL || ex->values == NULL)))
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							   "example %lld has an invalid field list", (long long) e + 1);
		if (ex->text == NULL && ex->len > 0)
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							   "example %lld has no text", (long long) e + 1);
		for (int32_t i = 0; i < ex->nfields; i++)
		{
			const char *name = ex->field_names[i];
			size_t		len;
			int32_t		f;

			if (name == NULL || (len = strlen(name)) == 0)
				return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
								   "example %lld has an empty field name", (long long) e + 1);
			if (len > CRF_MAX_FIELD_NAME)
				return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
								   "field name \"%.20s...\" is longer than %d bytes",
								   name, CRF_MAX_FIELD_NAME);
			for (int32_t j = 0; j < i; j++)
				if (strcmp(ex->field_names[j], name) == 0)
					return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
									   "example %lld names field \"%s\" twice", (long long) e + 1, name);
			for (f = 0; f < tr->nfields; f++)
				if (strcmp(tr->names[f], name) == 0)
					break;
			if (f == tr->nfields)
			{
				if (tr->nfields == CRF_MAX_FIELDS)
					return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
									   "more than %d distinct field names", CRF_MAX_FIELDS);
				memcpy(tr->names[f], name, len + 1);
				tr->nfields++;
			}
		}
	}
	if (tr->nfields == 0)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "the training examples name no fields");
	qsort(tr->names, (size_t) tr->nfields, sizeof(tr->names[0]), CompareNames);
	tr->nlabels = 1 + 2 * tr->nfields;
	tr->label_words = (tr->nlabels + 63) / 64;
	return TRIAGE_OK;
}

static int32_t
FieldIndex(const Trainer *tr, const char *name)
{
	int32_t		lo = 0,
				hi = tr->nfields - 1;

	while (lo <= hi)
	{
		int32_t		mid = (lo + hi) / 2;
		int			c = strcmp(tr->names[mid], name);

		if (c == 0)
			return mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/* Tokenize every text and label its aligned values */
static TriageStatus
TokenizeAndAlign(Trainer *tr, char *errbuf, size_t errlen)
{
	CrfTrainReport *rep = tr->report;
	CrfToken   *buf = TriageAllocArray(tr->alloc, CRF_MAX_TOKENS, sizeof(CrfToken));
	TriageRng	rng = {tr->opt->seed ^ 0x5EED0F01DULL};

	tr->seq_start = TriageAllocArray(tr->alloc, (size_t) tr->nexamples + 1, sizeof(int64_t));
	tr->fold = TriageAllocArray(tr->alloc, (size_t) tr->nexamples + 1, 1);
	if (buf == NULL || tr->seq_start == NULL || tr->fold == NULL)
	{
		TriageFree(tr->alloc, buf);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory tokenizing examples");
	}
	tr->ntokens = 0;
	for (int64_t e = 0; e < tr->nexamples; e++)
	{
		const CrfExample *ex = &tr->examples[e];
		int32_t		n = CrfTokenize(ex->text, ex->len, buf, tr->opt->max_tokens);
		uint8_t    *g;

		if ((e & 255) == 0)
			TRIAGE_CHECK_INTERRUPTS();
		tr->seq_start[e] = tr->ntokens;
		tr->fold[e] = tr->opt->lexicon_folds > 0 ? (uint8_t) (TriageRngNext(&rng) % (uint64_t) tr->opt->lexicon_folds) : 0;
		if (!Reserve(tr->alloc, (void **) &tr->tokens, &tr->tokens_cap, tr->ntokens + n, sizeof(CrfToken)) ||
			!Reserve(tr->alloc, (void **) &tr->gold, &tr->gold_cap, tr->ntokens + n, 1))
		{
			TriageFree(tr->alloc, buf);
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory tokenizing examples");
		}
		if (n > 0)
			memcpy(tr->tokens + tr->ntokens, buf, (size_t) n * sizeof(CrfToken));
		g = tr->gold + tr->ntokens;
		memset(g, CRF_LABEL_O, (size_t) n);
		if (n == tr->opt->max_tokens && ex->len > buf[n - 1].end)
		{
			/* anything after the last token but white space means it was cut */
			for (size_t i = buf[n - 1].end; i < ex->len; i++)
				if (ex->text[i] != ' ' && ex->text[i] != '\n' && ex->text[i] != '\t' && ex->text[i] != '\r')
				{
					rep->truncated++;
					break;
				}
		}
		for (int32_t i = 0; i < ex->nfields; i++)
		{
			const char *value = ex->values[i];
			int32_t		f = FieldIndex(tr, ex->field_names[i]);
			int32_t		first[ALIGN_MAX_SPANS],
						last[ALIGN_MAX_SPANS],
						nspans = 0,
						used = 0;
			CrfAlignKind kind;

			if (value == NULL || value[0] == '\0')
				continue;
			rep->values++;
			kind = CrfAlignValue(ex->text, buf, n, value, strlen(value), first, last,
								 ALIGN_MAX_SPANS, &nspans);
			for (int32_t s = 0; s < nspans; s++)
			{
				bool		free_span = true;

				for (int32_t t = first[s]; t <= last[s]; t++)
					if (g[t] != CRF_LABEL_O)
						free_span = false;
				if (!free_span)
					continue;	/* another field holds these tokens */
				g[first[s]] = (uint8_t) CRF_LABEL_B(f);
				for (int32_t t = first[s] + 1; t <= last[s]; t++)
					g[t] = (uint8_t) CRF_LABEL_I(f);
				used++;
			}
			if (used == 0)
			{
				rep->unaligned++;
				rep->unaligned_by_field[f]++;
			}
			else if (kind == CRF_ALIGN_EXACT)
				rep->aligned_exact++;
			else if (kind == CRF_ALIGN_FOLD)
				rep->aligned_fold++;
			else
				rep->aligned_number++;
		}
		tr->ntokens += n;
		if (n > tr->max_seq)
			tr->max_seq = n;
	}
	tr->seq_start[tr->nexamples] = tr->ntokens;
	rep->tokens = tr->ntokens;
	TriageFree(tr->alloc, buf);
	return TRIAGE_OK;
}

/* ---------------------------------------------------------------------
 * Value lexicon
 * --------------------------------------------------------------------- */

static inline uint64_t
TokenWord(const Trainer *tr, const CrfExample *ex, int64_t i)
{
	return CrfHashLower(ex->text + tr->tokens[i].start, tr->tokens[i].end - tr->tokens[i].start);
}

/* Count, per fold, how often each word occurs inside field f and overall */
static TriageStatus
CountLexicon(Trainer *tr, char *errbuf, size_t errlen)
{
	int32_t		K = tr->opt->lexicon_folds;
	int32_t		stride = K + 1;

	tr->lexpairs.alloc = tr->alloc;
	tr->lexwords.alloc = tr->alloc;
	for (int pass = 0; pass < 2; pass++)
	{
		for (int64_t e = 0; e < tr->nexamples; e++)
		{
			const CrfExample *ex = &tr->examples[e];
			int32_t		fold = tr->fold[e];

			for (int64_t i = tr->seq_start[e]; i < tr->seq_start[e + 1]; i++)
			{
				uint8_t		y = tr->gold[i];
				uint64_t	w;
				bool		added;
				int64_t		id;

				if (pass == 0 && y == CRF_LABEL_O)
					continue;
				w = TokenWord(tr, ex, i);
				if (pass == 0)
				{
					int32_t		f = (y - 1) / 2;

					id = KeyMapAdd(&tr->lexpairs, CrfMix(w, (uint64_t) f), &added);
					if (id < 0 || !Reserve(tr->alloc, (void **) &tr->lexpair_counts, &tr->lexpair_cap,
										   (id + 1) * stride, sizeof(int32_t)))
						return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the lexicon");
					if (added)
						memset(tr->lexpair_counts + id * stride, 0, stride * sizeof(int32_t));
					tr->lexpair_counts[id * stride + fold]++;
					tr->lexpair_counts[id * stride + K]++;
					id = KeyMapAdd(&tr->lexwords, w, &added);
					if (id < 0 || !Reserve(tr->alloc, (void **) &tr->lexword_counts, &tr->lexword_cap,
										   (id + 1) * stride, sizeof(int32_t)))
						return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the lexicon");
					if (added)
						memset(tr->lexword_counts + id * stride, 0, stride * sizeof(int32_t));
				}
				else
				{
					id = KeyMapFind(&tr->lexwords, w);
					if (id >= 0)
					{
						tr->lexword_counts[id * stride + fold]++;
						tr->lexword_counts[id * stride + K]++;
					}
				}
			}
		}
	}
	return TRIAGE_OK;
}

/*
 * Fields whose values held word w, as seen from fold (K: all the data).
 * A word qualifies for f when it was inside f at least once outside the
 * fold and in at least lexicon_min_ratio of its occurrences there.
 */
static uint64_t
LexiconMask(const Trainer *tr, uint64_t w, int32_t fold)
{
	int32_t		K = tr->opt->lexicon_folds;
	int32_t		stride = K + 1;
	int64_t		wid = KeyMapFind(&tr->lexwords, w);
	uint64_t	mask = 0;
	double		total;

	if (wid < 0)
		return 0;
	total = tr->lexword_counts[wid * stride + K];
	if (fold < K)
		total -= tr->lexword_counts[wid * stride + fold];
	if (total <= 0)
		return 0;
	for (int32_t f = 0; f < tr->nfields; f++)
	{
		int64_t		pid = KeyMapFind(&tr->lexpairs, CrfMix(w, (uint64_t) f));
		double		inside;

		if (pid < 0)
			continue;
		inside = tr->lexpair_counts[pid * stride + K];
		if (fold < K)
			inside -= tr->lexpair_counts[pid * stride + fold];
		if (inside >= 1 && inside >= tr->opt->lexicon_min_ratio * total)
			mask |= (uint64_t) 1 << f;
	}
	return mask;
}

/* ---------------------------------------------------------------------
 * Features
 * --------------------------------------------------------------------- */

static TriageStatus
ExtractFeatures(Trainer *tr, char *errbuf, size_t errlen)
{
	CrfTokenInfo *info = TriageAllocArray(tr->alloc, (size_t) tr->max_seq + 1, sizeof(CrfTokenInfo));
	uint64_t	hashes[CRF_MAX_TOKEN_FEATURES];
	TriageRng	rng = {tr->opt->seed ^ 0xD50F0DULL};
	bool		lexicon = tr->opt->lexicon_folds > 0 && (tr->opt->features & CRF_FEAT_LEXICON);
	int32_t		W = tr->label_words;

	tr->feats.alloc = tr->alloc;
	tr->feat_start = TriageAllocArray(tr->alloc, (size_t) tr->ntokens + 1, sizeof(int64_t));
	if (info == NULL || tr->feat_start == NULL)
	{
		TriageFree(tr->alloc, info);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory extracting features");
	}
	tr->nfeat_ids = 0;
	for (int64_t e = 0; e < tr->nexamples; e++)
	{
		const CrfExample *ex = &tr->examples[e];
		int64_t		base = tr->seq_start[e];
		int32_t		n = (int32_t) (tr->seq_start[e + 1] - base);
		const CrfToken *tok = tr->tokens + base;

		if ((e & 255) == 0)
			TRIAGE_CHECK_INTERRUPTS();
		CrfPrepareTokens(ex->text, tok, n, info);
		if (lexicon)
			for (int32_t t = 0; t < n; t++)
				info[t].lex = LexiconMask(tr, info[t].word, tr->fold[e]);
		for (int32_t t = 0; t < n; t++)
		{
			int			nfixed;
			int			nh = CrfTokenFeatures(tr->opt->features, ex->text, tok, info, n, t, hashes, &nfixed);
			uint8_t		y = tr->gold[base + t];

			tr->feat_start[base + t] = tr->nfeat_ids;
			if (!Reserve(tr->alloc, (void **) &tr->feat_ids, &tr->feat_ids_cap,
						 tr->nfeat_ids + nh, sizeof(uint32_t)))
			{
				TriageFree(tr->alloc, info);
				return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory extracting features");
			}
			for (int h = 0; h < nh; h++)
			{
				bool		added;
				int64_t		id;

				if (h >= nfixed && tr->opt->context_dropout > 0 &&
					TriageRngUniform(&rng) < tr->opt->context_dropout)
					continue;
				id = KeyMapAdd(&tr->feats, hashes[h], &added);
				if (id < 0 ||
					!Reserve(tr->alloc, (void **) &tr->feat_count, &tr->feat_cap, id + 1, sizeof(int32_t)))
				{
					TriageFree(tr->alloc, info);
					return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory extracting features");
				}
				if (added)
				{
					/* feat_labels follows feat_cap, W words per feature */
					if (tr->feat_labels_cap < tr->feat_cap)
					{
						uint64_t   *nl = TriageAllocArray(tr->alloc, (size_t) tr->feat_cap * W, sizeof(uint64_t));

						if (nl == NULL)
						{
							TriageFree(tr->alloc, info);
							return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory extracting features");
						}
						if (tr->feat_labels != NULL)
						{
							memcpy(nl, tr->feat_labels, (size_t) id * W * sizeof(uint64_t));
							TriageFree(tr->alloc, tr->feat_labels);
						}
						tr->feat_labels = nl;
						tr->feat_labels_cap = tr->feat_cap;
					}
					tr->feat_count[id] = 0;
					memset(tr->feat_labels + id * W, 0, W * sizeof(uint64_t));
				}
				if (tr->feat_count[id] < INT32_MAX)
					tr->feat_count[id]++;
				tr->feat_labels[id * W + y / 64] |= (uint64_t) 1 << (y % 64);
				tr->feat_ids[tr->nfeat_ids++] = (uint32_t) id;
			}
		}
	}
	tr->feat_start[tr->ntokens] = tr->nfeat_ids;
	TriageFree(tr->alloc, info);
	return TRIAGE_OK;
}

static inline int
Popcount(const uint64_t *w, int32_t n)
{
	int			c = 0;

	for (int32_t i = 0; i < n; i++)
		c += __builtin_popcountll(w[i]);
	return c;
}

/*
 * Choose the minimum count that fits max_parameters, give kept features
 * their (feature, label) parameters and rewrite feat_ids to kept ids.
 */
static TriageStatus
SelectParameters(Trainer *tr, char *errbuf, size_t errlen)
{
	int64_t		nf = tr->feats.n;
	int32_t		W = tr->label_words;
	int32_t		L = tr->nlabels;
	int32_t		thr = tr->opt->min_feature_count;
	int64_t		budget = tr->opt->max_parameters - (int64_t) L * L - 2 * L;
	int64_t    *newid;
	int64_t		p;

	if (budget < 1)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						   "max_parameters %lld is too small for %d labels",
						   (long long) tr->opt->max_parameters, L);
	for (;;)
	{
		int64_t		pairs = 0;

		for (int64_t i = 0; i < nf; i++)
			if (tr->feat_count[i] >= thr)
				pairs += Popcount(tr->feat_labels + i * W, W);
		if (pairs <= budget)
			break;
		if (thr >= 1000000)
			return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
							   "cannot fit the features into max_parameters %lld",
							   (long long) tr->opt->max_parameters);
		thr = thr < 4 ? thr + 1 : thr + thr / 4;
	}
	tr->report->min_feature_count = thr;

	newid = TriageAllocArray(tr->alloc, (size_t) nf + 1, sizeof(int64_t));
	tr->pair_off = TriageAllocArray(tr->alloc, (size_t) nf + 1, sizeof(int64_t));
	tr->kept_keys = TriageAllocArray(tr->alloc, (size_t) nf + 1, sizeof(uint64_t));
	if (newid == NULL || tr->pair_off == NULL || tr->kept_keys == NULL)
	{
		TriageFree(tr->alloc, newid);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory selecting features");
	}
	tr->nkept = 0;
	p = 0;
	for (int64_t i = 0; i < nf; i++)
	{
		if (tr->feat_count[i] < thr)
		{
			newid[i] = -1;
			continue;
		}
		newid[i] = tr->nkept;
		tr->kept_keys[tr->nkept] = tr->feats.keys[i];
		tr->pair_off[tr->nkept] = p;
		p += Popcount(tr->feat_labels + i * W, W);
		tr->nkept++;
	}
	tr->pair_off[tr->nkept] = p;
	tr->npairs = p;
	tr->pair_label = TriageAlloc(tr->alloc, (size_t) p + 1);
	if (tr->pair_label == NULL)
	{
		TriageFree(tr->alloc, newid);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory selecting features");
	}
	for (int64_t i = 0; i < nf; i++)
	{
		int64_t		q;

		if (newid[i] < 0)
			continue;
		q = tr->pair_off[newid[i]];
		for (int32_t y = 0; y < L; y++)
			if (tr->feat_labels[i * W + y / 64] & ((uint64_t) 1 << (y % 64)))
				tr->pair_label[q++] = (uint8_t) y;
	}

	/* compact the per-token id lists in place */
	{
		int64_t		w = 0;

		for (int64_t t = 0; t < tr->ntokens; t++)
		{
			int64_t		s = tr->feat_start[t],
						e = tr->feat_start[t + 1];

			tr->feat_start[t] = w;
			for (int64_t k = s; k < e; k++)
				if (newid[tr->feat_ids[k]] >= 0)
					tr->feat_ids[w++] = (uint32_t) newid[tr->feat_ids[k]];
		}
		tr->feat_start[tr->ntokens] = w;
	}
	TriageFree(tr->alloc, newid);

	/* the counting structures are no longer needed */
	KeyMapFree(&tr->feats);
	TriageFree(tr->alloc, tr->feat_count);
	TriageFree(tr->alloc, tr->feat_labels);
	tr->feat_count = NULL;
	tr->feat_labels = NULL;

	tr->ntrans = tr->npairs;
	tr->nparams = tr->npairs + (int64_t) L * L + 2 * L;
	if (tr->nparams > INT32_MAX)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "too many parameters");
	tr->report->features = tr->nkept;
	tr->report->parameters = tr->nparams;
	return TRIAGE_OK;
}

/* ---------------------------------------------------------------------
 * Objective
 * --------------------------------------------------------------------- */

/* NLL of sequence s at x, adding its gradient into g */
static double
SequenceLoss(Trainer *tr, int64_t s, const double *x, double *g)
{
	int32_t		L = tr->nlabels;
	int64_t		base = tr->seq_start[s];
	int32_t		T = (int32_t) (tr->seq_start[s + 1] - base);
	const uint8_t *gold = tr->gold + base;
	const double *trans = x + tr->ntrans;
	const double *start = trans + L * L;
	const double *end = start + L;
	double	   *score = tr->score;
	double	   *alpha = tr->alpha;
	double	   *beta = tr->beta;
	double	   *scale = tr->scale;
	const double *E = tr->exp_trans;
	double		logz = 0.0,
				gold_score = 0.0,
				zend = 0.0;

	if (T == 0)
		return 0.0;

	/* state scores, then exp(score - max) in place */
	for (int32_t t = 0; t < T; t++)
	{
		double	   *row = score + (int64_t) t * L;
		double		m = -INFINITY;

		memset(row, 0, L * sizeof(double));
		for (int64_t k = tr->feat_start[base + t]; k < tr->feat_start[base + t + 1]; k++)
		{
			uint32_t	f = tr->feat_ids[k];

			for (int64_t q = tr->pair_off[f]; q < tr->pair_off[f + 1]; q++)
				row[tr->pair_label[q]] += x[q];
		}
		gold_score += row[gold[t]];
		for (int32_t y = 0; y < L; y++)
			if (row[y] > m)
				m = row[y];
		for (int32_t y = 0; y < L; y++)
			row[y] = exp(row[y] - m);
		logz += m;
	}
	gold_score += start[gold[0]] + end[gold[T - 1]];
	for (int32_t t = 1; t < T; t++)
		gold_score += trans[gold[t - 1] * L + gold[t]];

	/* scaled forward */
	{
		double		c = 0.0;

		for (int32_t y = 0; y < L; y++)
		{
			alpha[y] = tr->exp_start[y] * score[y];
			c += alpha[y];
		}
		scale[0] = c;
		for (int32_t y = 0; y < L; y++)
			alpha[y] /= c;
	}
	for (int32_t t = 1; t < T; t++)
	{
		double	   *a = alpha + (int64_t) t * L;
		const double *ap = a - L;
		const double *ps = score + (int64_t) t * L;
		double		c = 0.0;

		memset(a, 0, L * sizeof(double));
		for (int32_t i = 0; i < L; i++)
		{
			double		ai = ap[i];

			if (ai == 0.0)
				continue;
			for (int32_t j = 0; j < L; j++)
				a[j] += ai * E[i * L + j];
		}
		for (int32_t j = 0; j < L; j++)
		{
			a[j] *= ps[j];
			c += a[j];
		}
		scale[t] = c;
		for (int32_t j = 0; j < L; j++)
			a[j] /= c;
	}
	for (int32_t y = 0; y < L; y++)
		zend += alpha[(int64_t) (T - 1) * L + y] * tr->exp_end[y];
	for (int32_t t = 0; t < T; t++)
		logz += log(scale[t]);
	logz += log(zend);

	/* scaled backward */
	for (int32_t y = 0; y < L; y++)
		beta[(int64_t) (T - 1) * L + y] = tr->exp_end[y] / zend;
	for (int32_t t = T - 1; t > 0; t--)
	{
		const double *b = beta + (int64_t) t * L;
		const double *ps = score + (int64_t) t * L;
		double	   *bp = beta + (int64_t) (t - 1) * L;
		double		tmp[CRF_MAX_LABELS];

		for (int32_t j = 0; j < L; j++)
			tmp[j] = ps[j] * b[j] / scale[t];
		for (int32_t i = 0; i < L; i++)
		{
			double		sum = 0.0;

			for (int32_t j = 0; j < L; j++)
				sum += E[i * L + j] * tmp[j];
			bp[i] = sum;
		}
	}

	/* gradient: expected minus observed counts */
	for (int32_t t = 0; t < T; t++)
	{
		const double *a = alpha + (int64_t) t * L;
		const double *b = beta + (int64_t) t * L;
		double		marg[CRF_MAX_LABELS];

		for (int32_t y = 0; y < L; y++)
			marg[y] = a[y] * b[y];
		for (int64_t k = tr->feat_start[base + t]; k < tr->feat_start[base + t + 1]; k++)
		{
			uint32_t	f = tr->feat_ids[k];

			for (int64_t q = tr->pair_off[f]; q < tr->pair_off[f + 1]; q++)
			{
				uint8_t		y = tr->pair_label[q];

				g[q] += marg[y] - (y == gold[t] ? 1.0 : 0.0);
			}
		}
		if (t == 0)
			for (int32_t y = 0; y < L; y++)
				g[tr->ntrans + L * L + y] += marg[y];
		if (t == T - 1)
			for (int32_t y = 0; y < L; y++)
				g[tr->ntrans + L * L + L + y] += marg[y];
		if (t > 0)
		{
			const double *ap = alpha + (int64_t) (t - 1) * L;
			const double *ps = score + (int64_t) t * L;
			double	   *gt = g + tr->ntrans;
			double		tmp[CRF_MAX_LABELS];

			for (int32_t j = 0; j < L; j++)
				tmp[j] = ps[j] * b[j] / scale[t];
			for (int32_t i = 0; i < L; i++)
			{
				double		ai = ap[i];

				if (ai == 0.0)
					continue;
				for (int32_t j = 0; j < L; j++)
					gt[i * L + j] += ai * E[i * L + j] * tmp[j];
			}
			gt[gold[t - 1] * L + gold[t]] -= 1.0;
		}
	}
	g[tr->ntrans + L * L + gold[0]] -= 1.0;
	g[tr->ntrans + L * L + L + gold[T - 1]] -= 1.0;

	return logz - gold_score;
}

static lbfgsfloatval_t
Evaluate(void *instance, const lbfgsfloatval_t *x, lbfgsfloatval_t *g, const int n,
		 const lbfgsfloatval_t step)
{
	Trainer    *tr = instance;
	int32_t		L = tr->nlabels;
	double		fx = 0.0,
				norm = 0.0;
	float		trans[CRF_MAX_LABELS * CRF_MAX_LABELS];
	float		start[CRF_MAX_LABELS];
	float		end[CRF_MAX_LABELS];

	(void) step;
	memset(g, 0, (size_t) n * sizeof(double));
	if (tr->canceled)
		return tr->last_fx;

	/* exp of the transitions, clamped so a wild line-search step cannot overflow */
	for (int32_t i = 0; i < L * L; i++)
		trans[i] = (float) fmin(fmax(x[tr->ntrans + i], -50.0), 50.0);
	for (int32_t i = 0; i < L; i++)
	{
		start[i] = (float) fmin(fmax(x[tr->ntrans + L * L + i], -50.0), 50.0);
		end[i] = (float) fmin(fmax(x[tr->ntrans + L * L + L + i], -50.0), 50.0);
	}
	for (int32_t i = 0; i < L; i++)
	{
		tr->exp_start[i] = CrfAllowed(-1, i) ? exp(start[i]) : 0.0;
		tr->exp_end[i] = exp(end[i]);
		for (int32_t j = 0; j < L; j++)
			tr->exp_trans[i * L + j] = CrfAllowed(i, j) ? exp(trans[i * L + j]) : 0.0;
	}

	for (int64_t s = 0; s < tr->nexamples; s++)
	{
		if ((s & 63) == 0 && TRIAGE_CANCEL_PENDING())
		{
			tr->canceled = true;
			memset(g, 0, (size_t) n * sizeof(double));
			return tr->last_fx;
		}
		fx += SequenceLoss(tr, s, x, g);
	}
	for (int i = 0; i < n; i++)
	{
		norm += x[i] * x[i];
		g[i] += 2.0 * tr->opt->l2 * x[i];
	}
	fx += tr->opt->l2 * norm;
	if (!isfinite(fx))
		fx = 1e300;
	tr->last_fx = fx;
	return fx;
}

static int
Progress(void *instance, const lbfgsfloatval_t *x, const lbfgsfloatval_t *g,
		 const lbfgsfloatval_t fx, const lbfgsfloatval_t xnorm, const lbfgsfloatval_t gnorm,
		 const lbfgsfloatval_t step, int n, int k, int ls)
{
	Trainer    *tr = instance;

	(void) x;
	(void) g;
	(void) xnorm;
	(void) gnorm;
	(void) step;
	(void) n;
	(void) ls;
	tr->iterations = k;
	tr->last_fx = fx;
	if (tr->canceled || TRIAGE_CANCEL_PENDING())
	{
		tr->canceled = true;
		return 1;
	}
	return 0;
}

/* ---------------------------------------------------------------------
 * The model
 * --------------------------------------------------------------------- */

typedef struct LexEntry
{
	uint64_t	key;
	uint64_t	mask;
} LexEntry;

static int
CompareLex(const void *a, const void *b)
{
	const LexEntry *x = a,
			   *y = b;

	return x->key < y->key ? -1 : x->key > y->key;
}

static TriageStatus
BuildModel(Trainer *tr, const double *x, CrfModel **out, char *errbuf, size_t errlen)
{
	int32_t		L = tr->nlabels;
	CrfModel   *m = CrfModelAlloc(tr->alloc);
	int64_t		nf = 0,
				np = 0;
	TriageStatus st;

	*out = NULL;
	if (m == NULL)
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the model");
	m->nfields = tr->nfields;
	m->nlabels = L;
	memcpy(m->names, tr->names, sizeof(m->names));
	m->features = tr->opt->features;
	if (tr->opt->lexicon_folds == 0)
		m->features &= ~(uint32_t) CRF_FEAT_LEXICON;
	m->max_tokens = tr->opt->max_tokens;

	m->trans = TriageAllocArray(tr->alloc, (size_t) L * L, sizeof(float));
	m->start = TriageAllocArray(tr->alloc, L, sizeof(float));
	m->end = TriageAllocArray(tr->alloc, L, sizeof(float));
	m->keys = TriageAllocArray(tr->alloc, (size_t) tr->nkept + 1, sizeof(uint64_t));
	m->offsets = TriageAllocArray(tr->alloc, (size_t) tr->nkept + 1, sizeof(uint32_t));
	m->scales = TriageAllocArray(tr->alloc, (size_t) tr->nkept + 1, sizeof(float));
	m->labels = TriageAlloc(tr->alloc, (size_t) tr->npairs + 1);
	m->weights = TriageAlloc(tr->alloc, (size_t) tr->npairs + 1);
	if (!m->trans || !m->start || !m->end ||
		!m->keys || !m->offsets || !m->scales || !m->labels || !m->weights)
	{
		CrfFree(m);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the model");
	}
	for (int32_t i = 0; i < L * L; i++)
		m->trans[i] = CrfAllowed(i / L, i % L) ? (float) fmin(fmax(x[tr->ntrans + i], -50.0), 50.0) : 0.0f;
	for (int32_t i = 0; i < L; i++)
	{
		m->start[i] = CrfAllowed(-1, i) ? (float) fmin(fmax(x[tr->ntrans + L * L + i], -50.0), 50.0) : 0.0f;
		m->end[i] = (float) fmin(fmax(x[tr->ntrans + L * L + L + i], -50.0), 50.0);
	}
	if (!CrfPrepareTransitions(m))
	{
		CrfFree(m);
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the model");
	}

	/* int8 per feature; a weight that rounds to 0 is dropped, and so is a feature left with none */
	for (int64_t i = 0; i < tr->nkept; i++)
	{
		double		maxabs = 0.0;
		float		scale;
		int64_t		p0 = np;

		for (int64_t q = tr->pair_off[i]; q < tr->pair_off[i + 1]; q++)
			maxabs = fmax(maxabs, fabs(x[q]));
		if (maxabs < 1e-6)
			continue;
		if (maxabs > 1000.0)
			maxabs = 1000.0;	/* the format caps scales at 10 */
		scale = (float) (maxabs / 127.0);
		for (int64_t q = tr->pair_off[i]; q < tr->pair_off[i + 1]; q++)
		{
			long		v = lround(x[q] / scale);

			if (v == 0)
				continue;
			if (v > 127)
				v = 127;
			if (v < -127)
				v = -127;
			m->labels[np] = tr->pair_label[q];
			m->weights[np] = (int8_t) v;
			np++;
		}
		if (np == p0)
			continue;
		m->keys[nf] = tr->kept_keys[i];
		m->offsets[nf] = (uint32_t) p0;
		m->scales[nf] = scale;
		nf++;
	}
	m->offsets[nf] = (uint32_t) np;
	m->nfeatures = nf;
	m->npairs = np;

	/* the lexicon, from all the data */
	if (m->features & CRF_FEAT_LEXICON)
	{
		LexEntry   *lex = TriageAllocArray(tr->alloc, (size_t) tr->lexwords.n + 1, sizeof(LexEntry));
		int64_t		nl = 0;

		if (lex == NULL)
		{
			CrfFree(m);
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the model");
		}
		for (int64_t i = 0; i < tr->lexwords.n; i++)
		{
			uint64_t	mask = LexiconMask(tr, tr->lexwords.keys[i], tr->opt->lexicon_folds);

			if (mask != 0)
			{
				lex[nl].key = tr->lexwords.keys[i];
				lex[nl].mask = mask;
				nl++;
			}
		}
		qsort(lex, (size_t) nl, sizeof(LexEntry), CompareLex);
		m->lex_keys = TriageAllocArray(tr->alloc, (size_t) nl + 1, sizeof(uint64_t));
		m->lex_masks = TriageAllocArray(tr->alloc, (size_t) nl + 1, sizeof(uint64_t));
		if (m->lex_keys == NULL || m->lex_masks == NULL)
		{
			TriageFree(tr->alloc, lex);
			CrfFree(m);
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory building the model");
		}
		for (int64_t i = 0; i < nl; i++)
		{
			m->lex_keys[i] = lex[i].key;
			m->lex_masks[i] = lex[i].mask;
		}
		m->nlex = nl;
		TriageFree(tr->alloc, lex);
	}
	st = CrfIndexModel(m);
	if (st == TRIAGE_OK)
		st = CrfTableBuild(m->lex_keys, m->nlex, tr->alloc, &m->lex_slots, &m->lex_slot_mask);
	if (st != TRIAGE_OK)
	{
		CrfFree(m);
		return TriageError(st, errbuf, errlen, "could not index the model's features");
	}
	*out = m;
	return TRIAGE_OK;
}

TriageStatus
CrfTrain(const CrfTrainOptions *options, const CrfExample *examples, int64_t n,
		 const TriageAllocator *allocator, CrfModel **model, CrfTrainReport *report,
		 char *errbuf, size_t errlen)
{
	Trainer		tr;
	CrfTrainReport local_report;
	TriageStatus st;
	lbfgsfloatval_t *x = NULL;
	lbfgs_parameter_t param;
	lbfgsfloatval_t fx = 0;
	int			ret;
	int32_t		L;

	*model = NULL;
	if (report == NULL)
		report = &local_report;
	memset(report, 0, sizeof(*report));
	if (options == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "no training options");
	if ((st = CrfCheckOptions(options, errbuf, errlen)) != TRIAGE_OK)
		return st;
	if (n <= 0 || examples == NULL)
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "no training examples");
	if (allocator == NULL)
		allocator = &TriageMallocAllocator;

	memset(&tr, 0, sizeof(tr));
	tr.opt = options;
	tr.examples = examples;
	tr.nexamples = n;
	tr.alloc = allocator;
	tr.report = report;
	report->examples = n;

	if ((st = CollectFields(&tr, errbuf, errlen)) != TRIAGE_OK ||
		(st = TokenizeAndAlign(&tr, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	report->nfields = tr.nfields;
	if (tr.ntokens == 0)
	{
		st = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "the training texts have no tokens");
		goto done;
	}
	if (report->unaligned == report->values)
	{
		st = TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen,
						 "none of the %lld values could be found in its text", (long long) report->values);
		goto done;
	}
	if (options->lexicon_folds > 0 && (options->features & CRF_FEAT_LEXICON) &&
		(st = CountLexicon(&tr, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	if ((st = ExtractFeatures(&tr, errbuf, errlen)) != TRIAGE_OK ||
		(st = SelectParameters(&tr, errbuf, errlen)) != TRIAGE_OK)
		goto done;
	TRIAGE_CHECK_INTERRUPTS();

	L = tr.nlabels;
	tr.score = TriageAllocArray(allocator, (size_t) tr.max_seq * L, sizeof(double));
	tr.alpha = TriageAllocArray(allocator, (size_t) tr.max_seq * L, sizeof(double));
	tr.beta = TriageAllocArray(allocator, (size_t) tr.max_seq * L, sizeof(double));
	tr.scale = TriageAllocArray(allocator, (size_t) tr.max_seq, sizeof(double));
	tr.exp_trans = TriageAllocArray(allocator, (size_t) L * L, sizeof(double));
	tr.exp_start = TriageAllocArray(allocator, L, sizeof(double));
	tr.exp_end = TriageAllocArray(allocator, L, sizeof(double));
	x = lbfgs_malloc((int) tr.nparams);
	if (!tr.score || !tr.alpha || !tr.beta || !tr.scale || !tr.exp_trans || !tr.exp_start ||
		!tr.exp_end || x == NULL)
	{
		st = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory for %lld parameters",
						 (long long) tr.nparams);
		goto done;
	}
	memset(x, 0, (size_t) tr.nparams * sizeof(lbfgsfloatval_t));

	lbfgs_parameter_init(&param);
	param.max_iterations = options->max_iterations;
	param.epsilon = options->epsilon;
	param.past = options->delta > 0 ? 10 : 0;
	param.delta = options->delta;
	ret = lbfgs((int) tr.nparams, x, &fx, Evaluate, Progress, &tr, &param);
	report->lbfgs_status = ret;
	report->iterations = tr.iterations;
	report->loss = fx;

	if (tr.canceled)
	{
		report->canceled = true;
		lbfgs_free(x);
		x = NULL;
		TrainerFree(&tr);
		TRIAGE_CHECK_INTERRUPTS();
		return TriageError(TRIAGE_INVALID_ARGUMENT, errbuf, errlen, "training canceled");
	}
	if (ret == LBFGSERR_OUTOFMEMORY)
	{
		st = TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory in L-BFGS");
		goto done;
	}
	for (int64_t i = 0; i < tr.nparams; i++)
		if (!isfinite(x[i]))
		{
			st = TriageError(TRIAGE_NUMERIC, errbuf, errlen, "training diverged (non-finite weights)");
			goto done;
		}
	/* other liblbfgs codes (line search gave up, iteration limit) leave a usable x */
	st = BuildModel(&tr, x, model, errbuf, errlen);

done:
	if (x != NULL)
		lbfgs_free(x);
	TrainerFree(&tr);
	return st;
}
