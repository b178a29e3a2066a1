/*
 * classify_core.c
 *		The classify path of the core alone, without PostgreSQL: load a
 *		fastText model, predict every line of a text file with k = -1, time
 *		it, and optionally print every prediction exactly.
 *
 * Usage: classify_core MODEL LINES [PASSES] [--dump]
 *
 * Prints to stderr the load time, and the best of PASSES passes (default 3)
 * over the lines in microseconds per line.  With --dump, prints to stdout
 * one line per input line: each prediction as "label:probability" with the
 * probability in C99 hex-float (%a), so that two builds can be compared for
 * exact equality with cmp.  Built by hand, with the extension's flags:
 *
 *   gcc -O3 -ffp-contract=off -Isrc test/bench/classify_core.c \
 *       $(make -s -f src/core.mk print-CORE_SRCS) -lm -o classify_core
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fasttext.h"
#include "fasttext_internal.h"
#include "../core/read_file.h"

static double
Now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

int
main(int argc, char **argv)
{
	size_t		model_len,
				text_len;
	uint8_t    *model_bytes;
	char	   *text;
	FastTextModel *model;
	FastTextScratch scratch;
	FastTextPrediction *predictions;
	char		err[256];
	int			passes = argc > 3 ? atoi(argv[3]) : 3;
	bool		dump = argc > 4 && strcmp(argv[4], "--dump") == 0;
	double		t0,
				best = -1;
	long		nlines = 0;

	if (argc < 3)
	{
		fprintf(stderr, "usage: %s MODEL LINES [PASSES] [--dump]\n", argv[0]);
		return 2;
	}
	model_bytes = ReadFile(argv[1], &model_len);
	text = (char *) ReadFile(argv[2], &text_len);
	if (model_bytes == NULL || text == NULL)
	{
		fprintf(stderr, "cannot read %s or %s\n", argv[1], argv[2]);
		return 1;
	}
	t0 = Now();
	if (FastTextLoad(model_bytes, model_len, NULL, &model, err, sizeof(err)) != TRIAGE_OK)
	{
		fprintf(stderr, "load: %s\n", err);
		return 1;
	}
	fprintf(stderr, "load: %.3f ms\n", (Now() - t0) * 1e3);
	predictions = malloc(sizeof(FastTextPrediction) * (size_t) model->nlabels);
	FastTextScratchInit(&scratch, NULL);

	for (int pass = 0; pass < (passes > 0 ? passes : 1); pass++)
	{
		size_t		pos = 0;
		double		t;

		nlines = 0;
		t0 = Now();
		while (pos < text_len)
		{
			const char *nl = memchr(text + pos, '\n', text_len - pos);
			size_t		end = nl ? (size_t) (nl - text) : text_len;
			int32_t		n = 0;

			if (FastTextPredict(model, &scratch, text + pos, end - pos, -1, 0.0f,
								predictions, &n, err, sizeof(err)) != TRIAGE_OK)
			{
				fprintf(stderr, "line %ld: %s\n", nlines + 1, err);
				return 1;
			}
			if (dump && pass == 0)
			{
				for (int32_t i = 0; i < n; i++)
					printf("%s%d:%a", i ? " " : "", predictions[i].label,
						   (double) predictions[i].probability);
				putchar('\n');
			}
			nlines++;
			pos = end + 1;
		}
		t = Now() - t0;
		if (best < 0 || t < best)
			best = t;
	}
	fprintf(stderr, "%ld lines, best of %d: %.3f us per line\n", nlines, passes,
			best / (double) nlines * 1e6);
	FastTextScratchFree(&scratch);
	free(predictions);
	FastTextFree(model);
	free(model_bytes);
	free(text);
	return 0;
}
