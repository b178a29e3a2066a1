# Every SQL block of README.md, in order, on a fresh database with the
# shipped files: the README's examples cannot drift from what runs (#14).
# "/path/to/" in a block is the source tree; a block's expected output, where
# the README shows one as "-- " comments, is not compared (it has "…").
use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use PostgreSQL::Test::Cluster;
use Test::More;

my $root = File::Spec->rel2abs(dirname(__FILE__) . '/../..');
open(my $fh, '<', "$root/README.md") or die "README.md: $!";
my (@blocks, $block, $line);
while (my $l = <$fh>)
{
	$line++;
	if (!defined $block && $l =~ /^```sql\s*$/) { $block = { line => $line, sql => '' }; next; }
	if (defined $block && $l =~ /^```\s*$/) { push @blocks, $block; undef $block; next; }
	$block->{sql} .= $l if defined $block;
}
close $fh;
cmp_ok(scalar @blocks, '>=', 8, 'README.md has its SQL blocks (' . scalar(@blocks) . ')');

my $node = PostgreSQL::Test::Cluster->new('readme');
$node->init;
$node->start;

# The install section creates the extension; later blocks repeat it for
# readers who start there: run those as "IF NOT EXISTS"
for my $b (@blocks)
{
	my $sql = $b->{sql};
	$sql =~ s{/path/to/}{$root/}g;
	$sql =~ s/CREATE EXTENSION pg_triage;/CREATE EXTENSION IF NOT EXISTS pg_triage;/g;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 1);
	my $first = (split /\n/, $b->{sql})[0];
	ok($ret == 0, "README.md line $b->{line} runs: $first") or diag($err);
}

# what the blocks promise, checked after them
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM triage.models WHERE name = 'sentiment') >= 2
	   AND (SELECT count(*) FROM triage.policy_grants WHERE policy = 'reviews') = 1
	   AND (SELECT count(*) FROM triage.worker_roles) = 1}),
	't', 'the blocks stored what they say: two sentiment versions, a policy grant, a worker role');

$node->stop;
done_testing();
