/*
 * fuzz_crf_standalone.c
 *		Runs the libFuzzer harness of the CRF model loader without libFuzzer,
 *		so that "make test" can replay the corpus and mutations of it with
 *		gcc's sanitizers.  This file says where the format's structure is;
 *		the driver (options, mutations, crash reports) is fuzz_runner.c.
 *
 *	fuzz_crf_standalone [-n N] [-seed S] [-max_total_time SEC] [-crashdir DIR] FILE|DIR...
 *
 * Every file given is run as is (a directory: every file in it); with -n,
 * N mutations of each are run as well.  Mutations are seeded from S and the
 * file's bytes, so a run is reproducible.  They favour the 64-byte header
 * (counts, feature groups, max_tokens, reserved bytes) and the other values
 * the format's structure hangs on, found by walking each seed file: field
 * name lengths, a few transition weights, lexicon masks and keys, feature
 * keys, label counts and scales, labels and weights.  The harness repairs
 * the checksum of every mutant, so a mutation reaches every check.
 * -max_total_time stops mutating after SEC seconds (the run is then no
 * longer reproducible in length, only in order).
 *
 * Prints "fuzz: N inputs, L loaded, R rejected" (each input loads at most
 * once, as is or repaired) and exits 0.  A sanitizer report or a broken
 * invariant aborts the run; the input that did it is first written to DIR
 * (default $TMPDIR or /tmp) and named on stderr.
 */
#include <stdint.h>

#include "fuzz_runner.h"

extern long FuzzCrfLoaded;

/*
 * Record the offsets of the seed's structural fields, as far as the seed
 * parses (see the format in src/crf_model.c); the header is covered by
 * FuzzRunnerFormat.header_region anyway.
 */
static void
FindFields(Seed *seed)
{
	size_t		pos = FuzzRunnerFormat.header_region;
	uint32_t	nfields;
	uint64_t	nfeatures,
				npairs,
				nlex,
				labels;

	for (size_t off = 12; off < 24; off += 4)
		AddField(seed, off, 4);
	for (size_t off = 24; off < 64; off += 8)
		AddField(seed, off, 8);
	if (seed->len < FuzzRunnerFormat.header_region + 8)
		return;
	nfields = (uint32_t) Peek32(seed, 12);
	nfeatures = (uint64_t) Peek64(seed, 24);
	npairs = (uint64_t) Peek64(seed, 32);
	nlex = (uint64_t) Peek64(seed, 40);
	if (nfields < 1 || nfields > 64)
		return;
	for (uint32_t f = 0; f < nfields; f++)
	{
		if (pos >= seed->len)
			return;
		AddField(seed, pos, 1);
		pos += 1 + seed->data[pos];
	}
	/* transitions, start and end: the first, one forbidden move, a few at random */
	labels = 2 * (uint64_t) nfields + 1;
	if ((labels * labels + 2 * labels) * 4 > seed->len - pos)
		return;
	AddField(seed, pos, 4);
	AddField(seed, pos + 4 * 2, 4);		/* O -> I-0 */
	for (int i = 0; i < 3; i++)
		AddField(seed, pos + 4 * RandBelow(labels * labels + 2 * labels), 4);
	pos += (labels * labels + 2 * labels) * 4;
	/* lexicon (key, mask) pairs */
	if (nlex > (seed->len - pos) / 16)
		return;
	for (uint64_t i = 0; i < nlex; i++)
		if (i < 2 || i + 1 == nlex || RandBelow(64) == 0)
		{
			AddField(seed, pos + 16 * i, 8);
			AddField(seed, pos + 16 * i + 8, 8);
		}
	pos += 16 * nlex;
	/* feature keys, label counts, scales, then labels and weights */
	if (nfeatures > (seed->len - pos) / 16 || npairs > (seed->len - pos - 16 * nfeatures) / 2)
		return;
	for (uint64_t i = 0; i < nfeatures; i++)
		if (i < 2 || i + 1 == nfeatures || RandBelow(128) == 0)
		{
			AddField(seed, pos + 8 * i, 8);
			AddField(seed, pos + 8 * nfeatures + 4 * i, 4);
			AddField(seed, pos + 12 * nfeatures + 4 * i, 4);
		}
	pos += 16 * nfeatures;
	for (int i = 0; i < 6 && npairs > 0; i++)
	{
		AddField(seed, pos + RandBelow(npairs), 1);
		AddField(seed, pos + npairs + RandBelow(npairs), 1);
	}
	AddField(seed, pos, 1);
	AddField(seed, pos + npairs - 1, 1);
}

const FuzzFormat FuzzRunnerFormat = {
	.program = "fuzz_crf_standalone",
	.header_region = 64,
	.find_fields = FindFields,
	.loaded = &FuzzCrfLoaded,
	.report = NULL
};
