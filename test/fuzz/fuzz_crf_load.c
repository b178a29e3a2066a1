/*
 * fuzz_crf_load.c
 *		libFuzzer harness of the CRF model loader: load the input as a model
 *		and, when it loads, check it, save it again and extract fields from a
 *		few fixed texts with it.
 *
 * CrfLoad verifies a checksum over the whole file last, so a mutated file
 * is nearly always rejected for its checksum alone.  Each input is
 * therefore loaded twice: as it is (a file whose checksum does not match
 * must never load) and with its last 8 bytes replaced by the checksum of
 * the bytes before them, which takes the mutation through every check.
 *
 * Besides memory errors (ASan) and undefined behaviour (UBSan), it aborts
 * when a load fails without a message or leaks, when a loaded model breaks
 * what the SQL layer relies on (field names, results in range, on token
 * boundaries, in text order, confidences in 0..1), when saving a loaded
 * model and loading the saved bytes does not give the same bytes again,
 * and when loading or extracting holds far more memory than the file's
 * size: the loader promises allocations within a small multiple of it.
 *
 * The same entry point is linked into fuzz_crf_standalone.c, which replays
 * files and mutations without libFuzzer; FuzzCrfLoaded counts the inputs
 * that loaded (as is or repaired) for its summary.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crf.h"
#include "fuzz_harness.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

long		FuzzCrfLoaded = 0;

/* The texts every loaded model extracts from: tokenizer and decoder edge cases */
static const char *FixedTexts[] = {
	"",
	"   \t\n ",
	"?!.,;:",
	"Order number: A-10293. Amount due: $1,299.00 on March 5, 2024.",
	"Dear Maria J. L\xc3\xb3pez,\nyour parcel 1Z999AA10123456784 ships today. "
	"Call me at (312) 555-0147 or maria.lopez@example.com",
	"Ref: ORD-2024-55821 | \xc3\x87" "elik | 1.299,00 \xe2\x82\xac | 05.03.2024",
	"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xe2\x80\x94 \xc2\xa0nbsp",
	"\xff\xfe \x80\x80 \xc3 broken utf-8 \xe2\x82",
	"x",
};

/* control characters and a zero byte: passed with its length, not strlen */
static const char ZeroByteText[] = "a\vb\fc\rd\0e 2024-03-05";

static char LongText[40000];

/* More tokens than CRF_MAX_TOKENS, then one long token */
static void
InitLongText(void)
{
	static const char *const words[] = {"Order ", "A-10293 ", "total ", "45.00 ", "EUR ", "\xc3\x87" "elik ", "; "};

	FillLongText(LongText, sizeof(LongText), words, 7, 30000);
}

/* What the SQL layer does with a loaded model's metadata */
static void
CheckModel(const CrfModel *model)
{
	int32_t		n = CrfFieldCount(model);
	int64_t		features,
				weights,
				lexicon;

	if (n < 1 || n > CRF_MAX_FIELDS)
		Fail("field count out of range");
	for (int32_t f = 0; f < n; f++)
	{
		const char *name = CrfFieldName(model, f);
		size_t		len;

		if (name == NULL)
			Fail("a field has no name");
		len = strlen(name);
		if (len == 0 || len > CRF_MAX_FIELD_NAME)
			Fail("a field name is empty or too long");
		if (CrfFindField(model, name, len) != f)
			Fail("a field is not found by its own name");
	}
	if (CrfFieldName(model, n) != NULL || CrfFieldName(model, -1) != NULL)
		Fail("a field name out of range");
	CrfModelStats(model, &features, &weights, &lexicon);
	if (features < 0 || weights < features || lexicon < 0)
		Fail("model sizes");
}

/*
 * Extract from text[0..len), copied to a heap block of exactly len bytes
 * without a terminator so that ASan catches any read past its end, and
 * check the results against the tokens of the text.
 */
static void
Extract(const CrfModel *model, CrfWorkspace *workspace, CrfResult *results, CrfToken *tokens,
		const char *line, size_t len)
{
	char		errbuf[256];
	char	   *text = malloc(len == 0 ? 1 : len);
	int32_t		nresults = -1;
	int32_t		ntokens;
	TriageStatus status;

	if (text == NULL)
		Fail("out of memory for the text");
	memcpy(text, line, len);
	errbuf[0] = '\0';
	status = CrfExtract(model, workspace, text, len, results, &nresults, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
	{
		if (status != TRIAGE_OUT_OF_MEMORY && status != TRIAGE_NUMERIC)
			Fail("extraction failed with an unexpected status");
		if (errbuf[0] == '\0')
			Fail("extraction failed without a message");
		free(text);
		return;
	}
	if (nresults < 0 || nresults > CrfFieldCount(model))
		Fail("result count out of range");
	ntokens = CrfTokenize(text, len, tokens, CRF_MAX_TOKENS);
	for (int32_t i = 0; i < nresults; i++)
	{
		const CrfResult *r = &results[i];
		int			starts = 0,
					ends = 0;

		if (r->field < 0 || r->field >= CrfFieldCount(model))
			Fail("result field out of range");
		if (r->start >= r->end || r->end > len)
			Fail("result span out of the text");
		if (isnan(r->confidence) || r->confidence < 0.0f || r->confidence > 1.0f + 1e-5f)
			Fail("confidence outside 0..1");
		if (i > 0 && results[i - 1].start > r->start)
			Fail("results not in text order");
		for (int32_t j = 0; j < i; j++)
			if (results[j].field == r->field)
				Fail("a field returned twice");
		for (int32_t t = 0; t < ntokens; t++)
		{
			starts |= tokens[t].start == r->start;
			ends |= tokens[t].end == r->end;
		}
		if (!starts || !ends)
			Fail("a result does not sit on token boundaries");
	}
	free(text);
}

/* Save a loaded model, load the bytes back and save again: same bytes */
static void
RoundTrip(const CrfModel *model, const TriageAllocator *allocator)
{
	uint8_t    *first = NULL,
			   *second = NULL;
	size_t		first_len,
				second_len;
	CrfModel   *again = NULL;
	char		errbuf[256];

	if (CrfSave(model, allocator, &first, &first_len, errbuf, sizeof(errbuf)) != TRIAGE_OK)
		Fail("a loaded model could not be saved");
	if (CrfLoad(first, first_len, allocator, &again, errbuf, sizeof(errbuf)) != TRIAGE_OK)
	{
		fprintf(stderr, "fuzz: %s\n", errbuf);
		Fail("a saved model could not be loaded");
	}
	if (CrfSave(again, allocator, &second, &second_len, errbuf, sizeof(errbuf)) != TRIAGE_OK)
		Fail("a reloaded model could not be saved");
	if (first_len != second_len || memcmp(first, second, first_len) != 0)
		Fail("save, load, save gives different bytes");
	CrfFree(again);
	TriageFree(allocator, first);
	TriageFree(allocator, second);
}

/* Load data[0..size); expect_reject: the checksum is wrong, so it must not load */
static void
RunLoad(const uint8_t *data, size_t size, int expect_reject)
{
	Tracker		tracker;
	TriageAllocator allocator = {TrackedAlloc, TrackedFree, &tracker};
	CrfModel   *model = NULL;
	CrfWorkspace workspace;
	CrfResult  *results;
	CrfToken   *tokens;
	TriageStatus status;
	char		errbuf[256];

	/*
	 * The loader's own tables stay within a few times the file's size; the
	 * workspace adds at most CRF_MAX_TOKENS rows of 129 labels (a few MB).
	 */
	tracker.live = 0;
	tracker.limit = size * 16 + ((size_t) 32 << 20);
	tracker.phase = "loading";

	errbuf[0] = '\0';
	status = CrfLoad(data, size, &allocator, &model, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
	{
		CheckFailedLoad(status, model, errbuf, &tracker);
		return;
	}
	if (model == NULL)
		Fail("a successful load returned no model");
	if (expect_reject)
		Fail("a model with a wrong checksum loaded");
	FuzzCrfLoaded++;
	CheckModel(model);

	tracker.phase = "saving";
	RoundTrip(model, &allocator);

	tracker.phase = "extraction";
	results = malloc(sizeof(CrfResult) * (size_t) CrfFieldCount(model));
	tokens = malloc(sizeof(CrfToken) * CRF_MAX_TOKENS);
	if (results == NULL || tokens == NULL)
		Fail("out of memory for results");
	CrfWorkspaceInit(&workspace, &allocator);
	for (size_t i = 0; i < sizeof(FixedTexts) / sizeof(FixedTexts[0]); i++)
		Extract(model, &workspace, results, tokens, FixedTexts[i], strlen(FixedTexts[i]));
	Extract(model, &workspace, results, tokens, ZeroByteText, sizeof(ZeroByteText) - 1);
	Extract(model, &workspace, results, tokens, LongText, 37);
	Extract(model, &workspace, results, tokens, LongText, strlen(LongText));
	/* the workspace has grown: a short text again reuses it */
	Extract(model, &workspace, results, tokens, FixedTexts[4], strlen(FixedTexts[4]));
	/* as the server runs it: fewer tokens than the model's, the arrays given back between calls */
	workspace.max_tokens = 16;
	Extract(model, &workspace, results, tokens, LongText, strlen(LongText));
	(void) CrfWorkspaceTrim(&workspace, 0);
	Extract(model, &workspace, results, tokens, FixedTexts[4], strlen(FixedTexts[4]));

	CrfWorkspaceFree(&workspace);
	free(results);
	free(tokens);
	CrfFree(model);
	if (tracker.live != 0)
		Fail("memory left allocated after freeing the model");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t    *repaired;
	uint64_t	sum;
	int			matches = 1;

	InitLongText();
	if (size >= 8)
	{
		sum = CrfChecksum(data, size - 8);
		for (int i = 0; i < 8; i++)
			matches &= data[size - 8 + i] == (uint8_t) (sum >> (8 * i));
	}
	RunLoad(data, size, size >= 8 && !matches);
	if (size < 8 || matches)
		return 0;

	/* the same bytes with a checksum that matches: an exact-size copy for ASan */
	repaired = malloc(size);
	if (repaired == NULL)
		Fail("out of memory for the repaired copy");
	memcpy(repaired, data, size);
	for (int i = 0; i < 8; i++)
		repaired[size - 8 + i] = (uint8_t) (sum >> (8 * i));
	RunLoad(repaired, size, 0);
	free(repaired);
	return 0;
}
