/*
 * fasttext_batch.c
 *		Prediction for many inputs at once, with OpenBLAS for the output
 *		layer: the hidden vectors of the batch form a matrix H, and one
 *		sgemm computes the scores H W^T of every input and label.
 *
 * What it buys (test/bench/blas_output_layer.c, dimension 50): about 10x on
 * the output layer for 64 labels and more, nothing for 2.  It changes the
 * order of the float sums, so scores can differ from the one-at-a-time path
 * (and from fastText) in the last bits; near-ties may then rank differently.
 * The one-at-a-time path stays the exact one.  Models whose output layer is
 * product-quantized or a tree (hs) are predicted one at a time.
 */
#include <cblas.h>
#include <string.h>

#include "fasttext_batch.h"
#include "fasttext_internal.h"

/* Below this many labels the sgemm does not pay (see the file comment) */
#define BATCH_MIN_LABELS 16

/*
 * Predict the top label of each of n texts.  hidden must have room for
 * n * dim floats and scores for n * nlabels; found[i] is false where text i
 * has no token the model knows (then predictions[i] is unset).
 */
TriageStatus
FastTextPredictBatch(const FastTextModel *model, FastTextScratch *scratch,
					 const char *const *texts, const size_t *lens, int32_t n,
					 float *hidden, float *scores, FastTextPrediction *predictions,
					 bool *found, char *errbuf, size_t errlen)
{
	int32_t		dim = model->args.dim;
	int32_t		nlabels = model->nlabels;
	bool		use_blas = model->args.loss != FASTTEXT_LOSS_HS && !model->output.quantized &&
		!model->output.int8 && nlabels >= BATCH_MIN_LABELS;
	TriageStatus status;

	for (int32_t i = 0; i < n; i++)
	{
		int32_t		np;

		found[i] = false;
		if (texts[i] == NULL)
			continue;
		if (!use_blas)
		{
			status = FastTextPredict(model, scratch, texts[i], lens[i], 1, 0.0f,
									 &predictions[i], &np, errbuf, errlen);
			if (status != TRIAGE_OK)
				return status;
			/* no evidence, no answer: as classify() (fasttext_sql.c) */
			found[i] = np > 0 && scratch->text_rows > 0;
			continue;
		}
		TRIAGE_CHECK_INTERRUPTS();
		status = FastTextHidden(model, scratch, texts[i], lens[i], errbuf, errlen);
		if (status != TRIAGE_OK)
			return status;
		found[i] = scratch->text_rows > 0;
		if (found[i])
			memcpy(hidden + (int64_t) i * dim, scratch->hidden, sizeof(float) * (size_t) dim);
		else
			memset(hidden + (int64_t) i * dim, 0, sizeof(float) * (size_t) dim);
	}
	if (!use_blas || n == 0)
		return TRIAGE_OK;

	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nlabels, dim, 1.0f,
				hidden, dim, model->output.dense, dim, 0.0f, scores, nlabels);
	for (int32_t i = 0; i < n; i++)
	{
		int32_t		np;

		if (!found[i])
			continue;
		status = FastTextPredictFromScores(model, scratch, scores + (int64_t) i * nlabels, 1, 0.0f,
										   &predictions[i], &np, errbuf, errlen);
		if (status != TRIAGE_OK)
			return status;
		found[i] = np > 0;
	}
	return TRIAGE_OK;
}

/* One BLAS thread: a backend is one thread, and PostgreSQL scales by processes */
void
FastTextBatchInit(void)
{
	openblas_set_num_threads(1);
}
