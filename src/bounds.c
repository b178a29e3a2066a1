/*
 * bounds.c
 *		The statistics routing thresholds are chosen with: the normal
 *		quantile (for one-sided Wilson bounds) and the exact binomial upper
 *		tail (for Learn-then-Test's fixed-sequence tests).
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"

/*
 * The p-quantile of the standard normal distribution, by Acklam's rational
 * approximation (relative error below 1.2e-9 over (0, 1)).
 */
static double
NormalQuantile(double p)
{
	static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
		-2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01,
	2.506628277459239e+00};
	static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
		-1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01};
	static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
		-2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00,
	2.938163982698783e+00};
	static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
	2.445134137142996e+00, 3.754408661907416e+00};
	const double low = 0.02425;
	double		q,
				r;

	if (p < low)
	{
		q = sqrt(-2 * log(p));
		return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
			((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
	}
	if (p > 1 - low)
	{
		q = sqrt(-2 * log(1 - p));
		return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
			((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
	}
	q = p - 0.5;
	r = q * q;
	return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
		(((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

PG_FUNCTION_INFO_V1(triage_normal_quantile);

/* normal_quantile(p float8) returns float8 */
Datum
triage_normal_quantile(PG_FUNCTION_ARGS)
{
	double		p = PG_GETARG_FLOAT8(0);

	if (!(p > 0 && p < 1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a normal quantile needs a probability strictly between 0 and 1, not %g", p)));
	PG_RETURN_FLOAT8(NormalQuantile(p));
}

PG_FUNCTION_INFO_V1(triage_binomial_upper_tail);

/*
 * binomial_upper_tail(successes, trials, p) returns float8: P(X >= successes)
 * for X ~ Binomial(trials, p), exactly (terms summed in log space from the
 * largest, so that thousands of trials neither underflow nor lose the
 * tail).  The p-value of "accuracy <= p" given successes right of trials.
 */
Datum
triage_binomial_upper_tail(PG_FUNCTION_ARGS)
{
	int32		k = PG_GETARG_INT32(0);
	int32		n = PG_GETARG_INT32(1);
	double		p = PG_GETARG_FLOAT8(2);
	double		log_p,
				log_q,
				log_term,
				sum = 0;

	if (n < 0 || k < 0 || k > n || !(p >= 0 && p <= 1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("binomial_upper_tail needs 0 <= successes <= trials and 0 <= p <= 1")));
	if (k == 0)
		PG_RETURN_FLOAT8(1.0);
	if (p == 0)
		PG_RETURN_FLOAT8(0.0);
	if (p == 1)
		PG_RETURN_FLOAT8(1.0);
	log_p = log(p);
	log_q = log1p(-p);
	/* log P(X = k), then each next term by the ratio of consecutive terms */
	log_term = lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0) + k * log_p + (n - k) * log_q;
	for (int32 i = k; i <= n; i++)
	{
		sum += exp(log_term);
		if (i < n)
			log_term += log((double) (n - i) / (i + 1)) + log_p - log_q;
		/* past the mode the terms only shrink: stop once they no longer count */
		if (i > n * p && exp(log_term) < sum * 1e-17)
			break;
	}
	PG_RETURN_FLOAT8(Min(sum, 1.0));
}
