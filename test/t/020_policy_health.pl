# The promise checked in production (#16): a policy calibrated to keep
# accuracy 0.85 on held-out reviews audits a share of its confident rows;
# triage-worker has the stub large model answer them (the stub answers the
# gold label, so agreement with it is the small model's kept accuracy), and
# complete() counts the agreements in triage.policy_audits.
#
#   1. A good model (linear, trained on 1,500 reviews, calibrated on 800
#      others): policy_health says holding or uncertain, with the counts
#      the queue shows; the kept share does not drift.
#   2. The model is swapped for a bad one (fastText trained on the same
#      reviews with their labels flipped) under the same policy, with
#      rules->>'on_broken' = 'tighten': the kept share drifts, the verdict
#      turns broken at the audit the Wilson interval says, a WARNING is in
#      the server log, a NOTIFY triage_policy_health arrives per transition,
#      and the threshold is raised: more of the same rows are escalated.
#
# Deterministic: a fixed split (reviews ordered by md5), seeded training, a
# worker answering one request at a time in queue order.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run qw(start);
use POSIX qw(ceil);
use Time::HiRes qw(sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TriageTest qw(split_reviews start_stub worker_and_stub);

my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $worker = worker_and_stub($root);

my $node = PostgreSQL::Test::Cluster->new('health');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_triage');
sub sql { return $node->safe_psql('postgres', $_[0]); }

my $policy = 'reviews';
my $target = 0.85;
my $min_audits = 20;	# the default of rules->>'min_audits'

split_reviews($node, "$root/test/data/fine_foods_train.csv",
	[train => 1500], [calibration => 2300], [inbox1 => 3150], ['inbox2']);

# The stub answers every inbox review with its gold label
my $gold = "$tmp/gold.csv";
sql("COPY (SELECT review AS input, score AS label FROM labeled WHERE split LIKE 'inbox%' ORDER BY r)
	   TO '$gold' WITH (FORMAT csv, HEADER)");
my $stub_run = start_stub("$root/test/stub/stub_llm.py", $tmp, 'audits', $gold, '--max-seconds', '600');
my ($stub, $port) = ($stub_run->{h}, $stub_run->{port});

sub drain
{
	my ($name) = @_;
	my ($out, $err) = ('', '');
	my $ok = eval {
		IPC::Run::run([ $worker, '--dsn', $node->connstr('postgres'), '--base-url', "http://127.0.0.1:$port/v1",
				'--model', 'stub-large', '--policy', $policy, '--name', $name, '--concurrency', '1',
				'--once', '--log-file', "$tmp/$name.log" ], '>', \$out, '2>', \$err, IPC::Run::timeout(300));
		1;
	};
	ok($ok && $? >> 8 == 0, "triage-worker --once drained the queue ($name)") or diag(($@ || '') . $err);
	is(sql("SELECT count(*) FROM triage.escalations WHERE status NOT IN ('done', 'dead')"), '0',
		'every escalation was answered');
}

# The audited rows answered, counted as complete() must count them: those
# whose small confidence reaches the threshold in force
sub audits_expected
{
	return sql(qq{
		SELECT count(*) || '|' || count(*) FILTER (WHERE e.small_answer->>'label' = e.answer->>'label')
		  FROM triage.escalations e JOIN triage.policies p ON p.name = e.policy
		 WHERE e.policy = '$policy' AND e.reason LIKE 'audit sample%' AND e.status = 'done'
		   AND (e.small_answer->>'confidence')::float8 >= (p.thresholds->>'default')::float8});
}

# 1. The good model, calibrated on held-out reviews --------------------------

sql("SELECT triage.train('food', 'SELECT review, score FROM labeled WHERE split = ''train''', '{\"seed\": 1}')");
sql("SELECT triage.create_policy('$policy', 'food', audit_rate => 0.2, rules => '{\"on_broken\": \"tighten\"}')");
my ($threshold, $cal_kept) = split /\|/, sql(qq{
	SELECT c->>'threshold', c->>'kept_accuracy' FROM triage.calibrate('$policy',
		'SELECT review, score FROM labeled WHERE split = ''calibration''', target_accuracy => $target) c});
note("calibrated: threshold $threshold, kept accuracy $cal_kept on the 800 calibration reviews");
is(sql("SELECT verdict || ' ' || audited FROM triage.policy_health WHERE policy = '$policy'"), 'uncertain 0',
	'before any audit the promise is uncertain, with 0 audited rows');

sql(q{
	CREATE TABLE inbox (id integer PRIMARY KEY, review text NOT NULL, label text);
	SELECT triage.attach('inbox', 'review', 'label', 'reviews');
	INSERT INTO inbox SELECT r, review FROM labeled WHERE split = 'inbox1' ORDER BY r;
});
my ($routed, $kept_share, $cal_share, $drift, $drift_z) = split /\|/,
  sql("SELECT rows_routed, kept_share, calibrated_kept_share, drift, drift_z FROM triage.policy_health WHERE policy = '$policy'");
note("good model: kept share $kept_share of $routed rows, calibration's $cal_share (z = $drift_z)");
is($routed, 850, 'policy_health counts the 850 rows routed since calibration');
is($drift, 'f', 'the good model keeps the share calibration said (no drift)');

drain('good');
my ($audited, $agreed, $verdict, $lower, $upper) = split /\|/,
  sql("SELECT audited, agreed, verdict, kept_accuracy_lower, kept_accuracy_upper FROM triage.policy_health WHERE policy = '$policy'");
note("good model: $agreed of $audited audited rows agreed ($lower to $upper): $verdict");
is("$audited|$agreed", audits_expected(),
	'the audit counts are the audited rows answered and the agreements among them');
cmp_ok($audited, '>=', 50, "enough audits to judge ($audited)");
like($verdict, qr/^(holding|uncertain)$/, "the good model's promise is not broken ($verdict)");
is(sql('SELECT count(*) FROM triage.policy_health_events'), '0', 'no broken event');
unlike(slurp_file($node->logfile), qr/kept-accuracy promise/, 'and no WARNING in the server log');

# 2. A bad model under the same policy ----------------------------------------

# trained on the same reviews with the labels flipped: as confident, mostly wrong
my $bad = sql(q{SELECT triage.train('food', 'SELECT review, CASE score WHEN ''great'' THEN ''other'' ELSE ''great'' END
											 FROM labeled WHERE split = ''train''',
									 '{"kind": "fasttext", "dim": 5, "epoch": 10, "lr": 0.5}')});
sql("SELECT triage.deploy('food', $bad)");
# its agreement with gold on the calibration rows it keeps at the threshold
my ($p_bad, $n_bad) = split /\|/, sql(qq{
	SELECT round(avg(((c).label = score)::int), 4), count(*)
	  FROM (SELECT score, triage.classify('food', review) AS c FROM labeled WHERE split = 'calibration') s
	 WHERE (c).confidence >= $threshold});
# The Wilson interval at confidence 0.9 (z = 1.645, its (1 + 0.9) / 2
# quantile) leaves out the target t when (t - p)^2 > z^2 t (1 - t) / n, so
# at the true agreement p it turns broken after n* = z^2 t (1 - t) / (t - p)^2
# audits; the verdict waits for min_audits (20) before any.  With p = 0.18,
# n* is 1: broken at the 20th audit, unless 15 or more of the first 20
# agreed (p-hat >= 0.72; with p = 0.18 a chance below 1e-8).
my $z = 1.6449;
my $n_star = ceil($z**2 * $target * (1 - $target) / ($target - $p_bad)**2);
my $detect = $n_star > $min_audits ? $n_star : $min_audits;
note("bad model: agreement $p_bad on the $n_bad calibration rows it keeps; n* = $n_star, so broken at audit $detect");

# the same rows, routed before the promise breaks (the bad model deployed)
my $rate_sql = "SELECT round(avg(((triage.route('$policy', review)).escalate)::int), 4) FROM labeled WHERE split = 'calibration'";
my $rate_before = sql($rate_sql);
my $threshold_before = sql("SELECT thresholds->>'default' FROM triage.policies WHERE name = '$policy'");

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN triage_policy_health');

sql("INSERT INTO inbox SELECT r, review FROM labeled WHERE split = 'inbox2' ORDER BY r");
($routed, $kept_share, $cal_share, $drift, $drift_z) = split /\|/,
  sql("SELECT rows_routed, kept_share, calibrated_kept_share, drift, drift_z FROM triage.policy_health WHERE policy = '$policy'");
note("bad model: kept share $kept_share of $routed rows, calibration's $cal_share (z = $drift_z)");
is($drift, 't', 'the bad model keeps another share than calibration said (drift)');
drain('bad');

my @events = map { [ split /\|/ ] } split /\n/, sql(qq{
	SELECT id, audited, agreed, kept_accuracy_upper, action, thresholds->>'default', new_thresholds->>'default'
	  FROM triage.policy_health_events WHERE policy = '$policy' ORDER BY id});
note('events: ' . join('; ', map { join(' ', @$_) } @events));
ok(@events >= 1, 'the promise broke: an event was recorded');
is($events[0][1], $detect, "it broke at audit $detect, as the Wilson interval says for agreement $p_bad")
  if @events;
cmp_ok($events[0][3], '<', $target, "with the interval's upper end below the target") if @events;
is($events[0][5], $threshold_before, 'at the calibrated threshold') if @events;
is($events[0][4], 'tightened', 'and on_broken tighten raised the threshold') if @events;
is(join(',', map { $_->[5] } @events[ 1 .. $#events ]), join(',', map { $_->[6] } @events[ 0 .. $#events - 1 ]),
	'each later event broke at the thresholds the one before set: one event per transition');

my $heard = '';
for (1 .. 50)
{
	$heard .= $listener->query_safe('SELECT 1');
	last if (() = $heard =~ /Asynchronous notification/g) >= @events;
	sleep 0.1;
}
$listener->quit;
my @payloads = $heard =~ /Asynchronous notification "triage_policy_health" with payload "([^"]*)"/g;
is(join(',', @payloads), join(',', map { $_->[0] } @events),
	'NOTIFY triage_policy_health once per event, with its id');

my @warnings = slurp_file($node->logfile) =~ /WARNING:  pg_triage: the kept-accuracy promise of policy "reviews" is broken/g;
is(scalar(@warnings), scalar(@events), 'one WARNING in the server log per event');

my ($verdict_now, $threshold_now, $tightened) = split /\|/,
  sql("SELECT verdict, threshold, tightened_at IS NOT NULL FROM triage.policy_health WHERE policy = '$policy'");
cmp_ok($threshold_now, '>', $threshold_before, "the threshold in force was raised ($threshold_before -> $threshold_now)");
is($tightened, 't', 'policy_health says it was tightened');
my $rate_after = sql($rate_sql);
cmp_ok($rate_after, '>', $rate_before,
	"the same rows are escalated more: $rate_before before the promise broke, $rate_after after");
note("after: verdict $verdict_now at threshold $threshold_now");

# recalibrating starts a new promise: new counts, no longer tightened
sql("SELECT triage.calibrate('$policy', 'SELECT review, score FROM labeled WHERE split = ''calibration''', target_accuracy => $target)");
is(sql("SELECT audited || ' ' || (tightened_at IS NULL) FROM triage.policy_health WHERE policy = '$policy'"), '0 true',
	'recalibrated: the counts start again and it is no longer tightened');

# 3. Who sees it, and the rules -------------------------------------------------

sql(q{
	CREATE ROLE h_user LOGIN IN ROLE triage_user;
	CREATE ROLE h_admin LOGIN IN ROLE triage_admin;
});
is($node->safe_psql('postgres', 'SELECT count(*) FROM triage.policy_health', extra_params => [ '-U', 'h_user' ]),
	'0', 'a triage_user who does not own the policy sees no row');
is($node->safe_psql('postgres', 'SELECT count(*) FROM triage.policy_health', extra_params => [ '-U', 'h_admin' ]),
	'1', 'a triage_admin sees it');
sql("UPDATE triage.policies SET owner = 'h_user' WHERE name = '$policy'");
is($node->safe_psql('postgres', 'SELECT count(*) FROM triage.policy_health', extra_params => [ '-U', 'h_user' ]),
	'1', 'and so does its owner');
for my $bad_rule ('{"on_broken": "explode"}', '{"on_broken": true}', '{"min_audits": 0}', '{"min_audits": 1.5}')
{
	my ($ret, $out, $err) = $node->psql('postgres', "UPDATE triage.policies SET rules = '$bad_rule' WHERE name = '$policy'");
	like($err, qr/rule (on_broken|min_audits) of policy/, "rules $bad_rule is refused");
}

$stub->signal('TERM');
$stub->finish;
$node->stop;
done_testing();
