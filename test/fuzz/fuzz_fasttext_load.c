/*
 * fuzz_fasttext_load.c
 *		libFuzzer harness of the fastText loader: load the input as a model
 *		and, when it loads, predict a few fixed lines with it.
 *
 * Besides memory errors (ASan) and undefined behaviour (UBSan), it aborts
 * when a loaded model breaks an invariant the SQL layer relies on (labels
 * in range, words found again by lookup, the input rows of a line within
 * the budget of a token limit), and when loading or predicting allocates
 * far more than the file's size: the loader promises that a model cannot
 * make it allocate much more than its own bytes.
 *
 * The same entry point is linked into fuzz_fasttext_standalone.c, which
 * replays files and mutations without libFuzzer; FuzzFastTextLoaded counts
 * the inputs that loaded, for its summary, and FuzzFastTextNaN the
 * predictions that returned a NaN probability with no error.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fasttext.h"
#include "fasttext_internal.h"
#include "fuzz_harness.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

long		FuzzFastTextLoaded = 0;
long		FuzzFastTextNaN = 0;

/* FUZZ_FASTTEXT_STRICT set: a NaN probability aborts instead of being counted */
static int	Strict = -1;

/* The lines every loaded model predicts: tokenizer edge cases */
static const char *FixedLines[] = {
	"",
	"   \t\n ",
	"great product, would buy again",
	"this stuff is not good at all save your money",
	"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
	"__label__x",
	"__label__great __label__other great",
	"before </s> after",
	"</s>",
	"\xff\xfe \x80\x80 \xc3 broken utf-8",
	"a\vb\fc\rd",
};

static char LongLine[4000];

/* A long line: many words, then one long token for the char n-grams */
static void
InitLongLine(void)
{
	static const char *const words[] = {"great ", "food ", "the ", "taste ", "not ", "good "};

	FillLongText(LongLine, sizeof(LongLine), words, 6, 2500);
}

/* What the SQL layer does with a loaded model, checking what it relies on */
static void
CheckModel(const FastTextModel *model)
{
	if (model->nlabels <= 0 || model->nwords < 0 || model->nwords + model->nlabels != model->size)
		Fail("dictionary sizes");
	for (int32_t i = 0; i < model->size; i++)
	{
		const FastTextEntry *e = &model->entries[i];

		if (FastTextFindWord(model, e->word, (size_t) e->length, e->hash) != i)
			Fail("an entry is not found by its own word");
	}
	for (int32_t i = 0; i < model->nlabels; i++)
	{
		size_t		len;
		const char *label = FastTextLabel(model, i, &len);

		if (label == NULL || strlen(label) != len)
			Fail("label text");
	}
}

/*
 * Predict text[0..len) with k = 1, 2 and -1.  The text is copied to a heap
 * block of exactly len bytes, without a terminator, so that ASan catches
 * any read past its end.
 */
static void
Predict(const FastTextModel *model, FastTextScratch *scratch, FastTextPrediction *predictions,
		const char *line, size_t len)
{
	static const int32_t ks[] = {1, 2, -1};
	char		errbuf[256];
	char	   *text = malloc(len == 0 ? 1 : len);

	if (text == NULL)
		Fail("out of memory for the text");
	memcpy(text, line, len);
	for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++)
	{
		int32_t		n = -1;
		int32_t		want = (ks[i] == -1 || ks[i] > model->nlabels) ? model->nlabels : ks[i];
		TriageStatus status;

		errbuf[0] = '\0';
		status = FastTextPredict(model, scratch, text, len, ks[i], i == 2 ? 0.01f : 0.0f,
								 predictions, &n, errbuf, sizeof(errbuf));
		if (status != TRIAGE_OK)
		{
			/* a bad model may yield NaN; nothing else may fail here */
			if (status != TRIAGE_NUMERIC && status != TRIAGE_OUT_OF_MEMORY)
				Fail("prediction failed with an unexpected status");
			if (errbuf[0] == '\0')
				Fail("prediction failed without a message");
			continue;
		}
		if (n < 0 || n > want)
			Fail("prediction count out of range");
		for (int32_t j = 0; j < n; j++)
		{
			size_t		labellen;

			if (predictions[j].label < 0 || predictions[j].label >= model->nlabels)
				Fail("predicted label out of range");
			(void) FastTextLabel(model, predictions[j].label, &labellen);
			/* the SQL layer would return it: TRIAGE_NUMERIC is for this */
			if (isnan(predictions[j].probability))
			{
				if (Strict)
					Fail("a prediction succeeded with a NaN probability");
				FuzzFastTextNaN++;
			}
		}
	}
	free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Tracker		tracker;
	TriageAllocator allocator = {TrackedAlloc, TrackedFree, &tracker};
	FastTextModel *model = NULL;
	FastTextScratch scratch;
	FastTextPrediction *predictions;
	TriageStatus status;
	char		errbuf[256];

	InitLongLine();
	if (Strict < 0)
		Strict = getenv("FUZZ_FASTTEXT_STRICT") != NULL;

	/*
	 * Generous: entries, hash table, Huffman tree and the capped subword
	 * lists together stay within a few dozen times the file's size.
	 */
	tracker.live = 0;
	tracker.limit = size * 64 + ((size_t) 64 << 20);
	tracker.phase = "loading";

	errbuf[0] = '\0';
	status = FastTextLoad(data, size, &allocator, &model, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
	{
		CheckFailedLoad(status, model, errbuf, &tracker);
		return 0;
	}
	if (model == NULL)
		Fail("a successful load returned no model");
	FuzzFastTextLoaded++;
	CheckModel(model);

	/* as the SQL layer does: room for every label */
	predictions = malloc(sizeof(FastTextPrediction) * (size_t) model->nlabels);
	if (predictions == NULL)
		Fail("out of memory for predictions");
	tracker.phase = "prediction";
	FastTextScratchInit(&scratch, &allocator);
	for (size_t i = 0; i < sizeof(FixedLines) / sizeof(FixedLines[0]); i++)
		Predict(model, &scratch, predictions, FixedLines[i], strlen(FixedLines[i]));
	Predict(model, &scratch, predictions, LongLine, strlen(LongLine));
	Predict(model, &scratch, predictions, LongLine, 37);

	/*
	 * As the server runs it: with a token limit, whatever the model's maxn
	 * and wordNgrams, the rows stay within the budget; and giving back the
	 * scratch between calls (keeping nothing) changes nothing else.
	 */
	scratch.max_tokens = 64;
	(void) FastTextTokenize(model, &scratch, LongLine, strlen(LongLine), errbuf, sizeof(errbuf));
	if (scratch.nrows > (scratch.max_tokens + 1) * FASTTEXT_ROWS_PER_TOKEN)
		Fail("rows past the budget of max_tokens");
	Predict(model, &scratch, predictions, LongLine, strlen(LongLine));
	(void) FastTextScratchTrim(model, &scratch, 0);
	Predict(model, &scratch, predictions, FixedLines[2], strlen(FixedLines[2]));
	(void) FastTextScratchTrim(model, &scratch, 0);

	FastTextScratchFree(&scratch);
	free(predictions);
	FastTextFree(model);
	if (tracker.live != 0)
		Fail("memory left allocated after freeing the model");
	return 0;
}
