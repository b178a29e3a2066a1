# triage.process_table over 1,000,000 rows: the backend's memory stays
# bounded, and a run interrupted twice (pg_cancel_backend, then a
# statement_timeout) and resumed ends in the same state as an uninterrupted
# run: the same labels and provenance, the same escalations, each once.
#
# Two identical tables, a and b, cycle the 4,000 shared reviews with the row
# number appended (so that no two inputs are equal); each has its own policy
# (pa, pb: the same threshold) so that their counters can be told apart.
# Run A (uninterrupted) and run B (interrupted, resumed) go at the same time,
# one per core.  TRIAGE_PROCESS_ROWS sets fewer rows while developing.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run;
use Time::HiRes qw(sleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $started = time;
my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $n = $ENV{TRIAGE_PROCESS_ROWS} || 1_000_000;
my $batch = 10_000;
my $threshold = 0.7;
# the bound on the growth of a backend's private memory: keeping even 50
# bytes per row of 1,000,000 would exceed it
my $memory_bound_mb = 64;

die "TRIAGE_PROCESS_ROWS must be at least 10 batches ($batch rows each)" if $n < 10 * $batch;
plan skip_all => 'the memory of a backend is read from /proc (Linux)' unless -r "/proc/$$/status";

my $node = PostgreSQL::Test::Cluster->new('process_table');
$node->init;
$node->append_conf('postgresql.conf', qq{
max_wal_size = 8GB
checkpoint_timeout = 30min
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# 1. The tables: one million reviews each, a and b the same rows.  Each
# body is the first 100 characters of a review (about a ticket subject's
# length): what is tested, memory and cancel/resume, does not depend on the
# length, and the model's cost grows with it.
my $t0 = time;
sql(qq{
	BEGIN;
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('food', pg_read_binary_file('$root/models/fine_foods_sentiment.ftz'));
	SELECT triage.create_policy('pa', 'food', threshold => $threshold);
	SELECT triage.create_policy('pb', 'food', threshold => $threshold);
	CREATE TEMP TABLE food (product text, review text, score text);
	COPY food FROM '$root/test/data/fine_foods_train.csv' WITH (FORMAT csv, HEADER);
	CREATE TABLE reviews AS SELECT row_number() OVER () - 1 AS r, review FROM food;
	CREATE TABLE a (id integer PRIMARY KEY, body text NOT NULL, label text, label_by jsonb);
	INSERT INTO a (id, body)
	SELECT g, left(v.review, 100) || ' (#' || g || ')' FROM generate_series(1, $n) g JOIN reviews v ON v.r = g % 4000;
	CREATE TABLE b (LIKE a INCLUDING ALL);
	INSERT INTO b SELECT * FROM a ORDER BY id;
	-- attached once the rows are in: they wait for process_table
	SELECT triage.attach('a', 'body', 'label', 'pa', 'label_by');
	SELECT triage.attach('b', 'body', 'label', 'pb', 'label_by');
	COMMIT;
	ANALYZE a, b;
});
is(sql(q{
	SELECT count(*) || ' ' || (SELECT count(*) FROM b) || ' ' || count(*) FILTER (WHERE b.body IS DISTINCT FROM a.body)
	  FROM a LEFT JOIN b USING (id)}), "$n $n 0", "two identical tables of $n reviews");
note(sprintf('%d rows written twice in %.1f s (%s each)', $n, time - $t0,
	sql("SELECT pg_size_pretty(pg_table_size('a'))")));

# 2. Runs: a psql session in the background running one CALL, named by its
# application_name so that its backend can be found
my %runs;

sub start_run
{
	my ($name, $sql) = @_;
	my $file = "$tmp/$name.sql";
	open(my $fh, '>', $file) or die "$file: $!";
	print $fh "SET client_min_messages = warning;\n$sql\n";
	close $fh;
	my $run = { name => $name, out => '', err => '', started => time };
	$run->{h} = IPC::Run::start(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d',
		  $node->connstr('postgres') . " application_name=$name", '-f', $file ],
		'>', \$run->{out}, '2>', \$run->{err});
	$runs{$name} = $run;
	return $run;
}

sub process_call
{
	my ($tbl, $policy) = @_;
	return "CALL triage.process_table('$tbl', 'body', 'label', '$policy', $batch, 'label_by');";
}

sub kb_of
{
	my ($pid, $field) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>)
	{
		return $1 if /^$field:\s+(\d+) kB/;
	}
	return undef;
}

# One round of sampling: the backend of each running run (found once), its
# private memory (RssAnon) and its resident size, at the first sample and
# at their peak
sub sample
{
	for my $run (grep { !$_->{done} } values %runs)
	{
		$run->{pid} //= sql("SELECT pid FROM pg_stat_activity WHERE application_name = '$run->{name}'"
			. " AND backend_type = 'client backend'")
		  || undef;
		next unless $run->{pid};
		my ($anon, $rss) = (kb_of($run->{pid}, 'RssAnon'), kb_of($run->{pid}, 'VmRSS'));
		next unless defined $anon;
		$run->{first_anon} //= $anon;
		$run->{first_rss} //= $rss;
		$run->{peak_anon} = $anon if $anon > ($run->{peak_anon} // 0);
		$run->{peak_rss} = $rss if $rss > ($run->{peak_rss} // 0);
		$run->{samples}++;
	}
}

sub finished
{
	my ($run) = @_;
	return 1 if $run->{done};
	$run->{h}->pump_nb if $run->{h}->pumpable;
	return 0 if $run->{h}->pumpable;
	$run->{h}->finish;
	$run->{status} = $? >> 8;
	$run->{seconds} = time - $run->{started};
	$run->{done} = 1;
	return 1;
}

# Sample every half second until cond() holds (or 20 minutes pass)
sub wait_sampling
{
	my ($what, $cond) = @_;
	my $deadline = time + 1200;
	while (1)
	{
		sample();
		finished($_) for values %runs;
		return 1 if $cond->();
		die "timed out waiting until $what" if time > $deadline;
		sleep 0.5;
	}
}

# The state of b between runs: committed batches only, a prefix of the keys
sub b_state
{
	my %s;
	@s{qw(labelled max_labelled min_unlabelled with_provenance escalations distinct_esc esc_unlabelled
		  rows_done rows_total esc_progress finished)} = split /\|/, sql(q{
		SELECT count(label), max(id) FILTER (WHERE label IS NOT NULL), min(id) FILTER (WHERE label IS NULL),
			   count(label_by),
			   (SELECT count(*) FROM triage.escalations WHERE policy = 'pb'),
			   (SELECT count(DISTINCT source_key) FROM triage.escalations WHERE policy = 'pb'),
			   (SELECT count(*) FROM triage.escalations e LEFT JOIN b x ON x.id = (e.source_key->>'id')::integer
				 WHERE e.policy = 'pb' AND (x.label IS NULL OR e.source <> 'b'::regclass)),
			   p.rows_done, p.rows_total, p.escalated, p.finished
		  FROM b, triage.process_progress p WHERE p.source = 'b'::regclass
		 GROUP BY p.rows_done, p.rows_total, p.escalated, p.finished});
	return \%s;
}

sub check_interrupted
{
	my ($how, $s, $before) = @_;
	cmp_ok($s->{labelled}, '>', $before->{labelled}, "$how: the committed batches stayed");
	cmp_ok($s->{labelled}, '<', $n, "$how: the run was stopped before the end");
	is($s->{labelled} % $batch, 0, "$how: whole batches only ($s->{labelled} rows labelled)");
	is($s->{max_labelled}, $s->{labelled}, "$how: the labelled rows are a prefix of the keys");
	is($s->{min_unlabelled}, $s->{labelled} + 1, "$how: and every row after it is unlabelled");
	is($s->{with_provenance}, $s->{labelled}, "$how: provenance written with each label, none without");
	is("$s->{rows_done} $s->{finished}", ($s->{labelled} - $before->{labelled}) . ' f',
		"$how: process_progress counts the committed rows of this run, not finished");
	is($s->{escalations} - $before->{escalations}, $s->{esc_progress},
		"$how: the escalations queued are those of the committed batches");
	is($s->{distinct_esc}, $s->{escalations}, "$how: each row queued once");
	is($s->{esc_unlabelled}, 0, "$how: no escalation from the rolled-back batch");
}

# 3. Run A, uninterrupted, and the first part of run B, at once
my $run_a = start_run('run_a', process_call('a', 'pa'));
my $run_b1 = start_run('run_b1', process_call('b', 'pb'));

# cancel b in the middle of its third batch or later
wait_sampling('run B has committed two batches', sub {
	sql("SELECT coalesce(max(rows_done), 0) >= 2 * $batch FROM triage.process_progress
		  WHERE source = 'b'::regclass") eq 't' || $run_b1->{done};
});
ok(!$run_b1->{done}, 'run B is still running after two batches');
sleep 0.5;
is(sql("SELECT pg_cancel_backend($run_b1->{pid})"), 't', 'run B cancelled');
wait_sampling('the cancelled run B has ended', sub { $run_b1->{done} });
like($run_b1->{err}, qr/canceling statement due to user request/, 'the CALL was cancelled')
  or diag($run_b1->{err});
my $rate = sql("SELECT rows_per_second FROM triage.process_progress WHERE source = 'b'::regclass");
my $cut1 = b_state();
check_interrupted('cancelled', $cut1, { labelled => 0, escalations => 0 });

# 4. Resumed, then stopped again by statement_timeout after about three batches
my $timeout_ms = int(1000 * 3.5 * $batch / ($rate || 1000));
$timeout_ms = 2000 if $timeout_ms < 2000;
$timeout_ms = 30000 if $timeout_ms > 30000;
my $run_b2 = start_run('run_b2', "SET statement_timeout = $timeout_ms;\n" . process_call('b', 'pb'));
wait_sampling('run B (statement_timeout) has ended', sub { $run_b2->{done} });
like($run_b2->{err}, qr/canceling statement due to statement timeout/,
	"the resumed CALL was stopped by statement_timeout ($timeout_ms ms)")
  or diag($run_b2->{err});
my $cut2 = b_state();
check_interrupted('timed out', $cut2, $cut1);

# 5. Resumed to the end; half way, each remaining backend logs its memory contexts
my $run_b3 = start_run('run_b3', process_call('b', 'pb'));
my $logged = 0;
wait_sampling('runs A and B have ended', sub {
	if (!$logged && !$run_a->{done} && $run_a->{pid}
		&& sql("SELECT rows_done * 2 >= rows_total FROM triage.process_progress WHERE source = 'a'::regclass") eq 't')
	{
		sql("SELECT pg_log_backend_memory_contexts($run_a->{pid})");
		$logged = 1;
	}
	$run_a->{done} && $run_b3->{done};
});
is("$run_a->{status} $run_a->{err}", '0 ', 'run A ended without errors');
is("$run_b3->{status} $run_b3->{err}", '0 ', 'run B ended without errors');

# 6. The same final state
my ($a_progress, $b_progress) = map {
	sql("SELECT rows_done || ' ' || rows_total || ' ' || escalated || ' ' || finished
		   FROM triage.process_progress WHERE source = '$_'::regclass")
} qw(a b);
my ($esc_a, $esc_b) = map {
	sql("SELECT count(*) FROM triage.escalations WHERE policy = '$_'")
} qw(pa pb);
is($a_progress, "$n $n $esc_a true", 'process_progress: run A finished, every row done');
my $resumed = $n - $cut2->{labelled};
is($b_progress, "$resumed $resumed " . ($esc_b - $cut2->{escalations}) . ' true',
	"process_progress: run B finished, counting the $resumed rows of the resumed run");
is(sql(q{
	SELECT (SELECT count(*) FROM a WHERE label IS NULL OR label_by IS NULL) + (SELECT count(*) FROM b WHERE label IS NULL OR label_by IS NULL)}),
	'0', 'every row of a and of b has a label and its provenance');
is(sql(q{
	SELECT count(*) FROM a JOIN b USING (id)
	 WHERE a.label IS DISTINCT FROM b.label OR (a.label_by - 'at') IS DISTINCT FROM (b.label_by - 'at')}),
	'0', 'each row has the same label and provenance in a and b');
is(sql(q{
	SELECT count(*) FROM b JOIN a USING (id)
	 WHERE b.label NOT IN ('great', 'other') OR b.label_by->>'by' <> 'model'
		OR b.label_by->>'model' <> 'food' OR b.label_by->>'version' <> '1'}),
	'0', 'labels of the model, with its name and version as provenance');
is($esc_b, $esc_a, "as many escalations for b as for a ($esc_a)");
cmp_ok($esc_a / $n, '>', 0.05, sprintf('some rows escalate (%.1f%%)', 100 * $esc_a / $n));
is(sql(q{
	SELECT count(*) - count(DISTINCT (policy, source_key)) FROM triage.escalations}),
	'0', 'no row queued twice');
is(sql(q{
	WITH ea AS (SELECT source_key, input, reason, small_answer, status FROM triage.escalations
				 WHERE policy = 'pa' AND source = 'a'::regclass),
		 eb AS (SELECT source_key, input, reason, small_answer, status FROM triage.escalations
				 WHERE policy = 'pb' AND source = 'b'::regclass)
	SELECT (SELECT count(*) FROM (TABLE ea EXCEPT ALL TABLE eb) x)
		 + (SELECT count(*) FROM (TABLE eb EXCEPT ALL TABLE ea) y)}),
	'0', 'the same rows escalated from a and from b, with the same reasons and small answers');
# against route() itself: the first cycle of reviews, and the batches that
# were rolled back (with 100 rows either side)
my $ids = "id <= 4000 OR id BETWEEN $cut1->{labelled} - 99 AND $cut1->{labelled} + $batch + 100"
  . " OR id BETWEEN $cut2->{labelled} - 99 AND $cut2->{labelled} + $batch + 100";
for my $t (qw(a b))
{
	is(sql(qq{
		SELECT count(*) FROM (SELECT id, label, triage.route('p$t', body) d FROM $t WHERE $ids) x
		  LEFT JOIN triage.escalations e ON e.policy = 'p$t' AND e.source_key = jsonb_build_object('id', x.id::text)
		 WHERE x.label IS DISTINCT FROM (x.d).label OR (x.d).escalate <> (e.id IS NOT NULL)
			OR e.reason IS DISTINCT FROM CASE WHEN (x.d).escalate THEN (x.d).reason END}),
		'0', "rows of $t hold route()'s label and are queued exactly when route() escalates them");
}
is(sql(q{
	SELECT string_agg(policy || ' ' || rows_seen || ' ' || escalated, ', ' ORDER BY policy)
	  FROM triage.escalation_stats WHERE policy IN ('pa', 'pb')}),
	"pa $n $esc_a, pb $n $esc_b", 'escalation_stats: each row seen once, the rolled-back batches not counted');

# 7. Memory
my $a_rate = sql("SELECT rows_per_second FROM triage.process_progress WHERE source = 'a'::regclass");
for my $run ($run_a, $run_b3)
{
	my $growth = ($run->{peak_anon} - $run->{first_anon}) / 1024;
	note(sprintf('%s: %d samples, private memory (RssAnon) %.1f MB at start, peak %.1f MB (+%.1f MB); '
		  . 'resident (VmRSS, with shared buffers) %.1f MB at start, peak %.1f MB; %.1f s',
		  $run->{name}, $run->{samples}, $run->{first_anon} / 1024, $run->{peak_anon} / 1024, $growth,
		  $run->{first_rss} / 1024, $run->{peak_rss} / 1024, $run->{seconds}));
	cmp_ok($run->{samples}, '>=', 10, "$run->{name}: its backend's memory was sampled while it ran");
	cmp_ok($growth, '<', $memory_bound_mb, sprintf("$run->{name}: private memory grew by %.1f MB, under %d MB",
		$growth, $memory_bound_mb));
}
my ($total) = slurp_file($node->logfile) =~ /\[$run_a->{pid}\].*Grand total: (\d+) bytes/;
note(sprintf('memory contexts of run A half way: %.1f MB in all', $total / 1048576)) if defined $total;
note(sprintf('run A: %d rows in %.1f s, %s rows/s (%.1f%% escalated); run B: cancelled at %d rows, '
	  . 'timed out at %d, resumed for %d rows at %s rows/s; runs A and B at the same time on %s',
	  $n, $run_a->{seconds}, $a_rate, 100 * $esc_a / $n, $cut1->{labelled}, $cut2->{labelled}, $resumed,
	  sql("SELECT rows_per_second FROM triage.process_progress WHERE source = 'b'::regclass"),
	  `nproc 2>/dev/null` =~ s/\s+$//r . ' cores'));

$node->stop;
note(sprintf('%.0f s in all', time - $started));
done_testing();
