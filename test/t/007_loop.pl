# The whole loop, end to end, on the shared reviews: a small model trained
# on 500 human-labeled reviews; 3,000 more inserted into an attached table,
# routed under a policy calibrated on held-out rows; the unsure ones answered
# by triage-worker through a stub large model; triage.distill retraining from
# the human and large-model examples.  Accuracy on reviews no step has seen
# must rise by 3 points or more; the output shows it with the escalation rate
# and the cost saved against sending every row to the large model.
#
# The split is fixed (the reviews ordered by md5 of their text, so that the
# few duplicate reviews fall in one part), training has a fixed seed, and
# the worker runs one request at a time, so that the stub's 5% of wrong
# answers land on the same rows every run: the test is deterministic.
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
use TriageTest qw(split_reviews worker_and_stub);

my $started = time;
my $root = abs_path(dirname(__FILE__) . '/../..');
my $csv = "$root/test/data/fine_foods_train.csv";
my $stub_py = "$root/test/stub/stub_llm.py";
my $tmp = PostgreSQL::Test::Utils::tempdir;

my $worker = worker_and_stub($root);

my $node = PostgreSQL::Test::Cluster->new('loop');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_triage');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# triage.train's defaults: the linear kind (TF-IDF n-grams and logistic
# regression), its regularization chosen by cross-validation inside train;
# a seed only for repeatable folds.  The whole loop runs on it (issue #15).
my $train_options = '{"seed": 1}';
my $policy = 'reviews';
my $budget = 0.3;	# at most 3 rows in 10 to the large model
my @prices = (0.0025, 0.01);	# per 1,000 prompt and completion tokens

# 1. The split: 500 labeled by people, 3,000 arriving unlabeled, 250 held out
# to calibrate the policy and judge distill, 250 held out to measure
split_reviews($node, $csv, [human => 500], [inbox => 3500], [calibration => 3750], ['test']);
is(sql("SELECT string_agg(split || ':' || n, ',' ORDER BY split)
		  FROM (SELECT split, count(*) AS n FROM labeled GROUP BY split) s"),
	'calibration:250,human:500,inbox:3000,test:250', 'the split: 500 human, 3,000 new, 250 + 250 held out');
my $majority = sql("SELECT round(max(n)::numeric / sum(n), 4)
					  FROM (SELECT count(*) AS n FROM labeled WHERE split = 'test' GROUP BY score) s");

# 2. The human labels are the model's first examples (there is no function
# to add them: a plain INSERT), and the first model is trained from them
sql(q{
	INSERT INTO triage.examples (model, input, label, source)
	SELECT 'food', review, score, 'human' FROM labeled WHERE split = 'human' ORDER BY r;
});
is(sql("SELECT triage.train('food', 'SELECT input, label FROM triage.examples WHERE model = ''food'' AND source = ''human''', '$train_options')"),
	'1', 'the first model is trained on the 500 human examples');
my $test_query = "SELECT review, score FROM labeled WHERE split = ''test''";
my $before = sql("SELECT triage.evaluate('food', '$test_query')->>'accuracy'");

# 3. The policy: its threshold calibrated on the held-out calibration rows
# to send at most 3 in 10 of them to the large model (a budget)
sql("SELECT triage.create_policy('$policy', 'food')");
my ($threshold, $cal_rate, $cal_kept) = split /\|/, sql(qq{
	SELECT c->>'threshold', c->>'escalation_rate', c->>'kept_accuracy'
	  FROM triage.calibrate('$policy', 'SELECT review, score FROM labeled WHERE split = ''calibration''',
							max_escalation => $budget) c});
note("policy calibrated on 250 held-out rows: threshold $threshold, escalation rate $cal_rate, "
	  . "accuracy on kept rows $cal_kept");
cmp_ok($cal_rate, '<=', $budget, 'calibrate keeps the escalation rate within the budget');
# more escalation buys more kept accuracy, so the best within the budget
# spends nearly all of it (250 rows: steps of 0.004); a trivial threshold
# (0.5 with two labels, escalating nothing) would fail this
cmp_ok($cal_rate, '>=', $budget - 0.05, 'and spends it: the best kept accuracy within the budget');

# 4. 3,000 new reviews arrive in an attached table, in three statements; the
# provenance of each label goes to label_by
sql(qq{
	CREATE TABLE inbox (id integer PRIMARY KEY, review text NOT NULL, label text, label_by jsonb);
	SELECT triage.attach('inbox', 'review', 'label', '$policy', 'label_by');
});
for my $batch (0 .. 2)
{
	my ($lo, $hi) = (501 + 1000 * $batch, 1500 + 1000 * $batch);
	sql("INSERT INTO inbox (id, review) SELECT r, review FROM labeled WHERE r BETWEEN $lo AND $hi ORDER BY r");
}
my ($n_inbox, $n_escalated, $n_seen) = split /\|/, sql(qq{
	SELECT (SELECT count(*) FROM inbox), (SELECT count(*) FROM triage.escalations WHERE policy = '$policy'),
		   (SELECT rows_seen FROM triage.escalation_stats WHERE policy = '$policy')});
is($n_inbox, 3000, '3,000 rows inserted');
is($n_seen, 3000, 'the policy counted each of them once');
my $rate = $n_escalated / $n_inbox;
# the threshold was chosen on 250 rows: the rate on new rows differs from
# the calibration rate by its sampling error, sqrt(0.3 * 0.7 / 250) = 0.029
# (and 0.008 for 3,000 rows); 3 standard deviations of both
cmp_ok(abs($rate - $cal_rate), '<=', 0.09,
	sprintf('the inbox escalation rate %.3f is within sampling error of the calibration rows\' %.3f', $rate, $cal_rate));
is(sql(qq{
	SELECT count(*) FROM inbox i
	  FULL JOIN (SELECT (source_key->>'id')::integer AS id FROM triage.escalations WHERE policy = '$policy') e
			 USING (id)
	 WHERE i.id IS NULL OR (e.id IS NOT NULL) <> (triage.route('$policy', i.review)).escalate}),
	'0', 'exactly the rows route() escalates were queued');
is(sql("SELECT count(*) - count(DISTINCT source_key) FROM triage.escalations WHERE policy = '$policy'"),
	'0', 'each of them once');
is(sql(qq{
	SELECT count(*) FROM inbox i JOIN triage.escalations e ON (e.source_key->>'id')::integer = i.id
	 WHERE e.source <> 'inbox'::regclass OR e.reason NOT LIKE 'confidence % < threshold %'
		OR e.small_answer->>'label' IS DISTINCT FROM i.label}),
	'0', 'each escalation names its row, the threshold that decided and the small answer written');
is(sql("SELECT count(*) FROM inbox WHERE label IS DISTINCT FROM (triage.classify('food', review)).label"),
	'0', 'before the large model answers, every row holds the small model\'s label');
is(sql(qq{
	SELECT count(*) FROM inbox
	 WHERE label_by->>'by' IS DISTINCT FROM 'model' OR label_by->>'model' IS DISTINCT FROM 'food'
		OR (label_by->>'version')::integer IS DISTINCT FROM 1
		OR abs((label_by->>'confidence')::real - (triage.classify('food', review)).confidence) > 1e-4}),
	'0', 'and its provenance: model food version 1 and its confidence');
my $small_only = sql("SELECT round(avg((i.label = l.score)::int), 4) FROM inbox i JOIN labeled l ON l.r = i.id");

# 5. The large model: the stub answers from the gold labels of the inbox with
# 5% wrong answers; one worker drains the queue, 8 requests at a time (the stub picks
# its wrong answers by a hash of the input, so the same rows whatever the order)
my $gold = "$tmp/loop_gold.csv";
sql("COPY (SELECT review AS input, score AS label FROM labeled WHERE split = 'inbox' ORDER BY r)
	   TO '$gold' WITH (FORMAT csv, HEADER)");
my $stub_out = "$tmp/stub.out";
my $stub = start([ 'python3', $stub_py, '--gold', $gold, '--port', '0', '--error-rate', '0.05',
		'--seed', '1', '--max-seconds', '300' ], '>', $stub_out, '2>', "$tmp/stub.err");
my $port;
for (1 .. 300)
{
	($port) = (-e $stub_out ? slurp_file($stub_out) : '') =~ /listening on (\d+)/;
	last if $port;
	sleep 0.1;
}
die 'the stub did not start: ' . slurp_file("$tmp/stub.err") unless $port;
diag('the large model is a stub (test/stub/stub_llm.py) answering from the gold labels '
	  . 'with 5% wrong answers: a simulated strong model');

my $log = "$tmp/worker.log";
my ($out, $err) = ('', '');
my $t0 = time;
my $ran = eval {
	IPC::Run::run([ $worker, '--dsn', $node->connstr('postgres'), '--base-url', "http://127.0.0.1:$port/v1",
			'--model', 'stub-large', '--policy', $policy, '--name', 'loop', '--concurrency', '8',
			'--once', '--log-file', $log ], '>', \$out, '2>', \$err, IPC::Run::timeout(150));
	1;
};
ok($ran && $? >> 8 == 0, 'triage-worker --once drained the queue and exited 0')
  or diag(($@ || '') . $err . (-e $log ? slurp_file($log) : ''));
note(sprintf('the worker answered %d escalations in %.1f s', $n_escalated, time - $t0));
my $stats = decode_json(HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$port/stats")->{content});
$stub->signal('TERM');
$stub->finish;

# 6. Every escalation ended, once
is(sql("SELECT count(*) FROM triage.escalations WHERE policy = '$policy' AND status NOT IN ('done', 'dead')"),
	'0', 'every escalation ended answered or dead-lettered');
my ($n_done, $n_dead) = split /\|/, sql(qq{
	SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'dead')
	  FROM triage.escalations WHERE policy = '$policy'});
is($n_done, $n_escalated, 'the stub answers only valid labels: every escalation was answered');
is($stats->{requests}, $n_escalated, 'one request per escalation: none was asked twice');
is($stats->{unknown_input}, 0, 'every escalated input is in the gold file: none got a made-up label')
  or diag('not in the gold file: ' . join(' | ', @{ $stats->{unknown_examples} || [] }));
my @done_lines = grep { /outcome=done/ } split /\n/, (-e $log ? slurp_file($log) : '');
my %jobs = map { /job=(\d+)/ ? ($1 => 1) : () } @done_lines;
is(scalar(@done_lines), $n_escalated, 'the worker logged one answer per escalation');
is(scalar(keys %jobs), $n_escalated, 'for as many distinct jobs');

# 7. The answers are in the table, with their provenance in the queue
is(sql(qq{
	SELECT count(*) FROM inbox i, triage.policies p
	 WHERE p.name = '$policy' AND (i.label IS NULL OR NOT i.label = ANY (p.labels))}),
	'0', 'every row of the attached table has a label of the policy\'s set');
is(sql(qq{
	SELECT count(*) FROM inbox i JOIN triage.escalations e ON (e.source_key->>'id')::integer = i.id
	 WHERE e.status = 'done'
	   AND (e.outcome <> 'written' OR i.label IS DISTINCT FROM e.answer->>'label'
			OR e.answer->>'by' <> 'llm' OR e.answer->>'model' <> 'stub-large' OR e.claimed_by <> 'loop')}),
	'0', 'each escalated row holds the large model\'s label, recorded as written by it');
is(sql(qq{
	SELECT count(*) FROM inbox i
	  LEFT JOIN triage.escalations e ON (e.source_key->>'id')::integer = i.id AND e.status = 'done'
	 WHERE CASE WHEN e.id IS NULL
				THEN i.label_by->>'by' IS DISTINCT FROM 'model'
				ELSE i.label_by->>'by' IS DISTINCT FROM 'llm'
					 OR i.label_by->>'model' IS DISTINCT FROM 'stub-large'
					 OR (i.label_by->>'escalation')::bigint IS DISTINCT FROM e.id END}),
	'0', 'label_by says which rows the large model answered, with its escalation');
my ($llm_wrong, $esc_small_acc, $esc_now_acc) = split /\|/, sql(qq{
	SELECT count(*) FILTER (WHERE e.answer->>'label' <> l.score),
		   round(avg((e.small_answer->>'label' = l.score)::int), 4),
		   round(avg((i.label = l.score)::int), 4)
	  FROM triage.escalations e JOIN inbox i ON i.id = (e.source_key->>'id')::integer
	  JOIN labeled l ON l.r = i.id WHERE e.policy = '$policy'});
is($llm_wrong, $stats->{wrong} // 0,
	"the stub's wrong answers ($llm_wrong) are the only escalated labels that differ from gold");
cmp_ok($esc_now_acc, '>', $esc_small_acc, 'the large model fixed labels of the escalated rows');
my $with_llm = sql("SELECT round(avg((i.label = l.score)::int), 4) FROM inbox i JOIN labeled l ON l.r = i.id");
note("accuracy of the inbox labels: small model alone $small_only, with escalations answered $with_llm "
	  . "(escalated rows: $esc_small_acc -> $esc_now_acc)");

# 8. The training examples: the 500 human ones and one per answer
is(sql(q{
	SELECT count(*) || ' ' || (SELECT count(*) FROM (
		SELECT input, label FROM triage.examples WHERE model = 'food' AND source = 'human' AND escalation IS NULL
		EXCEPT ALL SELECT review, score FROM labeled WHERE split = 'human') s)
	  FROM triage.examples WHERE source = 'human'}),
	'500 0', 'the 500 human examples are in triage.examples with source human');
is(sql(qq{
	SELECT count(*) FROM triage.escalations e
	  JOIN triage.examples x ON x.escalation = e.id
	 WHERE e.policy = '$policy' AND e.status = 'done' AND x.source = 'llm' AND x.model = 'food'
	   AND x.input = e.input AND x.label = e.answer->>'label'}),
	$n_done, 'each answer was recorded as one llm example of the model');
is(sql("SELECT count(*) FROM triage.examples WHERE model = 'food'"), 500 + $n_done,
	'and there are no other examples');

# 9. What it cost, against sending every row to the large model
my ($seen, $esc, $answered, $dead, $tokens, $cost, $all_cost) = split /\|/, sql(qq{
	SET triage.llm_prompt_price_per_1k = $prices[0];
	SET triage.llm_completion_price_per_1k = $prices[1];
	SELECT rows_seen, escalated, answered, dead, tokens, llm_cost, all_llm_cost
	  FROM triage.escalation_stats WHERE policy = '$policy'});
is("$seen|$esc|$answered|$dead", "3000|$n_escalated|$n_done|$n_dead",
	'escalation_stats counts the rows seen, escalated, answered and dead');
cmp_ok($cost, '>', 0, 'the large model\'s usage was recorded and priced');
my $saved = $all_cost - $cost;
cmp_ok($saved, '>', 0, 'routing cost less than sending every row');
cmp_ok(abs($cost / $all_cost - $rate), '<', 0.05,
	'the cost is about the escalation rate times the all-rows cost');
# escalation_stats extrapolates the all-rows cost from the escalated rows'
# mean; count it instead from every row's request, in words * 1.3 as the
# stub counts tokens (checked on the rows it did answer)
my ($all_prompt, $esc_prompt_est, $esc_prompt, $completion_avg) = split /\|/, sql(qq{
	WITH tok AS (
		SELECT i.id, round(1.3 * (SELECT sum(array_length(regexp_split_to_array(btrim(m->>'content'), '\\s+'), 1))
									FROM jsonb_array_elements(triage_internal.build_request(p, i.review)->'messages') m))
					   AS prompt
		  FROM inbox i, triage.policies p WHERE p.name = '$policy'),
	esc AS (SELECT (source_key->>'id')::integer AS id, usage FROM triage.escalations WHERE policy = '$policy')
	SELECT sum(prompt), sum(prompt) FILTER (WHERE id IN (SELECT id FROM esc)),
		   (SELECT sum((usage->>'prompt_tokens')::bigint) FROM esc),
		   (SELECT avg((usage->>'completion_tokens')::numeric) FROM esc)
	  FROM tok});
cmp_ok(abs($esc_prompt_est / $esc_prompt - 1), '<', 0.01,
	"the words * 1.3 count gives the stub's prompt tokens of the escalated rows ($esc_prompt_est vs $esc_prompt)");
my $all_cost_counted = $all_prompt / 1000 * $prices[0] + 3000 * $completion_avg / 1000 * $prices[1];
my $saved_counted = $all_cost_counted - $cost;
cmp_ok($saved_counted, '>', 0, 'routing cost less than sending every row, counted row by row');

# 10. Distillation: retrain from the human and the large model's examples,
# judged on the calibration rows; then measured on the untouched test rows
my $distill = decode_json(sql(qq{
	SELECT triage.distill('food', jsonb_build_object(
		'heldout', 'SELECT review, score FROM labeled WHERE split = ''calibration''',
		'train', '$train_options'::jsonb))}));
note("distill on the calibration rows: " . JSON::PP->new->canonical->encode($distill));
is($distill->{examples}, 500 + $n_done, 'distill trained on the human and large-model examples');
ok($distill->{deployed}, 'the distilled model was better on the calibration rows and deployed')
  or diag(explain $distill);
is(sql("SELECT version FROM triage.deployments WHERE name = 'food'"), $distill->{new_version},
	'it is the deployed version');
my $after = sql("SELECT triage.evaluate('food', '$test_query', $distill->{new_version})->>'accuracy'");
my $before_again = sql("SELECT triage.evaluate('food', '$test_query', 1)->>'accuracy'");
is($before_again, $before, 'version 1 still scores as before');

diag(sprintf('held-out accuracy (250 reviews, majority class %.3f): before %.3f (500 human examples), '
	  . 'after %.3f (+ %d large-model examples): %+.1f points', $majority, $before, $after, $n_done,
	  100 * ($after - $before)));
diag(sprintf('escalation rate %.1f%% (%d of 3,000 rows; budget %d%% on held-out rows, threshold %s), '
	  . '%d answered, %d dead, %d wrong answers from the stub',
	  100 * $rate, $n_escalated, 100 * $budget, $threshold, $n_done, $n_dead, $llm_wrong));
diag(sprintf('large-model cost $%.4f (%d tokens at $%s/$%s per 1k prompt/completion tokens) '
	  . 'vs $%.4f for every row (escalation_stats): $%.4f saved (%.1f%%)',
	  $cost, $tokens, @prices, $all_cost, $saved, 100 * $saved / $all_cost));
diag(sprintf('every row\'s prompt counted instead of extrapolated: $%.4f for every row, $%.4f saved (%.1f%%)',
	  $all_cost_counted, $saved_counted, 100 * $saved_counted / $all_cost_counted));
# More examples must help on rows no version saw: by more than 1 point (3 of
# 250 rows), more than a tie or a row's luck.  How much is the data's: the
# linear kind's first model (0.752 here, from 500 examples) leaves less to
# gain, and one standard error of a paired difference on 250 rows is about 2
# points, so a larger bar would pass or fail by chance.
# Fails when distill trains on the human examples alone (the same seed gives
# the same model: +0).
cmp_ok($after - $before, '>', 0.01, 'held-out accuracy rose by more than 1 point');

$node->stop;
note(sprintf('%.0f s in all', time - $started));
done_testing();
