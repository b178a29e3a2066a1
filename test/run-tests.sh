#!/bin/bash
# Runs every test of pg_triage against the installed extension and ends with
# one line "N passed, M failed"; exits non-zero if anything failed.
#
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

PASSED=0
FAILED=0
FAILURES=()
WORK=$(mktemp -d /tmp/pg_triage-tests.XXXXXX)
PGXS_DIR=$(dirname "$("$PG_CONFIG" --pgxs)")/../..
SANITIZE="-g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -ffp-contract=off"
CORE_SRCS=$(make -s -f src/core.mk print-CORE_SRCS)
# the CRF extractor's core (crf_sql.c is the server glue, not core)
CRF_SRCS=$(make -s -f src/core.mk print-CRF_CORE_SRCS)

record() {	# record NAME STATUS
	if [ "$2" = 0 ]; then
		PASSED=$((PASSED + 1))
	else
		FAILED=$((FAILED + 1))
		FAILURES+=("$1")
	fi
}

section() {
	echo
	echo "== $1"
}

# 1. core unit tests: each "ok"/"not ok" line counts
section "core unit tests"
if gcc $SANITIZE -Isrc test/core/test_core.c $CORE_SRCS -lm -o "$WORK/test_core"; then
	"$WORK/test_core" "$ROOT/test/data" >"$WORK/core.out" 2>&1
	status=$?
	cat "$WORK/core.out"
	n_ok=$(grep -c '^ok ' "$WORK/core.out")
	n_bad=$(grep -c '^not ok ' "$WORK/core.out")
	PASSED=$((PASSED + n_ok))
	FAILED=$((FAILED + n_bad))
	[ "$n_bad" -gt 0 ] && FAILURES+=("core unit tests")
	[ "$status" != 0 ] && [ "$n_bad" = 0 ] && record "core unit tests (crashed)" 1
else
	record "core unit tests (build)" 1
fi

# quantization and saving: round trips, PQ, pruning, allocation failures;
# and two models the fasttext tool trains now, quantized by us and by it
if ! test/harness/quantize_inputs.sh "$WORK/quantize" >"$WORK/quantize_inputs.log" 2>&1; then
	cat "$WORK/quantize_inputs.log"
	record "test_quantize inputs (test/harness/quantize_inputs.sh)" 1
fi
if gcc $SANITIZE -Isrc test/core/test_quantize.c $CORE_SRCS -lm -o "$WORK/test_quantize"; then
	"$WORK/test_quantize" "$ROOT/test/data" "$WORK/quantize/dense.bin" "$WORK/quantize/lines.txt" \
		"$WORK/quantize/many.bin" "$WORK/quantize/out" "$WORK/quantize/ref" >"$WORK/quantize.out" 2>&1
	status=$?
	grep -E '^(not ok|# )' "$WORK/quantize.out" | head -40
	n_ok=$(grep -c '^ok ' "$WORK/quantize.out")
	n_bad=$(grep -c '^not ok ' "$WORK/quantize.out")
	echo "test_quantize: $n_ok ok, $n_bad not ok"
	PASSED=$((PASSED + n_ok))
	FAILED=$((FAILED + n_bad))
	[ "$n_bad" -gt 0 ] && FAILURES+=("quantize unit tests")
	[ "$status" != 0 ] && [ "$n_bad" = 0 ] && record "quantize unit tests (crashed)" 1
else
	record "quantize unit tests (build)" 1
fi

# the CRF extractor: tokenizer, alignment, training, decoding, model format
if gcc $SANITIZE -Isrc test/core/test_crf.c $CRF_SRCS -llbfgs -lm -o "$WORK/test_crf"; then
	"$WORK/test_crf" >"$WORK/crf.out" 2>&1
	status=$?
	grep -E '^(not ok|# )' "$WORK/crf.out" | head -40
	n_ok=$(grep -c '^ok ' "$WORK/crf.out")
	n_bad=$(grep -c '^not ok ' "$WORK/crf.out")
	echo "test_crf: $n_ok ok, $n_bad not ok"
	PASSED=$((PASSED + n_ok))
	FAILED=$((FAILED + n_bad))
	[ "$n_bad" -gt 0 ] && FAILURES+=("crf unit tests")
	if [ "$status" != 0 ] && [ "$n_bad" = 0 ]; then
		record "crf unit tests (crashed)" 1
		tail -30 "$WORK/crf.out"
	fi
else
	record "crf unit tests (build)" 1
fi

# 2. the loaders under sanitizers, on the corpus and its mutations
section "fuzz smoke (ASan/UBSan)"
if [ -f test/fuzz/fuzz_fasttext_standalone.c ]; then
	if gcc $SANITIZE -Isrc test/fuzz/fuzz_fasttext_standalone.c test/fuzz/fuzz_runner.c test/fuzz/fuzz_fasttext_load.c \
		$CORE_SRCS -lm -o "$WORK/fuzz_standalone"; then
		"$WORK/fuzz_standalone" -n 300 -seed 1 test/fuzz/corpus
		record "fuzz smoke" $?
	else
		record "fuzz smoke (build)" 1
	fi
fi
# CRF models: about 6,000 inputs (20-25 s), each mutant's checksum repaired
# so that it reaches every check; the time limit only guards a slow machine
if [ -f test/fuzz/fuzz_crf_standalone.c ]; then
	if gcc $SANITIZE -Isrc test/fuzz/fuzz_crf_standalone.c test/fuzz/fuzz_runner.c test/fuzz/fuzz_crf_load.c \
		$CRF_SRCS -llbfgs -lm -o "$WORK/fuzz_crf_standalone"; then
		"$WORK/fuzz_crf_standalone" -n 1200 -seed 1 -max_total_time 60 -crashdir "$WORK" \
			test/fuzz/crf_corpus
		record "fuzz smoke (CRF)" $?
	else
		record "fuzz smoke (CRF build)" 1
	fi
fi

# 3. pg_regress
section "pg_regress"
cluster_start "$WORK/regress-cluster" || { echo "could not start a cluster"; exit 1; }
REGRESS=$(sed -n 's/^REGRESS = //p' Makefile)
"$PGXS_DIR/src/test/regress/pg_regress" --inputdir=. --outputdir="$WORK/regress" \
	--bindir="$PG_BINDIR" --host="$PGHOST" --port="$PGPORT" \
	--dbname=contrib_regression $REGRESS >"$WORK/regress.out" 2>&1
cat "$WORK/regress.out"
# PostgreSQL 15 prints "test NAME ... ok", 16 and later "ok N - NAME"
while read -r name result; do
	record "pg_regress $name" "$([ "$result" = ok ] && echo 0 || echo 1)"
done < <(awk '/^test [a-z_0-9]+ +\.\.\. / { print $2, ($4 == "ok" ? "ok" : "failed") }
	/^(not )?ok +[0-9]+ +[-+] / { ok = ($1 == "ok"); sub(/^(not )?ok +[0-9]+ +[-+] +/, "");
		print $1, (ok ? "ok" : "failed") }' "$WORK/regress.out")
if [ -f "$WORK/regress/regression.diffs" ]; then
	echo "---- regression.diffs"
	cat "$WORK/regress/regression.diffs"
fi
cluster_stop

# 4. TAP tests: every top-level "ok" and "not ok" counts; a script that
# dies after its last assertion counts as one more failure
section "TAP"
export PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress"
for t in test/t/*.pl; do
	[ -f "$t" ] || continue
	out="$WORK/$(basename "$t" .pl).tap"
	mkdir -p "$WORK/tap"
	TESTDIR="$WORK/tap" perl -I "$PGXS_DIR/src/test/perl" -I "$ROOT/test" "$t" >"$out" 2>"$out.err"
	status=$?
	n_ok=$(grep -c '^ok ' "$out")
	n_bad=$(grep -c '^not ok ' "$out")
	echo "$t: $n_ok ok, $n_bad not ok (exit $status)"
	# each failure with the diagnostics that follow it
	awk '/^not ok/ { p = 1; print; next } /^ok/ { p = 0 } p && /^#/' "$out" | head -80
	PASSED=$((PASSED + n_ok))
	FAILED=$((FAILED + n_bad))
	[ "$n_bad" -gt 0 ] && FAILURES+=("$t")
	if [ "$status" != 0 ] && [ "$n_bad" = 0 ]; then
		record "$t (exit $status)" 1
		tail -30 "$out.err"
	fi
done

echo
if [ ${#FAILURES[@]} -gt 0 ]; then
	echo "failed: ${FAILURES[*]}"
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
