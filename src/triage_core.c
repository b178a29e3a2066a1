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
