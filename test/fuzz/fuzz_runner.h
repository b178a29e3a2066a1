/*
 * fuzz_runner.h
 *		The driver shared by the standalone fuzz runners (fuzz_runner.c): it
 *		runs a libFuzzer harness on files and seeded mutations of them
 *		without libFuzzer, so that "make test" can use gcc's sanitizers.
 *
 * Each model format supplies a FuzzFormat: how large its fixed header is
 * (mutations favour it), where the structural fields of a seed file are
 * (mutations favour those too), and how many inputs its harness loaded.
 */
#ifndef FUZZ_RUNNER_H
#define FUZZ_RUNNER_H

#include <stddef.h>
#include <stdint.h>

#define MAX_FIELDS 256

/* A field of the seed file worth overwriting: its offset and width */
typedef struct Field
{
	size_t		offset;
	int			width;			/* 1, 4 or 8 bytes */
} Field;

typedef struct Seed
{
	const char *path;
	uint8_t    *data;
	size_t		len;
	Field		fields[MAX_FIELDS];
	int			nfields;
} Seed;

typedef struct FuzzFormat
{
	const char *program;		/* for the usage line */
	size_t		header_region;	/* bytes of fixed header */
	void		(*find_fields) (Seed *seed);	/* fill seed->fields */
	const long *loaded;			/* inputs the harness loaded */
	void		(*report) (void);	/* anything more to say at the end, or NULL */
} FuzzFormat;

/* Defined by each runner: its format */
extern const FuzzFormat FuzzRunnerFormat;

/* For find_fields */
extern size_t RandBelow(size_t n);
extern void AddField(Seed *seed, size_t offset, int width);
extern int32_t Peek32(const Seed *seed, size_t offset);
extern int64_t Peek64(const Seed *seed, size_t offset);

#endif
