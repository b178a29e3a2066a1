/*
 * check.h
 *		The TAP output of the C unit tests: one "ok N - what" or
 *		"not ok N - what" line per check; main prints the plan and exits
 *		non-zero when a check failed.
 */
#ifndef TRIAGE_TEST_CHECK_H
#define TRIAGE_TEST_CHECK_H

#include <stdio.h>

static int	failures = 0;
static int	checks = 0;

static void
Check(int ok, const char *what)
{
	checks++;
	printf("%s %d - %s\n", ok ? "ok" : "not ok", checks, what);
	if (!ok)
		failures++;
	fflush(stdout);
}

#endif
