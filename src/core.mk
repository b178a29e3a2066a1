# The server-independent core: what the C unit tests, the fuzzers and the
# extension all build from.  Included by the Makefile; test/run-tests.sh reads
# the same lists with "make -s -f src/core.mk print-CORE_SRCS".
CORE_SRCS = src/triage_core.c src/fasttext_load.c src/fasttext_dict.c src/fasttext_predict.c src/fasttext_train.c src/fasttext_quantize.c src/fasttext_save.c
# the linear kind (linear_sql.c or whatever glues it is server code, not core)
LINEAR_CORE_SRCS = src/triage_core.c src/text_normalize.c src/linear_features.c src/linear_model.c src/linear_predict.c src/linear_train.c
CRF_CORE_SRCS = src/triage_core.c src/crf_tokenize.c src/crf_features.c src/crf_align.c src/crf_train.c src/crf_decode.c src/crf_model.c

print-%:
	@echo $($*)
