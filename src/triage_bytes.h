/*
 * triage_bytes.h
 *		Little-endian numbers in the model files pg_triage writes (the
 *		extractor's and the linear kind's), the same on every host: a writer
 *		into a buffer sized beforehand, and loads from bytes already checked
 *		to be there.
 */
#ifndef TRIAGE_BYTES_H
#define TRIAGE_BYTES_H

#include <stdint.h>
#include <string.h>

typedef struct TriageWriter
{
	uint8_t    *p;
	size_t		pos;
} TriageWriter;

static inline void
TriagePutU8(TriageWriter *w, uint8_t v)
{
	w->p[w->pos++] = v;
}

static inline void
TriagePutU16(TriageWriter *w, uint16_t v)
{
	w->p[w->pos++] = (uint8_t) v;
	w->p[w->pos++] = (uint8_t) (v >> 8);
}

static inline void
TriagePutU32(TriageWriter *w, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		w->p[w->pos++] = (uint8_t) (v >> (8 * i));
}

static inline void
TriagePutU64(TriageWriter *w, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		w->p[w->pos++] = (uint8_t) (v >> (8 * i));
}

static inline void
TriagePutF32(TriageWriter *w, float f)
{
	uint32_t	v;

	memcpy(&v, &f, 4);
	TriagePutU32(w, v);
}

static inline void
TriagePutF64(TriageWriter *w, double f)
{
	uint64_t	v;

	memcpy(&v, &f, 8);
	TriagePutU64(w, v);
}

static inline uint16_t
TriageLoadU16(const uint8_t *p)
{
	return (uint16_t) (p[0] | (p[1] << 8));
}

static inline uint32_t
TriageLoadU32(const uint8_t *p)
{
	return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}

static inline uint64_t
TriageLoadU64(const uint8_t *p)
{
	return (uint64_t) TriageLoadU32(p) | ((uint64_t) TriageLoadU32(p + 4) << 32);
}

static inline float
TriageLoadF32(const uint8_t *p)
{
	uint32_t	v = TriageLoadU32(p);
	float		f;

	memcpy(&f, &v, 4);
	return f;
}

static inline double
TriageLoadF64(const uint8_t *p)
{
	uint64_t	v = TriageLoadU64(p);
	double		f;

	memcpy(&f, &v, 8);
	return f;
}

#endif
