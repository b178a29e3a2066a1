/*-------------------------------------------------------------------------
 *
 * redact.h
 *	  Keeping triage-worker's secrets (the API key, the database password,
 *	  credentials in the endpoint URL) out of what it logs and stores.
 *
 * Self-contained (no libpq, no libcurl), so that test/core can test it
 * alone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TRIAGE_WORKER_REDACT_H
#define TRIAGE_WORKER_REDACT_H

#include <stdbool.h>
#include <stddef.h>

/* Any run of this many consecutive characters of a secret is masked */
#define REDACT_MIN_RUN 8
/* Shorter secrets are not registered: masking them would mangle the log */
#define REDACT_MIN_SECRET 4
/* The mask */
#define REDACT_CHAR '*'

extern bool redact_add_secret(const char *secret);
extern void redact_forget_all(void);
extern size_t redact_longest_secret(void);
extern void redact_text(char *text, size_t len);
extern void redact(char *text);
extern void redacted_excerpt(char *dst, size_t dstlen, size_t limit, const char *prefix,
							 const char *text, size_t len);

#endif							/* TRIAGE_WORKER_REDACT_H */
