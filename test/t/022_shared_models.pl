# One copy of a large model per server (issue #17, model_files.c): a model
# of at least triage.shared_model_min_bytes is written once to a file under
# the data directory and every backend maps it, reading its float matrix in
# place instead of copying it.  Checked here: the file is built once and
# mapped by each session; a session that uses it gains far less private
# memory than one that loads its own copy; answers are identical to the bit;
# a deleted version's file is removed.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = abs_path(dirname(__FILE__) . '/../..');
my $csv = "$root/test/data/fine_foods_train.csv";

my $node = PostgreSQL::Test::Cluster->new('shared');
$node->init;
$node->append_conf('postgresql.conf', "triage.shared_model_min_bytes = '1MB'");
$node->start;
sub sql { return $node->safe_psql('postgres', $_[0]); }

# A dense fastText model whose input matrix is most of it: 100,000 buckets x
# dim 40 floats, 16 MB (quantized models are decoded at load and not shared)
sql(qq{
	CREATE EXTENSION pg_triage;
	CREATE TABLE food (product text, review text, score text);
	COPY food FROM '$csv' WITH (FORMAT csv, HEADER);
	SELECT triage.train('dense', 'SELECT review, score FROM food',
						'{"kind": "fasttext", "dim": 40, "bucket": 100000, "wordNgrams": 2, "epoch": 2, "seed": 1}');
});
my $size = sql("SELECT octet_length(data) FROM triage.models WHERE name = 'dense'");
cmp_ok($size, '>', 16_000_000, "the model takes $size bytes");

# Private memory a session gains by classifying (its anonymous pages, where
# palloc allocates: shared buffers and mapped files are not): its own copy
# is, pages of the mapped file are not (they are the page cache's)
sub session
{
	my ($setting) = @_;
	my $dirty = q{(regexp_match(pg_read_file('/proc/self/smaps_rollup'), 'Anonymous:\s+(\d+) kB'))[1]};
	my %out = map { /^(\w):(.*)$/ ? ($1 => $2) : () } split /\n/, sql(qq{
		SET triage.shared_model_min_bytes = $setting;
		SELECT 'B:' || $dirty;
		SELECT count(triage.classify('dense', review)) FROM food \\g /dev/null
		SELECT 'A:' || $dirty;
		SELECT 'M:' || (pg_read_file('/proc/self/maps') ~ 'pg_triage/[0-9]+[.]dense[.]1[.]')::text;
		SELECT 'R:' || string_agg(c::text, ',' ORDER BY n)
		  FROM (SELECT row_number() OVER () AS n, triage.classify('dense', review) AS c FROM food) s;
	});
	return ($out{B}, $out{A}, $out{M}, $out{R});
}

my ($own_before, $own_after, $own_mapped, $own_answers) = session(-1);
my ($s1_before, $s1_after, $s1_mapped, $s1_answers) = session("'1MB'");
my ($s2_before, $s2_after, $s2_mapped, $s2_answers) = session("'1MB'");
my $model_kb = $size / 1024;
note(sprintf('private memory gained by classifying: own copy %d kB, shared (first) %d kB, shared (second) %d kB; model %d kB',
	$own_after - $own_before, $s1_after - $s1_before, $s2_after - $s2_before, $model_kb));

is(sql("SELECT count(*) FROM pg_ls_dir('pg_triage') f WHERE f ~ '[.]dense[.]1[.]'"), '1',
	'one shared file for the version');
is($own_mapped, 'false', 'a session with sharing off does not map it');
is("$s1_mapped/$s2_mapped", 'true/true', 'each session with sharing on maps it');
cmp_ok($own_after - $own_before, '>', 0.8 * $model_kb, 'a session loading its own copy holds it privately');
cmp_ok($s2_after - $s2_before, '<', 0.25 * $model_kb,
	'a session mapping the shared file gains under a quarter of the model in private memory');
ok($own_answers eq $s1_answers && $s1_answers eq $s2_answers && length($own_answers) > 1000,
	'answers from the shared file are those of a private copy, to the bit');

# A deleted version takes its file with it
sql("SELECT triage.deploy('dense', 1)");
sql(q{
	SELECT triage.train('dense', 'SELECT review, score FROM food LIMIT 500',
						'{"kind": "fasttext", "dim": 40, "bucket": 100000, "wordNgrams": 2, "epoch": 1, "seed": 1}');
	SELECT triage.deploy('dense', 2);
	SELECT triage.classify('dense', 'good tea');
});
is(sql("SELECT count(*) FROM pg_ls_dir('pg_triage') f WHERE f ~ '[.]dense[.]'"), '2', 'a file per version used');
sql("DELETE FROM triage.models WHERE name = 'dense' AND version = 1");
is(sql("SELECT string_agg(regexp_replace(f, '^[0-9]+[.]dense[.]([0-9]+)[.].*', '\\1'), ',') FROM pg_ls_dir('pg_triage') f"),
	'2', 'deleting version 1 removed its file only');

$node->stop;
done_testing();
