# The model store across sessions and through pg_dump: a new deployment is
# seen by the next statement of every other session (cache invalidation,
# not polling), uncommitted deployments are not, and models and deployments
# survive a dump and restore.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = abs_path(dirname(__FILE__) . '/../..');
my $data = "$root/test/data";
my $stale = 'the coffee was stale and bitter, never again';
my $classify = "SELECT (triage.classify('sentiment', '$stale')).label;";

my $node = PostgreSQL::Test::Cluster->new('store');
$node->init;
$node->start;
$node->safe_psql('postgres', qq{
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$data/sentiment_v1.ftz'));
	SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$data/sentiment_v2.ftz'));
});
my $label_v1 = $node->safe_psql('postgres',
	"SELECT (triage.classify('sentiment', 1, '$stale')).label");
my $label_v2 = $node->safe_psql('postgres',
	"SELECT (triage.classify('sentiment', 2, '$stale')).label");
isnt($label_v1, $label_v2, "the two versions disagree on the probe ($label_v1, $label_v2)");

my $reader = $node->background_psql('postgres');
my $deployer = $node->background_psql('postgres');

is($reader->query_safe($classify), $label_v1, 'reader uses the deployed version 1');

$deployer->query_safe("SELECT triage.deploy('sentiment', 2)");
is($reader->query_safe($classify), $label_v2,
	'after another session deploys version 2, the next statement uses it');

# An uncommitted deployment is invisible; its commit is seen at once
$deployer->query_safe("BEGIN; SELECT triage.deploy('sentiment', 1);");
is($reader->query_safe($classify), $label_v2, 'an uncommitted deployment is not seen');
$deployer->query_safe('COMMIT');
is($reader->query_safe($classify), $label_v1, 'the committed deployment is seen by the next statement');

# Inside an open READ COMMITTED transaction, too
$reader->query_safe('BEGIN');
is($reader->query_safe($classify), $label_v1, 'in a transaction: version 1');
$deployer->query_safe("UPDATE triage.deployments SET version = 2 WHERE name = 'sentiment'");
is($reader->query_safe($classify), $label_v2,
	'in the same transaction, the next statement sees a plain UPDATE of deployments');
$reader->query_safe('COMMIT');

# A rolled-back deployment changes nothing
$deployer->query_safe("BEGIN; SELECT triage.deploy('sentiment', 1); ROLLBACK;");
is($reader->query_safe($classify), $label_v2, 'a rolled-back deployment changes nothing');

# The cache is per backend: a fresh session reads the model once, not per row
my $fresh = $node->background_psql('postgres');
$fresh->query_safe('BEGIN');
$fresh->query_safe("SELECT count(triage.classify('sentiment', g::text)) FROM generate_series(1, 2000) g");
is($fresh->query_safe(
	"SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables WHERE relname = 'models'"),
	'1', '2,000 calls in a new session read triage.models once');
is($fresh->query_safe(
	"SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables WHERE relname = 'deployments'"),
	'1', 'and triage.deployments once');
$fresh->query_safe('COMMIT');
$fresh->quit;

$reader->quit;
$deployer->quit;

# pg_dump keeps the models, their versions and the deployment
my $dump = PostgreSQL::Test::Utils::tempdir . '/store.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ],
	'pg_dump succeeds');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ],
	'pg_restore succeeds');
is($node->safe_psql('restored', "SELECT string_agg(version::text, ',' ORDER BY version) FROM triage.models"),
	'1,2', 'both versions are restored');
is($node->safe_psql('restored', "SELECT version FROM triage.deployments WHERE name = 'sentiment'"),
	'2', 'the deployment is restored');
is($node->safe_psql('restored', $classify), $label_v2, 'the restored model classifies as before');
is($node->safe_psql('restored',
	"SELECT md5(data) FROM triage.models WHERE version = 1"),
	$node->safe_psql('postgres', "SELECT md5(data) FROM triage.models WHERE version = 1"),
	'model bytes are restored exactly');

$node->stop;
done_testing();
