#!/bin/bash
# The classify benchmark (make bench): in one run, on the same 100,000
# reviews and the same quantized .ftz, times
#   - fasttext predict-prob over a text file of the reviews (the CLI),
#   - pg_triage's core over the same file, without PostgreSQL
#     (test/bench/classify_core.c),
#   - SELECT count(triage.classify('bench', review)) over a table of them,
#     serial, with the default settings, and with parallel workers,
#   - SELECT count(md5(review)) over the same table in the same settings, as
#     PostgreSQL's cost of scanning the rows and calling a cheap function,
# each the best of 3 rounds (BENCH_RUNS=n for more), and prints the ratios;
# then checks on 1,000 rows that triage.classify picks the label that
# fasttext predict picks.
#
# Prints a table and writes it to test/bench/results.txt.  A benchmark, not
# a test: it fails only if something does not run, never on the numbers.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/cluster.sh"

# As root, run as postgres from a copy of the tree, then bring the results home
if [ "$(id -u)" = 0 ]; then
	BENCH_RESULTS=$(mktemp /tmp/pg_triage-bench-results.XXXXXX)
	chown postgres: "$BENCH_RESULTS"
	export BENCH_RESULTS
	status=0
	(drop_root test/bench/run.sh "$@") || status=$?
	[ -s "$BENCH_RESULTS" ] && cp "$BENCH_RESULTS" "$ROOT/test/bench/results.txt"
	rm -f "$BENCH_RESULTS"
	exit $status
fi

ROWS=100000
RUNS=${BENCH_RUNS:-3}
SAMPLE_EVERY=100	# agreement sample: ids divisible by this, 1,000 rows

WORK=$(mktemp -d /tmp/pg_triage-bench.XXXXXX)
cleanup() {
	cluster_stop
	rm -rf "$WORK"
	# drop_root's copy of the tree is ours to remove once we are done with it
	case "$ROOT" in
		/tmp/pg_triage.*) [ -n "${TRIAGE_SOURCE:-}" ] && rm -rf "$ROOT" ;;
	esac
}

log() { printf '%s\n' "$*" >&2; }

# Seconds since the epoch, to the nanosecond
now() { date +%s.%N; }

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

log "bench: starting a throwaway cluster in $WORK"
trap cleanup EXIT
load=$(cut -d ' ' -f 1-3 /proc/loadavg)
cluster_start "$WORK/pg"
trap cleanup EXIT	# cluster_start sets its own

# Data ----------------------------------------------------------------------
# The 4,000 labeled reviews, then 100,000 rows cycling through them: pass c
# (0..24) rotates each review's sentences by c, so rows differ but keep the
# length and vocabulary of real reviews.  Control characters become spaces
# so that one review is exactly one line for fastText.
log "bench: building the $ROWS-row table"
psql_q <<SQL
CREATE EXTENSION pg_triage;
CREATE TABLE reviews_src (n integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
						  product text, review text, score text);
\copy reviews_src (product, review, score) FROM '$ROOT/test/data/fine_foods_train.csv' WITH (FORMAT csv, HEADER)
UPDATE reviews_src SET review = regexp_replace(review, '[\r\n\t\v\f]', ' ', 'g');

CREATE TABLE bench_reviews (id integer PRIMARY KEY, review text NOT NULL);
INSERT INTO bench_reviews
SELECT i, array_to_string(s[1 + c % cardinality(s):] || s[:c % cardinality(s)], ' ')
FROM generate_series(0, $ROWS - 1) AS i,
	LATERAL (SELECT i / 4000 AS c) AS pass,
	LATERAL (SELECT regexp_split_to_array(r.review, '(?<=[.!?])\s+') AS s
			 FROM reviews_src r WHERE r.n = i % 4000 + 1) AS sentences;
VACUUM (ANALYZE) bench_reviews;

-- one line per row, nothing quoted or escaped: neither byte occurs in the data
\copy (SELECT review FROM bench_reviews ORDER BY id) TO '$WORK/lines.txt' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
\copy (SELECT review FROM bench_reviews WHERE id % $SAMPLE_EVERY = 0 ORDER BY id) TO '$WORK/sample.txt' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
\copy (SELECT '__label__' || score || ' ' || review FROM reviews_src ORDER BY n) TO '$WORK/train.txt' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
SQL

lines=$(wc -l <"$WORK/lines.txt")
[ "$lines" -eq "$ROWS" ] || { log "bench: lines.txt has $lines lines, not $ROWS"; exit 1; }
if LC_ALL=C grep -q $'[\x01\x02]' "$WORK/lines.txt"; then
	log "bench: lines.txt has a quote or delimiter byte"
	exit 1
fi
distinct=$(psql_q -At -c "SELECT count(DISTINCT review) FROM bench_reviews")
table_size=$(psql_q -At -c "SELECT pg_size_pretty(pg_total_relation_size('bench_reviews'))")

# Model ---------------------------------------------------------------------
log "bench: training and quantizing the fastText model"
fasttext supervised -input "$WORK/train.txt" -output "$WORK/model" -dim 50 -wordNgrams 2 \
	-minn 2 -maxn 4 -epoch 5 -bucket 200000 -thread 2 -verbose 0
fasttext quantize -input "$WORK/train.txt" -output "$WORK/model" -qnorm -cutoff 50000 \
	-retrain -thread 2 -verbose 0 >/dev/null
model_size=$(stat -c %s "$WORK/model.ftz")
psql_q -At -c "SELECT triage.import_fasttext('bench', pg_read_binary_file('$WORK/model.ftz'))" >/dev/null
# the linear kind, triage.train's default, on the same 4,000 labeled reviews
log "bench: training the linear model"
psql_q -At -c "SELECT triage.train('bench_linear', 'SELECT review, score FROM reviews_src')" >/dev/null

# Timing --------------------------------------------------------------------
# RUNS rounds, each one fasttext predict-prob run and then one psql session
# running every query once, so that a busy neighbour slows both sides alike.
# Session times are the executor's, from EXPLAIN ANALYZE without per-node
# timing.  The first session's first classify loads the model: that is the
# cold run; later sessions warm up on one row first.  Three settings: serial;
# the defaults, where the planner decides (classify's COST is 15, measured
# against md5's 1, so it may choose workers); and parallel, made free so
# that the planner uses the default number of workers.  Parallel workers are new
# processes, so each parallel run pays one model load per worker: that is
# part of what it costs.
MODES="serial default parallel"
mode_sql() {
	echo "RESET ALL;"
	case $1 in
		serial) echo "SET max_parallel_workers_per_gather = 0;" ;;
		parallel) echo "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;" ;;
	esac
}
timed() {	# name, SQL expression to count over the table
	echo "\\echo @$1"
	echo "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) SELECT count($2) FROM bench_reviews;"
}
round_sql() {	# round number
	if [ "$1" = 1 ]; then
		echo "SELECT count(md5(review)) FROM bench_reviews;"	# the table into shared buffers
		mode_sql serial
		timed classify_cold "triage.classify('bench', review)"
	else
		echo "SELECT triage.classify('bench', 'warm up');"
	fi
	for mode in $MODES; do
		mode_sql "$mode"
		timed "classify_$mode" "triage.classify('bench', review)"
		timed "md5_$mode" "md5(review)"
	done
	mode_sql serial
	echo "SELECT triage.classify('bench_linear', 'warm up');"
	timed linear_serial "triage.classify('bench_linear', review)"
}

# The core alone (test/bench/classify_core.c: load, then every line with
# k = -1, no PostgreSQL), built with the extension's flags: what classify
# costs before PostgreSQL's per-row overhead.  Its time excludes loading.
(cd "$ROOT" && gcc -O3 -ffp-contract=off -Isrc test/bench/classify_core.c \
	$(make -s -f src/core.mk print-CORE_SRCS) -lm -o "$WORK/classify_core")

# times.txt: "name ms workers" per run (workers launched, 0 for a serial plan)
: >"$WORK/times.txt"
for round in $(seq "$RUNS"); do
	log "bench: round $round of $RUNS: fasttext predict-prob; the core; classify and md5 in 3 settings"
	t0=$(now)
	fasttext predict-prob "$WORK/model.ftz" "$WORK/lines.txt" 1 >/dev/null
	t1=$(now)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "fasttext_cli %.3f 0\n", (b - a) * 1000 }' >>"$WORK/times.txt"
	"$WORK/classify_core" "$WORK/model.ftz" "$WORK/lines.txt" 1 2>&1 >/dev/null |
		awk -v rows="$ROWS" '/us per line/ { printf "core %.3f 0\n", $(NF - 3) * rows / 1000 }' >>"$WORK/times.txt"

	round_sql "$round" >"$WORK/round.sql"
	psql_q -At -f "$WORK/round.sql" >"$WORK/round.out"
	awk 'function flush() { if (name != "") print name, ms, w }
		/^@/ { flush(); name = substr($0, 2); ms = ""; w = 0 }
		/Execution Time:/ { ms = $3 }
		/Workers Launched:/ { w = $3 }
		END { flush() }' "$WORK/round.out" >>"$WORK/times.txt"
done
default_workers=$(psql_q -At -c "SHOW max_parallel_workers_per_gather")

# best of the runs, in seconds; and the workers the runs of a query launched
best() { awk -v n="$1" '$1 == n { s = $2 / 1000; if (b == "" || s < b) b = s } END { print b }' "$WORK/times.txt"; }
workers() { awk -v n="$1" '$1 == n { if ($3 > w) w = $3 } END { print w + 0 }' "$WORK/times.txt"; }
runs() { awk -v n="$1" '$1 == n { printf " %.3f", $2 / 1000 }' "$WORK/times.txt"; }

t_cli=$(best fasttext_cli)
t_cold=$(best classify_cold)

# Agreement -----------------------------------------------------------------
log "bench: agreement on $((ROWS / SAMPLE_EVERY)) rows"
fasttext predict "$WORK/model.ftz" "$WORK/sample.txt" 1 >"$WORK/ft_labels.txt"
fasttext predict-prob "$WORK/model.ftz" "$WORK/sample.txt" 1 >"$WORK/ft_probs.txt"
psql_q -At -F ' ' -c "SELECT '__label__' || p.label, p.confidence
	FROM bench_reviews, triage.classify('bench', review) AS p
	WHERE id % $SAMPLE_EVERY = 0 ORDER BY id" >"$WORK/pg_labels.txt"
read -r agree total maxdiff < <(paste -d ' ' "$WORK/ft_labels.txt" "$WORK/ft_probs.txt" "$WORK/pg_labels.txt" |
	awk '{ n++; if ($1 == $4) a++
		   d = $3 - $5; if (d < 0) d = -d; if (d > m) m = d }
		 END { printf "%d %d %.2g\n", a, n, m }')

# Training ------------------------------------------------------------------
# fasttext supervised (2 threads, as the tool runs here) against triage.train
# (2 hogwild threads too, "thread": 2) on the same 4,000 labeled reviews and the same
# hyperparameters (those of the data's documented baseline), best of RUNS;
# then the held-out accuracy of each on every 5th review when trained on the rest.
log "bench: training"
TRAIN_OPTS='-dim 50 -epoch 25 -lr 0.1 -wordNgrams 2 -minn 2 -maxn 4 -bucket 200000'
TRAIN_JSON='{"dim": 50, "epoch": 25, "lr": 0.1, "wordNgrams": 2, "minn": 2, "maxn": 4, "bucket": 200000, "thread": 2}'
: >"$WORK/train_times.txt"
for round in $(seq "$RUNS"); do
	t0=$(now)
	fasttext supervised -input "$WORK/train.txt" -output "$WORK/trained" $TRAIN_OPTS -thread 2 -verbose 0
	t1=$(now)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "fasttext_train %.3f\n", b - a }' >>"$WORK/train_times.txt"
	ms=$(psql_q -At <<SQL | sed -n 's/^Execution Time: \([0-9.]*\) ms$/\1/p'
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF)
SELECT triage_internal.train_classifier('SELECT review, score FROM reviews_src', '{"kind": "fasttext"}'::jsonb || '$TRAIN_JSON');
SQL
)
	awk -v ms="$ms" 'BEGIN { printf "triage_train %.3f\n", ms / 1000 }' >>"$WORK/train_times.txt"
	ms=$(psql_q -At <<SQL | sed -n 's/^Execution Time: \([0-9.]*\) ms$/\1/p'
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF)
SELECT triage_internal.train_classifier('SELECT review, score FROM reviews_src', '{}');
SQL
)
	awk -v ms="$ms" 'BEGIN { printf "linear_train %.3f\n", ms / 1000 }' >>"$WORK/train_times.txt"
done
best_train() { awk -v n="$1" '$1 == n && (b == "" || $2 < b) { b = $2 } END { print b }' "$WORK/train_times.txt"; }
t_ft_train=$(best_train fasttext_train)
t_pg_train=$(best_train triage_train)
t_linear_train=$(best_train linear_train)
# held-out accuracy, the same split for both
cp "$WORK/train.txt" "$WORK/train_all.txt"
awk 'NR % 5 != 0' "$WORK/train_all.txt" >"$WORK/train80.txt"
awk 'NR % 5 == 0' "$WORK/train_all.txt" >"$WORK/test20.txt"
fasttext supervised -input "$WORK/train80.txt" -output "$WORK/heldout" $TRAIN_OPTS -thread 2 -verbose 0
ft_acc=$(fasttext test "$WORK/heldout.bin" "$WORK/test20.txt" | sed -n 's/^P@1\t//p')
pg_acc=$(psql_q -At <<SQL
SELECT triage.train('heldout', 'SELECT review, score FROM reviews_src WHERE n % 5 <> 0', '$TRAIN_JSON'::jsonb || '{"kind": "fasttext"}') \\g /dev/null
SELECT triage.evaluate('heldout', 'SELECT review, score FROM reviews_src WHERE n % 5 = 0')->>'accuracy';
SQL
)

# OpenBLAS ------------------------------------------------------------------
# Where it can pay: the output layer of a model with many labels, computed
# for a batch of rows with one sgemm (triage.classify_batch) instead of row by
# row (triage.classify).  A 600-label softmax model (the first word of each
# review as its label), dim 50, and the 2-label model above for contrast; and
# the kernel alone, loops against OpenBLAS (test/bench/blas_output_layer.c).
log "bench: OpenBLAS"
psql_q <<SQL
\copy (SELECT '__label__' || lower((regexp_split_to_array(btrim(review), '\s+'))[1]) || ' ' || review FROM reviews_src ORDER BY n) TO '$WORK/train_many.txt' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
SQL
fasttext supervised -input "$WORK/train_many.txt" -output "$WORK/many" -dim 50 -wordNgrams 2 \
	-epoch 5 -bucket 200000 -thread 2 -verbose 0
psql_q -At -c "SELECT triage.import_fasttext('many', pg_read_binary_file('$WORK/many.bin'))" >/dev/null
: >"$WORK/blas_times.txt"
for round in $(seq "$RUNS"); do
	psql_q -At <<SQL | awk '/^Execution Time/ { print $3 }' | paste -sd ' ' >>"$WORK/blas_times.txt"
SET max_parallel_workers_per_gather = 0;
SELECT count(triage.classify('many', 'warm up'));
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) SELECT count(triage.classify('many', review)) FROM bench_reviews;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF)
SELECT count(b.label) FROM (SELECT id / 1000 AS g, array_agg(review) AS a FROM bench_reviews GROUP BY 1) x,
	   triage.classify_batch('many', x.a) b;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) SELECT count(triage.classify('bench', review)) FROM bench_reviews;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF)
SELECT count(b.label) FROM (SELECT id / 1000 AS g, array_agg(review) AS a FROM bench_reviews GROUP BY 1) x,
	   triage.classify_batch('bench', x.a) b;
SQL
done
blas_best() { awk -v c="$1" '{ if (b == "" || $c < b) b = $c } END { printf "%.3f", b / 1000 }' "$WORK/blas_times.txt"; }
t_many_row=$(blas_best 1); t_many_batch=$(blas_best 2); t_two_row=$(blas_best 3); t_two_batch=$(blas_best 4)
gcc -O3 -ffp-contract=off "$ROOT/test/bench/blas_output_layer.c" -lopenblas -o "$WORK/blas_output_layer"
OPENBLAS_NUM_THREADS=1 "$WORK/blas_output_layer" >"$WORK/blas_kernel.txt"

# Trigger -------------------------------------------------------------------
# COPY of the 100,000 rows into a plain table and into attached tables (the
# BEFORE ROW trigger of triage.attach), against classify over the same rows
# in the same session: the trigger's overhead is what an attached COPY costs
# beyond the plain COPY and the classification itself.  Policies: threshold
# 0 (nothing escalated: the trigger alone), the same with a provenance
# column, and threshold 0.6 (a share queued for the large model).
log "bench: trigger overhead on COPY"
psql_q <<SQL
SET client_min_messages = warning;
SELECT triage.create_policy('keep_all', 'bench', threshold => 0);
SELECT triage.create_policy('escalate_some', 'bench', threshold => 0.6);
CREATE TABLE copy_plain (id bigserial PRIMARY KEY, review text, label text, label_by jsonb);
CREATE TABLE copy_kept (LIKE copy_plain INCLUDING ALL);
CREATE TABLE copy_provenance (LIKE copy_plain INCLUDING ALL);
CREATE TABLE copy_escalated (LIKE copy_plain INCLUDING ALL);
SELECT triage.attach('copy_kept', 'review', 'label', 'keep_all');
SELECT triage.attach('copy_provenance', 'review', 'label', 'keep_all', 'label_by');
SELECT triage.attach('copy_escalated', 'review', 'label', 'escalate_some');
SQL
: >"$WORK/copy_times.txt"
for round in $(seq "$RUNS"); do
	{
		echo "SET max_parallel_workers_per_gather = 0;"
		echo "SELECT triage.classify('bench', 'warm up');"
		echo "TRUNCATE copy_plain, copy_kept, copy_provenance, copy_escalated, triage.escalations CASCADE;"
		echo "CHECKPOINT;"
		echo "\\timing on"
		for t in plain kept provenance escalated; do
			echo "\\echo @copy_$t"
			echo "COPY copy_$t (review) FROM '$WORK/lines.txt' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02');"
		done
		echo "\\echo @classify"
		echo "SELECT count(triage.classify('bench', review)) FROM copy_plain;"
		echo "\\timing off"
	} >"$WORK/copy.sql"
	psql_q -f "$WORK/copy.sql" | awk '/^@/ { name = substr($0, 2) } /^Time:/ && name != "" { print name, $2; name = "" }' \
		>>"$WORK/copy_times.txt"
done
copy_best() { awk -v n="$1" '$1 == n { s = $2 / 1000; if (b == "" || s < b) b = s } END { printf "%.3f", b }' "$WORK/copy_times.txt"; }
t_copy_plain=$(copy_best copy_plain); t_copy_kept=$(copy_best copy_kept)
t_copy_prov=$(copy_best copy_provenance); t_copy_esc=$(copy_best copy_escalated)
t_copy_classify=$(copy_best classify)
copy_filled=$(psql_q -At -c "SELECT count(*) FILTER (WHERE label IS NOT NULL) || ' of ' || count(*) FROM copy_escalated")
copy_queued=$(psql_q -At -c "SELECT count(*) FROM triage.escalations WHERE source = 'copy_escalated'::regclass")

# Extraction ------------------------------------------------------------------
# triage.extract with the shipped extractor over 100,000 generated messages
# (every phrasing, test/extract/gen_messages.py, a seed it was not trained
# on) against to_tsvector('english', ...) over the same rows in the same
# session, serial, best of RUNS.
log "bench: extraction against to_tsvector"
python3 "$ROOT/test/extract/gen_messages.py" --seed 11 --count "$ROWS" --phrasings all --out "$WORK/messages.csv"
psql_q <<SQL
CREATE TABLE bench_messages (input text, fields jsonb, kind text, template text);
COPY bench_messages FROM '$WORK/messages.csv' WITH (FORMAT csv, HEADER);
VACUUM (ANALYZE) bench_messages;
SELECT triage.import_extractor('fields', pg_read_binary_file('$ROOT/models/business_fields.crf'));
SQL
msg_bytes=$(psql_q -At -c "SELECT round(avg(octet_length(input))) FROM bench_messages")
: >"$WORK/extract_times.txt"
for round in $(seq "$RUNS"); do
	psql_q -At <<SQL | awk '/^Execution Time/ { print $3 }' | paste -sd ' ' >>"$WORK/extract_times.txt"
SET max_parallel_workers_per_gather = 0;
SELECT triage.extract('fields', 'warm up A-1');
SELECT count(md5(input)) FROM bench_messages;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) SELECT count(triage.extract('fields', input)) FROM bench_messages;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) SELECT count(to_tsvector('english', input)) FROM bench_messages;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) SELECT count(md5(input)) FROM bench_messages;
SQL
done
t_extract=$(awk '{ if (b == "" || $1 < b) b = $1 } END { printf "%.3f", b / 1000 }' "$WORK/extract_times.txt")
t_tsvector=$(awk '{ if (b == "" || $2 < b) b = $2 } END { printf "%.3f", b / 1000 }' "$WORK/extract_times.txt")
t_msg_md5=$(awk '{ if (b == "" || $3 < b) b = $3 } END { printf "%.3f", b / 1000 }' "$WORK/extract_times.txt")

# Worker ----------------------------------------------------------------------
# triage-worker against an instant stub endpoint (test/bench/worker.sh):
# escalations per second and resident memory at concurrency 1, 8 and 32.
log "bench: triage-worker throughput"
# (not as the tree copy's owner: it must leave that copy to us)
TRIAGE_SOURCE= bash "$ROOT/test/bench/worker.sh" >"$WORK/worker_bench.txt"
# one copy of a large model per server (test/bench/shared.sh)
log "bench: a 400 MB model in 10 sessions"
bash "$ROOT/test/bench/shared.sh" >"$WORK/shared_bench.txt"
# report() and purge() on a queue of 1,000,000 escalations (test/bench/report.sh)
log "bench: report() and purge() on 1,000,000 escalations"
bash "$ROOT/test/bench/report.sh" >"$WORK/report_bench.txt"

# Report --------------------------------------------------------------------
row() {	# what, seconds, reference md5 seconds
	awk -v what="$1" -v s="$2" -v cli="$t_cli" -v md5="$3" -v rows="$ROWS" 'BEGIN {
		printf "%-52s %8.3f %10.0f %8.2fx %8.2fx\n", what, s, rows / s, cli / s, md5 / s }'
}
describe() {	# mode, workers launched
	case $1 in
		serial) echo "serial" ;;
		default) echo "default settings, $2 workers" ;;
		parallel) echo "parallel, $2 workers + leader" ;;
	esac
}
{
	echo "pg_triage benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average at start $load"
	echo "fastText $(dpkg-query -W -f='${Version}' fasttext 2>/dev/null || echo '?'), $(postgres --version)"
	echo "data: $ROWS reviews ($distinct distinct) cycled from the 4,000 in test/data/fine_foods_train.csv; table $table_size"
	echo "model: supervised, dim 50, wordNgrams 2, minn 2, maxn 4, epoch 5, bucket 200000,"
	echo "       quantized -qnorm -cutoff 50000 -retrain: $model_size bytes"
	echo "times: best of $RUNS rounds; PostgreSQL's are the Execution Time of EXPLAIN (ANALYZE, TIMING OFF), model cached"
	echo "ratios: reference time / this time, so > 1 means faster than the reference (md5: in the same setting)"
	echo
	printf "%-52s %8s %10s %9s %9s\n" "what" "seconds" "rows/s" "vs CLI" "vs md5"
	row "fasttext predict-prob (CLI, 1 thread)" "$t_cli" "$(best md5_serial)"
	row "the core alone (classify_core.c, no PostgreSQL)" "$(best core)" "$(best md5_serial)"
	for q in classify md5; do
		for mode in $MODES; do
			if [ "$q" = classify ]; then what="triage.classify"; else what="md5(review)"; fi
			row "$what, $(describe "$mode" "$(workers "${q}_$mode")")" \
				"$(best "${q}_$mode")" "$(best "md5_$mode")"
		done
	done
	row "triage.classify, linear kind (triage.train's default), serial" "$(best linear_serial)" "$(best md5_serial)"
	echo
	echo "cold triage.classify, serial (the session's first, with the model load): $(printf '%.3f' "$t_cold") s"
	echo "settings: serial = max_parallel_workers_per_gather 0; default = $default_workers workers allowed, planner's choice;"
	echo "          parallel = parallel_setup_cost 0, parallel_tuple_cost 0"
	echo "all runs (s), in round order:"
	for n in fasttext_cli core classify_serial classify_default classify_parallel \
		md5_serial md5_default md5_parallel; do
		printf '  %-18s%s\n' "$n" "$(runs "$n")"
	done
	echo
	echo "training on the 4,000 labeled reviews, $TRAIN_OPTS, best of $RUNS:"
	awk -v f="$t_ft_train" -v p="$t_pg_train" 'BEGIN {
		printf "  %-50s %8.3f s\n", "fasttext supervised (2 threads)", f
		printf "  %-50s %8.3f s   %.2fx the time of fastText\n", "triage.train, fastText kind (2 threads)", p, p / f }'
	awk -v f="$t_ft_train" -v p="$t_linear_train" 'BEGIN {
		printf "  %-50s %8.3f s   %.2fx the time of fastText\n", "triage.train, linear kind, defaults (C by 5-fold CV)", p, p / f }'
	echo "  held-out accuracy (every 5th review, trained on the rest): pg_triage $pg_acc, fasttext $ft_acc"
	echo
	echo "OpenBLAS: 100,000 rows, serial, best of $RUNS; classify_batch takes arrays of 1,000 rows:"
	awk -v mr="$t_many_row" -v mb="$t_many_batch" -v tr="$t_two_row" -v tb="$t_two_batch" 'BEGIN {
		printf "  %-50s %8.3f s\n", "600 labels: triage.classify (row by row)", mr
		printf "  %-50s %8.3f s   %.2fx faster\n", "600 labels: triage.classify_batch (sgemm)", mb, mr / mb
		printf "  %-50s %8.3f s\n", "2 labels: triage.classify", tr
		printf "  %-50s %8.3f s   %.2fx (falls back to row by row)\n", "2 labels: triage.classify_batch", tb, tr / tb }'
	echo "  the output-layer kernel alone, dim 50 (loops as in training and classify, against OpenBLAS):"
	sed 's/^/    /' "$WORK/blas_kernel.txt"
	echo
	echo "insert trigger (triage.attach): COPY of the $ROWS rows, best of $RUNS; overhead = (attached - plain - classify) / classify:"
	awk -v p="$t_copy_plain" -v k="$t_copy_kept" -v v="$t_copy_prov" -v e="$t_copy_esc" -v c="$t_copy_classify" \
		-v q="$copy_queued" -v rows="$ROWS" 'BEGIN {
		printf "  %-58s %8.3f s\n", "COPY into a plain table", p
		printf "  %-58s %8.3f s\n", "SELECT count(triage.classify(...)) over the same rows", c
		printf "  %-58s %8.3f s   trigger overhead %+.0f%% of classify\n", "COPY into an attached table, nothing escalated", k, 100 * (k - p - c) / c
		printf "  %-58s %8.3f s   trigger overhead %+.0f%% of classify\n", "the same with a provenance column (jsonb per row)", v, 100 * (v - p - c) / c
		printf "  %-58s %8.3f s   %+.0f%%, %.1f%% of rows queued\n", "attached, threshold 0.6: escalations queued", e, 100 * (e - p - c) / c, 100 * q / rows }'
	echo "  labels filled by the escalating COPY: $copy_filled"
	echo
	echo "field extraction: $ROWS generated messages (about $msg_bytes bytes each), serial, best of $RUNS:"
	awk -v x="$t_extract" -v t="$t_tsvector" -v m="$t_msg_md5" -v rows="$ROWS" 'BEGIN {
		printf "  %-58s %8.3f s %8.1f us/row\n", "triage.extract (models/business_fields.crf)", x, x / rows * 1e6
		printf "  %-58s %8.3f s %8.1f us/row   extract takes %.2fx its time\n", "to_tsvector(\x27english\x27, input)", t, t / rows * 1e6, x / t
		printf "  %-58s %8.3f s %8.1f us/row\n", "md5(input) (scanning the rows)", m, m / rows * 1e6 }'
	echo
	echo "one copy of a large model per server (test/bench/shared.sh; PSS over an idle session):"
	cat "$WORK/shared_bench.txt"
	echo
	echo "triage-worker against an instant stub endpoint on 127.0.0.1 (test/bench/worker.sh):"
	cat "$WORK/worker_bench.txt"
	echo
	echo "triage.report() and triage.purge() on 1,000,000 escalations (test/bench/report.sh):"
	cat "$WORK/report_bench.txt"
	echo
	awk -v a="$agree" -v n="$total" -v m="$maxdiff" 'BEGIN {
		printf "agreement with fasttext predict on %d rows: %d (%.1f%%) same top label; max |probability difference| %s\n",
			n, a, 100 * a / n, m }'
} | tee "$WORK/results.txt"

cp "$WORK/results.txt" "$ROOT/test/bench/results.txt"
[ -n "${BENCH_RESULTS:-}" ] && cp "$WORK/results.txt" "$BENCH_RESULTS"
[ "$agree" -eq "$total" ] || log "bench: WARNING: triage.classify and fasttext predict disagree on $((total - agree)) rows"
exit 0
