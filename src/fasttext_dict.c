/*
 * fasttext_dict.c
 *		fastText's dictionary at prediction time: hashing, word lookup,
 *		tokenization, character n-grams and word n-grams.
 *
 * Every quirk that decides which input rows a line maps to is reproduced
 * here (fasttext-format.md, section 2): the sign-extended FNV-1a, "<w>"
 * brackets with UTF-8 character counting, OOV words still contributing
 * n-grams, word n-gram hashes widened from int32, and the prune index.
 */
#include <string.h>

#include "fasttext.h"
#include "fasttext_internal.h"

/* FNV-1a as fastText computes it: each byte is sign-extended before XOR */
uint32_t
FastTextHash(const char *str, size_t len)
{
	uint32_t	h = 2166136261u;

	for (size_t i = 0; i < len; i++)
	{
		h = h ^ (uint32_t) (int8_t) str[i];
		h = h * 16777619u;
	}
	return h;
}

/* The entry id of word, or -1 */
int32_t
FastTextFindWord(const FastTextModel *model, const char *word, size_t len, uint32_t hash)
{
	int64_t		mask = model->word2int_size - 1;
	int64_t		slot = hash & mask;

	for (;;)
	{
		int32_t		id = model->word2int[slot];
		const FastTextEntry *e;

		if (id < 0)
			return -1;
		e = &model->entries[id];
		if (e->hash == hash && (size_t) e->length == len && memcmp(e->word, word, len) == 0)
			return id;
		slot = (slot + 1) & mask;
	}
}

/* Make room for n more values in a scratch array */
static bool
Reserve(const TriageAllocator *alloc, void **array, int64_t *capacity, int64_t used,
		int64_t more, size_t elemsize)
{
	int64_t		want = used + more;
	int64_t		newcap;
	void	   *grown;

	if (want <= *capacity)
		return true;
	newcap = *capacity > 0 ? *capacity : 64;
	while (newcap < want)
		newcap *= 2;
	grown = TriageAllocArray(alloc, (size_t) newcap, elemsize);
	if (grown == NULL)
		return false;
	if (used > 0)
		memcpy(grown, *array, (size_t) used * elemsize);
	TriageFree(alloc, *array);
	*array = grown;
	*capacity = newcap;
	return true;
}

static inline bool
PushRow(FastTextScratch *scratch, int32_t row)
{
	if (scratch->nrows == scratch->rows_capacity &&
		!Reserve(&scratch->allocator, (void **) &scratch->rows, &scratch->rows_capacity,
				 scratch->nrows, 1, sizeof(int32_t)))
		return false;
	scratch->rows[scratch->nrows++] = row;
	return true;
}

/*
 * fastText's pushHash: map an n-gram bucket through the prune index, with
 * the bucket map when the model has one (fasttext_load.c, BuildBucketMap),
 * else by binary search.
 */
static inline bool
PushBucket(const FastTextModel *model, FastTextScratch *scratch, int32_t bucket)
{
	if (model->pruneidx_size == 0)
		return true;
	if (model->bucket_rows != NULL)
	{
		int32_t		row = model->bucket_rows[bucket];

		return row < 0 || PushRow(scratch, row);
	}
	if (model->pruneidx_size > 0)
	{
		int64_t		lo = 0,
					hi = model->pruneidx_size - 1;
		bool		found = false;

		while (lo <= hi)
		{
			int64_t		mid = lo + (hi - lo) / 2;
			int32_t		b = model->pruneidx[mid].bucket;

			if (b == bucket)
			{
				bucket = model->pruneidx[mid].row;
				found = true;
				break;
			}
			if (b < bucket)
				lo = mid + 1;
			else
				hi = mid - 1;
		}
		if (!found)
			return true;
	}
	return PushRow(scratch, model->nwords + bucket);
}

static inline bool
IsContinuationByte(char c)
{
	return ((unsigned char) c & 0xC0) == 0x80;
}

/*
 * Char n-grams of "<" token ">", pushed as input rows in fastText's order:
 * by start character, then by length; lone "<" and ">" are skipped.  The
 * hash of each n-gram extends the previous one, since FNV-1a is incremental.
 */
static TriageStatus
ComputeSubwords(const FastTextModel *model, FastTextScratch *scratch,
				const char *token, size_t len, char *errbuf, size_t errlen)
{
	size_t		wlen = len + 2;
	char	   *word;
	uint32_t	bucket = (uint32_t) model->args.bucket;
	int32_t		minn = model->args.minn;
	int32_t		maxn = model->args.maxn;

	if (wlen > scratch->word_capacity)
	{
		TriageFree(&scratch->allocator, scratch->word);
		scratch->word = TriageAlloc(&scratch->allocator, wlen);
		scratch->word_capacity = scratch->word ? wlen : 0;
		if (scratch->word == NULL)
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory computing n-grams");
	}
	word = scratch->word;
	word[0] = '<';
	memcpy(word + 1, token, len);
	word[wlen - 1] = '>';

	for (size_t i = 0; i < wlen; i++)
	{
		uint32_t	h = 2166136261u;
		size_t		j = i;

		/* a token can be the whole input: let cancel in */
		if ((i & 4095) == 4095)
			TRIAGE_CHECK_INTERRUPTS();
		if (IsContinuationByte(word[i]))
			continue;
		for (int32_t n = 1; j < wlen && n <= maxn; n++)
		{
			h = (h ^ (uint32_t) (int8_t) word[j++]) * 16777619u;
			while (j < wlen && IsContinuationByte(word[j]))
				h = (h ^ (uint32_t) (int8_t) word[j++]) * 16777619u;
			if (n >= minn && !(n == 1 && (i == 0 || j == wlen)))
			{
				if (!PushBucket(model, scratch, (int32_t) (h % bucket)))
					return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen,
									   "out of memory computing n-grams");
			}
		}
	}
	return TRIAGE_OK;
}

/* An upper bound on the char n-grams of "<" word ">", without hashing */
int64_t
FastTextCountSubwords(const FastTextModel *model, const char *word, size_t len)
{
	int64_t		chars = 2;
	int64_t		count = 0;

	if (model->args.maxn <= 0)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!IsContinuationByte(word[i]))
			chars++;
	for (int64_t start = 0; start < chars; start++)
	{
		int64_t		avail = chars - start;

		count += avail < model->args.maxn ? avail : model->args.maxn;
	}
	return count;
}

/*
 * fastText's addSubwords: the input rows of one word token.  wid is its
 * dictionary id or -1 when out of vocabulary.
 */
TriageStatus
FastTextAddSubwords(const FastTextModel *model, FastTextScratch *scratch,
					const char *token, size_t len, int32_t wid, char *errbuf, size_t errlen)
{
	bool		is_eos = (len == 4 && memcmp(token, FASTTEXT_EOS, 4) == 0);

	if (wid < 0)
	{
		if (is_eos || model->args.maxn <= 0)
			return TRIAGE_OK;
		return ComputeSubwords(model, scratch, token, len, errbuf, errlen);
	}
	if (model->subword_offsets != NULL)
	{
		int64_t		from = model->subword_offsets[wid];
		int64_t		count = model->subword_offsets[wid + 1] - from;

		if (!Reserve(&scratch->allocator, (void **) &scratch->rows, &scratch->rows_capacity,
					 scratch->nrows, count, sizeof(int32_t)))
			return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory reading a line");
		memcpy(scratch->rows + scratch->nrows, model->subwords + from, (size_t) count * sizeof(int32_t));
		scratch->nrows += count;
		return TRIAGE_OK;
	}
	if (!PushRow(scratch, wid))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory reading a line");
	if (is_eos || model->args.maxn <= 0)
		return TRIAGE_OK;
	return ComputeSubwords(model, scratch, token, len, errbuf, errlen);
}

/* fastText's addWordNgrams, with its exact integer widening */
static TriageStatus
AddWordNgrams(const FastTextModel *model, FastTextScratch *scratch, char *errbuf, size_t errlen)
{
	int32_t		n = model->args.wordNgrams;
	uint64_t	bucket = (uint64_t) model->args.bucket;
	const int32_t *hashes = scratch->hashes;
	int64_t		nh = scratch->nhashes;

	for (int64_t i = 0; i < nh; i++)
	{
		uint64_t	h = (uint64_t) (int64_t) hashes[i];

		if ((i & 1023) == 1023)
			TRIAGE_CHECK_INTERRUPTS();

		for (int64_t j = i + 1; j < nh && j < i + n; j++)
		{
			h = h * 116049371 + (uint64_t) (int64_t) hashes[j];
			if (!PushBucket(model, scratch, (int32_t) (h % bucket)))
				return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory reading a line");
		}
	}
	return TRIAGE_OK;
}

static TriageStatus
AddToken(const FastTextModel *model, FastTextScratch *scratch, const char *token, size_t len,
		 char *errbuf, size_t errlen)
{
	uint32_t	h = FastTextHash(token, len);
	int32_t		wid = FastTextFindWord(model, token, len, h);
	bool		is_label;
	TriageStatus status;

	if (wid < 0)
		is_label = FastTextIsLabelToken(token, len);
	else
		is_label = model->entries[wid].type == 1;
	/* labels in the input are skipped, and word n-grams bridge over them */
	if (is_label)
		return TRIAGE_OK;

	status = FastTextAddSubwords(model, scratch, token, len, wid, errbuf, errlen);
	if (status != TRIAGE_OK)
		return status;
	if (scratch->nhashes == scratch->hashes_capacity &&
		!Reserve(&scratch->allocator, (void **) &scratch->hashes, &scratch->hashes_capacity,
				 scratch->nhashes, 1, sizeof(int32_t)))
		return TriageError(TRIAGE_OUT_OF_MEMORY, errbuf, errlen, "out of memory reading a line");
	scratch->hashes[scratch->nhashes++] = (int32_t) h;
	return TRIAGE_OK;
}

/*
 * An upper bound on the input rows one token adds, and its word n-grams:
 * cheap from its length when that is far from the limit, else counted.
 */
static int64_t
TokenRowsBound(const FastTextModel *model, const char *token, size_t len, int64_t room)
{
	int64_t		ngrams = model->args.wordNgrams > 1 ? model->args.wordNgrams - 1 : 0;
	int64_t		rough;

	if (model->args.maxn <= 0)
		return 1 + ngrams;
	/* bytes are at least characters, so this bounds the n-grams too */
	rough = 1 + ngrams + ((int64_t) len + 2) * model->args.maxn;
	if (rough <= room)
		return rough;
	return 1 + ngrams + FastTextCountSubwords(model, token, len);
}

/*
 * The input rows of one line of text, as fastText's getLine computes them
 * for a line that ends in a newline: the tokens, then "</s>", reading
 * stops at the first "</s>".  A newline inside the text is taken as a
 * space, so a multi-line value is one example (the fasttext tool would
 * split it into several lines).
 *
 * With scratch->max_tokens set, reading also stops before the token past
 * that many, or before a token whose rows could pass the row budget
 * (FASTTEXT_ROWS_PER_TOKEN per token allowed, and "</s>"); the line then ends there,
 * with its "</s>", and scratch->truncated is set.  An input under both
 * limits is read exactly as fastText reads it.
 */
TriageStatus
FastTextTokenize(const FastTextModel *model, FastTextScratch *scratch,
				 const char *text, size_t len, char *errbuf, size_t errlen)
{
	size_t		pos = 0,
				start,
				end;
	int64_t		ntokens = 0;
	int64_t		max_rows = INT64_MAX;
	int64_t		eos_rows = 1 + (model->args.wordNgrams > 1 ? model->args.wordNgrams - 1 : 0);
	TriageStatus status;

	scratch->nrows = 0;
	scratch->text_rows = 0;
	scratch->nhashes = 0;
	scratch->truncated = false;
	/* the line's "</s>" gets a token's share, so that max_tokens 1 still reads a token */
	if (scratch->max_tokens > 0 && scratch->max_tokens < INT64_MAX / FASTTEXT_ROWS_PER_TOKEN - 1)
		max_rows = (scratch->max_tokens + 1) * FASTTEXT_ROWS_PER_TOKEN;
	while (FastTextNextToken(text, len, &pos, &start, &end))
	{
		if ((ntokens & 1023) == 1023)
			TRIAGE_CHECK_INTERRUPTS();
		if (scratch->max_tokens > 0)
		{
			/* rows so far, with the n-grams still to come, leaving room for "</s>" */
			int64_t		used = scratch->nrows + scratch->nhashes * (eos_rows - 1) + eos_rows;

			if (ntokens >= scratch->max_tokens ||
				used + TokenRowsBound(model, text + start, end - start, max_rows - used) > max_rows)
			{
				scratch->truncated = true;
				break;
			}
		}
		ntokens++;
		status = AddToken(model, scratch, text + start, end - start, errbuf, errlen);
		if (status != TRIAGE_OK)
			return status;
		if (end - start == 4 && memcmp(text + start, FASTTEXT_EOS, 4) == 0)
		{
			scratch->text_rows = scratch->nrows - 1;
			return AddWordNgrams(model, scratch, errbuf, errlen);
		}
	}
	scratch->text_rows = scratch->nrows;
	status = AddToken(model, scratch, FASTTEXT_EOS, 4, errbuf, errlen);
	if (status != TRIAGE_OK)
		return status;
	return AddWordNgrams(model, scratch, errbuf, errlen);
}

void
FastTextScratchInit(FastTextScratch *scratch, const TriageAllocator *allocator)
{
	memset(scratch, 0, sizeof(*scratch));
	scratch->allocator = allocator ? *allocator : TriageMallocAllocator;
}

void
FastTextScratchFree(FastTextScratch *scratch)
{
	TriageAllocator allocator = scratch->allocator;
	const TriageAllocator *alloc = &allocator;

	TriageFree(alloc, scratch->rows);
	TriageFree(alloc, scratch->hashes);
	TriageFree(alloc, scratch->hidden);
	TriageFree(alloc, scratch->output);
	TriageFree(alloc, scratch->heap);
	TriageFree(alloc, scratch->word);
	FastTextScratchInit(scratch, alloc);
}

/*
 * Give back the buffers an input made larger than keep_bytes (each), so that
 * one huge input does not leave its memory held for the life of the model.
 * The buffers the model itself needs (a row per label, the hierarchical
 * softmax stack) are kept whatever their size: they would only be regrown.
 * Returns the bytes given back.
 */
size_t
FastTextScratchTrim(const FastTextModel *model, FastTextScratch *scratch, size_t keep_bytes)
{
	const TriageAllocator *alloc = &scratch->allocator;
	size_t		keep_rows = keep_bytes / sizeof(int32_t);
	size_t		freed = 0;

	/* HsSearch keeps its stack in rows: two int32 per frame, 2 * nlabels + 1 frames */
	if (model->args.loss == FASTTEXT_LOSS_HS)
	{
		size_t		stack = ((size_t) 2 * (size_t) model->nlabels + 1) * 2;

		if (stack > keep_rows)
			keep_rows = stack;
	}
	if ((size_t) scratch->rows_capacity > keep_rows)
	{
		freed += (size_t) scratch->rows_capacity * sizeof(int32_t);
		TriageFree(alloc, scratch->rows);
		scratch->rows = NULL;
		scratch->rows_capacity = 0;
		scratch->nrows = 0;
	}
	if ((size_t) scratch->hashes_capacity > keep_bytes / sizeof(int32_t))
	{
		freed += (size_t) scratch->hashes_capacity * sizeof(int32_t);
		TriageFree(alloc, scratch->hashes);
		scratch->hashes = NULL;
		scratch->hashes_capacity = 0;
		scratch->nhashes = 0;
	}
	if (scratch->word_capacity > keep_bytes)
	{
		freed += scratch->word_capacity;
		TriageFree(alloc, scratch->word);
		scratch->word = NULL;
		scratch->word_capacity = 0;
	}
	return freed;
}
