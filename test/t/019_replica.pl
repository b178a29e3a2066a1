# A streaming replica serving classification traffic (issue #17):
#
#   1. models, a policy and an extractor made on the primary are used on a
#      hot standby: classify (both overloads), predict, classify_batch,
#      route and extract answer there exactly as on the primary; route
#      writes nothing (its counters are written by the attach trigger and
#      process_table, not by route), so it works on a read-only standby.
#      evaluate, cross_validate and escalation_stats (reads) work there.
#   2. what writes is refused there with PostgreSQL's read-only error and
#      the standby goes on serving: an INSERT into an attached table (its
#      trigger never runs), enqueue, claim, deploy; train, before training.
#   3. a session kept open on the standby classifies with version 1; the
#      primary imports and deploys version 2; once the standby has replayed
#      it, the same session's next statement uses version 2 (the deployment
#      trigger's relcache invalidation is in the commit's WAL record, which
#      the standby replays), and after a rollback on the primary, version 1.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = abs_path(dirname(__FILE__) . '/../..');
my $data = "$root/test/data";
# version 1 and version 2 of the fixtures disagree on it (test/t/003_model_store.pl)
my $probe = 'the coffee was stale and bitter, never again';
my $message = 'Hi, order A-10293 ($129.99) has not arrived. Maria Lopez, maria@example.com';

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->start;
$primary->safe_psql('postgres', qq{
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$data/sentiment_v1.ftz'));
	SELECT triage.import_extractor('fields', pg_read_binary_file('$root/models/business_fields.crf'));
	SELECT triage.create_policy('reviews', 'sentiment', threshold => 0.9);
	SELECT triage.create_policy('orders', NULL, extractor => 'fields');
	CREATE TABLE tickets (id integer PRIMARY KEY, body text, label text);
	SELECT triage.attach('tickets', 'body', 'label', 'reviews');
	INSERT INTO tickets VALUES (1, '$probe', NULL);
});

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

# 1. The same answers on both
my $counters = 'SELECT count(*) FROM triage.policy_counters';
my $counters_before = $primary->safe_psql('postgres', $counters);
my %calls = (
	'classify' => "SELECT triage.classify('sentiment', '$probe')",
	'classify with a version' => "SELECT triage.classify('sentiment', 1, '$probe')",
	'predict' => "SELECT array_agg(p::text ORDER BY p.probability DESC) FROM triage.predict('sentiment', '$probe', -1) p",
	'classify_batch' => "SELECT array_agg(c::text ORDER BY ord) FROM triage.classify_batch('sentiment', ARRAY['$probe', 'great snack', NULL]) c",
	'route' => "SELECT triage.route('reviews', '$probe')",
	'route, extraction policy' => "SELECT triage.route('orders', '$message')",
	'extract' => "SELECT triage.extract('fields', '$message')",
	'extract with a version' => "SELECT triage.extract('fields', 1, '$message')",
);
for my $name (sort keys %calls)
{
	my $on_primary = $primary->safe_psql('postgres', $calls{$name});
	my ($rc, $out, $err) = $standby->psql('postgres', $calls{$name});
	is($rc == 0 ? $out : "error: $err", $on_primary, "$name on the standby answers as on the primary");
}
isnt($primary->safe_psql('postgres', $calls{extract}), '{}', 'extract finds fields in the message');

# route is pure: on the primary too, all those calls wrote no counters
is($primary->safe_psql('postgres', $counters), $counters_before,
	"route wrote no counters on the primary: still $counters_before, from the INSERT into the attached table");

# Reads that train or score without storing work there too
my $rows = "SELECT (ARRAY['good tasty fresh', 'bad stale awful'])[g % 2 + 1] || ' ' || g, "
  . "(ARRAY['great', 'other'])[g % 2 + 1] FROM generate_series(1, 40) g";
my %reads = (
	'evaluate' => "SELECT triage.evaluate('sentiment', \$\$$rows\$\$)",
	'cross_validate' => "SELECT string_agg(predicted || ' ' || fold, ',' ORDER BY input) "
	  . "FROM triage.cross_validate(\$\$$rows\$\$, '{\"kind\": \"fasttext\", \"epoch\": 5}', 2)",
	'escalation_stats' => 'SELECT count(*) FROM triage.escalation_stats',
);
for my $name (sort keys %reads)
{
	my ($rc, $out, $err) = $standby->psql('postgres', $reads{$name});
	is($rc == 0 ? $out : "error: $err", $primary->safe_psql('postgres', $reads{$name}),
		"$name on the standby answers as on the primary");
}

# 2. Writes are the primary's: each refused with the read-only error
my %writes = (
	'an INSERT into an attached table' => "INSERT INTO tickets VALUES (2, '$probe', NULL)",
	'enqueue' => "SELECT triage.enqueue('reviews', '$probe')",
	'claim' => "SELECT * FROM triage.claim('w', 1)",
	'train' => "SELECT triage.train('food', \$\$$rows\$\$)",
	'deploy' => "SELECT triage.deploy('sentiment', 1)",
);
for my $name (sort keys %writes)
{
	my ($rc, $out, $err) = $standby->psql('postgres', $writes{$name});
	like($err, qr/read-only transaction|recovery is in progress/, "$name on the standby: refused, read-only")
	  or diag("rc $rc, out: $out");
	like($err, qr/cannot train model "food" in a read-only transaction/, 'train refuses before training')
	  if $name eq 'train';
}
is($standby->safe_psql('postgres', 'SELECT label FROM tickets WHERE id = 1'),
	$primary->safe_psql('postgres', "SELECT (triage.classify('sentiment', '$probe')).label"),
	'the row the primary routed on insert is on the standby, labeled');
is($standby->safe_psql('postgres', "SELECT (triage.classify('sentiment', 'great snack')).label IS NOT NULL"),
	't', 'the standby still classifies after the refused writes');

# 3. A new deployment on the primary reaches an open session on the standby
my $label_v1 = $primary->safe_psql('postgres', "SELECT (triage.classify('sentiment', '$probe')).label");
my $classify = "SELECT (triage.classify('sentiment', '$probe')).label";
my $session = $standby->background_psql('postgres');
is($session->query_safe($classify), $label_v1, "an open session on the standby uses version 1 ($label_v1)");

$primary->safe_psql('postgres', qq{
	SELECT triage.import_fasttext('sentiment', pg_read_binary_file('$data/sentiment_v2.ftz'));
	SELECT triage.deploy('sentiment', 2);
});
my $label_v2 = $primary->safe_psql('postgres', $classify);
isnt($label_v2, $label_v1, "on the primary, version 2 answers the probe otherwise ($label_v2)");
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($session->query_safe($classify), $label_v2,
	'once the standby replayed the deployment, the same session\'s next statement uses version 2');

$primary->safe_psql('postgres', "SELECT triage.rollback('sentiment')");
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($session->query_safe($classify), $label_v1, 'and after a rollback on the primary, version 1 again');
$session->quit;

$standby->stop;
$primary->stop;
done_testing();
