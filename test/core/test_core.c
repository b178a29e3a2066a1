/*
 * test_core.c
 *		Unit tests of the server-independent core, run under ASan/UBSan by
 *		test/run-tests.sh.  Prints one TAP line per check.
 *
 * Usage: test_core DATA_DIR (the directory holding sentiment_v1.ftz)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fasttext.h"
#include "check.h"
#include "read_file.h"

/* fasttext-format.md 2.1: values of the C++ function, sign-extension included */
static void
TestHash(void)
{
	struct
	{
		const char *s;
		uint32_t	h;
	}			vectors[] = {
		{"", 2166136261u}, {"a", 3826002220u}, {"</s>", 3617362777u},
		{"hello", 1335831723u}, {"__label__en", 3409607150u},
		{"caf\xc3\xa9", 1970454601u}, {"<\xc3\xa9>", 1002806231u},
		{"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 308035559u},
	};

	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
	{
		char		what[128];

		snprintf(what, sizeof(what), "hash of \"%s\" is %u", vectors[i].s, vectors[i].h);
		Check(FastTextHash(vectors[i].s, strlen(vectors[i].s)) == vectors[i].h, what);
	}
}

static void
TestModel(const char *dir)
{
	char		path[4096];
	size_t		len;
	uint8_t    *data;
	FastTextModel *model = NULL;
	FastTextScratch scratch;
	FastTextPrediction p[8];
	int32_t		n = 0;
	char		err[256];
	TriageStatus status;
	size_t		label_len;
	const char *label;
	int			rejected = 0;
	int			all_rejected = 1;

	snprintf(path, sizeof(path), "%s/sentiment_v1.ftz", dir);
	data = ReadFile(path, &len);
	Check(data != NULL, "fixture sentiment_v1.ftz is readable");
	if (data == NULL)
		return;

	status = FastTextLoad(data, len, NULL, &model, err, sizeof(err));
	Check(status == TRIAGE_OK, "fixture loads");
	if (status != TRIAGE_OK)
	{
		printf("# %s\n", err);
		free(data);
		return;
	}
	Check(model->nlabels == 2 && model->quant_input && model->pruneidx_size > 0,
		  "fixture is a pruned, quantized model with 2 labels");
	label = FastTextLabel(model, 0, &label_len);
	Check(label_len > 9 && strncmp(label, "__label__", 9) == 0, "labels keep their prefix in the core");

	FastTextScratchInit(&scratch, NULL);
	status = FastTextPredict(model, &scratch, "stale and bitter", 16, -1, 0.0f, p, &n, err, sizeof(err));
	Check(status == TRIAGE_OK && n == 2, "k = -1 predicts every label");
	Check(n == 2 && p[0].probability >= p[1].probability, "predictions are sorted best first");
	Check(n == 2 && fabsf(p[0].probability + p[1].probability - 1.0f) < 1e-5f,
		  "softmax probabilities sum to 1");
	status = FastTextPredict(model, &scratch, "", 0, 1, 0.0f, p, &n, err, sizeof(err));
	Check(status == TRIAGE_OK && n == 1, "empty input is predicted from </s>");
	status = FastTextPredict(model, &scratch, "x", 1, 0, 0.0f, p, &n, err, sizeof(err));
	Check(status == TRIAGE_INVALID_ARGUMENT, "k = 0 is rejected");
	status = FastTextPredict(model, &scratch, "stale", 5, 2, 1.5f, p, &n, err, sizeof(err));
	Check(status == TRIAGE_OK && n == 0, "a threshold above 1 leaves nothing");
	FastTextScratchFree(&scratch);
	FastTextFree(model);

	/* every truncation of the header and dictionary region, then a sample */
	for (size_t cut = 0; cut < len; cut += (cut < 4096 ? 1 : 211))
	{
		status = FastTextLoad(data, cut, NULL, &model, err, sizeof(err));
		if (status == TRIAGE_OK)
		{
			all_rejected = 0;
			FastTextFree(model);
		}
		else if (strstr(err, "truncated") != NULL)
			rejected++;
	}
	Check(all_rejected, "every truncated file is rejected");
	Check(rejected > 0, "truncation errors say \"truncated\"");
	free(data);
}

int
main(int argc, char **argv)
{
	TestHash();
	TestModel(argc > 1 ? argv[1] : "test/data");
	printf("1..%d\n", checks);
	return failures > 0;
}
