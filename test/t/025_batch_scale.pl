# Issue #19 at scale, and budgets over their window:
#
#   1. 2,000 escalations of an attached table drained in batch mode (files of
#      500 requests), the stub failing the first batch and expiring the
#      second; the worker is killed (SIGKILL) with batches out and restarted
#      with the same --name.  Every escalation is answered exactly once (one
#      answer, one training example, one write-back each), no batch is
#      created twice at the endpoint, no custom_id is sent in two batches
#      unless its first one failed or expired without answering it, and the
#      rows of the failed and expired batches are answered by later ones.
#   2. a budget of N tokens an hour: the worker stops at it, over N by less
#      than one claim's worth of requests (--concurrency 4, so --batch 4: at
#      most 4 requests are out when the budget is reached), the rest stays
#      queued (when_over wait), or is closed over_budget with the small
#      model's answer (keep_small); in the next window (the answers' done_at
#      moved back 61 minutes) the worker drains the rest.
#
# Each assertion was checked to fail with its feature broken (see the
# commit message).
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use HTTP::Tiny;
use IPC::Run qw(start);
use JSON::PP qw(decode_json encode_json);
use Time::HiRes qw(sleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TriageTest qw(start_stub worker_and_stub);

my $root = abs_path(dirname(__FILE__) . '/../..');
my $stub_py = "$root/test/stub/stub_llm.py";
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $worker = worker_and_stub($root);
my $n = 2000;

my $node = PostgreSQL::Test::Cluster->new('batch_scale');
$node->init;
$node->start;
sub sql { return $node->safe_psql('postgres', $_[0]); }

# the budget policies: every row escalated by enqueue; the scale policy:
# every row of the attached table (a threshold above 1 escalates them all)
sql(q{
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('sentiment', pg_read_binary_file('} . "$root/test/data/sentiment_v1.ftz" . q{'));
	CREATE ROLE llm_worker LOGIN IN ROLE triage_worker;
	SELECT triage.allow_worker('llm_worker');
	SELECT triage.create_policy('scale', model => 'sentiment', labels => ARRAY['great','other'],
								threshold => 1.001, rules => '{"latency": "batch"}');
	SELECT triage.create_policy('probe', model => 'sentiment', labels => ARRAY['great','other']);
	SELECT triage.create_policy('bud', model => 'sentiment', labels => ARRAY['great','other']);
	SELECT triage.create_policy('bks', model => 'sentiment', labels => ARRAY['great','other']);
	CREATE TABLE inbox (id integer PRIMARY KEY, body text NOT NULL, label text, label_by jsonb);
	SELECT triage.attach('inbox', 'body', 'label', 'scale', 'label_by');
});
my $dsn = $node->connstr('postgres') . ' user=llm_worker';

# every input, answered "other" for every seventh, else "great"
my %inputs = (
	scale => [ map { "scaled review $_ of the batch run" } 1 .. $n ],
	probe => ['budget review 0 of the hour'],
	bud => [ map { "budget review $_ of the hour" } 1 .. 60 ],
	bks => [ map { "budget review $_ of the day" } 1 .. 50 ],
);
open(my $g, '>', "$tmp/gold.jsonl") or die;
for my $list (values %inputs)
{
	print $g encode_json({ input => $list->[$_], label => $_ % 7 ? 'great' : 'other' }), "\n" for 0 .. $#$list;
}
close $g;

sub stub_get
{
	my ($stub, $what) = @_;
	my $r = HTTP::Tiny->new(timeout => 30)->get("http://127.0.0.1:$stub->{port}/$what");
	die "GET /$what: $r->{status}" unless $r->{success};
	return $r->{content};
}

sub worker_cmd
{
	my ($stub, $name, @extra) = @_;
	return [ $worker, '--dsn', $dsn, '--base-url', "http://127.0.0.1:$stub->{port}/v1",
		'--model', 'stub-model', '--name', $name, '--log-file', "$tmp/worker_$name.log", @extra ];
}

sub run_once
{
	my ($stub, $name, @extra) = @_;
	my ($out, $err) = ('', '');
	my $h = start(worker_cmd($stub, $name, '--once', @extra), '>', \$out, '2>', \$err,
		IPC::Run::timeout(90));
	eval { $h->finish };
	return $h->result(0);
}

# how often each input of a list reached the stub by way of via: "count:inputs" sorted
sub sent
{
	my ($log, $list, $via) = @_;
	my %n;
	$n{ $_->{input} }++ for grep { $_->{via} eq $via } grep { defined $_->{input} } @$log;
	my %hist;
	$hist{ $n{$_} // 0 }++ for @$list;
	return join(',', map { "$_:$hist{$_}" } sort keys %hist);
}

# 1. 2,000 rows through batches, a worker killed with batches out ---------------
my $t0 = time;
sql("INSERT INTO inbox (id, body) SELECT g, 'scaled review ' || g || ' of the batch run' FROM generate_series(1, $n) g");
is(sql(q{SELECT count(*) || ' ' || count(DISTINCT source_key) FROM triage.escalations WHERE policy = 'scale' AND status = 'pending'}),
	"$n $n", "$n rows of the attached table queued, one escalation each");

# the first batch fails, the second expires (half of it answered); the
# batches complete 2 s after their creation, so that they are out when the
# worker is killed
my $stub = start_stub($stub_py, $tmp, 'scale', "$tmp/gold.jsonl", '--batch-delay', '2', '--batch-fail', '1', '--batch-expire', '1');
my @batch_opts = ('--mode', 'batch', '--policy', 'scale', '--batch-file-requests', '500',
	'--batch-poll', '0.2', '--batch-poll-max', '0.5', '--batch-interval', '0.5');
my ($out, $err) = ('', '');
my $h = start(worker_cmd($stub, 'scaler', @batch_opts), '>', \$out, '2>', \$err);

# Killed with batches submitted, but not between the endpoint's reply to
# POST /batches and batch_created() (a batch "uploaded" in the database):
# that one statement is the window in which a batch can be created twice
# (src/worker/batch.c).  The worker is stopped (SIGSTOP) to look at the
# database, and let go on if it is in that window.
my ($killed, $at_kill) = (0, '');
my $deadline = time + 30;
while (time < $deadline)
{
	$h->signal('STOP');
	sleep 0.2;	# statements sent before the stop commit
	$at_kill = sql(q{SELECT count(*) FILTER (WHERE status = 'submitted') || ' '
						 || count(*) FILTER (WHERE status = 'uploaded') FROM triage.batches});
	if ($at_kill =~ /^(\d+) 0$/ && $1 >= 2)
	{
		$h->signal('KILL');
		$killed = 1;
		last;
	}
	$h->signal('CONT');
	sleep 0.05;
}
eval { $h->finish };
ok($killed, "the worker was killed (SIGKILL) with batches out (submitted, uploaded: $at_kill)");
my $leased = sql(q{SELECT count(*) FROM triage.escalations WHERE policy = 'scale' AND status = 'claimed'});
cmp_ok($leased, '>=', 1000, "at the kill $leased rows are leased in its batches");
my $created_before = decode_json(stub_get($stub, 'stats'))->{batches_created};

is(run_once($stub, 'scaler', @batch_opts), 0, 'the worker restarted with the same --name drains the queue and exits 0');
like(slurp_file("$tmp/worker_scaler.log"), qr/batch=\d+ taken back \(submitted as batch_stub\d+/,
	'it took back the batches that were out');
note(sprintf('%d rows through batches in %.1f s', $n, time - $t0));

is(sql(q{SELECT string_agg(status || ':' || n, ',' ORDER BY status) FROM
		   (SELECT status, count(*) AS n FROM triage.escalations WHERE policy = 'scale' GROUP BY status) s}),
	"done:$n", "all $n escalations answered");
is(sql(q{SELECT count(*) FILTER (WHERE answer ? 'label' AND usage ? 'total_tokens' AND batch IS NOT NULL)
		   FROM triage.escalations WHERE policy = 'scale'}), $n, 'each with one answer, its usage and the batch it came in');
is(sql(q{SELECT count(*) || ' ' || count(DISTINCT x.escalation) FROM triage.examples x
		   JOIN triage.escalations e ON e.id = x.escalation WHERE e.policy = 'scale'}), "$n $n",
	'one training example each');
is(sql(q{SELECT count(*) FILTER (WHERE e.outcome = 'written' AND i.label = e.answer->>'label'
								  AND (i.label_by->>'escalation')::bigint = e.id AND i.label_by->>'by' = 'llm')
		   FROM inbox i JOIN triage.escalations e ON e.policy = 'scale' AND (e.source_key->>'id')::integer = i.id}),
	$n, 'one write-back each: the answer and its provenance in the row, outcome written');
is(sql(q{SELECT count(*) FILTER (WHERE label = CASE WHEN (id - 1) % 7 = 0 THEN 'other' ELSE 'great' END) FROM inbox}),
	$n, 'each row holds the large model\'s answer for it');

my $log = decode_json(stub_get($stub, 'log'));
is(sent($log, $inputs{scale}, 'batch'), "1:$n", 'the endpoint answered each row exactly once, by way of a batch');
is(sent($log, $inputs{scale}, 'chat'), "0:$n", 'and none interactively');

# the batches at the endpoint against those the database recorded
my $stats = decode_json(stub_get($stub, 'stats'));
my @db_batches = map { [ split /\|/ ] } split /\n/, sql(q{
	SELECT id, provider_batch_id, status, cardinality(escalation_ids) FROM triage.batches
	 WHERE provider_batch_id IS NOT NULL ORDER BY id});
my %db_provider;
$db_provider{ $_->[1] }++ for @db_batches;
is(scalar(keys %db_provider) . ' ' . scalar(@db_batches), "$stats->{batches_created} $stats->{batches_created}",
	"the endpoint created $stats->{batches_created} batches: as many distinct batch ids as the database recorded, none twice");
cmp_ok($stats->{batches_created}, '>=', 6, 'four files of 500, then the failed and expired rows again');
is(sql(q{SELECT count(*) FROM triage.batches WHERE status NOT IN ('completed', 'failed', 'expired')}), '0',
	'every batch in the database is over');

# each custom_id in the endpoint's batches: in a later batch only if the
# earlier one failed, or expired without answering it
my (%in_batches, %answered_in, %fate);
for my $k (1 .. $stats->{batches_created})
{
	my $b = decode_json(stub_get($stub, "v1/batches/batch_stub$k"));
	$fate{ $b->{id} } = $b->{status};
	for my $line (split /\n/, stub_get($stub, "v1/files/$b->{input_file_id}/content"))
	{
		push @{ $in_batches{ decode_json($line)->{custom_id} } }, $b->{id};
	}
	next unless $b->{output_file_id};
	$answered_in{ decode_json($_)->{custom_id} }{ $b->{id} } = 1
	  for split /\n/, stub_get($stub, "v1/files/$b->{output_file_id}/content");
}
my @twice = grep {
	my $id = $_;
	my @b = @{ $in_batches{$id} };
	grep { !($fate{$_} eq 'failed' || ($fate{$_} eq 'expired' && !$answered_in{$id}{$_})) } @b[ 0 .. $#b - 1 ]
} keys %in_batches;
is(scalar(keys %in_batches) . ' ' . scalar(@twice), "$n 0",
	"$n custom_ids sent; none in two batches unless the first failed or expired before answering it");
is(join(',', map { $fate{"batch_stub$_"} } 1 .. 2), 'failed,expired', 'the first batch failed, the second expired');

# the rows of the failed and expired batches, answered by later ones
is(sql(q{SELECT string_agg(b.status || ':' || cardinality(b.escalation_ids) || ' answered in it '
						   || (SELECT count(*) FROM triage.escalations e WHERE e.id = ANY (b.escalation_ids) AND e.batch = b.id)
						   || ', later ' || (SELECT count(*) FROM triage.escalations e WHERE e.id = ANY (b.escalation_ids)
											 AND e.status = 'done' AND e.batch > b.id), '; ' ORDER BY b.id)
		   FROM triage.batches b WHERE b.status IN ('failed', 'expired')}),
	'failed:500 answered in it 0, later 500; expired:500 answered in it 250, later 250',
	'the failed batch\'s 500 rows and the expired one\'s 250 unanswered rows were answered by later batches');
is($stats->{unknown_input}, 0, 'the stub knew every input');
$stub->{h}->signal('TERM');
$stub->{h}->finish;

# 2. budgets ----------------------------------------------------------------------
$stub = start_stub($stub_py, $tmp, 'budget', "$tmp/gold.jsonl");
my @int_opts = ('--concurrency', '4');

# the tokens of one request of these inputs (their lengths differ by a digit or two)
sql(qq{SELECT triage.enqueue('probe', '$inputs{probe}[0]')});
run_once($stub, 'probe', @int_opts, '--policy', 'probe');
my $t = sql(q{SELECT (usage->>'total_tokens')::integer FROM triage.escalations WHERE policy = 'probe'});
cmp_ok($t, '>', 10, "one request: $t tokens");

# the tokens the answers of a policy used in the current window, the most
# one used, and the counts of its rows by state
sub window
{
	my ($policy) = @_;
	return split /\|/, sql(qq{
		SELECT coalesce(sum((usage->>'total_tokens')::integer) FILTER (WHERE done_at > now() - interval '1 hour'), 0),
			   coalesce(max((usage->>'total_tokens')::integer), 0),
			   count(*) FILTER (WHERE status = 'done' AND outcome IS DISTINCT FROM 'over_budget'),
			   count(*) FILTER (WHERE status = 'pending'),
			   count(*) FILTER (WHERE outcome = 'over_budget'),
			   count(*) FILTER (WHERE status NOT IN ('done', 'pending'))
		  FROM triage.escalations WHERE policy = '$policy'});
}

# when_over wait: 60 rows, a budget of about 35 of them
my $budget = 35 * $t;
sql(qq{UPDATE triage.policies SET rules = '{"budget": {"tokens": $budget, "per": "hour"}}' WHERE name = 'bud'});
sql(qq{SELECT triage.enqueue('bud', '$_')}) for @{ $inputs{bud} };
is(run_once($stub, 'bud1', @int_opts, '--policy', 'bud'), 0, 'the worker stops at the budget and exits 0');
my ($used, $max, $done, $pending, $over, $other) = window('bud');
note("budget $budget tokens: $used used by $done answers, the largest $max; $pending pending");
cmp_ok($used, '>=', $budget, "it answered up to the budget: $used tokens used of $budget");
cmp_ok($used, '<', $budget + 4 * $max,
	"and stopped there: over it by less than one claim's worth (4 requests of at most $max tokens)");
is("$pending $over $other", (60 - $done) . ' 0 0', "the other " . (60 - $done) . " rows stay queued (when_over wait)");
cmp_ok($pending, '>=', 15, 'a good part of them');
$log = decode_json(stub_get($stub, 'log'));
is(sent($log, $inputs{bud}, 'chat'), "0:" . (60 - $done) . ",1:$done", 'the large model was asked only for the rows answered');
is(sql(q{SELECT over FROM triage.budget_status WHERE policy = 'bud'}), 't', 'budget_status: over');
is(run_once($stub, 'bud2', @int_opts, '--policy', 'bud'), 0, 'a second run in the same window...');
is(join(' ', (window('bud'))[2, 3]), "$done $pending", '... answers nothing');

# the next window, without waiting an hour
sql(q{UPDATE triage.escalations SET done_at = done_at - interval '61 minutes' WHERE policy = 'bud' AND status = 'done'});
is(sql(q{SELECT over || ' ' || tokens FROM triage.budget_status WHERE policy = 'bud'}), 'false 0',
	'an hour after those answers the policy is under its budget');
is(run_once($stub, 'bud3', @int_opts, '--policy', 'bud'), 0, 'the worker runs again');
my ($used2, undef, $done2, $pending2, $over2, $other2) = window('bud');
is("$done2 $pending2 $over2 $other2", '60 0 0 0', 'and drains the rest in the new window');
cmp_ok($used2, '<', $budget, "within the budget: $used2 tokens");
is(sent(decode_json(stub_get($stub, 'log')), $inputs{bud}, 'chat'), '1:60', 'each row asked once in all');

# when_over keep_small: 50 rows, a budget of about 15 of them
$budget = 15 * $t;
sql(qq{UPDATE triage.policies SET rules = '{"budget": {"tokens": $budget, "per": "hour", "when_over": "keep_small"}}' WHERE name = 'bks'});
sql(qq{SELECT triage.enqueue('bks', '$_', '{"label": "great"}')}) for @{ $inputs{bks} }[ 0 .. 39 ];
is(run_once($stub, 'bks1', @int_opts, '--policy', 'bks'), 0, 'keep_small: the worker exits 0');
($used, $max, $done, $pending, $over, $other) = window('bks');
note("budget $budget tokens: $used used by $done answers, the largest $max; $over over budget");
cmp_ok($used, '>=', $budget, "it answered up to the budget: $used tokens used of $budget");
cmp_ok($used, '<', $budget + 4 * $max, "and stopped there: over it by less than 4 requests of at most $max tokens");
is("$pending $over $other", '0 ' . (40 - $done) . ' 0',
	'the other ' . (40 - $done) . ' rows are closed over_budget with the small model\'s answer');
cmp_ok($over, '>=', 10, 'a good part of them');
is(sql(q{SELECT count(*) FROM triage.examples x JOIN triage.escalations e ON e.id = x.escalation WHERE e.policy = 'bks'}),
	$done, 'only the large model\'s answers became training examples');
is(sent(decode_json(stub_get($stub, 'log')), [ @{ $inputs{bks} }[ 0 .. 39 ] ], 'chat'), '0:' . (40 - $done) . ",1:$done",
	'the large model was asked only for the rows it answered');
sql(q{UPDATE triage.escalations SET done_at = done_at - interval '61 minutes' WHERE policy = 'bks' AND status = 'done'});
sql(qq{SELECT triage.enqueue('bks', '$_', '{"label": "great"}')}) for @{ $inputs{bks} }[ 40 .. 49 ];
is(run_once($stub, 'bks2', @int_opts, '--policy', 'bks'), 0, 'in the next window the worker runs again');
is(sql(q{SELECT count(*) FILTER (WHERE status = 'done' AND outcome IS DISTINCT FROM 'over_budget' AND usage IS NOT NULL)
		   FROM triage.escalations WHERE policy = 'bks' AND id > (SELECT max(id) - 10 FROM triage.escalations WHERE policy = 'bks')}),
	'10', 'and the large model answers the 10 new rows');

is(decode_json(stub_get($stub, 'stats'))->{unknown_input}, 0, 'the stub knew every input');
$stub->{h}->signal('TERM');
$stub->{h}->finish;
$node->stop;
done_testing();
