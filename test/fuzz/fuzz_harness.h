/*
 * fuzz_harness.h
 *		What the loader harnesses (fuzz_fasttext_load.c, fuzz_crf_load.c)
 *		share: an allocator that counts live bytes, a long input text, and
 *		aborting on a broken invariant, such as what a failed load leaves.
 */
#ifndef TRIAGE_FUZZ_HARNESS_H
#define TRIAGE_FUZZ_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "triage_core.h"

/*
 * malloc that counts live bytes and aborts, naming the phase, when a model
 * would make the loader or the code using it hold more than a limit (a
 * loader promises that a file cannot make it allocate much more than its
 * own bytes).  Each block carries its size in a header padded to 16 bytes,
 * keeping malloc's alignment.  Use it as a TriageAllocator with a Tracker
 * as context.
 */

typedef struct TrackedHeader
{
	size_t		size;
	size_t		pad;
} TrackedHeader;

typedef struct Tracker
{
	size_t		live;
	size_t		limit;			/* abort when live would exceed it */
	const char *phase;
} Tracker;

static void *
TrackedAlloc(void *context, size_t size)
{
	Tracker    *tracker = context;
	TrackedHeader *header;

	if (size > tracker->limit || tracker->live > tracker->limit - size)
	{
		fprintf(stderr, "fuzz: %s allocates %zu bytes with %zu live, over the limit of %zu\n",
				tracker->phase, size, tracker->live, tracker->limit);
		abort();
	}
	header = malloc(sizeof(TrackedHeader) + (size == 0 ? 1 : size));
	if (header == NULL)
		return NULL;
	header->size = size;
	tracker->live += size;
	return header + 1;
}

static void
TrackedFree(void *context, void *pointer)
{
	Tracker    *tracker = context;
	TrackedHeader *header = (TrackedHeader *) pointer - 1;

	tracker->live -= header->size;
	free(header);
}

/* Abort on a broken invariant, so the fuzzer records the input */
static void
Fail(const char *what)
{
	fprintf(stderr, "fuzz: invariant broken: %s\n", what);
	abort();
}

/*
 * What a load that failed must leave: no model, a status that says why
 * (a bad file, an unsupported one, or no memory), a message, and nothing
 * allocated.
 */
static void
CheckFailedLoad(TriageStatus status, const void *model, const char *errbuf, const Tracker *tracker)
{
	if (model != NULL)
		Fail("a failed load returned a model");
	if (status != TRIAGE_INVALID_MODEL && status != TRIAGE_UNSUPPORTED &&
		status != TRIAGE_OUT_OF_MEMORY)
		Fail("load failed with an unexpected status");
	if (errbuf[0] == '\0')
		Fail("load failed without a message");
	if (tracker->live != 0)
		Fail("a failed load leaked memory");
}

/*
 * Fill buf[0..size) (NUL-terminated) once: words repeated to words_bytes,
 * then one long token of letters (for the tokenizer's and character
 * n-grams' limits).
 */
static void
FillLongText(char *buf, size_t size, const char *const *words, int nwords, size_t words_bytes)
{
	size_t		pos = 0;

	if (buf[0] != '\0')
		return;
	for (int i = 0; pos < words_bytes; i++)
	{
		size_t		len = strlen(words[i % nwords]);

		memcpy(buf + pos, words[i % nwords], len);
		pos += len;
	}
	while (pos < size - 1)
	{
		buf[pos] = (char) ('a' + pos % 26);
		pos++;
	}
	buf[pos] = '\0';
}

#endif
