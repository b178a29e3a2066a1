# triage-worker's promises that only timing shows (#20): the pace under
# --rps and under --tpm, read from the stub's log of request arrivals and
# token usage; the NOTIFY wake-up, far sooner than the idle poll; and two
# workers on one queue answering 200 escalations, each exactly once.
#
# Each assertion was checked to fail on a feature broken on purpose:
#   - the limiter a no-op (bucket_wait() always 0 in limiter.c, a worker
#     built from src/worker with that change, run with TRIAGE_WORKER=...):
#     all 20 requests in 0.12 s against a bound of 6.25 under --rps 5, and
#     the tokens of 43.9 requests in 0.09 s against a bound of 41.2 under
#     --tpm;
#   - no LISTEN (db.c sends SET application_name in its place): the five
#     pick-ups took 1.85 to 1.94 s, the idle poll's;
#   - leases of 1 ms (db.c's claim passes a visibility of 0.001 s, so a job
#     leased to one worker is claimable again at once): with two workers,
#     195 of the 200 inputs sent more than once (973 requests, most 5
#     times: each lease ran out and counted an attempt), 11 answered and
#     written back, 189 dead.  (That worker fails cases 1 to 3 too.)
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
use List::Util qw(max sum);
use Time::HiRes qw(sleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TriageTest qw(start_stub worker_and_stub);

my $root = abs_path(dirname(__FILE__) . '/../..');
my $stub_py = "$root/test/stub/stub_llm.py";
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $started = time;

my $worker = worker_and_stub($root);
note "worker: $worker";

my $node = PostgreSQL::Test::Cluster->new('limits');
$node->init;
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(qq{
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$root/test/data/sentiment_v1.ftz'));
	CREATE ROLE llm_worker LOGIN IN ROLE triage_worker;
	SELECT triage.allow_worker('llm_worker');
});
my $dsn = $node->connstr('postgres') . ' user=llm_worker';

sub create_policy
{
	my ($policy) = @_;
	sql("SELECT triage.create_policy('$policy', model => 'sentiment', labels => ARRAY['great','other'])");
}

# The gold file of a case: every input answered "great"
sub write_gold
{
	my ($name, @inputs) = @_;
	my $file = "$tmp/gold_$name.jsonl";
	open(my $f, '>', $file) or die;
	print $f JSON::PP->new->canonical->encode({ input => $_, label => 'great' }), "\n" for @inputs;
	close $f;
	return $file;
}

sub stub_get
{
	my ($stub, $what) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$stub->{port}/$what");
	die "GET /$what: $r->{status}" unless $r->{success};
	return decode_json($r->{content});
}

sub stop_stub
{
	my ($stub) = @_;
	my $stats = stub_get($stub, 'stats');
	is($stats->{unknown_input}, 0, "($stub->{name}) the stub knew every input it was sent");
	$stub->{h}->signal('TERM');
	$stub->{h}->finish;
}

sub worker_cmd
{
	my ($name, $stub, $policy, @extra) = @_;
	return [ $worker, '--dsn', $dsn, '--base-url', "http://127.0.0.1:$stub->{port}/v1",
		'--model', 'stub-model', '--policy', $policy, '--name', "w$name",
		'--log-file', "$tmp/worker_$name.log", @extra ];
}

sub start_worker
{
	my ($name, @args) = @_;
	my ($out, $err) = ('', '');
	return start(worker_cmd($name, @args), '>', \$out, '2>', \$err);
}

sub stop_worker
{
	my ($h) = @_;
	$h->signal('TERM');
	eval { $h->finish };
	my $st = $h->full_result(0);
	return ($st & 127) ? 128 + ($st & 127) : $st >> 8;
}

# Waits until the policy has n answered escalations (at most timeout s);
# returns how many it has
sub wait_done
{
	my ($policy, $n, $timeout) = @_;
	my $deadline = time + $timeout;
	my $done;
	while (1)
	{
		$done = sql("SELECT count(*) FROM triage.escalations WHERE policy = '$policy' AND status = 'done'");
		last if $done >= $n || time > $deadline;
		sleep 0.05;
	}
	return $done;
}

# Enqueues the inputs in one transaction (one NOTIFY at commit)
sub enqueue
{
	my ($policy, @inputs) = @_;
	sql(join('', map { (my $q = $_) =~ s/'/''/g; "SELECT triage.enqueue('$policy', '$q');" } @inputs));
}

# The largest excess of a log over a token bucket: for arrivals sorted by
# time t with costs c, max over i <= j of sum(c[i..j]) - rate * (t[j] - t[i]).
# A bucket of capacity b and refill rate lets at most b + rate * T of cost
# start within any T seconds: the excess stays <= b (plus the tolerance
# the caller adds).  Returns the excess and the window (i, j) that has it.
sub worst_window
{
	my ($log, $rate, $cost) = @_;
	my ($worst, $wi, $wj) = (-1e18, 0, 0);
	for my $i (0 .. $#$log)
	{
		my $sum = 0;
		for my $j ($i .. $#$log)
		{
			$sum += $cost->($log->[$j]);
			my $excess = $sum - $rate * ($log->[$j]{t} - $log->[$i]{t});
			($worst, $wi, $wj) = ($excess, $i, $j) if $excess > $worst;
		}
	}
	return ($worst, $wi, $wj);
}

sub sorted_log
{
	my ($stub) = @_;
	return [ sort { $a->{t} <=> $b->{t} } @{ stub_get($stub, 'log') } ];
}

# The worker takes a token when it starts a request and the stub stamps the
# request when its header is in: a request delayed on the way by up to D
# seconds lets one that started later arrive up to D sooner, so arrivals
# in a window of T seconds started within T + D.  D = 0.25 s (loopback on
# a busy 2-core machine; a request's transfer takes about 1 ms here).
my $transit = 0.25;

# --- 1. --rps ---------------------------------------------------------------
# The bucket of --rps R holds max(R, 1) requests (triage_worker.c,
# bucket_init) and refills R per second: any T seconds see at most
# b + R (T + D) arrivals.  With R = 5 and 20 escalations claimable at once
# and --concurrency 8, only the limiter holds the pace: 5 at once, then 15
# at 5/s, about 3 s.  Without it the 20 arrive in about 0.1 s.
{
	my ($rps, $n) = (5, 20);
	my $burst = $rps > 1 ? $rps : 1;
	my @inputs = map { "rps case row $_: the tea was lovely" } 1 .. $n;
	my $stub = start_stub($stub_py, $tmp, 'rps', write_gold('rps', @inputs));
	create_policy('p_rps');
	enqueue('p_rps', @inputs);
	my $h = start_worker('rps', $stub, 'p_rps', '--concurrency', '8', '--rps', $rps);
	is(wait_done('p_rps', $n, 30), $n, "(rps) the worker answered all $n escalations");
	is(stop_worker($h), 0, '(rps) SIGTERM exits 0');
	my $log = sorted_log($stub);
	is(scalar @$log, $n, "(rps) the stub got $n requests, one per escalation");
	my ($excess, $i, $j) = worst_window($log, $rps, sub { 1 });
	my $bound = $burst + $rps * $transit;
	cmp_ok($excess, '<=', $bound,
		sprintf('(rps) in every window, requests <= %d + %g (T + %.2f): worst %d in %.3f s (excess %.2f)',
			$burst, $rps, $transit, $j - $i + 1, $log->[$j]{t} - $log->[$i]{t}, $excess));
	# and the limiter does not hold back far more than asked: the whole run
	# takes at most twice its minimum (N - b) / R, plus a second
	my $span = $log->[-1]{t} - $log->[0]{t};
	my $min_span = ($n - $burst) / $rps;
	cmp_ok($span, '<=', 2 * $min_span + 1,
		sprintf('(rps) and holds back no more than that: %d requests took %.2f s, the limit allows %.1f at the soonest',
			$n, $span, $min_span));
	stop_stub($stub);
}

# --- 2. --tpm ---------------------------------------------------------------
# The bucket of --tpm N holds N tokens (one minute's) and refills N / 60
# per second.  It is charged an estimate when a request starts (its bytes
# times the tokens per byte learnt from earlier replies' usage) and settled
# with the reply's usage.total_tokens, so the real tokens of the requests
# arriving in any T seconds are <= N + N/60 (T + D), plus the estimate's
# shortfall on requests in flight: at most one request's tokens here, where
# every request has the same size and the first estimate (bytes / 4) is
# above the stub's count (1.3 per word).  One probe request gives the size
# R of a request; then N = 40 R and 44 escalations: 40 at once, then 4 at
# one per 1.5 s, about 6 s.  Without the limiter all 44 arrive at once,
# above the bound of 41.5 R.
{
	my $n = 44;
	my @inputs = map { sprintf('tpm case row %03d: the marmalade arrived beautifully packaged', $_) } 0 .. $n;
	my $stub = start_stub($stub_py, $tmp, 'tpm', write_gold('tpm', @inputs));
	create_policy('p_tpm');
	enqueue('p_tpm', $inputs[0]);
	IPC::Run::run(worker_cmd('tpm_probe', $stub, 'p_tpm', '--once'), '>', \my $out, '2>', \my $err);
	is($? >> 8, 0, '(tpm) the probe run exits 0');
	my $probe = stub_get($stub, 'log');
	my $size = $probe->[0]{tokens};
	ok(@$probe == 1 && $size > 0, "(tpm) the probe request used $size tokens");
	my $tpm = 40 * $size;
	my $rate = $tpm / 60;
	my $t_probe = time;
	enqueue('p_tpm', @inputs[1 .. $n]);
	my $h = start_worker('tpm', $stub, 'p_tpm', '--concurrency', '8', '--tpm', $tpm);
	is(wait_done('p_tpm', $n + 1, 40), $n + 1, "(tpm) the worker answered all $n escalations");
	is(stop_worker($h), 0, '(tpm) SIGTERM exits 0');
	my $log = [ grep { $_->{t} >= $t_probe } @{ sorted_log($stub) } ];
	is(scalar @$log, $n, "(tpm) the stub got $n requests, one per escalation");
	my $largest = max(map { $_->{tokens} } @$log);
	is($largest, $size, "(tpm) every request used $size tokens, as the probe did");
	my ($excess, $i, $j) = worst_window($log, $rate, sub { $_[0]{tokens} });
	my $bound = $tpm + $rate * $transit + $largest;
	cmp_ok($excess, '<=', $bound,
		sprintf('(tpm %d) in every window, tokens <= %d + %.1f (T + %.2f) + %d: worst %d in %.3f s (excess %.0f, %.2f requests)',
			$tpm, $tpm, $rate, $transit, $largest,
			sum(map { $_->{tokens} } @$log[ $i .. $j ]), $log->[$j]{t} - $log->[$i]{t}, $excess, $excess / $size));
	my $span = $log->[-1]{t} - $log->[0]{t};
	my $min_span = (sum(map { $_->{tokens} } @$log) - $tpm - $largest) / $rate;
	cmp_ok($span, '<=', 2 * $min_span + 1,
		sprintf('(tpm) and holds back no more than that: %d requests took %.2f s, the limit allows %.1f at the soonest',
			$n, $span, $min_span));
	stop_stub($stub);
}

# --- 3. NOTIFY wake-up ------------------------------------------------------
# With nothing to claim the worker looks again every 2 s (IDLE_POLL_MS; it
# has no option for it); triage.enqueue() NOTIFYs triage_escalations and
# the worker claims within 200 ms of its last claim (NOTIFY_GAP_MS).  Each
# escalation here is enqueued as soon as the one before it is answered,
# about 0.1 s after the worker's last claim: the poll alone would take it
# up about 1.9 s later, every time.  The median of 5 pick-ups (enqueue to
# answer, on the server's clock) must be under 0.8 s, the slowest under
# 1.5 s.
{
	my @inputs = map { "notify case row $_: the biscuits were stale" } 0 .. 5;
	my $stub = start_stub($stub_py, $tmp, 'notify', write_gold('notify', @inputs));
	create_policy('p_notify');
	my $h = start_worker('notify', $stub, 'p_notify', '--concurrency', '4');
	enqueue('p_notify', $inputs[0]);
	is(wait_done('p_notify', 1, 15), 1, '(notify) the first escalation is answered');
	my @latency;
	for my $k (1 .. 5)
	{
		enqueue('p_notify', $inputs[$k]);
		wait_done('p_notify', $k + 1, 10);
		push @latency, sql(qq{
			SELECT extract(epoch FROM done_at - created_at) FROM triage.escalations
			 WHERE policy = 'p_notify' AND input = '$inputs[$k]' AND status = 'done'}) || 99;
	}
	is(stop_worker($h), 0, '(notify) SIGTERM exits 0');
	my @sorted = sort { $a <=> $b } @latency;
	my $shown = join(' ', map { sprintf('%.3f', $_) } @latency);
	cmp_ok($sorted[2], '<', 0.8, "(notify) the median pick-up is far below the 2 s poll: $shown s");
	cmp_ok($sorted[-1], '<', 1.5, "(notify) and so is the slowest");
	stop_stub($stub);
}

# --- 4. two workers, one queue ---------------------------------------------
# 200 escalations of rows of an attached table, two workers at once, each
# with --concurrency 8 and a batch of 4 so that both get some.  Every
# escalation is answered exactly once: one done row each, one example
# each, one write-back each (a trigger counts the updates of the output
# column), and the stub got each input once (there are no errors here, so
# no retries).
{
	my $n = 200;
	my @inputs = map { "two workers row $_: the honey was superb" } 1 .. $n;
	my $stub = start_stub($stub_py, $tmp, 'two', write_gold('two', @inputs));
	create_policy('p_two');
	sql(qq{
		CREATE TABLE two_rows (id integer PRIMARY KEY, body text NOT NULL, label text, label_by jsonb);
		INSERT INTO two_rows (id, body) SELECT g, 'two workers row ' || g || ': the honey was superb'
		  FROM generate_series(1, $n) g;
		SELECT triage.attach('two_rows', 'body', 'label', 'p_two', 'label_by');
		CREATE TABLE two_writes (id integer, label text, at timestamptz DEFAULT clock_timestamp());
		CREATE FUNCTION two_count() RETURNS trigger LANGUAGE plpgsql AS \$\$
			BEGIN INSERT INTO public.two_writes (id, label) VALUES (NEW.id, NEW.label); RETURN NEW; END \$\$;
		CREATE TRIGGER two_count AFTER UPDATE OF label ON two_rows FOR EACH ROW EXECUTE FUNCTION two_count();
		SELECT count(triage.enqueue('p_two', body, source => 'two_rows', source_key => jsonb_build_object('id', id),
									input_column => 'body', output_column => 'label', provenance_column => 'label_by'))
		  FROM two_rows;
	});
	my $h1 = start_worker('two_a', $stub, 'p_two', '--concurrency', '8', '--batch', '4');
	my $h2 = start_worker('two_b', $stub, 'p_two', '--concurrency', '8', '--batch', '4');
	my $done = wait_done('p_two', $n, 60);
	# a duplicate would come late: give it a moment
	sleep 0.5;
	is(stop_worker($h1), 0, '(two) the first worker exits 0');
	is(stop_worker($h2), 0, '(two) the second worker exits 0');
	is($done, $n, "(two) all $n escalations answered");
	is(sql("SELECT count(*) FILTER (WHERE status <> 'done') || ' ' || count(*) FROM triage.escalations WHERE policy = 'p_two'"),
		"0 $n", "(two) none left pending, claimed or dead");
	is(sql(qq{
		SELECT count(*) || ' ' || count(DISTINCT escalation) FROM triage.examples
		 WHERE escalation IN (SELECT id FROM triage.escalations WHERE policy = 'p_two')}),
		"$n $n", '(two) one training example per escalation');
	is(sql("SELECT count(*) || ' ' || count(DISTINCT id) FROM two_writes"), "$n $n",
		'(two) each row written back once');
	is(sql("SELECT count(*) FROM two_rows WHERE label IS DISTINCT FROM 'great'"), '0',
		'(two) with the large model\'s answer');
	my $log = stub_get($stub, 'log');
	my %sent;
	$sent{ $_->{input} // '' }++ for @$log;
	is(scalar(grep { ($sent{$_} // 0) != 1 } @inputs), 0, "(two) the stub got each of the $n inputs once")
	  or diag('sent more or less than once: '
		  . join(' | ', map { "$_ x" . ($sent{$_} // 0) } grep { ($sent{$_} // 0) != 1 } @inputs[ 0 .. 9 ]));
	is(scalar @$log, $n, "(two) and nothing else: $n requests");
	my %by = map { split /\|/ } split /\n/,
	  sql("SELECT claimed_by, count(*) FROM triage.escalations WHERE policy = 'p_two' GROUP BY 1");
	note('answered by: ' . join(', ', map { "$_ $by{$_}" } sort keys %by));
	ok(($by{wtwo_a} // 0) > 0 && ($by{wtwo_b} // 0) > 0,
		sprintf('(two) both workers answered some: %d and %d', $by{wtwo_a} // 0, $by{wtwo_b} // 0));
	stop_stub($stub);
}

note sprintf('015_worker_limits took %.0f s', time - $started);
$node->stop;
done_testing();
