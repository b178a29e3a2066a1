#!/bin/bash
# Runs every test of pg_triage against the installed extension and ends with
# one line "N passed, N failed, N skipped"; exits non-zero if anything failed
# or was skipped for a reason not on the allow-list (test/harness/count.sh:
# none on Linux), and so if an expected test is missing, aborted or crashed.
#
#   0. the runner's self-test (test/harness/selftest.sh): a failing, a
#      crashing, an aborted and a skipped fixture each fail the run
#   1. core: C unit tests of the server-independent code, under ASan/UBSan
#   2. fuzz: the model loaders (fastText, CRF) on their corpus and random
#      mutations of it
#   3. pg_regress: sql/*.sql against a throwaway cluster
#   4. TAP: test/t/*.pl, each with its own clusters (PostgreSQL::Test::Cluster)
#
# Called by "make test" after "make install".  As root it re-runs itself as
# the postgres user on a copy of the tree, since PostgreSQL refuses root.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/test/cluster.sh"
drop_root test/run-tests.sh "$@"
cd "$ROOT"
source test/harness/count.sh

count_reset
WORK=$(mktemp -d /tmp/pg_triage-tests.XXXXXX)
PGXS_DIR=$(dirname "$("$PG_CONFIG" --pgxs)")/../..
SANITIZE="-g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -ffp-contract=off"
CORE_SRCS=$(make -s -f src/core.mk print-CORE_SRCS)
# the CRF extractor's core (crf_sql.c is the server glue, not core)
CRF_SRCS=$(make -s -f src/core.mk print-CRF_CORE_SRCS)
# the linear kind's core: token normalization, features, format, training
LINEAR_SRCS=$(make -s -f src/core.mk print-LINEAR_CORE_SRCS)

section() {
	echo
	echo "== $1"
}

# core_test NAME "SOURCES AND LIBRARIES" [ARG...]: build test/core/NAME.c
# with the sanitizers, run it with ARGs and count its TAP lines
CORE_RAN=
core_test() {
	local name=$1 build=$2
	shift 2
	CORE_RAN="$CORE_RAN $name"
	if gcc $SANITIZE -Isrc "test/core/$name.c" $build -o "$WORK/$name"; then
		tap_run "$name" "$WORK/$name.out" "$WORK/$name" "$@"
	else
		record "$name (build)" 1
	fi
}

# 0. the counting below, on fixtures that must fail the run
section "harness self-test"
tap_run "harness self-test" "$WORK/selftest.tap" test/harness/selftest.sh "$WORK/harness"

# 1. core unit tests: each "ok"/"not ok"/"ok # SKIP" line counts
section "core unit tests"
core_test test_core "$CORE_SRCS -lm -pthread" "$ROOT/test/data"

# quantization and saving: round trips, PQ, pruning, allocation failures;
# and two models the fasttext tool trains now, quantized by us and by it
if ! test/harness/quantize_inputs.sh "$WORK/quantize" >"$WORK/quantize_inputs.log" 2>&1; then
	cat "$WORK/quantize_inputs.log"
	record "test_quantize inputs (test/harness/quantize_inputs.sh)" 1
fi
core_test test_quantize "$CORE_SRCS -lm -pthread" "$ROOT/test/data" "$WORK/quantize/dense.bin" \
	"$WORK/quantize/lines.txt" "$WORK/quantize/many.bin" "$WORK/quantize/out" "$WORK/quantize/ref"

# the CRF extractor: tokenizer, alignment, training, decoding, model format
core_test test_crf "$CRF_SRCS -llbfgs -lm"

# the linear kind: normalization, training (and on fine_foods_train.csv), format
core_test test_linear "$LINEAR_SRCS -llbfgs -lutf8proc -lm" "$ROOT/test/data"

# triage-worker's masking of secrets (the API key whole, cut, escaped) and
# what it says of the endpoint URL: the stub LLM cannot echo a key
core_test test_worker_redact "-Isrc/worker src/worker/redact.c src/worker/url.c"

# a test/core/test_*.c without a core_test line above would never run
check_all_ran "core test" "$CORE_RAN" test/core/test_*.c

# 2. the loaders under sanitizers, on the corpus and its mutations
section "fuzz smoke (ASan/UBSan)"
# a missing harness is a failed build, not a silent pass
if gcc $SANITIZE -Isrc test/fuzz/fuzz_fasttext_standalone.c test/fuzz/fuzz_runner.c test/fuzz/fuzz_fasttext_load.c \
	$CORE_SRCS -lm -o "$WORK/fuzz_standalone"; then
	"$WORK/fuzz_standalone" -n 300 -seed 1 test/fuzz/corpus 2>&1 | tee "$WORK/fuzz.out"
	count_fuzz "fuzz smoke" "$WORK/fuzz.out" "${PIPESTATUS[0]}"
else
	record "fuzz smoke (build)" 1
fi
# CRF models: about 6,000 inputs (20-25 s), each mutant's checksum repaired
# so that it reaches every check; the time limit only guards a slow machine
if gcc $SANITIZE -Isrc test/fuzz/fuzz_crf_standalone.c test/fuzz/fuzz_runner.c test/fuzz/fuzz_crf_load.c \
	$CRF_SRCS -llbfgs -lm -o "$WORK/fuzz_crf_standalone"; then
	"$WORK/fuzz_crf_standalone" -n 1200 -seed 1 -max_total_time 60 -crashdir "$WORK" \
		test/fuzz/crf_corpus 2>&1 | tee "$WORK/fuzz_crf.out"
	count_fuzz "fuzz smoke (CRF)" "$WORK/fuzz_crf.out" "${PIPESTATUS[0]}"
else
	record "fuzz smoke (CRF build)" 1
fi
# linear models: about 6,000 inputs (under 10 s), checksums repaired as for CRF
if gcc $SANITIZE -Isrc test/fuzz/fuzz_linear_standalone.c test/fuzz/fuzz_runner.c test/fuzz/fuzz_linear_load.c \
	$LINEAR_SRCS -llbfgs -lutf8proc -lm -o "$WORK/fuzz_linear_standalone"; then
	"$WORK/fuzz_linear_standalone" -n 1200 -seed 1 -max_total_time 60 -crashdir "$WORK" \
		test/fuzz/linear_corpus 2>&1 | tee "$WORK/fuzz_linear.out"
	count_fuzz "fuzz smoke (linear)" "$WORK/fuzz_linear.out" "${PIPESTATUS[0]}"
else
	record "fuzz smoke (linear build)" 1
fi

# 3. pg_regress: every name of the Makefile's REGRESS has its files and one
# result line, and pg_regress exits 0
section "pg_regress"
REGRESS=$(make -s print-REGRESS)
check_regress_files . $REGRESS
if cluster_start "$WORK/regress-cluster"; then
	"$PGXS_DIR/src/test/regress/pg_regress" --inputdir=. --outputdir="$WORK/regress" \
		--bindir="$PG_BINDIR" --host="$PGHOST" --port="$PGPORT" \
		--dbname=contrib_regression $REGRESS >"$WORK/regress.out" 2>&1
	status=$?
	cluster_stop
else
	echo "could not start a cluster" >"$WORK/regress.out"
	status=1
fi
cat "$WORK/regress.out"
count_regress "$WORK/regress.out" "$status" $REGRESS
if [ -f "$WORK/regress/regression.diffs" ]; then
	echo "---- regression.diffs"
	cat "$WORK/regress/regression.diffs"
fi

# 4. TAP tests: every top-level "ok", "not ok" and "ok # SKIP" counts; a
# script that skips entirely (skip_all) is a skip, one that dies or crashes
# after its last assertion a failure
section "TAP"
export PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress"
mkdir -p "$WORK/tap"
TAP_FILES=(test/t/*.pl)
[ -f "${TAP_FILES[0]}" ] || record "TAP (no test/t/*.pl)" 1
for t in "${TAP_FILES[@]}"; do
	[ -f "$t" ] || continue
	tap_run "$t" "$WORK/$(basename "$t" .pl).tap" \
		env TESTDIR="$WORK/tap" perl -I "$PGXS_DIR/src/test/perl" -I "$ROOT/test" "$t"
done

count_summary
