# Calibration on rows it has not seen: a policy calibrated to 90% kept
# accuracy on one split of the shared reviews, then routing a disjoint split,
# in two ways: calibrate on 800 held-out rows for a model of 2,400, and
# train_and_calibrate on those 3,200 rows (thresholds from out-of-fold
# answers, for a model of all 3,200).  The output prints the confidence
# curves and, at the routing split's escalation rate, the kept accuracy of
# confidence routing against the seeds' simple rule (escalate the longest
# reviews) and against escalating rows at random.
#
# The split is fixed once and not chosen to pass: the reviews ordered by md5
# of their text (as in 007_loop.pl, so the few duplicate reviews fall in one
# part); the first 2,400 train the model, the next 800 calibrate the policy,
# the last 800 are routed.  Training is single-threaded with a fixed seed,
# so the test is deterministic.
#
# What is asserted on the routing split is what each method promises, with
# a tolerance of 3 standard deviations of sampling error computed from the
# numbers of rows involved (section 5 states each computation), not the
# least value seen on other splits.  The issue's two stricter criteria
# (kept accuracy >= 89% on the routing split, and its escalation rate at
# most 5 points above the least any threshold reaches 90% with there) are
# printed as PASS or MISS but not asserted, because whether they hold on
# one split of 800 rows is mostly chance: over 50 such splits (the make
# study of commit 71a8bf8; make study now runs issue #16's protocol, README
# "Choosing thresholds") they held together on 16% for calibrate and
# 46% for train_and_calibrate (16 splits only with it, 1 only without),
# while the least escalation reaching 90% on 800 routing rows has a standard
# deviation of 10 points between splits, twice the 5 allowed.  This split is
# a hard one: 60% of its rows must be escalated to keep 90%, against 45% on
# the out-of-fold answers of the other 3,200.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP qw(decode_json);
use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TriageTest qw(split_reviews);

my $started = time;
my $root = abs_path(dirname(__FILE__) . '/../..');
my $csv = "$root/test/data/fine_foods_train.csv";

my $node = PostgreSQL::Test::Cluster->new('calibration');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_triage');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# The lead's small-model options (dim 10, 10 epochs at lr 0.5, word bigrams)
# with fastText's own default subword range (minn 3, maxn 6), which copes
# with the reviews' misspellings and word forms.  Chosen on four other md5
# orders of the reviews (salted), never on this split, by the least
# escalation reaching 90% over all 1,600 held-out rows: 0.50 on average
# against 0.56 without subwords and 0.73 for the shipped model's recipe
# (dim 50, 25 epochs at lr 0.1), whose confidences rank the rows worse here.
my $train_options = '{"kind": "fasttext", "dim": 10, "epoch": 10, "lr": 0.5, "wordNgrams": 2, "minn": 3, "maxn": 6, '
  . '"bucket": 200000, "seed": 1, "thread": 1}';
my $target = 0.90;
my $n_draws = 20;		# random choices of rows, averaged

# 1. The split
split_reviews($node, $csv, [train => 2400], [calibration => 3200], ['routing']);
is(sql("SELECT string_agg(split || ':' || n, ',' ORDER BY split)
		  FROM (SELECT split, count(*) AS n FROM labeled GROUP BY split) s"),
	'calibration:800,routing:800,train:2400', 'the split: 2,400 to train, 800 to calibrate, 800 to route');

# 2. The model and the calibrated policy.  This test measures routing by
# confidence against other rules at equal escalation (issue #6), so it uses
# the point estimate ('estimate'); the methods that state a confidence
# ('bound', the default, and 'guarantee') are measured by make study.
is(sql("SELECT triage.train('food', 'SELECT review, score FROM labeled WHERE split = ''train''', '$train_options')"),
	'1', 'the model is trained on the 2,400 training reviews');
sql("SELECT triage.create_policy('food', 'food')");
my $cal = decode_json(sql("SELECT triage.calibrate('food', 'SELECT review, score FROM labeled WHERE split = ''calibration''',
														target_accuracy => $target, method => 'estimate')"));
my $stored = decode_json(sql("SELECT json_build_object('thresholds', thresholds, 'calibration', calibration)
								FROM triage.policies WHERE name = 'food'"));
my %label_thresholds = %{ $cal->{label_thresholds} || {} };
diag(sprintf('calibrate on %d rows: threshold %s%s, escalation rate %.4f, kept accuracy %s',
	$cal->{rows}, $cal->{threshold},
	(%label_thresholds
	  ? ' (per label: ' . join(', ', map { "$_ $label_thresholds{$_}" } sort keys %label_thresholds) . ')'
	  : ''),
	$cal->{escalation_rate}, $cal->{kept_accuracy} // 'none kept'));
cmp_ok(abs($stored->{thresholds}{default} - $cal->{threshold}), '<', 1e-4,
	'calibrate stored its threshold in triage.policies');
is_deeply($stored->{thresholds}{labels} || {}, \%label_thresholds,
	'calibrate stored its per-label thresholds in triage.policies');
is_deeply($stored->{calibration}, $cal, 'calibrate stored its result in triage.policies');

# 3. Rows routed under the policy: $where picks them from labeled
sub route_rows
{
	my ($where) = @_;
	sql(qq{
		DELETE FROM routed WHERE r IN (SELECT r FROM labeled WHERE $where);
		INSERT INTO routed
		SELECT r, split, length(review), (d).confidence, (d).label IS NOT DISTINCT FROM score, (d).escalate
		  FROM (SELECT r, split, review, score, triage.route('food', review) AS d
				  FROM labeled WHERE $where) s;
		-- the curve of a single confidence threshold: every distinct confidence, and above them all
		TRUNCATE curve;
		INSERT INTO curve
		SELECT s.split, t.t, avg((s.c < t.t)::int), avg(s.ok::int) FILTER (WHERE s.c >= t.t)
		  FROM (SELECT DISTINCT split, c AS t FROM routed UNION SELECT DISTINCT split, 1.000001 FROM routed) t
		  JOIN routed s USING (split)
		 GROUP BY s.split, t.t;
	});
}
sql(q{
	CREATE TABLE routed (r bigint, split text, len integer, c real, ok boolean, escalate boolean);
	CREATE TABLE curve (split text, t real, escalation numeric, accuracy numeric);
});
route_rows("split <> 'train'");

# the kept accuracy and escalation rate of route() on a split
sub routed_split
{
	my ($split) = @_;
	my ($esc, $acc, $n_esc, $n) = split /\|/, sql(qq{
		SELECT avg(escalate::int), avg(ok::int) FILTER (WHERE NOT escalate), count(*) FILTER (WHERE escalate), count(*)
		  FROM routed WHERE split = '$split'});
	return ($esc, $acc eq '' ? undef : $acc, $n_esc, $n);
}

# the least escalation rate whose kept accuracy reaches the target
sub oracle
{
	my ($split) = @_;
	return sql("SELECT min(escalation) FROM curve WHERE split = '$split' AND (accuracy >= $target OR accuracy IS NULL)");
}

# about 15 points of a split's curve, at every 16th of the rows by confidence
sub print_curve
{
	my ($split, $marks) = @_;
	my $rows = sql(qq{
		SELECT to_char(c.t, 'FM0.0000'), to_char(c.escalation, 'FM0.000'), coalesce(to_char(c.accuracy, 'FM0.000'), '-')
		  FROM curve c
		 WHERE c.split = '$split'
		   AND (c.t IN (SELECT t FROM (SELECT c AS t, row_number() OVER (ORDER BY c) AS i, count(*) OVER () AS n
										 FROM routed WHERE split = '$split') q
						 WHERE (i - 1) % (n / 15) = 0)
				OR c.escalation IN (} . join(', ', map { $_->[0] } @$marks) . qq{))
		 ORDER BY c.t});
	diag("$split split: threshold  escalation  kept accuracy");
	for my $line (split /\n/, $rows)
	{
		my ($t, $e, $a) = split /\|/, $line;
		my @why = map { $_->[1] } grep { abs($_->[0] - $e) < 5e-4 } @$marks;
		diag(sprintf('  %s  %s  %s%s', $t, $e, $a, @why ? '   <- ' . join(', ', @why) : ''));
	}
}

# 4. The calibration split: what calibrate promised
my ($cal_esc, $cal_acc, $cal_n_esc, $cal_n) = routed_split('calibration');
my $cal_oracle = oracle('calibration');
print_curve('calibration', [[$cal_oracle, 'least escalation reaching 0.90']]);
diag(sprintf('calibration split, route(): escalation rate %.4f, kept accuracy %.4f', $cal_esc, $cal_acc // 1));
is(sprintf('%.4f', $cal_esc), sprintf('%.4f', $cal->{escalation_rate}),
	'route() escalates the share of calibration rows that calibrate reported');
cmp_ok($cal_acc // 1, '>=', $target, 'route() keeps 90% accuracy on the calibration rows');
is(sprintf('%.4f', $cal_acc // 1), sprintf('%.4f', $cal->{kept_accuracy} // 1),
	'route() keeps the accuracy on the calibration rows that calibrate reported');

# 5. The routing split: what holds on rows calibration never saw.  Each
# bound is the method's promise less Z = 3 standard deviations of the
# sampling error of the rows it is measured on (a one-sided false alarm
# about once in 740 runs of a method that keeps its promise):
#
#   escalation rate: the threshold escalates the share e_cal of the n_cal
#     rows it was chosen on, so on n routing rows of the same reviews
#     |e - e_cal| <= Z * sqrt(e_pool (1 - e_pool) (1/n_cal + 1/n)), with
#     e_pool the share over both (two binomial proportions);
#   kept accuracy: the threshold keeps the target accuracy t = 0.90 on the
#     k_cal calibration rows it keeps, so on the k routing rows it keeps
#     acc >= t - Z * sqrt(t (1 - t) (1/k_cal + 1/k)) (the same difference of
#     two proportions; the least threshold reaching t on k_cal rows is a
#     little optimistic, so this is the loosest honest bound, not a goal);
#   against random rows: escalating the same number of rows at random keeps
#     k of the n rows, whose accuracy has mean p (the split's accuracy) and
#     standard deviation sqrt(p (1 - p) / k * (n - k) / (n - 1)) (drawn
#     without replacement), so confidence must keep acc >= p + Z * that;
#   against the longest reviews: the two rules keep k rows each, the same
#     ones but for m kept only by confidence and m only by length; if
#     length ranked as well as confidence, which of those 2m rows (s of
#     them right) fall on which side would be chance, so the difference in
#     right kept rows has mean 0 and standard deviation
#     2m sqrt(q (1 - q) / (2m - 1)), q = s / 2m (a permutation test);
#     confidence must beat it by Z of those.
#
# Checked to fail when the feature breaks (#20): in builds whose confidence
# was half the model's and half a hash of the input (the old bounds, 3
# points over the longest reviews and random rows and 0.85 kept, all still
# passed), or only a function of the input's length; and with calibrate's
# threshold replaced by 0.6.  Numbers in the commit message.
my $z = 3;
sub report_routing
{
	my ($method, $n_cal, $e_cal) = @_;
	my ($esc, $acc, $n_esc, $n) = routed_split('routing');
	my $oracle = oracle('routing');
	diag("--- $method");
	print_curve('routing', [[$oracle, 'least escalation reaching 0.90']]);
	diag(sprintf('routing split, route(): escalation rate %.4f, kept accuracy %.4f', $esc, $acc // 1));
	# (the bounds below need kept rows: none kept has already failed here)
	return unless ok(defined $acc, "$method: the calibrated policy keeps some routing rows");

	# the kept accuracy when the same number of rows are escalated another way
	my $kept_accuracy_escalating = sub {
		my ($order) = @_;
		return sql(qq{
			SELECT avg(ok::int) FROM (SELECT ok, row_number() OVER (ORDER BY $order) AS i FROM routed WHERE split = 'routing') s
			 WHERE i > $n_esc});
	};
	my $lowest = $kept_accuracy_escalating->('c, r');
	my $longest = $kept_accuracy_escalating->('len DESC, r');
	# random choices: deterministic, from md5 of the draw and the row
	my $random = sql(qq{
		SELECT avg(accuracy) FROM (
			SELECT d, avg(ok::int) AS accuracy
			  FROM (SELECT d, ok, row_number() OVER (PARTITION BY d ORDER BY md5(d || ':' || r)) AS i
					  FROM routed, generate_series(1, $n_draws) d WHERE split = 'routing') s
			 WHERE i > $n_esc GROUP BY d) per_draw});
	diag(sprintf('at equal escalation on the routing split (%d of %d rows, %.1f%%), kept accuracy:', $n_esc, $n, 100 * $esc));
	diag(sprintf('  confidence, route() with the calibrated thresholds  %.4f', $acc));
	diag(sprintf('  confidence, the %d least confident rows            %.4f', $n_esc, $lowest));
	diag(sprintf('  the seeds\' rule, the %d longest reviews            %.4f', $n_esc, $longest));
	diag(sprintf('  %d rows at random (mean of %d draws)               %.4f', $n_esc, $n_draws, $random));

	# the bounds of the comment above section 5
	my $k = $n - $n_esc;
	my $k_cal = $n_cal * (1 - $e_cal);
	$k_cal = 1 if $k_cal < 1;    # none kept on calibration: the escalation check fails
	my $e_pool = ($n_cal * $e_cal + $n_esc) / ($n_cal + $n);
	my $sd_esc = sqrt($e_pool * (1 - $e_pool) * (1 / $n_cal + 1 / $n));
	cmp_ok(abs($esc - $e_cal), '<=', $z * $sd_esc,
		sprintf('%s: the routing split escalates the share calibration chose (%.4f against %.4f, within %.4f)',
			$method, $esc, $e_cal, $z * $sd_esc));
	my $acc_bound = $target - $z * sqrt($target * (1 - $target) * (1 / $k_cal + 1 / $k));
	cmp_ok($acc, '>=', $acc_bound,
		sprintf('%s: calibrated to %.2f on %d kept rows, the %d kept routing rows keep at least %.4f (%.4f)',
			$method, $target, $k_cal, $k, $acc_bound, $acc));
	my $p = sql("SELECT avg(ok::int) FROM routed WHERE split = 'routing'");
	my $random_bound = $p + $z * sqrt($p * (1 - $p) / $k * ($n - $k) / ($n - 1));
	cmp_ok($acc, '>=', $random_bound,
		sprintf('%s: confidence keeps more accuracy than escalating rows at random (%.4f; random: mean %.4f, '
			  . 'bound %.4f)', $method, $acc, $p, $random_bound));
	my ($m, $m2, $s_conf, $s_long) = split /\|/, sql(qq{
		SELECT count(*) FILTER (WHERE kc AND NOT kl), count(*) FILTER (WHERE kl AND NOT kc),
			   coalesce(sum(ok::int) FILTER (WHERE kc AND NOT kl), 0), coalesce(sum(ok::int) FILTER (WHERE kl AND NOT kc), 0)
		  FROM (SELECT ok, NOT escalate AS kc, row_number() OVER (ORDER BY len DESC, r) > $n_esc AS kl
				  FROM routed WHERE split = 'routing') s});
	is($m, $m2, "$method: the two rules keep as many rows");
	my $q = $m ? ($s_conf + $s_long) / (2 * $m) : 0;
	my $sd_diff = $m ? 2 * $m * sqrt($q * (1 - $q) / (2 * $m - 1)) : 0;
	# (more, so that a confidence that keeps exactly the shortest reviews fails)
	ok($s_conf - $s_long > 0 && $s_conf - $s_long >= $z * $sd_diff,
		sprintf('%s: confidence keeps more accuracy than escalating the longest reviews (%d more right rows '
			  . 'among the %d each keeps that the other does not; bound %.1f)', $method, $s_conf - $s_long, $m,
			$z * $sd_diff));

	# the issue's criteria, reported
	diag(sprintf('%s, issue criterion, kept accuracy >= 0.89 on the routing split: %s (%.4f)',
		$method, $acc >= 0.89 ? 'PASS' : 'MISS', $acc));
	diag(sprintf('%s, issue criterion, escalation within 5 points of the least reaching 0.90: %s '
		  . '(%.4f against %.4f, %+.1f points)',
		$method, $esc <= $oracle + 0.05 ? 'PASS' : 'MISS', $esc, $oracle, 100 * ($esc - $oracle)));
}
report_routing('held-out calibration (calibrate on 800 rows)', $cal->{rows}, $cal->{escalation_rate});

# 6. Cross-fitted: the 3,200 training and calibration rows go to
# train_and_calibrate, whose thresholds come from every row's answer by a
# model of the other three quarters (2,400 rows, as the model above), for a
# model trained on all 3,200, which it deploys.  4 folds, as studied.
my $xfit = decode_json(sql(qq{
	SELECT triage.train_and_calibrate('food', 'SELECT review, score FROM labeled WHERE split <> ''routing'' ORDER BY r',
									  '$train_options', target_accuracy => $target, folds => 4,
									  method => 'estimate')}));
diag(sprintf('train_and_calibrate on %d rows: threshold %s, out-of-fold escalation rate %.4f, kept accuracy %s',
	$xfit->{rows}, $xfit->{threshold}, $xfit->{escalation_rate}, $xfit->{kept_accuracy} // 'none kept'));
is($xfit->{rows}, 3200, 'train_and_calibrate chose thresholds on all 3,200 training and calibration rows');
is(sql("SELECT version FROM triage.deployments WHERE name = 'food'"), $xfit->{version},
	'train_and_calibrate deployed the model it trained on them');
is(sql("SELECT (metrics->'train'->>'rows')::int FROM triage.models WHERE name = 'food' AND version = $xfit->{version}"),
	'3200', 'that model was trained on all 3,200 rows');
cmp_ok(abs(sql("SELECT (thresholds->>'default')::float FROM triage.policies WHERE name = 'food'") - $xfit->{threshold}),
	'<', 1e-4, 'train_and_calibrate stored its threshold in triage.policies');
route_rows("split = 'routing'");
report_routing('cross-fitted (train_and_calibrate on 3,200 rows)', $xfit->{rows}, $xfit->{escalation_rate});

note(sprintf('took %.1f s', time - $started));
$node->stop;
done_testing();
