/*
 * fuzz_alloc.h
 *		The fuzz harnesses' allocator: malloc that counts live bytes and
 *		aborts, naming the phase, when a model would make the loader or the
 *		code using it hold more than a limit (a loader promises that a file
 *		cannot make it allocate much more than its own bytes).  Each block
 *		carries its size in a header padded to 16 bytes, keeping malloc's
 *		alignment.  Use it as a TriageAllocator with a Tracker as context.
 */
#ifndef TRIAGE_FUZZ_ALLOC_H
#define TRIAGE_FUZZ_ALLOC_H

#include <stdio.h>
#include <stdlib.h>

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

#endif
