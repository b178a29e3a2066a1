/*
 * calibration_sql.c
 *		Temperature scaling (Guo et al., 2017): one scalar T, fitted on
 *		held-out labeled rows by minimizing the negative log-likelihood of
 *		softmax(z / T) (or of the per-label sigmoids for ova and ns), so that
 *		a confidence of 0.8 means right about 80% of the time.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "triage.h"

typedef struct HeldOut
{
	float	   *logits;			/* n x nlabels */
	int32	   *gold;			/* label index of each row */
	int64		n;
	int32		nlabels;
	bool		softmax;
} HeldOut;

/* Mean negative log-likelihood of the held-out rows at temperature t */
static double
MeanNll(const HeldOut *h, double t)
{
	double		total = 0.0;

	for (int64 r = 0; r < h->n; r++)
	{
		const float *z = h->logits + r * h->nlabels;
		int32		g = h->gold[r];

		if (h->softmax)
		{
			double		max = z[0] / t;
			double		sum = 0.0;

			for (int32 i = 1; i < h->nlabels; i++)
				max = Max(max, z[i] / t);
			for (int32 i = 0; i < h->nlabels; i++)
				sum += exp(z[i] / t - max);
			total -= z[g] / t - max - log(sum);
		}
		else
		{
			for (int32 i = 0; i < h->nlabels; i++)
			{
				double		x = z[i] / t;

				/* -log sigmoid(x) = log(1 + e^-x), stably */
				double		y = (i == g) ? -x : x;

				total += y > 0 ? y + log1p(exp(-y)) : log1p(exp(y));
			}
		}
	}
	return total / h->n;
}

/* Read (input, label) rows and compute each row's logits with model */
static void
ReadHeldOut(const char *query, CachedModel *model, HeldOut *h, int64 *skipped)
{
	const ClassifierKind *kind = model->classifier;
	int64		capacity = 1024;
	char		errbuf[256];

	h->nlabels = model->nlabels;
	h->softmax = kind->softmax(model->state);
	h->n = 0;
	h->logits = palloc_extended(sizeof(float) * capacity * h->nlabels, MCXT_ALLOC_HUGE);
	h->gold = palloc(sizeof(int32) * capacity);
	*skipped = 0;

	SPI_connect();
	if (SPI_execute(query, true, 0) != SPI_OK_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("calibration query must be a SELECT returning (input text, label text)")));
	if (SPI_tuptable->tupdesc->natts != 2)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("calibration query must return two columns (input, label)")));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *input = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *label = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		int32		g = -1;
		bool		found;
		TriageStatus status;

		CHECK_FOR_INTERRUPTS();
		if (input == NULL || label == NULL)
		{
			(*skipped)++;
			continue;
		}
		g = kind->find_label(model->state, label, strlen(label));
		if (g < 0)
		{
			(*skipped)++;
			continue;
		}
		if (h->n == capacity)
		{
			/* repalloc keeps the arrays in the caller's context, outside SPI's */
			capacity *= 2;
			h->logits = repalloc_huge(h->logits, sizeof(float) * capacity * h->nlabels);
			h->gold = repalloc_huge(h->gold, sizeof(int32) * capacity);
		}
		status = kind->logits(model->state, model->scratch, input, strlen(input),
							  h->logits + h->n * h->nlabels, &found, errbuf, sizeof(errbuf));
		if (status != TRIAGE_OK)
			ReportModelError(kind->title, NULL, status, errbuf, NULL);
		if (!found)
		{
			(*skipped)++;
			continue;
		}
		h->gold[h->n++] = g;
	}
	SPI_finish();
}

PG_FUNCTION_INFO_V1(triage_fit_temperature);

/*
 * fit_temperature(name, version, query) returns jsonb: the temperature that
 * minimizes the held-out NLL, by golden-section search on log T.
 */
Datum
triage_fit_temperature(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	int32		version = PG_GETARG_INT32(1);
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(2));
	CachedModel *model;
	HeldOut		h;
	int64		skipped;
	double		lo = log(0.05),
				hi = log(20.0);
	const double phi = (sqrt(5.0) - 1) / 2;
	double		a,
				b,
				fa,
				fb,
				t;
	StringInfoData buf;

	if (version <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model version %d is invalid", version)));
	model = ModelRefGet(fcinfo, name, version);
	ModelRequireKind(model, MODEL_KIND_CLASSIFIER);
	if (model->classifier->no_temperature(model->state) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s", model->classifier->no_temperature(model->state)),
				 errhint("Train with loss \"softmax\", \"ova\" or \"ns\" to calibrate confidences.")));
	ReadHeldOut(query, model, &h, &skipped);
	if (h.n < 10)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("calibration needs at least 10 usable rows, found %lld", (long long) h.n),
				 errhint("Rows need an input and one of the model's labels.")));

	/* NLL is unimodal in log T for these losses in practice; 60 steps is 1e-12 wide */
	a = hi - phi * (hi - lo);
	b = lo + phi * (hi - lo);
	fa = MeanNll(&h, exp(a));
	fb = MeanNll(&h, exp(b));
	for (int i = 0; i < 60; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (fa < fb)
		{
			hi = b;
			b = a;
			fb = fa;
			a = hi - phi * (hi - lo);
			fa = MeanNll(&h, exp(a));
		}
		else
		{
			lo = a;
			a = b;
			fa = fb;
			b = lo + phi * (hi - lo);
			fb = MeanNll(&h, exp(b));
		}
	}
	t = exp((lo + hi) / 2);

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"temperature\": %.6g, \"rows\": %lld, \"skipped_rows\": %lld, "
					 "\"nll_before\": %.6g, \"nll_after\": %.6g}",
					 t, (long long) h.n, (long long) skipped, MeanNll(&h, 1.0), MeanNll(&h, t));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
