/*
 * fuzz_runner.c
 *		Runs a libFuzzer harness without libFuzzer, so that "make test" can
 *		replay a corpus and mutations of it with gcc's sanitizers; linked with
 *		a format's runner (fuzz_fasttext_standalone.c, fuzz_crf_standalone.c),
 *		which says where that format's structure is.
 *
 *	PROGRAM [-n N] [-seed S] [-max_total_time SEC] [-crashdir DIR] FILE|DIR...
 *
 * Every file given is run as is (a directory: every file in it); with -n,
 * N mutations of each are run as well.  Mutations are seeded from S and the
 * file's bytes, so a run is reproducible.  They favour the format's fixed
 * header and the structural fields its runner finds by walking each seed
 * file, because most bytes of a model are weights whose mutation changes
 * nothing.  -max_total_time stops mutating after SEC seconds (the run is
 * then no longer reproducible in length, only in order).
 *
 * Prints "fuzz: N inputs, L loaded, R rejected" and exits 0.  A sanitizer
 * report or a broken invariant aborts the run; the input that did it is
 * first written to DIR (default $TMPDIR or /tmp) and named on stderr.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "triage_core.h"

#include "fuzz_runner.h"

extern int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Present when linked with a sanitizer runtime: run on its fatal reports */
extern void __sanitizer_set_death_callback(void (*callback) (void)) __attribute__((weak));

#define MAX_GROWTH 256
#define HEADER_REGION (FuzzRunnerFormat.header_region)

static TriageRng Rng;

/* What is running now, for the crash report */
static const char *CurrentPath;
static long CurrentMutation = -1;
static const uint8_t *CurrentData;
static size_t CurrentLen;
static const char *CrashDir;
static volatile sig_atomic_t Dumped;

/* -max_total_time: no mutation starts after Deadline (0: none) */
static time_t Deadline;
static int	Stopped;

size_t
RandBelow(size_t n)
{
	return n == 0 ? 0 : (size_t) (TriageRngNext(&Rng) % n);
}

static uint64_t
HashBytes(const uint8_t *data, size_t len)
{
	uint64_t	h = 14695981039346656037ULL;

	for (size_t i = 0; i < len; i++)
		h = (h ^ data[i]) * 1099511628211ULL;
	return h;
}

/* Write the current input where it can be replayed, and say where */
static void
DumpCurrent(void)
{
	char		path[4096];
	char		what[64];
	char		msg[4800];
	FILE	   *f;
	int			saved = 0;

	if (Dumped || CurrentData == NULL)
		return;
	Dumped = 1;
	snprintf(path, sizeof(path), "%s/fuzz-crash-%ld.bin", CrashDir, (long) getpid());
	f = fopen(path, "wb");
	if (f != NULL)
	{
		saved = fwrite(CurrentData, 1, CurrentLen, f) == CurrentLen;
		saved &= fclose(f) == 0;
	}
	if (CurrentMutation < 0)
		snprintf(what, sizeof(what), "as is");
	else
		snprintf(what, sizeof(what), "mutation %ld", CurrentMutation);
	snprintf(msg, sizeof(msg), "fuzz: crashed on %s, %s (%zu bytes); input saved to %s\n",
			 CurrentPath, what, CurrentLen, saved ? path : "(could not write)");
	if (write(STDERR_FILENO, msg, strlen(msg)) < 0)
		return;
}

static void
AbortHandler(int signo)
{
	DumpCurrent();
	signal(signo, SIG_DFL);
	raise(signo);
}

/*
 * Have the sanitizers save the input before they exit.  gcc links ASan and
 * UBSan as two libraries, each with its own copy of the callback setter.
 */
static void
RegisterDeathCallback(void)
{
	void	   *ubsan = dlopen("libubsan.so.1", RTLD_NOLOAD | RTLD_LAZY);

	__sanitizer_set_death_callback(DumpCurrent);
	if (ubsan != NULL)
	{
		void		(*set) (void (*) (void));

		*(void **) &set = dlsym(ubsan, "__sanitizer_set_death_callback");
		if (set != NULL && set != __sanitizer_set_death_callback)
			set(DumpCurrent);
	}
}

static void
RunOne(const uint8_t *data, size_t len, long *inputs)
{
	/* an exact-size copy, so that ASan sees any read past the end */
	uint8_t    *copy = malloc(len == 0 ? 1 : len);

	if (copy == NULL)
	{
		fprintf(stderr, "fuzz: out of memory\n");
		exit(2);
	}
	memcpy(copy, data, len);
	CurrentData = copy;
	CurrentLen = len;
	LLVMFuzzerTestOneInput(copy, len);
	CurrentData = NULL;
	free(copy);
	(*inputs)++;
}

void
AddField(Seed *seed, size_t offset, int width)
{
	if (seed->nfields < MAX_FIELDS && offset + width <= seed->len)
	{
		seed->fields[seed->nfields].offset = offset;
		seed->fields[seed->nfields].width = width;
		seed->nfields++;
	}
}

int32_t
Peek32(const Seed *seed, size_t offset)
{
	const uint8_t *b = seed->data + offset;

	return (int32_t) ((uint32_t) b[0] | (uint32_t) b[1] << 8 |
					  (uint32_t) b[2] << 16 | (uint32_t) b[3] << 24);
}

int64_t
Peek64(const Seed *seed, size_t offset)
{
	return (int64_t) ((uint64_t) (uint32_t) Peek32(seed, offset) |
					  (uint64_t) (uint32_t) Peek32(seed, offset + 4) << 32);
}

/*
 * An offset to mutate: often in the header region, often at a structural
 * field, otherwise anywhere.  len is the current length, at least 1.
 */
static size_t
PickOffset(const Seed *seed, size_t len)
{
	size_t		r = RandBelow(100);

	if (r < 40)
		return RandBelow(len < HEADER_REGION ? len : HEADER_REGION);
	if (r < 70 && seed->nfields > 0)
	{
		const Field *f = &seed->fields[RandBelow(seed->nfields)];

		if (f->offset < len)
			return f->offset;
	}
	return RandBelow(len);
}

/* Where to write a width-byte field: an aligned header slot or a known field */
static size_t
PickFieldOffset(const Seed *seed, size_t len, int width)
{
	size_t		r = RandBelow(100);

	if (r < 45)
	{
		size_t		limit = len < HEADER_REGION ? len : HEADER_REGION;

		/* header fields are 4-aligned, the 8-byte ones 8-aligned from offset 24 */
		if (limit >= (size_t) width)
			return RandBelow((limit - width) / 4 + 1) * 4;
	}
	else if (r < 85 && seed->nfields > 0)
	{
		for (int tries = 0; tries < 8; tries++)
		{
			const Field *f = &seed->fields[RandBelow(seed->nfields)];

			if (f->width >= width || tries == 7)
				return f->offset;
		}
	}
	return RandBelow(len);
}

static void
Store(uint8_t *buf, size_t len, size_t offset, uint64_t value, int width)
{
	for (int i = 0; i < width && offset + i < len; i++)
		buf[offset + i] = (uint8_t) (value >> (8 * i));
}

static uint64_t
InterestingValue(size_t len, int width, uint64_t old)
{
	static const int64_t values[] = {
		0, 1, 2, 3, 4, -1, -2, 10, 11, 12, 13, 255, 256, 257, 65535, 65536,
		INT32_MAX, INT32_MIN, (int64_t) INT32_MAX + 1, 1 << 30, 1 << 24,
		(int64_t) 1 << 32, (int64_t) 1 << 40, (int64_t) 1 << 62, INT64_MAX, INT64_MIN,
		0x7f800000, (int32_t) 0xff800000, 0x7f7fffff,	/* float inf, -inf, FLT_MAX */
		0x7fc00000, (int32_t) 0x80000000, 0x42c80000, 0x42c80001,	/* NaN, -0, 100 and just above */
		0x41200000, 0x41200001, 0x00000001, 15, 16, 64, 65, 4096, 4097,	/* 10, above, denormal, limits */
	};
	size_t		r = RandBelow(sizeof(values) / sizeof(values[0]) + 6);

	if (r < sizeof(values) / sizeof(values[0]))
	{
		int64_t		v = values[r];

		/* as an int32 field, the 64-bit values wrap: keep the extremes */
		if (width == 4 && (v > INT32_MAX || v < INT32_MIN))
			v = (v < 0) ? INT32_MIN : INT32_MAX;
		return (uint64_t) v;
	}
	switch (r - sizeof(values) / sizeof(values[0]))
	{
		case 0:
			return len;
		case 1:
			return len / 4;
		case 2:
			return len / 10;
		case 3:
			return old + 1;
		case 4:
			return old - 1;
		default:
			return width == 4 ? old << 1 : old * 256;
	}
}

/* Replace a little-endian field of width bytes (4 or 8) with an interesting value */
static void
MutateField(const Seed *seed, uint8_t *buf, size_t n, int width)
{
	size_t		off;
	uint64_t	old = 0;

	if (n < (size_t) width)
		return;
	off = PickFieldOffset(seed, n, width);
	for (int i = width - 1; i >= 0; i--)
		old = old << 8 | (off + i < n ? buf[off + i] : 0);
	Store(buf, n, off, InterestingValue(n, width, old), width);
}

/* Apply one random mutation to buf[0..*len); capacity is buf's size */
static void
MutateOnce(const Seed *seed, uint8_t *buf, size_t *len, size_t capacity)
{
	size_t		n = *len;

	switch (RandBelow(11))
	{
		case 0:					/* flip a bit */
		case 1:
			if (n > 0)
				buf[PickOffset(seed, n)] ^= (uint8_t) (1u << RandBelow(8));
			break;
		case 2:					/* overwrite a byte */
			if (n > 0)
			{
				static const uint8_t bytes[] = {0, 1, 2, 0x7f, 0x80, 0xff, ' ', '_'};

				buf[PickOffset(seed, n)] = RandBelow(2) ? (uint8_t) TriageRngNext(&Rng) :
					bytes[RandBelow(sizeof(bytes))];
			}
			break;
		case 3:					/* truncate */
			if (n > 0)
				*len = RandBelow(4) == 0 ? RandBelow(n) : PickOffset(seed, n) + RandBelow(2);
			if (*len > n)
				*len = n;
			break;
		case 4:					/* an int32 field */
		case 5:
			MutateField(seed, buf, n, 4);
			break;
		case 6:					/* an int64 field */
			MutateField(seed, buf, n, 8);
			break;
		case 7:					/* append bytes */
			{
				size_t		add = 1 + RandBelow(16);

				if (n + add <= capacity)
				{
					for (size_t i = 0; i < add; i++)
						buf[n + i] = RandBelow(2) ? (uint8_t) TriageRngNext(&Rng) : 0;
					*len = n + add;
				}
			}
			break;
		case 8:					/* delete a few bytes, shifting the rest */
			if (n > 0)
			{
				size_t		at = PickOffset(seed, n);
				size_t		del = 1 + RandBelow(16);

				if (del > n - at)
					del = n - at;
				memmove(buf + at, buf + at + del, n - at - del);
				*len = n - del;
			}
			break;
		case 9:					/* insert a few bytes */
			{
				size_t		at = n > 0 ? PickOffset(seed, n) : 0;
				size_t		add = 1 + RandBelow(16);

				if (n + add <= capacity)
				{
					memmove(buf + at + add, buf + at, n - at);
					for (size_t i = 0; i < add; i++)
						buf[at + i] = (uint8_t) TriageRngNext(&Rng);
					*len = n + add;
				}
			}
			break;
		case 10:				/* copy one known field onto another: duplicate keys and names */
			if (seed->nfields > 1)
			{
				const Field *from = &seed->fields[RandBelow(seed->nfields)];
				const Field *to = &seed->fields[RandBelow(seed->nfields)];
				int			width = from->width < to->width ? from->width : to->width;

				if (from->offset + width <= n && to->offset + width <= n)
					memmove(buf + to->offset, buf + from->offset, width);
			}
			break;
	}
}

static void
RunSeed(Seed *seed, long mutations, uint64_t base, long *inputs)
{
	size_t		capacity = seed->len + MAX_GROWTH;
	uint8_t    *buf = malloc(capacity);

	if (buf == NULL)
	{
		fprintf(stderr, "fuzz: out of memory\n");
		exit(2);
	}
	CurrentPath = seed->path;
	CurrentMutation = -1;
	RunOne(seed->data, seed->len, inputs);

	Rng.state = base ^ HashBytes(seed->data, seed->len);
	seed->nfields = 0;
	FuzzRunnerFormat.find_fields(seed);
	for (long i = 0; i < mutations; i++)
	{
		size_t		len = seed->len;

		if (Deadline != 0 && time(NULL) >= Deadline)
		{
			Stopped = 1;
			break;
		}
		int			steps = 1 + (RandBelow(4) == 0 ? (int) RandBelow(3) : 0);

		memcpy(buf, seed->data, seed->len);
		for (int s = 0; s < steps; s++)
			MutateOnce(seed, buf, &len, capacity);
		CurrentMutation = i;
		RunOne(buf, len, inputs);
	}
	free(buf);
}

static int
ReadFile(const char *path, Seed *seed)
{
	FILE	   *f = fopen(path, "rb");
	long		size;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
		fseek(f, 0, SEEK_SET) != 0)
	{
		perror(path);
		if (f != NULL)
			fclose(f);
		return 0;
	}
	seed->path = path;
	seed->len = (size_t) size;
	seed->data = malloc(seed->len == 0 ? 1 : seed->len);
	if (seed->data == NULL || fread(seed->data, 1, seed->len, f) != seed->len)
	{
		fprintf(stderr, "fuzz: could not read %s\n", path);
		fclose(f);
		free(seed->data);
		return 0;
	}
	fclose(f);
	return 1;
}

static int
CompareNames(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Run a file, or every regular file of a directory in name order */
static int
RunPath(const char *path, long mutations, uint64_t base, long *inputs)
{
	struct stat st;
	int			ok = 1;

	if (stat(path, &st) != 0)
	{
		perror(path);
		return 0;
	}
	if (S_ISDIR(st.st_mode))
	{
		DIR		   *dir = opendir(path);
		struct dirent *de;
		char	  **names = NULL;
		size_t		nnames = 0;

		if (dir == NULL)
		{
			perror(path);
			return 0;
		}
		while ((de = readdir(dir)) != NULL)
		{
			char	   *full;
			struct stat fst;

			if (de->d_name[0] == '.')
				continue;
			full = malloc(strlen(path) + strlen(de->d_name) + 2);
			if (full == NULL)
				exit(2);
			sprintf(full, "%s/%s", path, de->d_name);
			if (stat(full, &fst) != 0 || !S_ISREG(fst.st_mode))
			{
				free(full);
				continue;
			}
			names = realloc(names, sizeof(char *) * (nnames + 1));
			if (names == NULL)
				exit(2);
			names[nnames++] = full;
		}
		closedir(dir);
		if (nnames > 0)
			qsort(names, nnames, sizeof(char *), CompareNames);
		for (size_t i = 0; i < nnames; i++)
		{
			ok &= RunPath(names[i], mutations, base, inputs);
			free(names[i]);
		}
		free(names);
		return ok;
	}
	else
	{
		Seed		seed;

		if (!ReadFile(path, &seed))
			return 0;
		RunSeed(&seed, mutations, base, inputs);
		free(seed.data);
		return 1;
	}
}

static void
Usage(void)
{
	fprintf(stderr, "usage: %s [-n N] [-seed S] [-max_total_time SEC] [-crashdir DIR] FILE|DIR...\n",
			FuzzRunnerFormat.program);
	exit(2);
}

int
main(int argc, char **argv)
{
	long		mutations = 0;
	uint64_t	base = 1;
	long		inputs = 0;
	int			npaths = 0;
	int			ok = 1;

	CrashDir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	for (int i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
			mutations = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "-seed") == 0 && i + 1 < argc)
			base = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "-max_total_time") == 0 && i + 1 < argc)
			Deadline = time(NULL) + strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "-crashdir") == 0 && i + 1 < argc)
			CrashDir = argv[++i];
		else if (argv[i][0] == '-')
			Usage();
		else
			npaths++;
	}
	if (npaths == 0 || mutations < 0)
		Usage();

	/* sanitizers handle SIGSEGV themselves and report through the callback */
	if (__sanitizer_set_death_callback)
		RegisterDeathCallback();
	else
	{
		signal(SIGSEGV, AbortHandler);
		signal(SIGFPE, AbortHandler);
	}
	signal(SIGABRT, AbortHandler);

	for (int i = 1; i < argc; i++)
	{
		if (argv[i][0] == '-')
		{
			i++;
			continue;
		}
		ok &= RunPath(argv[i], mutations, base, &inputs);
	}
	printf("fuzz: %ld inputs, %ld loaded, %ld rejected\n",
		   inputs, *FuzzRunnerFormat.loaded, inputs - *FuzzRunnerFormat.loaded);
	if (FuzzRunnerFormat.report != NULL)
		FuzzRunnerFormat.report();
	if (Stopped)
		printf("fuzz: stopped at the time limit\n");
	return ok ? 0 : 2;
}
