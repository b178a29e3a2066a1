# In-database training against the fasttext tool, on the shared reviews with
# a held-out 20% split: accuracy, quantized size and accuracy, calibration
# after temperature scaling, and the export round trip (models trained by
# pg_triage load and predict identically in the fasttext tool).
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = abs_path(dirname(__FILE__) . '/../..');
my $csv = "$root/test/data/fine_foods_train.csv";
my $tmp = PostgreSQL::Test::Utils::tempdir;

my $node = PostgreSQL::Test::Cluster->new('train');
$node->init;
$node->start;

# every 5th review held out; fastText gets the same texts as files
my $raw = q{WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02')};
$node->safe_psql('postgres', qq{
	CREATE EXTENSION pg_triage;
	CREATE TABLE food (product text, review text, score text);
	COPY food FROM '$csv' WITH (FORMAT csv, HEADER);
	CREATE TABLE split AS SELECT row_number() OVER () AS n, review, score FROM food;
	CREATE VIEW train AS SELECT review, score FROM split WHERE n % 5 <> 0;
	CREATE VIEW test AS SELECT review, score FROM split WHERE n % 5 = 0;
	COPY (SELECT '__label__' || score || ' ' || review FROM train) TO '$tmp/train.txt' $raw;
	COPY (SELECT '__label__' || score || ' ' || review FROM test) TO '$tmp/test.txt' $raw;
	COPY (SELECT review FROM test) TO '$tmp/test_lines.txt' $raw;
});

my $majority = $node->safe_psql('postgres',
	"SELECT max(c)::float / sum(c) FROM (SELECT count(*) AS c FROM test GROUP BY score) s");

# The hyperparameters of the data's documented baseline
my %hp = (dim => 50, epoch => 25, lr => 0.1, wordNgrams => 2, minn => 2, maxn => 4, bucket => 200000);
my $ft_opts = join ' ', map { "-$_ $hp{$_}" } sort keys %hp;
my $json = '{"kind": "fasttext", ' . join(', ', map { "\"$_\": $hp{$_}" } sort keys %hp) . '}';

sub fasttext_accuracy
{
	my ($model) = @_;
	my ($out, $err);
	IPC::Run::run([ 'fasttext', 'test', $model, "$tmp/test.txt" ], '>', \$out, '2>', \$err)
	  or die "fasttext test failed: $err";
	my ($p) = $out =~ /P\@1\s+([0-9.]+)/;
	return $p;
}

system_or_bail("fasttext supervised -input $tmp/train.txt -output $tmp/ft $ft_opts -thread 2 -verbose 0");
my $ft_acc = fasttext_accuracy("$tmp/ft.bin");

$node->safe_psql('postgres', "SELECT triage.train('food', 'SELECT review, score FROM train', '$json')");
my $pg_acc = $node->safe_psql('postgres',
	"SELECT triage.evaluate('food', 'SELECT review, score FROM test', 1)->>'accuracy'");
diag(sprintf("held-out accuracy: pg_triage %.4f, fasttext %.4f, majority class %.4f",
	$pg_acc, $ft_acc, $majority));
cmp_ok($pg_acc, '>=', $ft_acc - 0.005, 'pg_triage is within 0.5 points of fastText (or better)');
cmp_ok($pg_acc, '>=', $majority + 0.05, 'and beats the majority class by over 5 points');

# Quantized at training time (fastText's method: cutoff, retrain, PQ)
$node->safe_psql('postgres', "SELECT triage.train('food', 'SELECT review, score FROM train',
	'$json'::jsonb || '{\"quantize\": {\"cutoff\": 20000, \"retrain\": true}}')");
my ($dense_bytes, $q_bytes) = split /\|/, $node->safe_psql('postgres',
	"SELECT (SELECT octet_length(data) FROM triage.models WHERE version = 1),
			(SELECT octet_length(data) FROM triage.models WHERE version = 2)");
my $q_acc = $node->safe_psql('postgres',
	"SELECT triage.evaluate('food', 'SELECT review, score FROM test', 2)->>'accuracy'");
diag(sprintf("quantized: %d bytes (dense %d, %.1fx smaller), accuracy %.4f (dense %.4f)",
	$q_bytes, $dense_bytes, $dense_bytes / $q_bytes, $q_acc, $pg_acc));
cmp_ok($dense_bytes / $q_bytes, '>=', 10, 'the quantized model is at least 10x smaller');
cmp_ok($q_acc, '>=', $pg_acc - 0.01, 'and loses at most 1 point of accuracy');

# Temperature scaling on a held-out query: the confidence means what it says.
# Fit on one half of the held-out rows, measure on the other half.
my $cal = $node->safe_psql('postgres', q{
	SELECT triage.calibrate_temperature('food',
		'SELECT review, score FROM split WHERE n % 10 = 0', 2)});
my $ece = $node->safe_psql('postgres', q{
	SELECT triage.evaluate('food', 'SELECT review, score FROM split WHERE n % 10 = 5', 2)->>'ece'});
diag("calibration: $cal; ECE on the other held-out half: $ece");
cmp_ok($ece, '<=', 0.05, 'expected calibration error after temperature scaling is at most 0.05');

# Export: the fasttext tool loads pg_triage's models and predicts the same
# (uncalibrated: fastText has no temperature, so compare against version 1
# and an uncalibrated copy of version 2)
for my $v (1, 2)
{
	my $file = "$tmp/exported_v$v." . ($v == 1 ? 'bin' : 'ftz');
	$node->safe_psql('postgres', qq{
		COPY (SELECT encode(triage.export_fasttext('food', $v), 'base64')) TO '$file.b64'});
	open(my $in, '<', "$file.b64") or die;
	local $/;
	my $b64 = <$in>;
	close $in;
	$b64 =~ s/\\n//g;
	require MIME::Base64;
	open(my $out, '>:raw', $file) or die;
	print $out MIME::Base64::decode_base64($b64);
	close $out;

	my ($stdout, $stderr);
	IPC::Run::run([ 'fasttext', 'predict-prob', $file, "$tmp/test_lines.txt", '2' ],
		'>', \$stdout, '2>', \$stderr)
	  or BAIL_OUT("fasttext cannot load exported version $v: $stderr");
	my @expected = split /\n/, $stdout;
	$node->safe_psql('postgres',
		"SELECT triage.import_fasttext('roundtrip_v$v', triage.export_fasttext('food', $v))");
	my @actual = split /\n/, $node->safe_psql('postgres', qq{
		SELECT coalesce(string_agg(p.label || ' ' || p.probability, ' ' ORDER BY p.ord), '')
		  FROM (SELECT row_number() OVER () AS i, review FROM test) t
			   LEFT JOIN LATERAL triage.predict('roundtrip_v$v', t.review, 2)
						 WITH ORDINALITY AS p(label, probability, ord) ON true
		 GROUP BY t.i ORDER BY t.i});
	my ($mismatch, $maxdiff) = (0, 0);
	for my $i (0 .. $#expected)
	{
		my @e = split / /, $expected[$i];
		my @a = split / /, ($actual[$i] // '');
		$mismatch++ if join(' ', map { s/^__label__//r } @e[0, 2]) ne join(' ', @a[0, 2]);
		for my $j (1, 3)
		{
			next unless defined $e[$j] && defined $a[$j];
			my $d = abs($e[$j] - $a[$j]);
			$maxdiff = $d if $d > $maxdiff;
		}
	}
	is(scalar(@actual), scalar(@expected), "version $v: one prediction per held-out review");
	is($mismatch, 0, "version $v: fasttext predicts the same labels from the exported file");
	cmp_ok($maxdiff, '<=', 1e-4, "version $v: probabilities within 1e-4 (max $maxdiff)");
}

$node->stop;
done_testing();
