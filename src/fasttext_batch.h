/*
 * fasttext_batch.h
 *		Batch prediction with OpenBLAS for the output layer.
 */
#ifndef TRIAGE_FASTTEXT_BATCH_H
#define TRIAGE_FASTTEXT_BATCH_H

#include "fasttext.h"

extern TriageStatus FastTextPredictBatch(const FastTextModel *model, FastTextScratch *scratch,
										 const char *const *texts, const size_t *lens, int32_t n,
										 float *hidden, float *scores,
										 FastTextPrediction *predictions, bool *found,
										 char *errbuf, size_t errlen);
extern void FastTextBatchInit(void);

#endif
