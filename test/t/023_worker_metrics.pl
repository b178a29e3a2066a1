# triage-worker --metrics-listen (#18): GET /metrics in the Prometheus text
# format, checked by the strict parser of TriageTest.pm, every number against
# a count of its own: jobs by outcome against triage.escalations, requests
# and the latency histogram against the stub's /log, tokens against the
# usage stored in the database and the stub's, in-flight requests, the pause
# after a 429 and the circuit breaker while they last.  Also: 404 and 405,
# the 8 KB header limit, a client that sends nothing is dropped after the
# read timeout without holding up the worker, ":PORT" binds 127.0.0.1 only,
# bad values are bad usage and a port in use a fatal error.
#
# Each assertion was checked to fail with its feature broken (see the commit
# message).
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use IPC::Run qw(start);
use JSON::PP qw(decode_json);
use Time::HiRes qw(sleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TriageTest qw(start_stub worker_and_stub parse_prometheus);

my $root = abs_path(dirname(__FILE__) . '/../..');
my $stub_py = "$root/test/stub/stub_llm.py";
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $started = time;

my $worker = worker_and_stub($root);
note "worker: $worker";

# the shared parser rejects a broken histogram (017 checks the rest of it)
my $hist = "# HELP h x\n# TYPE h histogram\n";
ok((parse_prometheus($hist . qq(h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n)))[0],
	'the format check takes a histogram');
for my $bad ([ qq(h_bucket{le="1"} 3\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n), 'counts that are not cumulative' ],
			 [ qq(h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 3\n), 'a _count that is not the +Inf bucket' ],
			 [ qq(h_bucket{le="1"} 1\nh_sum 1\nh_count 1\n), 'no +Inf bucket' ],
			 [ qq(h_bucket{le="2"} 1\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n), 'buckets out of order' ],
			 [ qq(h_bucket 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n), 'a bucket without le' ],
			 [ qq(h 1\n), 'a histogram sample without a suffix' ])
{
	ok(!(parse_prometheus($hist . $bad->[0]))[0], "the format check rejects a histogram with $bad->[1]");
}

my $node = PostgreSQL::Test::Cluster->new('metrics');
$node->init;
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(qq{
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$root/test/data/sentiment_v1.ftz'));
	CREATE ROLE llm_worker LOGIN IN ROLE triage_worker;
	SELECT triage.allow_worker('llm_worker');
	-- two tries: a wrong label is "invalid" on the first and "dead" on the second
	SELECT triage.create_policy('pm', model => 'sentiment', labels => ARRAY['great','other'], max_attempts => 2);
});
my $dsn = $node->connstr('postgres') . ' user=llm_worker';

# the rows: answered well, answered with a label not in the policy, slow
my @good = map { "metrics review $_: " . ($_ % 2 ? 'superb coffee' : 'fine tea') } 1 .. 8;
my @bad = map { "metrics wrong $_" } 1 .. 2;
my @late = map { "metrics late $_" } 1 .. 2;
my $slow = 'metrics slow one';
my $gold = "$tmp/gold.jsonl";
open(my $gf, '>', $gold) or die;
my $json = JSON::PP->new->canonical;
print $gf $json->encode({ input => $_, label => 'great' }), "\n" for @good, @late;
print $gf $json->encode({ input => $_, label => 'great', mode => 'wronglabel' }), "\n" for @bad;
print $gf $json->encode({ input => $slow, label => 'other', mode => 'slow' }), "\n";
close $gf;

sub enqueue
{
	for my $input (@_)
	{
		sql("SELECT triage.enqueue('pm', '$input')");
	}
}

sub settled
{
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM triage.escalations WHERE status IN ('pending', 'claimed')");
}

# the first 2 requests get a 429 with Retry-After: 3; a slow row takes 2 s
my $stub_run = start_stub($stub_py, $tmp, 'metrics', $gold,
	'--mode', '429:2', '--retry-after', '3', '--slow-seconds', '2');
my ($stub, $stub_port) = ($stub_run->{h}, $stub_run->{port});

sub stub_get
{
	my ($what) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$stub_port/$what");
	die "GET /$what: $r->{status}" unless $r->{success};
	return decode_json($r->{content});
}

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $log = "$tmp/worker.log";
my $h = start([ $worker, '--dsn', $dsn, '--base-url', "http://127.0.0.1:$stub_port/v1",
		'--model', 'stub-model', '--policy', 'pm', '--name', "metrics \"w\"\\1",
		'--concurrency', '2', '--log-file', $log, '--metrics-listen', "127.0.0.1:$port" ],
	'>', \my $wout, '2>', \my $werr);

my $http = HTTP::Tiny->new(timeout => 10);

# GET /metrics: (samples, the raw reply); fails the test on a bad format
my $format_failures = 0;
sub scrape
{
	my $r = $http->get("http://127.0.0.1:$port/metrics");
	return ({}, $r) unless $r->{success};
	my ($m, $why) = parse_prometheus($r->{content});
	unless ($m)
	{
		$format_failures++;
		diag("bad exposition: $why\n$r->{content}");
		$m = {};
	}
	return ($m, $r);
}

# Scrapes until cond(samples) holds (at most 20 s); the samples, or undef
sub scrape_until
{
	my ($cond) = @_;
	my $deadline = time + 20;
	while (time < $deadline)
	{
		my ($m) = scrape();
		return $m if %$m && $cond->($m);
		sleep 0.02;
	}
	return undef;
}

my $up = scrape_until(sub { 1 });
ok($up, 'the worker serves /metrics') or diag(-e $log ? slurp_file($log) : $werr);
my (undef, $first) = scrape();
is($first->{headers}{'content-type'}, 'text/plain; version=0.0.4', 'Content-Type of text format 0.0.4');
my ($info) = grep { /^triage_worker_info\{/ } keys %$up;
like($info // '', qr/^triage_worker_info\{libcurl=[0-9.]+,libpq=\d+,mode=interactive,version=0\.1\.0,worker=metrics "w"\\1\}$/,
	'triage_worker_info: libraries, mode, version and the worker name (a quote and a backslash, escaped)');
is($up->{$info // ''}, 1, 'whose value is 1');

# 1. answered rows, two of them after a 429: the pause shows while it lasts
enqueue(@good);
my $paused = scrape_until(sub { $_[0]{'triage_worker_cooldown{}'} });
ok($paused, 'after a 429 the cooldown gauge is 1');
my $left = $paused ? $paused->{'triage_worker_cooldown_remaining_seconds{}'} : -1;
ok($left > 0 && $left <= 3, "and the seconds left of it are in (0, 3]: $left");
ok(settled(), 'the answered rows are settled');

my ($m1) = scrape();
my ($prompt, $completion) = split /\|/, sql(q{
	SELECT sum((usage->>'prompt_tokens')::bigint) || '|' || sum((usage->>'completion_tokens')::bigint)
	  FROM triage.escalations WHERE status = 'done'});
is($m1->{'triage_worker_tokens_total{kind=prompt}'}, $prompt, "prompt tokens = the usage stored in the database ($prompt)");
is($m1->{'triage_worker_tokens_total{kind=completion}'}, $completion,
	"completion tokens = the usage stored in the database ($completion)");
is($m1->{'triage_worker_cooldown{}'}, 0, 'the cooldown is over');
is($m1->{'triage_worker_requests_total{code=429}'}, 2, 'two requests got a 429');

# 2. wrong labels (invalid, then dead) and a slow row: in flight while it runs
enqueue(@bad, $slow);
my $busy = scrape_until(sub { $_[0]{'triage_worker_requests_in_flight{}'} >= 1 });
ok($busy, 'a running request shows in requests_in_flight');
ok(settled(), 'the wrong and slow rows are settled');

# 3. a client that sends nothing holds the responder, not the worker: rows
# are answered meanwhile, and it is dropped after the read timeout (5 s)
my $idle = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5)
  or die "connect: $!";
my $t0 = time;
enqueue(@late);
ok(settled() && time - $t0 < 5, sprintf('rows are answered while a client holds the responder (%.1f s)', time - $t0));
my $sel = IO::Select->new($idle);
ok(!$sel->can_read(0), 'and the idle connection is still open then');
my ($closed_after, $buf) = (undef, '');
if ($sel->can_read(10))
{
	$closed_after = time - $t0;
	sysread($idle, $buf, 100);
}
ok(defined $closed_after && $closed_after >= 4 && $closed_after < 8 && $buf eq '',
	sprintf('the idle client is dropped after the read timeout (%s s)', $closed_after // 'never'));
close $idle;

# a header over 8 KB is refused
my $big = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5) or die;
print $big "GET /metrics HTTP/1.0\r\nX-Filler: " . ('a' x 9000) . "\r\n\r\n";
my $answer = '';
$answer .= $_ while <$big>;
close $big;
like($answer, qr{^HTTP/1\.0 431 }, 'a request header over 8 KB gets 431, not the metrics');

# 4. every count against its own
my ($m, $raw) = scrape();
ok(%$m, 'the exposition passes the strict format check');
my $stub_log = stub_get('log');
my %db = map { split /\|/ } split /\n/, sql(q{
	SELECT 'done|' || count(*) FILTER (WHERE status = 'done') || E'\n'
		   || 'dead|' || count(*) FILTER (WHERE status = 'dead') || E'\n'
		   || 'attempts|' || sum(attempts)
	  FROM triage.escalations});
my $jobs = sub { $m->{"triage_worker_jobs_total{outcome=$_[0]}"} // 'none' };
is($jobs->('done'), $db{done}, "jobs_total{outcome=done} = the done rows of triage.escalations ($db{done})");
is($db{done}, @good + @late + 1, 'which are the good, late and slow rows');
is($jobs->('dead'), $db{dead}, "jobs_total{outcome=dead} = the dead rows ($db{dead})");
is($jobs->('invalid'), scalar(@bad), 'jobs_total{outcome=invalid}: each wrong row once');
is($jobs->('retry'), 2, 'jobs_total{outcome=retry}: the two 429s');
is($jobs->('invalid') + $jobs->('retry') + $jobs->('dead'), $db{attempts},
	"invalid + retry + dead = the failed attempts in triage.escalations ($db{attempts})");
is($jobs->($_), 0, "jobs_total{outcome=$_} = 0") for qw(stale released error unknown);

my $requests = scalar(@$stub_log);
is($m->{'triage_worker_request_duration_seconds_count{}'}, $requests,
	"the latency histogram counts every request the stub saw ($requests)");
my $ok200 = grep { $_->{mode} ne '429' } @$stub_log;
is($m->{'triage_worker_requests_total{code=200}'}, $ok200, "requests_total{code=200} = $ok200");
is($m->{'triage_worker_requests_total{code=none}'}, 0, 'no request went unanswered');
# the slow row took 2 s, every other one well under 1 s
is($m->{'triage_worker_request_duration_seconds_bucket{le=1}'}, $requests - 1, 'all but the slow request under 1 s');
is($m->{'triage_worker_request_duration_seconds_bucket{le=2.5}'}, $requests, 'and the slow one under 2.5 s');
ok($m->{'triage_worker_request_duration_seconds_sum{}'} >= 2
	  && $m->{'triage_worker_request_duration_seconds_sum{}'} < 2 + $requests,
	"the histogram's sum holds the slow request's 2 s ($m->{'triage_worker_request_duration_seconds_sum{}'})");
my $stub_tokens = 0;
$stub_tokens += $_->{tokens} for @$stub_log;
is($m->{'triage_worker_tokens_total{kind=prompt}'} + $m->{'triage_worker_tokens_total{kind=completion}'},
	$stub_tokens, "prompt + completion tokens = the usage of every reply the stub sent ($stub_tokens)");
is($m->{'triage_worker_requests_in_flight{}'}, 0, 'no request in flight when idle');
is($m->{'triage_worker_jobs_queued{}'}, 0, 'no job queued when idle');
is($m->{'triage_worker_breaker_open{}'}, 0, 'the breaker is closed');

# other paths and methods
is($http->get("http://127.0.0.1:$port/other")->{status}, 404, 'GET /other is 404');
is($http->get("http://127.0.0.1:$port/metricsx")->{status}, 404, 'GET /metricsx is 404');
my $post = $http->post("http://127.0.0.1:$port/metrics");
is($post->{status}, 405, 'POST /metrics is 405');
is($post->{headers}{allow}, 'GET', 'with Allow: GET');

# 5. the endpoint goes away: the breaker opens, the job is given back
$stub->signal('TERM');
$stub->finish;
enqueue('metrics after the stub');
my $open = scrape_until(sub { $_[0]{'triage_worker_breaker_open{}'} && $_[0]{'triage_worker_breaker_remaining_seconds{}'} > 0 });
ok($open, 'with the endpoint down the breaker gauge is 1, with seconds left before the probe');
my ($m5) = scrape_until(sub { $_[0]{'triage_worker_jobs_total{outcome=released}'} >= 1 });
ok($m5 && $m5->{'triage_worker_breaker_openings_total{}'} >= 1, 'breaker_openings_total counts it');
ok($m5 && $m5->{'triage_worker_requests_total{code=none}'} >= 1, 'the refused request is counted with code="none"');
ok($m5 && $m5->{'triage_worker_jobs_total{outcome=released}'} >= 1, 'the job given back is counted as released');
$h->signal('TERM');
eval { $h->finish };
is($h->full_result(0) >> 8, 0, 'the worker stops with status 0');
is($format_failures, 0, 'every scrape passed the strict format check');
like(slurp_file($log), qr/metrics at http:\/\/127\.0\.0\.1:$port\/metrics/, 'the log says where the metrics are');

# 6. ":PORT" listens on 127.0.0.1 only; bad values; a port in use
sub listeners
{
	my ($p) = @_;
	my @found;
	for my $file ('/proc/net/tcp', '/proc/net/tcp6')
	{
		next unless -r $file;
		for (split /\n/, slurp_file($file))
		{
			# local address:port, remote, state 0A = LISTEN
			push @found, $1 if /^\s*\d+: ([0-9A-F]+):([0-9A-F]{4}) [0-9A-F]+:[0-9A-F]{4} 0A / && hex($2) == $p;
		}
	}
	return join(',', sort @found);
}
my $port2 = PostgreSQL::Test::Cluster::get_free_port();
my $h2 = start([ $worker, '--dsn', 'host=127.0.0.1 port=1 dbname=none connect_timeout=1', '--base-url',
		'http://127.0.0.1:1/v1', '--model', 'm', '--log-file', "$tmp/worker2.log",
		'--metrics-listen', ":$port2" ], '>', \my $out2, '2>', \my $err2);
my $deadline = time + 10;
sleep 0.05 while listeners($port2) eq '' && time < $deadline;
is(listeners($port2), '0100007F', "--metrics-listen :$port2 listens on 127.0.0.1 only (/proc/net/tcp)");
ok(HTTP::Tiny->new(timeout => 5)->get("http://127.0.0.1:$port2/metrics")->{success},
	'and serves there while the database is away');
# Runs a worker that should exit at once: its exit status and standard
# error, or "still running" (then killed) after 10 s
sub run_briefly
{
	my ($out, $err) = ('', '');
	my $run = start([ $worker, '--dsn', 'host=127.0.0.1 port=1 dbname=none', '--base-url',
			'http://127.0.0.1:1/v1', '--model', 'm', @_ ], '>', \$out, '2>', \$err, IPC::Run::timeout(10));
	my $status = eval { $run->finish; $run->full_result(0) >> 8 };
	unless (defined $status)
	{
		$run->kill_kill;
		$status = 'still running';
	}
	return ($status, $err);
}
my ($status, $err) = run_briefly('--metrics-listen', ":$port2");
is($status, 1, 'a port in use is a fatal error (exit 1)');
like($err, qr/metrics-listen :$port2: Address already in use/, 'and the log says why');
$h2->signal('TERM');
eval { $h2->finish };
for my $bad ('9187', 'localhost:', ':65536', 'a:b:1', '[::1]9187')
{
	is((run_briefly('--metrics-listen', $bad))[0], 2, "--metrics-listen '$bad' is bad usage (exit 2)");
}

ok(time - $started < 60, sprintf('the test ran in %.0f s', time - $started));
done_testing();
