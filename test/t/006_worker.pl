# triage-worker against the stub LLM (test/stub/stub_llm.py): the happy
# path, 429 and 500 replies, broken and invalid answers, timeouts, a refused
# API key (circuit breaker), a worker killed mid-batch, and a database
# restart under a running worker.  The API key never shows in the log or in
# ps.
#
# The worker is $TRIAGE_WORKER, else the installed one (pg_config --bindir),
# else the one built in the tree.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use HTTP::Tiny;
use IPC::Run qw(start);
use JSON::PP qw(decode_json);
use Time::HiRes qw(sleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TriageTest qw(worker_and_stub);

my $root = abs_path(dirname(__FILE__) . '/../..');
my $stub_py = "$root/test/stub/stub_llm.py";
my $tmp = PostgreSQL::Test::Utils::tempdir;

my $worker = worker_and_stub($root);
note "worker: $worker";

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_triage');
plan skip_all => 'this pg_triage has no queue yet (triage.claim)'
  if $node->safe_psql('postgres', "SELECT to_regproc('triage.claim') IS NULL") eq 't';
$node->safe_psql('postgres',
	"SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$root/test/data/sentiment_v1.ftz'))"
);
my $dsn = $node->connstr('postgres');

# The key comes from a file, so that it is neither in argv nor in environ
my $api_key = sprintf('sk-test-%08x%08x', int(rand(2**32)), int(rand(2**32)));
my $key_file = "$tmp/api_key";
open(my $kf, '>', $key_file) or die;
print $kf "$api_key\n";
close $kf;
chmod 0600, $key_file;

my @all_logs;

# Gold rows of a case: [input, label, mode]; returns the gold file
sub write_gold
{
	my ($name, @rows) = @_;
	my $file = "$tmp/gold_$name.jsonl";
	open(my $f, '>', $file) or die;
	for my $r (@rows)
	{
		my %row = (input => $r->[0], label => $r->[1]);
		$row{mode} = $r->[2] if $r->[2];
		print $f JSON::PP->new->canonical->encode(\%row), "\n";
	}
	close $f;
	return $file;
}

# n inputs of a case with their gold labels
sub gold_rows
{
	my ($name, $n) = @_;
	return map { [ "case $name review $_: the coffee was " . ($_ % 3 ? 'fine' : 'superb'),
			$_ % 3 ? 'other' : 'great' ] } 1 .. $n;
}

sub create_policy
{
	my ($policy, $max_attempts) = @_;
	$node->safe_psql('postgres',
		"SELECT triage.create_policy('$policy', model => 'sentiment', labels => ARRAY['great','other'], max_attempts => $max_attempts)"
	);
}

sub enqueue
{
	my ($policy, @rows) = @_;
	for my $r (@rows)
	{
		(my $input = $r->[0]) =~ s/'/''/g;
		$node->safe_psql('postgres', "SELECT triage.enqueue('$policy', '$input')");
	}
}

# Starts the stub; returns { h, port }
sub start_stub
{
	my ($name, $gold, @args) = @_;
	my $out = "$tmp/stub_$name.out";
	my $h = start([ 'python3', $stub_py, '--gold', $gold, '--port', '0',
			'--max-seconds', '300', @args ],
		'>', $out, '2>', "$tmp/stub_$name.err");
	my $deadline = time + 30;
	while (time < $deadline)
	{
		my $text = -e $out ? slurp_file($out) : '';
		return { h => $h, port => $1, name => $name } if $text =~ /listening on (\d+)/;
		sleep 0.05;
	}
	die "the stub did not start: " . slurp_file("$tmp/stub_$name.err");
}

sub stub_stats
{
	my ($stub) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$stub->{port}/stats");
	die "GET /stats: $r->{status}" unless $r->{success};
	return decode_json($r->{content});
}

sub stop_stub
{
	my ($stub) = @_;
	$stub->{h}->signal('TERM');
	$stub->{h}->finish;
}

sub worker_args
{
	my ($name, $stub, $policy, @extra) = @_;
	my $log = "$tmp/worker_$name.log";
	push @all_logs, $log;
	return [ $worker, '--dsn', $dsn, '--base-url', "http://127.0.0.1:$stub->{port}/v1",
		'--model', 'stub-model', '--api-key-file', $key_file, '--policy', $policy,
		'--name', "w$name", '--log-file', $log, @extra ];
}

sub start_worker
{
	my ($name, $stub, $policy, @extra) = @_;
	my ($out, $err) = ('', '');
	my $h = start(worker_args($name, $stub, $policy, @extra), '>', \$out, '2>', \$err);
	return $h;
}

# Waits for a worker to exit; its exit status, or 128 + signal
sub wait_worker
{
	my ($h) = @_;
	eval { $h->finish };
	my $st = $h->full_result(0);
	return ($st & 127) ? 128 + ($st & 127) : $st >> 8;
}

sub stop_worker
{
	my ($h) = @_;
	$h->signal('TERM');
	return wait_worker($h);
}

sub worker_pid
{
	my ($h) = @_;
	return $h->{KIDS}[0]{PID};
}

sub settled_query
{
	my ($policy) = @_;
	return "SELECT count(*) = 0 FROM triage.escalations WHERE policy = '$policy' AND status IN ('pending', 'claimed')";
}

sub count_in_log
{
	my ($name, $re) = @_;
	my $log = "$tmp/worker_$name.log";
	return 0 unless -e $log;
	return scalar(grep { /$re/ } split /\n/, slurp_file($log));
}

sub show_log
{
	my ($name) = @_;
	my $log = "$tmp/worker_$name.log";
	diag(-e $log ? slurp_file($log) : "(no log)");
}

# Runs a worker until no job of the policy is pending or claimed, then stops
# it with SIGTERM; returns its exit status
sub run_until_settled
{
	my ($name, $stub, $policy, @extra) = @_;
	my $h = start_worker($name, $stub, $policy, @extra);
	my $ok = $node->poll_query_until('postgres', settled_query($policy));
	ok($ok, "$name: every job settled") or show_log($name);
	return stop_worker($h);
}

# Each done job of policy has the gold label and exactly one example
sub check_gold
{
	my ($name, $policy, @rows) = @_;
	my %gold = map { $_->[0] => $_->[1] } @rows;
	my @got = split /\n/, $node->safe_psql('postgres',
		"SELECT input || '|' || status || '|' || coalesce(answer->>'label', '') FROM triage.escalations WHERE policy = '$policy'"
	);
	my @wrong = grep { my ($i, $s, $l) = split /\|/; $s ne 'done' || $l ne $gold{$i} } @got;
	is(scalar(@got), scalar(@rows), "$name: all " . scalar(@rows) . " jobs are there");
	is(scalar(@wrong), 0, "$name: every job is done with its gold label")
	  or diag(join("\n", @wrong));
	is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM triage.escalations x
		 WHERE x.policy = '$policy'
		   AND (SELECT count(*) FROM triage.examples e WHERE e.escalation = x.id) <> 1}),
		'0', "$name: every job has exactly one training example");
}

# Usage, help, and a database without pg_triage
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ $worker, '--help' ], '>', \$out, '2>', \$err);
	is($? >> 8, 0, '--help exits 0');
	like($out, qr/^NAME\n.*^SYNOPSIS\n.*^DESCRIPTION\n.*^OPTIONS\n.*^ENVIRONMENT\n.*^EXIT STATUS\n.*^EXAMPLES\n/ms,
		'--help is a man page');
	IPC::Run::run([ $worker, '--dsn', $dsn, '--model', 'm' ], '>', \$out, '2>', \$err);
	is($? >> 8, 2, 'a missing --base-url is bad usage (exit 2)');
	IPC::Run::run([ $worker, '--dsn', $dsn, '--base-url', 'http://127.0.0.1:1', '--model', 'm', '--concurrency', 'x' ],
		'>', \$out, '2>', \$err);
	is($? >> 8, 2, 'a bad --concurrency is bad usage (exit 2)');
	$node->safe_psql('postgres', 'CREATE DATABASE plain');
	IPC::Run::run([ $worker, '--dsn', $node->connstr('plain'), '--base-url', 'http://127.0.0.1:1',
			'--model', 'm', '--once' ], '>', \$out, '2>', \$err);
	is($? >> 8, 1, 'a database without pg_triage is a fatal error (exit 1)');
	like($err, qr/no pg_triage queue/, 'and the log says why');
}

# (a) the happy path with --once: 20 jobs, 4 at a time
{
	my @rows = gold_rows('a', 20);
	my $stub = start_stub('a', write_gold('a', @rows), '--api-key', $api_key, '--mode', 'slow:1.0',
		'--slow-seconds', '0.2');
	create_policy('pa', 5);
	enqueue('pa', @rows);
	my ($out, $err) = ('', '');
	my $t0 = time;
	IPC::Run::run(worker_args('a', $stub, 'pa', '--once', '--concurrency', '4'),
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	is($? >> 8, 0, '(a) --once exits 0 when the queue is drained') or show_log('a');
	check_gold('(a)', 'pa', @rows);
	my $stats = stub_stats($stub);
	is($stats->{requests}, 20, '(a) one request per job');
	is($stats->{401}, 0, '(a) the key from the file was accepted');
	is($stats->{models}{'stub-model'}, 20, '(a) every request names the model');
	ok($stats->{max_in_flight} >= 2 && $stats->{max_in_flight} <= 4,
		"(a) requests ran in parallel, 4 at most ($stats->{max_in_flight})");
	is(count_in_log('a', qr/level=info job=\d+ outcome=done http=200 ms=\d+ tokens=\d+/), 20,
		'(a) one log line per job');
	is($node->safe_psql('postgres', "SELECT jobs_done FROM triage.workers WHERE name = 'wa'"),
		'20', '(a) the worker is in triage.workers with its count');
	stop_stub($stub);
}

# (b) a burst of 429 with Retry-After, and 500s: all done, none dead
{
	my @rows = gold_rows('b', 12);
	my $stub = start_stub('b', write_gold('b', @rows), '--mode', '429:6,500:0.2', '--seed', '3');
	create_policy('pb', 10);
	enqueue('pb', @rows);
	is(run_until_settled('b', $stub, 'pb', '--concurrency', '4'), 0, '(b) SIGTERM exits 0');
	check_gold('(b)', 'pb', @rows);
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM triage.escalations WHERE policy = 'pb' AND status = 'dead'"),
		'0', '(b) no job is dead');
	ok($node->safe_psql('postgres',
			"SELECT count(*) FROM triage.escalations WHERE policy = 'pb' AND attempts >= 1") > 0,
		'(b) some jobs needed more than one try');
	my $stats = stub_stats($stub);
	is($stats->{429}, 6, '(b) the stub sent 6 429s');
	is(count_in_log('b', qr/outcome=retry http=429 .*retry_after=1\b/), 6,
		'(b) each 429 was a retry after the Retry-After');
	is(count_in_log('b', qr/outcome=retry http=500/), $stats->{500}, '(b) each 500 was a retry');
	stop_stub($stub);
}

# (c) broken and invalid replies: a bare label is accepted, the rest are
# retried, then dead-lettered (max_attempts 2)
{
	my @bare = map { [ "case c bare $_: lovely", 'great', 'bare' ] } 1 .. 3;
	my @bad = ((map { [ "case c malformed $_", 'other', 'malformed' ] } 1 .. 2),
		(map { [ "case c truncated $_", 'other', 'truncated' ] } 1 .. 2),
		(map { [ "case c wronglabel $_", 'other', 'wronglabel' ] } 1 .. 2));
	my $stub = start_stub('c', write_gold('c', @bare, @bad));
	create_policy('pc', 2);
	enqueue('pc', @bare, @bad);
	is(run_until_settled('c', $stub, 'pc', '--concurrency', '4'), 0, '(c) SIGTERM exits 0');
	my %status = split /[|\n]/, $node->safe_psql('postgres',
		"SELECT input || '|' || status || ':' || attempts || ':' || coalesce(answer->>'label', '') || ':' || replace(coalesce(error, ''), E'\n', ' ')
		   FROM triage.escalations WHERE policy = 'pc'");
	for my $r (@bare)
	{
		like($status{ $r->[0] }, qr/^done:0:great:$/, "(c) bare label accepted: $r->[0]");
	}
	for my $r (@bad)
	{
		my %why = (malformed => qr/reply is not JSON/, truncated => qr/broken reply/,
			wronglabel => qr/invalid answer/);
		like($status{ $r->[0] }, qr/^dead:2::.*$why{$r->[2]}/, "(c) dead after 2 tries: $r->[0]");
	}
	is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM triage.examples e JOIN triage.escalations x ON x.id = e.escalation
		 WHERE x.policy = 'pc'}), '3', '(c) only the accepted answers became examples');
	# complete() says 'invalid' for a wrong label that will be retried and
	# 'dead' for one on the last try
	is(count_in_log('c', qr/outcome=invalid http=200/), 2, '(c) wrong labels logged as invalid on the 1st try');
	is(count_in_log('c', qr/outcome=dead/), 6, '(c) every bad reply dead-lettered on the 2nd try');
	stop_stub($stub);
}

# (d) answers slower than --timeout are failed and retried
{
	my @rows = gold_rows('d', 4);
	my $stub = start_stub('d', write_gold('d', @rows), '--mode', 'slow:3', '--slow-seconds', '3');
	create_policy('pd', 5);
	enqueue('pd', @rows);
	is(run_until_settled('d', $stub, 'pd', '--concurrency', '4', '--timeout', '1'), 0,
		'(d) SIGTERM exits 0');
	check_gold('(d)', 'pd', @rows);
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM triage.escalations WHERE policy = 'pd' AND attempts = 1"),
		'3', '(d) the 3 slow answers cost one attempt each');
	is(count_in_log('d', qr/outcome=retry http=0 .*error="timeout after 1 s"/), 3,
		'(d) logged as timeouts');
	stop_stub($stub);
}

# (e) the endpoint refuses the key: the breaker opens, no attempt is spent,
# the worker waits until stopped and gives its jobs back; (h) the key is
# not in ps
{
	my @rows = gold_rows('e', 5);
	my $stub = start_stub('e', write_gold('e', @rows), '--mode', '401');
	create_policy('pe', 5);
	enqueue('pe', @rows);
	my $h = start_worker('e', $stub, 'pe', '--concurrency', '2');
	my $deadline = time + 30;
	sleep 0.2 while stub_stats($stub)->{401} < 3 && time < $deadline;
	ok(stub_stats($stub)->{401} >= 3, '(e) the worker probes again after a refusal');
	sleep 1;
	ok(kill(0, worker_pid($h)), '(e) the worker keeps running');
	my $n401 = stub_stats($stub)->{401};
	ok($n401 <= 5, "(e) it does not hammer the endpoint ($n401 requests in ~4 s)");
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM triage.escalations WHERE policy = 'pe' AND (attempts > 0 OR status = 'dead')"),
		'0', '(e) no attempt was spent');
	is($node->safe_psql('postgres', "SELECT pid FROM triage.workers WHERE name = 'we'"),
		worker_pid($h), '(e) its heartbeat is in triage.workers');
	ok(count_in_log('e', qr/circuit breaker open/) >= 1, '(e) the log says the breaker opened');

	my $pid = worker_pid($h);
	my $ps = `ps -ww -o args= -p $pid`;
	like($ps, qr/--api-key-file/, '(h) ps shows the worker');
	unlike($ps, qr/\Q$api_key\E/, '(h) but not the API key');
	my $environ = -r "/proc/$pid/environ" ? slurp_file("/proc/$pid/environ") : '';
	unlike($environ, qr/\Q$api_key\E/, '(h) nor does its environment');

	is(stop_worker($h), 0, '(e) SIGTERM exits 0');
	is($node->safe_psql('postgres',
			"SELECT string_agg(DISTINCT status || ':' || coalesce(claimed_by, '-') || ':' || attempts, ',') FROM triage.escalations WHERE policy = 'pe'"),
		'pending:-:0', '(e) every job is pending again, unleased, with no attempt spent');
	stop_stub($stub);
}

# (f) a worker killed mid-batch: after the lease (--visibility) runs out a
# second worker finishes the jobs, each answered exactly once
{
	my @rows = gold_rows('f', 8);
	# the first stub answers rows 1-4 and hangs on 5-8
	my @slow = map { [ $rows[$_][0], $rows[$_][1], $_ >= 4 ? 'slow' : undef ] } 0 .. 7;
	my $stub1 = start_stub('f1', write_gold('f1', @slow), '--slow-seconds', '60');
	create_policy('pf', 5);
	enqueue('pf', @rows);
	my $h = start_worker('f1', $stub1, 'pf', '--concurrency', '4', '--visibility', '3',
		'--timeout', '60');
	ok($node->poll_query_until('postgres', qq{
		SELECT count(*) FILTER (WHERE status = 'done') = 4
		   AND count(*) FILTER (WHERE status = 'claimed') = 4
		  FROM triage.escalations WHERE policy = 'pf'}), '(f) 4 jobs done, 4 in flight')
	  or show_log('f1');
	kill 'KILL', worker_pid($h);
	is(wait_worker($h), 128 + 9, '(f) the first worker was killed');

	my $stub2 = start_stub('f2', write_gold('f2', @rows));
	is(run_until_settled('f2', $stub2, 'pf', '--concurrency', '4'), 0, '(f) the second worker exits 0');
	check_gold('(f)', 'pf', @rows);
	is($node->safe_psql('postgres', qq{
		SELECT string_agg(claimed_by || ':' || attempts, ',' ORDER BY id)
		  FROM triage.escalations WHERE policy = 'pf'}),
		join(',', ('wf1:0') x 4, ('wf2:1') x 4),
		'(f) the second worker took the 4 abandoned jobs, their expired lease counted as an attempt');
	is(stub_stats($stub2)->{requests}, 4, '(f) and asked only for them');
	stop_stub($stub1);
	stop_stub($stub2);
}

# (g) the database restarts under a running worker: it reconnects and
# finishes, with every answer recorded once
{
	my @rows = gold_rows('g', 12);
	my $stub = start_stub('g', write_gold('g', @rows), '--mode', 'slow:1.0', '--slow-seconds', '0.5');
	create_policy('pg', 5);
	enqueue('pg', @rows);
	my $h = start_worker('g', $stub, 'pg', '--concurrency', '2');
	ok($node->poll_query_until('postgres',
			"SELECT count(*) >= 2 FROM triage.escalations WHERE policy = 'pg' AND status = 'done'"),
		'(g) the worker is under way');
	$node->restart;
	ok($node->poll_query_until('postgres', settled_query('pg')), '(g) every job settled after the restart')
	  or show_log('g');
	check_gold('(g)', 'pg', @rows);
	ok(count_in_log('g', qr/msg="connected to database .* again"/) >= 1,
		'(g) the worker reconnected');
	ok(kill(0, worker_pid($h)), '(g) and kept running');
	is(stop_worker($h), 0, '(g) SIGTERM exits 0');
	stop_stub($stub);
}

# (h) the key never reached a log
{
	my @leaks = grep { -e $_ && slurp_file($_) =~ /\Q$api_key\E/ } @all_logs;
	is(scalar(@leaks), 0, '(h) no worker log holds the API key') or diag("@leaks");
}

$node->stop;
done_testing();
