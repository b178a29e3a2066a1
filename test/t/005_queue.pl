# The escalation queue under concurrency: 4 sessions claim from 10,000
# queued escalations at once; each is claimed exactly once while its lease
# lasts, expired leases come back, and nothing is lost.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = PostgreSQL::Test::Utils::tempdir;

# Run a psql script in the background (from a file: IPC::Run only feeds a
# scalar's input when pumped, which would serialize the sessions)
sub start_psql
{
	my ($name, $script, $connstr) = @_;
	my $file = "$tmp/$name.sql";
	open(my $fh, '>', $file) or die;
	print $fh $script;
	close $fh;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $connstr, '-f', $file ],
		'>', \$out, '2>', \$err);
	return [ $h, \$err ];
}
my $node = PostgreSQL::Test::Cluster->new('queue');
$node->init;
$node->append_conf('postgresql.conf', 'max_connections = 20');
$node->start;

$node->safe_psql('postgres', qq{
	CREATE EXTENSION pg_triage;
	SELECT triage.import_fasttext('m', pg_read_binary_file('$root/test/data/sentiment_v1.ftz'));
	SELECT triage.create_policy('q', 'm');
	SELECT count(triage.enqueue('q', 'review number ' || g)) FROM generate_series(1, 10000) g;
	CREATE TABLE claimlog (worker text, id bigint, at timestamptz DEFAULT clock_timestamp());
});
is($node->safe_psql('postgres', "SELECT count(*) FROM triage.escalations WHERE status = 'pending'"),
	'10000', '10,000 escalations queued');

# Four workers, each claiming 100 at a time, one transaction per claim,
# until the queue is empty; all four start together, held at a barrier (an
# advisory lock) until every one is connected.
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(4242)');
my @runs;
for my $w (1 .. 4)
{
	my $script = "SELECT pg_advisory_lock_shared(4242);\n" . join '', map {
		"INSERT INTO claimlog (worker, id) SELECT 'w$w', id FROM triage.claim('w$w', 100, '10 minutes');\n"
	} 1 .. 40;
	push @runs, start_psql("claim$w", $script, $node->connstr('postgres'));
}
$node->poll_query_until('postgres',
	"SELECT count(*) = 4 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
  or die 'the worker sessions did not reach the barrier';
$gate->query_safe('SELECT pg_advisory_unlock(4242)');
for my $r (@runs)
{
	$r->[0]->finish;
	is(${ $r->[1] }, '', 'a worker session ran without errors');
}
$gate->quit;

my ($claims, $distinct, $workers, $min_share) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT id), count(DISTINCT worker),
		   (SELECT min(n) FROM (SELECT count(*) AS n FROM claimlog GROUP BY worker) s)
	  FROM claimlog});
is($claims, '10000', 'every escalation was claimed');
is($distinct, '10000', 'and none twice while its lease lasted');
is($workers, '4', 'all four sessions got work');
cmp_ok($min_share, '>', 500, "the work was shared (smallest share $min_share)");
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM triage.escalations e JOIN claimlog c USING (id)
	 WHERE e.status = 'claimed' AND e.claimed_by = c.worker}), '10000',
	'each escalation is leased to the session that claimed it');
is($node->safe_psql('postgres', "SELECT count(*) FROM triage.claim('late', 10, '1 minute')"),
	'0', 'nothing is claimable while the leases last');

# Expired leases come back, counted as an attempt
$node->safe_psql('postgres', q{
	UPDATE triage.escalations SET visible_at = now() - interval '1 second'
	 WHERE id IN (SELECT id FROM claimlog WHERE worker = 'w1' ORDER BY id LIMIT 50)});
my ($back, $attempts) = split /\|/, $node->safe_psql('postgres', q{
	WITH c AS (SELECT id FROM triage.claim('w5', 100, '10 minutes'))
	SELECT count(*), (SELECT min(attempts) FROM triage.escalations WHERE claimed_by = 'w5') FROM c});
is($back, '50', 'the 50 expired leases come back to a new claim');
is($node->safe_psql('postgres', "SELECT min(attempts) FROM triage.escalations WHERE claimed_by = 'w5'"),
	'1', 'counted as an attempt');

# Nothing lost: complete, fail and release the leased jobs from 4 sessions
# at once; every escalation ends in exactly one state, answered at most once
@runs = ();
for my $w (1 .. 4)
{
	my $script = qq{
		SELECT count(CASE WHEN id % 3 = 0
			THEN triage.complete(id, '{"choices": [{"message": {"content": "great"}}]}')
			WHEN id % 3 = 1 THEN triage.fail(id, 'HTTP 500', '0 seconds')
			ELSE triage.release(id)::text END)
		  FROM triage.escalations WHERE id % 4 = $w - 1;
	};
	push @runs, start_psql("finish$w", $script, $node->connstr('postgres'));
}
for my $r (@runs)
{
	$r->[0]->finish;
	is(${ $r->[1] }, '', 'a finishing session ran without errors');
}
my ($total, $done, $pending, $examples) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*), count(*) FILTER (WHERE status = 'done'),
		   count(*) FILTER (WHERE status = 'pending'),
		   (SELECT count(*) FROM triage.examples)
	  FROM triage.escalations});
is($total, '10000', 'no escalation lost');
cmp_ok($done, '>', 3000, "a third of the jobs were answered ($done)");
is($done, $examples, 'one training example per answered escalation');
is($done + $pending, 10000, 'every escalation is answered or back in the queue');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT escalation FROM triage.examples GROUP BY 1 HAVING count(*) > 1) d}),
	'0', 'no escalation answered twice');

$node->stop;
done_testing();
