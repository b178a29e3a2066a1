# triage.purge() at scale while triage-worker drains new escalations (#18):
# 1,000,000 answered escalations (PURGE_ROWS; the whole test took 72 s on
# the 2-core development machine with a benchmark running beside it, the
# purge 31.5 s of it; make bench times the purge alone, test/bench/report.sh),
# old pending, leased and dead rows beside them, and examples that name
# answered rows.  While purge runs in one session, new escalations of
# another policy are queued and the worker (against the stub LLM) answers
# them.  Checks: every answered row purged and no pending or leased row
# touched (not even rewritten: same xmin and ctid), dead letters kept,
# examples kept with escalation NULL, the worker answering during the purge
# and every row it was given answered once, the purging backend's anonymous
# memory bounded (/proc/PID/smaps_rollup, sampled during the call), and the
# table's space: after purge and VACUUM pgstattuple finds the purged rows'
# space free, and N new rows fit in it without growing the table.
#
# Each assertion was checked to fail on a feature broken on purpose: see
# the commit message.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run qw(start pump finish timeout);
use JSON::PP qw(decode_json);
use Time::HiRes qw(sleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TriageTest qw(start_stub worker_and_stub);

my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $rows = $ENV{PURGE_ROWS} || 1_000_000;
my ($n_pending, $n_leased, $n_dead, $n_examples) = (500, 300, 200, 1000);
my $memory_bound_mb = 16;	# 3.8 MB for 1,000,000 rows (4.9 MB for 200,000); 58 MB in one batch

my $worker = worker_and_stub($root);

my $node = PostgreSQL::Test::Cluster->new('purge');
$node->init;
$node->start;
$node->safe_psql('postgres', qq{
	CREATE EXTENSION pg_triage;
	CREATE EXTENSION pgstattuple;
	SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$root/test/data/sentiment_v1.ftz'));
	SELECT triage.create_policy('old', 'sentiment');
	SELECT triage.create_policy('live', 'sentiment', labels => ARRAY['great', 'other']);
	CREATE ROLE llm_worker LOGIN IN ROLE triage_worker;
	SELECT triage.allow_worker('llm_worker');
});

# answered escalations i = from..to of policy old, finished 40 days ago and more
sub fill_done
{
	my ($from, $to) = @_;
	$node->safe_psql('postgres', qq{
		INSERT INTO triage.escalations (policy, input, small_answer, reason, status, answer, usage, outcome,
										created_at, done_at, visible_at)
		SELECT 'old', 'old review ' || i, '{"label": "great", "confidence": 0.6}', 'confidence 0.6 < threshold 0.9',
			   'done', jsonb_build_object('label', CASE WHEN i % 3 = 0 THEN 'other' ELSE 'great' END),
			   '{"prompt_tokens": 180, "completion_tokens": 3, "total_tokens": 183}', 'written',
			   now() - interval '41 days' - i * interval '1 second', now() - interval '40 days' - i * interval '1 second',
			   now() - interval '41 days'
		  FROM generate_series($from, $to) AS i});
}

my $t0 = time;
fill_done(1, $rows);
$node->safe_psql('postgres', qq{
	-- old rows that are not answered: pending, leased to a worker that is not ours, dead
	INSERT INTO triage.escalations (policy, input, status, visible_at, claimed_by, claimed_role, attempts, error,
									created_at, done_at)
	SELECT 'old', 'old open ' || i, s, CASE WHEN s = 'claimed' THEN now() + interval '1 hour' ELSE now() - interval '60 days' END,
		   CASE WHEN s = 'claimed' THEN 'other-worker' END, CASE WHEN s = 'claimed' THEN 'postgres'::regrole END,
		   CASE WHEN s = 'dead' THEN 5 ELSE 0 END, CASE WHEN s = 'dead' THEN 'HTTP 500' END,
		   now() - interval '60 days', CASE WHEN s = 'dead' THEN now() - interval '59 days' END
	  FROM generate_series(1, $n_pending + $n_leased + $n_dead) AS i,
		   LATERAL (SELECT CASE WHEN i <= $n_pending THEN 'pending' WHEN i <= $n_pending + $n_leased THEN 'claimed'
								ELSE 'dead' END AS s) x;
	-- the large model's answers kept as training examples of answered rows
	INSERT INTO triage.examples (model, input, label, source, escalation)
	SELECT 'sentiment', input, answer->>'label', 'llm', id FROM triage.escalations
	 WHERE policy = 'old' AND status = 'done' ORDER BY id LIMIT $n_examples;
	VACUUM ANALYZE triage.escalations;
});
note(sprintf('%d answered escalations and %d others inserted in %.1f s', $rows, $n_pending + $n_leased + $n_dead, time - $t0));

# the open rows, with what would change if anything wrote them
my $open_sql = q{
	SELECT count(*) || ' ' || md5(string_agg(e.xmin::text || e.ctid::text || row_to_json(e)::text, ',' ORDER BY e.id))
	  FROM triage.escalations e WHERE e.policy = 'old' AND e.status IN ('pending', 'claimed')};
my $open_before = $node->safe_psql('postgres', $open_sql);
my ($size_before, $tuples_before) = split /\|/,
  $node->safe_psql('postgres', "SELECT table_len, tuple_count FROM pgstattuple('triage.escalations')");

# --- the worker drains policy live -------------------------------------------------

# the stub answers every live input from its gold file
my $gold = "$tmp/gold.csv";
my $n_live = 400;
open(my $g, '>', $gold) or die;
print $g "input,label\n";
print $g "live review $_ of the coffee,", ($_ % 2 ? 'great' : 'other'), "\n" for 1 .. $n_live;
close $g;
my $stub_run = start_stub("$root/test/stub/stub_llm.py", $tmp, 'drain', $gold);
my ($stub, $port) = ($stub_run->{h}, $stub_run->{port});
ok($port, 'the stub LLM listens');

my $enqueued = 0;
sub enqueue_live
{
	my ($n) = @_;
	my $to = $enqueued + $n;
	$node->safe_psql('postgres',
		"SELECT triage.enqueue('live', 'live review ' || i || ' of the coffee') FROM generate_series($enqueued + 1, $to) AS i");
	$enqueued = $to;
}
sub live_done
{
	return $node->safe_psql('postgres', "SELECT count(*) FROM triage.escalations WHERE policy = 'live' AND status = 'done'");
}

enqueue_live(100);
my $wlog = "$tmp/worker.log";
my $wh = start([ $worker, '--dsn', $node->connstr('postgres') . ' user=llm_worker',
		'--base-url', "http://127.0.0.1:$port/v1", '--model', 'stub-model', '--name', 'drainer',
		'--policy', 'live', '--concurrency', '2', '--log-file', $wlog ],
	'>', "$tmp/worker.out", '2>', "$tmp/worker.err");
ok($node->poll_query_until('postgres', "SELECT count(*) > 0 FROM triage.escalations WHERE policy = 'live' AND status = 'done'"),
	'the worker answers live escalations');

# --- purge in its own session, its memory sampled ------------------------------------

my ($in, $out, $err) = ('', '', '');
my $psql = start([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err, timeout(600));
$in .= "SELECT pg_backend_pid();\n";
pump $psql until $out =~ /^(\d+)\n/ || $err ne '';
my $pid = $1 or die "psql: $err";

sub memory_kb
{
	my $text = eval { slurp_file("/proc/$pid/smaps_rollup") } // '';
	my ($anon) = $text =~ /^Anonymous:\s+(\d+) kB/m;
	my ($rss) = $text =~ /^Rss:\s+(\d+) kB/m;
	return ($anon // 0, $rss // 0);
}

# the session's memory once warm: a purge of nothing first
$in .= "SELECT triage.purge('1000 days', forget_workers => NULL);\n";
pump $psql until $out =~ /"done": 0/ || $err ne '';
my ($anon_before, $rss_before) = memory_kb();
ok($anon_before > 0, "the backend's anonymous memory is readable ($anon_before kB)");

$out = '';
my $done_at_start = live_done();
$t0 = time;
$in .= "SELECT triage.purge('30 days', forget_workers => NULL);\n";
my ($anon_peak, $rss_peak, $samples) = (0, 0, 0);
my $last_enqueue = 0;
my $done_during = $done_at_start;
while (1)
{
	$psql->pump_nb;
	last if $out =~ /\}\n/ || $err ne '';
	# sampled only while purge runs; nothing here waits for a lock purge
	# might hold: the count is a plain SELECT, the enqueue gives up after 0.2 s
	my ($a, $r) = memory_kb();
	$anon_peak = $a if $a > $anon_peak;
	$rss_peak = $r if $r > $rss_peak;
	$samples++;
	$done_during = live_done();
	# new escalations keep coming while purge runs
	if (time - $last_enqueue > 0.5 && $enqueued < $n_live)
	{
		my $to = $enqueued + 20;
		my ($ret) = $node->psql('postgres', "SET lock_timeout = '200ms';
			SELECT triage.enqueue('live', 'live review ' || i || ' of the coffee') FROM generate_series($enqueued + 1, $to) AS i");
		$enqueued = $to if $ret == 0;
		$last_enqueue = time;
	}
	sleep 0.05;
}
my $purge_s = time - $t0;
my ($anon_after, $rss_after) = memory_kb();
is($err, '', 'purge ran without an error');
my ($result) = $out =~ /^(\{.*\})$/m;
my $purged = eval { decode_json($result) } || {};
note(sprintf('purge of %d rows: %.1f s; anonymous memory %d kB before, %d kB peak (%d samples), %d kB after; RSS %d, %d, %d kB',
		$rows, $purge_s, $anon_before, $anon_peak, $samples, $anon_after, $rss_before, $rss_peak, $rss_after));
is($purged->{done}, $rows, "purge deleted the $rows answered escalations");
is($purged->{dead}, 0, 'and no dead letter (keep_dead)');
is($purged->{examples_unlinked}, $n_examples, "it unlinked the $n_examples examples");
cmp_ok(($anon_peak - $anon_before) / 1024, '<', $memory_bound_mb,
	"the purging backend's anonymous memory grew by under $memory_bound_mb MB at its peak");
cmp_ok($done_during - $done_at_start, '>', 0,
	'the worker answered escalations while purge ran (' . ($done_during - $done_at_start) . ')');
$in .= "\\q\n";
finish $psql;

is($node->safe_psql('postgres', $open_sql), $open_before,
	"the $n_pending pending and $n_leased leased rows are untouched (same rows, xmin and ctid)");
is($node->safe_psql('postgres', "SELECT count(*) FROM triage.escalations WHERE policy = 'old' AND status = 'dead'"),
	$n_dead, "the $n_dead dead letters are kept");
is($node->safe_psql('postgres', "SELECT count(*) || ' ' || count(escalation) FROM triage.examples WHERE input LIKE 'old review %'"),
	"$n_examples 0", "the $n_examples examples are kept, their escalation set to NULL");

# the worker answers everything it was given, once
enqueue_live($n_live - $enqueued) if $enqueued < $n_live;
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM triage.escalations WHERE policy = 'live' AND status IN ('pending', 'claimed')"),
	'the worker drained policy live');
is($node->safe_psql('postgres', q{
	SELECT count(*) || ' ' || count(DISTINCT input) || ' ' || count(*) FILTER (WHERE status = 'done' AND answer IS NOT NULL)
	  FROM triage.escalations WHERE policy = 'live'}), "$n_live $n_live $n_live",
	"all $n_live live escalations answered, each once");
$wh->signal('TERM');
eval { $wh->finish };
$stub->signal('TERM');
eval { $stub->finish };

# --- the space ------------------------------------------------------------------------

$node->safe_psql('postgres', 'VACUUM triage.escalations');
my ($size_after, $tuples_after, $dead_after, $free_pct) = split /\|/, $node->safe_psql('postgres',
	"SELECT table_len, tuple_count, dead_tuple_count, free_percent FROM pgstattuple('triage.escalations')");
note("table: $size_before bytes, $tuples_before rows before; after purge and VACUUM $size_after bytes, "
	  . "$tuples_after rows, $dead_after dead, $free_pct% free");
is($tuples_before - $tuples_after, $rows - $n_live, 'pgstattuple: the purged rows are gone (less the live ones queued since)');
is($dead_after, 0, 'no dead row left after VACUUM');
cmp_ok($free_pct, '>', 80, "over 80% of the table is free space after purge and VACUUM ($free_pct%)");
fill_done($rows + 1, $rows + $rows / 2);
my $size_refilled = $node->safe_psql('postgres', "SELECT pg_relation_size('triage.escalations')");
cmp_ok($size_refilled, '<=', $size_after,
	'the freed space is reused: ' . $rows / 2 . " new rows do not grow the table ($size_refilled bytes)");

$node->stop;
done_testing();
