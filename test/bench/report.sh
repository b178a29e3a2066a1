#!/bin/bash
# triage.report() and triage.purge() on 1,000,000 escalations (make bench;
# issue #18): a policy's queue filled directly (pending 2%, leased 0.5%,
# answered 95%, dead 2.5%, over the past week, as test/t/024_report_browser.pl
# fills it), then report() timed (best of BENCH_RUNS, default 3) with its
# size, and purge() of every answered row timed once, with the table's size
# before, after purge and VACUUM, and after 100,000 new rows (the freed space
# is reused: the table does not grow).  Runs against the cluster of the
# calling script (PGHOST/PGPORT set).
set -euo pipefail
ROWS=${REPORT_ROWS:-1000000}
RUNS=${BENCH_RUNS:-3}

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# escalations i = from..to of the policy (the mix of test/t/024_report_browser.pl)
fill_sql() {
	cat <<SQL
INSERT INTO triage.escalations (policy, input, small_answer, reason, status, attempts, visible_at,
								claimed_by, claimed_role, answer, usage, error, outcome, created_at, done_at)
SELECT 'bench_report', 'review number ' || i, jsonb_build_object('label', 'great', 'confidence', 0.5 + (i % 40) / 100.0),
	   CASE WHEN i % 10 = 0 THEN 'audit sample (rate 0.1)'
			WHEN i % 97 = 0 THEN 'rule ' || (i % 3) || ': required field missing'
			ELSE 'confidence 0.' || (50 + i % 40) || ' < threshold 0.9' END,
	   s, CASE WHEN s = 'dead' THEN 5 ELSE 0 END,
	   CASE WHEN s = 'claimed' THEN now() + interval '1 hour' ELSE t END,
	   CASE WHEN s = 'claimed' THEN 'worker-' || (i % 4) END,
	   CASE WHEN s = 'claimed' THEN current_user::regrole END,
	   CASE WHEN s = 'done' THEN jsonb_build_object('label', CASE WHEN i % 3 = 0 THEN 'other' ELSE 'great' END) END,
	   CASE WHEN s = 'done' THEN '{"prompt_tokens": 180, "completion_tokens": 3, "total_tokens": 183}'::jsonb END,
	   CASE WHEN s = 'dead' THEN 'HTTP ' || (500 + i % 4) || ' error ' || (i % 50) END,
	   CASE WHEN s = 'done' THEN 'written' END,
	   t, CASE WHEN s IN ('done', 'dead') THEN t + interval '2 minutes' END
  FROM generate_series($1, $2) AS i,
	   LATERAL (SELECT CASE WHEN i % 200 < 4 THEN 'pending' WHEN i % 200 = 4 THEN 'claimed'
							WHEN i % 200 < 10 THEN 'dead' ELSE 'done' END AS s,
					   now() - interval '7 days' + (i % 100000) * interval '6 seconds' AS t) x;
SQL
}

psql_q -At >/dev/null <<SQL
SELECT triage.import_fasttext('report_model', pg_read_binary_file('$ROOT/models/fine_foods_sentiment.ftz'));
SELECT triage.create_policy('bench_report', 'report_model');
SQL
t0=$(date +%s.%N)
fill_sql 1 "$ROWS" | psql_q -At >/dev/null
t1=$(date +%s.%N)
psql_q -At -c "VACUUM ANALYZE triage.escalations" >/dev/null

best=
for _ in $(seq "$RUNS"); do
	ms=$(psql_q -At <<SQL | sed -n 's/^Execution Time: \([0-9.]*\) ms$/\1/p'
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) SELECT triage.report('bench_report');
SQL
)
	best=$(awk -v a="$best" -v b="$ms" 'BEGIN { print (a == "" || b < a) ? b : a }')
done
bytes=$(psql_q -At -c "SELECT octet_length(triage.report('bench_report'))")

size_before=$(psql_q -At -c "SELECT pg_relation_size('triage.escalations')")
t2=$(date +%s.%N)
purged=$(psql_q -At -c "SELECT triage.purge('0 seconds', forget_workers => NULL)->>'done'")
t3=$(date +%s.%N)
psql_q -At -c "VACUUM triage.escalations" >/dev/null
t4=$(date +%s.%N)
size_vacuumed=$(psql_q -At -c "SELECT pg_relation_size('triage.escalations')")
fill_sql $((ROWS + 1)) $((ROWS + 100000)) | psql_q -At >/dev/null
size_refilled=$(psql_q -At -c "SELECT pg_relation_size('triage.escalations')")
psql_q -At -c "DELETE FROM triage.escalations WHERE policy = 'bench_report'" >/dev/null

awk -v rows="$ROWS" -v fill="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" -v ms="$best" -v bytes="$bytes" \
	-v purged="$purged" -v purge_s="$(awk -v a="$t2" -v b="$t3" 'BEGIN { print b - a }')" \
	-v vacuum_s="$(awk -v a="$t3" -v b="$t4" 'BEGIN { print b - a }')" \
	-v before="$size_before" -v vacuumed="$size_vacuumed" -v refilled="$size_refilled" -v runs="$RUNS" 'BEGIN {
	printf "  %-58s %8.1f s\n", sprintf("inserting %d escalations (one INSERT ... generate_series)", rows), fill
	printf "  %-58s %8.3f s   %d bytes\n", sprintf("triage.report(), best of %d", runs), ms / 1000, bytes
	printf "  %-58s %8.1f s   %d rows, %.0f rows/s\n", "triage.purge() of every answered row (one call)", purge_s, purged, purged / purge_s
	printf "  %-58s %8.1f s\n", "VACUUM of triage.escalations after it", vacuum_s
	printf "  table (heap): %.0f MB before, %.0f MB after purge and VACUUM (space freed inside, not returned),\n", before / 1048576, vacuumed / 1048576
	printf "  %.0f MB after 100,000 new escalations (%s)\n", refilled / 1048576, refilled <= vacuumed ? "the freed space reused, no growth" : "it grew" }'
