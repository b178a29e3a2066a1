/*-------------------------------------------------------------------------
 *
 * limiter.c
 *	  What keeps triage-worker from overrunning the endpoint: token buckets
 *	  for --rps and --tpm, and the circuit breaker.
 *
 * The breaker protects the jobs more than the endpoint: when the endpoint
 * is down or refuses our key, every request would fail and charge its job
 * an attempt, dead-lettering the whole queue in a few minutes.  So the
 * worker stops, waits, and lets one request (the probe) decide whether to
 * resume.  Only a probe's result moves an open breaker; results of requests
 * that were in flight when it opened do not.
 *
 *-------------------------------------------------------------------------
 */
#include <math.h>

#include "triage_worker.h"

/* Five 5xx replies or timeouts in a row open the breaker */
#define TROUBLE_STREAK 5
#define BACKOFF_FIRST 1.0
#define BACKOFF_MAX 60.0

/*
 * capacity: the burst allowed; per_second: the refill rate, 0 for a bucket
 * that never limits.
 */
void
bucket_init(Bucket *b, double capacity, double per_second, int64_t now)
{
	b->enabled = per_second > 0;
	b->capacity = capacity;
	b->tokens = capacity;
	b->per_ms = per_second / 1000.0;
	b->last_ms = now;
}

static void
bucket_refill(Bucket *b, int64_t now)
{
	if (now > b->last_ms)
	{
		b->tokens = fmin(b->capacity, b->tokens + (double) (now - b->last_ms) * b->per_ms);
		b->last_ms = now;
	}
}

/*
 * Milliseconds until n tokens are there (0: now).  A request larger than the
 * whole bucket goes when the bucket is full, else it would never go.
 */
int64_t
bucket_wait(Bucket *b, double n, int64_t now)
{
	double		need;

	if (!b->enabled)
		return 0;
	bucket_refill(b, now);
	need = fmin(n, b->capacity);
	if (b->tokens >= need)
		return 0;
	return (int64_t) ceil((need - b->tokens) / b->per_ms);
}

/* The balance may go below zero: the next requests then wait longer */
void
bucket_take(Bucket *b, double n)
{
	if (b->enabled)
		b->tokens -= n;
}

/* Gives back n tokens (or takes -n), when an estimate proved wrong */
void
bucket_give(Bucket *b, double n)
{
	if (b->enabled)
		b->tokens = fmin(b->capacity, b->tokens + n);
}

void
breaker_init(Breaker *br)
{
	br->state = BREAKER_CLOSED;
	br->trouble_streak = 0;
	br->retry_at_ms = 0;
	br->backoff = BACKOFF_FIRST;
	br->probe_in_flight = false;
}

static void
breaker_open(Breaker *br, int64_t now)
{
	br->state = BREAKER_OPEN;
	br->trouble_streak = 0;
	/* jitter, so that the workers of a fleet do not probe in step */
	br->retry_at_ms = now + (int64_t) (br->backoff * 1000 * (0.75 + 0.5 * jitter()));
	br->backoff = fmin(BACKOFF_MAX, br->backoff * 2);
}

/*
 * Takes in the verdict of a finished request (probe: it was the breaker's
 * probe).  Returns true when this opened the breaker, so that the caller
 * gives its unstarted jobs back.
 */
bool
breaker_record(Breaker *br, Verdict v, bool probe, int64_t now)
{
	if (probe)
		br->probe_in_flight = false;

	if (br->state == BREAKER_CLOSED)
	{
		switch (v)
		{
			case VERDICT_OK:
			case VERDICT_RATE_LIMITED:
				br->trouble_streak = 0;
				return false;
			case VERDICT_TROUBLE:
				if (++br->trouble_streak < TROUBLE_STREAK)
					return false;
				breaker_open(br, now);
				return true;
			case VERDICT_DOWN:
				breaker_open(br, now);
				return true;
		}
		return false;
	}

	if (!probe)
		return false;
	if (v == VERDICT_OK || v == VERDICT_RATE_LIMITED)
	{
		/* the endpoint answers again (a 429 is for the rate limiter) */
		br->state = BREAKER_CLOSED;
		br->backoff = BACKOFF_FIRST;
		return false;
	}
	breaker_open(br, now);
	return true;
}

/*
 * May a request start now?  *probe says whether it is the probe of a
 * half-open breaker.
 */
bool
breaker_may_start(Breaker *br, int64_t now, bool *probe)
{
	*probe = false;
	if (br->state == BREAKER_CLOSED)
		return true;
	if (br->state == BREAKER_OPEN && now >= br->retry_at_ms)
		br->state = BREAKER_PROBING;
	if (br->state == BREAKER_PROBING && !br->probe_in_flight)
	{
		br->probe_in_flight = true;
		*probe = true;
		return true;
	}
	return false;
}

/*
 * May the worker claim jobs now, and how many (*n, lowered to one when the
 * breaker is about to probe)?
 */
bool
breaker_may_claim(const Breaker *br, int64_t now, int *n)
{
	if (br->state == BREAKER_CLOSED)
		return true;
	if (br->probe_in_flight || (br->state == BREAKER_OPEN && now < br->retry_at_ms))
		return false;
	*n = 1;
	return true;
}
