/*
 * fuzz_linear_standalone.c
 *		Runs the libFuzzer harness of the linear model loader without
 *		libFuzzer, so that "make test" can replay the corpus and mutations of
 *		it with gcc's sanitizers.  This file says where the format's
 *		structure is; the driver is fuzz_runner.c.
 *
 *	fuzz_linear_standalone [-n N] [-seed S] [-max_total_time SEC] [-crashdir DIR] FILE|DIR...
 *
 * Mutations favour the 96-byte header (counts, buckets, flags, n-gram
 * ranges, options, reserved bytes) and the values found by walking each
 * seed (see the format in src/linear_model.c): label lengths, biases, the
 * first, last and a few random buckets, IDFs, scales and weights.  The
 * harness repairs the checksum of every mutant, so a mutation reaches
 * every check.  Prints "fuzz: N inputs, L loaded, R rejected".
 */
#include <stdint.h>

#include "fuzz_runner.h"

extern long FuzzLinearLoaded;

static void
FindFields(Seed *seed)
{
	size_t		pos = FuzzRunnerFormat.header_region;
	uint32_t	nlabels,
				nfeatures,
				flags;
	size_t		per;

	for (size_t off = 8; off < 48; off += 4)
		AddField(seed, off, 4);
	for (size_t off = 48; off < 72; off += 8)
		AddField(seed, off, 8);
	if (seed->len < FuzzRunnerFormat.header_region + 8)
		return;
	nlabels = (uint32_t) Peek32(seed, 16);
	nfeatures = (uint32_t) Peek32(seed, 20);
	flags = (uint32_t) Peek32(seed, 28);
	if (nlabels < 2 || nlabels > 64)
		return;
	for (uint32_t l = 0; l < nlabels; l++)
	{
		if (pos + 2 > seed->len)
			return;
		AddField(seed, pos, 1);
		pos += 2 + (size_t) (seed->data[pos] | (seed->data[pos + 1] << 8));
	}
	if (pos + 4 * (size_t) nlabels > seed->len)
		return;
	AddField(seed, pos, 4);
	pos += 4 * (size_t) nlabels;
	per = (flags & 1) ? 12 + nlabels : 8 + 4 * (size_t) nlabels;
	if (nfeatures == 0 || (seed->len - pos) / per < nfeatures)
		return;
	/* buckets, IDFs, scales (or float weights), then int8 weights */
	AddField(seed, pos, 4);
	AddField(seed, pos + 4 * ((size_t) nfeatures - 1), 4);
	for (int i = 0; i < 4; i++)
	{
		size_t		r = RandBelow(nfeatures);

		AddField(seed, pos + 4 * r, 4);
		AddField(seed, pos + 4 * ((size_t) nfeatures + r), 4);
		AddField(seed, pos + 4 * (2 * (size_t) nfeatures + r), 4);
	}
	pos += 8 * (size_t) nfeatures;
	if (flags & 1)
	{
		pos += 4 * (size_t) nfeatures;
		for (int i = 0; i < 6; i++)
			AddField(seed, pos + RandBelow((size_t) nfeatures * nlabels), 1);
	}
}

const FuzzFormat FuzzRunnerFormat = {
	.program = "fuzz_linear_standalone",
	.header_region = 96,
	.find_fields = FindFields,
	.loaded = &FuzzLinearLoaded,
	.report = NULL
};
