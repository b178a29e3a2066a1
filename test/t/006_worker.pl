# triage-worker against the stub LLM (test/stub/stub_llm.py): the happy
# path, 429 and 500 replies, broken and invalid answers, timeouts, a refused
# API key (circuit breaker), a worker killed mid-batch, and a database
# restart under a running worker.  The API key never shows in the log or in
# ps.  And what issues 13 and 21 asked of it: no name resolved through its
# role's search_path, the key out of its environment, the DSN's password
# and the URL's query out of its log, Retry-After clamped, NOTIFY only a
# hint, failed claims retried, a lost lease ("stale") taken calmly, a
# request cut to its lease, and a role that may not claim told how to fix
# it.  Echoed keys are tested in test/core/test_worker_redact.c: the stub
# cannot echo one.
#
# The worker logs in as llm_worker, a role with only triage_worker and a
# search_path that starts with public.
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
# (m) counts the calls of triage.claim
$node->append_conf('postgresql.conf', "track_functions = 'all'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_triage');
$node->safe_psql('postgres',
	"SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$root/test/data/sentiment_v1.ftz'))"
);

# In each database a worker serves, an admin allows its login role (issue 13)
sub allow_worker
{
	my ($role) = @_;
	$node->safe_psql('postgres', "SELECT triage.allow_worker('$role')");
}

# The worker's role: only the documented grant, and a search_path where
# whoever may create in public could plant look-alike functions (i)
$node->safe_psql('postgres', q{
	CREATE ROLE llm_worker LOGIN IN ROLE triage_worker;
	ALTER ROLE llm_worker SET search_path = public, pg_catalog;
});
allow_worker('llm_worker');
my $dsn = $node->connstr('postgres') . ' user=llm_worker';

# Secrets that must reach no log: the DSN's password (trust ignores it)
# and a value in the endpoint URL's query string (k)
my $dsn_password = 'DsnPassw0rd-Secret';
my $query_secret = 'QuerySecret4242';

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
	# every case's inputs are in its gold file: an unknown one would get a
	# made-up label (the stub's unknown_input count, #20)
	my $stats = stub_stats($stub);
	is($stats->{unknown_input}, 0, "($stub->{name}) the stub knew every input it was sent")
	  or diag('not in the gold file: ' . join(' | ', @{ $stats->{unknown_examples} || [] }));
	$stub->{h}->signal('TERM');
	$stub->{h}->finish;
}

# A worker's command line, its log named after the case; a later --dsn in
# @extra wins
sub worker_base
{
	my ($name, $url, @extra) = @_;
	my $log = "$tmp/worker_$name.log";
	push @all_logs, $log;
	return [ $worker, '--dsn', $dsn, '--base-url', $url, '--model', 'stub-model',
		'--name', "w$name", '--log-file', $log, @extra ];
}

sub worker_args
{
	my ($name, $stub, $policy, @extra) = @_;
	return worker_base($name, "http://127.0.0.1:$stub->{port}/v1", '--api-key-file', $key_file,
		'--policy', $policy, @extra);
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

# Whether a worker runs: kill 0 also succeeds on a zombie not yet reaped
sub alive
{
	my ($h) = @_;
	my $pid = worker_pid($h);
	my $stat = -r "/proc/$pid/stat" ? slurp_file("/proc/$pid/stat") : '';
	return $stat =~ /^\d+ \(.*\) ([A-Z])/ && $1 ne 'Z' && $1 ne 'X';
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

# Waits until the log of a case has n lines (default 1) matching re
sub wait_for_log
{
	my ($name, $re, $n) = @_;
	my $deadline = time + 60;
	$n //= 1;
	while (time < $deadline)
	{
		return 1 if count_in_log($name, $re) >= $n;
		sleep 0.1;
	}
	return 0;
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
	IPC::Run::run([ $worker, '--dsn', $dsn, '--base-url', 'http://127.0.0.1:1', '--model', 'm',
			'--max-retry-after', '-1' ], '>', \$out, '2>', \$err);
	is($? >> 8, 2, 'a negative --max-retry-after is bad usage (exit 2)');
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
	ok(alive($h), '(e) the worker keeps running');
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
	ok(count_in_log('g', qr/msg="connected to database .* again /) >= 1,
		'(g) the worker reconnected');
	ok(alive($h), '(g) and kept running');
	is(stop_worker($h), 0, '(g) SIGTERM exits 0');
	stop_stub($stub);
}

# (i) the worker resolves no name through its role's search_path (issue 21):
# llm_worker's path starts with public, where a make_interval(secs text)
# wins over pg_catalog's for an unqualified call with an untyped parameter,
# as the worker's claim() and fail() made
{
	$node->safe_psql('postgres', q{
		CREATE FUNCTION public.make_interval(secs text) RETURNS interval
		LANGUAGE plpgsql AS $$
		BEGIN
			RAISE EXCEPTION 'planted public.make_interval ran as %', current_user;
		END $$;
	});
	my ($ret, $out, $err) = $node->psql('postgres', "SELECT make_interval(secs => '1')",
		extra_params => [ '-U', 'llm_worker' ]);
	like($err, qr/planted public.make_interval ran as llm_worker/,
		'(i) the trap works: an unqualified call by llm_worker runs the planted function');

	my @rows = gold_rows('i', 4);
	my $stub = start_stub('i', write_gold('i', @rows), '--mode', '429:2');
	create_policy('pi', 5);
	enqueue('pi', @rows);
	is(run_until_settled('i', $stub, 'pi', '--concurrency', '2'), 0, '(i) SIGTERM exits 0');
	check_gold('(i)', 'pi', @rows);
	is(count_in_log('i', qr/outcome=retry http=429 .*retry_after=1\b/), 2,
		'(i) claims, and fail() with a Retry-After, ran');
	is(count_in_log('i', qr/planted/), 0, '(i) and never the planted function');
	ok(count_in_log('i',
			qr/connected to database \\"postgres\\" as \\"llm_worker\\" \(search_path pg_catalog, pg_temp\)/) == 1,
		"(i) the worker's session has search_path pg_catalog, pg_temp")
	  or show_log('i');
	$node->safe_psql('postgres', 'DROP FUNCTION public.make_interval(text)');
	stop_stub($stub);
}

# (i) every function, operator and type in the worker's SQL is
# schema-qualified: the string literals of src/worker/*.c that start like
# SQL, adjacent ones joined
{
	my @bad;
	my $nsql = 0;
	for my $file (glob("$root/src/worker/*.c"))
	{
		(my $c = slurp_file($file)) =~ s{/\*.*?\*/}{}gs;
		$c =~ s/'(?:[^'\\\n]|\\.)'//g;    # character constants, '"' among them
		while ($c =~ /((?:"(?:[^"\\\n]|\\.)*"\s*)+)/g)
		{
			my $str = join('', $1 =~ /"((?:[^"\\\n]|\\.)*)"/g);
			next unless $str =~ /^\s*(SELECT|LISTEN|SET|UPDATE|INSERT|DELETE|WITH)\b/;
			$nsql++;
			(my $sql = $str) =~ s/'(?:[^']|'')*'//g;
			$sql =~ s/OPERATOR\(pg_catalog\.[^)]+\)/ /g;
			while ($sql =~ /((?:\w+\.)?\w+)\s*\(/g)
			{
				my $f = $1;
				push @bad, "function $f in: $str"
				  unless $f =~ /^(pg_catalog|triage)\.\w+$/
				  || $f =~ /^(ANY|ALL|IN|EXISTS|VALUES|ARRAY|SELECT|FROM|AND|OR|NOT|ON)$/i;
			}
			while ($sql =~ /::\s*([\w.]+)/g)
			{
				push @bad, "cast to $1 in: $str" unless $1 =~ /^pg_catalog\.\w+$/;
			}
			(my $ops = $sql) =~ s/=>|::\s*[\w.]+(\[\])?|\$\d+//g;
			$ops =~ s/^\s*SET\s+\w+\s*=//;
			$ops =~ s/^\s*SELECT\s+\*//;
			push @bad, "operator in: $str" if $ops =~ m{[-+*/<>=~!@#%^&|`?]};
		}
	}
	ok($nsql >= 8, "(i) the worker's SQL strings were found ($nsql)");
	is(scalar(@bad), 0, '(i) none names a function, operator or type without its schema')
	  or diag(join("\n", @bad));
}

# (j) a key from the environment is sent, then gone from the environment:
# /proc/PID/environ shows the memory the process started with
{
	my @rows = gold_rows('j', 2);
	my $stub = start_stub('j', write_gold('j', @rows), '--api-key', $api_key);
	create_policy('pj', 5);
	enqueue('pj', @rows);
	my ($out, $err) = ('', '');
	my $h;
	{
		local $ENV{TRIAGE_TEST_API_KEY} = $api_key;
		$h = start(worker_base('j', "http://127.0.0.1:$stub->{port}/v1",
				'--api-key-env', 'TRIAGE_TEST_API_KEY', '--policy', 'pj'),
			'>', \$out, '2>', \$err);
	}
	ok($node->poll_query_until('postgres', settled_query('pj')), '(j) the jobs settled')
	  or show_log('j');
	check_gold('(j)', 'pj', @rows);
	is(stub_stats($stub)->{401}, 0, '(j) the key from the environment was sent');
	my $environ = slurp_file('/proc/' . worker_pid($h) . '/environ');
	like($environ, qr/\bPATH=/, '(j) the environment of the worker was read');
	unlike($environ, qr/\Q$api_key\E/, '(j) and it does not hold the key');
	is(count_in_log('j', qr/plain http/), 0, '(j) no clear-text warning for 127.0.0.1');
	is(stop_worker($h), 0, '(j) SIGTERM exits 0');
	stop_stub($stub);
}

# (k) what the log says of the endpoint and the database: no query string,
# no password; a key sent over plain http off the machine is warned about
{
	create_policy('pk', 5);    # no jobs: --once claims nothing, requests nothing
	my ($out, $err) = ('', '');
	IPC::Run::run(worker_base('k1', "http://127.0.0.1:1/v1?api-key=$query_secret",
			'--api-key-file', $key_file, '--policy', 'pk', '--once',
			'--dsn', "$dsn password=$dsn_password"),
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	is($? >> 8, 0, '(k) --once with nothing to claim exits 0') or show_log('k1');
	my $log = slurp_file("$tmp/worker_k1.log");
	like($log, qr{endpoint=http://127\.0\.0\.1:1/v1\?\(hidden\) },
		'(k) the URL is logged without its query string');
	like($log, qr/ database=user=llm_worker .*dbname=postgres /,
		'(k) the DSN is logged as libpq reads it');
	unlike($log, qr/\Q$query_secret\E|\Q$dsn_password\E/, '(k) with neither secret');
	is(count_in_log('k1', qr/plain http/), 0, '(k) no clear-text warning for 127.0.0.1');

	IPC::Run::run(worker_base('k2', 'http://192.0.2.1:9/v1', '--api-key-file', $key_file,
			'--policy', 'pk', '--once'),
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	is($? >> 8, 0, '(k) --once exits 0 again');
	is(count_in_log('k2', qr/level=warning msg="the API key goes to 192\.0\.2\.1 over plain http/), 1,
		'(k) a key sent over plain http to 192.0.2.1 is warned about, once');

	IPC::Run::run([ $worker, '--dsn', 'postgresql://llm_worker:pa@ss-word@localhost/postgres',
			'--base-url', 'http://127.0.0.1:1/v1', '--model', 'm', '--once' ],
		'>', \$out, '2>', \$err);
	is($? >> 8, 2, '(k) a DSN URI with an unencoded "@" in its password is bad usage (exit 2)');
	like($err, qr/%40/, '(k) the message says how to write it');
	unlike($err, qr/ss-word|pa\@ss/, '(k) and quotes no part of the password');
}

# (l) an absurd Retry-After is cut to --max-retry-after before fail()
{
	my @rows = gold_rows('l', 1);
	my $stub = start_stub('l', write_gold('l', @rows), '--mode', '429:1',
		'--retry-after', '999999999');
	create_policy('pl', 5);
	enqueue('pl', @rows);
	my $t0 = time;
	is(run_until_settled('l', $stub, 'pl', '--max-retry-after', '2'), 0, '(l) SIGTERM exits 0');
	check_gold('(l)', 'pl', @rows);
	is(count_in_log('l', qr/outcome=retry http=429 .*retry_after=2\b/), 1,
		'(l) a Retry-After of 999999999 s was cut to --max-retry-after 2');
	ok(time - $t0 < 40, '(l) and the job was answered seconds later');
	stop_stub($stub);
}

# (m) NOTIFY triage_escalations is open to every role: a stream of them
# from a role without any triage role, half with the policy's name as
# payload (as enqueue sends today), half with payloads that look like SQL,
# is a hint to claim and no more: claims stay at most one per 200 ms
{
	create_policy('pm', 5);
	$node->safe_psql('postgres', 'CREATE ROLE nobody LOGIN');
	my @rows = gold_rows('m', 1);
	my $stub = start_stub('m', write_gold('m', @rows));
	my $h = start_worker('m', $stub, 'pm');
	ok(wait_for_log('m', qr/connected to database/), '(m) the worker is connected');
	my $calls = q{SELECT coalesce(sum(calls), 0) FROM pg_catalog.pg_stat_user_functions
				   WHERE schemaname = 'triage' AND funcname = 'claim'};
	sleep 2;    # its statistics reach the view within a second of going idle
	my $before = $node->safe_psql('postgres', $calls);
	my $t0 = time;
	$node->safe_psql('postgres',
		join('', map {
			($_ % 2 ? "NOTIFY triage_escalations, 'pm';"
				: "NOTIFY triage_escalations, '$_''); DROP TABLE triage.escalations; --';")
			  . " SELECT pg_sleep(0.02);\n" } 1 .. 150),
		extra_params => [ '-U', 'nobody' ]);
	my $secs = time - $t0;
	sleep 2.5;
	my $claims = $node->safe_psql('postgres', $calls) - $before;
	my $bound = int(($secs + 2.5) * 5.5) + 3;
	ok($claims <= $bound,
		sprintf('(m) 150 NOTIFYs in %.1f s made %d claims (at most %d)', $secs, $claims, $bound));
	ok(alive($h), '(m) the worker keeps running');
	enqueue('pm', @rows);
	ok($node->poll_query_until('postgres', settled_query('pm')), '(m) and answers a job queued after');
	check_gold('(m)', 'pm', @rows);
	is(stop_worker($h), 0, '(m) SIGTERM exits 0');
	stop_stub($stub);
}

# (n) a claim() that fails (here every UPDATE of the queue raises
# program_limit_exceeded, as a 270 MB row made claim() fail with "string too
# long") is transient: logged, retried with growing backoff, and the worker
# goes on once it works again
{
	my @rows = gold_rows('n', 3);
	my $stub = start_stub('n', write_gold('n', @rows));
	create_policy('pn', 5);
	enqueue('pn', @rows);
	$node->safe_psql('postgres', q{
		CREATE TABLE public.claim_trap (armed boolean);
		INSERT INTO public.claim_trap VALUES (true);
		CREATE FUNCTION public.claim_trap() RETURNS trigger
		LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
		BEGIN
			IF EXISTS (SELECT FROM public.claim_trap) THEN
				RAISE EXCEPTION 'claim trap: string too long to represent as jsonb string'
					USING ERRCODE = 'program_limit_exceeded';
			END IF;
			RETURN NULL;
		END $$;
		CREATE TRIGGER claim_trap BEFORE UPDATE ON triage.escalations
			FOR EACH STATEMENT EXECUTE FUNCTION public.claim_trap();
	});
	my $h = start_worker('n', $stub, 'pn');
	ok(wait_for_log('n', qr/triage\.claim\(\) failed \(3 in a row/), '(n) claim() failed 3 times')
	  or show_log('n');
	ok(alive($h), '(n) and the worker keeps running');
	my @delays = map { /next try in ([\d.]+) s/ ? $1 : () }
	  grep { /claim\(\) failed/ } split /\n/, slurp_file("$tmp/worker_n.log");
	ok(@delays >= 3 && $delays[0] < $delays[1] && $delays[1] < $delays[2],
		"(n) with growing delays (@delays[0..2] s)");
	ok(count_in_log('n', qr/level=warning msg="triage\.claim\(\) failed .*SQLSTATE 54000: .*claim trap/) >= 3,
		'(n) each failure is a warning with its SQLSTATE and message');
	$node->safe_psql('postgres', 'DELETE FROM public.claim_trap');
	ok($node->poll_query_until('postgres', settled_query('pn')), '(n) once claims work, the jobs settle')
	  or show_log('n');
	check_gold('(n)', 'pn', @rows);
	ok(count_in_log('n', qr/triage\.claim\(\) works again after \d+ failures/) == 1,
		'(n) the log says claims work again');
	is(stop_worker($h), 0, '(n) SIGTERM exits 0');
	$node->safe_psql('postgres', q{
		DROP TRIGGER claim_trap ON triage.escalations;
		DROP FUNCTION public.claim_trap();
		DROP TABLE public.claim_trap;
	});
	stop_stub($stub);
}

# (o) a role that may not claim in this database: fatal, also without
# --once, with the fix in the log
{
	$node->safe_psql('postgres', 'CREATE ROLE stranger LOGIN');
	my ($out, $err) = ('', '');
	IPC::Run::run(worker_base('o1', 'http://127.0.0.1:1/v1', '--policy', 'pk',
			'--dsn', $node->connstr('postgres') . ' user=stranger'),
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	is($? >> 8, 1, '(o) a role without triage_worker exits 1');
	ok(count_in_log('o1',
			qr/level=error msg="role \\"stranger\\" may not claim escalations in database \\"postgres\\" \(SQLSTATE 42501\).*SELECT triage\.allow_worker\('stranger'\)/) == 1,
		'(o) the log names the fix: triage.allow_worker') or show_log('o1');
	# a member of triage_worker not allowed in this database may not claim here
	$node->safe_psql('postgres', 'CREATE ROLE outsider LOGIN IN ROLE triage_worker');
	IPC::Run::run(worker_base('o2', 'http://127.0.0.1:1/v1', '--policy', 'pk',
			'--dsn', $node->connstr('postgres') . ' user=outsider'),
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	is($? >> 8, 1, '(o) a triage_worker not allowed in this database exits 1');
	ok(count_in_log('o2', qr/SELECT triage\.allow_worker\('outsider'\)/) == 1,
		'(o) and the log names the fix') or show_log('o2');
}

# (p) a lease lost while the request runs (an admin gave the job back):
# the late answer is refused as "stale", logged at info, and the job is
# answered once, on the next claim
{
	my @rows = gold_rows('p', 1);
	my $stub = start_stub('p', write_gold('p', @rows), '--mode', 'slow:1', '--slow-seconds', '3');
	create_policy('pp', 5);
	enqueue('pp', @rows);
	my $h = start_worker('p', $stub, 'pp');
	ok($node->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM triage.escalations WHERE policy = 'pp' AND status = 'claimed'"),
		'(p) the job is leased');
	$node->safe_psql('postgres', q{
		UPDATE triage.escalations
		   SET status = 'pending', claimed_by = NULL, visible_at = now() + interval '3 seconds'
		 WHERE policy = 'pp'});
	ok($node->poll_query_until('postgres', settled_query('pp')), '(p) the job was answered')
	  or show_log('p');
	check_gold('(p)', 'pp', @rows);
	is(count_in_log('p', qr/level=info job=\d+ outcome=stale .*another worker may have the job/), 1,
		'(p) the late answer was "stale", logged at info as a lost lease') or show_log('p');
	is(count_in_log('p', qr/level=(warning|error)/), 0, '(p) with no warning or error');
	is(stop_worker($h), 0, '(p) SIGTERM exits 0');
	stop_stub($stub);
}

# (q) a request that would outlast its lease is cut short before the lease
# ends, and retried: its answer could not be recorded anyway
{
	my @rows = gold_rows('q', 1);
	my $stub = start_stub('q', write_gold('q', @rows), '--mode', 'slow:1', '--slow-seconds', '10');
	create_policy('pq', 5);
	enqueue('pq', @rows);
	is(run_until_settled('q', $stub, 'pq', '--visibility', '2', '--timeout', '60'), 0,
		'(q) SIGTERM exits 0');
	check_gold('(q)', 'pq', @rows);
	is(count_in_log('q', qr/outcome=retry http=0 .*error="no answer before the lease's end \(after 1\.\d+ s\)"/), 1,
		"(q) the slow request was cut before its 2 s lease ended, and retried") or show_log('q');
	is(count_in_log('q', qr/outcome=stale/), 0, '(q) so no answer came too late');
	stop_stub($stub);
}

# (h) the key never reached a log, nor did the other secrets
{
	my @leaks = grep { -e $_ && slurp_file($_) =~ /\Q$api_key\E/ } @all_logs;
	is(scalar(@leaks), 0, '(h) no worker log holds the API key') or diag("@leaks");
	@leaks = grep { -e $_ && slurp_file($_) =~ /\Q$dsn_password\E|\Q$query_secret\E/ } @all_logs;
	is(scalar(@leaks), 0, "(h) nor the DSN's password or the URL's query") or diag("@leaks");
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM triage.escalations WHERE error LIKE '%' || '$api_key' || '%'"),
		'0', '(h) nor does any error stored in the queue');
}

$node->stop;
done_testing();
