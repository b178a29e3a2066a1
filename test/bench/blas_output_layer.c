/*
 * blas_output_layer.c
 *		Does OpenBLAS pay for pg_triage's dense math?  Times the softmax
 *		output layer of one training step (scores = W h, then grad += W^T a
 *		and W += a h^T) with plain loops, as src/fasttext_train.c does, and
 *		with cblas_sgemv / cblas_sger, for label counts from 2 to 4096 at
 *		dimension 50; and the same for a batch of 64 inputs at inference
 *		(scores = H W^T, one cblas_sgemm against 64 loops of dot products).
 *
 * Usage: blas_output_layer (prints one line per size)
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double
Now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void
StepLoops(float *w, const float *h, float *a, float *grad, int labels, int dim)
{
	for (int i = 0; i < labels; i++)
	{
		float		d = 0.0f;

		for (int j = 0; j < dim; j++)
			d += w[i * dim + j] * h[j];
		a[i] = 0.001f * (d > 0 ? 1.0f : -1.0f);
	}
	for (int i = 0; i < labels; i++)
	{
		for (int j = 0; j < dim; j++)
			grad[j] += a[i] * w[i * dim + j];
		for (int j = 0; j < dim; j++)
			w[i * dim + j] += a[i] * h[j];
	}
}

static void
StepBlas(float *w, const float *h, float *a, float *grad, int labels, int dim)
{
	cblas_sgemv(CblasRowMajor, CblasNoTrans, labels, dim, 1.0f, w, dim, h, 1, 0.0f, a, 1);
	for (int i = 0; i < labels; i++)
		a[i] = 0.001f * (a[i] > 0 ? 1.0f : -1.0f);
	cblas_sgemv(CblasRowMajor, CblasTrans, labels, dim, 1.0f, w, dim, a, 1, 1.0f, grad, 1);
	cblas_sger(CblasRowMajor, labels, dim, 1.0f, a, 1, h, 1, w, dim);
}

int
main(void)
{
	const int	dim = 50;
	const int	batch = 64;
	int			sizes[] = {2, 16, 64, 256, 1024, 4096};

	printf("%-8s %14s %14s %8s   %16s %16s %8s\n", "labels", "train loops", "train BLAS", "ratio",
		   "batch-64 loops", "batch-64 sgemm", "ratio");
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
	{
		int			labels = sizes[s];
		float	   *w = malloc(sizeof(float) * labels * dim);
		float	   *h = malloc(sizeof(float) * batch * dim);
		float	   *a = malloc(sizeof(float) * labels * batch);
		float	   *grad = calloc(dim, sizeof(float));
		long		steps = 20000000L / (labels * dim) + 10;
		double		t0,
					t_loops,
					t_blas,
					b_loops,
					b_blas;
		volatile float sink = 0;

		for (int i = 0; i < labels * dim; i++)
			w[i] = (float) ((i * 7919) % 1000) / 1000.0f - 0.5f;
		for (int i = 0; i < batch * dim; i++)
			h[i] = (float) ((i * 104729) % 1000) / 1000.0f - 0.5f;

		t0 = Now();
		for (long k = 0; k < steps; k++)
			StepLoops(w, h, a, grad, labels, dim);
		t_loops = (Now() - t0) / steps;
		t0 = Now();
		for (long k = 0; k < steps; k++)
			StepBlas(w, h, a, grad, labels, dim);
		t_blas = (Now() - t0) / steps;

		/* inference over a batch: 64 rows of scores */
		t0 = Now();
		for (long k = 0; k < steps / batch + 1; k++)
			for (int b = 0; b < batch; b++)
				for (int i = 0; i < labels; i++)
				{
					float		d = 0.0f;

					for (int j = 0; j < dim; j++)
						d += w[i * dim + j] * h[b * dim + j];
					a[b * labels + i] = d;
				}
		b_loops = (Now() - t0) / (steps / batch + 1);
		t0 = Now();
		for (long k = 0; k < steps / batch + 1; k++)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, labels, dim, 1.0f,
						h, dim, w, dim, 0.0f, a, labels);
		b_blas = (Now() - t0) / (steps / batch + 1);
		sink += a[0] + grad[0];

		printf("%-8d %12.2f us %12.2f us %7.2fx   %14.2f us %14.2f us %7.2fx\n", labels,
			   t_loops * 1e6, t_blas * 1e6, t_loops / t_blas, b_loops * 1e6, b_blas * 1e6, b_loops / b_blas);
		free(w);
		free(h);
		free(a);
		free(grad);
	}
	return 0;
}
