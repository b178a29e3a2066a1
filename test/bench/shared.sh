#!/bin/bash
# One copy of a large model per server (make bench; issue #17): a dense
# fastText model trained with fastText's default bucket (2M rows, about
# 400 MB) on the shared reviews, imported, then 10 sessions that each
# classify once and stay open.  Prints, for sharing on (the default,
# triage.shared_model_min_bytes = 16MB) and off (-1): the memory each
# session adds over an idle session (PSS from /proc/PID/smaps_rollup, which
# divides shared pages among the processes mapping them), as a share of the
# model, and a new session's first classify once the model is shared.
# Runs against the cluster of the calling script (PGHOST/PGPORT set), as
# the server's OS user (it reads /proc of the backends).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d /tmp/pg_triage-shared.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SESSIONS=10

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

psql_q -At >/dev/null <<SQL
CREATE TABLE IF NOT EXISTS shared_src (product text, review text, score text);
TRUNCATE shared_src;
\copy shared_src FROM '$ROOT/test/data/fine_foods_train.csv' WITH (FORMAT csv, HEADER)
\copy (SELECT '__label__' || score || ' ' || regexp_replace(review, '[\r\n\t\v\f]', ' ', 'g') FROM shared_src) TO '$WORK/train.txt' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
SQL
fasttext supervised -input "$WORK/train.txt" -output "$WORK/big" -dim 50 -wordNgrams 2 \
	-bucket 2000000 -epoch 1 -thread 2 -verbose 0
size=$(stat -c %s "$WORK/big.bin")
chmod a+r "$WORK" "$WORK/big.bin"
psql_q -At -c "SELECT triage.import_fasttext('big_shared', pg_read_binary_file('$WORK/big.bin'))" >/dev/null

pss_kb() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup"; }

# sessions that classify once (or not at all: the idle one) and wait
run_sessions() {	# setting, count
	local setting=$1 n=$2 pids=()
	for i in $(seq "$n"); do
		PGAPPNAME=bench_classify psql -X -q -c "SET triage.shared_model_min_bytes = $setting" \
			-c "SELECT triage.classify('big_shared', 'good tea')" \
			-c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
		pids+=($!)
	done
	PGAPPNAME=bench_idle psql -X -q -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
	pids+=($!)
	# wait until every classifying session sleeps
	for _ in $(seq 600); do
		local waiting
		waiting=$(psql -X -At -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'")
		[ "$waiting" -ge $((n + 1)) ] && break
		sleep 0.2
	done
	local idle
	idle=$(psql -X -At -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'bench_idle'")
	local idle_kb total=0 count=0
	idle_kb=$(pss_kb "$idle")
	for pid in $(psql -X -At -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'bench_classify'"); do
		total=$((total + $(pss_kb "$pid") - idle_kb))
		count=$((count + 1))
	done
	psql -X -q -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'" >/dev/null
	wait "${pids[@]}" 2>/dev/null || true
	echo $((total / count))
}

# a new session's first classify, the model already shared (or not); and,
# as the floor, of the shipped 1 MB model (the library's first load and the
# model lookup, which every new session pays)
first_ms() {	# setting, model
	psql -X -At -c "SET triage.shared_model_min_bytes = $1" \
		-c "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) SELECT triage.classify('$2', 'good tea')" |
		sed -n 's/^Execution Time: \([0-9.]*\) ms$/\1/p'
}
psql_q -At -c "SELECT triage.import_fasttext('small_shared', pg_read_binary_file('$ROOT/models/fine_foods_sentiment.ftz'))" >/dev/null

shared_kb=$(run_sessions "'16MB'" "$SESSIONS")
shared_first=$(first_ms "'16MB'" big_shared)
small_first=$(first_ms "'16MB'" small_shared)
own_kb=$(run_sessions -1 "$SESSIONS")
own_first=$(first_ms -1 big_shared)
awk -v s="$shared_kb" -v o="$own_kb" -v size="$size" -v sf="$shared_first" -v of="$own_first" -v n="$SESSIONS" -v mf="$small_first" 'BEGIN {
	printf "  a %.0f MB dense model (bucket 2,000,000, dim 50), %d sessions that classified once:\n", size / 1048576, n
	printf "  %-52s %8.1f MB per session  %5.1f%% of the model\n", "shared file (triage.shared_model_min_bytes 16MB)", s / 1024, 100 * s * 1024 / size
	printf "  %-52s %8.1f MB per session  %5.1f%% of the model\n", "a copy per session (-1)", o / 1024, 100 * o * 1024 / size
	printf "  %-52s %8.1f ms\n", "a new session'"'"'s first classify, model shared", sf
	printf "  %-52s %8.1f ms\n", "a new session'"'"'s first classify, its own copy", of
	printf "  %-52s %8.1f ms\n", "the same with the shipped 1 MB model (the floor)", mf }'
psql_q -c "DELETE FROM triage.deployments WHERE name IN ('big_shared', 'small_shared')" \
	-c "DELETE FROM triage.models WHERE name IN ('big_shared', 'small_shared')" >/dev/null
