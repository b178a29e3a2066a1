#!/bin/bash
# The worker benchmark (part of make bench): how many escalations per second
# triage-worker answers against an endpoint that costs nothing, and how much
# memory it holds while doing it.
#
#   bash test/bench/worker.sh            run it (starts its own cluster, or
#                                        uses the one PGHOST/PGPORT name)
#   . test/bench/worker.sh; worker_bench the same from a sourcing script (call
#                                        it as a plain command, not from || or
#                                        if, where bash turns set -e off)
#
# In a database of its own (triage_worker_bench, dropped at the end) it
# imports models/fine_foods_sentiment.ftz, creates a policy, and for each
# concurrency (1, 8 and 32) enqueues JOBS escalations of real reviews with
# triage.enqueue and times `triage-worker --once --concurrency C` draining
# them against test/stub/stub_llm.py --instant on 127.0.0.1 (one precomputed
# reply, keep-alive, asyncio).  Each run must end with every escalation done
# and one request per job.  Besides the worker it times
#   - the stub alone: curl --parallel (libcurl multi, like the worker) posting
#     the same request, 32 at a time,
#   - the database alone: psql claiming 32 jobs at a time and completing each
#     with the stub's reply, one statement at a time, as the worker does,
# and gives the CPU time per job of the worker, of PostgreSQL and of the
# stub, and how busy the rest of the machine was (neighbours).
#
# Environment: PGHOST, PGPORT (a running cluster with pg_triage installed,
# reached as a superuser; without PGHOST it starts a throwaway one),
# WORKER_BENCH_JOBS (20000),
# WORKER_BENCH_CONCURRENCY ("1 8 32"), TRIAGE_WORKER (default: the installed
# $(pg_config --bindir)/triage-worker).  As root it re-runs itself as
# postgres on a copy of the tree.  Prints a table on standard output (lines
# starting with two spaces), progress on standard error.  A benchmark, not a
# test: it fails when something does not run or a job is not answered,
# never on the numbers.

_worker_bench_main() {
	set -euo pipefail
	local root
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	ROOT=$root
	. "$root/test/cluster.sh"

	local jobs=${WORKER_BENCH_JOBS:-20000}
	local concurrencies=${WORKER_BENCH_CONCURRENCY:-1 8 32}
	local worker=${TRIAGE_WORKER:-$PG_BINDIR/triage-worker}
	# globals: the EXIT trap runs after this function has returned
	work="" own_cluster=0 stub_pid="" postmaster="" db=triage_worker_bench

	[ -x "$worker" ] || { echo "worker bench: no triage-worker at $worker (make install)" >&2; return 1; }
	work=$(mktemp -d /tmp/pg_triage-wbench.XXXXXX)

	wb_log() { printf 'worker bench: %s\n' "$*" >&2; }
	wb_psql() { psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }
	wb_now() { date +%s.%N; }
	# user + system CPU seconds of a process, from /proc/PID/stat
	wb_cpu() {
		awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / hz }' "/proc/$1/stat"
	}
	# CPU seconds of the cluster: the postmaster, the children it reaped
	# (the worker's backend once it is gone) and those still running
	wb_pg_cpu() {
		[ -n "$postmaster" ] || { echo 0; return; }
		{
			awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$postmaster/stat"
			for p in $(ps -o pid= --ppid "$postmaster"); do
				awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || true
			done
		} | awk -v hz="$(getconf CLK_TCK)" '{ t += $1 } END { printf "%.3f\n", t / hz }'
	}
	# busy and total CPU seconds of the whole machine, from /proc/stat
	wb_machine() {
		awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i
			printf "%.3f %.3f\n", (t - $5 - $6) / hz, t / hz }' /proc/stat
	}
	wb_cleanup() {
		[ -n "$stub_pid" ] && kill "$stub_pid" 2>/dev/null && wait "$stub_pid" 2>/dev/null
		if [ "$own_cluster" = 1 ]; then
			cluster_stop
		else
			psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
		fi
		rm -rf "$work"
	}
	trap wb_cleanup EXIT

	if [ -z "${PGHOST:-}" ]; then
		wb_log "starting a throwaway cluster in $work"
		PGPORT=${WORKER_BENCH_PORT:-54339}
		cluster_start "$work/pg"
		own_cluster=1
		trap wb_cleanup EXIT	# cluster_start sets its own
	fi
	psql -X -q -v ON_ERROR_STOP=1 -d postgres <<-SQL
		SET client_min_messages = warning;
		DROP DATABASE IF EXISTS $db;
		CREATE DATABASE $db;
		ALTER DATABASE $db SET track_functions = 'pl';
	SQL
	# the postmaster, if it is ours to look at (else the CPU of PostgreSQL
	# counts as "other")
	postmaster=$(head -1 "$(psql -X -At -d postgres -c 'SHOW data_directory')/postmaster.pid" 2>/dev/null) || postmaster=""
	[ -r "/proc/${postmaster:-none}/stat" ] || postmaster=""

	# Set-up ----------------------------------------------------------------
	# The model's own labels (great, other); the stub always answers great.
	# The inputs: the 4,000 labeled reviews, cycled, numbered to differ.
	wb_log "importing the model and the reviews"
	wb_psql <<-SQL
		CREATE EXTENSION pg_triage;
		SELECT triage.import_fasttext('sentiment',
			pg_read_binary_file('$root/models/fine_foods_sentiment.ftz')) \\g /dev/null
		SELECT triage.create_policy('bench', model => 'sentiment', max_attempts => 3) \\g /dev/null
		CREATE TABLE reviews (n integer GENERATED ALWAYS AS IDENTITY, product text, review text, score text);
		\\copy reviews (product, review, score) FROM '$root/test/data/fine_foods_train.csv' WITH (FORMAT csv, HEADER)
	SQL
	local request_bytes
	request_bytes=$(wb_psql -At -c "SELECT round(avg(length(triage_internal.build_request(p, r.review)::text)))
		FROM triage.policies p, reviews r WHERE p.name = 'bench'")

	"$root/test/stub/stub_llm.py" --instant --label great --port 0 --max-seconds 3600 \
		>"$work/stub.out" 2>"$work/stub.err" &
	stub_pid=$!
	local port="" i
	for i in $(seq 100); do
		port=$(sed -n 's/^listening on \([0-9]*\)$/\1/p' "$work/stub.out")
		[ -n "$port" ] && break
		sleep 0.05
	done
	[ -n "$port" ] || { wb_log "the stub did not start: $(cat "$work/stub.err")"; return 1; }
	local url="http://127.0.0.1:$port/v1"
	stub_requests() { curl -s "http://127.0.0.1:$port/stats" | sed 's/.*"requests": \([0-9]*\).*/\1/'; }

	# A fresh queue of n jobs, vacuumed, as a queue that autovacuum keeps
	fill_queue() {
		wb_psql <<-SQL
			TRUNCATE triage.examples, triage.escalations, triage.workers;
			SELECT count(triage.enqueue('bench', i || ': ' || r.review))
			  FROM generate_series(1, $1) AS i JOIN reviews r ON r.n = (i - 1) % 4000 + 1 \\g /dev/null
			VACUUM ANALYZE triage.escalations;
		SQL
	}

	# The stub alone ----------------------------------------------------------
	# curl --parallel posting one real request jobs times, 32 connections
	wb_log "the stub alone: curl --parallel, $jobs requests"
	wb_psql -At -c "SELECT jsonb_set(triage_internal.build_request(p, r.review), '{model}', '\"bench\"')
		FROM triage.policies p, reviews r WHERE p.name = 'bench' AND r.n = 2" >"$work/body.json"
	for i in $(seq "$jobs"); do printf 'url = "%s/chat/completions"\noutput = "/dev/null"\n' "$url"; done >"$work/urls.cfg"
	local before t0 t1 stub_alone
	before=$(stub_requests)
	t0=$(wb_now)
	curl -s --no-progress-meter --parallel --parallel-max 32 -H 'Content-Type: application/json' \
		-H 'Expect:' --data-binary @"$work/body.json" -K "$work/urls.cfg" 2>"$work/curl.err"
	t1=$(wb_now)
	[ "$(($(stub_requests) - before))" = "$jobs" ] || { wb_log "curl: not every request reached the stub"; return 1; }
	stub_alone=$(awk -v a="$t0" -v b="$t1" -v n="$jobs" 'BEGIN { printf "%.0f", n / (b - a) }')

	# The database alone -------------------------------------------------------
	# What the worker asks of the database per job, from psql over the same
	# socket: claim 32 at a time (ids in queue order), complete each with the
	# stub's reply, one statement per round trip.
	wb_log "the database alone: claim and complete from psql, $jobs jobs"
	fill_queue "$jobs"
	curl -s -H 'Content-Type: application/json' --data-binary @"$work/body.json" \
		"$url/chat/completions" >"$work/reply.json"
	wb_psql -At -v reply="$(cat "$work/reply.json")" >"$work/db_alone.sql" <<-'SQL'
		SELECT CASE WHEN (id - lo) % 32 = 0
					THEN 'SELECT count(*) FROM triage.claim(''psql'', 32, ''5 minutes'') \g /dev/null' || E'\n' ELSE '' END
			   || format('SELECT triage.complete(%s, %L) \g /dev/null', id, :'reply')
		  FROM triage.escalations, LATERAL (SELECT min(id) AS lo FROM triage.escalations) m
		 ORDER BY id;
	SQL
	t0=$(wb_now)
	wb_psql -f "$work/db_alone.sql"
	t1=$(wb_now)
	local db_done db_alone
	db_done=$(wb_psql -At -c "SELECT count(*) FROM triage.escalations WHERE status = 'done'")
	[ "$db_done" = "$jobs" ] || { wb_log "database alone: $db_done of $jobs done"; return 1; }
	db_alone=$(awk -v a="$t0" -v b="$t1" -v n="$jobs" 'BEGIN { printf "%.0f", n / (b - a) }')

	# The worker ----------------------------------------------------------------
	local c results="" calls=""
	for c in $concurrencies; do
		wb_log "triage-worker --once --concurrency $c: $jobs jobs"
		fill_queue "$jobs"
		local stub_cpu0 stub_cpu1 pg_cpu0 pg_cpu1 m0 m1 wpid rss_poll=0 status=0
		wb_psql -c "SELECT pg_stat_reset()" >/dev/null
		before=$(stub_requests)
		stub_cpu0=$(wb_cpu "$stub_pid")
		pg_cpu0=$(wb_pg_cpu)
		m0=$(wb_machine)
		t0=$(wb_now)
		if [ -x /usr/bin/time ]; then
			/usr/bin/time -f '%M %U %S' -o "$work/time_$c" \
				"$worker" --dsn "dbname=$db" --base-url "$url" --model bench --once \
				--concurrency "$c" --name "bench$c" --log-file "$work/worker_$c.log" || status=$?
		else
			# no GNU time: sample VmHWM while it runs, CPU from /proc at the end
			"$worker" --dsn "dbname=$db" --base-url "$url" --model bench --once \
				--concurrency "$c" --name "bench$c" --log-file "$work/worker_$c.log" &
			wpid=$!
			while kill -0 "$wpid" 2>/dev/null; do
				rss_poll=$(awk -v r="$rss_poll" '/^VmHWM:/ && $2 > r { r = $2 } END { print r }' \
					"/proc/$wpid/status" 2>/dev/null || echo "$rss_poll")
				sleep 0.02
			done
			wait "$wpid" || status=$?
			echo "$rss_poll ? ?" >"$work/time_$c"
		fi
		t1=$(wb_now)
		sleep 0.1	# the postmaster reaps the worker's backend
		m1=$(wb_machine)
		stub_cpu1=$(wb_cpu "$stub_pid")
		pg_cpu1=$(wb_pg_cpu)
		[ "$status" = 0 ] || { wb_log "triage-worker exited $status"; tail -5 "$work/worker_$c.log" >&2; return 1; }

		local done_rows logged requests
		done_rows=$(wb_psql -At -c "SELECT count(*) FILTER (WHERE status = 'done') || ' ' || count(*) FROM triage.escalations")
		logged=$(grep -c ' outcome=done ' "$work/worker_$c.log" || true)
		requests=$(($(stub_requests) - before))
		if [ "$done_rows" != "$jobs $jobs" ] || [ "$logged" != "$jobs" ] || [ "$requests" != "$jobs" ]; then
			wb_log "concurrency $c: done/all $done_rows, $logged done in the log, $requests requests (want $jobs each)"
			grep -v ' outcome=done ' "$work/worker_$c.log" | tail -5 >&2
			return 1
		fi
		cp "$work/worker_$c.log" "$work/last_worker.log"
		# the server side of the run: calls and mean time of claim and complete
		sleep 0.5	# the backend's statistics reach shared memory at its exit
		calls+="$c $(wb_psql -At -F ' ' -c "SELECT
			sum(calls) FILTER (WHERE funcname = 'claim'),
			round((sum(total_time) FILTER (WHERE funcname = 'claim') / sum(calls) FILTER (WHERE funcname = 'claim'))::numeric, 3),
			round((sum(total_time) FILTER (WHERE funcname = 'complete') / $jobs)::numeric, 3)
			FROM pg_stat_user_functions WHERE schemaname = 'triage'")"$'\n'
		results+="$c $t0 $t1 $(cat "$work/time_$c") $stub_cpu0 $stub_cpu1 $pg_cpu0 $pg_cpu1 $m0 $m1"$'\n'
	done

	# Results -----------------------------------------------------------------
	local example version
	example=$(grep -m 1 ' outcome=done ' "$work/last_worker.log")
	version=$("$worker" --version | sed 's/ (\(libcurl\/[^ ]*\).*/, \1/')
	echo "triage-worker throughput: $jobs escalations per run, drained by one worker with --once,"
	echo "against test/stub/stub_llm.py --instant on 127.0.0.1 (a request of $request_bytes bytes, a reply of $(wc -c <"$work/reply.json"));"
	echo "$(nproc) cores, load average $(cut -d ' ' -f 1-3 /proc/loadavg) at the end; $version"
	echo
	printf '  %-24s %7s %7s %9s %18s %7s %7s %7s\n' "what" "seconds" "jobs/s" "peak RSS" "CPU us/job: worker" "PG" "stub" "other"
	printf '%s' "$results" | awk -v n="$jobs" '{
		secs = $3 - $2; rss = $4; wcpu = $5 + $6
		stub = $8 - $7; pg = $10 - $9; busy = $13 - $11
		other = busy - wcpu - stub - pg; if (other < 0) other = 0
		printf "  %-24s %7.2f %7.0f %6.1f MB %18.0f %7.0f %7.0f %6.0f%%\n",
			"worker, concurrency " $1, secs, n / secs, rss / 1024,
			1e6 * wcpu / n, 1e6 * pg / n, 1e6 * stub / n, 100 * other / secs }'
	printf '  %-24s %7s %7s\n' "stub alone (curl, 32)" "" "$stub_alone"
	printf '  %-24s %7s %7s\n' "database alone (psql)" "" "$db_alone"
	echo
	echo "CPU us/job: CPU time of the worker, of the cluster's processes (PG) and of the stub, in microseconds per job;"
	echo "other: the rest of the machine's CPU during the drain (neighbours), 100% = one core."
	echo "server side (pg_stat_user_functions), per run:"
	printf '%s' "$calls" | awk -v n="$jobs" '{
		printf "  concurrency %-3s %6d claim() calls (%.1f jobs each, %.3f ms), complete() %.3f ms per job\n",
			$1, $2, n / $2, $3, $4 }'
	echo "stub alone: curl --parallel --parallel-max 32 posting the same request; database alone: psql"
	echo "running triage.claim(32) and triage.complete() per job, one statement at a time."
	echo "a worker log line: $example"
}

worker_bench() {
	(_worker_bench_main "$@")
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	# As root, run as postgres from a copy of the tree (PostgreSQL refuses root)
	if [ "$(id -u)" = 0 ]; then
		ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
		. "$ROOT/test/cluster.sh"
		drop_root test/bench/worker.sh "$@"
	fi
	# a plain call: set -e does not act inside a function called from || or if
	worker_bench "$@"
	status=$?
	# drop_root's copy of the tree is ours to remove
	here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	case "$here" in
		/tmp/pg_triage.*) [ -n "${TRIAGE_SOURCE:-}" ] && rm -rf "$here" ;;
	esac
	exit $status
fi
