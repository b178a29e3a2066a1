# Exact compatibility with the fasttext tool: models it trains (every loss,
# char and word n-grams, .bin and quantized .ftz) predict the same labels,
# in the same order, with the same probabilities in pg_triage.
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

my $node = PostgreSQL::Test::Cluster->new('compat');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_triage');

# The shared reviews, written out by the server as fastText training files:
# CSV with quote and delimiter characters that never occur, so nothing is
# quoted or escaped.
my $raw = q{WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02')};
$node->safe_psql('postgres', qq{
	CREATE TABLE reviews (product text, review text, score text);
	COPY reviews FROM '$csv' WITH (FORMAT csv, HEADER);
	COPY (SELECT '__label__' || score || ' ' || review FROM reviews)
		TO '$tmp/train.txt' $raw;
	-- many labels (the review's first word), for hs trees, ties and -qout
	COPY (SELECT '__label__' || lower((regexp_split_to_array(btrim(review), '\\s+'))[1])
				 || ' ' || review FROM reviews)
		TO '$tmp/train_many.txt' $raw;
	COPY (SELECT review FROM reviews) TO '$tmp/lines.txt' $raw;
});

# Inputs beyond the reviews: empty and blank lines, non-ASCII UTF-8, a label
# token, and a 200,000-character line
srand(42);
my @words = split /\s+/, slurp_file("$tmp/lines.txt");
my $long = '';
$long .= $words[ int(rand(@words)) ] . ' ' while length($long) < 200_000;
$long = substr($long, 0, 200_000);
open(my $fh, '>>:raw', "$tmp/lines.txt") or die;
print $fh join("\n",
	'', '   ', " \t ", "caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
	"\xc3\x9cn\xc3\xafc\xc3\xb6d\xc3\xa9 \xce\x91\xce\x92\xce\x93 \xd0\xba\xd0\xb8\xd1\x80 \xf0\x9f\x98\x80",
	'__label__great this is good', '!!! ???', 'GREAT Coffee, BAD tea', $long),
  "\n";
close($fh);
my $nlines = () = slurp_file("$tmp/lines.txt") =~ /\n/g;
cmp_ok($nlines, '>=', 1000, "at least 1,000 input lines ($nlines)");

$node->safe_psql('postgres', qq{
	CREATE TABLE lines AS
		SELECT n, line
		  FROM regexp_split_to_table(pg_read_file('$tmp/lines.txt'), E'\\n')
			   WITH ORDINALITY AS t(line, n)
		 WHERE n <= $nlines;
});

# name => [training file, fasttext supervised options, quantize options]
my $small = '-dim 20 -bucket 200000 -epoch 5 -thread 1 -verbose 0';
my @models = (
	[ 'softmax_ngrams', 'train.txt', '-wordNgrams 2 -minn 2 -maxn 4' ],
	[ 'softmax_plain', 'train.txt', '' ],
	[ 'hs', 'train.txt', '-loss hs -wordNgrams 2' ],
	[ 'ova', 'train.txt', '-loss ova -minn 3 -maxn 5' ],
	[ 'ns', 'train.txt', '-loss ns -wordNgrams 3' ],
	[ 'many_hs', 'train_many.txt', '-loss hs -minn 2 -maxn 4' ],
	[ 'many_ova', 'train_many.txt', '-loss ova -wordNgrams 2' ],
	[ 'many_ns', 'train_many.txt', '-loss ns -minn 3 -maxn 3' ],
	[ 'many_softmax', 'train_many.txt', '-wordNgrams 2 -minn 2 -maxn 4' ],
	[ 'q_qnorm_cutoff_retrain', 'train.txt', '-wordNgrams 2 -minn 2 -maxn 4',
		'-qnorm -cutoff 10000 -retrain -epoch 1' ],
	[ 'q_dsub3', 'train.txt', '-wordNgrams 2', '-dsub 3' ],
	[ 'q_hs_cutoff', 'train.txt', '-loss hs -wordNgrams 2', '-cutoff 2000' ],
	[ 'q_many_qout', 'train_many.txt', '-wordNgrams 2 -minn 2 -maxn 4',
		'-qnorm -qout -cutoff 5000 -retrain -epoch 1' ],
);

my $total_lines = 0;
for my $m (@models)
{
	my ($name, $train, $opts, $qopts) = @$m;
	my $base = "$tmp/$name";

	system_or_bail("fasttext supervised -input $tmp/$train -output $base $small $opts");
	my $file = "$base.bin";
	if (defined $qopts)
	{
		system_or_bail("fasttext quantize -input $tmp/$train -output $base -thread 1 -verbose 0 $qopts");
		$file = "$base.ftz";
	}

	# the reference: fasttext predict-prob, k = 2, one output line per input line
	my ($stdout, $stderr);
	IPC::Run::run([ 'fasttext', 'predict-prob', $file, '-', '2' ],
		'<', "$tmp/lines.txt", '>', \$stdout, '2>', \$stderr)
	  or BAIL_OUT("fasttext predict-prob failed for $name: $stderr");
	my @expected = split /\n/, $stdout, -1;
	pop @expected if @expected && $expected[-1] eq '';

	$node->safe_psql('postgres',
		"SELECT triage.import_fasttext('$name', pg_read_binary_file('$file'))");
	my $got = $node->safe_psql('postgres', qq{
		SELECT l.n || E'\\t' || coalesce(string_agg(p.label || ' ' || p.probability, ' '
													ORDER BY p.ord), '')
		  FROM lines l
			   LEFT JOIN LATERAL triage.predict('$name', l.line, 2)
						 WITH ORDINALITY AS p(label, probability, ord) ON true
		 GROUP BY l.n ORDER BY l.n});
	my @actual = map { (split /\t/, $_, 2)[1] } split /\n/, $got;

	# No evidence: where no token of a line maps to a row of the model
	# (blank lines, words it does not have), pg_triage predicts nothing,
	# where fastText answers from the end-of-line token alone.  Such a line
	# must have no word of the model's dictionary (as `fasttext dump` lists
	# it: a pruned model keeps fewer words than it was trained on).
	my ($dict, $dump_err);
	IPC::Run::run([ 'fasttext', 'dump', $file, 'dict' ], '>', \$dict, '2>', \$dump_err)
	  or BAIL_OUT("fasttext dump failed for $name: $dump_err");
	my %vocabulary = map { (split / /)[0] => 1 } grep { / word$/ } split /\n/, $dict;
	my @lines = split /\n/, slurp_file("$tmp/lines.txt"), -1;
	my ($label_mismatches, $max_diff, $first_bad, $no_evidence) = (0, 0, undef, 0);
	for my $i (0 .. $#expected)
	{
		my @e = split / /, $expected[$i];
		my @a = split / /, ($actual[$i] // '');
		if (!@a && @e)
		{
			$no_evidence++;
			my @known = grep { $vocabulary{$_} } split /\s+/, $lines[$i];
			if (@known)
			{
				$label_mismatches++;
				$first_bad //= "line " . ($i + 1) . ": no prediction, though it has known words (@known)";
			}
			next;
		}
		my @elabels = map { s/^__label__//r } @e[ grep { $_ % 2 == 0 } 0 .. $#e ];
		my @alabels = @a[ grep { $_ % 2 == 0 } 0 .. $#a ];
		if ("@elabels" ne "@alabels")
		{
			$label_mismatches++;
			$first_bad //= "line " . ($i + 1) . ": fasttext '@elabels', pg_triage '@alabels'";
			next;
		}
		for (my $j = 1; $j < @e; $j += 2)
		{
			my $d = abs($e[$j] - $a[$j]);
			$max_diff = $d if $d > $max_diff;
		}
	}
	is(scalar(@actual), scalar(@expected), "$name: one prediction per line (" . scalar(@expected) . ")");
	is($label_mismatches, 0, "$name: same labels in the same order ($no_evidence lines without evidence)")
	  or diag($first_bad);
	cmp_ok($no_evidence, '>=', 3, "$name: the blank lines get no prediction ($no_evidence lines)");
	cmp_ok($max_diff, '<=', 1e-4, "$name: probabilities within 1e-4 (max difference $max_diff)");
	$total_lines += scalar(@expected);
	unlink "$base.bin", "$base.ftz";
}
note("compared $total_lines predictions over " . scalar(@models) . " models");

$node->stop;
done_testing();
