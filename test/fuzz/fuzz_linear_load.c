/*
 * fuzz_linear_load.c
 *		libFuzzer harness of the linear model loader: load the input as a
 *		model and, when it loads, check it, save it again and predict a few
 *		fixed texts with it.
 *
 * LinearLoad verifies a checksum over the whole file, so a mutated file is
 * nearly always rejected for its checksum alone.  Each input is therefore
 * loaded twice, as fuzz_crf_load.c does: as it is (a file whose checksum
 * does not match must never load) and with its last 8 bytes replaced by
 * the checksum of the bytes before them, which takes the mutation through
 * every check.
 *
 * Besides memory errors (ASan) and undefined behaviour (UBSan), it aborts
 * when a load fails without a message or leaks, when a loaded model breaks
 * what the SQL layer relies on (labels found by their own names, labels
 * in range, probabilities in 0..1, best first, no more than asked for),
 * when a prediction fails with a status other than out of memory, when
 * saving a loaded model and loading the saved bytes does not give the same
 * bytes again, and when loading or predicting holds far more memory than
 * the file's size.
 *
 * The same entry point is linked into fuzz_linear_standalone.c;
 * FuzzLinearLoaded counts the inputs that loaded (as is or repaired).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linear.h"
#include "fuzz_harness.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

long		FuzzLinearLoaded = 0;

/* normalization edge cases: markup, entities, UTF-8, broken UTF-8 */
static const char *FixedTexts[] = {
	"",
	"   \t\n ",
	"?!.,;:",
	"Great!<br />Love it",
	"This stuff is NOT good &amp; I&#39;d never buy it again &lt;3 &#x1F600; &bogus;",
	"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xe2\x80\x94 \xc2\xa0nbsp \xc2\xad",
	"\xff\xfe \x80\x80 \xc3 broken utf-8 \xe2\x82",
	"<a href=\"x\">unclosed <tag",
	"x",
};

static const char ZeroByteText[] = "a\vb\fc\rd\0e great";

static char LongText[40000];

static void
InitLongText(void)
{
	static const char *const words[] = {"great ", "taste ", "not ", "good! ", "<br/>", "&amp; ", "\xc3\x87" "a "};

	FillLongText(LongText, sizeof(LongText), words, 7, 30000);
}

static void
CheckModel(const LinearModel *model)
{
	int32_t		n = LinearLabelCount(model);
	LinearOptions o;
	char		err[256];

	if (n < 2 || n > LINEAR_MAX_LABELS)
		Fail("label count out of range");
	for (int32_t l = 0; l < n; l++)
	{
		size_t		len;
		const char *name = LinearLabelName(model, l, &len);

		if (name == NULL || len == 0 || strlen(name) != len)
			Fail("a label is missing, empty or has a zero byte");
		if (LinearFindLabel(model, name, len) != l)
			Fail("a label is not found by its own name");
	}
	if (LinearLabelName(model, n, NULL) != NULL || LinearLabelName(model, -1, NULL) != NULL)
		Fail("a label name out of range");
	LinearGetOptions(model, &o);
	if (LinearCheckOptions(&o, err, sizeof(err)) != TRIAGE_OK)
		Fail("a loaded model's options do not pass LinearCheckOptions");
}

/* Predict text[0..len), copied to an exactly-sized heap block for ASan */
static void
Predict(const LinearModel *model, LinearScratch *s, TriagePrediction *out, const char *line, size_t len, int32_t k)
{
	char		errbuf[256];
	char	   *text = malloc(len == 0 ? 1 : len);
	int32_t		n = -1;
	int32_t		L = LinearLabelCount(model);
	TriageStatus status;
	float	   *logits = malloc(sizeof(float) * (size_t) L);

	if (text == NULL || logits == NULL)
		Fail("out of memory for the text");
	memcpy(text, line, len);
	errbuf[0] = '\0';
	status = LinearPredict(model, s, text, len, k, 0.0f, out, &n, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
	{
		if (status != TRIAGE_OUT_OF_MEMORY)
			Fail("prediction failed with an unexpected status");
		if (errbuf[0] == '\0')
			Fail("prediction failed without a message");
	}
	else
	{
		if (n < 0 || n > L || (k > 0 && n > k))
			Fail("prediction count out of range");
		if ((n == 0) != (s->features == 0))
			Fail("no answer though features were found, or an answer without");
		for (int32_t i = 0; i < n; i++)
		{
			if (out[i].label < 0 || out[i].label >= L)
				Fail("predicted label out of range");
			if (!(out[i].probability >= 0.0f && out[i].probability <= 1.0f + 1e-5f))
				Fail("probability outside 0..1");
			if (i > 0 && out[i].score > out[i - 1].score)
				Fail("predictions not best first");
		}
	}
	status = LinearLogits(model, s, text, len, logits, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK && status != TRIAGE_OUT_OF_MEMORY && status != TRIAGE_NUMERIC)
		Fail("logits failed with an unexpected status");
	free(logits);
	free(text);
}

static void
RoundTrip(const LinearModel *model, const TriageAllocator *allocator)
{
	uint8_t    *first = NULL,
			   *second = NULL;
	size_t		first_len,
				second_len;
	LinearModel *again = NULL;
	char		errbuf[256];

	if (LinearSave(model, allocator, &first, &first_len, errbuf, sizeof(errbuf)) != TRIAGE_OK)
		Fail("a loaded model could not be saved");
	if (LinearLoad(first, first_len, allocator, &again, errbuf, sizeof(errbuf)) != TRIAGE_OK)
	{
		fprintf(stderr, "fuzz: %s\n", errbuf);
		Fail("a saved model could not be loaded");
	}
	if (LinearSave(again, allocator, &second, &second_len, errbuf, sizeof(errbuf)) != TRIAGE_OK)
		Fail("a reloaded model could not be saved");
	if (first_len != second_len || memcmp(first, second, first_len) != 0)
		Fail("save, load, save gives different bytes");
	LinearFree(again);
	TriageFree(allocator, first);
	TriageFree(allocator, second);
}

static void
RunLoad(const uint8_t *data, size_t size, int expect_reject)
{
	Tracker		tracker;
	TriageAllocator allocator = {TrackedAlloc, TrackedFree, &tracker};
	LinearModel *model = NULL;
	LinearScratch scratch;
	TriagePrediction *out;
	TriageStatus status;
	char		errbuf[256];

	/* the loader within a few times the file; the scratch a few times the longest text */
	tracker.live = 0;
	tracker.limit = size * 8 + ((size_t) 4 << 20);
	tracker.phase = "loading";

	errbuf[0] = '\0';
	status = LinearLoad(data, size, &allocator, &model, errbuf, sizeof(errbuf));
	if (status != TRIAGE_OK)
	{
		/* a NaN or infinite number is TRIAGE_NUMERIC: as good a rejection */
		if (status == TRIAGE_NUMERIC)
			status = TRIAGE_INVALID_MODEL;
		CheckFailedLoad(status, model, errbuf, &tracker);
		return;
	}
	if (model == NULL)
		Fail("a successful load returned no model");
	if (expect_reject)
		Fail("a model with a wrong checksum loaded");
	FuzzLinearLoaded++;
	CheckModel(model);

	tracker.phase = "saving";
	RoundTrip(model, &allocator);

	tracker.phase = "prediction";
	out = malloc(sizeof(TriagePrediction) * (size_t) LinearLabelCount(model));
	if (out == NULL)
		Fail("out of memory for predictions");
	LinearScratchInit(&scratch, &allocator);
	for (size_t i = 0; i < sizeof(FixedTexts) / sizeof(FixedTexts[0]); i++)
	{
		Predict(model, &scratch, out, FixedTexts[i], strlen(FixedTexts[i]), 1);
		Predict(model, &scratch, out, FixedTexts[i], strlen(FixedTexts[i]), -1);
	}
	Predict(model, &scratch, out, ZeroByteText, sizeof(ZeroByteText) - 1, 2);
	Predict(model, &scratch, out, LongText, strlen(LongText), -1);
	scratch.max_tokens = 16;
	Predict(model, &scratch, out, LongText, strlen(LongText), 1);
	(void) LinearScratchTrim(&scratch, 0);
	Predict(model, &scratch, out, FixedTexts[4], strlen(FixedTexts[4]), 1);
	LinearSetTemperature(model, 0.01f);
	Predict(model, &scratch, out, FixedTexts[3], strlen(FixedTexts[3]), -1);

	LinearScratchFree(&scratch);
	free(out);
	LinearFree(model);
	if (tracker.live != 0)
		Fail("memory left allocated after freeing the model");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t    *repaired;
	uint64_t	sum = 0;
	int			matches = 1;

	InitLongText();
	if (size >= 8)
	{
		sum = LinearChecksum(data, size - 8);
		for (int i = 0; i < 8; i++)
			matches &= data[size - 8 + i] == (uint8_t) (sum >> (8 * i));
	}
	RunLoad(data, size, size >= 8 && !matches);
	if (size < 8 || matches)
		return 0;

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
