/*
 * text_normalize.h
 *		Token normalization of review-like text: case, HTML, punctuation and
 *		digits, so that texts differing only in those give the same tokens.
 *		Used by the linear classifier kind (linear.h), and by anything else
 *		that wants its tokens to agree with it.
 */
#ifndef TRIAGE_TEXT_NORMALIZE_H
#define TRIAGE_TEXT_NORMALIZE_H

#include "triage_core.h"

typedef struct TextNormalizeOptions
{
	bool		lowercase;		/* UTF-8 aware: utf8proc_tolower */
	bool		split_punct;	/* every punctuation (P*) and symbol (S*) character is a token */
	bool		strip_html;		/* tags become a space; character references are decoded */
	bool		digit_shape;	/* each decimal digit (Nd) becomes '0' */
} TextNormalizeOptions;

/* All options false is the identity: the text is copied unchanged */
extern void TextNormalizeDefaults(TextNormalizeOptions *o);
extern bool TextNormalizeIsIdentity(const TextNormalizeOptions *o);

/*
 * Normalizes text[0..len) into *out (grown through allocator as needed; *cap
 * is its capacity) and sets *outlen.  Unless the options are the identity,
 * the output is its tokens separated by single spaces, with none leading or
 * trailing.  Bytes that are not valid UTF-8 pass through unchanged.  The
 * output is never longer than TEXT_NORMALIZE_BOUND(len).
 */
#define TEXT_NORMALIZE_BOUND(len) (3 * (size_t) (len) + 16)

extern TriageStatus TextNormalize(const TextNormalizeOptions *o, const char *text, size_t len,
								  const TriageAllocator *allocator, char **out, size_t *cap,
								  size_t *outlen, char *errbuf, size_t errlen);

/*
 * As TextNormalize, but stops once max_tokens tokens (runs of bytes other
 * than ASCII white space in the output) are complete and text is left that
 * would start another (0: no limit); *truncated says whether it stopped so.
 * The output then grows with what was read, not with len.
 */
extern TriageStatus TextNormalizePrefix(const TextNormalizeOptions *o, const char *text, size_t len,
										int64_t max_tokens, const TriageAllocator *allocator,
										char **out, size_t *cap, size_t *outlen, bool *truncated,
										char *errbuf, size_t errlen);

#endif
