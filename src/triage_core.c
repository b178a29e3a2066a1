/*
 * triage_core.c
 *		Allocation and error helpers shared by the core files.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "triage_core.h"

static void *
MallocAlloc(void *context, size_t size)
{
	(void) context;
	return malloc(size == 0 ? 1 : size);
}

static void
MallocFree(void *context, void *pointer)
{
	(void) context;
	free(pointer);
}

void		(*TriageInterruptHook) (void) = NULL;
bool		(*TriageCancelPendingHook) (void) = NULL;

const TriageAllocator TriageMallocAllocator = {MallocAlloc, MallocFree, NULL};

void *
TriageAlloc(const TriageAllocator *allocator, size_t size)
{
	if (allocator == NULL)
		allocator = &TriageMallocAllocator;
	return allocator->alloc(allocator->context, size);
}

void *
TriageAllocZero(const TriageAllocator *allocator, size_t size)
{
	void	   *p = TriageAlloc(allocator, size);

	if (p != NULL)
		memset(p, 0, size);
	return p;
}

/* count * size, or NULL when the product overflows */
void *
TriageAllocArray(const TriageAllocator *allocator, size_t count, size_t size)
{
	if (size != 0 && count > SIZE_MAX / size)
		return NULL;
	return TriageAlloc(allocator, count * size);
}

void
TriageFree(const TriageAllocator *allocator, void *pointer)
{
	if (pointer == NULL)
		return;
	if (allocator == NULL)
		allocator = &TriageMallocAllocator;
	allocator->free(allocator->context, pointer);
}

TriageStatus
TriageError(TriageStatus status, char *errbuf, size_t errlen, const char *format,...)
{
	va_list		args;

	if (errbuf != NULL && errlen > 0)
	{
		va_start(args, format);
		vsnprintf(errbuf, errlen, format, args);
		va_end(args);
	}
	return status;
}

uint64_t
TriageChecksum(uint64_t seed, const uint8_t *bytes, size_t len)
{
	uint64_t	h = seed ^ (uint64_t) len;
	size_t		i = 0;

	/* 8 bytes at a time, read little-endian on any host */
	for (; i + 8 <= len; i += 8)
	{
		uint64_t	w = 0;

		for (int b = 7; b >= 0; b--)
			w = (w << 8) | bytes[i + b];
		h ^= w * 0x87C37B91114253D5ULL;
		h = ((h << 31) | (h >> 33)) * 0x4CF5AD432745937FULL;
	}
	for (; i < len; i++)
	{
		h ^= bytes[i];
		h *= 0x100000001b3ULL;
	}
	return TriageFmix64(h);
}
