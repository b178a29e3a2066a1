# pg_triage: PGXS build, plus the project's own targets.
#
#   make            build the extension
#   make install    install it into the PostgreSQL that PG_CONFIG names
#   make demo       install what is missing, build, install, run the demo
#   make test       install what is missing, build, install, run every test
#   make bench      benchmarks (ratios against fastText and md5 in one run)
#   make study      how often calibration holds on unseen rows, over random splits
#   make fuzz       libFuzzer harness of the model loader (clang-14)
#   make models     rebuild the shipped models

EXTENSION = pg_triage
EXTVERSION = 0.1.0

MODULE_big = pg_triage
OBJS = \
	src/pg_triage.o \
	src/security.o \
	src/glue.o \
	src/model_cache.o \
	src/model_files.o \
	src/classifier.o \
	src/fasttext_kind.o \
	src/linear_kind.o \
	src/fasttext_sql.o \
	src/train_sql.o \
	src/query_rows.o \
	src/train_options.o \
	src/calibration_sql.o \
	src/bounds.o \
	src/quantize_sql.o \
	src/policy.o \
	src/route.o \
	src/route_trigger.o \
	src/queue.o \
	src/crf_sql.o \
	src/triage_core.o \
	src/fasttext_load.o \
	src/fasttext_dict.o \
	src/fasttext_predict.o \
	src/fasttext_batch.o \
	src/fasttext_train.o \
	src/fasttext_quantize.o \
	src/fasttext_save.o \
	src/crf_tokenize.o \
	src/crf_features.o \
	src/crf_align.o \
	src/crf_train.o \
	src/crf_decode.o \
	src/crf_model.o \
	src/text_normalize.o \
	src/linear_features.o \
	src/linear_model.o \
	src/linear_predict.o \
	src/linear_train.o

include src/core.mk

# The extension script, one file per concept, concatenated in this order
# (roles last: their grants cover every object before them)
SQL_PARTS = $(addprefix src/sql/,models.sql fasttext.sql extractors.sql evaluation.sql \
	temperature.sql quantization.sql policies.sql queue.sql batches.sql budgets.sql routing.sql tables.sql \
	distill.sql report.sql operations.sql health.sql roles.sql)
DATA_built = src/sql/$(EXTENSION)--$(EXTVERSION).sql
EXTRA_CLEAN = $(DATA_built) test/core/test_core test/fuzz/fuzz_fasttext_load \
	test/fuzz/fuzz_fasttext_standalone \
	test/fuzz/fuzz_crf_load

REGRESS = fasttext model_store errors train route extract
REGRESS_OPTS = --inputdir=. --load-extension=plpgsql

# fastText accumulates in float, in order: keep the compiler from fusing
# multiply-adds so that predictions match the fasttext tool bit for bit.
# -O3 vectorizes the row additions of training and prediction (twice as
# fast here); without -ffast-math it never reorders a sum, so it is exact.
PG_CPPFLAGS = -Isrc
PG_CFLAGS = -O3 -ffp-contract=off -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
	-Wno-missing-field-initializers -Wno-cast-function-type $(TRIAGE_CFLAGS)
# -pthread: fastText training runs hogwild threads (src/fasttext_train.c)
SHLIB_LINK = -lopenblas -llbfgs -lutf8proc -lm -pthread

# The pg_config on PATH, else Debian's for PostgreSQL 15
PG_CONFIG ?= $(or $(shell command -v pg_config 2>/dev/null),/usr/lib/postgresql/15/bin/pg_config)
export PG_CONFIG
PGXS := $(wildcard $(shell $(PG_CONFIG) --pgxs 2>/dev/null))
ifneq ($(PGXS),)
include $(PGXS)
# triage-worker: built, installed and cleaned with the extension
include src/worker/Makefile.worker
else
# Before "make deps" has installed the server headers, only our own targets work
all install:
	@echo "PostgreSQL server headers not found: run 'make deps' (as root) first" >&2; exit 1
endif

# PGXS does not track headers: rebuild everything when one changes
$(OBJS): $(wildcard src/*.h)

src/sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS)
	cat $^ > $@

.PHONY: deps demo test bench study fuzz models core-tests

# Debian packages the build, the tests and the demo need (apt, as root)
deps:
	test/install-deps.sh

demo: deps
	$(MAKE) all
	$(MAKE) install
	test/demo.sh

test: deps
	$(MAKE) all TRIAGE_CFLAGS=-Werror
	$(MAKE) install
	test/run-tests.sh

bench: deps
	$(MAKE) all
	$(MAKE) install
	test/bench/run.sh

study: deps
	$(MAKE) all
	$(MAKE) install
	test/study/run.sh

# A coverage-guided fuzzer of the fastText loader; run it with
#   test/fuzz/fuzz_fasttext_load test/fuzz/corpus
fuzz: deps
	clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
		test/fuzz/fuzz_fasttext_load.c $(CORE_SRCS) -lm -o test/fuzz/fuzz_fasttext_load
	clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
		test/fuzz/fuzz_crf_load.c $(CRF_CORE_SRCS) -llbfgs -lm -o test/fuzz/fuzz_crf_load
	clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
		test/fuzz/fuzz_linear_load.c $(LINEAR_CORE_SRCS) -llbfgs -lutf8proc -lm -o test/fuzz/fuzz_linear_load

models: deps
	$(MAKE) all
	$(MAKE) install
	models/build.sh
