/*
 * triage_core.h
 *		What every core (server-independent) file shares: the status codes,
 *		the allocator interface, and error-message formatting.
 *
 * Core code never calls palloc or ereport.  It allocates through a
 * TriageAllocator (palloc in a memory context inside the server, malloc in
 * the fuzz harness and tools) and returns a TriageStatus with a message that
 * the glue turns into an ereport with the matching SQLSTATE.
 */
#ifndef TRIAGE_CORE_H
#define TRIAGE_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum TriageStatus
{
	TRIAGE_OK = 0,
	TRIAGE_INVALID_MODEL,		/* the model bytes are malformed or inconsistent */
	TRIAGE_UNSUPPORTED,			/* well-formed but not something we can run */
	TRIAGE_INVALID_ARGUMENT,	/* the caller passed a bad argument */
	TRIAGE_OUT_OF_MEMORY,
	TRIAGE_NUMERIC				/* the computation produced NaN */
} TriageStatus;

typedef struct TriageAllocator
{
	/* Returns NULL on failure; memory need not be zeroed */
	void	   *(*alloc) (void *context, size_t size);
	void		(*free) (void *context, void *pointer);
	void	   *context;
} TriageAllocator;

/* The allocator the core uses when the caller passes NULL: malloc and free */
extern const TriageAllocator TriageMallocAllocator;

/*
 * Long core loops call TRIAGE_CHECK_INTERRUPTS().  The server sets the hook
 * to CHECK_FOR_INTERRUPTS, which may not return (it longjmps); that is safe
 * because inside the server the core allocates only through palloc.
 */
extern void (*TriageInterruptHook) (void);

#define TRIAGE_CHECK_INTERRUPTS() \
	do { \
		if (TriageInterruptHook != NULL) \
			TriageInterruptHook(); \
	} while (0)

/*
 * Code that runs inside a library which allocates with malloc (liblbfgs) must
 * not longjmp out of it.  It asks TRIAGE_CANCEL_PENDING() instead, stops the
 * library cleanly, frees what it holds, and then calls
 * TRIAGE_CHECK_INTERRUPTS() to let the server raise the cancel.
 */
extern bool (*TriageCancelPendingHook) (void);

#define TRIAGE_CANCEL_PENDING() \
	(TriageCancelPendingHook != NULL && TriageCancelPendingHook())

/*
 * The core's random numbers: splitmix64, small and fast, and the same
 * sequence on every platform, so that training is reproducible for a seed.
 */
typedef struct TriageRng
{
	uint64_t	state;
} TriageRng;

static inline uint64_t
TriageRngNext(TriageRng *rng)
{
	uint64_t	z = (rng->state += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* uniform in [0, 1) */
static inline double
TriageRngUniform(TriageRng *rng)
{
	return (double) (TriageRngNext(rng) >> 11) * (1.0 / 9007199254740992.0);
}

/* One label of a classifier's answer, whatever its kind */
typedef struct TriagePrediction
{
	int32_t		label;			/* label index, 0 .. nlabels - 1 */
	float		probability;
	float		score;			/* the kind's own ranking score (fastText: log(p + 1e-5)) */
} TriagePrediction;

/* MurmurHash3's 64-bit finalizer: every input bit moves every output bit */
static inline uint64_t
TriageFmix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/*
 * The checksum that ends a model file pg_triage writes (extractor and
 * linear formats), over every byte before it; seed tells the formats apart.
 * Catches corruption, not forgery: files come from the server's own tables.
 */
extern uint64_t TriageChecksum(uint64_t seed, const uint8_t *bytes, size_t len);

extern void *TriageAlloc(const TriageAllocator *allocator, size_t size);
extern void *TriageAllocZero(const TriageAllocator *allocator, size_t size);
extern void *TriageAllocArray(const TriageAllocator *allocator, size_t count, size_t size);
extern void TriageFree(const TriageAllocator *allocator, void *pointer);

extern TriageStatus TriageError(TriageStatus status, char *errbuf, size_t errlen,
								const char *format,...)
			__attribute__((format(printf, 4, 5)));

#endif
