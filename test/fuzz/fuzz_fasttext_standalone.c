/*
 * fuzz_fasttext_standalone.c
 *		Runs the libFuzzer harness of the fastText loader without libFuzzer,
 *		so that "make test" can replay the corpus with gcc's sanitizers.
 *		This file says where the format's structure is; the driver
 *		(options, mutations, crash reports) is fuzz_runner.c.
 *
 *	fuzz_fasttext_standalone [-n N] [-seed S] [-max_total_time SEC] [-crashdir DIR] FILE|DIR...
 *
 * Every file given is run as is (a directory: every file in it); with -n,
 * N mutations of each are run as well.  Mutations are seeded from S and the
 * file's bytes, so a run is reproducible.  They favour the fixed header
 * (magic, version, args, dictionary header: the first ~120 bytes) and the
 * other fields a model's structure hangs on (entry counts and types, the
 * quantization flags, matrix and quantizer sizes), found by walking each
 * seed file, because most bytes of a model are weights whose mutation
 * changes nothing.
 *
 * Prints "fuzz: N inputs, L loaded, R rejected" and exits 0.  A sanitizer
 * report or a broken invariant aborts the run; the input that did it is
 * first written to DIR (default $TMPDIR or /tmp) and named on stderr.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_runner.h"

extern long FuzzFastTextLoaded;
extern long FuzzFastTextNaN;

/* The quantizer at *pos: four int32 sizes, then dim * 256 floats */
static int
WalkQuantizer(Seed *seed, size_t *pos)
{
	int32_t		dim;

	if (*pos + 16 > seed->len)
		return 0;
	for (int i = 0; i < 4; i++)
		AddField(seed, *pos + 4 * i, 4);
	dim = Peek32(seed, *pos);
	if (dim <= 0 || (uint64_t) dim * 1024 > seed->len - *pos - 16)
		return 0;
	*pos += 16 + (size_t) dim * 1024;
	return 1;
}

/* The matrix at *pos, dense or quantized */
static int
WalkMatrix(Seed *seed, size_t *pos, int quantized)
{
	if (!quantized)
	{
		int64_t		m,
					n;

		if (*pos + 16 > seed->len)
			return 0;
		AddField(seed, *pos, 8);
		AddField(seed, *pos + 8, 8);
		m = Peek64(seed, *pos);
		n = Peek64(seed, *pos + 8);
		*pos += 16;
		if (m < 0 || n < 0 || (n > 0 && (uint64_t) m > (seed->len - *pos) / 4 / (uint64_t) n))
			return 0;
		/* a few weights, where an infinity or a NaN can go */
		for (int i = 0; i < 4 && m * n > 0; i++)
			AddField(seed, *pos + 4 * RandBelow((size_t) (m * n)), 4);
		*pos += (size_t) (m * n * 4);
		return 1;
	}
	else
	{
		int			qnorm;
		int64_t		m;
		int32_t		codesize;

		if (*pos + 21 > seed->len)
			return 0;
		AddField(seed, *pos, 1);
		AddField(seed, *pos + 1, 8);
		AddField(seed, *pos + 9, 8);
		AddField(seed, *pos + 17, 4);
		qnorm = seed->data[*pos];
		m = Peek64(seed, *pos + 1);
		codesize = Peek32(seed, *pos + 17);
		*pos += 21;
		if (codesize < 0 || (size_t) codesize > seed->len - *pos)
			return 0;
		*pos += (size_t) codesize;
		if (!WalkQuantizer(seed, pos))
			return 0;
		if (qnorm)
		{
			if (m < 0 || (uint64_t) m > seed->len - *pos)
				return 0;
			*pos += (size_t) m;
			if (!WalkQuantizer(seed, pos))
				return 0;
		}
		return 1;
	}
}

/*
 * Record the offsets of the seed's structural fields, as far as the seed
 * parses; the fixed header is covered by FuzzRunnerFormat.header_region anyway.
 */
static void
FindFields(Seed *seed)
{
	size_t		pos = 92;
	int32_t		size;
	int64_t		pruneidx;
	int			quant;

	for (size_t off = 0; off + 4 <= 64; off += 4)
		AddField(seed, off, off == 56 ? 8 : 4);
	AddField(seed, 64, 4);
	AddField(seed, 68, 4);
	AddField(seed, 72, 4);
	AddField(seed, 76, 8);
	AddField(seed, 84, 8);
	if (seed->len < pos)
		return;
	size = Peek32(seed, 64);
	pruneidx = Peek64(seed, 84);
	for (int32_t i = 0; i < size; i++)
	{
		const uint8_t *nul = memchr(seed->data + pos, 0, seed->len - pos);

		if (nul == NULL || (size_t) (nul - seed->data) + 10 > seed->len)
			return;
		pos = (size_t) (nul - seed->data) + 1;
		/* the first and last few entries: words, the word/label boundary, labels */
		if (i < 3 || i >= size - 3 || RandBelow(64) == 0)
		{
			AddField(seed, pos, 8);
			AddField(seed, pos + 8, 1);
		}
		pos += 9;
	}
	for (int64_t i = 0; i < pruneidx; i++)
	{
		if (pos + 8 > seed->len)
			return;
		if (i < 2 || RandBelow(64) == 0)
		{
			AddField(seed, pos, 4);
			AddField(seed, pos + 4, 4);
		}
		pos += 8;
	}
	if (pos >= seed->len)
		return;
	AddField(seed, pos, 1);
	quant = seed->data[pos++] == 1;
	if (!WalkMatrix(seed, &pos, quant) || pos >= seed->len)
		return;
	AddField(seed, pos, 1);
	quant = quant && seed->data[pos] == 1;
	pos++;
	(void) WalkMatrix(seed, &pos, quant);
}

/* NaN probabilities are not errors, but worth knowing about */
static void
ReportNaN(void)
{
	if (FuzzFastTextNaN > 0)
		fprintf(stderr, "fuzz: %ld predictions returned a NaN probability without an error\n",
				FuzzFastTextNaN);
}

const FuzzFormat FuzzRunnerFormat = {
	.program = "fuzz_fasttext_standalone",
	.header_region = 120,
	.find_fields = FindFields,
	.loaded = &FuzzFastTextLoaded,
	.report = ReportNaN
};
